//! Guest RAM on the host's pool of 2 MiB huge pages, with pages set aside for the test: it
//! writes `/proc/sys/vm/nr_hugepages` (root only) and puts the old count back, and says it was
//! skipped where the kernel refuses or gives fewer pages. Its own test binary, with one test:
//! no other test in this process takes pages from the pool meanwhile.

use std::fs;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm::memory::huge_pages::{self, Pool};
use vmm::memory::{self, Backing};

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
/// Guest RAM the test maps: 32 pages.
const GUEST_MIB: u32 = 64;

/// The pool raised by some pages, back to its old size when dropped.
struct Raised {
    previous: String,
}

impl Raised {
    fn by(pages: u64) -> Result<Raised, String> {
        let previous = fs::read_to_string(NR_HUGEPAGES).map_err(|e| e.to_string())?;
        let before = Pool::read().map_err(|e| e.to_string())?;
        let raised = Raised {
            previous: previous.trim().to_string(),
        };
        let want = before.total + pages;
        fs::write(NR_HUGEPAGES, want.to_string()).map_err(|e| format!("{NR_HUGEPAGES}: {e}"))?;
        let now = Pool::read().map_err(|e| e.to_string())?;
        if now.available() < pages {
            return Err(format!("the kernel gave {} pages of {want}", now.total));
        }
        Ok(raised)
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Err(e) = fs::write(NR_HUGEPAGES, &self.previous) {
            eprintln!("putting {NR_HUGEPAGES} back to {}: {e}", self.previous);
        }
    }
}

/// The smaps entry of the mapping at `host`, from its header line to the next one.
fn smaps_of(host: u64) -> String {
    let smaps = fs::read_to_string(memory::SMAPS).unwrap();
    let start = smaps
        .find(&format!("\n{host:x}-"))
        .unwrap_or_else(|| panic!("no mapping at {host:x}"));
    let mut lines = smaps[start + 1..].lines();
    let header = lines.next().unwrap_or_default();
    let fields = lines.take_while(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.ends_with(':'))
    });
    std::iter::once(header)
        .chain(fields)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cold_boot_ram_takes_the_pool_when_it_has_room() {
    let needed = huge_pages::pages_for(u64::from(GUEST_MIB) << 20);
    let raised = match Raised::by(needed + 2) {
        Ok(raised) => raised,
        Err(why) => {
            eprintln!("skipped: no huge pages for the test: {why}");
            return;
        }
    };
    // The switch, for comparisons: transparent huge pages even with room in the pool.
    std::env::set_var(huge_pages::SWITCH_ENV, "off");
    let switched_off = memory::create(GUEST_MIB).map(|(_, backing)| backing);
    std::env::remove_var(huge_pages::SWITCH_ENV);
    assert_eq!(switched_off.unwrap(), Backing::Transparent);

    let before = Pool::read().unwrap().available();
    let (mem, backing) = memory::create(GUEST_MIB).unwrap();
    assert_eq!(backing, Backing::HugePages);
    // Reserved whole at mmap, before the guest touches anything.
    assert_eq!(Pool::read().unwrap().available(), before - needed);
    let region = mem.iter().next().unwrap();
    let host = region.get_host_address(MemoryRegionAddress(0)).unwrap() as u64;
    assert_eq!(host % huge_pages::PAGE_SIZE as u64, 0, "{host:#x}");
    let last = GuestAddress((u64::from(GUEST_MIB) << 20) - 8);
    mem.write_obj(0x2a_u64, last).unwrap();
    assert_eq!(mem.read_obj::<u64>(last).unwrap(), 0x2a);
    let entry = smaps_of(host);
    assert!(entry.contains("KernelPageSize:     2048 kB"), "{entry}");
    let flags = entry
        .lines()
        .find_map(|l| l.strip_prefix("VmFlags:"))
        .unwrap();
    assert!(flags.split_whitespace().any(|f| f == "dd"), "{flags}");
    assert!(flags.split_whitespace().any(|f| f == "ht"), "{flags}");

    // The rest of the pool is too short for a second guest of this size: it gets THP.
    let (_, second) = memory::create(GUEST_MIB).unwrap();
    assert_eq!(second, Backing::Transparent);
    // The guest's pages go back to the pool when this process ends: the count is put back
    // now, and they are freed then.
    drop(raised);
}
