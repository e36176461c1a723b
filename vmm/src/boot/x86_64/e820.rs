//! The guest's physical memory map, as both boot protocols report it (e820 in the zero page,
//! the PVH memmap table): RAM below the EBDA, the EBDA (MP table) reserved, the legacy hole,
//! high RAM below the MMIO gap, and RAM above 4 GiB.

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::{GuestMemory, EBDA_START, HIMEM_START, LOW_RAM_END};

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

impl E820Entry {
    const fn new(addr: u64, size: u64, kind: u32) -> Self {
        E820Entry { addr, size, kind }
    }
}

/// The map for RAM made of `ranges` (start, length), sorted; the first starts at 0.
pub fn memory_map(ranges: &[(u64, u64)]) -> Vec<E820Entry> {
    let mut map = Vec::with_capacity(ranges.len() + 2);
    for &(start, len) in ranges {
        let end = start + len;
        if start == 0 {
            map.push(E820Entry::new(0, EBDA_START.min(end), E820_RAM));
            if end > EBDA_START {
                map.push(E820Entry::new(
                    EBDA_START,
                    LOW_RAM_END - EBDA_START,
                    E820_RESERVED,
                ));
            }
            if end > HIMEM_START {
                map.push(E820Entry::new(HIMEM_START, end - HIMEM_START, E820_RAM));
            }
        } else {
            map.push(E820Entry::new(start, len, E820_RAM));
        }
    }
    map
}

/// The map of `mem`.
pub fn guest_memory_map(mem: &GuestMemory) -> Vec<E820Entry> {
    let ranges: Vec<(u64, u64)> = mem.iter().map(|r| (r.start_addr().0, r.len())).collect();
    memory_map(&ranges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ram_ranges, MMIO_GAP_END, MMIO_GAP_START};

    fn map_for(mib: u64) -> Vec<E820Entry> {
        let ranges: Vec<(u64, u64)> = ram_ranges(mib << 20)
            .into_iter()
            .map(|(a, l)| (a.0, l))
            .collect();
        memory_map(&ranges)
    }

    #[test]
    fn small_guest() {
        assert_eq!(
            map_for(128),
            vec![
                E820Entry::new(0, 0x9_fc00, E820_RAM),
                E820Entry::new(0x9_fc00, 0x400, E820_RESERVED),
                E820Entry::new(0x10_0000, (128 << 20) - 0x10_0000, E820_RAM),
            ]
        );
    }

    #[test]
    fn large_guest_has_ram_above_4g() {
        let map = map_for(6 << 10);
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[2],
            E820Entry::new(0x10_0000, MMIO_GAP_START - 0x10_0000, E820_RAM)
        );
        assert_eq!(
            map[3],
            E820Entry::new(MMIO_GAP_END, (6 << 30) - MMIO_GAP_START, E820_RAM)
        );
    }

    #[test]
    fn entries_are_sorted_and_disjoint() {
        for mib in [32, 512, 3072, 3073, 8192] {
            let map = map_for(mib);
            for w in map.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{mib} MiB: {w:x?}");
            }
            let ram: u64 = map
                .iter()
                .filter(|e| e.kind == E820_RAM)
                .map(|e| e.size)
                .sum();
            // All RAM but the EBDA and the legacy hole is reported.
            assert_eq!(ram, (mib << 20) - (HIMEM_START - EBDA_START));
        }
    }
}
