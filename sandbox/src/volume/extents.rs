//! Files by their data extents (`SEEK_DATA`/`SEEK_HOLE`): copied with their holes kept, and
//! compared in chunks where either has data. Neither ever reads a hole both files share, nor
//! holds more than a chunk of each.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};

/// Bytes read or written at a time.
const CHUNK: usize = 256 << 10;

/// The first offset at or after `offset` where `file` has data (`SeekData`) or a hole
/// (`SeekHole`); `size` when there is none before it (files end in an implicit hole).
fn seek(file: &File, offset: u64, whence: Whence, size: u64) -> io::Result<u64> {
    if offset >= size {
        return Ok(size);
    }
    let at = i64::try_from(offset).map_err(|_| Errno::EFBIG)?;
    match lseek(file.as_raw_fd(), at, whence) {
        Ok(found) => Ok((found as u64).min(size)),
        Err(Errno::ENXIO) => Ok(size),
        Err(e) => Err(e.into()),
    }
}

/// Makes `dst` hold the `size` bytes of `src`, writing only `src`'s data extents: its holes
/// stay holes.
pub fn copy(src: &File, dst: &File, size: u64) -> io::Result<()> {
    dst.set_len(0)?;
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0;
    while at < size {
        let data = seek(src, at, Whence::SeekData, size)?;
        let hole = seek(src, data, Whence::SeekHole, size)?;
        let mut pos = data;
        while pos < hole {
            let want = (hole - pos).min(CHUNK as u64) as usize;
            let n = src.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                return Err(io::Error::other("the file shrank while it was copied"));
            }
            dst.write_all_at(&buf[..n], pos)?;
            pos += n as u64;
        }
        at = hole.max(data + 1);
    }
    dst.set_len(size)
}

/// Whether `a` and `b`, both `size` bytes long, hold the same bytes. Ranges where both have
/// holes are skipped; the rest is read in chunks (a hole reads as zeros).
pub fn same(a: &File, b: &File, size: u64) -> io::Result<bool> {
    let mut buf_a = vec![0u8; CHUNK];
    let mut buf_b = vec![0u8; CHUNK];
    let mut at = 0;
    while at < size {
        let start = seek(a, at, Whence::SeekData, size)?.min(seek(b, at, Whence::SeekData, size)?);
        if start >= size {
            break;
        }
        // Up to where either file's extent ends: within it, neither changes between data and
        // hole.
        let end = boundary(a, start, size)?.min(boundary(b, start, size)?);
        let mut pos = start;
        while pos < end {
            let want = (end - pos).min(CHUNK as u64) as usize;
            a.read_exact_at(&mut buf_a[..want], pos)?;
            b.read_exact_at(&mut buf_b[..want], pos)?;
            if buf_a[..want] != buf_b[..want] {
                return Ok(false);
            }
            pos += want as u64;
        }
        at = end.max(start + 1);
    }
    Ok(true)
}

/// Where the data or hole `file` has at `offset` ends.
fn boundary(file: &File, offset: u64, size: u64) -> io::Result<u64> {
    let data = seek(file, offset, Whence::SeekData, size)?;
    if data > offset {
        Ok(data)
    } else {
        seek(file, offset, Whence::SeekHole, size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    fn sparse(dir: &std::path::Path, name: &str, size: u64, data: &[(u64, &[u8])]) -> File {
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join(name))
            .unwrap();
        f.set_len(size).unwrap();
        for (at, bytes) in data {
            f.write_all_at(bytes, *at).unwrap();
        }
        f
    }

    #[test]
    fn a_sparse_copy_keeps_its_holes_and_is_fast() {
        let dir = tempfile::tempdir().unwrap();
        let size = 8u64 << 30;
        let src = sparse(
            dir.path(),
            "src",
            size,
            &[(1 << 30, &[7; 4096]), (size - 3, b"end")],
        );
        if src.metadata().unwrap().blocks() > 64 {
            eprintln!("skipped: {} does not keep holes", dir.path().display());
            return;
        }
        // The destination had other, non-sparse contents.
        let dst = sparse(dir.path(), "dst", 0, &[(0, &[1; 100_000])]);
        let started = Instant::now();
        copy(&src, &dst, size).unwrap();
        assert!(same(&src, &dst, size).unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let meta = dst.metadata().unwrap();
        assert_eq!(meta.len(), size);
        assert!(meta.blocks() <= 64, "{} blocks", meta.blocks());
        let mut byte = [0u8; 3];
        dst.read_exact_at(&mut byte, size - 3).unwrap();
        assert_eq!(&byte, b"end");
    }

    #[test]
    fn comparisons_see_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let size = 3 * CHUNK as u64 + 17;
        let base = sparse(dir.path(), "base", size, &[(CHUNK as u64 + 5, b"xyz")]);
        // The same bytes written out in full: equal, holes or not.
        let mut full = vec![0u8; size as usize];
        full[CHUNK + 5..CHUNK + 8].copy_from_slice(b"xyz");
        let dense = sparse(dir.path(), "dense", 0, &[(0, &full)]);
        assert!(same(&base, &dense, size).unwrap());
        assert!(same(&dense, &base, size).unwrap());
        // One byte off anywhere: in data, in the other's hole, in the last partial chunk.
        for (i, at) in [CHUNK as u64 + 6, 10, size - 1].into_iter().enumerate() {
            let other = sparse(dir.path(), &format!("o{i}"), 0, &[(0, &full)]);
            other.write_all_at(b"!", at).unwrap();
            assert!(!same(&base, &other, size).unwrap(), "byte {at}");
            assert!(!same(&other, &base, size).unwrap(), "byte {at}");
        }
    }
}
