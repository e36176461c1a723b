//! The Linux x86 boot protocol's zero page (`boot_params`), for the 64-bit entry: a bzImage's
//! setup header (or a fresh one for a vmlinux without a PVH note), the command line pointer and
//! the e820 map.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::GuestAddress;

use super::e820::E820Entry;
use crate::memory::{GuestMemory, CMDLINE_START, ZERO_PAGE_START};

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448; // "HdrS"
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// Boot protocol version from which `cmdline_size` is in the header.
const PROTOCOL_CMDLINE_SIZE: u16 = 0x0206;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the e820 map has {0} entries; the zero page holds {max}", max = E820_MAX)]
    E820TooLong(usize),
    #[error("the command line is {len} bytes; this kernel accepts {max}")]
    CmdlineTooLong { len: usize, max: u32 },
    #[error("cannot write the zero page")]
    Write(#[source] linux_loader::configurator::Error),
}

const E820_MAX: usize = 128;

/// The zero page for a kernel with setup header `header` (a bzImage's, or `None` for a
/// vmlinux), command line length `cmdline_len` (without the NUL) and memory map `map`.
pub fn zero_page(
    header: Option<setup_header>,
    cmdline_len: usize,
    map: &[E820Entry],
) -> Result<boot_params, Error> {
    let mut params = boot_params::default();
    match header {
        Some(hdr) => {
            let (version, max) = (hdr.version, hdr.cmdline_size);
            if version >= PROTOCOL_CMDLINE_SIZE && cmdline_len > max as usize {
                return Err(Error::CmdlineTooLong {
                    len: cmdline_len,
                    max,
                });
            }
            params.hdr = hdr;
        }
        None => {
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
            params.hdr.cmdline_size = cmdline_len as u32;
        }
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.ramdisk_image = 0;
    params.hdr.ramdisk_size = 0;

    if map.len() > E820_MAX {
        return Err(Error::E820TooLong(map.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page; returns its address (the entry RSI).
pub fn write(
    mem: &GuestMemory,
    header: Option<setup_header>,
    cmdline_len: usize,
    map: &[E820Entry],
) -> Result<GuestAddress, Error> {
    let params = zero_page(header, cmdline_len, map)?;
    let boot = BootParams::new(&params, GuestAddress(ZERO_PAGE_START));
    LinuxBootConfigurator::write_bootparams(&boot, mem).map_err(Error::Write)?;
    Ok(GuestAddress(ZERO_PAGE_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::e820::guest_memory_map;
    use vm_memory::Bytes;

    #[test]
    fn vmlinux_zero_page() {
        let mem = crate::memory::create(128).unwrap().0;
        let map = guest_memory_map(&mem);
        assert_eq!(
            write(&mem, None, 42, &map).unwrap(),
            GuestAddress(ZERO_PAGE_START)
        );
        let p: boot_params = mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap();
        let hdr = p.hdr;
        let (flag, magic, loader, ptr, size) = (
            hdr.boot_flag,
            hdr.header,
            hdr.type_of_loader,
            hdr.cmd_line_ptr,
            hdr.cmdline_size,
        );
        assert_eq!((flag, magic, loader), (0xaa55, 0x5372_6448, 0xff));
        assert_eq!((ptr, size), (CMDLINE_START as u32, 42));
        assert_eq!(p.e820_entries as usize, map.len());
        for (i, e) in map.iter().enumerate() {
            let z = p.e820_table[i];
            let (addr, size, kind) = (z.addr, z.size, z.r#type);
            assert_eq!((addr, size, kind), (e.addr, e.size, e.kind));
        }
    }

    #[test]
    fn bzimage_header_is_kept() {
        let mut hdr = setup_header {
            version: 0x020f,
            cmdline_size: 100,
            ..Default::default()
        };
        hdr.loadflags = 1;
        hdr.header = KERNEL_HDR_MAGIC;
        let p = zero_page(Some(hdr), 99, &[]).unwrap();
        let h = p.hdr;
        let (version, loadflags, size, loader) =
            (h.version, h.loadflags, h.cmdline_size, h.type_of_loader);
        assert_eq!((version, loadflags, size, loader), (0x020f, 1, 100, 0xff));
        assert!(matches!(
            zero_page(Some(hdr), 101, &[]),
            Err(Error::CmdlineTooLong { len: 101, max: 100 })
        ));
    }
}
