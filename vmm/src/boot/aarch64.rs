//! Booting Linux on arm64 (the kernel's Documentation/arm64/booting.rst): the `Image` at the
//! start of RAM (2 MiB aligned, plus its text offset), the device tree in RAM's last 2 MiB, and
//! the boot vCPU entering the image's first instruction at EL1 with X0 = the tree's address.

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::loader::pe::PE;
use linux_loader::loader::KernelLoader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use super::fdt;
use crate::memory::{GuestMemory, DRAM_START, FDT_MAX_SIZE};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read kernel {path}")]
    KernelOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load kernel {path} (arm64 Image)")]
    KernelLoad {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error(transparent)]
    Fdt(#[from] fdt::Error),
    #[error("the device tree is {size} bytes; at most {FDT_MAX_SIZE} fit")]
    FdtTooBig { size: usize },
    #[error("guest memory of {ram} bytes has no room for the kernel (it ends at {kernel_end:#x}) and the device tree")]
    NoRoom { ram: u64, kernel_end: u64 },
    #[error("cannot write {what} into guest memory")]
    Write {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// An `Image` in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// Its first instruction.
    pub entry: u64,
    /// Where its file ends in guest memory.
    pub end: u64,
}

/// How the boot vCPU starts: PC and X0 (the device tree); the other vCPUs are off until the
/// guest turns them on through PSCI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootEntry {
    pub pc: u64,
    pub fdt: u64,
}

/// Loads the arm64 `Image` at `path` at the start of RAM.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<Kernel, Error> {
    let mut file = File::open(path).map_err(|source| Error::KernelOpen {
        path: path.to_path_buf(),
        source,
    })?;
    let loaded =
        PE::load(mem, Some(GuestAddress(DRAM_START)), &mut file, None).map_err(|source| {
            Error::KernelLoad {
                path: path.to_path_buf(),
                source,
            }
        })?;
    Ok(Kernel {
        entry: loaded.kernel_load.0,
        end: loaded.kernel_end,
    })
}

/// Writes the device tree for `machine` at the end of RAM and returns how the boot vCPU starts.
pub fn configure(
    mem: &GuestMemory,
    kernel: &Kernel,
    machine: &fdt::Machine,
) -> Result<BootEntry, Error> {
    let blob = fdt::build(machine)?;
    if blob.len() as u64 > FDT_MAX_SIZE {
        return Err(Error::FdtTooBig { size: blob.len() });
    }
    let ram_end = mem.last_addr().0 + 1;
    let at = fdt_address(ram_end);
    if at < kernel.end {
        return Err(Error::NoRoom {
            ram: ram_end - DRAM_START,
            kernel_end: kernel.end,
        });
    }
    mem.write_slice(&blob, GuestAddress(at))
        .map_err(|source| Error::Write {
            what: "the device tree",
            source,
        })?;
    Ok(BootEntry {
        pc: kernel.entry,
        fdt: at,
    })
}

/// The device tree's place: the last 2 MiB-aligned 2 MiB of RAM (the boot protocol wants it
/// 8-byte aligned, within 2 MiB and in a 2 MiB region of its own).
fn fdt_address(ram_end: u64) -> u64 {
    (ram_end - FDT_MAX_SIZE) & !(FDT_MAX_SIZE - 1)
}
