//! Routes guest port and MMIO accesses to the device whose range holds the address.

use std::sync::{Arc, Mutex};

use crate::vm::VmExit;

/// A device on a bus. `offset` is relative to the start of the device's range.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write; `Some` when it ends the VM (exit port, reset request).
    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmExit>;
}

#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps another device or is empty")]
pub struct OverlapError {
    pub base: u64,
    pub len: u64,
}

struct Entry {
    base: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// One address space (port I/O or MMIO) of non-overlapping device ranges.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>, // sorted by base
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), OverlapError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(OverlapError { base, len })?;
        if self
            .entries
            .iter()
            .any(|e| base < e.base + e.len && e.base < end)
        {
            return Err(OverlapError { base, len });
        }
        let at = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(at, Entry { base, len, device });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let at = self
            .entries
            .partition_point(|e| e.base <= addr)
            .checked_sub(1)?;
        let e = &self.entries[at];
        let offset = addr - e.base;
        // The whole access must fall inside the range.
        (offset.checked_add(size as u64)? <= e.len).then_some((e, offset))
    }

    /// A read; an address no device claims reads as zeros.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr, data.len()) {
            Some((e, offset)) => super::lock(&e.device).read(offset, data),
            None => {
                tracing::trace!(
                    addr = format_args!("{addr:#x}"),
                    len = data.len(),
                    "unclaimed read"
                );
                data.fill(0);
            }
        }
    }

    /// A write; one no device claims is dropped.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<VmExit> {
        match self.find(addr, data.len()) {
            Some((e, offset)) => super::lock(&e.device).write(offset, data),
            None => {
                tracing::trace!(addr = format_args!("{addr:#x}"), ?data, "unclaimed write");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmExit> {
            self.writes.push((offset, data.to_vec()));
            (data == [0xff]).then_some(VmExit::Reset)
        }
    }

    #[test]
    fn routes_by_range() {
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = Bus::new();
        bus.insert(0x3f8, 8, a.clone()).unwrap();
        bus.insert(0x60, 5, b.clone()).unwrap();

        let mut d = [0u8; 1];
        bus.read(0x3fa, &mut d);
        assert_eq!(d, [3]);
        bus.read(0x64, &mut d);
        assert_eq!(d, [5]);
        bus.read(0x400, &mut d);
        assert_eq!(d, [0], "unclaimed");
        let mut wide = [9u8; 2];
        bus.read(0x3ff, &mut wide);
        assert_eq!(
            wide,
            [0, 0],
            "an access that runs past the range is unclaimed"
        );

        assert_eq!(bus.write(0x3f9, &[7]), None);
        assert_eq!(bus.write(0x64, &[0xff]), Some(VmExit::Reset));
        assert_eq!(bus.write(0x10, &[1]), None);
        assert_eq!(a.lock().unwrap().writes, vec![(1, vec![7])]);
        assert_eq!(b.lock().unwrap().writes, vec![(4, vec![0xff])]);
    }

    #[test]
    fn rejects_overlaps() {
        let d = || Arc::new(Mutex::new(Recorder::default())) as Arc<Mutex<dyn BusDevice>>;
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x1000, d()).unwrap();
        assert!(bus.insert(0x1fff, 1, d()).is_err());
        assert!(bus.insert(0x0800, 0x801, d()).is_err());
        assert!(bus.insert(0x0, 0, d()).is_err());
        assert!(bus.insert(u64::MAX, 2, d()).is_err());
        bus.insert(0x2000, 0x1000, d()).unwrap();
        bus.insert(0x0, 0x1000, d()).unwrap();
    }
}
