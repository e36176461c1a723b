//! Identity-mapped page tables for the 64-bit boot protocol: the first 1 GiB with 2 MiB pages,
//! which covers the kernel, the zero page and the command line.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::{GuestMemory, PDE_START, PDPTE_START, PML4_START};

const PRESENT_WRITABLE: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Writes PML4 -> PDPTE -> PDE (512 x 2 MiB) and returns the CR3 value.
pub fn write(mem: &GuestMemory) -> Result<u64, vm_memory::GuestMemoryError> {
    mem.write_obj(PDPTE_START | PRESENT_WRITABLE, GuestAddress(PML4_START))?;
    mem.write_obj(PDE_START | PRESENT_WRITABLE, GuestAddress(PDPTE_START))?;
    let mut pde = [0u8; 512 * 8];
    for (i, entry) in pde.chunks_exact_mut(8).enumerate() {
        let value = ((i as u64) << 21) | PAGE_SIZE_2M | PRESENT_WRITABLE;
        entry.copy_from_slice(&value.to_le_bytes());
    }
    mem.write_slice(&pde, GuestAddress(PDE_START))?;
    Ok(PML4_START)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_first_gigabyte() {
        let mem = crate::memory::create(32).unwrap().0;
        assert_eq!(write(&mem).unwrap(), PML4_START);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PML4_START)).unwrap(),
            0xa003
        );
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PDPTE_START)).unwrap(),
            0xb003
        );
        assert_eq!(mem.read_obj::<u64>(GuestAddress(PDE_START)).unwrap(), 0x83);
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(PDE_START + 511 * 8))
                .unwrap(),
            (511 << 21) | 0x83
        );
    }
}
