//! The walk over real folders of the test machine, its stream read back with the host's
//! decoder.

use super::*;
use contract::tree::TreeDecoder;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "nodeos-export-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the stream said, one line per record, data as (offset, length, first byte).
fn listing(root: &Path) -> Vec<String> {
    let mut chunks = Vec::new();
    export(root, &mut |chunk| {
        chunks.push(chunk);
        Ok(())
    })
    .unwrap();
    assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= MAX_CHUNK));
    let mut d = TreeDecoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        d.push(&chunk).unwrap();
        while let Some(r) = d.next_record().unwrap() {
            out.push(match r {
                Record::Dir { path, mode } => format!("dir {path} {mode:o}"),
                Record::File { path, mode, size } => format!("file {path} {mode:o} {size}"),
                Record::Data { offset, data } => {
                    format!("data {offset} {} {}", data.len(), data[0])
                }
                Record::Symlink { path, target } => {
                    format!("link {path} -> {}", String::from_utf8_lossy(target))
                }
                Record::End => "end".into(),
            });
        }
    }
    d.finish().unwrap();
    out
}

#[test]
fn a_tree_with_every_kind_of_entry() {
    let s = Scratch::new();
    let root = &s.0;
    std::fs::create_dir_all(root.join("lost+found")).unwrap();
    std::fs::create_dir_all(root.join("src/lost+found")).unwrap();
    std::fs::write(root.join("src/a.js"), "abc").unwrap();
    std::fs::set_permissions(
        root.join("src/a.js"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(root.join("empty"), "").unwrap();
    symlink("/etc/passwd", root.join("passwd")).unwrap();
    symlink("src", root.join("src-link")).unwrap();
    let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: fifo is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let big = vec![b'z'; MAX_DATA + 10];
    std::fs::write(root.join("big"), &big).unwrap();
    let src_mode = std::fs::metadata(root.join("src")).unwrap().mode() & 0o7777;

    assert_eq!(
        listing(root),
        [
            "file big 644 65546".to_string(),
            format!("data 0 {MAX_DATA} 122"),
            "data 65536 10 122".into(),
            "file empty 644 0".into(),
            format!("dir lost+found {src_mode:o}"),
            "link passwd -> /etc/passwd".into(),
            format!("dir src {src_mode:o}"),
            "file src/a.js 640 3".into(),
            "data 0 3 97".into(),
            format!("dir src/lost+found {src_mode:o}"),
            "link src-link -> src".into(),
            "end".into(),
        ]
    );
}

#[test]
fn a_sparse_file_sends_its_data_only() {
    let s = Scratch::new();
    let path = s.0.join("sparse");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(8 << 30).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[1u8; 4096], 1 << 30).unwrap();
    drop(f);
    if std::fs::metadata(&path).unwrap().blocks() > 64 {
        eprintln!("skipped: {} does not keep holes", s.0.display());
        return;
    }
    let started = std::time::Instant::now();
    let got = listing(&s.0);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        got,
        [
            format!("file sparse 644 {}", 8u64 << 30),
            format!("data {} 4096 1", 1u64 << 30),
            "end".into()
        ]
    );
}

#[test]
fn failures_say_what_failed() {
    let s = Scratch::new();
    let missing = s.0.join("missing");
    let Err(Failure::Read(e)) = export(&missing, &mut |_| Ok(())) else {
        panic!("a missing folder exported");
    };
    assert_eq!(
        e.to_string(),
        format!("open {}: No such file or directory", missing.display())
    );
    // A symlink as the root is not followed either.
    symlink(".", s.0.join("self")).unwrap();
    assert!(matches!(
        export(&s.0.join("self"), &mut |_| Ok(())),
        Err(Failure::Read(_))
    ));
    std::fs::write(s.0.join("f"), "x").unwrap();
    let gone = export(&s.0, &mut |_| Err(io::ErrorKind::BrokenPipe.into()));
    assert!(matches!(gone, Err(Failure::Send(_))));
}
