//! The harness of the VMM tier (`tests/vmm_*.rs`): builds a [`Vm`] in this process from a
//! few bytes of guest code, drives it through the VMM API on real KVM, and waits for its
//! stops with a timeout, so a test fails loudly instead of hanging.
//!
//! Guests are byte arrays with their assembly in comments (assembled with GNU `as`, checked
//! with `objdump -d`). [`boot`] wraps them in a minimal ELF64 image loaded at [`LOAD_ADDR`],
//! which the loader enters in 64-bit long mode with the first 4 GiB identity mapped, RFLAGS
//! 0x2 (interrupts off), RSP 0x80000, and an IDT of limit 0 (so any exception is a triple
//! fault); [`boot_multiboot`] wraps them in a Multiboot ELF32 entered in 32-bit protected
//! mode with paging off and EAX = 0x2BADB002.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use kvm_bindings::kvm_regs;
use kvm_ioctls::Kvm;
use kvmgdb::boot;
use kvmgdb::vmm::stop::{VcpuEvent, VcpuStop};
use kvmgdb::vmm::{DebugAddr, MachineConfig, Vm};
use kvmgdb::x86::paging::GuestVirtAddr;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where every test guest's code is loaded, and its entry point.
pub const LOAD_ADDR: u64 = 0x10_0000;
/// A page of RAM the guests use for data, away from their code page.
pub const DATA: u64 = 0x20_0000;
/// A guest-physical address with no RAM behind it (in the hole below 4 GiB, which the entry
/// page tables still map): accesses to it are MMIO exits.
pub const MMIO: u64 = 0xd000_0000;
/// Guest RAM: enough for the boot structures, the code and the data page.
pub const MEMORY_SIZE: u64 = 16 << 20;
/// How long any one stop may take to arrive before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The only vCPU of these machines.
pub const VCPU: usize = 0;

/// What the guest wrote to COM1, shared between the VMM's serial device and the test.
#[derive(Clone, Default)]
pub struct Serial(Arc<Mutex<Vec<u8>>>);

impl Serial {
    /// Everything written so far, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Serial {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A machine under test and what its guest printed.
pub struct Guest {
    /// The VMM under test.
    pub vm: Vm,
    /// COM1 output.
    pub serial: Serial,
}

/// A guest that prints "hello\n" on COM1, one `out` per byte, then exits with status
/// `exit_status(0)`.
#[rustfmt::skip]
pub const HELLO_CODE: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03,                   // +0  mov $0x3f8, %dx    (COM1 data)
    0x48, 0x8d, 0x35, 0x0a, 0x00, 0x00, 0x00, // +4  lea msg(%rip), %rsi
    0xac,                                     // +11 1: lodsb
    0x84, 0xc0,                               // +12    test %al, %al
    0x74, 0x03,                               // +14    jz 2f
    0xee,                                     // +16    out %al, (%dx)
    0xeb, 0xf8,                               // +17    jmp 1b
    0xe6, 0xf4,                               // +19 2: out %al, $0xf4   (isa-debug-exit)
    b'h', b'e', b'l', b'l', b'o', b'\n', 0,   // +21 msg: .asciz "hello\n"
];

/// Virtual address `addr` as vCPU [`VCPU`] sees it.
pub fn virt(addr: u64) -> DebugAddr {
    DebugAddr::Virt {
        vcpu: VCPU,
        addr: GuestVirtAddr(addr),
    }
}

/// Boots `code` as a 64-bit guest: an ELF64 with one PT_LOAD at [`LOAD_ADDR`], entered there.
pub fn boot(code: &[u8]) -> Guest {
    boot_image(&elf64(code, LOAD_ADDR), 1)
}

/// Boots `code` as a 64-bit guest on `vcpus` vCPUs, every one started at the boot
/// processor's entry state (the plan lists it once per vCPU, instead of leaving the others to
/// wait for INIT-SIPI), so the code must not share writable memory between them.
pub fn boot_smp(code: &[u8], vcpus: usize) -> Guest {
    let image = elf64(code, LOAD_ADDR);
    let req = boot::BootRequest {
        vcpus,
        ..boot::BootRequest::new(&image, MEMORY_SIZE)
    };
    let mut plan =
        boot::plan(&req).unwrap_or_else(|e| panic!("cannot plan the boot of the test image: {e}"));
    plan.vcpus = vec![*plan.bsp(); vcpus];
    build_vm(plan, MachineConfig::new(req.ram_size, vcpus))
}

/// Boots `code` as a 64-bit guest on `vcpus` vCPUs as boot protocols do: the boot processor
/// at the entry, every other vCPU waiting for INIT-SIPI.
pub fn boot_smp_waiting(code: &[u8], vcpus: usize) -> Guest {
    boot_image(&elf64(code, LOAD_ADDR), vcpus)
}

/// Boots `code` as a 32-bit Multiboot guest loaded at [`LOAD_ADDR`]; its entry point is
/// [`multiboot_entry`].
pub fn boot_multiboot(code: &[u8]) -> Guest {
    boot_image(&multiboot_elf32(code, LOAD_ADDR), 1)
}

/// The entry point of a guest booted with [`boot_multiboot`]: its code follows the
/// Multiboot header.
pub fn multiboot_entry() -> u64 {
    LOAD_ADDR + MULTIBOOT_HEADER.len() as u64
}

/// Boots `code` as [`boot`] does, on a machine `configure` changes (say, `no_reboot`).
pub fn boot_configured(code: &[u8], configure: impl FnOnce(&mut MachineConfig)) -> Guest {
    let mut machine = MachineConfig::new(MEMORY_SIZE, 1);
    configure(&mut machine);
    let image = elf64(code, LOAD_ADDR);
    boot_machine(&boot::BootRequest::new(&image, MEMORY_SIZE), machine)
}

/// Boots a ready image (an ELF built by `build.rs`, say) on `vcpus` vCPUs: the boot
/// processor at its entry, the others waiting for INIT-SIPI.
pub fn boot_image_bytes(image: &[u8], vcpus: usize) -> Guest {
    boot_image(image, vcpus)
}

/// Builds the machine for `image` with `vcpus` vCPUs (the firmware tables list them all).
fn boot_image(image: &[u8], vcpus: usize) -> Guest {
    boot_request(&boot::BootRequest {
        vcpus,
        ..boot::BootRequest::new(image, MEMORY_SIZE)
    })
}

/// Boots what `req` asks for (image, command line, modules) on a machine of its RAM size
/// and vCPU count.
pub fn boot_request(req: &boot::BootRequest) -> Guest {
    boot_machine(req, MachineConfig::new(req.ram_size, req.vcpus))
}

/// The one place that builds a [`Vm`], so that a change to `Vm::new` touches only this.
pub fn boot_machine(req: &boot::BootRequest, machine: MachineConfig) -> Guest {
    let plan =
        boot::plan(req).unwrap_or_else(|e| panic!("cannot plan the boot of the test image: {e}"));
    build_vm(plan, machine)
}

/// Builds a [`Vm`] from a ready plan.
pub fn build_vm(plan: boot::BootPlan, machine: MachineConfig) -> Guest {
    let kvm = Kvm::new().unwrap_or_else(|e| panic!("KVM not available: cannot open /dev/kvm: {e}"));
    let serial = Serial::default();
    let vm = Vm::new(kvm, machine, plan, Box::new(serial.clone()))
        .unwrap_or_else(|e| panic!("cannot build the VM: {e}"));
    Guest { vm, serial }
}

impl Guest {
    /// Continues the vCPU and waits for its next stop.
    pub fn cont(&mut self) -> VcpuEvent {
        self.vm.resume(&[(VCPU, false)]).expect("resume");
        wait_stop(&mut self.vm, STOP_TIMEOUT)
    }

    /// Single-steps the vCPU and waits for the stop.
    pub fn step(&mut self) -> VcpuEvent {
        self.vm.resume(&[(VCPU, true)]).expect("resume (step)");
        wait_stop(&mut self.vm, STOP_TIMEOUT)
    }

    /// Single-steps `n` times, failing the test if any step stops for another reason.
    pub fn steps(&mut self, n: usize) {
        for i in 0..n {
            let ev = self.step();
            assert_eq!(ev.stop, VcpuStop::Step, "step {i} of {n}");
        }
    }

    /// The general-purpose registers of the stopped vCPU.
    pub fn regs(&self) -> kvm_regs {
        self.vm.state(VCPU).expect("vCPU state").regs
    }

    /// RIP of the stopped vCPU.
    pub fn rip(&self) -> u64 {
        self.regs().rip
    }

    /// Changes the stopped vCPU's general-purpose registers through `f`.
    pub fn edit_regs(&mut self, f: impl FnOnce(&mut kvm_regs)) {
        let mut regs = self.regs();
        f(&mut regs);
        self.vm.set_regs(VCPU, regs).expect("set_regs");
    }

    /// Reads `len` bytes at `addr` as the vCPU sees them, failing if any is unreadable.
    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        let n = self
            .vm
            .read_memory(virt(addr), &mut buf)
            .expect("read_memory");
        assert_eq!(n, len, "read_memory({addr:#x}, {len}) read only {n} bytes");
        buf
    }

    /// Reads a little-endian u32 at `addr`.
    pub fn read_u32(&self, addr: u64) -> u32 {
        u32::from_le_bytes(self.read(addr, 4).try_into().unwrap())
    }
}

/// Boots `code` with a 64-bit IDT at DATA holding an interrupt gate (DPL 0) for each
/// `(vector, handler)` of `gates`, and no other.
pub fn with_gates(code: &[u8], gates: &[(usize, u64)]) -> Guest {
    let mut g = boot(code);
    let mut sregs = g.vm.state(VCPU).expect("state").sregs;
    let mut idt = vec![0u8; 16 * 32];
    for &(vector, handler) in gates {
        let gate = &mut idt[16 * vector..16 * vector + 16];
        gate[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        gate[2..4].copy_from_slice(&sregs.cs.selector.to_le_bytes());
        gate[5] = 0x8e; // P, DPL 0, 64-bit interrupt gate
        gate[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        gate[8..12].copy_from_slice(&((handler >> 32) as u32).to_le_bytes());
    }
    let at = kvmgdb::vmm::DebugAddr::Phys(vm_memory::GuestAddress(DATA));
    assert_eq!(
        g.vm.write_memory(at, &idt).expect("write the IDT"),
        idt.len()
    );
    sregs.idt.base = DATA;
    sregs.idt.limit = (idt.len() - 1) as u16;
    g.vm.set_sregs(VCPU, sregs).expect("set_sregs");
    g
}

/// Waits up to `timeout` for the next vCPU stop, polling the VMM's event fd; fails the test
/// if none comes.
pub fn wait_stop(vm: &mut Vm, timeout: Duration) -> VcpuEvent {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(ev) = vm.poll_event() {
            return ev;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            panic!("no vCPU stop within {timeout:?}");
        }
        poll_readable(vm.event_fd(), left);
    }
}

/// Sleeps until `fd` is readable or `timeout` passes.
fn poll_readable(fd: RawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: `pfd` is one valid pollfd that lives across the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::Interrupted,
            "poll failed: {e}"
        );
    }
}

/// Builds an ELF64 x86-64 executable whose one PT_LOAD puts `code` at `addr` (physical and
/// virtual), with the entry point at its start (System V gABI, ch. 4 and 5).
pub fn elf64(code: &[u8], addr: u64) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    const CODE_AT: usize = 0x80;
    let mut f = Vec::with_capacity(CODE_AT + code.len());
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, little-endian, version 1, System V
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // e_machine: EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&addr.to_le_bytes()); // e_entry
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    f.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    assert_eq!(f.len(), EHDR);
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    f.extend_from_slice(&7u32.to_le_bytes()); // p_flags: RWX
    f.extend_from_slice(&(CODE_AT as u64).to_le_bytes()); // p_offset
    f.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&addr.to_le_bytes()); // p_paddr
    f.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_filesz
    f.extend_from_slice(&(code.len() as u64).to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x10u64.to_le_bytes()); // p_align
    f.resize(CODE_AT, 0);
    f.extend_from_slice(code);
    f
}

/// A Multiboot v1 header asking for nothing (flags 0): magic, flags, checksum (Multiboot
/// spec 3.1.1).
const MULTIBOOT_HEADER: [u8; 12] = {
    let magic: u32 = 0x1BAD_B002;
    let flags: u32 = 0;
    let sum = 0u32.wrapping_sub(magic).wrapping_sub(flags);
    let (m, f, s) = (magic.to_le_bytes(), flags.to_le_bytes(), sum.to_le_bytes());
    [
        m[0], m[1], m[2], m[3], f[0], f[1], f[2], f[3], s[0], s[1], s[2], s[3],
    ]
};

/// Builds an ELF32 i386 Multiboot kernel: one PT_LOAD at `addr` holding the Multiboot header
/// and then `code`, which is the entry point.
pub fn multiboot_elf32(code: &[u8], addr: u64) -> Vec<u8> {
    const EHDR: usize = 52;
    const PHDR: usize = 32;
    const SEG_AT: usize = 0x60;
    let addr = u32::try_from(addr).expect("a 32-bit load address");
    let mut seg = MULTIBOOT_HEADER.to_vec();
    seg.extend_from_slice(code);
    let entry = addr + MULTIBOOT_HEADER.len() as u32;
    let mut f = Vec::with_capacity(SEG_AT + seg.len());
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[1, 1, 1, 0]); // ELFCLASS32, little-endian, version 1, System V
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    f.extend_from_slice(&3u16.to_le_bytes()); // e_machine: EM_386
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&entry.to_le_bytes()); // e_entry
    f.extend_from_slice(&(EHDR as u32).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR as u16).to_le_bytes()); // e_ehsize
    f.extend_from_slice(&(PHDR as u16).to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    assert_eq!(f.len(), EHDR);
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: PT_LOAD
    f.extend_from_slice(&(SEG_AT as u32).to_le_bytes()); // p_offset
    f.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&addr.to_le_bytes()); // p_paddr
    f.extend_from_slice(&(seg.len() as u32).to_le_bytes()); // p_filesz
    f.extend_from_slice(&(seg.len() as u32).to_le_bytes()); // p_memsz
    f.extend_from_slice(&7u32.to_le_bytes()); // p_flags: RWX
    f.extend_from_slice(&0x10u32.to_le_bytes()); // p_align
    f.resize(SEG_AT, 0);
    f.extend_from_slice(&seg);
    f
}

/// The status isa-debug-exit reports for a guest byte `value` written to port 0xf4, as QEMU
/// computes it: `(value << 1) | 1`.
pub fn exit_status(value: u32) -> u32 {
    (value << 1) | 1
}
