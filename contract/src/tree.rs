//! A folder's tree as a byte stream: how the guest agent hands a `:rw` volume back to the host
//! (`Request::Export`, docs/agent-protocol.md), so that the host never parses a file system the
//! guest wrote.
//!
//! The stream is a sequence of records, each a type byte and its fields, written with
//! [`crate::codec`] (little-endian; `bytes` = `u32` length + bytes):
//!
//! | type | record | fields |
//! |---|---|---|
//! | 1 | `Dir` | `bytes` path, `u32` mode |
//! | 2 | `File` | `bytes` path, `u32` mode, `u64` size |
//! | 3 | `Data` | `u64` offset, `bytes` data: part of the last `File`'s contents |
//! | 4 | `Symlink` | `bytes` path, `bytes` target |
//! | 0 | `End` | — the last record |
//!
//! A file's contents are its `Data` records (1 to [`MAX_DATA`] bytes each, in increasing,
//! non-overlapping order, within its size); what no record covers is a hole (zeros), so a
//! sparse file travels as its data only. Paths are relative, `/`-separated, made of normal
//! components only (no empty, `.` or `..` component, no NUL), at most [`MAX_PATH`] bytes with
//! components of at most [`MAX_NAME`]; a folder comes before what is in it. Modes are
//! permission bits (at most `0o7777`). A symlink's target is 1 to [`MAX_TARGET`] bytes
//! without NUL, sent as it is: whether it may be kept is the receiver's call.
//!
//! [`TreeDecoder`] checks all of that as the bytes arrive, every length against its cap before
//! anything is taken; anything else is a [`TreeError`], never a panic. It does not check what
//! only the receiver can (duplicates, that a parent was sent as a folder, symlink targets).

use std::fmt;

use crate::codec::{DecodeError, Decoder, Encoder};

/// Longest path, in bytes (Linux's `PATH_MAX` less its NUL).
pub const MAX_PATH: usize = 4095;
/// Longest path component, in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// Longest symlink target, in bytes.
pub const MAX_TARGET: usize = 4095;
/// Largest `Data` record's data.
pub const MAX_DATA: usize = 64 << 10;
/// Largest record: a `Data` record of [`MAX_DATA`] bytes (type, offset, length, data).
pub const MAX_RECORD: usize = 1 + 8 + 4 + MAX_DATA;

mod kind {
    pub const END: u8 = 0;
    pub const DIR: u8 = 1;
    pub const FILE: u8 = 2;
    pub const DATA: u8 = 3;
    pub const SYMLINK: u8 = 4;
}

/// A relative path of normal components (see the module's rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TreePath(Vec<u8>);

impl TreePath {
    /// Checks `bytes` against the rules.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<TreePath, TreeError> {
        let bytes = bytes.into();
        let why = if bytes.is_empty() {
            Some("empty")
        } else if bytes.len() > MAX_PATH {
            Some("longer than 4095 bytes")
        } else if bytes.contains(&0) {
            Some("contains a NUL byte")
        } else if bytes[0] == b'/' {
            Some("absolute")
        } else {
            bytes.split(|&b| b == b'/').find_map(|c| match c {
                b"" => Some("has an empty component"),
                b"." => Some("has a '.' component"),
                b".." => Some("has a '..' component"),
                c if c.len() > MAX_NAME => Some("has a component longer than 255 bytes"),
                _ => None,
            })
        };
        match why {
            Some(why) => Err(TreeError::Path { path: bytes, why }),
            None => Ok(TreePath(bytes)),
        }
    }

    /// `name` in the folder `parent` (the tree's root when `None`).
    pub fn child(parent: Option<&TreePath>, name: &[u8]) -> Result<TreePath, TreeError> {
        match parent {
            None => TreePath::new(name),
            Some(parent) => TreePath::new([&parent.0[..], b"/", name].concat()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The components, first to last.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/')
    }

    /// The folder it is in (`None`: the root) and its last component.
    pub fn split_last(&self) -> (Option<&[u8]>, &[u8]) {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (Some(&self.0[..i]), &self.0[i + 1..]),
            None => (None, &self.0),
        }
    }
}

impl fmt::Display for TreePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    Dir {
        path: TreePath,
        mode: u32,
    },
    /// A regular file of `size` bytes; its `Data` records follow.
    File {
        path: TreePath,
        mode: u32,
        size: u64,
    },
    /// Bytes of the last `File` at `offset`.
    Data {
        offset: u64,
        data: &'a [u8],
    },
    Symlink {
        path: TreePath,
        target: &'a [u8],
    },
    /// Nothing follows.
    End,
}

/// Why a stream was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    /// A record that does not decode: an unknown type, a length over its cap, a bad mode.
    Record(DecodeError),
    /// A path that breaks the rules.
    Path { path: Vec<u8>, why: &'static str },
    /// A symlink target that breaks the rules.
    Target { path: TreePath, why: &'static str },
    /// A `Data` record out of place or out of its file's bounds.
    Data { why: String },
    /// Bytes after `End`, or a stream that stops before it.
    End { why: &'static str },
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::Record(e) => write!(f, "malformed tree record: {e}"),
            TreeError::Path { path, why } => {
                write!(f, "path {:?}: {why}", String::from_utf8_lossy(path))
            }
            TreeError::Target { path, why } => write!(f, "symlink {path}: target {why}"),
            TreeError::Data { why } => write!(f, "file data: {why}"),
            TreeError::End { why } => write!(f, "tree stream {why}"),
        }
    }
}

impl std::error::Error for TreeError {}

impl From<DecodeError> for TreeError {
    fn from(e: DecodeError) -> Self {
        TreeError::Record(e)
    }
}

/// Writes records into a buffer that the sender takes chunks of.
#[derive(Debug, Default)]
pub struct TreeEncoder {
    out: Vec<u8>,
}

impl TreeEncoder {
    pub fn new() -> Self {
        TreeEncoder::default()
    }

    /// Appends `record`. `Data` longer than [`MAX_DATA`] becomes several records; empty `Data`
    /// none.
    pub fn put(&mut self, record: &Record<'_>) {
        let mut e = Encoder::from_vec(std::mem::take(&mut self.out));
        match record {
            Record::Dir { path, mode } => {
                e.put_u8(kind::DIR);
                e.put_bytes(path.as_bytes());
                e.put_u32(*mode);
            }
            Record::File { path, mode, size } => {
                e.put_u8(kind::FILE);
                e.put_bytes(path.as_bytes());
                e.put_u32(*mode);
                e.put_u64(*size);
            }
            Record::Data { offset, data } => {
                let mut at = *offset;
                for piece in data.chunks(MAX_DATA) {
                    e.put_u8(kind::DATA);
                    e.put_u64(at);
                    e.put_bytes(piece);
                    at += piece.len() as u64;
                }
            }
            Record::Symlink { path, target } => {
                e.put_u8(kind::SYMLINK);
                e.put_bytes(path.as_bytes());
                e.put_bytes(target);
            }
            Record::End => e.put_u8(kind::END),
        }
        self.out = e.into_vec();
    }

    /// Bytes written and not taken yet.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Takes up to `max` of the pending bytes, oldest first.
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        let n = max.min(self.out.len());
        let rest = self.out.split_off(n);
        std::mem::replace(&mut self.out, rest)
    }
}

/// Where the decoder is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between entries.
    Entries,
    /// After a `File` or its `Data`: more `Data` may come at `next` or later, below `size`.
    InFile {
        size: u64,
        next: u64,
    },
    Ended,
}

/// Reads a stream as it arrives: [`TreeDecoder::push`] what came, then [`TreeDecoder::next_record`]
/// until it gives `None`; [`TreeDecoder::finish`] once the sender says it is done. It holds at
/// most one partial record ([`MAX_RECORD`] bytes) beyond what was pushed last.
#[derive(Debug)]
pub struct TreeDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    start: usize,
    state: State,
}

impl Default for TreeDecoder {
    fn default() -> Self {
        TreeDecoder {
            buf: Vec::new(),
            start: 0,
            state: State::Entries,
        }
    }
}

impl TreeDecoder {
    pub fn new() -> Self {
        TreeDecoder::default()
    }

    /// Adds bytes that arrived. Bytes after `End` are an error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), TreeError> {
        if self.state == State::Ended && !bytes.is_empty() {
            return Err(TreeError::End {
                why: "goes on after its end record",
            });
        }
        self.buf.drain(..self.start);
        self.start = 0;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next whole record; `None` when more bytes are needed, or after `End`.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, TreeError> {
        if self.state == State::Ended {
            return if self.start < self.buf.len() {
                Err(TreeError::End {
                    why: "goes on after its end record",
                })
            } else {
                Ok(None)
            };
        }
        let mut d = Decoder::new(&self.buf[self.start..]);
        let record = match decode_record(&mut d) {
            Ok(record) => record,
            Err(TreeError::Record(DecodeError::Truncated { .. })) => return Ok(None),
            Err(e) => return Err(e),
        };
        let used = self.buf.len() - self.start - d.rest("rest", usize::MAX)?.len();
        self.state = next_state(self.state, &record)?;
        self.start += used;
        Ok(Some(record))
    }

    /// The sender says the stream is over: it must have ended with `End`, all decoded.
    pub fn finish(&self) -> Result<(), TreeError> {
        if self.state == State::Ended && self.start == self.buf.len() {
            Ok(())
        } else {
            Err(TreeError::End {
                why: "stops before its end record",
            })
        }
    }
}

fn decode_record<'a>(d: &mut Decoder<'a>) -> Result<Record<'a>, TreeError> {
    let path = |d: &mut Decoder<'a>| TreePath::new(d.bytes("path", MAX_PATH)?);
    Ok(match d.u8("record type")? {
        kind::DIR => Record::Dir {
            path: path(d)?,
            mode: mode(d)?,
        },
        kind::FILE => Record::File {
            path: path(d)?,
            mode: mode(d)?,
            size: d.u64("size")?,
        },
        kind::DATA => Record::Data {
            offset: d.u64("offset")?,
            data: d.bytes("data", MAX_DATA)?,
        },
        kind::SYMLINK => {
            let path = path(d)?;
            let target = d.bytes("target", MAX_TARGET)?;
            let why = if target.is_empty() {
                Some("is empty")
            } else if target.contains(&0) {
                Some("contains a NUL byte")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(TreeError::Target { path, why });
            }
            Record::Symlink { path, target }
        }
        kind::END => Record::End,
        other => {
            return Err(TreeError::Record(DecodeError::Invalid {
                field: "record type",
                why: format!("unknown record type {other}"),
            }))
        }
    })
}

fn mode(d: &mut Decoder<'_>) -> Result<u32, TreeError> {
    let mode = d.u32("mode")?;
    if mode > 0o7777 {
        return Err(TreeError::Record(DecodeError::Invalid {
            field: "mode",
            why: format!("{mode:#o} has bits beyond 0o7777"),
        }));
    }
    Ok(mode)
}

/// Where `record` leaves the stream, or why it may not come here.
fn next_state(state: State, record: &Record<'_>) -> Result<State, TreeError> {
    let data_error = |why: String| Err(TreeError::Data { why });
    match record {
        Record::Data { offset, data } => {
            let State::InFile { size, next } = state else {
                return data_error(format!(
                    "data at offset {offset} does not follow a file record"
                ));
            };
            if data.is_empty() {
                return data_error(format!("empty data record at offset {offset}"));
            }
            if *offset < next {
                return data_error(format!(
                    "data at offset {offset} overlaps or precedes data before it (which ends at {next})"
                ));
            }
            match offset.checked_add(data.len() as u64) {
                Some(end) if end <= size => Ok(State::InFile { size, next: end }),
                _ => data_error(format!(
                    "{} bytes at offset {offset} go past the file's size, {size}",
                    data.len()
                )),
            }
        }
        Record::File { size, .. } => Ok(State::InFile {
            size: *size,
            next: 0,
        }),
        Record::Dir { .. } | Record::Symlink { .. } => Ok(State::Entries),
        Record::End => Ok(State::Ended),
    }
}

#[cfg(test)]
mod tests;
