//! `monitor` commands (qRcmd). Unknown commands get a one-line error, never a dropped
//! connection.

use super::regs::GuestArch;
use super::target::KvmTarget;
use crate::vmm::VmError;
use gdbstub::outputln;
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd};

const HELP: &str = "\
kvmgdb monitor commands:
  help          this text
  info cpus     each vCPU: state, last stop, RIP
  info kvm      the host KVM's capabilities";

impl<A: GuestArch> MonitorCmd for KvmTarget<'_, A> {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), VmError> {
        let cmd = String::from_utf8_lossy(cmd);
        let words: Vec<&str> = cmd.split_whitespace().collect();
        match words.as_slice() {
            [] | ["help"] => outputln!(out, "{HELP}"),
            ["info", "cpus"] => {
                for id in 0..self.vm.vcpu_count() {
                    let rip = self.vm.state(id).map(|s| s.regs.rip).unwrap_or(0);
                    let what = match (self.vm.frozen(id), self.vm.last_stop(id)) {
                        (Some(stop), _) => format!("frozen: {}", stop.describe()),
                        (None, Some(stop)) => format!("stopped: {}", stop.describe()),
                        (None, None) => "stopped at the boot entry point".to_string(),
                    };
                    outputln!(out, "* CPU #{id}: rip={rip:#018x} {what}");
                }
            }
            ["info", "kvm"] => outputln!(out, "{}", self.vm.caps().table().trim_end()),
            _ => outputln!(out, "unknown monitor command {cmd:?}; try 'monitor help'"),
        }
        Ok(())
    }
}
