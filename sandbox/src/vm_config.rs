//! The user's choices for one VM (memory, vCPUs, timeouts), checked before anything is built
//! or started.

use std::time::Duration;

use vmm::vm::{MAX_CPUS, MIN_MEMORY_MIB};

const MIB: u64 = 1024 * 1024;
pub const DEFAULT_MEMORY: &str = "512M";
/// A user's disk: room for the ext4 journal and metadata, up to what is sane for one user.
pub const MIN_DISK_MIB: u64 = 32;
pub const MAX_DISK_MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--memory {0:?} is not a size; write it like 512M, 2G or 1024 (MiB)")]
    MemorySyntax(String),
    #[error("--memory {given}: the guest needs at least {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall { given: String },
    #[error("--memory {given}: this host has only {host_mib} MiB of memory")]
    MemoryTooLarge { given: String, host_mib: u64 },
    #[error("--cpus {0:?}: a VM has 1 to {MAX_CPUS} vCPUs")]
    Cpus(String),
    #[error(
        "--disk-size {0:?}: give {MIN_DISK_MIB}M to {max}G, like 512M or 4G",
        max = MAX_DISK_MIB / 1024
    )]
    DiskSize(String),
}

/// Parses a size in MiB: `512`, `512M`, `512MiB`, `2G`, `2GiB`, `1T`, or KiB that make whole
/// MiB (a bare number is MiB). `None` when it is not one. (Not `bytesize`: there `M`, `G` and
/// `K` are decimal units and a bare number is bytes.)
pub fn size_mib(given: &str) -> Option<u64> {
    let s = given.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: u64 = number.parse().ok()?;
    match unit.trim().to_ascii_uppercase().as_str() {
        "" | "M" | "MB" | "MIB" => Some(number),
        "G" | "GB" | "GIB" => number.checked_mul(1024),
        "T" | "TB" | "TIB" => number.checked_mul(1024 * 1024),
        "K" | "KB" | "KIB" if number.is_multiple_of(1024) => Some(number / 1024),
        _ => None,
    }
}

/// Parses `--memory` (see [`size_mib`]) and checks it against the guest's needs and the host's
/// memory.
pub fn memory_mib(given: &str) -> Result<u32, ConfigError> {
    let mib = size_mib(given).ok_or_else(|| ConfigError::MemorySyntax(given.to_string()))?;
    if mib < u64::from(MIN_MEMORY_MIB) {
        return Err(ConfigError::MemoryTooSmall {
            given: given.to_string(),
        });
    }
    let host_mib = host_memory_mib();
    if mib > host_mib {
        return Err(ConfigError::MemoryTooLarge {
            given: given.to_string(),
            host_mib,
        });
    }
    u32::try_from(mib).map_err(|_| ConfigError::MemoryTooLarge {
        given: given.to_string(),
        host_mib,
    })
}

/// Parses `--disk-size` into bytes.
pub fn disk_size_bytes(given: &str) -> Result<u64, ConfigError> {
    size_mib(given)
        .filter(|mib| (MIN_DISK_MIB..=MAX_DISK_MIB).contains(mib))
        .map(|mib| mib << 20)
        .ok_or_else(|| ConfigError::DiskSize(given.to_string()))
}

/// Parses `--cpus`: 1 to [`MAX_CPUS`].
pub fn cpus(given: &str) -> Result<u8, ConfigError> {
    given
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|n| (1..=MAX_CPUS).contains(n))
        .ok_or_else(|| ConfigError::Cpus(given.to_string()))
}

fn host_memory_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024 / MIB)
        .unwrap_or(u64::MAX)
}

/// `30s`, `5m`, `1h`, `500ms` (humantime's units, combined as in `1m 30s`), or a number of
/// seconds; whole numbers only, more than 0.
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration; write it like 30s, 5m, 1h or 500ms");
    let d = match t.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) if t.contains('.') => return Err(bad()),
        Err(_) => humantime::parse_duration(t).map_err(|_| bad())?,
    };
    if d.is_zero() {
        return Err(format!("{text:?}: the timeout must be more than 0"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(memory_mib("512"), Ok(512));
        assert_eq!(memory_mib("512M"), Ok(512));
        assert_eq!(memory_mib("1g"), Ok(1024));
        assert_eq!(memory_mib("1GiB"), Ok(1024));
        assert_eq!(memory_mib("262144K"), Ok(256));
        assert!(matches!(
            memory_mib("lots"),
            Err(ConfigError::MemorySyntax(_))
        ));
        assert!(matches!(
            memory_mib("-5"),
            Err(ConfigError::MemorySyntax(_))
        ));
        assert!(matches!(
            memory_mib("12X"),
            Err(ConfigError::MemorySyntax(_))
        ));
        assert!(matches!(
            memory_mib("64M"),
            Err(ConfigError::MemoryTooSmall { .. })
        ));
        assert!(matches!(
            memory_mib("100000G"),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
        assert!(matches!(
            memory_mib("99999999999999999999"),
            Err(ConfigError::MemorySyntax(_))
        ));
    }

    #[test]
    fn disk_sizes() {
        assert_eq!(disk_size_bytes("64M"), Ok(64 << 20));
        assert_eq!(disk_size_bytes("2G"), Ok(2 << 30));
        assert_eq!(disk_size_bytes("1T"), Ok(1 << 40));
        for bad in ["16M", "2T", "big", "", "-1G", "99999999999999999999T"] {
            assert!(
                matches!(disk_size_bytes(bad), Err(ConfigError::DiskSize(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn cpu_counts() {
        assert_eq!(cpus("1"), Ok(1));
        assert_eq!(cpus("32"), Ok(32));
        for bad in ["0", "33", "1000", "-1", "two", ""] {
            assert_eq!(cpus(bad), Err(ConfigError::Cpus(bad.into())), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "1x", "-1", "0", "1.5s", "99999999999999999999h"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        // humantime's other units, and several at once.
        assert_eq!(duration(" 45s "), Ok(Duration::from_secs(45)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(
            duration("1x"),
            Err("\"1x\" is not a duration; write it like 30s, 5m, 1h or 500ms".into())
        );
        assert_eq!(
            duration("0s"),
            Err("\"0s\": the timeout must be more than 0".into())
        );
    }
}
