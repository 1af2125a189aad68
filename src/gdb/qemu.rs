//! QEMU's own gdb packets, accepted for compatibility with scripts written for QEMU:
//! `maintenance packet Qqemu.PhyMemMode:1`, `qqemu.sstepbits`, `qqemu.sstep`,
//! `Qqemu.sstep=N`. gdbstub has no hook for packets it does not know, so the session loop
//! passes every complete packet through [`PacketSplitter`] and answers these itself.

use crate::vmm::Vm;

/// QEMU's single-step flag bits (QEMU `SSTEP_*`).
const SSTEP_ENABLE: u32 = 1;
const SSTEP_NOIRQ: u32 = 2;
const SSTEP_NOTIMER: u32 = 4;

/// Splits the incoming byte stream into packets so QEMU-specific ones can be taken out.
#[derive(Default)]
pub struct PacketSplitter {
    /// Bytes of a packet being collected, from `$` on.
    partial: Vec<u8>,
    /// Bytes of the checksum still expected after `#`.
    checksum_left: u8,
    /// True once the client has switched off acknowledgements.
    no_ack: bool,
}

/// What to do with incoming bytes.
pub enum Split {
    /// Pass these bytes to gdbstub.
    Forward(Vec<u8>),
    /// A whole packet for us; the payload between `$` and `#`.
    Packet(String),
}

impl PacketSplitter {
    /// Feeds bytes; returns what to do with them, in order.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Split>) {
        let mut forward = Vec::new();
        for &b in bytes {
            if self.partial.is_empty() {
                if b == b'$' {
                    self.partial.push(b);
                } else {
                    forward.push(b);
                }
                continue;
            }
            self.partial.push(b);
            if self.checksum_left > 0 {
                self.checksum_left -= 1;
                if self.checksum_left == 0 {
                    let packet = std::mem::take(&mut self.partial);
                    let payload = &packet[1..packet.len() - 3];
                    if payload == b"QStartNoAckMode" {
                        self.no_ack = true;
                    }
                    if is_qemu_packet(payload) {
                        if !forward.is_empty() {
                            out.push(Split::Forward(std::mem::take(&mut forward)));
                        }
                        out.push(Split::Packet(String::from_utf8_lossy(payload).into_owned()));
                    } else {
                        forward.extend_from_slice(&packet);
                    }
                }
            } else if b == b'#' {
                self.checksum_left = 2;
            }
        }
        // An unfinished packet waits for more bytes.
        if !forward.is_empty() {
            out.push(Split::Forward(forward));
        }
    }

    /// Whether replies need the `+` acknowledgement first.
    pub fn acks(&self) -> bool {
        !self.no_ack
    }
}

fn is_qemu_packet(payload: &[u8]) -> bool {
    payload.starts_with(b"qqemu.") || payload.starts_with(b"Qqemu.")
}

/// Answers a QEMU packet. Unknown ones get the empty reply, as gdb expects for packets a
/// stub does not support.
pub fn answer(vm: &mut Vm, payload: &str) -> String {
    match payload {
        "qqemu.sstepbits" => {
            format!("ENABLE={SSTEP_ENABLE:x},NOIRQ={SSTEP_NOIRQ:x},NOTIMER={SSTEP_NOTIMER:x}")
        }
        "qqemu.sstep" => {
            let flags = if vm.step_masks_irq() {
                SSTEP_ENABLE | SSTEP_NOIRQ | SSTEP_NOTIMER
            } else {
                SSTEP_ENABLE
            };
            format!("0x{flags:x}")
        }
        "qqemu.PhyMemMode" => if vm.phys_mode() { "1" } else { "0" }.to_string(),
        _ => {
            if let Some(v) = payload.strip_prefix("Qqemu.sstep=") {
                let v = v.trim_start_matches("0x");
                return match u32::from_str_radix(v, 16) {
                    Ok(flags) => {
                        vm.set_step_masks_irq(flags & SSTEP_NOIRQ != 0);
                        "OK".into()
                    }
                    Err(_) => "E22".into(),
                };
            }
            if let Some(v) = payload.strip_prefix("Qqemu.PhyMemMode:") {
                return match v {
                    "1" => {
                        vm.set_phys_mode(true);
                        "OK".into()
                    }
                    "0" => {
                        vm.set_phys_mode(false);
                        "OK".into()
                    }
                    _ => "E22".into(),
                };
            }
            String::new()
        }
    }
}

/// Frames a reply packet.
pub fn frame(reply: &str, ack: bool) -> Vec<u8> {
    let sum = reply.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    let mut out = Vec::with_capacity(reply.len() + 5);
    if ack {
        out.push(b'+');
    }
    out.push(b'$');
    out.extend_from_slice(reply.as_bytes());
    out.extend_from_slice(format!("#{sum:02x}").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &mut PacketSplitter, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        s.push(bytes, &mut out);
        out.into_iter()
            .map(|x| match x {
                Split::Forward(b) => format!("F:{}", String::from_utf8_lossy(&b)),
                Split::Packet(p) => format!("P:{p}"),
            })
            .collect()
    }

    #[test]
    fn splits_qemu_packets_out() {
        let mut s = PacketSplitter::default();
        assert_eq!(run(&mut s, b"+$g#67"), vec!["F:+$g#67"]);
        assert_eq!(
            run(&mut s, b"$Qqemu.PhyMemMode:1#xx$m0,4#fd"),
            vec!["P:Qqemu.PhyMemMode:1", "F:$m0,4#fd"]
        );
        // A packet split across reads is held until complete.
        assert_eq!(run(&mut s, b"$qqemu.ss"), Vec::<String>::new());
        assert_eq!(run(&mut s, b"tep#00\x03"), vec!["P:qqemu.sstep", "F:\x03"]);
        assert!(s.acks());
        run(&mut s, b"$QStartNoAckMode#b0");
        assert!(!s.acks());
    }

    #[test]
    fn frames_with_checksum() {
        assert_eq!(frame("OK", false), b"$OK#9a");
        assert_eq!(frame("", true), b"+$#00");
    }
}
