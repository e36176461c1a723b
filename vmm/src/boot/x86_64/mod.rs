//! Booting Linux on x86-64: putting the kernel and what it reads at boot into guest memory, and
//! saying how the boot vCPU must start: the PVH entry for an ELF vmlinux that has one (the fast
//! path), the 64-bit Linux boot protocol for a bzImage or a vmlinux without a PVH note.

pub mod e820;
pub mod gdt;
pub mod linux;
pub mod mptable;
pub mod paging;
pub mod pvh;

use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::{
    GuestMemory, BOOT_GDT_START, BOOT_IDT_START, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START,
};

/// Offset of the 64-bit entry point (`startup_64`) from a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kernel {path}")]
    KernelOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load kernel {path} ({format})")]
    KernelLoad {
        path: PathBuf,
        format: &'static str,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel command line is {len} bytes with its NUL; at most {CMDLINE_MAX_SIZE} fit")]
    CmdlineTooLong { len: usize },
    #[error("cannot write {what} into guest memory")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
    #[error("cannot write the PVH start info")]
    Pvh(#[source] linux_loader::configurator::Error),
    #[error(transparent)]
    ZeroPage(#[from] linux::Error),
}

/// How the boot vCPU starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// 32-bit protected mode, paging off, flat segments; EBX = `start_info`.
    Pvh { entry: u64, start_info: u64 },
    /// Long mode with the identity map at `page_table` (CR3); RSI = `zero_page`.
    Linux64 {
        entry: u64,
        zero_page: u64,
        page_table: u64,
    },
}

impl BootEntry {
    /// The GDT the entry state is loaded from (and which is written into the guest).
    pub fn gdt(&self) -> &'static [u64; 4] {
        match self {
            BootEntry::Pvh { .. } => &gdt::PVH_GDT,
            BootEntry::Linux64 { .. } => &gdt::LONG_MODE_GDT,
        }
    }
}

/// A kernel in guest memory, and what the boot protocol needs to know about it.
#[derive(Clone, Copy, Debug)]
pub enum Kernel {
    /// ELF vmlinux with a PVH entry point.
    Pvh { entry: u64 },
    /// ELF vmlinux without one: its 64-bit `startup_64`.
    Vmlinux64 { entry: u64 },
    /// bzImage: its setup header and 64-bit entry.
    BzImage { header: setup_header, entry: u64 },
}

/// Loads the kernel at `path` (ELF vmlinux or bzImage) into `mem`.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<Kernel, Error> {
    let open_err = |source| Error::KernelOpen {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(open_err)?;
    let himem = Some(GuestAddress(HIMEM_START));

    if &magic == ELF_MAGIC {
        let loaded =
            Elf::load(mem, None, &mut file, himem).map_err(|source| Error::KernelLoad {
                path: path.to_path_buf(),
                format: "ELF vmlinux",
                source,
            })?;
        Ok(match loaded.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(entry) => Kernel::Pvh { entry: entry.0 },
            _ => Kernel::Vmlinux64 {
                entry: loaded.kernel_load.0,
            },
        })
    } else {
        let loaded =
            BzImage::load(mem, None, &mut file, himem).map_err(|source| Error::KernelLoad {
                path: path.to_path_buf(),
                format: "bzImage",
                source,
            })?;
        let header = loaded.setup_header.unwrap_or_default();
        Ok(Kernel::BzImage {
            header,
            entry: loaded.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET,
        })
    }
}

/// Writes everything the kernel reads at boot — command line, MP table for `cpus` CPUs, memory
/// map with the protocol's start structure, boot GDT (and page tables for the 64-bit entry) —
/// and returns how the boot vCPU starts.
pub fn configure(
    mem: &GuestMemory,
    kernel: &Kernel,
    cmdline: &CStr,
    cpus: u8,
) -> Result<BootEntry, Error> {
    let bytes = cmdline.to_bytes_with_nul();
    if bytes.len() > CMDLINE_MAX_SIZE {
        return Err(Error::CmdlineTooLong { len: bytes.len() });
    }
    mem.write_slice(bytes, GuestAddress(CMDLINE_START))
        .map_err(|source| Error::Write {
            what: "the command line",
            source,
        })?;

    mptable::write(mem, cpus)?;
    let map = e820::guest_memory_map(mem);

    let boot = match *kernel {
        Kernel::Pvh { entry } => {
            let start_info = pvh::write(mem, &map).map_err(Error::Pvh)?;
            BootEntry::Pvh {
                entry,
                start_info: start_info.0,
            }
        }
        Kernel::Vmlinux64 { entry } | Kernel::BzImage { entry, .. } => {
            let header = match kernel {
                Kernel::BzImage { header, .. } => Some(*header),
                _ => None,
            };
            let zero_page = linux::write(mem, header, bytes.len() - 1, &map)?;
            let page_table = paging::write(mem).map_err(|source| Error::Write {
                what: "the boot page tables",
                source,
            })?;
            BootEntry::Linux64 {
                entry,
                zero_page: zero_page.0,
                page_table,
            }
        }
    };

    let gdt: Vec<u8> = boot.gdt().iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(BOOT_GDT_START))
        .map_err(|source| Error::Write {
            what: "the boot GDT",
            source,
        })?;
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|source| Error::Write {
            what: "the boot IDT",
            source,
        })?;
    Ok(boot)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::memory::{EBDA_START, PVH_INFO_START, ZERO_PAGE_START};

    /// A minimal 64-bit ELF with one PT_LOAD segment of `code` at `load_addr` and, if `pvh`,
    /// a PT_NOTE segment with a XEN_ELFNOTE_PHYS32_ENTRY note pointing at `load_addr`.
    pub(crate) fn tiny_elf(code: &[u8], load_addr: u64, pvh: bool) -> Vec<u8> {
        const EHDR: usize = 64;
        const PHDR: usize = 56;
        let phnum: u16 = if pvh { 2 } else { 1 };
        let note_off = EHDR + PHDR * phnum as usize;
        let mut note = Vec::new();
        if pvh {
            note.extend_from_slice(&4u32.to_le_bytes()); // namesz
            note.extend_from_slice(&4u32.to_le_bytes()); // descsz
            note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&(load_addr as u32).to_le_bytes());
        }
        let code_off = (note_off + note.len()).next_multiple_of(16);

        let mut elf = Vec::new();
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&load_addr.to_le_bytes()); // e_entry
        elf.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
        elf.extend_from_slice(&(EHDR as u16).to_le_bytes());
        elf.extend_from_slice(&(PHDR as u16).to_le_bytes());
        elf.extend_from_slice(&phnum.to_le_bytes());
        elf.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
        let phdr = |elf: &mut Vec<u8>, ty: u32, off: usize, addr: u64, len: usize| {
            elf.extend_from_slice(&ty.to_le_bytes());
            elf.extend_from_slice(&7u32.to_le_bytes()); // RWX
            elf.extend_from_slice(&(off as u64).to_le_bytes());
            elf.extend_from_slice(&addr.to_le_bytes()); // vaddr
            elf.extend_from_slice(&addr.to_le_bytes()); // paddr
            elf.extend_from_slice(&(len as u64).to_le_bytes()); // filesz
            elf.extend_from_slice(&(len as u64).to_le_bytes()); // memsz
            elf.extend_from_slice(&16u64.to_le_bytes()); // align
        };
        phdr(&mut elf, 1, code_off, load_addr, code.len()); // PT_LOAD
        if pvh {
            phdr(&mut elf, 4, note_off, 0, note.len()); // PT_NOTE
        }
        elf.extend_from_slice(&note);
        elf.resize(code_off, 0);
        elf.extend_from_slice(code);
        elf
    }

    fn kernel_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn elf_with_pvh_note_boots_through_pvh() {
        let mem = crate::memory::create(64).unwrap().0;
        let f = kernel_file(&tiny_elf(&[0xf4; 32], 0x20_0000, true));
        let kernel = load_kernel(&mem, f.path()).unwrap();
        assert!(matches!(kernel, Kernel::Pvh { entry: 0x20_0000 }));
        assert_eq!(mem.read_obj::<u8>(GuestAddress(0x20_0000)).unwrap(), 0xf4);

        let cmdline = c"console=ttyS0";
        let boot = configure(&mem, &kernel, cmdline, 2).unwrap();
        assert_eq!(
            boot,
            BootEntry::Pvh {
                entry: 0x20_0000,
                start_info: PVH_INFO_START
            }
        );
        let mut line = [0u8; 14];
        mem.read_slice(&mut line, GuestAddress(CMDLINE_START))
            .unwrap();
        assert_eq!(&line, b"console=ttyS0\0");
        let mut mpf = [0u8; 4];
        mem.read_slice(&mut mpf, GuestAddress(EBDA_START)).unwrap();
        assert_eq!(&mpf, b"_MP_");
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(BOOT_GDT_START + 8))
                .unwrap(),
            gdt::PVH_GDT[1]
        );
    }

    #[test]
    fn elf_without_note_boots_in_long_mode() {
        let mem = crate::memory::create(64).unwrap().0;
        let f = kernel_file(&tiny_elf(&[0x90; 16], 0x100_0000, false));
        let kernel = load_kernel(&mem, f.path()).unwrap();
        assert!(matches!(kernel, Kernel::Vmlinux64 { entry: 0x100_0000 }));
        let boot = configure(&mem, &kernel, c"quiet", 1).unwrap();
        assert!(matches!(
            boot,
            BootEntry::Linux64 {
                entry: 0x100_0000,
                zero_page: ZERO_PAGE_START,
                ..
            }
        ));
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(BOOT_GDT_START + 8))
                .unwrap(),
            gdt::LONG_MODE_GDT[1]
        );
    }

    #[test]
    fn garbage_kernel_is_a_clear_error() {
        let mem = crate::memory::create(32).unwrap().0;
        let f = kernel_file(&[0u8; 4096]);
        let err = load_kernel(&mem, f.path()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::KernelLoad {
                    format: "bzImage",
                    ..
                }
            ),
            "{err}"
        );
        let err = load_kernel(&mem, Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(matches!(err, Error::KernelOpen { .. }));
    }

    #[test]
    fn kernel_beyond_memory_is_an_error() {
        let mem = crate::memory::create(32).unwrap().0;
        let f = kernel_file(&tiny_elf(&[0x90; 16], 0x4000_0000, true));
        assert!(matches!(
            load_kernel(&mem, f.path()),
            Err(Error::KernelLoad { .. })
        ));
    }
}
