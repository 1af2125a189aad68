//! The figures the benchmark reports, with their units, direction and targets.

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fig {
    /// Process start → the stop reply to the first `?`.
    Launch,
    /// Process start → stopped at `bench_ready` (firmware, boot, 16 MiB pattern fill).
    Ready,
    /// `vCont;s` round trips, no-ack mode.
    Step,
    /// `vCont;s` round trips, ack mode.
    StepAck,
    /// `vCont;s` then `g`, as gdb does after every stop.
    StepG,
    /// Software-breakpoint hits with gdb's cycle.
    SwBp,
    /// Hardware-breakpoint hits with gdb's cycle.
    HwBp,
    /// `g` round trips.
    GRead,
    /// `g` round trips, ack mode.
    GReadAck,
    /// `m` reads of 1 MiB.
    Mem1,
    /// `m` reads of 16 MiB.
    Mem16,
    /// Real gdb: `stepi` in a `while` loop.
    GdbStepi,
    /// gdb's own CPU share while stepping.
    GdbStepiCpu,
    /// Real gdb: `dump binary memory` of 16 MiB.
    GdbDump,
    /// gdb's own CPU share while dumping.
    GdbDumpCpu,
    /// Ctrl-C (0x03) → stop reply.
    CtrlC,
    /// CPU of the stub's non-vCPU threads while the guest runs with a client attached.
    StubCpu,
    /// Peak RSS (VmHWM).
    Rss,
    /// Resident memory outside the guest's RAM mapping, at the end.
    RssOwn,
    /// Peak RSS at the first stop, before the guest has run.
    RssStart,
    /// Linux (`--linux`): launch → `Linux version` on serial, from the bzImage.
    LinuxVersionBz,
    /// Linux: launch → `Linux version` on serial, from the vmlinux (PVH).
    LinuxVersionVm,
    /// Linux: launch → gdb stopped at `start_kernel` (hbreak), from the vmlinux.
    StartKernelVm,
}

/// What a figure is judged against.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// No target: reported for information.
    None,
    /// kvmgdb must be at least this many times better than QEMU.
    Ratio(f64),
    /// kvmgdb's value must be below this (an absolute bound).
    Below(f64),
    /// Software breakpoints must work and reach this multiple of QEMU's hw-breakpoint rate.
    VsQemuHwBp(f64),
}

impl Fig {
    /// Every figure, in table order.
    pub const ALL: [Fig; 23] = [
        Fig::Launch,
        Fig::Ready,
        Fig::Step,
        Fig::StepAck,
        Fig::StepG,
        Fig::SwBp,
        Fig::HwBp,
        Fig::GRead,
        Fig::GReadAck,
        Fig::Mem1,
        Fig::Mem16,
        Fig::GdbStepi,
        Fig::GdbStepiCpu,
        Fig::GdbDump,
        Fig::GdbDumpCpu,
        Fig::CtrlC,
        Fig::StubCpu,
        Fig::Rss,
        Fig::RssOwn,
        Fig::RssStart,
        Fig::LinuxVersionBz,
        Fig::LinuxVersionVm,
        Fig::StartKernelVm,
    ];

    /// The key in the JSON samples.
    pub fn key(self) -> &'static str {
        match self {
            Fig::Launch => "launch_to_first_stop_ms",
            Fig::Ready => "launch_to_ready_ms",
            Fig::Step => "steps_per_s",
            Fig::StepAck => "steps_per_s_ack",
            Fig::StepG => "steps_g_per_s",
            Fig::SwBp => "sw_bp_hits_per_s",
            Fig::HwBp => "hw_bp_hits_per_s",
            Fig::GRead => "g_reads_per_s",
            Fig::GReadAck => "g_reads_per_s_ack",
            Fig::Mem1 => "m_read_1mib_mib_per_s",
            Fig::Mem16 => "m_read_16mib_mib_per_s",
            Fig::GdbStepi => "gdb_stepi_per_s",
            Fig::GdbStepiCpu => "gdb_cpu_during_stepi_percent",
            Fig::GdbDump => "gdb_dump_mib_per_s",
            Fig::GdbDumpCpu => "gdb_cpu_during_dump_percent",
            Fig::CtrlC => "ctrl_c_to_stop_us",
            Fig::StubCpu => "stub_cpu_percent",
            Fig::Rss => "peak_rss_mib",
            Fig::RssOwn => "rss_outside_guest_ram_mib",
            Fig::RssStart => "peak_rss_at_first_stop_mib",
            Fig::LinuxVersionBz => "linux_bzimage_launch_to_version_s",
            Fig::LinuxVersionVm => "linux_vmlinux_launch_to_version_s",
            Fig::StartKernelVm => "linux_vmlinux_launch_to_start_kernel_s",
        }
    }

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Fig::Launch => "launch → first stop reply (ms)",
            Fig::Ready => "launch → stopped at `bench_ready` (ms)¹",
            Fig::Step => "single steps/s, `vCont;s`",
            Fig::StepAck => "single steps/s, `vCont;s`, ack mode",
            Fig::StepG => "single steps/s, `vCont;s` + `g`",
            Fig::SwBp => "sw breakpoint hits/s (`s`,`Z0`,`c`,`g`,`z0`)",
            Fig::HwBp => "hw breakpoint hits/s (`s`,`Z1`,`c`,`g`,`z1`)",
            Fig::GRead => "`g` reads/s",
            Fig::GReadAck => "`g` reads/s, ack mode",
            Fig::Mem1 => "`m` read, 1 MiB (MiB/s)",
            Fig::Mem16 => "`m` read, 16 MiB (MiB/s)",
            Fig::GdbStepi => "gdb: `stepi` ×1000 (stepi/s)",
            Fig::GdbStepiCpu => "… gdb's own CPU meanwhile (% of wall time)",
            Fig::GdbDump => "gdb: `dump binary memory` 16 MiB (MiB/s)",
            Fig::GdbDumpCpu => "… gdb's own CPU meanwhile (% of wall time)",
            Fig::CtrlC => "Ctrl-C → stop reply (µs)",
            Fig::StubCpu => "stub CPU, guest running 2 s (% of a core)²",
            Fig::Rss => "peak RSS, 128 MiB guest (MiB)",
            Fig::RssOwn => "RSS outside guest RAM (MiB)⁴",
            Fig::RssStart => "peak RSS at the first stop, guest not yet run (MiB)",
            Fig::LinuxVersionBz => "Linux bzImage: launch → `Linux version` on serial (s)",
            Fig::LinuxVersionVm => "Linux vmlinux (PVH): launch → `Linux version` on serial (s)",
            Fig::StartKernelVm => "Linux vmlinux: launch → gdb stopped at `start_kernel` (s)",
        }
    }

    /// True when a bigger number is better.
    pub fn higher_is_better(self) -> bool {
        !matches!(
            self,
            Fig::Launch
                | Fig::Ready
                | Fig::CtrlC
                | Fig::StubCpu
                | Fig::Rss
                | Fig::RssOwn
                | Fig::RssStart
                | Fig::GdbStepiCpu
                | Fig::GdbDumpCpu
                | Fig::LinuxVersionBz
                | Fig::LinuxVersionVm
                | Fig::StartKernelVm
        )
    }

    /// True for the figures of the `--linux` part (left out of the table when not run).
    pub fn is_linux(self) -> bool {
        matches!(
            self,
            Fig::LinuxVersionBz | Fig::LinuxVersionVm | Fig::StartKernelVm
        )
    }

    /// The target from the project's issue 4.
    pub fn target(self) -> Target {
        match self {
            Fig::Launch => Target::Ratio(10.0),
            Fig::Step | Fig::StepAck | Fig::StepG | Fig::HwBp | Fig::GdbStepi => {
                Target::Ratio(10.0)
            }
            Fig::SwBp => Target::VsQemuHwBp(10.0),
            Fig::GdbDump => Target::Ratio(5.0),
            Fig::GRead => Target::Ratio(1.5),
            Fig::StubCpu => Target::Below(1.0),
            Fig::Rss => Target::Ratio(5.0),
            // Issue 9: no firmware on kvmgdb's side.
            Fig::StartKernelVm => Target::Ratio(5.0),
            Fig::Ready
            | Fig::GReadAck
            | Fig::Mem1
            | Fig::Mem16
            | Fig::CtrlC
            | Fig::RssOwn
            | Fig::RssStart
            | Fig::GdbStepiCpu
            | Fig::GdbDumpCpu
            | Fig::LinuxVersionBz
            | Fig::LinuxVersionVm => Target::None,
        }
    }

    /// False for rows that explain another row rather than compare the stubs.
    pub fn compared(self) -> bool {
        !matches!(self, Fig::GdbStepiCpu | Fig::GdbDumpCpu)
    }

    /// How many decimals the table shows.
    pub fn decimals(self, v: f64) -> usize {
        match self {
            Fig::StubCpu => 2,
            _ if v.abs() >= 100.0 => 0,
            _ if v.abs() >= 10.0 => 1,
            _ => 2,
        }
    }
}

/// How kvmgdb compares with QEMU on `fig`: > 1 means kvmgdb is better.
pub fn advantage(fig: Fig, kvmgdb: f64, qemu: f64) -> f64 {
    if fig.higher_is_better() {
        kvmgdb / qemu
    } else {
        qemu / kvmgdb
    }
}
