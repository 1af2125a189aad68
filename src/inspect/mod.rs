//! Machine inspection for the `monitor` commands: showing descriptor tables and registers,
//! and writing core files. The architecture itself (descriptor decoding, register bits,
//! page-table walks) is [`crate::x86`]'s; everything here is a pure function of guest
//! memory and register structures, so it is unit-tested without KVM. The monitor
//! (`src/gdb/monitor/`, one file per command family) fetches the state from the
//! [`crate::vmm::Vm`] and prints the results.

pub mod coredump;
pub mod descriptors;
pub mod registers;
