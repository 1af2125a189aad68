//! Power and reset: the ACPI PM1a event and control blocks and the PM timer (the ports the
//! FADT names, `crate::platform`), the PIIX reset control register at 0xcf9, and as much of
//! the i8042 keyboard controller as a reboot needs (its status port and the 0xfe "pulse
//! reset" command).

use crate::platform::{
    I8042_COMMAND_PORT, I8042_DATA_PORT, PM_TMR_PORT, PM1_SLP_EN, PM1A_CNT_PORT, PM1A_EVT_PORT,
    RESET_PORT, SLP_TYP_S5,
};
use std::time::Instant;

/// What a power or reset register write asks of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerAction {
    /// Nothing.
    None,
    /// SLP_TYP = S5 with SLP_EN: power off.
    PowerOff,
    /// A reset (0xcf9 with RST_CPU, i8042 command 0xfe).
    Reset(&'static str),
}

/// PM1 control: SCI_EN, the system is in ACPI mode (ACPI 6.5, 4.8.3.2.1). The FADT has no
/// SMI command port, so the machine is always in ACPI mode and the bit always reads as set.
const PM1_SCI_EN: u16 = 1 << 0;
/// PM1 control: SLP_TYP, bits 12:10.
const PM1_SLP_TYP_SHIFT: u16 = 10;
const PM1_SLP_TYP_MASK: u16 = 0x7;
/// PM1 status bits the machine can set: TMR_STS (0), PWRBTN_STS (8), WAK_STS (15); the
/// others are reserved. Written ones clear them.
const PM1_STS_BITS: u16 = 1 | (1 << 8) | (1 << 15);
/// PM1 enable bits: TMR_EN, GBL_EN, PWRBTN_EN, SLPBTN_EN, RTC_EN.
const PM1_EN_BITS: u16 = 1 | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 10);
/// The PM timer's rate (ACPI 6.5, 4.8.3.3).
const PM_TIMER_HZ: u128 = 3_579_545;
/// The PM timer is 24 bits wide: the FADT leaves TMR_VAL_EXT clear, as QEMU's does.
const PM_TIMER_MASK: u32 = 0x00ff_ffff;
/// 0xcf9: RST_CPU, the bit whose write resets (Intel PIIX4 datasheet, 4.1.17).
const RESET_CPU: u8 = 1 << 2;
/// i8042 command: pulse the output port's reset line.
const I8042_PULSE_RESET: u8 = 0xfe;
/// i8042 status: the system flag (self-test passed) and "keyboard not inhibited"; output
/// and input buffers empty (bits 0 and 1 clear), so a guest waiting to send a command can,
/// and one reading finds no data.
const I8042_STATUS: u8 = (1 << 2) | (1 << 4);

/// The PM1a registers, the PM timer, 0xcf9 and the i8042.
pub struct Power {
    pm1_status: u16,
    pm1_enable: u16,
    pm1_control: u16,
    reset_control: u8,
    timer_start: Instant,
}

impl Default for Power {
    fn default() -> Power {
        Power {
            pm1_status: 0,
            pm1_enable: 0,
            pm1_control: PM1_SCI_EN,
            reset_control: 0,
            timer_start: Instant::now(),
        }
    }
}

/// The PM1a event block (status, enable), PM1a control block and PM timer, as one range
/// of registers from [`PM1A_EVT_PORT`].
const PM_BLOCK_LEN: u16 = PM_TMR_PORT + 4 - PM1A_EVT_PORT;

impl Power {
    /// Whether this device answers `port`.
    pub fn claims(port: u16) -> bool {
        (PM1A_EVT_PORT..PM1A_EVT_PORT + PM_BLOCK_LEN).contains(&port)
            || port == RESET_PORT
            || port == I8042_COMMAND_PORT
            || port == I8042_DATA_PORT
    }

    /// The PM block as bytes from [`PM1A_EVT_PORT`] (little-endian registers).
    fn pm_bytes(&self) -> [u8; PM_BLOCK_LEN as usize] {
        let mut b = [0u8; PM_BLOCK_LEN as usize];
        let at = |port: u16| usize::from(port - PM1A_EVT_PORT);
        b[at(PM1A_EVT_PORT)..][..2].copy_from_slice(&self.pm1_status.to_le_bytes());
        b[at(PM1A_EVT_PORT) + 2..][..2].copy_from_slice(&self.pm1_enable.to_le_bytes());
        b[at(PM1A_CNT_PORT)..][..2].copy_from_slice(&self.pm1_control.to_le_bytes());
        b[at(PM_TMR_PORT)..][..4].copy_from_slice(&self.timer().to_le_bytes());
        b
    }

    /// The PM timer: 3.579545 MHz ticks of the host's monotonic clock since power-on.
    pub fn timer(&self) -> u32 {
        let ns = self.timer_start.elapsed().as_nanos();
        (ns * PM_TIMER_HZ / 1_000_000_000) as u32 & PM_TIMER_MASK
    }

    /// Handles an `in` from `port` (one this device claims).
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            RESET_PORT => data.fill(self.reset_control),
            I8042_COMMAND_PORT => data.fill(I8042_STATUS),
            // No data: the output buffer is empty.
            I8042_DATA_PORT => data.fill(0),
            _ => {
                let regs = self.pm_bytes();
                for (i, b) in data.iter_mut().enumerate() {
                    let at = usize::from(port - PM1A_EVT_PORT) + i;
                    *b = regs.get(at).copied().unwrap_or(0xff);
                }
            }
        }
    }

    /// Handles an `out` to `port` (one this device claims).
    pub fn write(&mut self, port: u16, data: &[u8]) -> PowerAction {
        match port {
            RESET_PORT => {
                let v = data.first().copied().unwrap_or(0);
                // RST_CPU reads back as 0: the reset has happened.
                self.reset_control = v & !RESET_CPU;
                if v & RESET_CPU != 0 && data.len() == 1 {
                    return PowerAction::Reset("reset control register 0xcf9");
                }
                PowerAction::None
            }
            I8042_COMMAND_PORT if data.first() == Some(&I8042_PULSE_RESET) => {
                PowerAction::Reset("keyboard controller command 0xfe")
            }
            I8042_COMMAND_PORT | I8042_DATA_PORT => PowerAction::None,
            _ => self.write_pm(port, data),
        }
    }

    fn write_pm(&mut self, port: u16, data: &[u8]) -> PowerAction {
        let mut action = PowerAction::None;
        // Each 16-bit register takes the bytes written to it, merged with its old value.
        let merge = |old: u16, reg: u16| {
            let mut b = old.to_le_bytes();
            for (i, &v) in data.iter().enumerate() {
                let p = port + i as u16;
                if p >= reg && p < reg + 2 {
                    b[usize::from(p - reg)] = v;
                }
            }
            (
                u16::from_le_bytes(b),
                (port..port + data.len() as u16).any(|p| p >= reg && p < reg + 2),
            )
        };
        let (sts, hit) = merge(0, PM1A_EVT_PORT);
        if hit {
            self.pm1_status &= !(sts & PM1_STS_BITS);
        }
        let (en, hit) = merge(self.pm1_enable, PM1A_EVT_PORT + 2);
        if hit {
            self.pm1_enable = en & PM1_EN_BITS;
        }
        let (cnt, hit) = merge(self.pm1_control, PM1A_CNT_PORT);
        if hit {
            if cnt & PM1_SLP_EN != 0 {
                let typ = (cnt >> PM1_SLP_TYP_SHIFT) & PM1_SLP_TYP_MASK;
                if typ == SLP_TYP_S5 {
                    action = PowerAction::PowerOff;
                } else {
                    log::info!(
                        "the guest asked for sleep state SLP_TYP={typ}: not supported, ignored"
                    );
                }
            }
            // SLP_EN is write-only; SCI_EN stays set.
            self.pm1_control = (cnt & !PM1_SLP_EN) | PM1_SCI_EN;
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S5: u16 = SLP_TYP_S5 << PM1_SLP_TYP_SHIFT;

    #[test]
    fn s5_with_slp_en_powers_off() {
        let mut p = Power::default();
        assert_eq!(
            p.write(PM1A_CNT_PORT, &(S5 | PM1_SLP_EN).to_le_bytes()),
            PowerAction::PowerOff
        );
        // SLP_TYP alone, then SLP_EN in a byte write of the high half.
        let mut p = Power::default();
        assert_eq!(p.write(PM1A_CNT_PORT, &S5.to_le_bytes()), PowerAction::None);
        let high = ((S5 | PM1_SLP_EN) >> 8) as u8;
        assert_eq!(p.write(PM1A_CNT_PORT + 1, &[high]), PowerAction::PowerOff);
        // Another sleep state is no power-off.
        let s3 = 3 << PM1_SLP_TYP_SHIFT | PM1_SLP_EN;
        assert_eq!(
            Power::default().write(PM1A_CNT_PORT, &s3.to_le_bytes()),
            PowerAction::None
        );
        let mut cnt = [0u8; 2];
        p.read(PM1A_CNT_PORT, &mut cnt);
        assert_eq!(u16::from_le_bytes(cnt) & PM1_SCI_EN, PM1_SCI_EN);
    }

    #[test]
    fn resets_by_0xcf9_and_the_keyboard_controller() {
        let mut p = Power::default();
        assert_eq!(p.write(RESET_PORT, &[0x02]), PowerAction::None);
        assert!(matches!(
            p.write(RESET_PORT, &[0x06]),
            PowerAction::Reset(_)
        ));
        let mut b = [0u8];
        p.read(RESET_PORT, &mut b);
        assert_eq!(b[0], 0x02);
        assert!(matches!(
            p.write(I8042_COMMAND_PORT, &[0xfe]),
            PowerAction::Reset(_)
        ));
        assert_eq!(p.write(I8042_COMMAND_PORT, &[0xaa]), PowerAction::None);
        p.read(I8042_COMMAND_PORT, &mut b);
        assert_eq!(b[0] & 3, 0, "no data, input buffer empty");
    }

    #[test]
    fn the_pm_timer_counts_at_3_58_mhz() {
        let p = Power::default();
        let mut b = [0u8; 4];
        let mut q = Power {
            timer_start: p.timer_start,
            ..Power::default()
        };
        q.read(PM_TMR_PORT, &mut b);
        let t0 = u32::from_le_bytes(b);
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.read(PM_TMR_PORT, &mut b);
        let ticks = u32::from_le_bytes(b).wrapping_sub(t0) & PM_TIMER_MASK;
        // 20 ms is 71 591 ticks; allow for a slow wake-up.
        assert!((71_000..200_000).contains(&ticks), "{ticks} ticks in 20 ms");
    }

    #[test]
    fn status_bits_clear_when_written_with_one() {
        let mut p = Power {
            pm1_status: 1 | 1 << 15,
            ..Power::default()
        };
        p.write(PM1A_EVT_PORT, &1u16.to_le_bytes());
        assert_eq!(p.pm1_status, 1 << 15);
        p.write(PM1A_EVT_PORT + 2, &0xffffu16.to_le_bytes());
        assert_eq!(p.pm1_enable, PM1_EN_BITS);
    }
}
