//! Machine inspection for the `monitor` commands: decoding descriptor tables, registers and
//! page tables, and writing core files. Everything here is a pure function of guest memory
//! and register structures, so it is unit-tested without KVM; `src/gdb/monitor.rs` fetches
//! the state from the [`crate::vmm::Vm`] and prints the results.

pub mod coredump;
pub mod descriptors;
pub mod registers;
