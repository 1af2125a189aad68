//! Guest RAM: its layout around the MMIO hole, and its allocation. Where the boot
//! structures go inside it is `boot::layout`'s.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Guest RAM, shared by the vCPU threads, the devices and the gdb stub.
pub type GuestMem = GuestMemoryMmap<()>;

/// Start of the hole below 4 GiB that real machines keep for MMIO; RAM above it moves to 4 GiB.
pub const MMIO_HOLE_START: u64 = 3 << 30;
/// First address above the MMIO hole.
pub const HIGH_RAM_START: u64 = 4 << 30;

/// Creates guest RAM of `size` bytes: `[0, min(size, 3G))`, and the remainder from 4 GiB.
pub fn create_guest_memory(size: u64) -> Result<GuestMem, vm_memory::mmap::FromRangesError> {
    GuestMemoryMmap::from_ranges(&ram_ranges(size))
}

/// The (start, length) RAM ranges for a RAM size.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(HIGH_RAM_START), (size - low) as usize));
    }
    ranges
}
