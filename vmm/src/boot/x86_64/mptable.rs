//! The Intel MultiProcessor Specification (1.4) table: how a kernel without ACPI finds the
//! other CPUs, the I/O APIC and the interrupt wiring. It sits in the EBDA, where Linux's
//! `smp_scan_config` looks for the `_MP_` floating pointer.

use vm_memory::{Bytes, GuestAddress};

use crate::memory::{GuestMemory, EBDA_START, IOAPIC_ADDRESS, LAPIC_ADDRESS};

const MPF_SIGNATURE: &[u8; 4] = b"_MP_";
const MPC_SIGNATURE: &[u8; 4] = b"PCMP";
const MPC_OEM: &[u8; 8] = b"NODEOS  ";
const MPC_PRODUCT_ID: &[u8; 12] = b"NODEOS-VM   ";
const MP_SPEC_REVISION: u8 = 4;

const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;

const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;
/// Polarity and trigger "conform to the bus" (ISA: edge, active high).
const MP_IRQFLAG_DEFAULT: u16 = 0;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_FPU: u32 = 1 << 0;
const CPU_FEATURE_APIC: u32 = 1 << 9;
const MPC_APIC_USABLE: u8 = 1;

/// KVM's in-kernel I/O APIC has 24 pins; each is routed from the same-numbered GSI.
pub const IOAPIC_PINS: u8 = 24;

const MPF_SIZE: usize = 16;
const MPC_HEADER_SIZE: usize = 44;
const MPC_CPU_SIZE: usize = 20;
const MPC_ENTRY_SIZE: usize = 8;

/// Most vCPUs the table can describe: APIC IDs 0..n-1 and the I/O APIC's ID n must fit in
/// 8 bits below the broadcast ID 0xff.
pub const MAX_CPUS: u8 = 254;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} vCPUs: the MP table describes 1 to {MAX_CPUS}")]
    CpuCount(u8),
    #[error("cannot write the MP table at {addr:#x}")]
    Write {
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

/// The floating pointer and the configuration table for `cpus` CPUs, placed at `base`.
pub fn build(base: u64, cpus: u8) -> Result<Vec<u8>, Error> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(Error::CpuCount(cpus));
    }
    let ioapic_id = cpus;
    let table_addr = base + MPF_SIZE as u64;

    // Configuration table entries.
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.extend_from_slice(&[
            MP_PROCESSOR,
            id,
            APIC_VERSION,
            CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 },
        ]);
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[MP_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, IOAPIC_VERSION, MPC_APIC_USABLE]);
    entries.extend_from_slice(&IOAPIC_ADDRESS.to_le_bytes());
    count += 1;
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[MP_INTSRC, MP_INT]);
        entries.extend_from_slice(&MP_IRQFLAG_DEFAULT.to_le_bytes());
        entries.extend_from_slice(&[0, irq, ioapic_id, irq]);
        count += 1;
    }
    // LINT0 of every LAPIC takes ExtINT (the PIC), LINT1 takes NMI.
    for (kind, dest, lint) in [(MP_EXTINT, 0, 0), (MP_NMI, 0xff, 1)] {
        entries.extend_from_slice(&[MP_LINTSRC, kind]);
        entries.extend_from_slice(&MP_IRQFLAG_DEFAULT.to_le_bytes());
        entries.extend_from_slice(&[0, 0, dest, lint]);
        count += 1;
    }

    debug_assert_eq!(
        entries.len(),
        usize::from(cpus) * MPC_CPU_SIZE
            + (usize::from(count) - usize::from(cpus)) * MPC_ENTRY_SIZE
    );
    let table_len = MPC_HEADER_SIZE + entries.len();
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(MPC_SIGNATURE);
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.push(MP_SPEC_REVISION);
    table.push(0); // checksum, below
    table.extend_from_slice(MPC_OEM);
    table.extend_from_slice(MPC_PRODUCT_ID);
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDRESS.to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(MPF_SIZE + table.len());
    out.extend_from_slice(MPF_SIGNATURE);
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(MP_SPEC_REVISION);
    out.push(0); // checksum, below
    out.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `cpus` CPUs at the start of the EBDA.
pub fn write(mem: &GuestMemory, cpus: u8) -> Result<(), Error> {
    let bytes = build(EBDA_START, cpus)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|source| Error::Write {
            addr: EBDA_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes([b[off], b[off + 1]])
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn checksums_are_zero() {
        for cpus in [1, 2, 8, MAX_CPUS] {
            let bytes = build(EBDA_START, cpus).unwrap();
            assert_eq!(sum(&bytes[..MPF_SIZE]), 0, "floating pointer, {cpus} CPUs");
            assert_eq!(
                sum(&bytes[MPF_SIZE..]),
                0,
                "configuration table, {cpus} CPUs"
            );
        }
    }

    #[test]
    fn floating_pointer_points_at_table() {
        let bytes = build(EBDA_START, 2).unwrap();
        assert_eq!(&bytes[..4], b"_MP_");
        assert_eq!(u32_at(&bytes, 4) as u64, EBDA_START + 16);
        assert_eq!((bytes[8], bytes[9]), (1, 4));
        assert_eq!(&bytes[16..20], b"PCMP");
        assert_eq!(u16_at(&bytes, 16 + 4) as usize, bytes.len() - 16);
    }

    #[test]
    fn table_contents() {
        let cpus = 3;
        let bytes = build(EBDA_START, cpus).unwrap();
        let t = &bytes[MPF_SIZE..];
        let count = u16_at(t, 34);
        assert_eq!(count as usize, 3 + 1 + 1 + 24 + 2);
        assert_eq!(u32_at(t, 36), LAPIC_ADDRESS);

        let mut off = MPC_HEADER_SIZE;
        for id in 0..cpus {
            assert_eq!(t[off], MP_PROCESSOR);
            assert_eq!(t[off + 1], id, "APIC ID");
            let flags = t[off + 3];
            assert_eq!(flags & CPU_ENABLED, CPU_ENABLED);
            assert_eq!(flags & CPU_BOOTPROCESSOR != 0, id == 0);
            off += MPC_CPU_SIZE;
        }
        assert_eq!(&t[off..off + 8], b"\x01\x00ISA   ");
        off += MPC_ENTRY_SIZE;
        assert_eq!(
            &t[off..off + 4],
            &[MP_IOAPIC, cpus, IOAPIC_VERSION, MPC_APIC_USABLE]
        );
        assert_eq!(u32_at(t, off + 4), IOAPIC_ADDRESS);
        off += MPC_ENTRY_SIZE;
        for irq in 0..IOAPIC_PINS {
            assert_eq!(
                &t[off..off + 8],
                &[MP_INTSRC, MP_INT, 0, 0, 0, irq, cpus, irq]
            );
            off += MPC_ENTRY_SIZE;
        }
        assert_eq!(&t[off..off + 8], &[MP_LINTSRC, MP_EXTINT, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &t[off + 8..off + 16],
            &[MP_LINTSRC, MP_NMI, 0, 0, 0, 0, 0xff, 1]
        );
        assert_eq!(off + 16, t.len());
    }

    #[test]
    fn cpu_count_is_checked() {
        assert!(matches!(build(EBDA_START, 0), Err(Error::CpuCount(0))));
        assert!(matches!(build(EBDA_START, 255), Err(Error::CpuCount(255))));
    }
}
