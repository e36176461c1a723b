//! The VM and its vCPUs on KVM: creating them, giving them memory, interrupt controllers and
//! their boot state, and running each vCPU on its own thread.

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64;
pub mod control;
#[cfg(target_arch = "aarch64")]
pub mod gic;
#[cfg(target_arch = "x86_64")]
pub mod regs;
pub mod state;
pub mod vcpu;

use std::io;
use std::sync::Arc;

#[cfg(target_arch = "x86_64")]
use kvm_bindings::{kvm_pit_config, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_bindings::{kvm_userspace_memory_region, KVM_API_VERSION};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

#[cfg(target_arch = "x86_64")]
use crate::cpuid::FeatureMask;
use crate::devices::virtio::NotifyRegistrar;
use crate::memory::GuestMemory;
#[cfg(target_arch = "x86_64")]
use crate::memory::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};

pub use control::VmControl;
pub use vcpu::Vcpu;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0}; this VMM needs {KVM_API_VERSION}")]
    ApiVersion(i32),
    #[error("KVM lacks {0:?}, which this VMM needs")]
    MissingCapability(Cap),
    #[error("KVM: cannot {what}")]
    Ioctl {
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM: cannot map guest memory slot {slot} ({size:#x} bytes at {addr:#x})")]
    MemorySlot {
        slot: u32,
        addr: u64,
        size: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM: cannot connect interrupt line {gsi}")]
    Irqfd {
        gsi: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("vCPU {vcpu}: cannot {what}")]
    VcpuSetup {
        vcpu: u8,
        what: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[cfg(target_arch = "x86_64")]
    #[error("vCPU {vcpu}: KVM took {set} of the {total} boot MSRs; MSR {index:#x} was refused")]
    Msrs {
        vcpu: u8,
        set: usize,
        total: usize,
        index: u32,
    },
    #[cfg(target_arch = "x86_64")]
    #[error("vCPU {vcpu}: the CPUID table has too many entries")]
    CpuidTooLong { vcpu: u8 },
    #[cfg(target_arch = "x86_64")]
    #[error("cannot read KVM's list of MSRs")]
    MsrList(#[source] kvm_ioctls::Error),
    #[error("vCPU {vcpu} did not save its state when the VM paused")]
    VcpuNotSaved { vcpu: u8 },
    #[cfg(target_arch = "x86_64")]
    #[error("interrupt controller {saved} saved where controller {expected} belongs")]
    ChipId { saved: u32, expected: u32 },
    #[cfg(target_arch = "aarch64")]
    #[error("vCPU {vcpu}: cannot read or set register {id:#x}")]
    Reg {
        vcpu: u8,
        id: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[cfg(target_arch = "aarch64")]
    #[error("vCPU {vcpu} has no register {id:#x} of the size saved")]
    RegUnknown { vcpu: u8, id: u64 },
    #[cfg(target_arch = "aarch64")]
    #[error("GIC: cannot read or set attribute {attr:#x} of group {group}")]
    GicReg {
        group: u32,
        attr: u64,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[cfg(target_arch = "aarch64")]
    #[error("GIC: a GICv{} saved, this VM has the other", if *saved_v3 { 3 } else { 2 })]
    GicVersion { saved_v3: bool },
    #[cfg(target_arch = "aarch64")]
    #[error("GIC: attribute group {0} is not a register group")]
    GicGroup(u32),
    #[cfg(target_arch = "aarch64")]
    #[error("GIC: value {value:#x} of 32-bit attribute {attr:#x} is too wide")]
    GicValue { attr: u64, value: u64 },
}

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
    move |source| Error::Ioctl { what, source }
}

/// A KVM VM with the in-kernel LAPICs, IOAPIC, PIC and PIT of a PC.
#[cfg(target_arch = "x86_64")]
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
    supported_cpuid: CpuId,
    tsc_deadline: bool,
    /// The MSRs KVM saves and restores for a vCPU (KVM_GET_MSR_INDEX_LIST), read here since
    /// no VMM thread's filter allows asking /dev/kvm later.
    msr_indices: Arc<[u32]>,
}

/// A KVM VM on arm64; its GIC comes once its vCPUs exist ([`gic::Gic`]).
#[cfg(target_arch = "aarch64")]
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
}

/// SHA-256, in hex, of the CPU a vCPU gets on this host: what a snapshot is restored only on
/// (x86-64: the CPUID KVM supports, as this VMM gives it to a vCPU; arm64: a vCPU's ID
/// registers, read from a VM made for it). Cheap on x86-64 (one ioctl on /dev/kvm); on arm64
/// it makes and drops a VM with one vCPU.
pub fn host_cpu_hash() -> Result<String, Error> {
    #[cfg(target_arch = "x86_64")]
    {
        let kvm = Kvm::new().map_err(Error::Open)?;
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("get the supported CPUID"))?;
        Ok(cpuid_hash(
            &supported,
            kvm.check_extension(Cap::TscDeadlineTimer),
        ))
    }
    #[cfg(target_arch = "aarch64")]
    {
        Vm::new()?.create_vcpu(0)?.cpu_id_hash()
    }
}

/// SHA-256 of `supported` (KVM_GET_SUPPORTED_CPUID), in hex, as this VMM gives it to a vCPU
/// (crate::cpuid::normalize, for vCPU 0 of 1): normalized first since KVM reports some fields
/// (APIC IDs) of whichever host CPU answered.
#[cfg(target_arch = "x86_64")]
fn cpuid_hash(supported: &CpuId, tsc_deadline: bool) -> String {
    use sha2::{Digest, Sha256};
    let mut entries = supported.as_slice().to_vec();
    let vcpu = crate::cpuid::VcpuCpuid {
        index: 0,
        count: 1,
        tsc_deadline,
    };
    crate::cpuid::normalize(&mut entries, vcpu, crate::cpuid::DEFAULT_HIDDEN);
    let mut hash = Sha256::new();
    for e in &entries {
        for word in [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx] {
            hash.update(word.to_le_bytes());
        }
    }
    hex::encode(hash.finalize())
}

#[cfg(target_arch = "aarch64")]
impl Vm {
    pub fn new() -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(Error::Open)?;
        let fd = aarch64::create(&kvm)?;
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
        })
    }

    /// Creates vCPU `index`: vCPU 0 runnable once given its entry state, the others off until
    /// the guest starts them (PSCI CPU_ON).
    pub fn create_vcpu(&self, index: u8) -> Result<Vcpu, Error> {
        Vcpu::new(self, index)
    }

    /// Creates the GIC, once every vCPU exists.
    pub fn create_gic(&self, vcpus: u8) -> Result<gic::Gic, Error> {
        gic::Gic::create(&self.fd, vcpus)
    }
}

#[cfg(target_arch = "x86_64")]
impl Vm {
    pub fn new() -> Result<Self, Error> {
        let kvm = Kvm::new().map_err(Error::Open)?;
        let version = kvm.get_api_version();
        if version != KVM_API_VERSION as i32 {
            return Err(Error::ApiVersion(version));
        }
        for cap in [
            Cap::Irqchip,
            Cap::Pit2,
            Cap::Ioeventfd,
            Cap::Irqfd,
            Cap::UserMemory,
            Cap::ExtCpuid,
        ] {
            if !kvm.check_extension(cap) {
                return Err(Error::MissingCapability(cap));
            }
        }
        let supported_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(ioctl("get the supported CPUID"))?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        let msr_indices = kvm.get_msr_index_list().map_err(Error::MsrList)?;
        let msr_indices = msr_indices.as_slice().into();

        let fd = kvm.create_vm().map_err(ioctl("create a VM"))?;
        // Both addresses sit in the MMIO gap, clear of RAM and devices; KVM needs them before
        // the first vCPU exists (the identity map only matters on Intel without unrestricted
        // guest, hence optional).
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(ioctl("set the TSS address"))?;
        if kvm.check_extension(Cap::SetIdentityMapAddr) {
            fd.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
                .map_err(ioctl("set the identity map address"))?;
        }
        fd.create_irq_chip()
            .map_err(ioctl("create the in-kernel interrupt controllers"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit)
            .map_err(ioctl("create the in-kernel PIT"))?;
        Ok(Vm {
            kvm,
            fd: Arc::new(fd),
            supported_cpuid,
            tsc_deadline,
            msr_indices,
        })
    }

    /// The CPU this VMM gives a vCPU on this host: [`cpuid_hash`] of the CPUID KVM reported.
    pub fn host_cpuid_hash(&self) -> String {
        cpuid_hash(&self.supported_cpuid, self.tsc_deadline)
    }

    /// Creates vCPU `index` of `count` with its CPUID, MSRs, FPU and LAPIC set up; it is
    /// runnable (the boot vCPU, once given its entry state) or waits for INIT/SIPI (the
    /// others: KVM's in-kernel LAPIC holds them).
    pub fn create_vcpu(&self, index: u8, count: u8, hidden: &[FeatureMask]) -> Result<Vcpu, Error> {
        Vcpu::new(self, index, count, hidden)
    }
}

impl Vm {
    /// Most vCPUs KVM runs in one VM.
    pub fn max_vcpus(&self) -> usize {
        self.kvm.get_max_vcpus()
    }

    /// Gives the guest its RAM, one memory slot per region.
    pub fn register_memory(&self, mem: &GuestMemory) -> Result<(), Error> {
        for (slot, region) in mem.iter().enumerate() {
            let slot = slot as u32;
            let addr = region.start_addr().0;
            let size = region.len();
            let host = mem
                .get_host_address(region.start_addr())
                .expect("a mapped region has a host address") as u64;
            let desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: addr,
                memory_size: size,
                userspace_addr: host,
            };
            // SAFETY: the region is a live mapping of `size` bytes owned by `mem`, which the
            // caller keeps alive as long as the VM (the VM fd is dropped first).
            unsafe { self.fd.set_user_memory_region(desc) }.map_err(|source| {
                Error::MemorySlot {
                    slot,
                    addr,
                    size,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Makes a write to `evt` raise interrupt line `gsi` (x86: IOAPIC pin, and PIC for 0..15;
    /// arm64: SPI `gsi`).
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), Error> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| Error::Irqfd { gsi, source })
    }

    /// An ioeventfd registrar for virtio-mmio transports.
    pub fn notify_registrar(&self) -> Arc<dyn NotifyRegistrar> {
        Arc::new(IoEvents(self.fd.clone()))
    }
}

/// Attaches queue eventfds to 32-bit writes of the queue index at a QueueNotify address.
struct IoEvents(Arc<VmFd>);

impl NotifyRegistrar for IoEvents {
    fn register(&self, evt: &EventFd, addr: u64, queue: u32) -> io::Result<()> {
        self.0
            .register_ioevent(evt, &IoEventAddress::Mmio(addr), queue)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, evt: &EventFd, addr: u64, queue: u32) -> io::Result<()> {
        self.0
            .unregister_ioevent(evt, &IoEventAddress::Mmio(addr), queue)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// Tests on the host's /dev/kvm, with tiny hand-assembled guests: they run wherever KVM can
/// run real-mode and 32-bit code (this includes paravirtual KVM hosts that cannot boot Linux).
#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) mod smoke {
    use std::sync::Mutex;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::bus::{Bus, BusDevice};
    use crate::devices::legacy::ports::ExitPort;
    use crate::devices::legacy::serial::Serial;
    use crate::devices::legacy::IrqLine;
    use crate::vm::VmExit;

    /// False (with the reason printed) when this host has no usable KVM.
    pub(crate) fn kvm_usable() -> bool {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: /dev/kvm is absent on this host");
            return false;
        }
        if let Err(e) = Kvm::new() {
            if matches!(e.errno(), libc::EACCES | libc::EPERM) {
                eprintln!("skipped: /dev/kvm is not accessible to this user ({e})");
                return false;
            }
        }
        true
    }

    /// Real mode at 0x1000: "OK\n" to COM1, then 42 to the exit port.
    const REAL_MODE_GUEST: &[u8] = &[
        0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xb0, b'O', 0xee, // mov al, 'O'; out dx, al
        0xb0, b'K', 0xee, // mov al, 'K'; out dx, al
        0xb0, b'\n', 0xee, // mov al, '\n'; out dx, al
        0xb0, 42, 0xe6, 0xf4, // mov al, 42; out 0xf4, al
        0xf4, // hlt
    ];

    #[test]
    fn the_cpu_a_template_is_named_after_is_the_one_a_restore_checks() {
        if !kvm_usable() {
            return;
        }
        let vm = Vm::new().unwrap();
        assert_eq!(host_cpu_hash().unwrap(), vm.host_cpuid_hash());
    }

    #[test]
    fn real_mode_guest_writes_serial_and_exits() {
        if !kvm_usable() {
            return;
        }
        let mem = crate::memory::create(32).unwrap().0;
        let vm = Vm::new().unwrap();
        vm.register_memory(&mem).unwrap();
        mem.write_slice(REAL_MODE_GUEST, GuestAddress(0x1000))
            .unwrap();

        let irq = IrqLine::new().unwrap();
        vm.register_irqfd(&irq.0, 4).unwrap();
        let serial = Arc::new(Mutex::new(Serial::new(irq, Vec::new())));
        let mut pio = Bus::new();
        pio.insert(0x3f8, 8, serial.clone()).unwrap();
        pio.insert(
            0xf4,
            1,
            Arc::new(Mutex::new(ExitPort)) as Arc<Mutex<dyn BusDevice>>,
        )
        .unwrap();

        let vcpu = vm.create_vcpu(0, 1, crate::cpuid::DEFAULT_HIDDEN).unwrap();
        vcpu.set_real_mode_entry(0x1000).unwrap();
        let control = VmControl::new(1).unwrap();
        vcpu.run(
            &pio,
            &Bus::new(),
            &control,
            &state::VcpuStates::new(1, false),
        );

        assert!(control.is_stopping());
        assert_eq!(control.take_outcome().unwrap().unwrap(), VmExit::Guest(42));
        assert_eq!(serial.lock().unwrap().writer(), b"OK\n");
    }
}
