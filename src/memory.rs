//! Guest RAM and the fixed guest-physical layout of the boot structures.

use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Guest RAM, shared by the vCPU threads, the devices and the gdb stub.
pub type GuestMem = GuestMemoryMmap<()>;

/// Start of the hole below 4 GiB that real machines keep for MMIO; RAM above it moves to 4 GiB.
pub const MMIO_HOLE_START: u64 = 3 << 30;
/// First address above the MMIO hole.
pub const HIGH_RAM_START: u64 = 4 << 30;

/// Guest-physical addresses of what the VMM writes before the guest starts. All sit in the
/// first 512 KiB, below the 1 MiB where kernels are conventionally loaded; README documents
/// them as part of the entry state.
pub mod layout {
    /// The GDT (Linux boot-protocol selectors: code 0x10, data 0x18).
    pub const GDT: u64 = 0x500;
    /// The Multiboot information structure.
    pub const MULTIBOOT_INFO: u64 = 0x6000;
    /// The Multiboot memory map (follows the information structure).
    pub const MULTIBOOT_MMAP: u64 = 0x6100;
    /// The Multiboot command line.
    pub const MULTIBOOT_CMDLINE: u64 = 0x6400;
    /// The Multiboot boot-loader name.
    pub const MULTIBOOT_LOADER_NAME: u64 = 0x6700;
    /// The zeroed Linux `boot_params` page that RSI points to on ELF64 entry.
    pub const BOOT_PARAMS: u64 = 0x7000;
    /// The identity-mapping PML4; the PDPT and PDs follow it.
    pub const PML4: u64 = 0x9000;
    /// The initial stack pointer (the stack grows down from here).
    pub const STACK_TOP: u64 = 0x8_0000;
    /// End of the region the VMM reserves; kernel segments must not overlap `[GDT, RESERVED_END)`.
    pub const RESERVED_END: u64 = 0x8_0000;
}

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
