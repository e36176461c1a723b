//! A container's process's seccomp filter, carried in an `Exec`'s container
//! ([`crate::frame::Container`]): the classic BPF program the host (the containerd shim)
//! compiled from the OCI runtime spec's profile, which the agent installs. The kernel checks
//! the program itself as it takes it; both sides check its shape.

/// The most instructions a filter has (the kernel's `BPF_MAXINSNS`).
pub const MAX_INSTRUCTIONS: usize = 4096;
/// Bytes per instruction (`struct sock_filter`: `u16` code, `u8` jt, `u8` jf, `u32` k,
/// little-endian).
const INSTRUCTION_LEN: usize = 8;

/// A filter: between 1 and [`MAX_INSTRUCTIONS`] whole instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(Vec<u8>);

impl Filter {
    /// The filter of these instructions; `None` when there are none or too many.
    pub fn new(program: &[libc::sock_filter]) -> Option<Filter> {
        if program.is_empty() || program.len() > MAX_INSTRUCTIONS {
            return None;
        }
        let mut bytes = Vec::with_capacity(program.len() * INSTRUCTION_LEN);
        for insn in program {
            bytes.extend_from_slice(&insn.code.to_le_bytes());
            bytes.extend_from_slice(&[insn.jt, insn.jf]);
            bytes.extend_from_slice(&insn.k.to_le_bytes());
        }
        Some(Filter(bytes))
    }

    /// The filter these bytes are; `None` when they are not 1 to [`MAX_INSTRUCTIONS`] whole
    /// instructions.
    pub fn from_bytes(bytes: &[u8]) -> Option<Filter> {
        let whole = bytes.len().is_multiple_of(INSTRUCTION_LEN);
        let count = bytes.len() / INSTRUCTION_LEN;
        (whole && (1..=MAX_INSTRUCTIONS).contains(&count)).then(|| Filter(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Its instructions, as seccomp(2) takes them.
    pub fn instructions(&self) -> Vec<libc::sock_filter> {
        self.0
            .chunks_exact(INSTRUCTION_LEN)
            .map(|c| libc::sock_filter {
                code: u16::from_le_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect()
    }
}

/// Only filters the decoder takes: whole instructions, 1 to [`MAX_INSTRUCTIONS`].
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Filter {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let count = u.int_in_range(1..=16)?;
        let bytes = u.bytes(count * INSTRUCTION_LEN)?;
        Ok(Filter(bytes.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_round_trip_and_bad_shapes_are_refused() {
        let program = [
            libc::sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 4,
            },
            libc::sock_filter {
                code: 0x15,
                jt: 1,
                jf: 2,
                k: 0xc000_003e,
            },
        ];
        let filter = Filter::new(&program).unwrap();
        assert_eq!(
            filter.as_bytes(),
            [0x20, 0, 0, 0, 4, 0, 0, 0, 0x15, 0, 1, 2, 0x3e, 0, 0, 0xc0]
        );
        let back = Filter::from_bytes(filter.as_bytes())
            .unwrap()
            .instructions();
        assert_eq!(
            back.iter()
                .map(|i| (i.code, i.jt, i.jf, i.k))
                .collect::<Vec<_>>(),
            [(0x20, 0, 0, 4), (0x15, 1, 2, 0xc000_003e)]
        );
        assert!(Filter::new(&[]).is_none());
        assert!(Filter::from_bytes(&[]).is_none());
        assert!(Filter::from_bytes(&[0; 9]).is_none());
        assert!(Filter::from_bytes(&vec![0; 8 * (MAX_INSTRUCTIONS + 1)]).is_none());
        assert!(Filter::from_bytes(&vec![0; 8 * MAX_INSTRUCTIONS]).is_some());
    }
}
