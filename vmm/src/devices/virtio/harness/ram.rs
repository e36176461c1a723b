//! Guest RAM between inaccessible guard pages, and the check that a device wrote guest memory
//! only where the driver let it: the used rings and the device-writable buffers of its queues.

use std::ops::Range;
use std::ptr;
use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestRegionMmap, MmapRegion};

use crate::memory::{GuestMemory, SharedMemory};

/// Guest RAM: two regions with a hole between them, as around the MMIO gap.
pub const REGIONS: [(u64, usize); 2] = [(0, 0x8000), (0x9000, 0x1000)];
/// One past the last byte of guest RAM.
pub const RAM_END: u64 = 0xa000;
/// Bytes of guest RAM, all regions together (the length of a snapshot).
const RAM_BYTES: usize = REGIONS[0].1 + REGIONS[1].1;
const PAGE: usize = 4096;
const PROT_RW: i32 = libc::PROT_READ | libc::PROT_WRITE;
const FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// One host mapping holding every region, each with an inaccessible page before and after it.
struct Mapping {
    base: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: base and len are the mapping made in `GuardedRam::new`; nothing refers to it
        // any more (see `GuardedRam`'s drop).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

pub struct GuardedRam {
    mem: SharedMemory,
    mapping: Option<Mapping>,
}

impl GuardedRam {
    pub fn new() -> GuardedRam {
        let len = PAGE + REGIONS.iter().map(|(_, size)| size + PAGE).sum::<usize>();
        // SAFETY: a fresh anonymous mapping, placed by the kernel; no existing memory is involved.
        let base = unsafe { libc::mmap(ptr::null_mut(), len, libc::PROT_NONE, FLAGS, -1, 0) };
        assert_ne!(base, libc::MAP_FAILED, "mmap of guest RAM failed");
        let mapping = Mapping { base, len };
        let mut offset = PAGE;
        let mut regions = Vec::new();
        for (guest, size) in REGIONS {
            // SAFETY: offset + size stays inside the mapping (its length counts every region).
            let host = unsafe { base.cast::<u8>().add(offset) };
            // SAFETY: host..host + size lies inside our mapping; only its protection changes.
            let rc = unsafe { libc::mprotect(host.cast(), size, PROT_RW) };
            assert_eq!(rc, 0, "mprotect of guest RAM failed");
            // SAFETY: host..host + size is mapped read-write with FLAGS, and stays mapped for as
            // long as anything holds the guest memory (`GuardedRam`'s drop).
            let region = unsafe { MmapRegion::build_raw(host, size, PROT_RW, FLAGS) }
                .expect("guest RAM region");
            regions.push(GuestRegionMmap::new(region, GuestAddress(guest)).expect("region"));
            offset += size + PAGE;
        }
        let mem = GuestMemory::from_regions(regions).expect("guest RAM");
        GuardedRam {
            mem: Arc::new(mem),
            mapping: Some(mapping),
        }
    }

    pub fn memory(&self) -> &SharedMemory {
        &self.mem
    }

    /// Every byte of guest RAM, region after region.
    #[cfg(test)]
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.snapshot_into(&mut out);
        out
    }

    /// [`Self::snapshot`] into `out`, reusing its allocation.
    pub fn snapshot_into(&self, out: &mut Vec<u8>) {
        out.resize(RAM_BYTES, 0);
        let mut at = 0;
        for (guest, size) in REGIONS {
            self.mem
                .read_slice(&mut out[at..at + size], GuestAddress(guest))
                .expect("guest RAM is readable");
            at += size;
        }
    }

    /// Zeroes all of guest RAM, as a fresh mapping is.
    pub fn clear(&self) {
        static ZEROES: [u8; PAGE] = [0; PAGE];
        for (guest, size) in REGIONS {
            for off in (0..size).step_by(PAGE) {
                let len = PAGE.min(size - off);
                self.mem
                    .write_slice(&ZEROES[..len], GuestAddress(guest + off as u64))
                    .expect("guest RAM is writable");
            }
        }
    }
}

impl Drop for GuardedRam {
    fn drop(&mut self) {
        // Unmapped only when nothing else holds the guest memory; otherwise it is left mapped.
        if Arc::strong_count(&self.mem) > 1 {
            std::mem::forget(self.mapping.take());
        }
    }
}

/// The guest address of byte `i` of a snapshot.
fn guest_address(mut i: usize) -> u64 {
    for (guest, size) in REGIONS {
        if i < size {
            return guest + i as u64;
        }
        i -= size;
    }
    unreachable!("index beyond the snapshot")
}

/// `len` bytes of a snapshot at guest address `addr`, if they are all in one region.
fn at(snapshot: &[u8], addr: u64, len: usize) -> Option<&[u8]> {
    let mut base = 0;
    for (guest, size) in REGIONS {
        let off = addr.checked_sub(guest).filter(|off| *off < size as u64);
        if let Some(off) = off.map(|off| off as usize) {
            return snapshot
                .get(base + off..base + off + len)
                .filter(|_| off + len <= size);
        }
        base += size;
    }
    None
}

/// A descriptor as a snapshot holds it: (address, length, flags).
fn descriptor(snapshot: &[u8], addr: u64) -> Option<(u64, u64, u16)> {
    let d = at(snapshot, addr, 16)?;
    let word = |r: Range<usize>| d[r].iter().rev().fold(0u64, |v, b| v << 8 | u64::from(*b));
    Some((word(0..8), word(8..12), word(12..14) as u16))
}

fn span(start: u64, len: u64) -> Range<u64> {
    start..start.saturating_add(len)
}

/// What a device may write, and what the driver's queue structures are, in one snapshot.
#[derive(Default)]
struct Layout {
    writable: Vec<Range<u64>>,
    structures: Vec<Range<u64>>,
}

impl Layout {
    fn of(queues: &[Queue], snapshot: &[u8]) -> Layout {
        let mut l = Layout::default();
        for q in queues.iter().filter(|q| q.ready()) {
            let n = u64::from(q.size());
            // The used ring, `avail_event` included.
            l.writable.push(span(q.used_ring(), 6 + 8 * n));
            l.structures.push(span(q.desc_table(), 16 * n));
            l.structures.push(span(q.avail_ring(), 6 + 2 * n));
            for i in 0..n {
                if let Some(d) = descriptor(snapshot, q.desc_table() + 16 * i) {
                    l.add(d, snapshot);
                }
            }
        }
        l
    }

    fn add(&mut self, (addr, len, flags): (u64, u64, u16), snapshot: &[u8]) {
        if u32::from(flags) & VRING_DESC_F_INDIRECT == 0 {
            if u32::from(flags) & VRING_DESC_F_WRITE != 0 {
                self.writable.push(span(addr, len));
            }
            return;
        }
        // An indirect table (no nesting: the queue refuses tables inside tables).
        self.structures.push(span(addr, len));
        for j in 0..(len / 16).min(RAM_END / 16) {
            match descriptor(snapshot, addr.saturating_add(16 * j)) {
                Some((a, l, f)) if u32::from(f) & VRING_DESC_F_WRITE != 0 => {
                    self.writable.push(span(a, l))
                }
                _ => {}
            }
        }
    }
}

fn overlap(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Bytes compared at once by [`check_writes`] before it looks at single bytes.
const CHUNK: usize = 64;

/// What [`check_writes`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Writes {
    /// Every byte that changed lies where the device may write.
    Confined,
    /// Device-writable memory overlaps the driver's own queue structures, so what the device
    /// writes changes the descriptors as it reads them: nothing to check against.
    SelfModifying,
}

/// Checks that every byte that differs between `before` and `after` (snapshots around the
/// device's work on `queues`) lies in a used ring or in a device-writable buffer, as the
/// descriptors said before or after. `Err` names the first byte that does not.
pub fn check_writes(queues: &[Queue], before: &[u8], after: &[u8]) -> Result<Writes, String> {
    // Most work changes nothing or a few bytes: find the changed chunks with memcmp first,
    // rather than a compare per byte (which coverage instrumentation makes slow, and which
    // would fill libFuzzer's comparison tables with noise).
    assert_eq!(before.len(), after.len());
    let changed: Vec<usize> = (0..before.len())
        .step_by(CHUNK)
        .filter(|&i| {
            let end = (i + CHUNK).min(before.len());
            before[i..end] != after[i..end]
        })
        .collect();
    if changed.is_empty() {
        return Ok(Writes::Confined);
    }
    let (a, b) = (Layout::of(queues, before), Layout::of(queues, after));
    let writable: Vec<_> = a.writable.into_iter().chain(b.writable).collect();
    let structures: Vec<_> = a.structures.into_iter().chain(b.structures).collect();
    if writable
        .iter()
        .any(|w| structures.iter().any(|s| overlap(w, s)))
    {
        return Ok(Writes::SelfModifying);
    }
    for start in changed {
        let end = (start + CHUNK).min(before.len());
        for (i, (x, y)) in before[start..end]
            .iter()
            .zip(&after[start..end])
            .enumerate()
        {
            let addr = guest_address(start + i);
            if x != y && !writable.iter().any(|w| w.contains(&addr)) {
                return Err(format!(
                    "the device wrote guest address {addr:#x} ({x:#04x} -> {y:#04x}), in no used \
                     ring and no device-writable buffer"
                ));
            }
        }
    }
    Ok(Writes::Confined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryBackend;

    fn ready_queue(size: u16, desc: u32, avail: u32, used: u32) -> Queue {
        let mut q = Queue::new(size).unwrap();
        q.set_size(size);
        q.set_desc_table_address(Some(desc), Some(0));
        q.set_avail_ring_address(Some(avail), Some(0));
        q.set_used_ring_address(Some(used), Some(0));
        q.set_ready(true);
        q
    }

    #[test]
    fn guard_pages_and_the_hole() {
        let ram = GuardedRam::new();
        let mem = ram.memory();
        assert_eq!(mem.num_regions(), 2);
        assert!(
            mem.write_obj(1u8, GuestAddress(0x8000)).is_err(),
            "the hole"
        );
        assert!(
            mem.write_obj(1u32, GuestAddress(0x7ffe)).is_err(),
            "across the hole"
        );
        assert!(mem.write_obj(1u8, GuestAddress(RAM_END)).is_err());
        mem.write_obj(7u8, GuestAddress(0x9000)).unwrap();
        let snap = ram.snapshot();
        assert_eq!(snap.len(), 0x9000);
        assert_eq!((snap[0x8000], guest_address(0x8000)), (7, 0x9000));
    }

    #[test]
    fn writes_outside_writable_buffers_are_caught() {
        let ram = GuardedRam::new();
        let mem = ram.memory();
        let q = ready_queue(4, 0x0, 0x100, 0x200);
        // Descriptor 0: 16 device-writable bytes at 0x1000; descriptor 1 readable at 0x2000.
        mem.write_obj(0x1000u64, GuestAddress(0)).unwrap();
        mem.write_obj(16u32, GuestAddress(8)).unwrap();
        mem.write_obj(VRING_DESC_F_WRITE as u16, GuestAddress(12))
            .unwrap();
        mem.write_obj(0x2000u64, GuestAddress(16)).unwrap();
        mem.write_obj(16u32, GuestAddress(24)).unwrap();
        let before = ram.snapshot();
        mem.write_obj(0xffu8, GuestAddress(0x100f)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(0x204)).unwrap();
        let qs = [q];
        assert_eq!(
            check_writes(&qs, &before, &ram.snapshot()),
            Ok(Writes::Confined)
        );
        mem.write_obj(0xffu8, GuestAddress(0x2000)).unwrap();
        let err = check_writes(&qs, &before, &ram.snapshot()).unwrap_err();
        assert!(err.contains("0x2000"), "{err}");
        // A writable buffer over the descriptor table: nothing can be said.
        mem.write_obj(0x0u64, GuestAddress(0)).unwrap();
        assert_eq!(
            check_writes(&qs, &before, &ram.snapshot()),
            Ok(Writes::SelfModifying)
        );
    }
}
