//! The in-kernel GIC of an arm64 VM (KVM's vGIC): a GICv3 where the host has one, a GICv2
//! otherwise; created once every vCPU exists, its register frames where crate::memory puts
//! them, with room for the SPIs the devices use.
//!
//! For snapshots ([`GicState`]) it saves, through KVM's device attributes, what the guest set
//! and what is pending or active: the distributor's registers of the SPIs, each vCPU's
//! registers of its SGIs and PPIs (GICv3: its redistributor's; GICv2: the distributor's banked
//! ones) and its CPU interface (GICv3: the ICC system registers; GICv2: the GICC registers).
//! Read-only and identification registers are left out, and with no ITS there are no LPIs.

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, KVM_DEV_ARM_VGIC_CTRL_INIT,
    KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CPU_REGS, KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
    KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_DIST_REGS, KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
    KVM_DEV_ARM_VGIC_GRP_REDIST_REGS, KVM_VGIC_V2_ADDR_TYPE_CPU, KVM_VGIC_V2_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VmFd};
use serde::{Deserialize, Serialize};

use super::aarch64::sysreg;
use super::{ioctl, Error};
use crate::boot::fdt;
use crate::memory::{GIC_CPU_BASE, GIC_CPU_SIZE, GIC_DIST_BASE, GIC_DIST_SIZE, GIC_REDIST_SIZE};

/// Interrupts the GIC has: the 32 private ones (SGIs, PPIs) and 96 SPIs, far more than the
/// devices take (a multiple of 32, as KVM wants).
const NR_IRQS: u32 = 128;
/// SPIs the devices may use: 0 to this, exclusive.
pub const MAX_SPI: u32 = NR_IRQS - 32;

/// The vGIC; its device fd is held for as long as the VM.
pub struct Gic {
    fd: DeviceFd,
    /// Where its frames are, for the device tree.
    pub layout: fdt::Gic,
}

impl Gic {
    /// Creates the vGIC for `vcpus` vCPUs (all created already) and initializes it.
    pub fn create(vm: &VmFd, vcpus: u8) -> Result<Gic, Error> {
        let v3 = fdt::Gic::V3 {
            dist: (GIC_DIST_BASE, GIC_DIST_SIZE),
            redist: redistributors(vcpus),
        };
        let (fd, layout) = match create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3) {
            Ok(fd) => (fd, v3),
            Err(v3_error) => {
                tracing::debug!("no GICv3 ({v3_error}): a GICv2");
                let v2 = fdt::Gic::V2 {
                    dist: (GIC_DIST_BASE, GIC_DIST_SIZE),
                    cpu: (GIC_CPU_BASE, GIC_CPU_SIZE),
                };
                let fd = create_device(vm, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2)
                    .map_err(ioctl("create the in-kernel GIC (v3 or v2)"))?;
                (fd, v2)
            }
        };
        let frames = match layout {
            fdt::Gic::V3 { dist, redist } => [
                (KVM_VGIC_V3_ADDR_TYPE_DIST, dist.0),
                (KVM_VGIC_V3_ADDR_TYPE_REDIST, redist.0),
            ],
            fdt::Gic::V2 { dist, cpu } => [
                (KVM_VGIC_V2_ADDR_TYPE_DIST, dist.0),
                (KVM_VGIC_V2_ADDR_TYPE_CPU, cpu.0),
            ],
        };
        for (kind, addr) in frames {
            set_attr(&fd, KVM_DEV_ARM_VGIC_GRP_ADDR, u64::from(kind), &addr)
                .map_err(ioctl("place the GIC's registers"))?;
        }
        set_attr(&fd, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &NR_IRQS)
            .map_err(ioctl("set the GIC's number of interrupts"))?;
        let init = kvm_device_attr {
            group: KVM_DEV_ARM_VGIC_GRP_CTRL,
            attr: u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
            ..Default::default()
        };
        fd.set_device_attr(&init)
            .map_err(ioctl("initialize the GIC"))?;
        Ok(Gic { fd, layout })
    }
}

/// One register of a saved GIC: its attribute group and attribute (which name it to KVM), and
/// its value (32 bits wide but for the ICC system registers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GicReg {
    pub group: u32,
    pub attr: u64,
    pub value: u64,
}

/// A GIC as a snapshot holds it: which one, and its registers in the order a restore writes
/// them back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GicState {
    pub v3: bool,
    pub regs: Vec<GicReg>,
}

/// Distributor registers with a field per interrupt: offset, and bits per interrupt.
const PER_IRQ: [(u64, u64); 6] = [
    (0x080, 1), // IGROUPR
    (0x100, 1), // ISENABLER
    (0x200, 1), // ISPENDR
    (0x300, 1), // ISACTIVER
    (0x400, 8), // IPRIORITYR
    (0xc00, 2), // ICFGR
];
const GICD_CTLR: u64 = 0;
/// GICv3: each SPI's affinity, 64 bits.
const GICD_IROUTER: u64 = 0x6000;
/// GICv2: each SPI's target CPUs, 8 bits.
const GICD_ITARGETSR: u64 = 0x800;
/// GICv2: the pending SGIs, by source CPU (banked, 4 words).
const GICD_SPENDSGIR: u64 = 0xf20;
/// GICv3: a redistributor's control register, and its SGI frame (64 KiB on).
const GICR_CTLR: u64 = 0;
const GICR_SGI_BASE: u64 = 0x1_0000;
/// GICv2 CPU interface: CTLR, PMR, BPR, ABPR, APR0.
const GICC_REGS: [u64; 5] = [0x00, 0x04, 0x08, 0x1c, 0xd0];
/// GICv3 CPU interface (op0, op1, CRn, CRm, op2), in the order a restore sets them: SRE first
/// (the others need the system register interface), then the controls, then the priorities.
const ICC_SRE_EL1: (u64, u64, u64, u64, u64) = (3, 0, 12, 12, 5);
const ICC_CTLR_EL1: (u64, u64, u64, u64, u64) = (3, 0, 12, 12, 4);
const ICC_REGS: [(u64, u64, u64, u64, u64); 5] = [
    (3, 0, 12, 12, 6), // IGRPEN0
    (3, 0, 12, 12, 7), // IGRPEN1
    (3, 0, 4, 6, 0),   // PMR
    (3, 0, 12, 8, 3),  // BPR0
    (3, 0, 12, 12, 3), // BPR1
];

/// The words of a per-interrupt register (at `base`, `bits` per interrupt) that hold
/// interrupts `irqs`, as offsets.
fn words(base: u64, bits: u64, irqs: std::ops::Range<u64>) -> impl Iterator<Item = u64> {
    let per_word = (32 / bits) as usize;
    irqs.step_by(per_word).map(move |irq| base + irq * bits / 8)
}

/// KVM's name for a vCPU in a GICv3 attribute: its affinity, Aff3 to Aff0, in bits 63..32.
fn v3_vcpu(mpidr: u64) -> u64 {
    (((mpidr >> 32) & 0xff) << 24 | (mpidr & 0xff_ffff)) << 32
}

impl Gic {
    fn is_v3(&self) -> bool {
        matches!(self.layout, fdt::Gic::V3 { .. })
    }

    /// Reads the GIC of a paused VM whose vCPUs have `mpidrs`.
    pub fn save(&self, mpidrs: &[u64]) -> Result<GicState, Error> {
        let mut regs = Vec::new();
        let spis = 32..u64::from(NR_IRQS);
        let mut read = |group, attr| -> Result<u64, Error> {
            let value = get_attr(&self.fd, group, attr)?;
            regs.push(GicReg { group, attr, value });
            Ok(value)
        };
        // The distributor's own registers and those of the SPIs (cpu interface 0's view, on
        // a GICv2).
        let dist = KVM_DEV_ARM_VGIC_GRP_DIST_REGS;
        read(dist, GICD_CTLR)?;
        for (base, bits) in PER_IRQ {
            for offset in words(base, bits, spis.clone()) {
                read(dist, offset)?;
            }
        }
        if self.is_v3() {
            for irq in spis.clone() {
                read(dist, GICD_IROUTER + irq * 8)?;
                read(dist, GICD_IROUTER + irq * 8 + 4)?;
            }
            for &mpidr in mpidrs {
                let vcpu = v3_vcpu(mpidr);
                let redist = KVM_DEV_ARM_VGIC_GRP_REDIST_REGS;
                read(redist, vcpu | GICR_CTLR)?;
                for (base, bits) in PER_IRQ {
                    for offset in words(base, bits, 0..32) {
                        read(redist, vcpu | (GICR_SGI_BASE + offset))?;
                    }
                }
                let icc = KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS;
                read(icc, vcpu | sysreg(ICC_SRE_EL1))?;
                let ctlr = read(icc, vcpu | sysreg(ICC_CTLR_EL1))?;
                for reg in ICC_REGS {
                    read(icc, vcpu | sysreg(reg))?;
                }
                // Active priorities: as many registers as the priority bits (CTLR.PRIbits)
                // ask for, AP0R<n> then AP1R<n>.
                let aprs = match (ctlr >> 8) & 7 {
                    6 => 4,
                    5 => 2,
                    _ => 1,
                };
                for n in 0..aprs {
                    read(icc, vcpu | sysreg((3, 0, 12, 8, 4 + n)))?;
                }
                for n in 0..aprs {
                    read(icc, vcpu | sysreg((3, 0, 12, 9, n)))?;
                }
            }
        } else {
            for offset in words(GICD_ITARGETSR, 8, spis) {
                read(dist, offset)?;
            }
            for cpu in 0..mpidrs.len() as u64 {
                let vcpu = cpu << 32;
                // The banked words: SGIs and PPIs (their configuration: ICFGR1 only).
                for (base, bits) in PER_IRQ {
                    let first = if base == 0xc00 { 16 } else { 0 };
                    for offset in words(base, bits, first..32) {
                        read(dist, vcpu | offset)?;
                    }
                }
                for offset in words(GICD_SPENDSGIR, 8, 0..16) {
                    read(dist, vcpu | offset)?;
                }
                for offset in GICC_REGS {
                    read(KVM_DEV_ARM_VGIC_GRP_CPU_REGS, vcpu | offset)?;
                }
            }
        }
        Ok(GicState {
            v3: self.is_v3(),
            regs,
        })
    }

    /// Writes `state` back into this fresh GIC (created, initialized, its vCPUs' registers
    /// restored). Refuses a state of the other GIC version, and any attribute outside the
    /// register groups a save reads.
    pub fn restore(&self, state: &GicState) -> Result<(), Error> {
        if state.v3 != self.is_v3() {
            return Err(Error::GicVersion { saved_v3: state.v3 });
        }
        let allowed: &[u32] = if state.v3 {
            &[
                KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
                KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
                KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS,
            ]
        } else {
            &[
                KVM_DEV_ARM_VGIC_GRP_DIST_REGS,
                KVM_DEV_ARM_VGIC_GRP_CPU_REGS,
            ]
        };
        for reg in &state.regs {
            if !allowed.contains(&reg.group) {
                return Err(Error::GicGroup(reg.group));
            }
            let result = if reg.group == KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS {
                set_attr(&self.fd, reg.group, reg.attr, &reg.value)
            } else {
                let value = u32::try_from(reg.value).map_err(|_| Error::GicValue {
                    attr: reg.attr,
                    value: reg.value,
                })?;
                set_attr(&self.fd, reg.group, reg.attr, &value)
            };
            result.map_err(|source| Error::GicReg {
                group: reg.group,
                attr: reg.attr,
                source,
            })?;
        }
        Ok(())
    }
}

/// Reads attribute `attr` of `group`: 64 bits for the ICC system registers, 32 otherwise.
fn get_attr(fd: &DeviceFd, group: u32, attr: u64) -> Result<u64, Error> {
    let err = |source| Error::GicReg {
        group,
        attr,
        source,
    };
    let mut value = 0u64;
    let mut word = 0u32;
    let addr = if group == KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS {
        std::ptr::from_mut(&mut value) as u64
    } else {
        std::ptr::from_mut(&mut word) as u64
    };
    let mut request = kvm_device_attr {
        group,
        attr,
        addr,
        flags: 0,
    };
    // SAFETY: `addr` points at a live u64 for the 64-bit group, at a live u32 for the others:
    // what KVM writes for each.
    unsafe { fd.get_device_attr(&mut request) }.map_err(err)?;
    Ok(if group == KVM_DEV_ARM_VGIC_GRP_CPU_SYSREGS {
        value
    } else {
        u64::from(word)
    })
}

/// The GICv3 redistributor region for `vcpus` vCPUs: right below the distributor.
fn redistributors(vcpus: u8) -> (u64, u64) {
    let size = GIC_REDIST_SIZE * u64::from(vcpus);
    (GIC_DIST_BASE - size, size)
}

fn create_device(vm: &VmFd, kind: u32) -> Result<DeviceFd, kvm_ioctls::Error> {
    let mut device = kvm_create_device {
        type_: kind,
        fd: 0,
        flags: 0,
    };
    vm.create_device(&mut device)
}

/// Sets attribute `attr` of `group` to `value` (KVM reads it through the pointer).
fn set_attr<T>(fd: &DeviceFd, group: u32, attr: u64, value: &T) -> Result<(), kvm_ioctls::Error> {
    let attr = kvm_device_attr {
        group,
        attr,
        addr: std::ptr::from_ref(value) as u64,
        flags: 0,
    };
    fd.set_device_attr(&attr)
}
