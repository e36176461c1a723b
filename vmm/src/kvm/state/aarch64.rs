//! What KVM holds of an arm64 VM: each vCPU's registers — every one KVM lists for it (core and
//! floating-point registers, system registers, the timer's, the firmware's) — and whether it
//! is powered off, and the VM's GIC (crate::kvm::gic).

use kvm_bindings::{kvm_mp_state, KVM_REG_SIZE_MASK, KVM_REG_SIZE_SHIFT};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kvm::gic::GicState;
use crate::kvm::{aarch64, Error, Vcpu};

/// One register: its ONE_REG id and its value, in the bytes KVM gives.
#[derive(Serialize, Deserialize)]
pub struct Reg {
    pub id: u64,
    pub value: Vec<u8>,
}

/// One vCPU as KVM holds it.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub mp_state: kvm_mp_state,
    pub regs: Vec<Reg>,
}

/// The VM's own state: its GIC.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub gic: GicState,
}

/// The bytes of register `id`'s value, which its id gives.
fn reg_size(id: u64) -> usize {
    1 << ((id & KVM_REG_SIZE_MASK) >> KVM_REG_SIZE_SHIFT)
}

impl Vcpu {
    /// Reads the vCPU's state: its run state, then each register of its list.
    pub fn save_state(&self) -> Result<VcpuState, Error> {
        let vcpu = self.index();
        let mp_state = self.fd.get_mp_state().map_err(|source| Error::VcpuSetup {
            vcpu,
            what: "read the MP state",
            source,
        })?;
        let regs = self
            .reg_ids
            .iter()
            .map(|&id| {
                let mut value = vec![0u8; reg_size(id)];
                self.fd
                    .get_one_reg(id, &mut value)
                    .map_err(|source| Error::Reg { vcpu, id, source })?;
                Ok(Reg { id, value })
            })
            .collect::<Result<_, Error>>()?;
        Ok(VcpuState { mp_state, regs })
    }

    /// Puts `state` into this fresh (initialized) vCPU: its registers in the order saved, then
    /// its run state. Refuses a register this vCPU does not have, or a value of another size.
    pub fn restore_state(&self, state: &VcpuState) -> Result<(), Error> {
        let vcpu = self.index();
        for reg in &state.regs {
            if !self.reg_ids.contains(&reg.id) || reg.value.len() != reg_size(reg.id) {
                return Err(Error::RegUnknown { vcpu, id: reg.id });
            }
            self.fd
                .set_one_reg(reg.id, &reg.value)
                .map_err(|source| Error::Reg {
                    vcpu,
                    id: reg.id,
                    source,
                })?;
        }
        self.fd
            .set_mp_state(state.mp_state)
            .map_err(|source| Error::VcpuSetup {
                vcpu,
                what: "set the MP state",
                source,
            })
    }

    /// SHA-256, in hex, of the CPU this vCPU is to the guest: its ID registers (MPIDR_EL1
    /// aside, which names the vCPU). A snapshot is restored only where it is the same.
    pub fn cpu_id_hash(&self) -> Result<String, Error> {
        let mut hash = Sha256::new();
        for &id in self.reg_ids.iter().filter(|&&id| aarch64::is_cpu_id(id)) {
            let mut value = [0u8; 8];
            self.fd
                .get_one_reg(id, &mut value)
                .map_err(|source| Error::Reg {
                    vcpu: self.index(),
                    id,
                    source,
                })?;
            hash.update(id.to_le_bytes());
            hash.update(value);
        }
        Ok(hex::encode(hash.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_id_gives_its_size() {
        use kvm_bindings::{KVM_REG_ARM64, KVM_REG_SIZE_U128, KVM_REG_SIZE_U32, KVM_REG_SIZE_U64};
        assert_eq!(reg_size(KVM_REG_ARM64 | KVM_REG_SIZE_U64 | 7), 8);
        assert_eq!(reg_size(KVM_REG_ARM64 | KVM_REG_SIZE_U32), 4);
        assert_eq!(reg_size(KVM_REG_ARM64 | KVM_REG_SIZE_U128), 16);
    }
}
