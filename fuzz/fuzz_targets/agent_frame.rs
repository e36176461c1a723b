//! Agent protocol frames: any bytes decoded as a request and as a reply (a frame that decodes
//! re-encodes to the same bytes, and reads the same from a stream), and any message encoded
//! and decoded back to itself.
#![no_main]

use arbitrary::Arbitrary;
use contract::env::EnvVar;
use contract::frame::{self, ErrorKind, Exec, FrameError, Reply, Request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Case {
    Bytes(Vec<u8>),
    Request(Req),
    Reply(Rep),
}

#[derive(Arbitrary, Debug)]
enum Req {
    Hello(u32),
    Exec {
        argv: Vec<Vec<u8>>,
        env: Vec<Vec<u8>>,
        cwd: Option<Vec<u8>>,
        stdin: bool,
        timeout_ms: Option<u64>,
    },
    Stdin(Vec<u8>),
    StdinEof,
    Signal(i32),
    Poweroff,
    /// The entries the checked constructor accepts.
    Env(Vec<(String, String)>),
}

impl From<Req> for Request {
    fn from(r: Req) -> Request {
        match r {
            Req::Hello(version) => Request::Hello { version },
            Req::Exec {
                argv,
                env,
                cwd,
                stdin,
                timeout_ms,
            } => Request::Exec(Exec {
                argv,
                env,
                cwd,
                stdin,
                timeout_ms,
            }),
            Req::Stdin(data) => Request::Stdin(data),
            Req::StdinEof => Request::StdinEof,
            Req::Signal(s) => Request::Signal(s),
            Req::Poweroff => Request::Poweroff,
            Req::Env(env) => Request::Env(
                env.into_iter()
                    .filter_map(|(name, value)| EnvVar::new(name, value).ok())
                    .collect(),
            ),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Rep {
    Hello(u32),
    Started(i32),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exited(i32),
    Signaled(i32),
    TimedOut(u64),
    Error(u8, String),
}

const KINDS: [ErrorKind; 6] = [
    ErrorKind::NotFound,
    ErrorKind::NotExecutable,
    ErrorKind::ExecFailed,
    ErrorKind::BadCwd,
    ErrorKind::Protocol,
    ErrorKind::Version,
];

impl From<Rep> for Reply {
    fn from(r: Rep) -> Reply {
        match r {
            Rep::Hello(version) => Reply::Hello { version },
            Rep::Started(pid) => Reply::Started { pid },
            Rep::Stdout(data) => Reply::Stdout(data),
            Rep::Stderr(data) => Reply::Stderr(data),
            Rep::Exited(code) => Reply::Exited(code),
            Rep::Signaled(s) => Reply::Signaled(s),
            Rep::TimedOut(timeout_ms) => Reply::TimedOut { timeout_ms },
            Rep::Error(kind, message) => Reply::Error {
                kind: KINDS[usize::from(kind) % KINDS.len()],
                message,
            },
        }
    }
}

type Decode<T> = fn(&[u8]) -> Result<Option<(T, usize)>, FrameError>;
type Encode<T> = fn(&T) -> Result<Vec<u8>, FrameError>;

/// Decodes `bytes` with `decode`; a decoded frame must re-encode to the bytes it took, and read
/// the same from a stream with `read`.
fn check_decode<T: PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    decode: Decode<T>,
    encode: Encode<T>,
    read: fn(&mut &[u8]) -> Result<Option<T>, FrameError>,
) {
    if let Ok(Some((message, len))) = decode(bytes) {
        assert!(len <= bytes.len());
        assert_eq!(encode(&message).unwrap(), &bytes[..len]);
        assert_eq!(read(&mut &bytes[..len]).unwrap(), Some(message));
    }
}

/// `message` encodes (unless over the bounds) and decodes back to itself.
fn check_round_trip<T: PartialEq + std::fmt::Debug>(
    message: T,
    decode: Decode<T>,
    encode: Encode<T>,
) {
    match encode(&message) {
        Ok(bytes) => {
            let len = bytes.len();
            assert_eq!(decode(&bytes).unwrap(), Some((message, len)));
            // Every strict prefix is an incomplete frame.
            assert!(matches!(decode(&bytes[..len - 1]), Ok(None)));
        }
        Err(FrameError::TooLarge { .. }) => {}
        Err(e) => panic!("{message:?}: {e}"),
    }
}

fuzz_target!(|case: Case| match case {
    Case::Bytes(bytes) => {
        check_decode(&bytes, Request::decode, Request::encode, |r| {
            frame::read_request(r)
        });
        check_decode(&bytes, Reply::decode, Reply::encode, |r| {
            frame::read_reply(r)
        });
    }
    Case::Request(r) => check_round_trip(Request::from(r), Request::decode, Request::encode),
    Case::Reply(r) => check_round_trip(Reply::from(r), Reply::decode, Reply::encode),
});
