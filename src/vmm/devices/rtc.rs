//! The MC146818 real-time clock and CMOS memory at ports 0x70 (index) and 0x71 (data), as
//! Linux's `rtc_cmos` driver and `mach_get_cmos_time` read it: the wall-clock time (UTC, as
//! QEMU's default `-rtc base=utc`) in BCD and 24-hour mode unless the guest asks otherwise
//! in status register B, the update-in-progress flag in the 244 µs before each second, and
//! the memory-size bytes QEMU's `pc_cmos_init` writes, which firmware-era code reads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Register numbers (MC146818A data sheet, "Address map").
const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const WEEKDAY: u8 = 0x06;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
const STATUS_C: u8 = 0x0c;
const STATUS_D: u8 = 0x0d;
/// The century byte (the ACPI FADT's CENTURY field names it on PCs; QEMU keeps it here).
const CENTURY: u8 = 0x32;

/// Status A: update in progress (read-only).
const A_UIP: u8 = 0x80;
/// Status A at power-on: 32.768 kHz time base, 1024 Hz periodic rate (as QEMU resets it).
const A_DEFAULT: u8 = 0x26;
/// Status B: 24-hour mode.
const B_24H: u8 = 0x02;
/// Status B: binary (not BCD) data mode.
const B_BINARY: u8 = 0x04;
/// Status D: valid RAM and time (the battery is good).
const D_VRT: u8 = 0x80;
/// The index port's bit 7 masks NMIs on PCs; it selects no register.
const INDEX_MASK: u8 = 0x7f;
/// How long before a second's update UIP reads as set (the data sheet's t_BUC).
const UIP_WINDOW: Duration = Duration::from_micros(244);
/// Hour bit 7 in 12-hour mode: PM.
const HOUR_PM: u8 = 0x80;

/// The RTC and its 128 bytes of CMOS memory.
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    /// Seconds the guest's clock is ahead of the host's (it can set its time).
    offset: i64,
}

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    sec: u8,
    min: u8,
    hour: u8,
    /// 1 = Sunday, as the RTC counts weekdays.
    wday: u8,
    day: u8,
    month: u8,
    /// The full year.
    year: u32,
}

impl Cmos {
    /// The CMOS of a machine with `below_4g` bytes of RAM under 4 GiB, `above_4g` above it
    /// and `vcpus` CPUs, with its memory-size bytes as QEMU's `pc_cmos_init` sets them.
    pub fn new(below_4g: u64, above_4g: u64, vcpus: usize) -> Cmos {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let mut ram = [0u8; 128];
        let mut put16 = |at: usize, v: u64| {
            let v = v.min(0xffff);
            ram[at] = v as u8;
            ram[at + 1] = (v >> 8) as u8;
        };
        // Base memory in KiB (at most 640), extended memory above 1 MiB in KiB (at most
        // 64 MiB's worth), memory between 16 MiB and 4 GiB in 64 KiB units.
        put16(0x15, (below_4g / KIB).min(640));
        let ext = below_4g.saturating_sub(MIB) / KIB;
        put16(0x17, ext);
        put16(0x30, ext);
        put16(0x34, below_4g.saturating_sub(16 * MIB) / (64 * KIB));
        // Memory above 4 GiB in 64 KiB units, three bytes.
        let high = above_4g / (64 * KIB);
        ram[0x5b] = high as u8;
        ram[0x5c] = (high >> 8) as u8;
        ram[0x5d] = (high >> 16) as u8;
        // The number of CPUs less one (QEMU sets it for its BIOS).
        ram[0x5f] = vcpus.saturating_sub(1).min(255) as u8;
        ram[STATUS_A as usize] = A_DEFAULT;
        ram[STATUS_B as usize] = B_24H;
        Cmos {
            index: 0,
            ram,
            offset: 0,
        }
    }

    /// Handles an `in` from port 0x70 + `offset` (0 index, 1 data).
    pub fn read(&mut self, offset: u16) -> u8 {
        match offset {
            0 => self.index,
            _ => self.read_reg(self.index, SystemTime::now()),
        }
    }

    /// Handles an `out` to port 0x70 + `offset`.
    pub fn write(&mut self, offset: u16, value: u8) {
        match offset {
            0 => self.index = value & INDEX_MASK,
            _ => self.write_reg(self.index, value, SystemTime::now()),
        }
    }

    fn guest_time(&self, now: SystemTime) -> (i64, Duration) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        (
            since.as_secs() as i64 + self.offset,
            Duration::from_nanos(since.subsec_nanos().into()),
        )
    }

    fn binary(&self) -> bool {
        self.ram[STATUS_B as usize] & B_BINARY != 0
    }

    fn encode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            (v >> 4) * 10 + (v & 0xf)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.ram[STATUS_B as usize] & B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { HOUR_PM } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u8 {
        if self.ram[STATUS_B as usize] & B_24H != 0 {
            return self.decode(v);
        }
        let h = self.decode(v & !HOUR_PM) % 12;
        if v & HOUR_PM != 0 { h + 12 } else { h }
    }

    fn read_reg(&mut self, reg: u8, now: SystemTime) -> u8 {
        let (secs, frac) = self.guest_time(now);
        let t = civil(secs);
        match reg {
            SECONDS => self.encode(t.sec),
            MINUTES => self.encode(t.min),
            HOURS => self.encode_hour(t.hour),
            WEEKDAY => self.encode(t.wday),
            DAY => self.encode(t.day),
            MONTH => self.encode(t.month),
            YEAR => self.encode((t.year % 100) as u8),
            CENTURY => self.encode((t.year / 100) as u8),
            STATUS_A => {
                let uip = frac >= Duration::from_secs(1) - UIP_WINDOW;
                self.ram[STATUS_A as usize] & !A_UIP | if uip { A_UIP } else { 0 }
            }
            // No periodic, alarm or update interrupts are raised: no flags to report.
            STATUS_C => 0,
            STATUS_D => D_VRT,
            r => self.ram[usize::from(r & INDEX_MASK)],
        }
    }

    fn write_reg(&mut self, reg: u8, value: u8, now: SystemTime) {
        let (secs, _) = self.guest_time(now);
        let mut t = civil(secs);
        match reg {
            SECONDS => t.sec = self.decode(value),
            MINUTES => t.min = self.decode(value),
            HOURS => t.hour = self.decode_hour(value),
            DAY => t.day = self.decode(value),
            MONTH => t.month = self.decode(value),
            YEAR => t.year = t.year / 100 * 100 + u32::from(self.decode(value)),
            CENTURY => t.year = u32::from(self.decode(value)) * 100 + t.year % 100,
            // The weekday follows from the date.
            WEEKDAY => return,
            STATUS_A => {
                self.ram[STATUS_A as usize] = value & !A_UIP;
                return;
            }
            STATUS_C | STATUS_D => return,
            r => {
                self.ram[usize::from(r & INDEX_MASK)] = value;
                return;
            }
        }
        if let Some(new) = unix_time(&t) {
            self.offset += new - secs;
        }
    }
}

/// The UTC civil time of `secs` seconds since 1970 (days-from-civil inverse, proleptic
/// Gregorian calendar).
fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // 1970-01-01 was a Thursday: weekday 5 counting Sunday as 1.
    let wday = ((days + 4).rem_euclid(7) + 1) as u8;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        sec: (rem % 60) as u8,
        min: (rem / 60 % 60) as u8,
        hour: (rem / 3600) as u8,
        wday,
        day,
        month,
        year: year.max(0) as u32,
    }
}

/// Seconds since 1970 of a civil time; None for a date no calendar has.
fn unix_time(t: &Civil) -> Option<i64> {
    if !(1..=12).contains(&t.month) || !(1..=31).contains(&t.day) || t.hour > 23 || t.min > 59 {
        return None;
    }
    let y = i64::from(t.year) - i64::from(t.month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(t.month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(t.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.min) * 60 + i64::from(t.sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-02 05:37:49 UTC, a Wednesday.
    const WHEN: u64 = 1_796_189_869;

    fn at(secs: u64, micros: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros)
    }

    #[test]
    fn civil_time_round_trips() {
        let t = civil(WHEN as i64);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.min, t.sec, t.wday),
            (2026, 12, 2, 5, 37, 49, 4)
        );
        assert_eq!(unix_time(&t), Some(WHEN as i64));
        let leap = civil(951_782_400); // 2000-02-29 00:00:00
        assert_eq!((leap.year, leap.month, leap.day), (2000, 2, 29));
        assert_eq!(civil(0).wday, 5, "1970-01-01 was a Thursday");
    }

    #[test]
    fn the_clock_reads_in_bcd_with_24_hours() {
        let mut c = Cmos::new(16 << 20, 0, 1);
        let now = at(WHEN, 0);
        let regs: Vec<u8> = [SECONDS, MINUTES, HOURS, DAY, MONTH, YEAR, CENTURY, WEEKDAY]
            .iter()
            .map(|&r| c.read_reg(r, now))
            .collect();
        assert_eq!(regs, [0x49, 0x37, 0x05, 0x02, 0x12, 0x26, 0x20, 0x04]);
        assert_eq!(c.read_reg(STATUS_B, now), B_24H);
        assert_eq!(c.read_reg(STATUS_D, now), D_VRT);
        // Binary mode and 12-hour mode, as status B selects.
        c.write_reg(STATUS_B, B_BINARY, now);
        assert_eq!(c.read_reg(SECONDS, now), 49);
        assert_eq!(c.read_reg(HOURS, now), 5);
        assert_eq!(c.read_reg(HOURS, at(WHEN + 12 * 3600, 0)), 5 | HOUR_PM);
    }

    #[test]
    fn uip_is_set_just_before_each_second() {
        let mut c = Cmos::new(16 << 20, 0, 1);
        assert_eq!(c.read_reg(STATUS_A, at(WHEN, 500_000)), A_DEFAULT);
        assert_eq!(c.read_reg(STATUS_A, at(WHEN, 999_900)), A_DEFAULT | A_UIP);
    }

    #[test]
    fn the_guest_can_set_the_time_and_the_index_ignores_the_nmi_bit() {
        let mut c = Cmos::new(16 << 20, 0, 1);
        let now = at(WHEN, 0);
        c.write(0, 0x80 | YEAR);
        assert_eq!(c.read(0), YEAR);
        c.write_reg(YEAR, 0x30, now);
        c.write_reg(HOURS, 0x23, now);
        assert_eq!(c.read_reg(YEAR, now), 0x30);
        assert_eq!(c.read_reg(HOURS, now), 0x23);
        assert_eq!(c.read_reg(MINUTES, now), 0x37);
    }

    #[test]
    fn memory_size_bytes_are_as_qemu_sets_them() {
        // 3 GiB under the hole and 1 GiB above it.
        let c = Cmos::new(3 << 30, 1 << 30, 2);
        assert_eq!(&c.ram[0x15..0x19], &[0x80, 0x02, 0xff, 0xff]);
        assert_eq!(&c.ram[0x30..0x32], &[0xff, 0xff]);
        assert_eq!(&c.ram[0x34..0x36], &[0x00, 0xbf]); // (3 GiB − 16 MiB) / 64 KiB
        assert_eq!(&c.ram[0x5b..0x5e], &[0x00, 0x40, 0x00]); // 1 GiB / 64 KiB
        assert_eq!(c.ram[0x5f], 1);
        let small = Cmos::new(16 << 20, 0, 1);
        assert_eq!(&small.ram[0x17..0x19], &[0x00, 0x3c]); // 15 MiB in KiB
        assert_eq!(&small.ram[0x34..0x36], &[0, 0]);
    }
}
