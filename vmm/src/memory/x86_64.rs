//! Guest physical memory on x86-64: where RAM lives, and where the boot structures and devices
//! go.
//!
//! The layout is the one Firecracker and QEMU's microvm use, so a kernel that boots on those
//! boots here unchanged:
//!
//! ```text
//! 0x0000_0000  real-mode IVT/BDA (RAM, untouched)
//! 0x0000_0500  boot GDT, then IDT                       (64-bit and PVH entry)
//! 0x0000_6000  PVH hvm_start_info                       (PVH entry)
//! 0x0000_7000  PVH memory map / Linux zero page         (PVH / 64-bit entry)
//! 0x0000_8ff0  boot stack top                           (64-bit entry)
//! 0x0000_9000  PML4, PDPTE, PDE (identity map of 1 GiB) (64-bit entry)
//! 0x0002_0000  kernel command line (2 KiB)
//! 0x0009_fc00  MP table (EBDA), reserved in the e820 map
//! 0x0010_0000  high memory: the kernel and everything it allocates
//! 0xc000_0000  32-bit MMIO gap: virtio-mmio at 0xd000_0000, IOAPIC, LAPIC, KVM's TSS
//! 0x1_0000_0000  the rest of RAM, when the guest has more than 3 GiB
//! ```

use vm_memory::GuestAddress;

/// Start of the 32-bit MMIO gap; RAM below it is "low memory".
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap, where the rest of RAM continues.
pub const MMIO_GAP_END: u64 = 1 << 32;

/// First virtio-mmio device; each device takes one `VIRTIO_MMIO_SIZE` window after it.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;

/// KVM's three-page TSS region (needed by Intel VMX), in the MMIO gap below the BIOS area.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// KVM's identity-map page (Intel real mode without unrestricted guest), just below the TSS.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;

/// Default physical address of the I/O APIC.
pub const IOAPIC_ADDRESS: u32 = 0xfec0_0000;
/// Default physical address of the local APICs.
pub const LAPIC_ADDRESS: u32 = 0xfee0_0000;

/// Boot GDT (four 8-byte entries).
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (one null entry: the guest installs its own before enabling interrupts).
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH memory map (array of `hvm_memmap_table_entry`).
pub const PVH_MEMMAP_START: u64 = 0x7000;
/// Linux boot protocol zero page (`boot_params`), used by the 64-bit entry.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Identity-map page tables for the 64-bit entry.
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x2_0000;
/// Start of the Extended BIOS Data Area, where the MP table goes; RAM below 640 KiB ends here.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of conventional memory (640 KiB); 0xa0000..1 MiB is the legacy VGA/BIOS hole.
pub const LOW_RAM_END: u64 = 0xa_0000;
/// Where high memory starts: kernels load at or above it.
pub const HIMEM_START: u64 = 0x10_0000;

/// The RAM ranges of a guest with `size` bytes: one below the MMIO gap, and one above 4 GiB
/// for whatever does not fit below.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ]
    }
}
