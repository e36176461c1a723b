//! The boot vCPU's architectural state for each boot protocol, and the per-vCPU state every
//! vCPU starts with (MSRs, FPU, LAPIC local interrupt pins). Pure functions over the KVM
//! structures, so they are testable without KVM.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs};

use crate::boot::gdt::{segment_from_gdt, CODE_INDEX, DATA_INDEX, TSS_INDEX};
use crate::boot::BootEntry;
use crate::memory::{BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// EFLAGS with only the always-one bit: interrupts off.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// General-purpose registers at the kernel entry.
pub fn boot_regs(boot: &BootEntry) -> kvm_regs {
    match *boot {
        BootEntry::Pvh { entry, start_info } => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: entry,
            rbx: start_info,
            ..Default::default()
        },
        BootEntry::Linux64 {
            entry, zero_page, ..
        } => kvm_regs {
            rflags: RFLAGS_RESERVED,
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: zero_page,
            ..Default::default()
        },
    }
}

/// Special registers at the kernel entry, starting from the vCPU's reset state `base` (which
/// keeps fields such as the APIC base).
pub fn boot_sregs(boot: &BootEntry, base: &kvm_sregs) -> kvm_sregs {
    let gdt = boot.gdt();
    let code = segment_from_gdt(gdt[CODE_INDEX as usize], CODE_INDEX);
    let data = segment_from_gdt(gdt[DATA_INDEX as usize], DATA_INDEX);
    let tss = segment_from_gdt(gdt[TSS_INDEX as usize], TSS_INDEX);

    let mut s = *base;
    s.gdt.base = BOOT_GDT_START;
    s.gdt.limit = (std::mem::size_of_val(gdt) - 1) as u16;
    s.idt.base = BOOT_IDT_START;
    s.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = tss;
    match *boot {
        // PVH: protected mode, paging off, CR4 clear (the spec's entry state).
        BootEntry::Pvh { .. } => {
            s.cr0 = X86_CR0_PE | X86_CR0_ET;
            s.cr3 = 0;
            s.cr4 = 0;
            s.efer = 0;
        }
        BootEntry::Linux64 { page_table, .. } => {
            s.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
            s.cr3 = page_table;
            s.cr4 = X86_CR4_PAE;
            s.efer = EFER_LME | EFER_LMA;
        }
    }
    s
}

/// x87 and SSE control words as after FNINIT / reset.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

pub const MSR_IA32_TSC: u32 = 0x10;
pub const MSR_IA32_SYSENTER_CS: u32 = 0x174;
pub const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
pub const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
pub const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
pub const MSR_STAR: u32 = 0xc000_0081;
pub const MSR_LSTAR: u32 = 0xc000_0082;
pub const MSR_CSTAR: u32 = 0xc000_0083;
pub const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
pub const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_MEM_TYPE_WB: u64 = 6;

/// The MSRs every vCPU starts with (the set Firecracker programs): syscall and sysenter
/// targets cleared, TSC at 0 on every vCPU (KVM then keeps them in sync), fast strings on,
/// and write-back as the default memory type, so the guest does not run uncached.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_MEM_TYPE_WB),
    ]
    .into_iter()
    .map(|(index, data)| kvm_msr_entry {
        index,
        data,
        ..Default::default()
    })
    .collect()
}

pub const MSR_K7_HWCR: u32 = 0xc001_0015;
const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;

/// AMD's hardware configuration MSR as firmware leaves it: the TSC counts at P0 frequency.
pub fn amd_hwcr() -> kvm_msr_entry {
    kvm_msr_entry {
        index: MSR_K7_HWCR,
        data: HWCR_TSC_FREQ_SEL,
        ..Default::default()
    }
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let b = &lapic.regs[offset..offset + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (dst, src) in lapic.regs[offset..offset + 4]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *dst = src as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// LINT0 delivers the PIC's interrupts (ExtINT), LINT1 NMIs: the wiring the MP table
/// declares, as a BIOS would program it.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let lvt0 = lapic_reg(lapic, APIC_LVT0);
    set_lapic_reg(lapic, APIC_LVT0, with_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(lapic, APIC_LVT1);
    set_lapic_reg(lapic, APIC_LVT1, with_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{PML4_START, PVH_INFO_START, ZERO_PAGE_START};

    const PVH: BootEntry = BootEntry::Pvh {
        entry: 0x100_0000,
        start_info: PVH_INFO_START,
    };
    const LONG: BootEntry = BootEntry::Linux64 {
        entry: 0x100_0200,
        zero_page: ZERO_PAGE_START,
        page_table: PML4_START,
    };

    fn reset_sregs() -> kvm_sregs {
        let mut s = kvm_sregs {
            cr0: 0x6000_0010,
            apic_base: 0xfee0_0900,
            ..Default::default()
        };
        s.interrupt_bitmap[0] = 0;
        s
    }

    #[test]
    fn pvh_entry_state_matches_the_spec() {
        let r = boot_regs(&PVH);
        assert_eq!((r.rip, r.rbx, r.rflags), (0x100_0000, PVH_INFO_START, 2));
        let s = boot_sregs(&PVH, &reset_sregs());
        assert_eq!(
            s.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE,
            "protected mode, no paging"
        );
        assert_eq!(s.cr0 & 0x6000_0000, 0, "caches on");
        assert_eq!((s.cr4, s.efer), (0, 0));
        for seg in [s.cs, s.ds, s.es, s.ss] {
            assert_eq!(
                (seg.base, seg.limit, seg.db, seg.l, seg.present),
                (0, 0xffff_ffff, 1, 0, 1)
            );
        }
        assert_eq!(s.cs.type_ & 0x8, 0x8, "CS executable");
        assert_eq!(s.ds.type_ & 0xa, 0x2, "DS writable data");
        assert_eq!((s.tr.base, s.tr.limit, s.tr.type_), (0, 0x67, 0xb));
        assert_eq!(s.apic_base, 0xfee0_0900, "reset state kept");
        assert_eq!((s.gdt.base, s.gdt.limit), (BOOT_GDT_START, 31));
    }

    #[test]
    fn long_mode_entry_state() {
        let r = boot_regs(&LONG);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x100_0200, ZERO_PAGE_START, BOOT_STACK_POINTER, 2)
        );
        let s = boot_sregs(&LONG, &reset_sregs());
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_eq!(
            (s.cr3, s.cr4, s.efer),
            (PML4_START, X86_CR4_PAE, EFER_LME | EFER_LMA)
        );
        assert_eq!((s.cs.l, s.cs.db), (1, 0));
    }

    #[test]
    fn lint_pins() {
        let mut lapic = kvm_lapic_state::default();
        set_lapic_reg(&mut lapic, APIC_LVT0, 0x0001_0000); // masked, fixed
        set_lint(&mut lapic);
        assert_eq!(lapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(lapic_reg(&lapic, APIC_LVT1), 0x400);
    }

    #[test]
    fn msr_list() {
        let msrs = boot_msrs();
        let get = |i| msrs.iter().find(|m| m.index == i).unwrap().data;
        assert_eq!(get(MSR_MTRR_DEF_TYPE), 0x806);
        assert_eq!(get(MSR_IA32_MISC_ENABLE), 1);
        assert_eq!(get(MSR_IA32_TSC), 0);
        assert_eq!(msrs.len(), 11);
    }
}
