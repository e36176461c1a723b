//! The one binary codec of the contract: little-endian integers and `u32`-length-prefixed byte
//! strings, as the agent's frames ([`crate::frame`]) and the guest's spawn protocol use them.
//!
//! Encoding cannot fail: each protocol checks the size of its whole message afterwards.
//! Decoding reads from a slice that a peer filled, so it never trusts it: every read is
//! checked against what is left, every length and count against a cap the caller gives for
//! that field (before anything is allocated), and [`Decoder::finish`] refuses bytes left over.
//! Errors name the field.

use std::fmt;

/// Builds a message in a growing buffer.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Encoder::default()
    }

    /// Appends to `buf`: a header written first and filled in once the size is known.
    pub fn from_vec(buf: Vec<u8>) -> Self {
        Encoder { buf }
    }

    pub fn put_u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    /// One byte, 0 or 1.
    pub fn put_bool(&mut self, v: bool) {
        self.put_u8(u8::from(v));
    }

    pub fn put_u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn put_u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Bytes as they are, without a length (a fixed-size field, or the rest of a message).
    pub fn put_raw(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// A `u32` length, then the bytes. (Over 4 GiB the length saturates; no message that big
    /// passes its protocol's size check.)
    pub fn put_bytes(&mut self, data: &[u8]) {
        self.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
        self.put_raw(data);
    }

    /// A string as [`Encoder::put_bytes`] writes its UTF-8.
    pub fn put_str(&mut self, s: &str) {
        self.put_bytes(s.as_bytes());
    }

    /// The message.
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The message ends before `field` does.
    Truncated {
        field: &'static str,
        needed: usize,
        left: usize,
    },
    /// A length or count over the cap of its field.
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// Bytes left over after the message.
    Trailing { len: usize },
    /// A field whose bytes are all there but do not mean anything.
    Invalid { field: &'static str, why: String },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated {
                field,
                needed,
                left,
            } => write!(f, "{field}: needs {needed} bytes, {left} left"),
            DecodeError::TooLong { field, len, max } => {
                write!(f, "{field} too large: {len} > {max}")
            }
            DecodeError::Trailing { len } => write!(f, "{len} bytes after the message"),
            DecodeError::Invalid { field, why } => write!(f, "{field}: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Reads a message from a slice, front to back.
#[derive(Debug)]
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(message: &'a [u8]) -> Self {
        Decoder { rest: message }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated {
                field,
                needed: n,
                left: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut bytes = [0; N];
        bytes.copy_from_slice(self.take(field, N)?);
        Ok(bytes)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(field, 1)?[0])
    }

    /// A byte that must be 0 or 1.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::Invalid {
                field,
                why: format!("flag byte {other} (must be 0 or 1)"),
            }),
        }
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        self.array(field).map(i32::from_le_bytes)
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A `u32` length of at most `max`, then that many bytes.
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(field)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(field, len)
    }

    /// [`Decoder::bytes`] that must be UTF-8.
    pub fn str(&mut self, field: &'static str, max: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(field, max)?).map_err(|_| DecodeError::Invalid {
            field,
            why: "not UTF-8".into(),
        })
    }

    /// A `u32` count of items that follow: at most `max`, and, as each item takes at least
    /// `min_item_len` bytes, no more than what is left can hold (so a huge count in a small
    /// message is refused before anything is allocated for it).
    pub fn count(
        &mut self,
        field: &'static str,
        max: usize,
        min_item_len: usize,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(field)? as usize;
        if n > max {
            return Err(DecodeError::TooLong { field, len: n, max });
        }
        let needed = n.saturating_mul(min_item_len);
        if needed > self.rest.len() {
            return Err(DecodeError::Truncated {
                field,
                needed,
                left: self.rest.len(),
            });
        }
        Ok(n)
    }

    /// Everything left, at most `max` bytes.
    pub fn rest(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() > max {
            return Err(DecodeError::TooLong {
                field,
                len: self.rest.len(),
                max,
            });
        }
        Ok(std::mem::take(&mut self.rest))
    }

    /// Ends the message: an error if anything is left.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing {
                len: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_little_endian() {
        let mut e = Encoder::from_vec(vec![0xaa]);
        e.put_u8(7);
        e.put_bool(true);
        e.put_u32(0x0102_0304);
        e.put_i32(-2);
        e.put_u64(u64::MAX - 1);
        e.put_bytes(b"ab");
        e.put_str("é");
        e.put_raw(b"xyz");
        let msg = e.into_vec();
        assert_eq!(
            msg,
            [
                &[0xaa, 7, 1, 4, 3, 2, 1, 0xfe, 0xff, 0xff, 0xff][..],
                &[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                &[2, 0, 0, 0, b'a', b'b', 2, 0, 0, 0, 0xc3, 0xa9, b'x', b'y', b'z'],
            ]
            .concat()
        );
        let mut d = Decoder::new(&msg);
        assert_eq!(d.take("header", 1).unwrap(), [0xaa]);
        assert_eq!(d.u8("a").unwrap(), 7);
        assert!(d.bool("b").unwrap());
        assert_eq!(d.u32("c").unwrap(), 0x0102_0304);
        assert_eq!(d.i32("d").unwrap(), -2);
        assert_eq!(d.u64("e").unwrap(), u64::MAX - 1);
        assert_eq!(d.bytes("f", 2).unwrap(), b"ab");
        assert_eq!(d.str("g", 2).unwrap(), "é");
        assert_eq!(d.rest("h", 3).unwrap(), b"xyz");
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn short_reads_name_the_field() {
        let mut d = Decoder::new(&[1, 2, 3]);
        assert_eq!(
            d.u32("len"),
            Err(DecodeError::Truncated {
                field: "len",
                needed: 4,
                left: 3
            })
        );
        let mut d = Decoder::new(&[5, 0, 0, 0, b'a']);
        let err = d.bytes("name", 100).unwrap_err();
        assert_eq!(err.to_string(), "name: needs 5 bytes, 1 left");
    }

    #[test]
    fn lengths_and_counts_are_capped_before_use() {
        let huge = u32::MAX.to_le_bytes();
        assert_eq!(
            Decoder::new(&huge).bytes("arg", 10),
            Err(DecodeError::TooLong {
                field: "arg",
                len: u32::MAX as usize,
                max: 10
            })
        );
        // Within the cap but more items than the bytes left could hold.
        let mut msg = 3u32.to_le_bytes().to_vec();
        msg.extend_from_slice(&[0; 11]);
        assert!(matches!(
            Decoder::new(&msg).count("argv", 100, 4),
            Err(DecodeError::Truncated { field: "argv", .. })
        ));
        msg.push(0);
        assert_eq!(Decoder::new(&msg).count("argv", 100, 4), Ok(3));
        assert!(matches!(
            Decoder::new(&msg).count("argv", 2, 4),
            Err(DecodeError::TooLong { .. })
        ));
        assert_eq!(
            Decoder::new(&huge).count("n", usize::MAX, usize::MAX),
            Err(DecodeError::Truncated {
                field: "n",
                needed: usize::MAX,
                left: 0
            })
        );
        assert!(matches!(
            Decoder::new(&[0; 5]).rest("data", 4),
            Err(DecodeError::TooLong { len: 5, max: 4, .. })
        ));
    }

    #[test]
    fn bad_flags_bad_text_and_trailing_bytes() {
        assert!(matches!(
            Decoder::new(&[2]).bool("stdin"),
            Err(DecodeError::Invalid { field: "stdin", .. })
        ));
        assert!(matches!(
            Decoder::new(&[2, 0, 0, 0, 0xc3, 0x28]).str("message", 10),
            Err(DecodeError::Invalid { .. })
        ));
        let mut d = Decoder::new(&[1, 2]);
        d.u8("x").unwrap();
        assert_eq!(d.finish(), Err(DecodeError::Trailing { len: 1 }));
        assert_eq!(
            DecodeError::Trailing { len: 1 }.to_string(),
            "1 bytes after the message"
        );
    }
}
