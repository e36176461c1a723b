//! Percent-encoding of the values that may hold any byte (mount points, environment values):
//! a kernel command-line word ends at whitespace and loses its double quotes, so the host
//! writes every byte outside `[A-Za-z0-9/._-]` as `%XX` and the guest decodes it.

use std::fmt;

/// Whether the host writes `b` as it is.
pub(super) fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/._-".contains(&b)
}

/// Displays its text percent-encoded (`%XX`, upper-case hex).
pub(super) struct Encoded<'a>(pub &'a str);

impl fmt::Display for Encoded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0.as_bytes() {
            if is_plain(b) {
                write!(f, "{}", char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (either case); other bytes stand for themselves.
pub(super) fn decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| format!("bad percent escape at byte {i} of {text:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_plain_bytes_and_escapes_the_rest() {
        assert_eq!(Encoded("/a-b_c.d/09").to_string(), "/a-b_c.d/09");
        assert_eq!(Encoded("~+,").to_string(), "%7E%2B%2C");
        assert_eq!(Encoded("a b%:=ü").to_string(), "a%20b%25%3A%3D%C3%BC");
        assert_eq!(Encoded("").to_string(), "");
    }

    #[test]
    fn decoding_undoes_encoding_and_checks_escapes() {
        for text in ["", "plain", "a b%:=ü\t\"x\"", "%%%", "\u{7f}\u{1}"] {
            let encoded = Encoded(text).to_string();
            assert_eq!(decode(&encoded).unwrap(), text.as_bytes(), "{encoded}");
        }
        assert_eq!(decode("%3a%3A").unwrap(), b"::");
        assert_eq!(decode("%ff").unwrap(), [0xff]);
        for bad in ["%", "%2", "x%zz", "%+1", "%é"] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
