//! Guest physical memory on arm64: devices in the first 2 GiB, RAM from 2 GiB up, as on
//! Firecracker's arm64 machine. The device tree (crate::boot::fdt) tells the guest all of it:
//!
//! ```text
//! 0x3fff_0000 - 0x2_0000 × vCPUs  GICv3 redistributors (GICv2: CPU interface at 0x3ffe_0000)
//! 0x3fff_0000  GIC distributor (64 KiB)
//! 0x4000_0000  16550 UART (the console)
//! 0x4000_1000  PL031 RTC
//! 0x4000_2000  virtio-mmio devices, 4 KiB each
//! 0x8000_0000  RAM: the kernel at its start, the device tree in its last 2 MiB
//! ```

use vm_memory::GuestAddress;

/// Where RAM starts.
pub const DRAM_START: u64 = 0x8000_0000;
/// Most RAM a guest gets: up to the 40-bit guest physical address space every arm64 KVM host
/// offers.
pub const DRAM_MAX: u64 = (1 << 40) - DRAM_START;

/// The GIC distributor's register frame.
pub const GIC_DIST_BASE: u64 = 0x3fff_0000;
pub const GIC_DIST_SIZE: u64 = 0x1_0000;
/// One vCPU's GICv3 redistributor (its RD and SGI frames); the vCPUs' redistributors lie right
/// below the distributor.
pub const GIC_REDIST_SIZE: u64 = 0x2_0000;
/// GICv2 CPU interface.
pub const GIC_CPU_BASE: u64 = 0x3ffe_0000;
pub const GIC_CPU_SIZE: u64 = 0x2000;

/// The console UART's registers (a 16550, byte-wide registers).
pub const SERIAL_MMIO_BASE: u64 = 0x4000_0000;
pub const SERIAL_MMIO_SIZE: u64 = 0x1000;
/// The PL031 RTC's registers.
pub const RTC_MMIO_BASE: u64 = 0x4000_1000;
pub const RTC_MMIO_SIZE: u64 = 0x1000;
/// First virtio-mmio device; each device takes one `VIRTIO_MMIO_SIZE` window after it.
pub const VIRTIO_MMIO_BASE: u64 = 0x4000_2000;

/// Room the device tree takes at the end of RAM (the boot protocol's limit for it).
pub const FDT_MAX_SIZE: u64 = 2 << 20;

/// The RAM of a guest with `size` bytes: one range from [`DRAM_START`].
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, u64)> {
    vec![(GuestAddress(DRAM_START), size.min(DRAM_MAX))]
}
