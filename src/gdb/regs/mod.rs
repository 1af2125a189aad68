//! gdb's registers: the layouts and their `g`/`G` codec ([`layout`]), the target
//! description ([`xml`]), the mapping between KVM's structures and registers ([`kvm_map`]),
//! and the register packets ([`access`]).

pub mod access;
pub mod kvm_map;
pub mod layout;
pub mod xml;
