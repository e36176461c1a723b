//! The spawn service's wire format, between the shim (`nodeos-init spawn`) and the supervisor.
//!
//! One connection per command, over a Unix stream socket:
//! 1. shim -> supervisor: a request, `MAGIC`, body length (u32 LE), body. The shim's open file
//!    descriptors travel with the first bytes as SCM_RIGHTS, in the order of `Request::fds`.
//! 2. supervisor -> shim: responses, each `tag` (u8), payload length (u32 LE), payload:
//!    `Started` once the command was exec'd, then `Exited`/`Signaled`; or `Failed` (exec or
//!    set-up failed, with the errno) or `Refused` (the request itself was rejected).
//!
//! Every length read from the peer is checked against a limit before anything is allocated.

use std::ffi::CString;
use std::fmt;

use contract::codec::{DecodeError, Decoder, Encoder};

pub const MAGIC: [u8; 4] = *b"NSP1";
/// Header: magic + body length.
pub const HEADER_LEN: usize = 8;
/// Largest request body: argv + environment + cwd. Linux itself caps argv + env at a quarter of
/// the stack limit (2 MiB by default).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Most argv or env entries in one request.
pub const MAX_STRINGS: usize = 1 << 16;
/// Most file descriptors passed with a request (SCM_RIGHTS allows 253).
pub const MAX_FDS: usize = 64;
/// Highest descriptor number a passed fd may be installed as.
pub const MAX_FD_NUMBER: u32 = 1023;
/// Largest response payload.
pub const MAX_RESPONSE_BYTES: usize = 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum ProtocolError {
    BadMagic([u8; 4]),
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    Truncated(&'static str),
    Trailing(usize),
    Nul(&'static str),
    EmptyArgv,
    BadFdNumber(u32),
    DuplicateFd(u32),
    UnknownTag(u8),
    /// A field whose bytes are there but mean nothing.
    Invalid {
        what: &'static str,
        why: String,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadMagic(magic) => write!(f, "bad magic {magic:02x?}"),
            ProtocolError::TooLarge { what, len, max } => {
                write!(f, "{what} too large: {len} > {max}")
            }
            ProtocolError::Truncated(what) => write!(f, "message truncated reading {what}"),
            ProtocolError::Trailing(n) => write!(f, "{n} bytes left over after the message"),
            ProtocolError::Nul(what) => write!(f, "{what} contains a NUL byte"),
            ProtocolError::EmptyArgv => write!(f, "argv is empty"),
            ProtocolError::BadFdNumber(fd) => write!(f, "fd number {fd} is out of range"),
            ProtocolError::DuplicateFd(fd) => write!(f, "fd number {fd} given twice"),
            ProtocolError::UnknownTag(tag) => write!(f, "unknown response tag {tag}"),
            ProtocolError::Invalid { what, why } => write!(f, "{what}: {why}"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<DecodeError> for ProtocolError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Truncated { field, .. } => ProtocolError::Truncated(field),
            DecodeError::TooLong { field, len, max } => ProtocolError::TooLarge {
                what: field,
                len,
                max,
            },
            DecodeError::Trailing { len } => ProtocolError::Trailing(len),
            DecodeError::Invalid { field, why } => ProtocolError::Invalid { what: field, why },
        }
    }
}

/// What to run, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The program: a path, or a name looked up in the request's PATH.
    pub file: CString,
    /// argv, argv[0] included.
    pub argv: Vec<CString>,
    /// `NAME=value` entries.
    pub env: Vec<CString>,
    /// Working directory (absolute).
    pub cwd: CString,
    pub umask: u32,
    /// The descriptor number each passed fd gets in the command, in SCM_RIGHTS order.
    pub fds: Vec<u32>,
}

/// Which step of starting the command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Exec = 0,
    Chdir = 1,
    Setup = 2,
}

impl Stage {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Stage::Exec,
            1 => Stage::Chdir,
            _ => Stage::Setup,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Started { pid: i32 },
    Exited { code: i32 },
    Signaled { signal: i32 },
    Failed { stage: Stage, errno: i32 },
    Refused { reason: String },
}

const TAG_STARTED: u8 = 1;
const TAG_EXITED: u8 = 2;
const TAG_SIGNALED: u8 = 3;
const TAG_FAILED: u8 = 4;
const TAG_REFUSED: u8 = 5;

impl Request {
    /// Header and body, ready to send.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        // The header is filled in once the body's length is known.
        let mut out = Encoder::from_vec(vec![0; HEADER_LEN]);
        out.put_u32(self.umask);
        out.put_u32(self.fds.len() as u32);
        for &fd in &self.fds {
            out.put_u32(fd);
        }
        out.put_bytes(self.file.as_bytes());
        out.put_bytes(self.cwd.as_bytes());
        for list in [&self.argv, &self.env] {
            out.put_u32(list.len() as u32);
            for s in list {
                out.put_bytes(s.as_bytes());
            }
        }
        let mut msg = out.into_vec();
        let len = msg.len() - HEADER_LEN;
        if len > MAX_REQUEST_BYTES {
            return Err(ProtocolError::TooLarge {
                what: "request",
                len,
                max: MAX_REQUEST_BYTES,
            });
        }
        msg[..4].copy_from_slice(&MAGIC);
        msg[4..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(msg)
    }

    /// Checks a header; returns the body length to read next.
    pub fn body_len(header: &[u8; HEADER_LEN]) -> Result<usize, ProtocolError> {
        let mut d = Decoder::new(header);
        let magic: [u8; 4] = d.take("magic", 4)?.try_into().expect("4 bytes");
        if magic != MAGIC {
            return Err(ProtocolError::BadMagic(magic));
        }
        let len = d.u32("request length")? as usize;
        if len > MAX_REQUEST_BYTES {
            return Err(ProtocolError::TooLarge {
                what: "request",
                len,
                max: MAX_REQUEST_BYTES,
            });
        }
        Ok(len)
    }

    pub fn decode(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut d = Decoder::new(body);
        let umask = d.u32("umask")? & 0o777;
        let nfds = d.count("fds", MAX_FDS, 4)?;
        let mut fds = Vec::with_capacity(nfds);
        for _ in 0..nfds {
            let fd = d.u32("fd")?;
            if fd > MAX_FD_NUMBER {
                return Err(ProtocolError::BadFdNumber(fd));
            }
            if fds.contains(&fd) {
                return Err(ProtocolError::DuplicateFd(fd));
            }
            fds.push(fd);
        }
        let file = cstring(&mut d, "file")?;
        let cwd = cstring(&mut d, "cwd")?;
        let argv = cstrings(&mut d, "argv")?;
        let env = cstrings(&mut d, "env")?;
        if argv.is_empty() {
            return Err(ProtocolError::EmptyArgv);
        }
        d.finish()?;
        Ok(Request {
            file,
            argv,
            env,
            cwd,
            umask,
            fds,
        })
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Encoder::new();
        let tag = match self {
            Response::Started { pid } => {
                payload.put_i32(*pid);
                TAG_STARTED
            }
            Response::Exited { code } => {
                payload.put_i32(*code);
                TAG_EXITED
            }
            Response::Signaled { signal } => {
                payload.put_i32(*signal);
                TAG_SIGNALED
            }
            Response::Failed { stage, errno } => {
                payload.put_u8(*stage as u8);
                payload.put_i32(*errno);
                TAG_FAILED
            }
            Response::Refused { reason } => {
                let mut end = reason.len().min(MAX_RESPONSE_BYTES);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                payload.put_raw(&reason.as_bytes()[..end]);
                TAG_REFUSED
            }
        };
        let payload = payload.into_vec();
        let mut msg = Encoder::new();
        msg.put_u8(tag);
        msg.put_u32(payload.len() as u32);
        msg.put_raw(&payload);
        msg.into_vec()
    }

    /// Checks a response header (tag, length); returns the payload length to read next.
    pub fn payload_len(header: &[u8; 5]) -> Result<usize, ProtocolError> {
        let len = Decoder::new(&header[1..]).u32("response length")? as usize;
        if len > MAX_RESPONSE_BYTES {
            return Err(ProtocolError::TooLarge {
                what: "response",
                len,
                max: MAX_RESPONSE_BYTES,
            });
        }
        Ok(len)
    }

    pub fn decode(tag: u8, payload: &[u8]) -> Result<Self, ProtocolError> {
        let mut d = Decoder::new(payload);
        let response = match tag {
            TAG_STARTED => Response::Started { pid: d.i32("pid")? },
            TAG_EXITED => Response::Exited {
                code: d.i32("code")?,
            },
            TAG_SIGNALED => Response::Signaled {
                signal: d.i32("signal")?,
            },
            TAG_FAILED => {
                let stage = Stage::from_u8(d.u8("stage")?);
                Response::Failed {
                    stage,
                    errno: d.i32("errno")?,
                }
            }
            TAG_REFUSED => {
                let reason = d.rest("reason", MAX_RESPONSE_BYTES)?;
                Response::Refused {
                    reason: String::from_utf8_lossy(reason).into_owned(),
                }
            }
            other => return Err(ProtocolError::UnknownTag(other)),
        };
        d.finish()?;
        Ok(response)
    }
}

/// A length-prefixed string without NUL bytes.
fn cstring(d: &mut Decoder<'_>, what: &'static str) -> Result<CString, ProtocolError> {
    let bytes = d.bytes(what, MAX_REQUEST_BYTES)?;
    CString::new(bytes).map_err(|_| ProtocolError::Nul(what))
}

/// A count of at most [`MAX_STRINGS`], then that many strings (each at least its 4-byte
/// length, so a huge count cannot outgrow the message).
fn cstrings(d: &mut Decoder<'_>, what: &'static str) -> Result<Vec<CString>, ProtocolError> {
    let n = d.count(what, MAX_STRINGS, 4)?;
    (0..n).map(|_| cstring(d, what)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn request() -> Request {
        Request {
            file: c("/usr/bin/node"),
            argv: vec![c("node"), c("-e"), c("console.log(1)")],
            env: vec![c("HOME=/home/node"), c("PATH=/usr/bin:/bin")],
            cwd: c("/home/node"),
            umask: 0o022,
            fds: vec![0, 1, 2, 3],
        }
    }

    fn split(msg: &[u8]) -> (&[u8], &[u8]) {
        msg.split_at(HEADER_LEN)
    }

    #[test]
    fn request_round_trips() {
        let msg = request().encode().unwrap();
        let (header, body) = split(&msg);
        assert_eq!(
            Request::body_len(header.try_into().unwrap()).unwrap(),
            body.len()
        );
        assert_eq!(Request::decode(body).unwrap(), request());
    }

    #[test]
    fn response_round_trips() {
        for response in [
            Response::Started { pid: 42 },
            Response::Exited { code: 3 },
            Response::Signaled {
                signal: libc::SIGTERM,
            },
            Response::Failed {
                stage: Stage::Exec,
                errno: libc::ENOENT,
            },
            Response::Failed {
                stage: Stage::Chdir,
                errno: libc::EACCES,
            },
            Response::Refused {
                reason: "uid 0 may not spawn".into(),
            },
        ] {
            let msg = response.encode();
            let len = Response::payload_len(msg[..5].try_into().unwrap()).unwrap();
            assert_eq!(len, msg.len() - 5);
            assert_eq!(Response::decode(msg[0], &msg[5..]).unwrap(), response);
        }
    }

    #[test]
    fn bad_headers_are_rejected_before_allocating() {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(b"HTTP");
        assert!(matches!(
            Request::body_len(&header),
            Err(ProtocolError::BadMagic(_))
        ));
        header[..4].copy_from_slice(&MAGIC);
        header[4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Request::body_len(&header),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut response = [TAG_REFUSED, 0, 0, 0, 0];
        response[1..].copy_from_slice(&(MAX_RESPONSE_BYTES as u32 + 1).to_le_bytes());
        assert!(Response::payload_len(&response).is_err());
    }

    #[test]
    fn truncated_and_hostile_bodies_are_errors() {
        let msg = request().encode().unwrap();
        let body = &msg[HEADER_LEN..];
        for cut in 0..body.len() {
            assert!(
                Request::decode(&body[..cut]).is_err(),
                "accepted a body cut at {cut}"
            );
        }
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert_eq!(Request::decode(&trailing), Err(ProtocolError::Trailing(1)));

        // A huge string count in a small message.
        let mut huge = Encoder::new();
        huge.put_u32(0);
        huge.put_u32(0);
        huge.put_bytes(b"/bin/x");
        huge.put_bytes(b"/");
        huge.put_u32(MAX_STRINGS as u32);
        assert_eq!(
            Request::decode(&huge.into_vec()),
            Err(ProtocolError::Truncated("argv"))
        );

        // Too many fds, out-of-range and duplicate fd numbers.
        let mut fds = Encoder::new();
        fds.put_u32(0);
        fds.put_u32(MAX_FDS as u32 + 1);
        assert!(matches!(
            Request::decode(&fds.into_vec()),
            Err(ProtocolError::TooLarge { .. })
        ));
        let mut bad = request();
        bad.fds = vec![MAX_FD_NUMBER + 1];
        let msg = bad.encode().unwrap();
        assert_eq!(
            Request::decode(&msg[HEADER_LEN..]),
            Err(ProtocolError::BadFdNumber(MAX_FD_NUMBER + 1))
        );
        bad.fds = vec![1, 1];
        let msg = bad.encode().unwrap();
        assert_eq!(
            Request::decode(&msg[HEADER_LEN..]),
            Err(ProtocolError::DuplicateFd(1))
        );
    }

    #[test]
    fn empty_argv_and_nul_bytes_are_rejected() {
        let mut empty = request();
        empty.argv.clear();
        let msg = empty.encode().unwrap();
        assert_eq!(
            Request::decode(&msg[HEADER_LEN..]),
            Err(ProtocolError::EmptyArgv)
        );

        let mut body = Encoder::new();
        body.put_u32(0);
        body.put_u32(0);
        body.put_bytes(b"a\0b");
        assert_eq!(
            Request::decode(&body.into_vec()),
            Err(ProtocolError::Nul("file"))
        );
    }

    #[test]
    fn unknown_tags_and_long_reasons() {
        assert_eq!(
            Response::decode(99, &[]),
            Err(ProtocolError::UnknownTag(99))
        );
        let long = Response::Refused {
            reason: "é".repeat(MAX_RESPONSE_BYTES),
        };
        let msg = long.encode();
        assert!(msg.len() - 5 <= MAX_RESPONSE_BYTES);
        assert!(Response::decode(msg[0], &msg[5..]).is_ok());
    }

    #[test]
    fn the_wire_format_is_fixed() {
        let request = Request {
            file: c("f"),
            argv: vec![c("a"), c("")],
            env: vec![c("E=1")],
            cwd: c("/"),
            umask: 0o022,
            fds: vec![1, 0x0102],
        };
        let mut expected = b"NSP1".to_vec();
        expected.extend_from_slice(&[50, 0, 0, 0]); // body length
        expected.extend_from_slice(&[0x12, 0, 0, 0]); // umask
        expected.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0, 2, 1, 0, 0]); // fds
        expected.extend_from_slice(&[1, 0, 0, 0, b'f', 1, 0, 0, 0, b'/']); // file, cwd
        expected.extend_from_slice(&[2, 0, 0, 0, 1, 0, 0, 0, b'a', 0, 0, 0, 0]); // argv
        expected.extend_from_slice(&[1, 0, 0, 0, 3, 0, 0, 0, b'E', b'=', b'1']); // env
        assert_eq!(request.encode().unwrap(), expected);
        for (response, bytes) in [
            (
                Response::Started { pid: 7 },
                &[TAG_STARTED, 4, 0, 0, 0, 7, 0, 0, 0][..],
            ),
            (
                Response::Exited { code: -1 },
                &[TAG_EXITED, 4, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            ),
            (
                Response::Failed {
                    stage: Stage::Chdir,
                    errno: 2,
                },
                &[TAG_FAILED, 5, 0, 0, 0, 1, 2, 0, 0, 0],
            ),
            (
                Response::Refused {
                    reason: "no".into(),
                },
                &[TAG_REFUSED, 2, 0, 0, 0, b'n', b'o'],
            ),
        ] {
            assert_eq!(response.encode(), bytes, "{response:?}");
        }
    }
}
