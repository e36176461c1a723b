//! The VM and its vCPUs on arm64 KVM: the VM without an interrupt controller (the GIC comes once
//! the vCPUs exist: [`super::gic`]), vCPUs initialized as the host's preferred CPU type with
//! PSCI 0.2 (the secondaries powered off until the guest turns them on), and the boot vCPU's
//! entry registers.

use std::mem::offset_of;

use kvm_bindings::{
    kvm_regs, kvm_vcpu_init, user_pt_regs, PSR_MODE_EL1h, RegList, KVM_API_VERSION,
    KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_REG_ARM64, KVM_REG_ARM64_SYSREG,
    KVM_REG_ARM64_SYSREG_CRM_SHIFT, KVM_REG_ARM64_SYSREG_CRN_MASK, KVM_REG_ARM64_SYSREG_CRN_SHIFT,
    KVM_REG_ARM64_SYSREG_OP0_MASK, KVM_REG_ARM64_SYSREG_OP0_SHIFT, KVM_REG_ARM64_SYSREG_OP1_MASK,
    KVM_REG_ARM64_SYSREG_OP1_SHIFT, KVM_REG_ARM64_SYSREG_OP2_SHIFT, KVM_REG_ARM_CORE,
    KVM_REG_SIZE_U64, PSR_A_BIT, PSR_D_BIT, PSR_F_BIT, PSR_I_BIT,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};

use super::{ioctl, Error};
use crate::boot::BootEntry;

/// The most registers a vCPU's list holds (kvm-bindings' bound; Linux 6.1 lists about 250).
const ARM64_REGS_MAX: usize = 500;

/// The capabilities this VMM needs of arm64 KVM.
pub(super) const CAPABILITIES: [Cap; 5] = [
    Cap::Ioeventfd,
    Cap::Irqfd,
    Cap::UserMemory,
    Cap::OneReg,
    Cap::ArmPsci02,
];

/// EL1 with its own stack pointer, every exception masked: the state the boot protocol asks for.
const BOOT_PSTATE: u64 = (PSR_MODE_EL1h | PSR_A_BIT | PSR_F_BIT | PSR_I_BIT | PSR_D_BIT) as u64;

/// The VM, created with the default guest physical address size (40 bits).
pub(super) fn create(kvm: &Kvm) -> Result<kvm_ioctls::VmFd, Error> {
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION as i32 {
        return Err(Error::ApiVersion(version));
    }
    for cap in CAPABILITIES {
        if !kvm.check_extension(cap) {
            return Err(Error::MissingCapability(cap));
        }
    }
    kvm.create_vm().map_err(ioctl("create a VM"))
}

/// Initializes vCPU `index`: the host's preferred target, PSCI 0.2; all but vCPU 0 start
/// powered off (the guest's PSCI CPU_ON starts them).
pub(super) fn init_vcpu(vm: &kvm_ioctls::VmFd, fd: &VcpuFd, index: u8) -> Result<(), Error> {
    let setup = |what| {
        move |source| Error::VcpuSetup {
            vcpu: index,
            what,
            source,
        }
    };
    let mut init = kvm_vcpu_init::default();
    vm.get_preferred_target(&mut init)
        .map_err(setup("read the preferred CPU target"))?;
    init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
    if index > 0 {
        init.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
    }
    fd.vcpu_init(&init).map_err(setup("initialize the vCPU"))
}

/// The ONE_REG id of a 64-bit core register at byte `offset` of `struct kvm_regs`.
fn core_reg(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM_CORE) | (offset / 4) as u64
}

/// A system register's encoding (op0, op1, CRn, CRm, op2) as KVM packs it, in the low 16 bits
/// of a ONE_REG id and of a GICv3 CPU-interface attribute.
pub(super) fn sysreg((op0, op1, crn, crm, op2): (u64, u64, u64, u64, u64)) -> u64 {
    (op0 << KVM_REG_ARM64_SYSREG_OP0_SHIFT)
        | (op1 << KVM_REG_ARM64_SYSREG_OP1_SHIFT)
        | (crn << KVM_REG_ARM64_SYSREG_CRN_SHIFT)
        | (crm << KVM_REG_ARM64_SYSREG_CRM_SHIFT)
        | (op2 << KVM_REG_ARM64_SYSREG_OP2_SHIFT)
}

/// The ONE_REG id of the 64-bit system register `encoding`.
fn sysreg_id(encoding: (u64, u64, u64, u64, u64)) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM64_SYSREG) | sysreg(encoding)
}

/// MPIDR_EL1.
const MPIDR_EL1: (u64, u64, u64, u64, u64) = (3, 0, 0, 0, 5);

/// The ONE_REG ids of every register KVM has for the (initialized) vCPU: what a snapshot saves.
pub(super) fn reg_ids(fd: &VcpuFd, index: u8) -> Result<Vec<u64>, Error> {
    let mut list = RegList::new(ARM64_REGS_MAX).expect("the list's size is within its bound");
    fd.get_reg_list(&mut list)
        .map_err(|source| Error::VcpuSetup {
            vcpu: index,
            what: "list its registers",
            source,
        })?;
    Ok(list.as_slice().to_vec())
}

/// Whether `id` is one of the ID registers (op0 3, op1 0, CRn 0) that describe the CPU the
/// guest sees, MPIDR_EL1 (which names the vCPU) aside.
pub(super) fn is_cpu_id(id: u64) -> bool {
    const SYSREG: u64 = KVM_REG_ARM64 | KVM_REG_SIZE_U64 | KVM_REG_ARM64_SYSREG as u64;
    const ID_SPACE: u64 = (KVM_REG_ARM64_SYSREG_OP0_MASK
        | KVM_REG_ARM64_SYSREG_OP1_MASK
        | KVM_REG_ARM64_SYSREG_CRN_MASK) as u64;
    id & !0xffff == SYSREG && id & ID_SPACE == sysreg((3, 0, 0, 0, 0)) && id != sysreg_id(MPIDR_EL1)
}

/// The vCPU's MPIDR_EL1, which names it in the device tree and to PSCI.
pub(super) fn mpidr(fd: &VcpuFd, index: u8) -> Result<u64, Error> {
    let mut value = [0u8; 8];
    fd.get_one_reg(sysreg_id(MPIDR_EL1), &mut value)
        .map_err(|source| Error::VcpuSetup {
            vcpu: index,
            what: "read MPIDR_EL1",
            source,
        })?;
    Ok(u64::from_le_bytes(value))
}

/// Sets the boot vCPU's PSTATE, PC and X0 (the device tree's address).
pub(super) fn set_boot_regs(fd: &VcpuFd, index: u8, boot: &BootEntry) -> Result<(), Error> {
    let regs = offset_of!(kvm_regs, regs);
    for (what, offset, value) in [
        (
            "set PSTATE",
            regs + offset_of!(user_pt_regs, pstate),
            BOOT_PSTATE,
        ),
        ("set PC", regs + offset_of!(user_pt_regs, pc), boot.pc),
        ("set X0", regs + offset_of!(user_pt_regs, regs), boot.fdt),
    ] {
        fd.set_one_reg(core_reg(offset), &value.to_le_bytes())
            .map_err(|source| Error::VcpuSetup {
                vcpu: index,
                what,
                source,
            })?;
    }
    Ok(())
}
