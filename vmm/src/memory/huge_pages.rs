//! Guest RAM on explicit 2 MiB huge pages, from the host's hugetlb pool.
//!
//! Transparent huge pages are best effort: the kernel hands out 2 MiB pages only where it finds
//! them free (fragmentation, `defrag` settings), and falls back to 4 KiB pages, each its own
//! nested-paging fault. A page of the hugetlb pool is 2 MiB from the guest's first touch, so
//! KVM maps each guest 2 MiB frame with one nested page-table entry. The pool is the host
//! administrator's (`/proc/sys/vm/nr_hugepages`, or `hugepages=N` on the kernel command line):
//! a cold-booted VM takes pages from it only when enough are free for the whole of its RAM, and
//! uses transparent huge pages otherwise.
//!
//! The mapping is anonymous (`MAP_HUGETLB | MAP_HUGE_2MB`) rather than a `memfd_create` file:
//! nothing else needs a descriptor for guest RAM (a snapshot is written from the mapping), the
//! seccomp filters already allow `mmap`, and the kernel aligns the mapping to 2 MiB itself.
//! It is made without `MAP_NORESERVE`, so the kernel reserves every page of it at `mmap`: a pool
//! that is short fails the `mmap` (ENOMEM, and the VM falls back to transparent huge pages)
//! instead of a page fault in the running guest, which would kill the VMM with SIGBUS.

use std::io;
use std::path::Path;

/// The host's pool of 2 MiB pages.
pub const POOL_DIR: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";
/// The size of one page of the pool.
pub const PAGE_SIZE: usize = 2 << 20;
/// Set to `off` (or `0`) in the environment of the VMM (that of `nodeos-vm`, which its VMM
/// process inherits), guest RAM stays on transparent huge pages even where the pool has room:
/// to compare the two.
pub const SWITCH_ENV: &str = "NODEOS_VM_HUGE_PAGES";

/// What the pool holds, as its sysfs files say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// `nr_hugepages`: the pages set aside.
    pub total: u64,
    /// `free_hugepages`: the pages no process has touched yet, reserved ones included.
    pub free: u64,
    /// `resv_hugepages`: free pages that mappings have reserved but not touched yet.
    pub reserved: u64,
}

impl Pool {
    /// The host's pool, from [`POOL_DIR`]. Fails where the kernel has no hugetlb support, and
    /// in the jail, which has no `/sys` (the VMM then tries the mapping: see [`choose`]).
    pub fn read() -> io::Result<Pool> {
        Pool::read_from(Path::new(POOL_DIR))
    }

    /// The pool whose sysfs files are in `dir`.
    pub fn read_from(dir: &Path) -> io::Result<Pool> {
        let count = |name: &str| -> io::Result<u64> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            text.trim().parse().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {:?} is not a count: {e}", path.display(), text.trim()),
                )
            })
        };
        Ok(Pool {
            total: count("nr_hugepages")?,
            free: count("free_hugepages")?,
            reserved: count("resv_hugepages")?,
        })
    }

    /// The pages a new mapping can still reserve.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }

    /// How many guests of `mib` MiB of RAM the available pages hold.
    pub fn guests_of(&self, mib: u32) -> u64 {
        self.available() / pages_for(u64::from(mib) << 20).max(1)
    }
}

/// The pages of the pool that `len` bytes of RAM take.
pub fn pages_for(len: u64) -> u64 {
    len.div_ceil(PAGE_SIZE as u64)
}

/// Whether [`SWITCH_ENV`] leaves huge pages on.
pub fn enabled() -> bool {
    !matches!(std::env::var(SWITCH_ENV).as_deref(), Ok("off") | Ok("0"))
}

/// Whether to try mapping `needed` pages of the pool: `Err` says why not. An unreadable pool
/// (the jailed VMM has no `/sys`) is tried: the reservation at `mmap` is the real check.
pub fn choose(enabled: bool, pool: io::Result<Pool>, needed: u64) -> Result<(), String> {
    if !enabled {
        return Err(format!("turned off by {SWITCH_ENV}"));
    }
    match pool {
        Ok(pool) if pool.available() < needed => Err(format!(
            "{} of the host's 2 MiB huge pages are available, {needed} needed",
            pool.available()
        )),
        _ => Ok(()),
    }
}

/// Maps `len` bytes (rounded up to [`PAGE_SIZE`]) of private anonymous memory on pages of the
/// pool, all of them reserved now: ENOMEM when the pool has too few.
pub(super) fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks; nothing is replaced.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mapped_len(len),
            super::RAM_PROT,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr.cast())
}

/// The length [`map`] maps for `len` bytes.
pub(super) fn mapped_len(len: usize) -> usize {
    len.next_multiple_of(PAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_pool(total: &str, free: &str, reserved: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, value) in [
            ("nr_hugepages", total),
            ("free_hugepages", free),
            ("resv_hugepages", reserved),
        ] {
            std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        dir
    }

    #[test]
    fn reserved_pages_are_not_available() {
        let dir = fake_pool("600", "520", "100");
        let pool = Pool::read_from(dir.path()).unwrap();
        assert_eq!(
            pool,
            Pool {
                total: 600,
                free: 520,
                reserved: 100
            }
        );
        assert_eq!(pool.available(), 420);
        assert_eq!(pool.guests_of(512), 1);
        assert_eq!(pool.guests_of(128), 6);
    }

    #[test]
    fn the_pool_is_used_only_when_it_holds_all_of_ram() {
        let pool = |free: u64, reserved: u64| {
            Ok(Pool {
                total: free,
                free,
                reserved,
            })
        };
        let needed = pages_for(512 << 20);
        assert_eq!(needed, 256);
        assert_eq!(choose(true, pool(256, 0), needed), Ok(()));
        assert_eq!(choose(true, pool(1000, 0), needed), Ok(()));
        let short = choose(true, pool(256, 1), needed).unwrap_err();
        assert!(short.contains("255") && short.contains("256"), "{short}");
        assert!(choose(true, pool(0, 0), needed).is_err());
        // Reservations beyond the free count (never seen, but not an underflow either).
        assert!(choose(true, pool(10, 20), 1).is_err());
        assert!(choose(false, pool(1000, 0), needed)
            .unwrap_err()
            .contains(SWITCH_ENV));
        // No /sys in the jail: the mapping itself decides.
        let unreadable = Err(io::Error::from(io::ErrorKind::NotFound));
        assert_eq!(choose(true, unreadable, needed), Ok(()));
    }

    #[test]
    fn a_broken_pool_reading_names_its_file() {
        let dir = fake_pool("8", "many", "0");
        let e = Pool::read_from(dir.path()).unwrap_err().to_string();
        assert!(e.contains("free_hugepages") && e.contains("many"), "{e}");
        let e = Pool::read_from(Path::new("/nonexistent")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/nr_hugepages"), "{e}");
    }

    #[test]
    fn odd_sizes_round_up_to_whole_pages() {
        assert_eq!(pages_for(33 << 20), 17);
        assert_eq!(mapped_len(33 << 20), 34 << 20);
        assert_eq!(mapped_len(PAGE_SIZE), PAGE_SIZE);
    }
}
