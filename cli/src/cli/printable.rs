//! Guest output made safe for the host's terminal. What a guest writes to its console is the
//! guest's to choose: printed as it is, its escape sequences could clear the screen, rewrite
//! what was printed before, set the window title or the clipboard, or make some terminals
//! type an answer on their input. Control characters are shown as visible escapes instead,
//! so that what the guest tried is seen rather than done or silently dropped.

use std::io::Write;

/// `bytes` with every control character written as a visible escape: C0 controls and DEL as
/// `\xNN` (ESC is `\x1b`), C1 controls (U+0080 to U+009F, which some terminals obey as ESC
/// sequences) as `\u{NN}`, and bytes that are not UTF-8 as `\xNN`. Kept as they are: text, UTF-8
/// included, `\n`, `\t`, and `\r` right before `\n` (the serial console ends its lines with
/// `\r\n`); a lone `\r`, which would let the guest overwrite a line, is escaped. A backslash is
/// not escaped: `--raw` gives the bytes themselves when the difference matters.
pub fn escape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let text = chunk.valid();
        for (at, c) in text.char_indices() {
            match c {
                '\n' | '\t' => out.push(c as u8),
                '\r' if text[at + 1..].starts_with('\n') => out.push(b'\r'),
                '\0'..='\x1f' | '\x7f' => {
                    write_escape(&mut out, format_args!("\\x{:02x}", c as u32))
                }
                '\u{80}'..='\u{9f}' => {
                    write_escape(&mut out, format_args!("\\u{{{:02x}}}", c as u32))
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        for byte in chunk.invalid() {
            write_escape(&mut out, format_args!("\\x{byte:02x}"));
        }
    }
    out
}

fn write_escape(out: &mut Vec<u8>, escape: std::fmt::Arguments) {
    out.write_fmt(escape).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(bytes: &[u8]) -> String {
        String::from_utf8(escape(bytes)).unwrap()
    }

    #[test]
    fn text_newlines_and_tabs_are_kept() {
        let text = "boot: ok\r\n\tnode v22 ✓ — ünïcode\nlast line";
        assert_eq!(escaped(text.as_bytes()), text);
    }

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        // Clear the screen, set the title, move the cursor, write to the clipboard (OSC 52).
        let hostile = b"\x1b[2J\x1b]0;owned\x07\x1b[1;1H\x1b]52;c;ZWNobw==\x1b\\done";
        assert_eq!(
            escaped(hostile),
            r"\x1b[2J\x1b]0;owned\x07\x1b[1;1H\x1b]52;c;ZWNobw==\x1b\done"
        );
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in (0u8..0x20).chain([0x7f]) {
            let out = escape(&[c]);
            match c {
                b'\n' | b'\t' => assert_eq!(out, [c]),
                _ => assert_eq!(out, format!("\\x{c:02x}").into_bytes(), "{c:#x}"),
            }
        }
        // C1 controls, as UTF-8 (U+009B is CSI) and as raw bytes (not UTF-8).
        assert_eq!(escaped("\u{9b}31m\u{85}".as_bytes()), r"\u{9b}31m\u{85}");
        assert_eq!(escaped(b"\x9b31m\xff"), r"\x9b31m\xff");
        assert!(escape(&(0..=255).collect::<Vec<u8>>())
            .iter()
            .all(|&b| b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b)));
    }

    #[test]
    fn a_lone_carriage_return_is_escaped() {
        assert_eq!(escaped(b"secret\rhidden\r\n"), "secret\\x0dhidden\r\n");
        assert_eq!(escaped(b"end\r"), r"end\x0d");
    }
}
