//! The boot GDT and the segment registers loaded from it: what the guest's first instruction
//! sees, before it installs its own descriptor tables.

use kvm_bindings::kvm_segment;

/// A segment descriptor from its access/flags word (`flags`: bits 0-7 access byte, bits 12-15
/// G, D/B, L, AVL), base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    (((base as u64) & 0xff00_0000) << (56 - 24))
        | (((flags as u64) & 0x0000_f0ff) << 40)
        | (((limit as u64) & 0x000f_0000) << (48 - 16))
        | (((base as u64) & 0x00ff_ffff) << 16)
        | ((limit as u64) & 0x0000_ffff)
}

/// Selector indexes into both tables.
pub const CODE_INDEX: u8 = 1;
pub const DATA_INDEX: u8 = 2;
pub const TSS_INDEX: u8 = 3;

/// PVH entry: 32-bit flat code and data, and a 32-bit busy TSS of limit 0x67 (the PVH spec's
/// required state).
pub const PVH_GDT: [u64; 4] = [
    0,
    gdt_entry(0xc09b, 0, 0xffff_ffff), // code: present, exec/read, 32-bit, 4 KiB granularity
    gdt_entry(0xc093, 0, 0xffff_ffff), // data: present, read/write, 32-bit, 4 KiB granularity
    gdt_entry(0x008b, 0, 0x67),        // TSS: present, 32-bit busy TSS
];

/// 64-bit entry: long-mode code, flat data, TSS.
pub const LONG_MODE_GDT: [u64; 4] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // code: present, exec/read, long mode (L=1)
    gdt_entry(0xc093, 0, 0xfffff), // data: present, read/write, 4 KiB granularity
    gdt_entry(0x808b, 0, 0xfffff), // TSS: present, busy
];

/// The segment register that loading selector `index * 8` from a table holding `entry` gives.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 48) & 0xf) << 16) | (entry & 0xffff);
    let limit = if g == 1 {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 32) & 0xff00_0000) | ((entry >> 16) & 0x00ff_ffff),
        limit: limit as u32,
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvh_segments_are_flat_32_bit() {
        let cs = segment_from_gdt(PVH_GDT[1], CODE_INDEX);
        assert_eq!((cs.base, cs.limit, cs.selector), (0, 0xffff_ffff, 8));
        assert_eq!(
            (cs.type_, cs.present, cs.s, cs.db, cs.l, cs.g, cs.dpl),
            (0xb, 1, 1, 1, 0, 1, 0)
        );
        let ds = segment_from_gdt(PVH_GDT[2], DATA_INDEX);
        assert_eq!(
            (ds.base, ds.limit, ds.selector, ds.type_, ds.db),
            (0, 0xffff_ffff, 16, 3, 1)
        );
        let tr = segment_from_gdt(PVH_GDT[3], TSS_INDEX);
        assert_eq!(
            (tr.base, tr.limit, tr.type_, tr.s, tr.present, tr.g),
            (0, 0x67, 0xb, 0, 1, 0)
        );
    }

    #[test]
    fn long_mode_code_segment() {
        let cs = segment_from_gdt(LONG_MODE_GDT[1], CODE_INDEX);
        assert_eq!((cs.l, cs.db, cs.present, cs.type_), (1, 0, 1, 0xb));
        assert_eq!(cs.unusable, 0);
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn entry_encoding_round_trips_base() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let s = segment_from_gdt(e, 2);
        assert_eq!((s.base, s.limit, s.g), (0x1234_5678, 0xabcde, 0));
    }
}
