//! The in-kernel GIC of an arm64 VM (KVM's vGIC): a GICv3 where the host has one, a GICv2
//! otherwise; created once every vCPU exists, its register frames where crate::memory puts
//! them, with room for the SPIs the devices use.

use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V2,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, KVM_DEV_ARM_VGIC_CTRL_INIT,
    KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_NR_IRQS,
    KVM_VGIC_V2_ADDR_TYPE_CPU, KVM_VGIC_V2_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VmFd};

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
    _fd: DeviceFd,
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
            set_attr(&fd, KVM_DEV_ARM_VGIC_GRP_ADDR, kind, &addr)
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
        Ok(Gic { _fd: fd, layout })
    }
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
fn set_attr<T>(fd: &DeviceFd, group: u32, attr: u32, value: &T) -> Result<(), kvm_ioctls::Error> {
    let attr = kvm_device_attr {
        group,
        attr: u64::from(attr),
        addr: std::ptr::from_ref(value) as u64,
        flags: 0,
    };
    fd.set_device_attr(&attr)
}
