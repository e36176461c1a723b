//! A small ELF reader for what packing a dynamically linked program of another architecture
//! needs, where the host's `ldd` cannot run it: its machine, its dynamic loader (`PT_INTERP`)
//! and the libraries it names (`DT_NEEDED`). 64-bit little-endian files only (x86-64, arm64).

pub(crate) const EM_X86_64: u16 = 62;
pub(crate) const EM_AARCH64: u16 = 183;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const PHDR_SIZE: usize = 56;
const DYN_SIZE: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("not a 64-bit little-endian ELF file")]
    Unsupported,
    #[error("malformed ELF file: {0}")]
    Malformed(&'static str),
}

/// What the dynamic loader reads of a program or library.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dynamic {
    pub machine: u16,
    /// `PT_INTERP`: `/lib/ld-linux-aarch64.so.1`; `None` for a library or a static program.
    pub interpreter: Option<String>,
    /// `DT_NEEDED`, in order: `libc.so.6`, ...
    pub needed: Vec<String>,
}

/// Linux's name for an ELF machine, for messages.
pub(crate) fn machine_name(machine: u16) -> String {
    match machine {
        EM_X86_64 => "x86_64".into(),
        EM_AARCH64 => "aarch64".into(),
        other => format!("ELF machine {other}"),
    }
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

pub(crate) fn parse(data: &[u8]) -> Result<Dynamic, ElfError> {
    if data.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    // EI_CLASS 2: 64-bit; EI_DATA 1: little-endian.
    if data.get(4..6) != Some(&[2, 1]) {
        return Err(ElfError::Unsupported);
    }
    let machine = u16_at(data, 18).ok_or(ElfError::Malformed("short header"))?;
    let phoff = u64_at(data, 32).ok_or(ElfError::Malformed("short header"))?;
    let phnum = u16_at(data, 56).ok_or(ElfError::Malformed("short header"))?;
    let segments = (0..usize::from(phnum))
        .map(|i| {
            let at = usize::try_from(phoff)
                .ok()
                .and_then(|p| p.checked_add(i * PHDR_SIZE))
                .ok_or(ElfError::Malformed("program headers out of range"))?;
            Ok(Segment {
                kind: u32_at(data, at).ok_or(ElfError::Malformed("short program header"))?,
                offset: u64_at(data, at + 8).ok_or(ElfError::Malformed("short program header"))?,
                vaddr: u64_at(data, at + 16).ok_or(ElfError::Malformed("short program header"))?,
                filesz: u64_at(data, at + 32).ok_or(ElfError::Malformed("short program header"))?,
            })
        })
        .collect::<Result<Vec<_>, ElfError>>()?;

    let interpreter = segments
        .iter()
        .find(|s| s.kind == PT_INTERP)
        .map(|s| {
            slice(data, s.offset, s.filesz)
                .and_then(|bytes| c_string(bytes, 0))
                .ok_or(ElfError::Malformed("PT_INTERP"))
        })
        .transpose()?;

    let mut needed = Vec::new();
    if let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) {
        let table = slice(data, dynamic.offset, dynamic.filesz)
            .ok_or(ElfError::Malformed("PT_DYNAMIC out of range"))?;
        let entries: Vec<(u64, u64)> = table
            .chunks_exact(DYN_SIZE)
            .map(|e| (u64_at(e, 0).unwrap_or(DT_NULL), u64_at(e, 8).unwrap_or(0)))
            .take_while(|&(tag, _)| tag != DT_NULL)
            .collect();
        let strtab_vaddr = entries
            .iter()
            .find(|&&(tag, _)| tag == DT_STRTAB)
            .map(|&(_, value)| value);
        for &(_, name_offset) in entries.iter().filter(|&&(tag, _)| tag == DT_NEEDED) {
            let strtab = strtab_vaddr.ok_or(ElfError::Malformed("DT_NEEDED without DT_STRTAB"))?;
            let file_offset = file_offset(&segments, strtab)
                .ok_or(ElfError::Malformed("DT_STRTAB outside the loaded segments"))?;
            let at = file_offset
                .checked_add(name_offset)
                .and_then(|a| usize::try_from(a).ok())
                .ok_or(ElfError::Malformed("DT_NEEDED out of range"))?;
            needed.push(c_string(data, at).ok_or(ElfError::Malformed("DT_NEEDED name"))?);
        }
    }
    Ok(Dynamic {
        machine,
        interpreter,
        needed,
    })
}

/// Where the byte at virtual address `vaddr` is in the file.
fn file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
    segments
        .iter()
        .filter(|s| s.kind == PT_LOAD)
        .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
        .map(|s| vaddr - s.vaddr + s.offset)
}

fn slice(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    data.get(start..end)
}

/// The NUL-terminated UTF-8 string at `at`.
fn c_string(data: &[u8], at: usize) -> Option<String> {
    let rest = data.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    String::from_utf8(rest[..end].to_vec()).ok()
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

/// Builds small ELF files for tests: a header, a PT_INTERP, a PT_LOAD holding a string table,
/// a PT_DYNAMIC naming libraries in it.
#[cfg(test)]
pub(crate) fn build(machine: u16, interpreter: Option<&str>, needed: &[&str]) -> Vec<u8> {
    const HEADER: usize = 64;
    const VADDR: u64 = 0x40_0000;
    let mut strtab = vec![0u8];
    let mut offsets = Vec::new();
    for name in needed {
        offsets.push(strtab.len() as u64);
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
    }
    let interp = interpreter.map(|i| format!("{i}\0").into_bytes());
    let phnum = 2 + usize::from(interp.is_some());
    let strtab_at = HEADER + phnum * PHDR_SIZE;
    let dynamic_at = strtab_at + strtab.len();
    let mut dynamic = Vec::new();
    for offset in &offsets {
        dynamic.extend_from_slice(&DT_NEEDED.to_le_bytes());
        dynamic.extend_from_slice(&offset.to_le_bytes());
    }
    dynamic.extend_from_slice(&DT_STRTAB.to_le_bytes());
    dynamic.extend_from_slice(&(VADDR + strtab_at as u64).to_le_bytes());
    dynamic.extend_from_slice(&[0; DYN_SIZE]);
    let interp_at = dynamic_at + dynamic.len();

    let mut out = vec![0u8; HEADER];
    out[..6].copy_from_slice(b"\x7fELF\x02\x01");
    out[18..20].copy_from_slice(&machine.to_le_bytes());
    out[32..40].copy_from_slice(&(HEADER as u64).to_le_bytes());
    out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    let mut phdr = |kind: u32, offset: usize, len: usize| {
        let mut p = vec![0u8; PHDR_SIZE];
        p[..4].copy_from_slice(&kind.to_le_bytes());
        p[8..16].copy_from_slice(&(offset as u64).to_le_bytes());
        p[16..24].copy_from_slice(&(VADDR + offset as u64).to_le_bytes());
        p[32..40].copy_from_slice(&(len as u64).to_le_bytes());
        out.extend_from_slice(&p);
    };
    phdr(PT_LOAD, 0, interp_at);
    phdr(PT_DYNAMIC, dynamic_at, dynamic.len());
    if let Some(interp) = &interp {
        phdr(PT_INTERP, interp_at, interp.len());
    }
    out.extend_from_slice(&strtab);
    out.extend_from_slice(&dynamic);
    out.extend_from_slice(interp.as_deref().unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_files_read_back() {
        let data = build(
            EM_AARCH64,
            Some("/lib/ld-linux-aarch64.so.1"),
            &["libgcc_s.so.1", "libc.so.6"],
        );
        assert_eq!(
            parse(&data).unwrap(),
            Dynamic {
                machine: EM_AARCH64,
                interpreter: Some("/lib/ld-linux-aarch64.so.1".into()),
                needed: vec!["libgcc_s.so.1".into(), "libc.so.6".into()],
            }
        );
        let library = parse(&build(EM_X86_64, None, &[])).unwrap();
        assert_eq!(library.interpreter, None);
        assert!(library.needed.is_empty());
    }

    #[test]
    fn a_host_program_reads_like_ldd_says() {
        let data = std::fs::read("/bin/true").unwrap();
        let dynamic = parse(&data).unwrap();
        assert_eq!(dynamic.machine, EM_X86_64);
        assert_eq!(
            dynamic.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(dynamic.needed, ["libc.so.6"]);
    }

    #[test]
    fn bad_files_are_refused() {
        assert_eq!(parse(b"#!/bin/sh\n"), Err(ElfError::NotElf));
        assert_eq!(
            parse(b"\x7fELF\x01\x01\0\0\0\0\0\0\0\0\0\0"),
            Err(ElfError::Unsupported)
        );
        let mut truncated = build(EM_AARCH64, Some("/lib/ld"), &["libc.so.6"]);
        truncated.truncate(100);
        assert!(matches!(parse(&truncated), Err(ElfError::Malformed(_))));
        assert_eq!(machine_name(EM_AARCH64), "aarch64");
    }
}
