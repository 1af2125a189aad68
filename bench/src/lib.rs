//! kvmgdb-bench: how fast every stop comes back, kvmgdb against `qemu-system-x86_64
//! -enable-kvm -S -gdb`, on the same Multiboot guest (`guests/bench.S`).
//!
//! Each repetition launches each stub once (alternating which goes first), drives it with
//! the RSP client in [`rsp`] and with the real gdb, verifies every answer against what the
//! guest must be doing, and records one sample per figure. The table shows medians.
//!
//! A library so that tests (the benchmark's own smoke run, and kvmgdb's protocol tests) can
//! use the RSP client and the stub launcher; the `kvmgdb-bench` binary is [`cli::main`].

pub mod cli;
pub mod debian;
pub mod figures;
pub mod fuzz;
pub mod gdb;
pub mod guest;
pub mod guestmem;
pub mod linux;
pub mod measure;
pub mod report;
pub mod rsp;
pub mod smp;
pub mod smp_image;
pub mod stub;
