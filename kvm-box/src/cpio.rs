//! A writer for the `newc` cpio format, the one the kernel unpacks as an initramfs.
//!
//! Each entry is a 110-byte ASCII header (`070701` and thirteen 8-digit hex fields), the
//! NUL-terminated name padded to 4 bytes, then the data padded to 4 bytes. The archive ends
//! with an entry named `TRAILER!!!`. The kernel creates a file only inside a directory that
//! already exists, so callers write parents before children.

use std::io::{self, Read, Write};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: u64 = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            written: 0,
        }
    }

    /// A directory; `name` is relative to the archive root (`bin`, `usr/lib`).
    pub fn dir(&mut self, name: &str, perm: u32) -> io::Result<()> {
        self.header(name, S_IFDIR | (perm & 0o7777), 0, 2)?;
        Ok(())
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        let target = target.as_bytes();
        self.header(name, S_IFLNK | 0o777, target.len() as u64, 1)?;
        self.put(target)?;
        self.pad()
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.file_from(name, perm, data.len() as u64, &mut &data[..])
    }

    /// A regular file of exactly `size` bytes read from `data`.
    pub fn file_from(
        &mut self,
        name: &str,
        perm: u32,
        size: u64,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        self.header(name, S_IFREG | (perm & 0o7777), size, 1)?;
        let copied = io::copy(&mut data.take(size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{name}: expected {size} bytes, read {copied} (file changed while packing?)"
                ),
            ));
        }
        self.written += copied;
        self.pad()
    }

    /// Writes the trailer and returns the sink and the archive's size in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.header(TRAILER, 0, 0, 1)?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }

    fn header(&mut self, name: &str, mode: u32, size: u64, nlink: u32) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: {size} bytes is over newc's 4 GiB limit"),
            )
        })?;
        if name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?}: NUL in a file name"),
            ));
        }
        let ino = if name == TRAILER { 0 } else { self.next_ino };
        self.next_ino += 1;
        let name_len = name.len() as u32 + 1;
        let fields: [u32; 13] = [
            ino, mode, 0, /* uid */ 0, /* gid */ nlink, 0, /* mtime */ size32, 0, 0,
            /* dev */ 0, 0, /* rdev */
            name_len, 0, /* check */
        ];
        let mut header = Vec::with_capacity(HEADER_LEN as usize + name.len() + 4);
        header.extend_from_slice(MAGIC);
        for field in fields {
            header.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        header.extend_from_slice(name.as_bytes());
        header.push(0);
        self.put(&header)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(header: &[u8], index: usize) -> u32 {
        let start = 6 + index * 8;
        u32::from_str_radix(std::str::from_utf8(&header[start..start + 8]).unwrap(), 16).unwrap()
    }

    #[test]
    fn entries_are_aligned_and_readable() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("bin", 0o755).unwrap();
        w.file("bin/hello", 0o755, b"hello").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let (bytes, size) = w.finish().unwrap();
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(bytes.len() % 4, 0);

        // Walk the archive back.
        let mut off = 0;
        let mut seen = Vec::new();
        loop {
            let h = &bytes[off..];
            assert_eq!(&h[..6], MAGIC);
            let mode = field(h, 1);
            let size = field(h, 6) as usize;
            let name_len = field(h, 11) as usize;
            let name = std::str::from_utf8(&h[110..110 + name_len - 1])
                .unwrap()
                .to_string();
            let data_start = (off + 110 + name_len + 3) & !3;
            let data = bytes[data_start..data_start + size].to_vec();
            off = (data_start + size + 3) & !3;
            if name == TRAILER {
                break;
            }
            seen.push((name, mode, data));
        }
        assert_eq!(off, bytes.len());
        assert_eq!(seen[0], ("bin".to_string(), S_IFDIR | 0o755, vec![]));
        assert_eq!(
            seen[1],
            ("bin/hello".to_string(), S_IFREG | 0o755, b"hello".to_vec())
        );
        assert_eq!(
            seen[2],
            ("bin/sh".to_string(), S_IFLNK | 0o777, b"busybox".to_vec())
        );
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut w = CpioWriter::new(Vec::new());
        let err = w.file_from("f", 0o644, 10, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
