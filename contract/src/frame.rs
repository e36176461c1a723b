//! The agent protocol, version [`VERSION`]: what the host says to the guest agent over one
//! connection (vsock port [`crate::AGENT_PORT`]) and what the agent answers.
//!
//! A connection is a stream of frames: `u32` little-endian length of what follows, one type
//! byte, the payload (docs/agent-protocol.md lists every message and its encoding). Requests
//! (host to guest) have types `0x01..`, replies (guest to host) `0x81..`, so one read in the
//! wrong direction is an error rather than a misreading. Every length read from the stream is
//! checked against [`MAX_PAYLOAD`] (and data chunks against [`MAX_CHUNK`]) before anything is
//! allocated, and decoding never panics: anything malformed is a [`FrameError`].

use std::fmt;
use std::io::{self, Read, Write};

use crate::activation::{Activation, MAX_ENTROPY, MAX_HOSTNAME};
use crate::caps::Capabilities;
use crate::codec::{DecodeError, Decoder, Encoder};
use crate::env::EnvVar;
use crate::mount::{Mount, MountKind, MAX_MOUNTS};
use crate::params::GuestParams;
use crate::rlimit::{Rlimit, MAX_RLIMITS};
use crate::seccomp::{Filter, MAX_INSTRUCTIONS};
use crate::status;

/// The protocol version both sides say in their `Hello`.
pub const VERSION: u32 = 8;
/// Largest payload of any frame (the type byte not counted).
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest `Stdin`, `Stdout`, `Stderr` or `TreeData` chunk.
pub const MAX_CHUNK: usize = 64 << 10;
/// Bytes before the payload: the length and the type byte.
pub const HEADER_LEN: usize = 5;

/// Host to guest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Request {
    /// First frame of every connection.
    Hello { version: u32 },
    /// Run a command (once per connection, after `Hello`).
    Exec(Exec),
    /// Bytes for the command's stdin (at most [`MAX_CHUNK`]).
    Stdin(Vec<u8>),
    /// End of the command's stdin.
    StdinEof,
    /// Send this signal to the command's process group.
    Signal(i32),
    /// Kill every process, make the disks clean and end the VM with status 0.
    Poweroff,
    /// Send the tree of this guest folder (once per connection, after `Hello`), as
    /// `TreeData` chunks of a [`crate::tree`] stream and `TreeEnd`.
    Export { path: Vec<u8> },
    /// Makes the guest waiting at its template point this VM (crate::activation): the first
    /// request of the first connection, answered `Hello` once the guest is set up, and
    /// refused anywhere else.
    Activate(Box<Activation>),
    /// The command's terminal has this size now (commands run with `tty` only).
    Resize(WinSize),
    /// Set the guest's wall clock to the host's (seconds and nanoseconds since the Unix
    /// epoch; nanoseconds of a second or more are refused by the guest's kernel), answered
    /// `ClockSet`: after a pause, on a backend whose guest clock stood still
    /// (once per connection, after `Hello`).
    SetClock { secs: u64, nanos: u32 },
}

/// What to run, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Exec {
    /// argv, argv[0] included; argv[0] is looked up in the command's PATH.
    pub argv: Vec<Vec<u8>>,
    /// `NAME=VALUE` entries, added to (and overriding) the agent's base environment.
    pub env: Vec<Vec<u8>>,
    /// Working directory; the user's home when absent.
    pub cwd: Option<Vec<u8>>,
    /// Whether `Stdin` frames feed the command; without, its stdin is /dev/null.
    pub stdin: bool,
    /// Kill the command's process group after this long.
    pub timeout_ms: Option<u64>,
    /// Run it as a container's process rather than as the guest's user (see [`Container`]).
    /// (Boxed: the largest request as it is.)
    pub container: Option<Box<Container>>,
    /// Run it on a terminal of this size: its stdin, stdout and stderr are the terminal, whose
    /// output comes as `Stdout` frames (no `Stderr`), and `Resize` changes its size.
    pub tty: Option<WinSize>,
}

/// A container's process: in a mount namespace of its own whose root is `root` (a guest
/// folder, pivot_root'ed into, with /proc, /sys, a minimal /dev and `mounts` mounted in it), as `uid`,
/// `gid` and `groups`, with `rlimits` set, its `capabilities` (else those of its uid), and the
/// request's environment only (none of the agent's). While it runs, the agent reports the
/// guest kernel's OOM kills (`OomKilled`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Container {
    pub root: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Resource limits set before it runs (at most one per resource, [`MAX_RLIMITS`]).
    pub rlimits: Vec<Rlimit>,
    /// File systems of its own, mounted in this order after /dev (at most [`MAX_MOUNTS`],
    /// each [`Mount::check`]ed).
    pub mounts: Vec<Mount>,
    /// Its capability sets ([`Capabilities::check`]ed); without, those of its uid.
    pub capabilities: Option<Capabilities>,
    /// `PR_SET_NO_NEW_PRIVS`: nothing it executes gains privileges (setuid bits, file
    /// capabilities).
    pub no_new_privileges: bool,
    /// Its seccomp filter, installed last.
    pub seccomp: Option<Filter>,
}

/// A terminal's size, in character cells.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct WinSize {
    pub rows: u16,
    pub cols: u16,
}

/// Guest to host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Reply {
    /// The answer to the host's `Hello`; also what the agent sends on the ready connection.
    Hello { version: u32 },
    /// The command runs, as process `pid` (its process group and session id too).
    Started { pid: i32 },
    /// A chunk of the command's stdout (at most [`MAX_CHUNK`]).
    Stdout(Vec<u8>),
    /// A chunk of the command's stderr (at most [`MAX_CHUNK`]).
    Stderr(Vec<u8>),
    /// Final: the command exited with this code.
    Exited(i32),
    /// Final: the command was killed by this signal.
    Signaled(i32),
    /// Final: the timeout passed and the command's process group was killed.
    TimedOut { timeout_ms: u64 },
    /// Final: the request could not be served.
    Error { kind: ErrorKind, message: String },
    /// The next bytes of the exported tree's stream (at most [`MAX_CHUNK`]).
    TreeData(Vec<u8>),
    /// Final: the exported tree's stream is complete.
    TreeEnd,
    /// While the command runs: the guest's kernel killed process `pid` for lack of
    /// memory; `seq` numbers the kernel log's record of it (the same kill has the same number
    /// on every connection, a later one a larger number).
    OomKilled { seq: u64, pid: i32 },
    /// Final: the guest's wall clock is set (`SetClock`).
    ClockSet,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ErrorKind {
    /// The command was not found (a shell's 127).
    NotFound,
    /// The command was found but is not executable (a shell's 126).
    NotExecutable,
    /// The command could not be started for another reason (126).
    ExecFailed,
    /// The working directory could not be entered.
    BadCwd,
    /// A malformed frame or a message out of turn.
    Protocol,
    /// The host's `Hello` named a version this agent does not speak.
    Version,
    /// The folder to export could not be read.
    Export,
    /// The guest could not be set up as the `Activate` asked (a disk that would not mount,
    /// say); the guest then ends.
    Activate,
}

impl ErrorKind {
    const ALL: [ErrorKind; 8] = [
        ErrorKind::NotFound,
        ErrorKind::NotExecutable,
        ErrorKind::ExecFailed,
        ErrorKind::BadCwd,
        ErrorKind::Protocol,
        ErrorKind::Version,
        ErrorKind::Export,
        ErrorKind::Activate,
    ];

    fn code(self) -> u8 {
        match self {
            ErrorKind::NotFound => 1,
            ErrorKind::NotExecutable => 2,
            ErrorKind::ExecFailed => 3,
            ErrorKind::BadCwd => 4,
            ErrorKind::Protocol => 5,
            ErrorKind::Version => 6,
            ErrorKind::Export => 7,
            ErrorKind::Activate => 8,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The exit status a shell would give for this failure: 127 for a command not found, 126
    /// for one that could not be run; `None` for failures that are not the command's.
    pub fn shell_status(self) -> Option<u8> {
        match self {
            ErrorKind::NotFound => Some(status::NOT_FOUND),
            ErrorKind::NotExecutable | ErrorKind::ExecFailed | ErrorKind::BadCwd => {
                Some(status::CANNOT_RUN)
            }
            ErrorKind::Protocol | ErrorKind::Version | ErrorKind::Export | ErrorKind::Activate => {
                None
            }
        }
    }
}

/// A frame that could not be read or written.
#[derive(Debug)]
pub enum FrameError {
    /// The stream failed.
    Io(io::Error),
    /// The stream ended inside a frame.
    Truncated,
    /// The length field is 0 (a frame has at least its type byte).
    Empty,
    /// A payload over [`MAX_PAYLOAD`], a data chunk over [`MAX_CHUNK`], or a field's length
    /// over what a payload can hold.
    TooLarge { len: usize, max: usize },
    /// A type byte this direction does not have.
    UnknownType(u8),
    /// The payload does not encode what its type says.
    Malformed { kind: &'static str, why: String },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "agent connection: {e}"),
            FrameError::Truncated => write!(f, "agent connection ended inside a frame"),
            FrameError::Empty => write!(f, "agent frame of length 0"),
            FrameError::TooLarge { len, max } => {
                write!(f, "agent frame payload of {len} bytes (at most {max})")
            }
            FrameError::UnknownType(t) => write!(f, "agent frame of unknown type {t:#04x}"),
            FrameError::Malformed { kind, why } => write!(f, "malformed agent {kind} frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

mod kind {
    pub const HELLO: u8 = 0x01;
    pub const EXEC: u8 = 0x02;
    pub const STDIN: u8 = 0x03;
    pub const STDIN_EOF: u8 = 0x04;
    pub const SIGNAL: u8 = 0x05;
    pub const POWEROFF: u8 = 0x06;
    pub const EXPORT: u8 = 0x07;
    pub const ACTIVATE: u8 = 0x08;
    pub const RESIZE: u8 = 0x09;
    pub const SET_CLOCK: u8 = 0x0a;

    pub const R_HELLO: u8 = 0x81;
    pub const STARTED: u8 = 0x82;
    pub const STDOUT: u8 = 0x83;
    pub const STDERR: u8 = 0x84;
    pub const EXITED: u8 = 0x85;
    pub const SIGNALED: u8 = 0x86;
    pub const TIMED_OUT: u8 = 0x87;
    pub const ERROR: u8 = 0x88;
    pub const TREE_DATA: u8 = 0x89;
    pub const TREE_END: u8 = 0x8a;
    pub const OOM_KILLED: u8 = 0x8b;
    pub const CLOCK_SET: u8 = 0x8c;
}

impl Request {
    /// The whole frame, length prefix included. Errors only for a message over the bounds.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = payload_encoder();
        let kind = match self {
            Request::Hello { version } => {
                out.put_u32(*version);
                kind::HELLO
            }
            Request::Exec(exec) => {
                if let Some(container) = &exec.container {
                    if container.groups.len() > MAX_GROUPS {
                        return Err(FrameError::TooLarge {
                            len: container.groups.len(),
                            max: MAX_GROUPS,
                        });
                    }
                    if container.rlimits.len() > MAX_RLIMITS {
                        return Err(FrameError::TooLarge {
                            len: container.rlimits.len(),
                            max: MAX_RLIMITS,
                        });
                    }
                    if container.mounts.len() > MAX_MOUNTS {
                        return Err(FrameError::TooLarge {
                            len: container.mounts.len(),
                            max: MAX_MOUNTS,
                        });
                    }
                }
                put_list(&mut out, &exec.argv);
                put_list(&mut out, &exec.env);
                put_option(&mut out, exec.cwd.as_ref(), |out, cwd| out.put_bytes(cwd));
                out.put_bool(exec.stdin);
                put_option(&mut out, exec.timeout_ms.as_ref(), |out, ms| {
                    out.put_u64(*ms)
                });
                put_option(&mut out, exec.container.as_ref(), |out, container| {
                    out.put_bytes(&container.root);
                    out.put_u32(container.uid);
                    out.put_u32(container.gid);
                    out.put_u32(container.groups.len() as u32);
                    for group in &container.groups {
                        out.put_u32(*group);
                    }
                    out.put_u32(container.rlimits.len() as u32);
                    for limit in &container.rlimits {
                        out.put_u32(limit.resource);
                        out.put_u64(limit.soft);
                        out.put_u64(limit.hard);
                    }
                    out.put_u32(container.mounts.len() as u32);
                    for mount in &container.mounts {
                        put_mount(out, mount);
                    }
                    put_option(out, container.capabilities.as_ref(), |out, caps| {
                        for mask in [
                            caps.bounding,
                            caps.effective,
                            caps.permitted,
                            caps.inheritable,
                            caps.ambient,
                        ] {
                            out.put_u64(mask);
                        }
                    });
                    out.put_bool(container.no_new_privileges);
                    put_option(out, container.seccomp.as_ref(), |out, filter| {
                        out.put_bytes(filter.as_bytes())
                    });
                });
                put_option(&mut out, exec.tty.as_ref(), put_winsize);
                kind::EXEC
            }
            Request::Stdin(data) => {
                out.put_raw(data);
                kind::STDIN
            }
            Request::StdinEof => kind::STDIN_EOF,
            Request::Signal(signal) => {
                out.put_i32(*signal);
                kind::SIGNAL
            }
            Request::Poweroff => kind::POWEROFF,
            Request::Export { path } => {
                out.put_bytes(path);
                kind::EXPORT
            }
            Request::Activate(activation) => {
                out.put_bytes(activation.params.to_string().as_bytes());
                let entries: Vec<Vec<u8>> = activation.env.iter().map(EnvVar::entry).collect();
                put_list(&mut out, &entries);
                out.put_bytes(&activation.entropy);
                out.put_u64(activation.clock.0);
                out.put_u32(activation.clock.1);
                out.put_bytes(activation.hostname.as_bytes());
                out.put_bytes(&activation.mac);
                kind::ACTIVATE
            }
            Request::Resize(size) => {
                put_winsize(&mut out, size);
                kind::RESIZE
            }
            Request::SetClock { secs, nanos } => {
                out.put_u64(*secs);
                out.put_u32(*nanos);
                kind::SET_CLOCK
            }
        };
        finish_frame(out, kind)
    }

    /// Decodes the first frame of `buf`: `Ok(None)` while `buf` holds only part of it,
    /// otherwise the request and how many bytes of `buf` it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Request, usize)>, FrameError> {
        let Some(raw) = split_frame(buf)? else {
            return Ok(None);
        };
        let request = raw.decode("request", |kind, d| {
            Ok(Some(match kind {
                kind::HELLO => Request::Hello {
                    version: d.u32("version")?,
                },
                kind::EXEC => Request::Exec(Exec {
                    argv: list(d, "argv")?,
                    env: list(d, "env")?,
                    cwd: option(d, "cwd", |d| Ok(d.bytes("cwd", MAX_PAYLOAD)?.to_vec()))?,
                    stdin: d.bool("stdin")?,
                    timeout_ms: option(d, "timeout_ms", |d| d.u64("timeout_ms"))?,
                    container: option(d, "container", container)?.map(Box::new),
                    tty: option(d, "tty", winsize)?,
                }),
                kind::STDIN => Request::Stdin(d.rest("stdin", MAX_CHUNK)?.to_vec()),
                kind::STDIN_EOF => Request::StdinEof,
                kind::SIGNAL => Request::Signal(d.i32("signal")?),
                kind::POWEROFF => Request::Poweroff,
                kind::EXPORT => Request::Export {
                    path: d.bytes("path", MAX_PAYLOAD)?.to_vec(),
                },
                kind::ACTIVATE => Request::Activate(Box::new(activation(d)?)),
                kind::RESIZE => Request::Resize(winsize(d)?),
                kind::SET_CLOCK => Request::SetClock {
                    secs: d.u64("seconds")?,
                    nanos: d.u32("nanoseconds")?,
                },
                _ => return Ok(None),
            }))
        })?;
        Ok(Some((request, raw.len)))
    }
}

impl Reply {
    /// The whole frame, length prefix included. Errors only for a message over the bounds.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = payload_encoder();
        let kind = match self {
            Reply::Hello { version } => {
                out.put_u32(*version);
                kind::R_HELLO
            }
            Reply::Started { pid } => {
                out.put_i32(*pid);
                kind::STARTED
            }
            Reply::Stdout(data) => {
                out.put_raw(data);
                kind::STDOUT
            }
            Reply::Stderr(data) => {
                out.put_raw(data);
                kind::STDERR
            }
            Reply::Exited(code) => {
                out.put_i32(*code);
                kind::EXITED
            }
            Reply::Signaled(signal) => {
                out.put_i32(*signal);
                kind::SIGNALED
            }
            Reply::TimedOut { timeout_ms } => {
                out.put_u64(*timeout_ms);
                kind::TIMED_OUT
            }
            Reply::Error { kind, message } => {
                out.put_u8(kind.code());
                out.put_str(message);
                kind::ERROR
            }
            Reply::TreeData(data) => {
                out.put_raw(data);
                kind::TREE_DATA
            }
            Reply::TreeEnd => kind::TREE_END,
            Reply::OomKilled { seq, pid } => {
                out.put_u64(*seq);
                out.put_i32(*pid);
                kind::OOM_KILLED
            }
            Reply::ClockSet => kind::CLOCK_SET,
        };
        finish_frame(out, kind)
    }

    /// Decodes the first frame of `buf`: `Ok(None)` while `buf` holds only part of it,
    /// otherwise the reply and how many bytes of `buf` it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, FrameError> {
        let Some(raw) = split_frame(buf)? else {
            return Ok(None);
        };
        let reply = raw.decode("reply", |kind, d| {
            Ok(Some(match kind {
                kind::R_HELLO => Reply::Hello {
                    version: d.u32("version")?,
                },
                kind::STARTED => Reply::Started { pid: d.i32("pid")? },
                kind::STDOUT => Reply::Stdout(d.rest("stdout", MAX_CHUNK)?.to_vec()),
                kind::STDERR => Reply::Stderr(d.rest("stderr", MAX_CHUNK)?.to_vec()),
                kind::EXITED => Reply::Exited(d.i32("code")?),
                kind::SIGNALED => Reply::Signaled(d.i32("signal")?),
                kind::TIMED_OUT => Reply::TimedOut {
                    timeout_ms: d.u64("timeout_ms")?,
                },
                kind::ERROR => {
                    let code = d.u8("error kind")?;
                    let kind = ErrorKind::from_code(code).ok_or_else(|| DecodeError::Invalid {
                        field: "error kind",
                        why: format!("unknown error kind {code}"),
                    })?;
                    let message = d.str("error message", MAX_PAYLOAD)?.to_string();
                    Reply::Error { kind, message }
                }
                kind::TREE_DATA => Reply::TreeData(d.rest("tree data", MAX_CHUNK)?.to_vec()),
                kind::TREE_END => Reply::TreeEnd,
                kind::OOM_KILLED => Reply::OomKilled {
                    seq: d.u64("seq")?,
                    pid: d.i32("pid")?,
                },
                kind::CLOCK_SET => Reply::ClockSet,
                _ => return Ok(None),
            }))
        })?;
        Ok(Some((reply, raw.len)))
    }

    /// Whether this reply ends the connection's exchange (nothing follows it).
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Reply::Exited(_)
                | Reply::Signaled(_)
                | Reply::TimedOut { .. }
                | Reply::Error { .. }
                | Reply::TreeEnd
                | Reply::ClockSet
        )
    }
}

/// Writes one request frame.
pub fn write_request(w: &mut impl Write, request: &Request) -> io::Result<()> {
    w.write_all(&request.encode()?)
}

/// Writes one reply frame.
pub fn write_reply(w: &mut impl Write, reply: &Reply) -> io::Result<()> {
    w.write_all(&reply.encode()?)
}

/// Reads one request; `Ok(None)` at a clean end of stream (between frames).
pub fn read_request(r: &mut impl Read) -> Result<Option<Request>, FrameError> {
    read_frame(r)?
        .map(|frame| Request::decode(&frame).map(|decoded| decoded.expect("a whole frame").0))
        .transpose()
}

/// Reads one reply; `Ok(None)` at a clean end of stream (between frames).
pub fn read_reply(r: &mut impl Read) -> Result<Option<Reply>, FrameError> {
    read_frame(r)?
        .map(|frame| Reply::decode(&frame).map(|decoded| decoded.expect("a whole frame").0))
        .transpose()
}

/// Reads one whole frame (length included), checking its length before reading the rest.
fn read_frame(r: &mut impl Read) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_field = [0u8; 4];
    if !read_exact_or_eof(r, &mut len_field)? {
        return Ok(None);
    }
    let len = frame_len(&len_field)?;
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&len_field);
    if !read_exact_or_eof(r, &mut frame[4..])? {
        return Err(FrameError::Truncated);
    }
    Ok(Some(frame))
}

/// Fills `buf`; `Ok(false)` at end of stream before the first byte.
fn read_exact_or_eof(r: &mut impl Read, buf: &mut [u8]) -> Result<bool, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(true)
}

/// The checked length field of a frame header: type byte plus payload.
fn frame_len(header: &[u8]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len - 1 > MAX_PAYLOAD {
        return Err(FrameError::TooLarge {
            len: len - 1,
            max: MAX_PAYLOAD,
        });
    }
    Ok(len)
}

/// A whole frame found at the start of a buffer.
struct RawFrame<'a> {
    kind: u8,
    payload: &'a [u8],
    /// Bytes of the buffer it takes, length field included.
    len: usize,
}

/// The first frame in `buf`, once it is all there.
fn split_frame(buf: &[u8]) -> Result<Option<RawFrame<'_>>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = frame_len(buf)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some(RawFrame {
        kind: buf[4],
        payload: &buf[HEADER_LEN..4 + len],
        len: 4 + len,
    }))
}

impl RawFrame<'_> {
    /// Decodes the payload with `decode`, which gives `None` for a type byte it does not know;
    /// `what` (request or reply) names the direction in errors.
    fn decode<T>(
        &self,
        what: &'static str,
        decode: impl FnOnce(u8, &mut Decoder<'_>) -> Result<Option<T>, DecodeError>,
    ) -> Result<T, FrameError> {
        let bad = |e: DecodeError| match e {
            DecodeError::TooLong { len, max, .. } => FrameError::TooLarge { len, max },
            e => FrameError::Malformed {
                kind: what,
                why: e.to_string(),
            },
        };
        let mut d = Decoder::new(self.payload);
        let value = decode(self.kind, &mut d)
            .map_err(bad)?
            .ok_or(FrameError::UnknownType(self.kind))?;
        d.finish().map_err(bad)?;
        Ok(value)
    }
}

/// An encoder with room for the frame header, which [`finish_frame`] fills in.
fn payload_encoder() -> Encoder {
    Encoder::from_vec(vec![0; HEADER_LEN])
}

/// The whole frame of a payload from [`payload_encoder`], or an error if it is over its bound.
fn finish_frame(out: Encoder, kind: u8) -> Result<Vec<u8>, FrameError> {
    let mut frame = out.into_vec();
    let payload = frame.len() - HEADER_LEN;
    let max = match kind {
        kind::STDIN | kind::STDOUT | kind::STDERR | kind::TREE_DATA => MAX_CHUNK,
        _ => MAX_PAYLOAD,
    };
    if payload > max {
        return Err(FrameError::TooLarge { len: payload, max });
    }
    let len = (payload + 1) as u32;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    frame[4] = kind;
    Ok(frame)
}

/// A count, then each item as [`Encoder::put_bytes`] writes it.
/// Most supplementary groups of a container's process (the kernel's `NGROUPS_MAX`).
pub const MAX_GROUPS: usize = 65536;
/// Bytes of one encoded [`Rlimit`]: its resource, soft and hard limits.
const RLIMIT_LEN: usize = 4 + 8 + 8;

fn put_winsize(out: &mut Encoder, size: &WinSize) {
    out.put_u32(u32::from(size.rows));
    out.put_u32(u32::from(size.cols));
}

fn winsize(d: &mut Decoder<'_>) -> Result<WinSize, DecodeError> {
    let cells = |d: &mut Decoder<'_>, field| {
        let n = d.u32(field)?;
        u16::try_from(n).map_err(|_| DecodeError::Invalid {
            field,
            why: format!("{n} is over 65535"),
        })
    };
    Ok(WinSize {
        rows: cells(d, "rows")?,
        cols: cells(d, "cols")?,
    })
}

fn container(d: &mut Decoder<'_>) -> Result<Container, DecodeError> {
    let root = d.bytes("container root", MAX_PAYLOAD)?.to_vec();
    let uid = d.u32("uid")?;
    let gid = d.u32("gid")?;
    let count = d.count("groups", MAX_GROUPS, 4)?;
    let groups = (0..count)
        .map(|_| d.u32("group"))
        .collect::<Result<_, _>>()?;
    let count = d.count("rlimits", MAX_RLIMITS, RLIMIT_LEN)?;
    let rlimits = (0..count)
        .map(|_| {
            Ok(Rlimit {
                resource: d.u32("rlimit resource")?,
                soft: d.u64("rlimit soft")?,
                hard: d.u64("rlimit hard")?,
            })
        })
        .collect::<Result<_, _>>()?;
    // Each takes at least its destination's length, kind, source's length and flags.
    let count = d.count("mounts", MAX_MOUNTS, 4 + 1 + 4 + 1)?;
    let mounts = (0..count).map(|_| mount(d)).collect::<Result<_, _>>()?;
    let capabilities = option(d, "capabilities", capabilities)?;
    let no_new_privileges = d.bool("no_new_privileges")?;
    let seccomp = option(d, "seccomp", |d| {
        let bytes = d.bytes("seccomp", MAX_INSTRUCTIONS * 8)?;
        Filter::from_bytes(bytes).ok_or_else(|| DecodeError::Invalid {
            field: "seccomp",
            why: "is not whole filter instructions".into(),
        })
    })?;
    Ok(Container {
        root,
        uid,
        gid,
        groups,
        rlimits,
        mounts,
        capabilities,
        no_new_privileges,
        seccomp,
    })
}

fn capabilities(d: &mut Decoder<'_>) -> Result<Capabilities, DecodeError> {
    let caps = Capabilities {
        bounding: d.u64("bounding capabilities")?,
        effective: d.u64("effective capabilities")?,
        permitted: d.u64("permitted capabilities")?,
        inheritable: d.u64("inheritable capabilities")?,
        ambient: d.u64("ambient capabilities")?,
    };
    caps.check().map_err(|e| DecodeError::Invalid {
        field: e.set,
        why: e.to_string(),
    })?;
    Ok(caps)
}

/// The type byte of a [`MountKind`].
const MOUNT_BIND: u8 = 0;
const MOUNT_TMPFS: u8 = 1;
const MOUNT_MASK: u8 = 2;
const MOUNT_READ_ONLY: u8 = 3;

fn put_mount(out: &mut Encoder, mount: &Mount) {
    out.put_bytes(&mount.destination);
    match &mount.kind {
        MountKind::Bind { source } => {
            out.put_u8(MOUNT_BIND);
            out.put_bytes(source);
        }
        MountKind::Tmpfs { options } => {
            out.put_u8(MOUNT_TMPFS);
            out.put_bytes(options);
        }
        // Nothing of their own: an empty field, as every kind has one.
        MountKind::Mask => {
            out.put_u8(MOUNT_MASK);
            out.put_bytes(&[]);
        }
        MountKind::ReadOnly => {
            out.put_u8(MOUNT_READ_ONLY);
            out.put_bytes(&[]);
        }
    }
    out.put_u8(mount.flags());
}

/// A [`Mount`], checked as the agent takes it.
fn mount(d: &mut Decoder<'_>) -> Result<Mount, DecodeError> {
    let invalid = |why: String| DecodeError::Invalid {
        field: "mount",
        why,
    };
    let destination = d.bytes("mount destination", MAX_PAYLOAD)?.to_vec();
    let kind = match d.u8("mount kind")? {
        MOUNT_BIND => MountKind::Bind {
            source: d.bytes("mount source", MAX_PAYLOAD)?.to_vec(),
        },
        MOUNT_TMPFS => MountKind::Tmpfs {
            options: d.bytes("tmpfs options", MAX_PAYLOAD)?.to_vec(),
        },
        kind @ (MOUNT_MASK | MOUNT_READ_ONLY) => {
            // Empty: a mask or a read-only path has no source or options.
            d.bytes("mount field", 0)?;
            if kind == MOUNT_MASK {
                MountKind::Mask
            } else {
                MountKind::ReadOnly
            }
        }
        other => return Err(invalid(format!("unknown kind {other}"))),
    };
    let mut mount = Mount {
        destination,
        kind,
        ..Mount::default()
    };
    let flags = d.u8("mount flags")?;
    if !mount.set_flags(flags) {
        return Err(invalid(format!("unknown flags {flags:#04x}")));
    }
    mount.check().map_err(|e| invalid(e.to_string()))?;
    Ok(mount)
}

/// An [`Activation`], checked as the guest takes it.
fn activation(d: &mut Decoder<'_>) -> Result<Activation, DecodeError> {
    let invalid = |field, why: String| DecodeError::Invalid { field, why };
    let params = d.str("params", MAX_PAYLOAD)?;
    let params = GuestParams::parse(params).map_err(|e| invalid("params", e.to_string()))?;
    let env = list(d, "env")?
        .iter()
        .map(|entry| EnvVar::parse(entry))
        .collect::<Result<_, _>>()
        .map_err(|e| invalid("env", e.to_string()))?;
    let activation = Activation {
        params,
        env,
        entropy: d.bytes("entropy", MAX_ENTROPY)?.to_vec(),
        clock: (d.u64("clock")?, d.u32("clock nanoseconds")?),
        hostname: d.str("hostname", MAX_HOSTNAME)?.to_string(),
        mac: d
            .bytes("mac", 6)?
            .try_into()
            .map_err(|_| invalid("mac", "not 6 bytes".into()))?,
    };
    activation
        .validate()
        .map_err(|e| invalid("activation", e.to_string()))?;
    Ok(activation)
}

fn put_list(out: &mut Encoder, items: &[Vec<u8>]) {
    out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
    for item in items {
        out.put_bytes(item);
    }
}

fn list(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<Vec<u8>>, DecodeError> {
    // Each item takes at least its 4-byte length.
    let count = d.count(field, MAX_PAYLOAD, 4)?;
    (0..count)
        .map(|_| d.bytes(field, MAX_PAYLOAD).map(<[u8]>::to_vec))
        .collect()
}

/// A flag byte, then the value when there is one.
fn put_option<T>(out: &mut Encoder, value: Option<&T>, put: impl FnOnce(&mut Encoder, &T)) {
    out.put_bool(value.is_some());
    if let Some(v) = value {
        put(out, v);
    }
}

fn option<'a, T>(
    d: &mut Decoder<'a>,
    field: &'static str,
    get: impl FnOnce(&mut Decoder<'a>) -> Result<T, DecodeError>,
) -> Result<Option<T>, DecodeError> {
    if d.bool(field)? {
        get(d).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests() -> Vec<Request> {
        vec![
            Request::Hello { version: VERSION },
            Request::Exec(Exec {
                argv: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo \xff".to_vec()],
                env: vec![b"A=1".to_vec(), b"EMPTY=".to_vec()],
                cwd: Some(b"/tmp".to_vec()),
                stdin: true,
                timeout_ms: Some(u64::MAX),
                container: Some(Box::new(Container {
                    root: b"/run/container".to_vec(),
                    uid: 0,
                    gid: u32::MAX,
                    groups: vec![10, 1000],
                    rlimits: vec![
                        Rlimit {
                            resource: 7,
                            soft: 1024,
                            hard: 1024,
                        },
                        // Not checked on the wire: the agent refuses it when it starts.
                        Rlimit {
                            resource: u32::MAX,
                            soft: u64::MAX,
                            hard: 0,
                        },
                    ],
                    mounts: vec![
                        Mount {
                            destination: b"/etc/hosts".to_vec(),
                            kind: MountKind::Bind {
                                source: b"/run/container-mounts/0/hosts".to_vec(),
                            },
                            read_only: true,
                            nosuid: true,
                            nodev: false,
                            noexec: true,
                        },
                        Mount {
                            destination: b"/scratch".to_vec(),
                            kind: MountKind::Tmpfs {
                                options: b"size=1m".to_vec(),
                            },
                            nodev: true,
                            ..Mount::default()
                        },
                        Mount {
                            destination: b"/proc/kcore".to_vec(),
                            kind: MountKind::Mask,
                            ..Mount::default()
                        },
                        Mount {
                            destination: b"/proc/sys".to_vec(),
                            kind: MountKind::ReadOnly,
                            ..Mount::default()
                        },
                    ],
                    capabilities: Some(Capabilities {
                        bounding: crate::caps::ALL,
                        effective: 1 << 21,
                        permitted: 1 << 21 | 1,
                        inheritable: 0,
                        ambient: 1,
                    }),
                    no_new_privileges: true,
                    seccomp: Filter::new(&[libc::sock_filter {
                        code: 0x06,
                        jt: 0,
                        jf: 0,
                        k: 0x7fff_0000,
                    }]),
                })),
                tty: Some(WinSize {
                    rows: 24,
                    cols: u16::MAX,
                }),
            }),
            Request::Exec(Exec::default()),
            Request::Resize(WinSize {
                rows: 50,
                cols: 132,
            }),
            Request::Stdin(vec![7; MAX_CHUNK]),
            Request::Stdin(Vec::new()),
            Request::StdinEof,
            Request::Signal(15),
            Request::Signal(-1),
            Request::Poweroff,
            Request::Export {
                path: b"/app".to_vec(),
            },
            Request::Activate(Box::new(Activation {
                params: GuestParams::parse(
                    "nodeos.console=pipe nodeos.upper=/dev/vdb nodeos.vol=/dev/vdc:/my%20app:rw",
                )
                .unwrap(),
                env: vec![
                    EnvVar::new("npm_config_registry", "http://me:pw@10.0.2.2:4873/").unwrap(),
                    EnvVar::new("EMPTY", "").unwrap(),
                ],
                entropy: vec![0xa5; MAX_ENTROPY],
                clock: (u64::MAX, 999_999_999),
                hostname: "nodeos-7f3a".into(),
                mac: [0x02, 0x7f, 0x3a, 0, 0, 1],
            })),
            Request::SetClock {
                secs: u64::MAX,
                nanos: 999_999_999,
            },
        ]
    }

    fn replies() -> Vec<Reply> {
        vec![
            Reply::Hello { version: VERSION },
            Reply::Started { pid: 4242 },
            Reply::Stdout(b"out\n".to_vec()),
            Reply::Stderr(vec![0; MAX_CHUNK]),
            Reply::Exited(0),
            Reply::Exited(-3),
            Reply::Signaled(9),
            Reply::TimedOut { timeout_ms: 1500 },
            Reply::TreeData(vec![1; MAX_CHUNK]),
            Reply::TreeData(Vec::new()),
            Reply::TreeEnd,
            Reply::OomKilled {
                seq: u64::MAX,
                pid: 212,
            },
            Reply::ClockSet,
            Reply::Error {
                kind: ErrorKind::NotFound,
                message: "nope: No such file or directory".into(),
            },
        ]
        .into_iter()
        .chain(ErrorKind::ALL.into_iter().map(|kind| Reply::Error {
            kind,
            message: String::new(),
        }))
        .collect()
    }

    #[test]
    fn requests_round_trip_through_a_stream() {
        let mut stream = Vec::new();
        for request in requests() {
            write_request(&mut stream, &request).unwrap();
        }
        let mut reader = &stream[..];
        for request in requests() {
            assert_eq!(read_request(&mut reader).unwrap(), Some(request));
        }
        assert_eq!(read_request(&mut reader).unwrap(), None);
    }

    #[test]
    fn replies_round_trip_through_a_stream() {
        let mut stream = Vec::new();
        for reply in replies() {
            write_reply(&mut stream, &reply).unwrap();
        }
        let mut reader = &stream[..];
        for reply in replies() {
            assert_eq!(read_reply(&mut reader).unwrap(), Some(reply));
        }
        assert_eq!(read_reply(&mut reader).unwrap(), None);
    }

    #[test]
    fn decode_waits_for_a_whole_frame() {
        let frame = Request::Signal(2).encode().unwrap();
        for cut in 0..frame.len() {
            assert!(Request::decode(&frame[..cut]).unwrap().is_none(), "{cut}");
        }
        let mut two = frame.clone();
        two.extend_from_slice(&Request::StdinEof.encode().unwrap());
        let (first, used) = Request::decode(&two).unwrap().unwrap();
        assert_eq!((first, used), (Request::Signal(2), frame.len()));
        let (second, _) = Request::decode(&two[used..]).unwrap().unwrap();
        assert_eq!(second, Request::StdinEof);
    }

    /// An `Activate` frame of these fields, checked or not.
    fn activate(params: &str, entry: &[u8], entropy: usize, nanos: u32, host: &str) -> Vec<u8> {
        let mut out = crate::codec::Encoder::new();
        out.put_bytes(params.as_bytes());
        put_list(&mut out, &[entry.to_vec()]);
        out.put_bytes(&vec![1; entropy]);
        out.put_u64(0);
        out.put_u32(nanos);
        out.put_bytes(host.as_bytes());
        frame(kind::ACTIVATE, &out.into_vec())
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = ((payload.len() + 1) as u32).to_le_bytes().to_vec();
        f.push(kind);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn lengths_are_checked_before_the_payload_arrives() {
        let huge = ((MAX_PAYLOAD + 2) as u32).to_le_bytes();
        assert!(matches!(
            Request::decode(&huge),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            read_reply(&mut &u32::MAX.to_le_bytes()[..]),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            Request::decode(&[0, 0, 0, 0]),
            Err(FrameError::Empty)
        ));
        // The largest allowed payload is fine, and a chunk is bounded tighter.
        let mut exec = frame(kind::EXEC, &[0; MAX_PAYLOAD]);
        assert!(Request::decode(&exec).is_err()); // not a valid Exec, but not TooLarge
        exec.truncate(4);
        assert!(Request::decode(&exec).unwrap().is_none());
        assert!(matches!(
            Reply::decode(&frame(kind::STDOUT, &[0; MAX_CHUNK + 1])),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(matches!(
            Request::Stdin(vec![0; MAX_CHUNK + 1]).encode(),
            Err(FrameError::TooLarge { .. })
        ));
        let long_exec = Request::Exec(Exec {
            argv: vec![vec![b'a'; MAX_PAYLOAD]],
            ..Exec::default()
        });
        assert!(matches!(
            long_exec.encode(),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let bad_requests: Vec<Vec<u8>> = vec![
            frame(0x00, &[]),
            frame(0x09, &[]),
            frame(kind::ACTIVATE, &[]),
            activate("nodeos.cols=0", b"A=1", 32, 0, "h"),
            // an entry without `=`, one with a name the guest refuses
            activate("", b"NOVALUE", 32, 0, "h"),
            activate("", b"1=x", 32, 0, "h"),
            activate("", b"A=1", 31, 0, "h"),
            activate("", b"A=1", 32, 1_000_000_000, "h"),
            activate("", b"A=1", 32, 0, ""),
            activate("", b"A=1", 32, 0, "a/b"),
            frame(kind::EXPORT, &[]),
            frame(kind::EXPORT, &[5, 0, 0, 0, b'/']),
            frame(kind::R_HELLO, &1u32.to_le_bytes()), // a reply type read as a request
            frame(kind::HELLO, &[1, 0, 0]),
            frame(kind::HELLO, &[1, 0, 0, 0, 0]),
            frame(kind::SIGNAL, &[]),
            frame(kind::STDIN_EOF, &[0]),
            frame(kind::POWEROFF, &[1]),
            frame(kind::EXEC, &[]),
            // argv claims 2^32-1 items
            frame(kind::EXEC, &[0xff, 0xff, 0xff, 0xff]),
            // argv of one item whose length runs past the end
            frame(kind::EXEC, &[1, 0, 0, 0, 9, 0, 0, 0, b'x']),
            // empty argv and env, cwd flag 2
            frame(kind::EXEC, &[0, 0, 0, 0, 0, 0, 0, 0, 2]),
            // stdin flag 7
            frame(kind::EXEC, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0]),
            // timeout flag set but no u64
            frame(kind::EXEC, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]),
            // container flag set but nothing after it
            frame(kind::EXEC, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
            // a container whose groups claim 2^32-1 items
            frame(
                kind::EXEC,
                &[
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff,
                    0xff, 0xff, 0xff, 0,
                ],
            ),
            // a container whose rlimits claim 17 items, one more than Linux has
            frame(
                kind::EXEC,
                &[
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    0, 0, 17, 0, 0, 0, 0,
                ],
            ),
            // a container whose one rlimit lacks its hard limit
            frame(
                kind::EXEC,
                &[
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
                    &[0; 16],
                    &[1, 0, 0, 0, 7, 0, 0, 0],
                    &[0; 8],
                    &[0],
                ]
                .concat(),
            ),
            // a container whose one mount is a tmpfs at a relative path
            frame(
                kind::EXEC,
                &[
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
                    &[0; 20],
                    &[1, 0, 0, 0, 1, 0, 0, 0, b'x', 1, 0, 0, 0, 0, 0],
                    &[0],
                ]
                .concat(),
            ),
            // a container whose one mount has a flag that means nothing
            frame(
                kind::EXEC,
                &[
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
                    &[0; 20],
                    &[1, 0, 0, 0, 2, 0, 0, 0, b'/', b'x', 1, 0, 0, 0, 0, 0x10],
                    &[0],
                ]
                .concat(),
            ),
            // a container whose bounding capabilities name bit 41, which no capability has
            frame(
                kind::EXEC,
                &[
                    &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1][..],
                    &[0; 24],
                    &[1, 0, 0, 0, 0, 0, 2, 0, 0],
                    &[0; 32],
                    &[0, 0],
                ]
                .concat(),
            ),
            // trailing byte
            frame(kind::EXEC, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            frame(kind::RESIZE, &[24, 0, 0, 0]),
            frame(kind::SET_CLOCK, &[0; 11]),
            frame(kind::SET_CLOCK, &[0; 13]),
        ];
        for bad in &bad_requests {
            assert!(Request::decode(bad).is_err(), "{bad:?}");
            assert!(read_request(&mut &bad[..]).is_err(), "{bad:?}");
        }
        let bad_replies: Vec<Vec<u8>> = vec![
            frame(kind::HELLO, &1u32.to_le_bytes()),
            frame(0x8d, &[]),
            frame(kind::CLOCK_SET, &[0]),
            frame(kind::OOM_KILLED, &[0; 8]),
            frame(kind::OOM_KILLED, &[0; 13]),
            frame(kind::TREE_DATA, &[0; MAX_CHUNK + 1]),
            frame(kind::TREE_END, &[0]),
            frame(kind::STARTED, &[1]),
            frame(kind::TIMED_OUT, &[1, 2, 3, 4]),
            frame(kind::ERROR, &[]),
            frame(kind::ERROR, &[99, 0, 0, 0, 0]),
            frame(kind::ERROR, &[1, 2, 0, 0, 0, 0xc3, 0x28]),
            frame(kind::ERROR, &[1, 5, 0, 0, 0, b'a']),
        ];
        for bad in &bad_replies {
            assert!(Reply::decode(bad).is_err(), "{bad:?}");
        }
        // The smallest valid Exec, for contrast.
        let ok = frame(kind::EXEC, &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            Request::decode(&ok).unwrap().unwrap().0,
            Request::Exec(Exec::default())
        );
    }

    #[test]
    fn truncated_streams_are_errors_and_clean_ends_are_none() {
        let whole = Reply::Stdout(b"hello".to_vec()).encode().unwrap();
        for cut in 1..whole.len() {
            assert!(
                matches!(read_reply(&mut &whole[..cut]), Err(FrameError::Truncated)),
                "{cut}"
            );
        }
        assert!(read_reply(&mut &[][..]).unwrap().is_none());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let err = Request::decode(&frame(0x42, &[])).unwrap_err();
        assert_eq!(err.to_string(), "agent frame of unknown type 0x42");
        let err = Request::decode(&frame(kind::HELLO, &[1])).unwrap_err();
        assert!(err.to_string().starts_with("malformed agent request frame"));
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn more_groups_than_the_kernel_takes_do_not_encode() {
        let exec = Request::Exec(Exec {
            container: Some(Box::new(Container {
                groups: vec![1; MAX_GROUPS + 1],
                ..Container::default()
            })),
            ..Exec::default()
        });
        assert!(matches!(
            exec.encode(),
            Err(FrameError::TooLarge {
                max: MAX_GROUPS,
                ..
            })
        ));
    }

    #[test]
    fn more_rlimits_or_mounts_than_a_container_takes_do_not_encode() {
        let too_many = [
            (
                Container {
                    rlimits: vec![Rlimit::default(); MAX_RLIMITS + 1],
                    ..Container::default()
                },
                MAX_RLIMITS,
            ),
            (
                Container {
                    mounts: vec![Mount::default(); MAX_MOUNTS + 1],
                    ..Container::default()
                },
                MAX_MOUNTS,
            ),
        ];
        for (container, most) in too_many {
            let exec = Request::Exec(Exec {
                container: Some(Box::new(container)),
                ..Exec::default()
            });
            assert!(matches!(
                exec.encode(),
                Err(FrameError::TooLarge { max, .. }) if max == most
            ));
        }
    }

    #[test]
    fn a_terminal_wider_than_u16_is_refused() {
        let frame = frame(kind::RESIZE, &[24, 0, 0, 0, 0, 0, 1, 0]);
        let err = Request::decode(&frame).unwrap_err();
        assert!(err.to_string().contains("over 65535"), "{err}");
    }

    #[test]
    fn shell_statuses() {
        assert_eq!(ErrorKind::NotFound.shell_status(), Some(127));
        assert_eq!(ErrorKind::ExecFailed.shell_status(), Some(126));
        assert_eq!(ErrorKind::NotExecutable.shell_status(), Some(126));
        assert_eq!(ErrorKind::Protocol.shell_status(), None);
    }

    #[test]
    fn the_wire_format_is_fixed() {
        let exec = Request::Exec(Exec {
            argv: vec![b"a".to_vec()],
            env: Vec::new(),
            cwd: Some(b"/".to_vec()),
            stdin: true,
            timeout_ms: Some(5),
            container: Some(Box::new(Container {
                root: b"/r".to_vec(),
                uid: 1,
                gid: 2,
                groups: vec![3],
                rlimits: vec![Rlimit {
                    resource: 7,
                    soft: 4,
                    hard: 5,
                }],
                mounts: vec![Mount {
                    destination: b"/d".to_vec(),
                    kind: MountKind::Tmpfs {
                        options: b"size=1m".to_vec(),
                    },
                    read_only: true,
                    noexec: true,
                    ..Mount::default()
                }],
                capabilities: Some(Capabilities {
                    bounding: 0xa80425fb,
                    effective: 1,
                    permitted: 2,
                    inheritable: 3,
                    ambient: 4,
                }),
                no_new_privileges: true,
                seccomp: None,
            })),
            tty: Some(WinSize { rows: 24, cols: 80 }),
        });
        let payload = [
            &[1, 0, 0, 0, 1, 0, 0, 0, b'a'][..],   // argv
            &[0, 0, 0, 0],                         // env
            &[1, 1, 0, 0, 0, b'/'],                // cwd
            &[1],                                  // stdin
            &[1, 5, 0, 0, 0, 0, 0, 0, 0],          // timeout_ms
            &[1, 2, 0, 0, 0, b'/', b'r'],          // container: root
            &[1, 0, 0, 0, 2, 0, 0, 0],             // uid, gid
            &[1, 0, 0, 0, 3, 0, 0, 0],             // groups
            &[1, 0, 0, 0, 7, 0, 0, 0],             // rlimits: RLIMIT_NOFILE
            &[4, 0, 0, 0, 0, 0, 0, 0],             // soft
            &[5, 0, 0, 0, 0, 0, 0, 0],             // hard
            &[1, 0, 0, 0, 2, 0, 0, 0, b'/', b'd'], // mounts: destination
            &[1, 7, 0, 0, 0],                      // a tmpfs, its options
            b"size=1m",
            &[0b1001],                                // read-only, noexec
            &[1, 0xfb, 0x25, 0x04, 0xa8, 0, 0, 0, 0], // capabilities: bounding
            &[1, 0, 0, 0, 0, 0, 0, 0],                // effective
            &[2, 0, 0, 0, 0, 0, 0, 0],                // permitted
            &[3, 0, 0, 0, 0, 0, 0, 0],                // inheritable
            &[4, 0, 0, 0, 0, 0, 0, 0],                // ambient
            &[1],                                     // no new privileges
            &[0],                                     // no seccomp filter
            &[1, 24, 0, 0, 0, 80, 0, 0, 0],           // tty
        ]
        .concat();
        assert_eq!(exec.encode().unwrap(), frame(kind::EXEC, &payload));
        assert_eq!(
            Request::Signal(-1).encode().unwrap(),
            frame(kind::SIGNAL, &[0xff; 4])
        );
        assert_eq!(
            Reply::Error {
                kind: ErrorKind::BadCwd,
                message: "é".into()
            }
            .encode()
            .unwrap(),
            frame(kind::ERROR, &[4, 2, 0, 0, 0, 0xc3, 0xa9])
        );
        assert_eq!(
            Reply::TimedOut { timeout_ms: 1 }.encode().unwrap(),
            frame(kind::TIMED_OUT, &[1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(
            Reply::OomKilled { seq: 2, pid: -1 }.encode().unwrap(),
            frame(
                kind::OOM_KILLED,
                &[2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
            )
        );
    }
}
