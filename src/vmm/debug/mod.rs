//! Debug state: breakpoints, watchpoints and debugger memory access.

pub mod table;
pub mod watch;

pub use table::*;
