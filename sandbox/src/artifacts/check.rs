//! Cheap checks before a boot, so that a missing, truncated or wrong file gives one clear error
//! instead of a guest that hangs or panics half-way.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use contract::arch::Arch;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;
/// arm64 `Image`: "ARM\x64" at 0x38 (Documentation/arm64/booting.rst).
const ARM64_MAGIC_OFFSET: usize = 0x38;
const ARM64_MAGIC: &[u8; 4] = b"ARM\x64";
const PT_LOAD: u32 = 1;
/// bzImage: "HdrS" at 0x202, setup sectors at 0x1f1, protected-mode size in 16-byte units at 0x1f4.
const BZ_MAGIC_OFFSET: usize = 0x202;
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// `bytes_used` in the squashfs superblock: the image's real length.
const SQUASHFS_BYTES_USED_OFFSET: usize = 40;
const HEADER_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("the {what} {path} does not exist; run `nodeos-vm build`, or pass an existing file")]
    Missing { what: &'static str, path: PathBuf },
    #[error("reading the {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the kernel {path} is not a Linux kernel we boot (an x86-64 ELF vmlinux or bzImage, or \
         an arm64 Image)"
    )]
    NotAKernel { path: PathBuf },
    #[error(
        "the kernel {path} is an {found} kernel and this VM is {wanted}: give an {wanted} \
         kernel, or boot it with --arch {found}"
    )]
    WrongArch {
        path: PathBuf,
        found: Arch,
        wanted: Arch,
    },
    #[error("the {what} {path} is truncated or corrupt: {detail}; rebuild it with `nodeos-vm build --force`")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the root image {path} is not a squashfs image")]
    NotSquashfs { path: PathBuf },
}

fn read_header(what: &'static str, path: &Path) -> Result<(Vec<u8>, u64), CheckError> {
    let read_error = |source| CheckError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CheckError::Missing {
            what,
            path: path.to_path_buf(),
        },
        _ => read_error(source),
    })?;
    let len = file.metadata().map_err(read_error)?.len();
    let mut header = Vec::with_capacity(HEADER_LEN);
    file.by_ref()
        .take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .map_err(read_error)?;
    Ok((header, len))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A kernel for `arch`: for x86-64 an ELF vmlinux whose loadable segments all lie inside the
/// file, or a complete bzImage; for arm64 an `Image`.
pub fn check_kernel(path: &Path, arch: Arch) -> Result<(), CheckError> {
    let (h, len) = read_header("kernel", path)?;
    let found = kernel_arch(&h).ok_or_else(|| CheckError::NotAKernel {
        path: path.to_path_buf(),
    })?;
    if found != arch {
        return Err(CheckError::WrongArch {
            path: path.to_path_buf(),
            found,
            wanted: arch,
        });
    }
    if arch == Arch::Aarch64 {
        return Ok(());
    }
    let corrupt = |detail: String| CheckError::Corrupt {
        what: "kernel",
        path: path.to_path_buf(),
        detail,
    };
    if h.starts_with(ELF_MAGIC) {
        let (phoff, phentsize, phnum) = (u64_at(&h, 32), u16_at(&h, 54), u16_at(&h, 56));
        let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
            return Err(corrupt("the ELF header is cut short".into()));
        };
        for i in 0..u64::from(phnum) {
            let at = phoff + i * u64::from(phentsize);
            let ph = usize::try_from(at).ok().and_then(|at| h.get(at..at + 56));
            let Some(ph) = ph else {
                return Err(corrupt(format!(
                    "program header {i} lies outside the first {HEADER_LEN} bytes"
                )));
            };
            let (kind, offset, filesz) = (u32_at(ph, 0), u64_at(ph, 8), u64_at(ph, 32));
            if kind == Some(PT_LOAD) {
                let end = offset.unwrap_or(0).saturating_add(filesz.unwrap_or(0));
                if end > len {
                    return Err(corrupt(format!(
                        "segment {i} ends at byte {end} but the file has {len}"
                    )));
                }
            }
        }
        return Ok(());
    }
    if h.get(BZ_MAGIC_OFFSET..BZ_MAGIC_OFFSET + 4) == Some(b"HdrS") {
        let setup_sects = u64::from(h.get(0x1f1).copied().filter(|&s| s != 0).unwrap_or(4));
        let syssize = u64::from(u32_at(&h, 0x1f4).unwrap_or(0));
        let need = (setup_sects + 1) * 512 + syssize * 16;
        if need > len {
            return Err(corrupt(format!(
                "the bzImage header says {need} bytes but the file has {len}"
            )));
        }
        return Ok(());
    }
    Err(CheckError::NotAKernel {
        path: path.to_path_buf(),
    })
}

/// Which architecture's kernel the file starts like.
fn kernel_arch(h: &[u8]) -> Option<Arch> {
    if h.starts_with(ELF_MAGIC) && h.get(4) == Some(&ELFCLASS64) {
        return match u16_at(h, 18)? {
            EM_X86_64 => Some(Arch::X86_64),
            EM_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        };
    }
    if h.get(BZ_MAGIC_OFFSET..BZ_MAGIC_OFFSET + 4) == Some(b"HdrS") {
        return Some(Arch::X86_64);
    }
    (h.get(ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4) == Some(ARM64_MAGIC))
        .then_some(Arch::Aarch64)
}

/// A squashfs image as long as its superblock says.
pub fn check_rootfs(path: &Path) -> Result<(), CheckError> {
    let (h, len) = read_header("root image", path)?;
    if !h.starts_with(SQUASHFS_MAGIC) {
        return Err(CheckError::NotSquashfs {
            path: path.to_path_buf(),
        });
    }
    let used = u64_at(&h, SQUASHFS_BYTES_USED_OFFSET).unwrap_or(u64::MAX);
    if used > len {
        return Err(CheckError::Corrupt {
            what: "root image",
            path: path.to_path_buf(),
            detail: format!("its superblock says {used} bytes but the file has {len}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn elf(segment_end: u64, file_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; file_len];
        b[..4].copy_from_slice(ELF_MAGIC);
        b[4] = ELFCLASS64;
        b[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&PT_LOAD.to_le_bytes());
        b[64 + 8..64 + 16].copy_from_slice(&0u64.to_le_bytes());
        b[64 + 32..64 + 40].copy_from_slice(&segment_end.to_le_bytes());
        b
    }

    fn arm64_image() -> Vec<u8> {
        let mut b = vec![0u8; 4096];
        b[ARM64_MAGIC_OFFSET..ARM64_MAGIC_OFFSET + 4].copy_from_slice(ARM64_MAGIC);
        b
    }

    #[test]
    fn kernel_checks() {
        let x86 = Arch::X86_64;
        assert!(check_kernel(file(&elf(1000, 1000)).path(), x86).is_ok());
        assert!(matches!(
            check_kernel(file(&elf(5000, 1000)).path(), x86),
            Err(CheckError::Corrupt { .. })
        ));
        assert!(matches!(
            check_kernel(file(b"hello").path(), x86),
            Err(CheckError::NotAKernel { .. })
        ));
        assert!(matches!(
            check_kernel(Path::new("/nonexistent/vmlinux"), x86),
            Err(CheckError::Missing { .. })
        ));
        assert!(check_kernel(file(&arm64_image()).path(), Arch::Aarch64).is_ok());
    }

    #[test]
    fn a_kernel_of_the_other_architecture_is_refused_in_one_line() {
        let err = check_kernel(file(&arm64_image()).path(), Arch::X86_64).unwrap_err();
        assert!(matches!(
            err,
            CheckError::WrongArch {
                found: Arch::Aarch64,
                wanted: Arch::X86_64,
                ..
            }
        ));
        let line = err.to_string();
        assert!(
            line.contains("--arch aarch64") && !line.contains('\n'),
            "{line}"
        );
        let err = check_kernel(file(&elf(1000, 1000)).path(), Arch::Aarch64).unwrap_err();
        assert!(
            err.to_string()
                .contains("is an x86_64 kernel and this VM is aarch64"),
            "{err}"
        );
    }

    #[test]
    fn rootfs_checks() {
        let mut sb = vec![0u8; 200];
        sb[..4].copy_from_slice(SQUASHFS_MAGIC);
        sb[40..48].copy_from_slice(&200u64.to_le_bytes());
        assert!(check_rootfs(file(&sb).path()).is_ok());
        sb[40..48].copy_from_slice(&4096u64.to_le_bytes());
        assert!(matches!(
            check_rootfs(file(&sb).path()),
            Err(CheckError::Corrupt { .. })
        ));
        assert!(matches!(
            check_rootfs(file(b"not squashfs").path()),
            Err(CheckError::NotSquashfs { .. })
        ));
    }
}
