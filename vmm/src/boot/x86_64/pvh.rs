//! The PVH boot protocol (Xen's "HVM direct boot" ABI, which Linux implements for any
//! hypervisor): `hvm_start_info` and its memory map. The vCPU starts in 32-bit protected mode
//! at the kernel's `XEN_ELFNOTE_PHYS32_ENTRY` with EBX pointing at the start info.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use vm_memory::GuestAddress;

use super::e820::E820Entry;
use crate::memory::{GuestMemory, CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_START};

/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// Version 1 has the memory map fields.
pub const START_INFO_VERSION: u32 = 1;

/// The start info and memory map for `map`.
pub fn start_info(map: &[E820Entry]) -> (hvm_start_info, Vec<hvm_memmap_table_entry>) {
    let memmap: Vec<hvm_memmap_table_entry> = map
        .iter()
        .map(|e| hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        })
        .collect();
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: START_INFO_VERSION,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    (info, memmap)
}

/// Writes the start info and memory map; returns the start info's address (the entry EBX).
pub fn write(
    mem: &GuestMemory,
    map: &[E820Entry],
) -> Result<GuestAddress, linux_loader::configurator::Error> {
    let (info, memmap) = start_info(map);
    let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_START));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP_START));
    PvhBootConfigurator::write_bootparams(&params, mem)?;
    Ok(GuestAddress(PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::e820::guest_memory_map;
    use vm_memory::Bytes;

    #[test]
    fn start_info_in_guest_memory() {
        let mem = crate::memory::create(64).unwrap().0;
        let map = guest_memory_map(&mem);
        assert_eq!(write(&mem, &map).unwrap(), GuestAddress(PVH_INFO_START));

        let info: hvm_start_info = mem.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC_VALUE);
        assert_eq!(info.version, 1);
        assert_eq!(info.nr_modules, 0);
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        assert_eq!(info.memmap_paddr, PVH_MEMMAP_START);
        assert_eq!(info.memmap_entries as usize, map.len());
        assert_eq!(info.rsdp_paddr, 0, "no ACPI");

        for (i, e) in map.iter().enumerate() {
            let at = GuestAddress(PVH_MEMMAP_START + 24 * i as u64);
            let m: hvm_memmap_table_entry = mem.read_obj(at).unwrap();
            assert_eq!(
                (m.addr, m.size, m.type_, m.reserved),
                (e.addr, e.size, e.kind, 0)
            );
        }
        // The last entry is the high RAM, up to the end of memory.
        let last = map.last().unwrap();
        assert_eq!(last.addr + last.size, 64 << 20);
    }

    #[test]
    fn layout_sizes() {
        // The structures as the kernel reads them (xen/include/public/arch-x86/hvm/start_info.h).
        assert_eq!(std::mem::size_of::<hvm_start_info>(), 56);
        assert_eq!(std::mem::size_of::<hvm_memmap_table_entry>(), 24);
    }
}
