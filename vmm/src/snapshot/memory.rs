//! Guest memory in a snapshot file: written as a sparse file (all-zero pages stay holes), and
//! mapped back copy-on-write by crate::memory::from_snapshot.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::memory::GuestMemory;

/// The unit of holes: a page.
pub const PAGE: usize = 4096;
/// Memory is copied out through a buffer of this size.
const CHUNK: usize = 1 << 20;

/// The bytes of RAM in `mem`, all regions together.
pub fn len(mem: &GuestMemory) -> u64 {
    mem.iter().map(|r| r.len()).sum()
}

/// Writes `mem`'s regions one after the other at `offset` in `file`, skipping all-zero pages
/// (the file must be empty there: they stay holes). Returns the bytes written. The VM must be
/// paused: memory is read as it is.
pub fn write(file: &File, mem: &GuestMemory, offset: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut at = offset;
    let mut written = 0;
    for region in mem.iter() {
        let region_len = region.len() as usize;
        let mut done = 0;
        while done < region_len {
            let n = CHUNK.min(region_len - done);
            let chunk = &mut buf[..n];
            region
                .read_slice(chunk, MemoryRegionAddress(done as u64))
                .map_err(io::Error::other)?;
            written += write_nonzero(file, chunk, at + done as u64)?;
            done += n;
        }
        at += region_len as u64;
    }
    Ok(written)
}

/// Writes the runs of pages of `data` that are not all zero at `offset` onwards.
fn write_nonzero(file: &File, data: &[u8], offset: u64) -> io::Result<u64> {
    let mut written = 0;
    let mut run: Option<usize> = None;
    let pages = data.chunks(PAGE).enumerate();
    for (i, page) in pages {
        let zero = page.iter().all(|&b| b == 0);
        match (run, zero) {
            (None, false) => run = Some(i * PAGE),
            (Some(start), true) => {
                file.write_all_at(&data[start..i * PAGE], offset + start as u64)?;
                written += (i * PAGE - start) as u64;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        file.write_all_at(&data[start..], offset + start as u64)?;
        written += (data.len() - start) as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use vm_memory::GuestAddress;

    use super::*;

    #[test]
    fn zero_pages_stay_holes() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 64 * PAGE)]).unwrap();
        mem.write_slice(&[1; 10], GuestAddress(3 * PAGE as u64 + 5))
            .unwrap();
        mem.write_slice(&[2; PAGE], GuestAddress(63 * PAGE as u64))
            .unwrap();
        let file = tempfile::tempfile().unwrap();
        let written = write(&file, &mem, 2 * PAGE as u64).unwrap();
        assert_eq!(written, 2 * PAGE as u64, "two pages are not zero");
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 66 * PAGE as u64);
        assert!(
            meta.blocks() * 512 <= 4 * PAGE as u64,
            "{} bytes allocated",
            meta.blocks() * 512
        );
        let mut back = vec![0u8; 64 * PAGE];
        file.read_exact_at(&mut back, 2 * PAGE as u64).unwrap();
        let mut orig = vec![0u8; 64 * PAGE];
        mem.read_slice(&mut orig, GuestAddress(0)).unwrap();
        assert!(back == orig);
    }
}
