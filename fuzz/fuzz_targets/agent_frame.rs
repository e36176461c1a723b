//! Agent protocol frames: any bytes decoded as a request and as a reply (a frame that decodes
//! re-encodes to the same bytes, and reads the same from a stream), and any message encoded
//! and decoded back to itself (every message there is: the contract derives `Arbitrary` for
//! them under its `arbitrary` feature).
#![no_main]

use arbitrary::Arbitrary;
use contract::frame::{self, FrameError, Reply, Request};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Case {
    Bytes(Vec<u8>),
    Request(Request),
    Reply(Reply),
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
    Case::Request(r) => check_round_trip(r, Request::decode, Request::encode),
    Case::Reply(r) => check_round_trip(r, Reply::decode, Reply::encode),
});
