//! What KVM holds of an x86-64 VM: each vCPU's registers, FPU and extended state, LAPIC, MSRs
//! (the kvmclock ones among them), pending events and run state, and the VM's in-kernel PIC,
//! IOAPIC, PIT and clock.

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs,
    KVM_CLOCK_TSC_STABLE, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_MSR_ENTRIES,
};
use serde::{Deserialize, Serialize};

use crate::kvm::{ioctl, Error, Vcpu, Vm};

/// One vCPU as KVM holds it. The CPUID is not saved: a restore gives the vCPU the one this VMM
/// computes for it, which is the saved one on the same host CPU (snapshot's CPUID check).
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub xsave: kvm_xsave,
    pub xcrs: kvm_xcrs,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub msrs: Vec<kvm_msr_entry>,
    pub events: kvm_vcpu_events,
}

/// The VM's own interrupt controllers, timer and clock.
#[derive(Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    pub pit: kvm_pit_state2,
    pub clock: kvm_clock_data,
}

impl Vcpu {
    /// Reads the vCPU's state, in the order Firecracker found safe: the MP state first (reading
    /// it may deliver pending LAPIC events), the events last (other reads may change them).
    pub fn save_state(&self) -> Result<VcpuState, Error> {
        let vcpu = self.index();
        let err = |what| move |source| Error::VcpuSetup { vcpu, what, source };
        let mp_state = self.fd.get_mp_state().map_err(err("read the MP state"))?;
        let regs = self.fd.get_regs().map_err(err("read the registers"))?;
        let sregs = self
            .fd
            .get_sregs()
            .map_err(err("read the special registers"))?;
        let xsave = self.fd.get_xsave().map_err(err("read the XSAVE area"))?;
        let xcrs = self.fd.get_xcrs().map_err(err("read the XCRs"))?;
        let debug_regs = self
            .fd
            .get_debug_regs()
            .map_err(err("read the debug registers"))?;
        let lapic = self.fd.get_lapic().map_err(err("read the LAPIC"))?;
        let msrs = self.read_msrs()?;
        let events = self
            .fd
            .get_vcpu_events()
            .map_err(err("read the pending events"))?;
        Ok(VcpuState {
            mp_state,
            regs,
            sregs,
            xsave,
            xcrs,
            debug_regs,
            lapic,
            msrs,
            events,
        })
    }

    /// Every MSR of KVM's list that this vCPU has: KVM reads a list up to the first MSR it
    /// refuses (one the vCPU's CPUID does not give it), which is left out.
    fn read_msrs(&self) -> Result<Vec<kvm_msr_entry>, Error> {
        let mut saved = Vec::with_capacity(self.msr_indices.len());
        let mut rest = &self.msr_indices[..];
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
            let entries: Vec<kvm_msr_entry> = chunk
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs = Msrs::from_entries(&entries).expect("a chunk fits KVM's MSR list");
            let read = self
                .fd
                .get_msrs(&mut msrs)
                .map_err(|source| Error::VcpuSetup {
                    vcpu: self.index(),
                    what: "read the MSRs",
                    source,
                })?;
            saved.extend_from_slice(&msrs.as_slice()[..read]);
            rest = &rest[(read + 1).min(rest.len())..];
        }
        Ok(saved)
    }

    /// Puts `state` into this fresh vCPU (created with its CPUID), in Firecracker's order.
    pub fn restore_state(&self, state: &VcpuState) -> Result<(), Error> {
        let vcpu = self.index();
        let err = |what| move |source| Error::VcpuSetup { vcpu, what, source };
        self.fd
            .set_mp_state(state.mp_state)
            .map_err(err("set the MP state"))?;
        self.fd
            .set_regs(&state.regs)
            .map_err(err("set the registers"))?;
        self.fd
            .set_sregs(&state.sregs)
            .map_err(err("set the special registers"))?;
        // SAFETY: a kvm_xsave is the legacy 4 KiB area KVM_SET_XSAVE reads, and the vCPU's
        // CPUID has no feature (AMX) whose state would need a larger one.
        unsafe { self.fd.set_xsave(&state.xsave) }.map_err(err("set the XSAVE area"))?;
        self.fd.set_xcrs(&state.xcrs).map_err(err("set the XCRs"))?;
        self.fd
            .set_debug_regs(&state.debug_regs)
            .map_err(err("set the debug registers"))?;
        self.fd
            .set_lapic(&state.lapic)
            .map_err(err("set the LAPIC"))?;
        for chunk in state.msrs.chunks(KVM_MAX_MSR_ENTRIES) {
            let msrs = Msrs::from_entries(chunk).expect("a chunk fits KVM's MSR list");
            let set = self.fd.set_msrs(&msrs).map_err(err("set the MSRs"))?;
            if set != chunk.len() {
                return Err(Error::Msrs {
                    vcpu,
                    set,
                    total: chunk.len(),
                    index: chunk[set].index,
                });
            }
        }
        self.fd
            .set_vcpu_events(&state.events)
            .map_err(err("set the pending events"))?;
        Ok(())
    }
}

impl Vm {
    /// Reads the PICs, the IOAPIC, the PIT and the clock (with the flag KVM_SET_CLOCK refuses
    /// taken out).
    pub fn save_state(&self) -> Result<VmState, Error> {
        let chip = |chip_id| {
            let mut chip = kvm_irqchip {
                chip_id,
                ..Default::default()
            };
            self.fd
                .get_irqchip(&mut chip)
                .map_err(ioctl("read an interrupt controller"))
                .map(|()| chip)
        };
        let mut clock = self.fd.get_clock().map_err(ioctl("read the clock"))?;
        clock.flags &= !KVM_CLOCK_TSC_STABLE;
        Ok(VmState {
            pic_master: chip(KVM_IRQCHIP_PIC_MASTER)?,
            pic_slave: chip(KVM_IRQCHIP_PIC_SLAVE)?,
            ioapic: chip(KVM_IRQCHIP_IOAPIC)?,
            pit: self.fd.get_pit2().map_err(ioctl("read the PIT"))?,
            clock,
        })
    }

    /// Puts `state` into this fresh VM. The chips are checked to be the ones they claim: a
    /// state that swapped them is refused, not loaded into the wrong controller.
    pub fn restore_state(&self, state: &VmState) -> Result<(), Error> {
        for (chip, id) in [
            (&state.pic_master, KVM_IRQCHIP_PIC_MASTER),
            (&state.pic_slave, KVM_IRQCHIP_PIC_SLAVE),
            (&state.ioapic, KVM_IRQCHIP_IOAPIC),
        ] {
            if chip.chip_id != id {
                return Err(Error::ChipId {
                    saved: chip.chip_id,
                    expected: id,
                });
            }
            self.fd
                .set_irqchip(chip)
                .map_err(ioctl("set an interrupt controller"))?;
        }
        self.fd.set_pit2(&state.pit).map_err(ioctl("set the PIT"))?;
        self.fd
            .set_clock(&state.clock)
            .map_err(ioctl("set the clock"))?;
        Ok(())
    }
}
