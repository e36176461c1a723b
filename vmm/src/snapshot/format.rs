//! The snapshot file: a fixed preamble, the state as JSON, then guest memory, page-aligned:
//!
//! ```text
//! 0       magic "NODEOSVM", format version (u32 LE), 4 bytes zero,
//!         state length, memory offset, memory length (u64 LE each),
//!         SHA-256 of those 40 bytes and the state
//! 4096    the state (a [`Snapshot`], JSON)
//! M       guest memory, its RAM regions one after the other, M a multiple of 2 MiB;
//!         all-zero pages are holes (a sparse file); the file ends with it
//! ```
//!
//! The checksum covers the preamble and the state, which a restore reads whole; memory is not
//! read at restore (it is mapped, and read lazily as the guest touches it), so for it a restore
//! checks only that the file has exactly the length the preamble says. Hashing memory would
//! cost a read of all of it on every restore, which mapping avoids. The preamble is written
//! last: a save that stops half-way leaves a file without the magic.

use std::fs::File;
use std::os::unix::fs::FileExt;

use sha2::{Digest, Sha256};

use super::{memory, Error, Snapshot};
use crate::memory::GuestMemory;

/// The version of this layout; a file of another version is refused.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"NODEOSVM";
/// Where the state starts.
pub const STATE_OFFSET: u64 = 4096;
/// The preamble's fields (magic to memory length), which the checksum covers with the state.
const FIELDS_LEN: usize = 40;
const CHECKSUM_LEN: usize = 32;
const PREAMBLE_LEN: usize = FIELDS_LEN + CHECKSUM_LEN;
/// Alignment of guest memory in the file: a huge page, so a mapping of it could use them.
pub const MEMORY_ALIGN: u64 = 2 << 20;
/// The largest state read: a VM's is well under 1 MiB (32 vCPUs' included).
pub const MAX_STATE_LEN: u64 = 16 << 20;

/// The most bytes a snapshot of `memory_len` bytes of RAM takes (the jail's file size limit).
pub fn max_file_len(memory_len: u64) -> u64 {
    (STATE_OFFSET + MAX_STATE_LEN).next_multiple_of(MEMORY_ALIGN) + memory_len
}

/// Where the preamble says the rest is.
struct Preamble {
    state_len: u64,
    memory_offset: u64,
    memory_len: u64,
}

impl Preamble {
    fn fields(&self, version: u32) -> [u8; FIELDS_LEN] {
        let mut f = [0u8; FIELDS_LEN];
        f[0..8].copy_from_slice(&MAGIC);
        f[8..12].copy_from_slice(&version.to_le_bytes());
        f[16..24].copy_from_slice(&self.state_len.to_le_bytes());
        f[24..32].copy_from_slice(&self.memory_offset.to_le_bytes());
        f[32..40].copy_from_slice(&self.memory_len.to_le_bytes());
        f
    }
}

fn checksum(fields: &[u8], state: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hash = Sha256::new();
    hash.update(fields);
    hash.update(state);
    hash.finalize().into()
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Where the payload (guest memory, or another backend's stream) of a snapshot whose state is
/// `state_len` bytes starts.
pub fn payload_offset(state_len: usize) -> u64 {
    (STATE_OFFSET + state_len as u64).next_multiple_of(MEMORY_ALIGN)
}

/// Writes `snapshot` and `mem` to `file` (emptied first) and flushes it to disk. Returns the
/// bytes of memory written (the rest are holes).
pub fn write(file: &File, snapshot: &Snapshot, mem: &GuestMemory) -> Result<u64, Error> {
    let state = serde_json::to_vec(snapshot).map_err(|e| io("serialize the state")(e.into()))?;
    let memory_offset = payload_offset(state.len());
    file.set_len(0).map_err(io("empty the file"))?;
    let written = memory::write(file, mem, memory_offset).map_err(io("write guest memory"))?;
    finish(file, &state, memory::len(mem))?;
    Ok(written)
}

/// Completes a snapshot whose payload of `payload_len` bytes is in `file` at
/// [`payload_offset`]: writes the state and, last, the preamble, and flushes the file to disk.
pub fn finish(file: &File, state: &[u8], payload_len: u64) -> Result<(), Error> {
    let preamble = Preamble {
        state_len: state.len() as u64,
        memory_offset: payload_offset(state.len()),
        memory_len: payload_len,
    };
    file.write_all_at(state, STATE_OFFSET)
        .map_err(io("write the state"))?;
    file.set_len(preamble.memory_offset + preamble.memory_len)
        .map_err(io("set the file's length"))?;
    let fields = preamble.fields(FORMAT_VERSION);
    let mut head = [0u8; PREAMBLE_LEN];
    head[..FIELDS_LEN].copy_from_slice(&fields);
    head[FIELDS_LEN..].copy_from_slice(&checksum(&fields, state));
    file.write_all_at(&head, 0)
        .map_err(io("write the preamble"))?;
    file.sync_all().map_err(io("flush the file to disk"))
}

/// A snapshot read and checked, and where its memory is in the file.
pub struct Loaded {
    pub snapshot: Snapshot,
    pub memory_offset: u64,
}

/// Reads the snapshot in `file`, refusing one of another format version, truncated or
/// corrupted, or whose memory does not match its header. The header is the caller's to check
/// against what it restores ([`super::Header::check`]).
pub fn read(file: &File) -> Result<Loaded, Error> {
    let parts = read_parts(file)?;
    let snapshot: Snapshot = serde_json::from_slice(&parts.state)
        .map_err(|e| Error::Corrupted(format!("the state does not parse: {e}")))?;
    let memory_mib = u64::from(snapshot.header.memory_mib);
    if parts.payload_len != memory_mib << 20 {
        return Err(Error::Corrupted(format!(
            "{} bytes of memory for {memory_mib} MiB",
            parts.payload_len
        )));
    }
    snapshot.check_consistent()?;
    Ok(Loaded {
        snapshot,
        memory_offset: parts.payload_offset,
    })
}

/// The checked state of a snapshot file and where its payload lies.
pub struct Parts {
    pub state: Vec<u8>,
    pub payload_offset: u64,
    pub payload_len: u64,
}

/// Reads the preamble and state of `file`, refusing another format version, a truncated or
/// overlong file and a state whose checksum does not match.
pub fn read_parts(file: &File) -> Result<Parts, Error> {
    let len = file.metadata().map_err(io("read the file's size"))?.len();
    let mut head = [0u8; PREAMBLE_LEN];
    if len < STATE_OFFSET {
        return Err(Error::Size {
            len,
            expected: STATE_OFFSET,
        });
    }
    file.read_exact_at(&mut head, 0)
        .map_err(io("read the preamble"))?;
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    if head[0..8] != MAGIC {
        return Err(Error::Magic);
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::Version {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let preamble = Preamble {
        state_len: word(16),
        memory_offset: word(24),
        memory_len: word(32),
    };
    if preamble.state_len > MAX_STATE_LEN {
        return Err(Error::Corrupted(format!(
            "a state of {} bytes (at most {MAX_STATE_LEN})",
            preamble.state_len
        )));
    }
    let expected_offset = payload_offset(preamble.state_len as usize);
    if preamble.memory_offset != expected_offset {
        return Err(Error::Corrupted(format!(
            "memory at {:#x}, not {expected_offset:#x}",
            preamble.memory_offset
        )));
    }
    let expected = preamble
        .memory_offset
        .checked_add(preamble.memory_len)
        .ok_or_else(|| Error::Corrupted("the memory length overflows".into()))?;
    if len != expected {
        return Err(Error::Size { len, expected });
    }
    let mut state = vec![0u8; preamble.state_len as usize];
    file.read_exact_at(&mut state, STATE_OFFSET)
        .map_err(io("read the state"))?;
    if checksum(&head[..FIELDS_LEN], &state)[..] != head[FIELDS_LEN..] {
        return Err(Error::Corrupted(
            "the SHA-256 of the preamble and state does not match".into(),
        ));
    }
    Ok(Parts {
        state,
        payload_offset: preamble.memory_offset,
        payload_len: preamble.memory_len,
    })
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use std::sync::Arc;

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::legacy::cmos::Cmos;
    use crate::devices::legacy::i8042::I8042;
    use crate::devices::legacy::serial::Serial;
    use crate::devices::legacy::IrqLine;
    use crate::devices::persist::Persist;
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::test_util::NoIoeventfd;
    use crate::devices::virtio::VirtioState;
    use crate::kvm::state::{VcpuState, VmState};
    use crate::snapshot::{DeviceKind, DevicesState, Header, VirtioDeviceState};

    const MIB: u32 = crate::memory::MIN_MEMORY_MIB;

    fn header() -> Header {
        Header {
            vmm_version: crate::snapshot::VMM_VERSION.into(),
            host: "cpu".into(),
            identity: "template".into(),
            memory_mib: MIB,
            cpus: 1,
            devices: vec![DeviceKind::Rng],
        }
    }

    /// A snapshot of a 1-vCPU VM with one virtio-rng, its memory with a marker in one page.
    fn sample() -> (Snapshot, GuestMemory) {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), (MIB as usize) << 20)]).unwrap();
        mem.write_slice(b"marker", GuestAddress(0x1_2345)).unwrap();
        let irq = || IrqLine::new().unwrap();
        let transport = MmioTransport::new(
            Box::new(Rng::new()),
            Arc::new(mem.clone()),
            irq(),
            Arc::new(NoIoeventfd),
            0xd000_0000,
        )
        .unwrap();
        let regs = kvm_bindings::kvm_regs {
            rip: 0x10_0000,
            ..Default::default()
        };
        let snapshot = Snapshot {
            header: header(),
            vm: VmState {
                pic_master: Default::default(),
                pic_slave: Default::default(),
                ioapic: Default::default(),
                pit: Default::default(),
                clock: Default::default(),
            },
            vcpus: vec![VcpuState {
                mp_state: Default::default(),
                regs,
                sregs: Default::default(),
                xsave: Default::default(),
                xcrs: Default::default(),
                debug_regs: Default::default(),
                lapic: Default::default(),
                msrs: vec![kvm_bindings::kvm_msr_entry {
                    index: 0x4b56_4d01,
                    data: 0x1234,
                    ..Default::default()
                }],
                events: Default::default(),
            }],
            devices: DevicesState {
                serial: Serial::new(irq(), Vec::new()).save(),
                i8042: I8042::new(irq()).save(),
                cmos: Cmos::new().save(),
                virtio: vec![VirtioDeviceState {
                    transport: transport.save(),
                    device: VirtioState::Rng,
                }],
                console_ready: true,
            },
        };
        (snapshot, mem)
    }

    fn saved() -> File {
        let (snapshot, mem) = sample();
        let file = tempfile::tempfile().unwrap();
        let written = write(&file, &snapshot, &mem).unwrap();
        assert_eq!(written, memory::PAGE as u64, "one page is not zero");
        file
    }

    fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap()
    }

    #[test]
    fn round_trip() {
        let file = saved();
        let loaded = read(&file).unwrap();
        let (snapshot, _) = sample();
        assert_eq!(json(&loaded.snapshot), json(&snapshot));
        assert_eq!(loaded.memory_offset % MEMORY_ALIGN, 0);
        // Mapped back copy-on-write: the guest's writes stay out of the file.
        let mem = crate::memory::from_snapshot(MIB, &file, loaded.memory_offset).unwrap();
        let mut marker = [0u8; 6];
        mem.read_slice(&mut marker, GuestAddress(0x1_2345)).unwrap();
        assert_eq!(&marker, b"marker");
        mem.write_slice(b"guest!", GuestAddress(0x1_2345)).unwrap();
        mem.write_slice(b"hole", GuestAddress(0x30_0000)).unwrap();
        file.read_exact_at(&mut marker, loaded.memory_offset + 0x1_2345)
            .unwrap();
        assert_eq!(&marker, b"marker", "the file is unchanged");
        assert_eq!(
            file.metadata().unwrap().len(),
            loaded.memory_offset + (u64::from(MIB) << 20)
        );
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let file = saved();
        let len = file.metadata().unwrap().len();
        file.set_len(len - 4096).unwrap();
        let err = read(&file).err().unwrap();
        assert!(matches!(err, Error::Size { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "snapshot: truncated or overlong: {} bytes, {len} expected",
                len - 4096
            )
        );
        file.set_len(100).unwrap();
        assert!(matches!(read(&file), Err(Error::Size { .. })));
    }

    #[test]
    fn a_corrupted_byte_is_refused() {
        let file = saved();
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, STATE_OFFSET + 20).unwrap();
        file.write_all_at(&[byte[0] ^ 0x01], STATE_OFFSET + 20)
            .unwrap();
        let err = read(&file).err().unwrap();
        assert_eq!(
            err.to_string(),
            "snapshot: corrupted: the SHA-256 of the preamble and state does not match"
        );
        let file = saved();
        file.write_all_at(&[0x01], 20).unwrap(); // the state's length
        assert!(matches!(read(&file), Err(Error::Corrupted(_))));
        let file = saved();
        file.write_all_at(b"X", 0).unwrap();
        assert!(matches!(read(&file), Err(Error::Magic)));
    }

    #[test]
    fn another_format_version_is_refused() {
        let file = saved();
        file.write_all_at(&(FORMAT_VERSION + 1).to_le_bytes(), 8)
            .unwrap();
        let err = read(&file).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "snapshot: format version {}; this VMM reads version {FORMAT_VERSION}",
                FORMAT_VERSION + 1
            )
        );
    }

    /// What a restore expects against what was saved: each difference refused, named.
    #[test]
    fn a_header_that_differs_is_refused() {
        let saved = header();
        assert!(saved.check(&header()).is_ok());
        let refused = |change: fn(&mut Header)| {
            let mut expected = header();
            change(&mut expected);
            expected.check(&saved).unwrap_err()
        };
        let err = refused(|h| h.identity = "other".into());
        assert_eq!(
            err.to_string(),
            r#"snapshot: saved for identity "template", not "other""#
        );
        let err = refused(|h| h.host = "another cpu".into());
        assert_eq!(
            err.to_string(),
            "snapshot: taken on another CPU or machine monitor (cpu; this host runs another cpu)"
        );
        let err = refused(|h| h.vmm_version = "0.0.0+other".into());
        assert!(matches!(err, Error::VmmVersion { .. }), "{err}");
        let err = refused(|h| h.devices = vec![DeviceKind::Block, DeviceKind::Rng]);
        assert_eq!(
            err.to_string(),
            "snapshot: devices [Rng] saved, the VM has [Block, Rng]"
        );
        let err = refused(|h| h.memory_mib = 4096);
        assert!(matches!(err, Error::Memory { spec: 4096, .. }), "{err}");
        let err = refused(|h| h.cpus = 2);
        assert!(matches!(err, Error::Cpus { saved: 1, spec: 2 }), "{err}");
    }

    /// A state that checks out but whose parts disagree with its header is refused.
    #[test]
    fn a_state_at_odds_with_its_header_is_refused() {
        let (mut snapshot, mem) = sample();
        snapshot.vcpus.clear();
        let file = tempfile::tempfile().unwrap();
        write(&file, &snapshot, &mem).unwrap();
        let err = read(&file).err().unwrap();
        assert_eq!(
            err.to_string(),
            "snapshot: corrupted: 0 vCPU states for 1 vCPUs"
        );
    }
}
