//! Guest physical memory: its layout on each architecture (`x86_64`, `aarch64`: where RAM
//! lives, and where the boot structures and devices go), and mapping it in the VMM process.

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub mod huge_pages;
#[cfg(target_arch = "x86_64")]
mod x86_64;

#[cfg(target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Guest memory as the VMM uses it: shared by vCPU set-up and device threads.
pub type GuestMemory = GuestMemoryMmap<()>;
/// Guest memory shared between threads.
pub type SharedMemory = Arc<GuestMemory>;

pub(crate) const MIB: u64 = 1 << 20;

/// Size of one virtio-mmio window (the register block is 0x100 + config space).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Largest command line, NUL included: Linux's `COMMAND_LINE_SIZE` on x86-64 and arm64.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// Smallest guest we build: room for the boot structures and a kernel loaded at 16 MiB.
pub const MIN_MEMORY_MIB: u32 = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("guest memory of {mib} MiB is too small: at least {min} MiB is needed")]
    TooSmall { mib: u32, min: u32 },
    #[error("cannot map {mib} MiB of guest memory")]
    Map {
        mib: u32,
        #[source]
        source: std::io::Error,
    },
}

/// What backs a VM's guest RAM in the VMM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Backing {
    /// 2 MiB pages of the host's hugetlb pool, all reserved when mapped ([`huge_pages`]).
    HugePages,
    /// Anonymous memory advised for transparent huge pages: 2 MiB pages where the kernel
    /// finds them, 4 KiB pages otherwise.
    Transparent,
    /// A snapshot file, mapped private (copy-on-write).
    Snapshot,
}

impl std::fmt::Display for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backing::HugePages => "2 MiB huge pages",
            Backing::Transparent => "transparent huge pages",
            Backing::Snapshot => "the snapshot file, copy-on-write",
        })
    }
}

/// Maps anonymous guest memory of `mib` MiB with the layout of [`ram_ranges`], for a cold boot:
/// on 2 MiB huge pages when the host's pool has room for all of it (see [`huge_pages`]), on
/// transparent huge pages otherwise.
pub fn create(mib: u32) -> Result<(GuestMemory, Backing), Error> {
    let needed = huge_pages::pages_for(u64::from(mib) * MIB);
    create_on(
        mib,
        huge_pages::choose(huge_pages::enabled(), huge_pages::Pool::read(), needed),
    )
}

/// [`create`], on huge pages if `huge` is `Ok` and the pool then reserves them all.
fn create_on(mib: u32, huge: Result<(), String>) -> Result<(GuestMemory, Backing), Error> {
    let why_not = match huge {
        Ok(()) => match build(mib, Source::HugePages) {
            Ok(mem) => return Ok((mem, Backing::HugePages)),
            Err(Error::Map { source, .. }) => format!("reserving them: {source}"),
            Err(e) => return Err(e),
        },
        Err(why) => why,
    };
    tracing::debug!("guest RAM not on 2 MiB huge pages: {why_not}");
    Ok((build(mib, Source::Anonymous)?, Backing::Transparent))
}

/// Maps guest memory of `mib` MiB from a snapshot: the regions of [`ram_ranges`] one after the
/// other in `file` from `offset`, private and copy-on-write. Nothing is read now: the guest's
/// first touch of a page reads it (through the host's page cache, which VMs restored from one
/// file share), and its first write copies it; a hole reads as zeros.
pub fn from_snapshot(mib: u32, file: &std::fs::File, offset: u64) -> Result<GuestMemory, Error> {
    build(mib, Source::File(file, offset))
}

/// Where guest RAM comes from.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Anonymous, THP-advised.
    Anonymous,
    /// Anonymous, on the hugetlb pool.
    HugePages,
    /// A file, from an offset.
    File(&'a std::fs::File, u64),
}

fn build(mib: u32, source: Source) -> Result<GuestMemory, Error> {
    if mib < MIN_MEMORY_MIB {
        return Err(Error::TooSmall {
            mib,
            min: MIN_MEMORY_MIB,
        });
    }
    let ranges: Vec<(GuestAddress, usize)> = ram_ranges(u64::from(mib) * MIB)
        .into_iter()
        .map(|(start, len)| (start, len as usize))
        .collect();
    let map_err = |source| Error::Map { mib, source };
    let mut hosts = Vec::with_capacity(ranges.len());
    let mut region_source = source;
    for &(_, len) in &ranges {
        match map_region(len, region_source) {
            Ok(host) => hosts.push(host),
            Err(e) => {
                for (&host, &(_, len)) in hosts.iter().zip(&ranges) {
                    unmap_region(host, len, source);
                }
                return Err(map_err(e));
            }
        }
        if let Source::File(file, offset) = region_source {
            region_source = Source::File(file, offset + len as u64);
        }
    }
    let regions = ranges
        .iter()
        .zip(hosts)
        .map(|(&(start, len), host)| {
            // SAFETY: `host` is the start of a fresh private mapping of `len` bytes that
            // nothing else refers to; it stays mapped for the life of the process (see
            // `map_region`), so for as long as any region built on it.
            let region = unsafe { MmapRegion::build_raw(host, len, RAM_PROT, RAM_FLAGS) }
                .map_err(|e| map_err(std::io::Error::other(e)))?;
            GuestRegionMmap::new(region, start).ok_or_else(|| {
                map_err(std::io::Error::other(format!(
                    "region at {:#x} overflows",
                    start.0
                )))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    GuestMemoryMmap::from_regions(regions).map_err(|e| map_err(std::io::Error::other(e)))
}

/// Alignment of guest RAM in the VMM's address space: the size of a transparent huge page.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;
/// The host's page size, which `mmap` works in.
const PAGE_SIZE: usize = 4 << 10;
const RAM_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
const RAM_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// Maps one region of `len` bytes from `source`, 2 MiB-aligned, left out of core dumps.
///
/// Guest memory is left out of core dumps (`MADV_DONTDUMP`): whatever the guest holds (its
/// secrets, a tenant's data) must not land on the host's disk should the VMM crash.
///
/// The mapping is never unmapped once the VM is built: vm-memory leaves alone a region it did
/// not map itself, and a VMM process runs one VM, whose memory goes when the process does.
fn map_region(len: usize, source: Source) -> std::io::Result<*mut u8> {
    let host = match source {
        Source::HugePages => huge_pages::map(len)?,
        Source::Anonymous => map_aligned(len, None)?,
        Source::File(file, offset) => map_aligned(len, Some((file, offset)))?,
    };
    // SAFETY: the range is the mapping just made.
    if unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTDUMP) } < 0 {
        let e = std::io::Error::last_os_error();
        unmap_region(host, len, source);
        return Err(std::io::Error::new(
            e.kind(),
            format!("leaving guest memory out of core dumps (MADV_DONTDUMP): {e}"),
        ));
    }
    Ok(host)
}

/// Undoes [`map_region`] of `len` bytes from `source` at `host`, when building fails.
fn unmap_region(host: *mut u8, len: usize, source: Source) {
    let len = match source {
        Source::HugePages => huge_pages::mapped_len(len),
        Source::Anonymous | Source::File(..) => len,
    };
    // SAFETY: `host` is a mapping of `len` bytes that `map_region` made and no region refers
    // to yet.
    unsafe { libc::munmap(host.cast(), len) };
}

/// Maps `len` bytes of anonymous memory at a 2 MiB-aligned address, as transparent huge pages
/// where the host allows them; or, given `file` and an offset, those bytes of the file there,
/// private (copy-on-write) over the same aligned range.
///
/// KVM maps guest memory with 2 MiB pages only where a host huge page backs a guest-physical
/// 2 MiB frame, which needs host and guest addresses aligned alike (QEMU aligns its RAM the
/// same way). A plain `mmap` is only page-aligned, so every 4 KiB page the guest touches first
/// costs its own nested-paging fault: under nested virtualization, where each such exit is
/// expensive, that made filling the page cache (reading Node from the root image) about a
/// quarter slower than under QEMU.
fn map_aligned(len: usize, file: Option<(&std::fs::File, u64)>) -> std::io::Result<*mut u8> {
    let reserve = len
        .checked_add(HUGE_PAGE_SIZE)
        .ok_or_else(|| std::io::Error::other(format!("{len} bytes of RAM overflow")))?;
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; nothing is replaced.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), reserve, RAM_PROT, RAM_FLAGS, -1, 0) };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let start = addr as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE_SIZE);
    let head = aligned - start;
    let tail = HUGE_PAGE_SIZE - head;
    // SAFETY: both ranges lie inside the mapping just made, outside [aligned, aligned + len).
    unsafe {
        if head > 0 {
            libc::munmap(addr, head);
        }
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Advice only: where THP is off or "never", this fails and the pages stay small.
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    if let Some((file, offset)) = file {
        use std::os::fd::AsRawFd;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| std::io::Error::other(format!("file offset {offset:#x} overflows")))?;
        // SAFETY: replaces (MAP_FIXED) exactly the range reserved above, which nothing else
        // refers to yet, with a private mapping of the file.
        let mapped = unsafe {
            libc::mmap(
                aligned as *mut libc::c_void,
                len,
                RAM_PROT,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                file.as_raw_fd(),
                offset,
            )
        };
        if mapped == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        anonymous_over_holes(file, offset, aligned, len)?;
    }
    Ok(aligned as *mut u8)
}

/// The smallest hole of a snapshot that [`anonymous_over_holes`] maps anonymous: a huge page,
/// the least that transparent huge pages can back.
const MIN_ANONYMOUS_HOLE: libc::off_t = HUGE_PAGE_SIZE as libc::off_t;

/// Maps anonymous memory over the parts of the file mapping at `aligned` (`len` bytes of
/// `file` from `offset`) that are holes in the file: the guest's never-written RAM, which a
/// snapshot leaves out. Through the file, a page of a hole that the guest touches first is read
/// into the file's page cache as zeros and then copied, if written: on tmpfs (a cache there,
/// the KVM box's) those page-cache pages can never be reclaimed and are charged to the VMM's
/// cgroup, so a guest that fills its RAM would cost it twice and the jail's memory limit would
/// kill its VMM. Anonymous, a hole's pages are zero pages until written, once.
///
/// Only holes of [`MIN_ANONYMOUS_HOLE`] or more: in a template, nearly all of the holes'
/// bytes are in a few large ones (measured: 387 MiB in 3 holes, 7.5 MiB in 319 smaller ones),
/// and each mapping of its own cost the restore two more system calls and the VMM a mapping
/// (one that every page fault's lookup and every read of its memory map walks past). A small
/// hole's touched pages cost the page cache at most the small holes' size, shared by every VM
/// restored from the file.
fn anonymous_over_holes(
    file: &std::fs::File,
    offset: libc::off_t,
    aligned: usize,
    len: usize,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let end = offset + len as libc::off_t;
    let page = PAGE_SIZE as libc::off_t;
    // SAFETY: lseek has no memory arguments; the position is put back below.
    let kept = unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) };
    let mut at = offset;
    let result = loop {
        if at >= end {
            break Ok(());
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, at, libc::SEEK_HOLE) };
        if hole < 0 || hole >= end {
            // No hole left in the range (or the file system cannot say: then none is assumed).
            break Ok(());
        }
        // SAFETY: as above.
        let data = unsafe { libc::lseek(fd, hole, libc::SEEK_DATA) };
        // ENXIO: no data past the hole.
        let hole_end = if data < 0 { end } else { data.min(end) };
        let (start, stop) = ((hole + page - 1) / page * page, hole_end / page * page);
        if stop - start >= MIN_ANONYMOUS_HOLE {
            let at_host = aligned + (start - offset) as usize;
            let size = (stop - start) as usize;
            // SAFETY: replaces (MAP_FIXED) a page-aligned part of the file mapping made above,
            // which nothing else refers to yet, with private anonymous memory.
            let mapped = unsafe {
                libc::mmap(
                    at_host as *mut libc::c_void,
                    size,
                    RAM_PROT,
                    RAM_FLAGS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if mapped == libc::MAP_FAILED {
                break Err(std::io::Error::last_os_error());
            }
            // SAFETY: advice on the mapping just made. Only advice: see map_aligned.
            unsafe { libc::madvise(mapped, size, libc::MADV_HUGEPAGE) };
        }
        at = hole_end;
    };
    if kept >= 0 {
        // SAFETY: as above.
        unsafe { libc::lseek(fd, kept, libc::SEEK_SET) };
    }
    result
}

/// Where [`vmm_overhead_kib`] reads the mappings of this process.
pub const SMAPS: &str = "/proc/self/smaps";

/// [`SMAPS`], opened by [`keep_smaps_open`].
static KEPT_SMAPS: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();

/// Opens [`SMAPS`] for [`open_smaps`] to use later: before a jail hides `/proc`.
pub fn keep_smaps_open() -> std::io::Result<()> {
    let _ = KEPT_SMAPS.set(std::fs::File::open(SMAPS)?);
    Ok(())
}

/// [`SMAPS`], to read from its start: the one [`keep_smaps_open`] kept, or opened now.
pub fn open_smaps() -> Option<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    match KEPT_SMAPS.get() {
        Some(kept) => {
            let mut smaps = kept.try_clone().ok()?;
            smaps.seek(SeekFrom::Start(0)).ok()?;
            Some(smaps)
        }
        None => std::fs::File::open(SMAPS).ok(),
    }
}

/// What this process holds in RAM besides the guest's own memory: the VMM's overhead, in
/// KiB, from [`SMAPS`] (the resident size of every mapping outside guest RAM's ranges: a
/// restored VM's RAM is many mappings, the snapshot file's around its data and anonymous memory
/// over its holes). `smaps` may have been opened long before (its text is made as it is read),
/// so that a thread whose seccomp filter allows no `open` can read it: only read(2) is used.
pub fn vmm_overhead_kib(mem: &GuestMemory, mut smaps: impl std::io::Read) -> Option<u64> {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let guest: Vec<std::ops::Range<u64>> = mem
        .iter()
        .filter_map(|r| {
            let start = r.get_host_address(vm_memory::MemoryRegionAddress(0)).ok()? as u64;
            Some(start..start + r.len())
        })
        .collect();
    let mut text = Vec::new();
    let mut chunk = vec![0; 64 << 10];
    loop {
        match smaps.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(overhead_from_smaps(&String::from_utf8_lossy(&text), &guest))
}

/// The `Rss` of every mapping of `smaps` that starts outside `guest` (host address ranges).
fn overhead_from_smaps(smaps: &str, guest: &[std::ops::Range<u64>]) -> u64 {
    let mut total = 0;
    let mut in_guest = false;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Rss:") {
            let kib: u64 = kib
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(0);
            if !in_guest {
                total += kib;
            }
        } else if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, _)) = range.split_once('-') {
                if let Ok(start) = u64::from_str_radix(start, 16) {
                    in_guest = guest.iter().any(|r| r.contains(&start));
                }
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

    #[test]
    fn overhead_leaves_out_guest_ram() {
        let smaps = "7f00-7f10 rw-p 00000000 00:00 0\nSize: 64 kB\nRss: 40 kB\n\
                     7e00-7e80 rw-p 00000000 00:00 0\nRss: 500 kB\nLocked: 0 kB\n\
                     5500-5510 r-xp 00000000 08:01 12 /usr/bin/nodeos-vm\nRss: 12 kB\n";
        // Guest RAM in two regions (below and above a gap), as x86-64's larger guests have.
        assert_eq!(
            overhead_from_smaps(smaps, &[0x7e00..0x7e80, 0x9000..0x9800]),
            52
        );
        assert_eq!(overhead_from_smaps(smaps, &[]), 552);
    }

    /// A restored VM's RAM is several mappings (the snapshot's data, anonymous holes): all of
    /// them are guest RAM, none the VMM's overhead.
    #[test]
    fn overhead_leaves_out_every_mapping_of_guest_ram() {
        let smaps = "7e00-7e40 rw-p 00000000 00:05 7 /templates/a.snap\nRss: 300 kB\n\
                     7e40-7e60 rw-p 00000000 00:00 0\nRss: 100 kB\n\
                     7e60-7e80 rw-p 00060000 00:05 7 /templates/a.snap\nRss: 100 kB\n\
                     7e80-7e90 rw-p 00000000 00:00 0\nRss: 64 kB\n";
        let ram = 0x7e00..0x7e80;
        assert_eq!(overhead_from_smaps(smaps, std::slice::from_ref(&ram)), 64);
    }

    #[test]
    fn overhead_of_this_process_is_measured() {
        let (mem, _) = create(MIN_MEMORY_MIB).unwrap();
        let kib = vmm_overhead_kib(&mem, std::fs::File::open(SMAPS).unwrap()).unwrap();
        assert!(kib > 0, "{kib}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(512 * MIB), vec![(GuestAddress(0), 512 * MIB)]);
        assert_eq!(
            ram_ranges(MMIO_GAP_START),
            vec![(GuestAddress(0), MMIO_GAP_START)]
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn large_guest_continues_above_4g() {
        assert_eq!(
            ram_ranges(4096 * MIB),
            vec![
                (GuestAddress(0), MMIO_GAP_START),
                (GuestAddress(MMIO_GAP_END), 4096 * MIB - MMIO_GAP_START)
            ]
        );
    }

    /// A snapshot's holes (RAM the guest never wrote) are mapped as anonymous memory, its data
    /// and its small holes from the file; all read as the file says, and the file's position is
    /// kept.
    #[test]
    fn a_snapshots_holes_are_anonymous_memory() {
        use std::io::{Seek, SeekFrom, Write};
        use vm_memory::{Bytes, GuestAddress, MemoryRegionAddress};
        let offset = 8 * 4096;
        let mut file = tempfile::tempfile().unwrap();
        file.set_len(offset + 128 * MIB).unwrap();
        // A 4 KiB hole between the first two pages of data, a large one after them.
        let data_at = [0, 8192, 64 * MIB];
        for (i, at) in data_at.iter().enumerate() {
            file.seek(SeekFrom::Start(offset + at)).unwrap();
            file.write_all(&[b'A' + i as u8; 4096]).unwrap();
        }
        file.seek(SeekFrom::Start(5)).unwrap();
        let mem = from_snapshot(128, &file, offset).unwrap();
        assert_eq!(file.stream_position().unwrap(), 5);
        let byte = |at: u64| mem.read_obj::<u8>(GuestAddress(at)).unwrap();
        assert_eq!((byte(0), byte(4095), byte(8192)), (b'A', b'A', b'B'));
        assert_eq!(byte(64 * MIB), b'C');
        assert_eq!((byte(4096), byte(100 * MIB)), (0, 0));
        // In this process's map: the RAM's range is the file's around its data, anonymous
        // (inode 0) elsewhere, where the file system tells holes apart (tmpfs and ext4 do).
        let region = mem.iter().next().unwrap();
        let host = region.get_host_address(MemoryRegionAddress(0)).unwrap() as usize;
        let (start, end) = (host, host + 128 * MIB as usize);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let inodes: Vec<(usize, &str)> = maps
            .lines()
            .filter_map(|l| {
                let mut fields = l.split_whitespace();
                let (from, _) = fields.next()?.split_once('-')?;
                let from = usize::from_str_radix(from, 16).ok()?;
                let inode = fields.nth(3)?;
                (start..end).contains(&from).then_some((from, inode))
            })
            .collect();
        assert!(inodes.iter().any(|(_, inode)| *inode == "0"), "{inodes:?}");
        assert!(inodes.iter().any(|(_, inode)| *inode != "0"), "{inodes:?}");
        // The data's pages and the small hole's are the file's; the large hole's anonymous.
        let inode_at = |at: usize| inodes.iter().rev().find(|(from, _)| *from <= at).unwrap().1;
        assert_ne!(inode_at(start), "0", "{inodes:?}");
        assert_ne!(inode_at(start + 4096), "0", "{inodes:?}");
        assert_eq!(inode_at(start + 32 * MIB as usize), "0", "{inodes:?}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn create_maps_regions() {
        let (mem, _) = create(64).unwrap();
        assert_eq!(mem.num_regions(), 1);
        assert_eq!(mem.iter().next().unwrap().len(), 64 * MIB);
        assert!(matches!(create(4), Err(Error::TooSmall { .. })));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn ram_is_huge_page_aligned_in_the_vmm() {
        use vm_memory::{Bytes, MemoryRegionAddress};
        // Over 3 GiB: two regions, each aligned (nothing is touched, so nothing is allocated).
        let (mem, _) = create(4096).unwrap();
        assert_eq!(mem.num_regions(), 2);
        for r in mem.iter() {
            let host = r.get_host_address(MemoryRegionAddress(0)).unwrap() as usize;
            assert_eq!(host % HUGE_PAGE_SIZE, 0, "{host:#x}");
        }
        let last = GuestAddress(MMIO_GAP_END + (4096 - 3072) * MIB - 8);
        assert_eq!(mem.read_obj::<u64>(last).unwrap(), 0);
        mem.write_obj(0x1234u64, last).unwrap();
        assert_eq!(mem.read_obj::<u64>(last).unwrap(), 0x1234);
    }

    /// Finding: guest memory could end up in a core dump of the VMM.
    #[test]
    fn guest_ram_is_left_out_of_core_dumps() {
        use vm_memory::MemoryRegionAddress;
        let (mem, _) = create(64).unwrap();
        let host = mem
            .iter()
            .next()
            .unwrap()
            .get_host_address(MemoryRegionAddress(0))
            .unwrap() as u64;
        let smaps = std::fs::read_to_string(SMAPS).unwrap();
        let flags = smaps
            .split_inclusive('\n')
            .skip_while(|l| !l.starts_with(&format!("{host:x}-")))
            .find_map(|l| l.strip_prefix("VmFlags:"))
            .unwrap_or_else(|| panic!("guest RAM at {host:x} in {SMAPS}"));
        assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    }

    #[test]
    fn a_pool_without_room_leaves_ram_on_transparent_huge_pages() {
        use vm_memory::Bytes;
        let (mem, backing) = create_on(64, Err("no pool".into())).unwrap();
        assert_eq!(backing, Backing::Transparent);
        mem.write_obj(7u64, GuestAddress(63 * MIB)).unwrap();
        assert_eq!(mem.read_obj::<u64>(GuestAddress(63 * MIB)).unwrap(), 7);
    }

    /// A hugetlb mapping whose pages the pool cannot give must fail at `mmap`, not with a
    /// SIGBUS when the guest first touches a page: asked for more pages than the pool has
    /// available, the mapping is refused and RAM falls back to transparent huge pages.
    #[test]
    fn a_short_pool_fails_at_mmap_and_falls_back() {
        use vm_memory::Bytes;
        let available = huge_pages::Pool::read().map_or(0, |p| p.available());
        let mib = u32::try_from((available + 1) * 2)
            .unwrap()
            .max(MIN_MEMORY_MIB);
        let (mem, backing) = create_on(mib, Ok(())).unwrap();
        assert_eq!(backing, Backing::Transparent, "{available} pages available");
        let last = GuestAddress(u64::from(mib) * MIB - 8);
        mem.write_obj(1u64, last).unwrap();
        assert_eq!(mem.read_obj::<u64>(last).unwrap(), 1);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn boot_structures_do_not_overlap() {
        // Each structure's [start, end) range; they must be disjoint and below the EBDA.
        let mut areas = [
            (BOOT_GDT_START, BOOT_GDT_START + 4 * 8),
            (BOOT_IDT_START, BOOT_IDT_START + 8),
            (PVH_INFO_START, PVH_INFO_START + 0x1000),
            (ZERO_PAGE_START, ZERO_PAGE_START + 0x1000),
            (BOOT_STACK_POINTER - 0x800, BOOT_STACK_POINTER + 0x10),
            (PML4_START, PML4_START + 0x1000),
            (PDPTE_START, PDPTE_START + 0x1000),
            (PDE_START, PDE_START + 0x1000),
            (CMDLINE_START, CMDLINE_START + CMDLINE_MAX_SIZE as u64),
        ];
        areas.sort();
        for pair in areas.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{:x?} overlaps {:x?}",
                pair[0],
                pair[1]
            );
        }
        assert!(areas.last().unwrap().1 <= EBDA_START);
        const {
            assert!(KVM_IDENTITY_MAP_ADDRESS + 0x1000 <= KVM_TSS_ADDRESS);
            assert!(
                KVM_TSS_ADDRESS >= MMIO_GAP_START && KVM_TSS_ADDRESS + 3 * 0x1000 <= MMIO_GAP_END
            );
            assert!(IOAPIC_ADDRESS as u64 > VIRTIO_MMIO_BASE + 64 * VIRTIO_MMIO_SIZE);
        }
    }
}
