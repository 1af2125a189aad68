//! The integration-test harness (see `process.rs`).

mod process;

pub use process::*;
