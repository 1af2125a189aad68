//! x86 architectural facts: register bits, MSRs, paging, descriptors and the XSAVE layout
//! (Intel SDM). No KVM calls and no gdb types live here.

pub mod paging;
