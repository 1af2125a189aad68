//! kvmgdb: a small VMM on Linux KVM whose purpose is to be a GDB remote-stub backend for
//! bare-metal and kernel code.
//!
//! The VMM core ([`vmm`]) runs vCPUs and reports stops in its own vocabulary; the stub
//! ([`gdb`]) translates gdb's remote protocol into calls on it.

pub mod boot;
pub mod caps;
pub mod cli;
pub mod config;
pub mod gdb;
pub mod guests;
pub mod inspect;
pub mod memory;
pub mod platform;
pub mod runner;
pub mod vmm;
pub mod x86;
