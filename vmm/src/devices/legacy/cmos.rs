//! An MC146818 CMOS real-time clock at ports 0x70 (index) and 0x71 (data), as on QEMU's microvm
//! machine: Linux reads the wall clock from it at boot when it has no other source
//! (`mach_get_cmos_time`), and without it logs "Unable to read current time from RTC" and starts
//! in 1970.
//!
//! The clock registers always show the host's current UTC time; the guest cannot set them (its
//! writes are dropped), so the host stays the one source of time. No interrupts: the alarm,
//! periodic and update-ended flags never fire.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::devices::bus::BusDevice;
use crate::devices::persist::{Persist, RestoreError};
use crate::vm::VmExit;

const INDEX_OFFSET: u64 = 0; // port 0x70
const DATA_OFFSET: u64 = 1; // port 0x71

/// Bit 7 of the index port masks NMIs on real hardware; we have nothing to mask.
const INDEX_MASK: u8 = 0x7f;
const RAM_SIZE: usize = 128;

// Registers.
const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY_OF_WEEK: u8 = 0x06;
const REG_DAY_OF_MONTH: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// Where QEMU and PC firmware keep the century (ACPI FADT "century" points here).
const REG_CENTURY: u8 = 0x32;

/// Register A: update in progress. Never set: the registers are computed on each read, so there
/// is no update to wait for. Linux re-reads the seconds after reading the rest and starts over
/// if they changed, which covers a read that straddles a second.
const REG_A_UIP: u8 = 0x80;
/// Register A at reset: 32.768 kHz time base, 1024 Hz periodic rate (as QEMU).
const REG_A_DEFAULT: u8 = 0x26;
/// Register B: binary rather than BCD values.
const REG_B_DM_BINARY: u8 = 0x04;
/// Register B: 24-hour rather than 12-hour mode.
const REG_B_24H: u8 = 0x02;
/// Register B at reset: 24-hour, BCD (what Linux and firmware expect of a PC).
const REG_B_DEFAULT: u8 = REG_B_24H;
/// Register D: valid RAM and time (the battery is good).
const REG_D_VRT: u8 = 0x80;
/// 12-hour mode: the hours register's PM flag.
const HOURS_PM: u8 = 0x80;

const SECONDS_PER_DAY: u64 = 86_400;

/// A UTC calendar date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime {
    pub year: i64,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 1 (Sunday) ..= 7 (Saturday), as the RTC counts.
    pub weekday: u8,
}

impl DateTime {
    /// The date and time `secs` seconds after 1970-01-01 00:00:00 UTC (leap seconds aside,
    /// as Unix time).
    pub fn from_unix(secs: u64) -> DateTime {
        // u64::MAX / 86400 < 2^48: none of the arithmetic below can overflow an i64.
        let days = (secs / SECONDS_PER_DAY) as i64;
        let rem = secs % SECONDS_PER_DAY;
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (rem / 3600) as u8,
            minute: (rem / 60 % 60) as u8,
            second: (rem % 60) as u8,
            // 1970-01-01 was a Thursday (5).
            weekday: ((days + 4) % 7 + 1) as u8,
        }
    }

    /// The host's clock now; a clock set before 1970 reads as 1970.
    pub fn now() -> DateTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        DateTime::from_unix(secs)
    }
}

/// Year, month (1..=12) and day (1..=31) of the day `days` after 1970-01-01 (`days` >= 0), in
/// the proleptic Gregorian calendar. Howard Hinnant's `civil_from_days`: eras of 400 years
/// (146097 days) that start on March 1st, so the leap day is the last day of a year.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1st
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The RTC and its 128 bytes of CMOS RAM.
pub struct Cmos {
    index: u8,
    /// Backing store for every register the clock does not compute (alarms, register A and B,
    /// the rest of CMOS RAM).
    ram: [u8; RAM_SIZE],
    clock: fn() -> DateTime,
}

impl Default for Cmos {
    fn default() -> Self {
        Cmos::new()
    }
}

impl Cmos {
    /// A clock that reads the host's UTC time.
    pub fn new() -> Self {
        Cmos::with_clock(DateTime::now)
    }

    /// A clock that reads `clock` (tests use fixed times).
    pub fn with_clock(clock: fn() -> DateTime) -> Self {
        let mut ram = [0; RAM_SIZE];
        ram[usize::from(REG_A)] = REG_A_DEFAULT;
        ram[usize::from(REG_B)] = REG_B_DEFAULT;
        Cmos {
            index: 0,
            ram,
            clock,
        }
    }

    fn reg_b(&self) -> u8 {
        self.ram[usize::from(REG_B)]
    }

    /// `value` (0..=99) as the guest asked for it: BCD unless register B says binary.
    fn encode(&self, value: u8) -> u8 {
        if self.reg_b() & REG_B_DM_BINARY != 0 {
            value
        } else {
            ((value / 10) << 4) | (value % 10)
        }
    }

    fn hours(&self, hour: u8) -> u8 {
        if self.reg_b() & REG_B_24H != 0 {
            return self.encode(hour);
        }
        // 12-hour mode: 12, 1, ..., 11, with the PM flag from noon.
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour >= 12 { HOURS_PM } else { 0 };
        self.encode(h12) | pm
    }

    fn read_register(&self, reg: u8) -> u8 {
        let now = || (self.clock)();
        // rem_euclid(100) is in 0..100: the casts below cannot truncate.
        let two_digits = |v: i64| self.encode(v.rem_euclid(100) as u8);
        match reg {
            REG_SECONDS => self.encode(now().second),
            REG_MINUTES => self.encode(now().minute),
            REG_HOURS => self.hours(now().hour),
            REG_DAY_OF_WEEK => self.encode(now().weekday),
            REG_DAY_OF_MONTH => self.encode(now().day),
            REG_MONTH => self.encode(now().month),
            REG_YEAR => two_digits(now().year),
            REG_CENTURY => two_digits(now().year.div_euclid(100)),
            REG_A => self.ram[usize::from(REG_A)] & !REG_A_UIP,
            // No interrupt flags are ever raised.
            REG_C => 0,
            REG_D => REG_D_VRT,
            _ => self.ram[usize::from(reg & INDEX_MASK)],
        }
    }

    fn write_register(&mut self, reg: u8, value: u8) {
        match reg {
            // The clock is the host's: setting it (Linux may on shutdown or after NTP sync) is
            // accepted and dropped.
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_DAY_OF_WEEK | REG_DAY_OF_MONTH
            | REG_MONTH | REG_YEAR | REG_CENTURY => {
                tracing::trace!("cmos: ignored write of {value:#x} to clock register {reg:#x}")
            }
            REG_C | REG_D => {} // read-only
            REG_A => self.ram[usize::from(REG_A)] = value & !REG_A_UIP,
            _ => self.ram[usize::from(reg & INDEX_MASK)] = value,
        }
    }
}

/// The RTC's state: the selected register and the CMOS RAM (alarms, registers A and B, the
/// rest). The clock registers are not state: they read the host's clock, then as now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmosState {
    pub index: u8,
    pub ram: Vec<u8>,
}

impl Persist for Cmos {
    type State = CmosState;
    /// The clock it reads: [`DateTime::now`], the host's.
    type Args = fn() -> DateTime;

    fn save(&self) -> CmosState {
        CmosState {
            index: self.index,
            ram: self.ram.to_vec(),
        }
    }

    fn restore(clock: fn() -> DateTime, state: &CmosState) -> Result<Self, RestoreError> {
        let ram =
            <[u8; RAM_SIZE]>::try_from(state.ram.as_slice()).map_err(|_| RestoreError::Length {
                what: "CMOS RAM",
                len: state.ram.len(),
                expected: RAM_SIZE,
            })?;
        Ok(Cmos {
            index: state.index & INDEX_MASK,
            ram,
            clock,
        })
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A wider access is a run of byte accesses to consecutive ports.
        for (port, byte) in (offset..).zip(data.iter_mut()) {
            *byte = match port {
                DATA_OFFSET => self.read_register(self.index),
                // The index port is write-only; QEMU reads it as 0xff.
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmExit> {
        for (port, &value) in (offset..).zip(data) {
            match port {
                INDEX_OFFSET => self.index = value & INDEX_MASK,
                DATA_OFFSET => self.write_register(self.index, value),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-26 13:45:07 UTC, a Thursday.
    const NOV_26_2026: u64 = 1_795_700_707;

    fn at(secs: u64) -> DateTime {
        DateTime::from_unix(secs)
    }

    fn dt(year: i64, month: u8, day: u8, hms: (u8, u8, u8), weekday: u8) -> DateTime {
        DateTime {
            year,
            month,
            day,
            hour: hms.0,
            minute: hms.1,
            second: hms.2,
            weekday,
        }
    }

    fn read(c: &mut Cmos, reg: u8) -> u8 {
        c.write(INDEX_OFFSET, &[reg]);
        let mut b = [0];
        c.read(DATA_OFFSET, &mut b);
        b[0]
    }

    fn write(c: &mut Cmos, reg: u8, value: u8) {
        c.write(INDEX_OFFSET, &[reg]);
        c.write(DATA_OFFSET, &[value]);
    }

    fn fixed() -> Cmos {
        Cmos::with_clock(|| DateTime::from_unix(NOV_26_2026))
    }

    #[test]
    fn state_round_trips() {
        use crate::devices::persist::through_json;
        let mut c = fixed();
        write(&mut c, REG_B, REG_B_24H | REG_B_DM_BINARY);
        write(&mut c, 0x40, 0x99); // CMOS RAM
        c.write(INDEX_OFFSET, &[REG_SECONDS]);
        let state = through_json(&c.save());
        let mut restored = Cmos::restore(|| DateTime::from_unix(NOV_26_2026), &state).unwrap();
        assert_eq!(restored.save(), state);
        let mut b = [0];
        restored.read(DATA_OFFSET, &mut b);
        assert_eq!(b[0], 7, "the selected register, in binary");
        assert_eq!(read(&mut restored, 0x40), 0x99);

        let bad = CmosState {
            index: 0,
            ram: vec![0; 64],
        };
        assert!(matches!(
            Cmos::restore(DateTime::now, &bad),
            Err(RestoreError::Length { len: 64, .. })
        ));
    }

    #[test]
    fn calendar() {
        assert_eq!(at(0), dt(1970, 1, 1, (0, 0, 0), 5));
        assert_eq!(at(NOV_26_2026), dt(2026, 11, 26, (13, 45, 7), 5));
        // Leap years: every 4th, not every 100th, but every 400th.
        assert_eq!(at(1_709_251_199), dt(2024, 2, 29, (23, 59, 59), 5));
        assert_eq!(at(1_709_251_200), dt(2024, 3, 1, (0, 0, 0), 6));
        assert_eq!(at(951_782_400), dt(2000, 2, 29, (0, 0, 0), 3));
        assert_eq!(at(4_107_499_200), dt(2100, 2, 28, (12, 0, 0), 1));
        assert_eq!(at(4_107_542_400), dt(2100, 3, 1, (0, 0, 0), 2));
        // The ends of centuries.
        assert_eq!(at(946_684_799), dt(1999, 12, 31, (23, 59, 59), 6));
        assert_eq!(at(946_684_800), dt(2000, 1, 1, (0, 0, 0), 7));
        assert_eq!(at(4_102_444_799), dt(2099, 12, 31, (23, 59, 59), 5));
        assert_eq!(at(4_102_444_800), dt(2100, 1, 1, (0, 0, 0), 6));
        // Nothing overflows at the far end.
        assert!(at(u64::MAX).year > 500_000_000_000);
    }

    #[test]
    fn calendar_agrees_day_by_day() {
        // Walk 1970..2200 a day at a time: dates only ever advance by one day.
        let mut prev = at(0);
        for day in 1..(230 * 366) {
            let d = at(day * SECONDS_PER_DAY);
            let next_month = (prev.month % 12 + 1, 1);
            assert!(
                (d.month, d.day) == (prev.month, prev.day + 1) || (d.month, d.day) == next_month,
                "{prev:?} -> {d:?}"
            );
            assert_eq!(d.year, prev.year + i64::from((d.month, d.day) == (1, 1)));
            assert_eq!(d.weekday, prev.weekday % 7 + 1);
            if d.day == 1 {
                let leap = prev.year % 4 == 0 && (prev.year % 100 != 0 || prev.year % 400 == 0);
                let expected = match prev.month {
                    2 if leap => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                assert_eq!(prev.day, expected, "{prev:?}");
            }
            prev = d;
        }
    }

    #[test]
    fn clock_in_bcd_by_default() {
        let mut c = fixed();
        assert_eq!(read(&mut c, REG_SECONDS), 0x07);
        assert_eq!(read(&mut c, REG_MINUTES), 0x45);
        assert_eq!(read(&mut c, REG_HOURS), 0x13);
        assert_eq!(read(&mut c, REG_DAY_OF_WEEK), 0x05);
        assert_eq!(read(&mut c, REG_DAY_OF_MONTH), 0x26);
        assert_eq!(read(&mut c, REG_MONTH), 0x11);
        assert_eq!(read(&mut c, REG_YEAR), 0x26);
        assert_eq!(read(&mut c, REG_CENTURY), 0x20);
        assert_eq!(read(&mut c, REG_A) & REG_A_UIP, 0);
        assert_eq!(read(&mut c, REG_B), REG_B_24H);
        assert_eq!(read(&mut c, REG_C), 0);
        assert_eq!(read(&mut c, REG_D), REG_D_VRT);
    }

    #[test]
    fn binary_and_12_hour_modes_follow_register_b() {
        let mut c = fixed();
        write(&mut c, REG_B, REG_B_24H | REG_B_DM_BINARY);
        assert_eq!(read(&mut c, REG_SECONDS), 7);
        assert_eq!(read(&mut c, REG_MINUTES), 45);
        assert_eq!(read(&mut c, REG_HOURS), 13);
        assert_eq!(read(&mut c, REG_MONTH), 11);
        assert_eq!(read(&mut c, REG_YEAR), 26);
        assert_eq!(read(&mut c, REG_CENTURY), 20);
        write(&mut c, REG_B, REG_B_DM_BINARY);
        assert_eq!(read(&mut c, REG_HOURS), HOURS_PM | 1);
        write(&mut c, REG_B, 0);
        assert_eq!(read(&mut c, REG_HOURS), HOURS_PM | 0x01);
        let mut midnight = Cmos::with_clock(|| DateTime::from_unix(0));
        write(&mut midnight, REG_B, 0);
        assert_eq!(read(&mut midnight, REG_HOURS), 0x12, "12 AM");
        assert_eq!(read(&mut midnight, REG_CENTURY), 0x19);
        assert_eq!(read(&mut midnight, REG_YEAR), 0x70);
    }

    #[test]
    fn clock_writes_are_dropped_ram_writes_kept() {
        let mut c = fixed();
        // What Linux's mc146818_set_time does: SET, the time, then SET off.
        write(&mut c, REG_B, 0x80 | REG_B_24H);
        for reg in [REG_SECONDS, REG_MINUTES, REG_HOURS, REG_YEAR, REG_CENTURY] {
            write(&mut c, reg, 0x59);
        }
        write(&mut c, REG_B, REG_B_24H);
        assert_eq!(read(&mut c, REG_SECONDS), 0x07);
        assert_eq!(read(&mut c, REG_YEAR), 0x26);
        assert_eq!(read(&mut c, REG_CENTURY), 0x20);
        // Read-only status registers.
        write(&mut c, REG_A, 0xff);
        assert_eq!(read(&mut c, REG_A), 0x7f);
        write(&mut c, REG_C, 0xff);
        write(&mut c, REG_D, 0);
        assert_eq!(read(&mut c, REG_C), 0);
        assert_eq!(read(&mut c, REG_D), REG_D_VRT);
        // Alarms and plain CMOS RAM (0x0f: the shutdown status byte Linux sets for SMP boot).
        for reg in [0x01, 0x0f, 0x33, 0x7f] {
            write(&mut c, reg, 0xa5);
            assert_eq!(read(&mut c, reg), 0xa5, "register {reg:#x}");
        }
    }

    #[test]
    fn index_is_masked_and_nothing_panics() {
        let mut c = fixed();
        // Bit 7 (NMI disable) is not part of the index.
        assert_eq!(read(&mut c, 0x80 | REG_MINUTES), 0x45);
        write(&mut c, 0xff, 0x3c);
        assert_eq!(read(&mut c, 0x7f), 0x3c);
        // Every index and value, wide and empty accesses, ports past the two.
        for index in 0..=u8::MAX {
            write(&mut c, index, index);
            read(&mut c, index);
        }
        let mut wide = [0u8; 4];
        c.read(INDEX_OFFSET, &mut wide);
        c.read(7, &mut wide);
        c.read(DATA_OFFSET, &mut []);
        assert_eq!(c.write(INDEX_OFFSET, &[0xff, 0, 0, 0]), None);
        assert_eq!(c.write(DATA_OFFSET, &[]), None);
        // A word write is the index, then the data byte.
        c.write(INDEX_OFFSET, &[0x40, 0x77]);
        assert_eq!(read(&mut c, 0x40), 0x77);
        let mut b = [0];
        c.read(INDEX_OFFSET, &mut b);
        assert_eq!(b, [0xff], "the index port is write-only");
    }

    #[test]
    fn host_clock_reads_now() {
        let before = DateTime::now();
        let mut c = Cmos::new();
        let seconds = read(&mut c, REG_SECONDS);
        assert!(seconds & 0x0f <= 9 && seconds >> 4 <= 5, "{seconds:#x}");
        assert!(before.year >= 2024);
    }
}
