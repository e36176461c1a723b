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

/// Writes `snapshot` and `mem` to `file` (emptied first) and flushes it to disk. Returns the
/// bytes of memory written (the rest are holes).
pub fn write(file: &File, snapshot: &Snapshot, mem: &GuestMemory) -> Result<u64, Error> {
    let state = serde_json::to_vec(snapshot).map_err(|e| io("serialize the state")(e.into()))?;
    let memory_offset = (STATE_OFFSET + state.len() as u64).next_multiple_of(MEMORY_ALIGN);
    let preamble = Preamble {
        state_len: state.len() as u64,
        memory_offset,
        memory_len: memory::len(mem),
    };
    file.set_len(0).map_err(io("empty the file"))?;
    let written = memory::write(file, mem, memory_offset).map_err(io("write guest memory"))?;
    file.write_all_at(&state, STATE_OFFSET)
        .map_err(io("write the state"))?;
    file.set_len(memory_offset + preamble.memory_len)
        .map_err(io("set the file's length"))?;
    let fields = preamble.fields(FORMAT_VERSION);
    let mut head = [0u8; PREAMBLE_LEN];
    head[..FIELDS_LEN].copy_from_slice(&fields);
    head[FIELDS_LEN..].copy_from_slice(&checksum(&fields, &state));
    file.write_all_at(&head, 0)
        .map_err(io("write the preamble"))?;
    file.sync_all().map_err(io("flush the file to disk"))?;
    Ok(written)
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
    let expected_offset = (STATE_OFFSET + preamble.state_len).next_multiple_of(MEMORY_ALIGN);
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
    let snapshot: Snapshot = serde_json::from_slice(&state)
        .map_err(|e| Error::Corrupted(format!("the state does not parse: {e}")))?;
    let memory_mib = u64::from(snapshot.header.memory_mib);
    if preamble.memory_len != memory_mib << 20 {
        return Err(Error::Corrupted(format!(
            "{} bytes of memory for {memory_mib} MiB",
            preamble.memory_len
        )));
    }
    snapshot.check_consistent()?;
    Ok(Loaded {
        snapshot,
        memory_offset: preamble.memory_offset,
    })
}
