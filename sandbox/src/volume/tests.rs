//! Volumes: parsing, packing with the real mke2fs, and copy-back from tree streams, honest and
//! hostile (written byte by byte, as a guest with raw access to its disk and agent could).

use super::*;
use std::collections::VecDeque;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::time::Instant;

use contract::tree::{Record, TreeEncoder};
use vmm::error_chain::one_line;

#[test]
fn specs() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().to_str().unwrap();
    let v = Volume::parse(&format!("{host}:/app")).unwrap();
    assert_eq!(v.guest, "/app");
    assert_eq!(v.mode, Mode::Scratch);
    assert_eq!(v.host, fs::canonicalize(host).unwrap());
    assert_eq!(
        Volume::parse(&format!("{host}:/a/b/:ro")).unwrap().guest,
        "/a/b"
    );
    assert_eq!(
        Volume::parse(&format!("{host}:/app:rw")).unwrap().mode,
        Mode::ReadWrite { git: false }
    );
    for git in ["rw,git", "git,rw"] {
        assert_eq!(
            Volume::parse(&format!("{host}:/app:{git}")).unwrap().mode,
            Mode::ReadWrite { git: true }
        );
    }
    for bad in [
        host.to_string(),
        format!("{host}:app"),
        format!("{host}:/"),
        format!("{host}:/a/../b"),
        format!("{host}:/app:rx"),
        format!("{host}:/app:git"),
        format!("{host}:/app:ro,git"),
        format!("{host}:/app:rw,git,git"),
        format!("{host}:/app:rw,ro"),
        format!("{host}:/app:rw,"),
        format!("{host}:/a:b:ro"),
        format!("{host}:/a\0b"),
        ":/app".to_string(),
        "/nonexistent/x:/app".to_string(),
    ] {
        let err = Volume::parse(&bad).unwrap_err().to_string();
        assert!(err.starts_with("--volume "), "{err}");
    }
    let file = dir.path().join("f");
    fs::write(&file, "x").unwrap();
    assert!(matches!(
        Volume::parse(&format!("{}:/app", file.display())),
        Err(Error::NotAFolder { .. })
    ));
}

/// Every entry under `root` but those under `skip`: (path, kind, mode, contents or target).
fn tree(root: &Path, skip: &[&Path]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if skip.contains(&path.as_path()) {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&path).unwrap();
            let what = if m.is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else if m.is_dir() {
                stack.push(path);
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                let data = fs::read(&path).unwrap();
                format!("{:o} {}", m.mode() & 0o7777, String::from_utf8_lossy(&data))
            };
            out.push((rel, what));
        }
    }
    out.sort();
    out
}

/// A stream handed over in the chunks given.
struct Chunks(VecDeque<Vec<u8>>);

impl TreeSource for Chunks {
    fn next_chunk(&mut self, _deadline: Instant) -> Result<Option<Vec<u8>>, crate::agent::Error> {
        Ok(self.0.pop_front())
    }
}

/// `stream` in chunks of 64 KiB, as the agent sends it.
fn chunks(stream: &[u8]) -> Chunks {
    Chunks(stream.chunks(64 << 10).map(<[u8]>::to_vec).collect())
}

/// The stream an honest agent sends for `root` (every byte as data; no holes).
fn stream_of(root: &Path) -> Vec<u8> {
    fn walk(e: &mut TreeEncoder, root: &Path, dir: &Path) {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for path in names {
            let rel = path.strip_prefix(root).unwrap().as_os_str().as_bytes();
            let rel = TreePath::new(rel).unwrap();
            let m = fs::symlink_metadata(&path).unwrap();
            let mode = m.mode() & 0o7777;
            if m.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                e.put(&Record::Symlink {
                    path: rel,
                    target: target.as_os_str().as_bytes(),
                });
            } else if m.is_dir() {
                e.put(&Record::Dir { path: rel, mode });
                walk(e, root, &path);
            } else {
                let data = fs::read(&path).unwrap();
                e.put(&Record::File {
                    path: rel,
                    mode,
                    size: data.len() as u64,
                });
                e.put(&Record::Data {
                    offset: 0,
                    data: &data,
                });
            }
        }
    }
    let mut e = TreeEncoder::new();
    walk(&mut e, root, root);
    e.put(&Record::End);
    e.take(usize::MAX)
}

/// Records written by hand, with no check at all.
mod raw {
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }

    pub fn dir(path: &str, mode: u32) -> Vec<u8> {
        let mut r = vec![1];
        bytes(&mut r, path.as_bytes());
        r.extend_from_slice(&mode.to_le_bytes());
        r
    }

    pub fn file(path: &str, mode: u32, size: u64) -> Vec<u8> {
        let mut r = vec![2];
        bytes(&mut r, path.as_bytes());
        r.extend_from_slice(&mode.to_le_bytes());
        r.extend_from_slice(&size.to_le_bytes());
        r
    }

    pub fn data(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut r = vec![3];
        r.extend_from_slice(&offset.to_le_bytes());
        bytes(&mut r, data);
        r
    }

    pub fn symlink(path: &str, target: &str) -> Vec<u8> {
        let mut r = vec![4];
        bytes(&mut r, path.as_bytes());
        bytes(&mut r, target.as_bytes());
        r
    }

    pub const END: [u8; 1] = [0];
}

/// A host folder with a few files, a canary file outside it, and a scratch folder.
struct Setup {
    dir: tempfile::TempDir,
    volume: Volume,
    canary: PathBuf,
    /// Holds a fresh, empty scratch folder for each copy-back.
    scratch: PathBuf,
    copies: std::cell::Cell<usize>,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("project");
        fs::create_dir_all(host.join("src")).unwrap();
        fs::write(host.join("package.json"), "{}").unwrap();
        fs::write(host.join("src/a.js"), "a").unwrap();
        let canary = dir.path().join("outside/canary");
        fs::create_dir_all(canary.parent().unwrap()).unwrap();
        fs::write(&canary, "canary").unwrap();
        let scratch = dir.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        let volume = Volume::parse(&format!("{}:/app:rw", host.display())).unwrap();
        Setup {
            dir,
            volume,
            canary,
            scratch,
            copies: Default::default(),
        }
    }

    fn budget() -> Budget {
        Budget {
            bytes: 64 << 20,
            entries: 1000,
            time: COPY_BACK_TIME,
        }
    }

    /// Everything but the scratch folder.
    fn snapshot(&self) -> Vec<(String, String)> {
        tree(self.dir.path(), &[&self.scratch])
    }

    fn copy_back(&self, stream: &[u8], budget: &Budget) -> Result<Vec<Refusal>, Error> {
        let scratch = self
            .scratch
            .join(self.copies.replace(self.copies.get() + 1).to_string());
        fs::create_dir(&scratch).unwrap();
        self.volume.copy_back(budget, &mut chunks(stream), &scratch)
    }

    /// `stream` is refused with an error saying `why`, and nothing but the scratch folder
    /// changes.
    fn refused(&self, stream: &[u8], budget: &Budget, why: &str) {
        let before = self.snapshot();
        let err = self.copy_back(stream, budget).unwrap_err();
        let text = one_line(&err);
        assert!(
            matches!(err, Error::NotCopiedBack { .. }) && text.contains(why),
            "{text}"
        );
        assert!(text.contains("the folder is as it was"), "{text}");
        assert_eq!(self.snapshot(), before, "{text}");
        assert_eq!(fs::read_to_string(&self.canary).unwrap(), "canary");
    }
}

/// What debugfs says of `request` in `image`.
fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's top folder is the host folder's: its names (no `lost+found` of ext4's, the
/// user's own kept with what it holds), its mode, its modification time.
#[test]
fn the_images_top_folder_is_the_host_folders() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("project");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("a.js"), "a").unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o750)).unwrap();
    let mtime = 1_000_000_000;
    let times = [libc::timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    }; 2];
    let c_host = std::ffi::CString::new(host.as_os_str().as_bytes()).unwrap();
    // SAFETY: c_host is NUL-terminated and times two valid timespecs; both outlive the call.
    let set = unsafe { libc::utimensat(libc::AT_FDCWD, c_host.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(set, 0);

    let image = dir.path().join("vol.img");
    let v = Volume::parse(&format!("{}:/app:ro", host.display())).unwrap();
    v.pack(&image).unwrap();
    let names: Vec<String> = debugfs(&image, "ls -p /")
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_string))
        .filter(|n| !n.is_empty() && n != "." && n != "..")
        .collect();
    assert_eq!(names, ["a.js"]);
    let top = debugfs(&image, "stat /");
    assert!(top.contains("Mode:  0750"), "{top}");
    assert!(top.contains(&format!("mtime: {mtime:#x}")), "{top}");

    // A lost+found of the user's stays, with its files.
    fs::create_dir(host.join("lost+found")).unwrap();
    fs::write(host.join("lost+found/mine"), "x").unwrap();
    v.pack(&image).unwrap();
    assert!(debugfs(&image, "ls -p /lost+found").contains("/mine/"));
}

/// A project without its dependencies gets room for them: `npm ci` in the guest writes tens of
/// thousands of files and hundreds of MB. The room is free: the image stays sparse.
#[test]
fn an_empty_folder_has_room_for_npm_ci() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("project");
    fs::create_dir(&host).unwrap();
    let image = dir.path().join("vol.img");
    Volume::parse(&format!("{}:/app:rw", host.display()))
        .unwrap()
        .pack(&image)
        .unwrap();
    let stats = debugfs(&image, "stats");
    let field = |name: &str| -> u64 {
        let line = stats.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..].trim().parse().unwrap()
    };
    assert!(field("Free inodes:") >= 100_000, "{stats}");
    assert!(field("Free blocks:") * 4096 >= 1 << 30, "{stats}");
    let on_disk = fs::metadata(&image).unwrap().blocks() * 512;
    assert!(on_disk < 16 << 20, "{on_disk} bytes on disk");
}

/// Packs with the real mke2fs (owners checked with debugfs), then copies back what an
/// honest guest sends after deleting, creating and overwriting files.
#[test]
fn pack_and_copy_back_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("project");
    fs::create_dir_all(host.join("src/deep")).unwrap();
    fs::write(host.join("package.json"), "{}").unwrap();
    fs::write(host.join("src/a.js"), "a").unwrap();
    fs::write(host.join("src/deep/b.js"), "b").unwrap();
    fs::set_permissions(host.join("src/a.js"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(host.join("package.json"), fs::Permissions::from_mode(0o664)).unwrap();
    symlink("a.js", host.join("src/link")).unwrap();
    let before = tree(&host, &[]);

    let v = Volume::parse(&format!("{}:/app:rw", host.display())).unwrap();
    let image = dir.path().join("vol.img");
    let budget = v.pack(&image).unwrap();
    assert_eq!(budget.bytes, fs::metadata(&image).unwrap().len());
    assert!(budget.entries >= 4096, "{budget:?}");
    let listing = Command::new("debugfs")
        .args(["-R", "ls -l /src"])
        .arg(&image)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let a = listing.lines().find(|l| l.ends_with(" a.js")).unwrap();
    assert!(a.contains(" 1000   1000 "), "{listing}");

    // Unchanged: the mirror changes nothing, the group-writable file included.
    let guest = dir.path().join("guest");
    fs::create_dir(&guest).unwrap();
    for (rel, _) in &before {
        let (from, to) = (host.join(rel), guest.join(rel));
        let m = fs::symlink_metadata(&from).unwrap();
        if m.is_symlink() {
            symlink(fs::read_link(&from).unwrap(), &to).unwrap();
        } else if m.is_dir() {
            fs::create_dir_all(&to).unwrap();
        } else {
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&from, &to).unwrap();
        }
    }
    let scratch = dir.path().join("s1");
    fs::create_dir(&scratch).unwrap();
    let refused = v
        .copy_back(&budget, &mut chunks(&stream_of(&guest)), &scratch)
        .unwrap();
    assert_eq!(refused, []);
    assert_eq!(tree(&host, &[]), before);

    // What a guest does: delete, create, overwrite.
    fs::remove_dir_all(guest.join("src/deep")).unwrap();
    fs::write(guest.join("package.json"), "new").unwrap();
    fs::create_dir(guest.join("out")).unwrap();
    fs::write(guest.join("out/n.txt"), "new").unwrap();
    let scratch = dir.path().join("s2");
    fs::create_dir(&scratch).unwrap();
    v.copy_back(&budget, &mut chunks(&stream_of(&guest)), &scratch)
        .unwrap();
    let after = tree(&host, &[]);
    let names: Vec<&str> = after.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"src/deep"), "{after:?}");
    assert!(names.contains(&"out/n.txt"), "{after:?}");
    let pkg = after.iter().find(|(n, _)| n == "package.json").unwrap();
    assert_eq!(
        pkg.1, "644 new",
        "rewritten: the mode is the guest's, masked"
    );
    let link = after.iter().find(|(n, _)| n == "src/link").unwrap();
    assert_eq!(link.1, "-> a.js");
    let a = after.iter().find(|(n, _)| n == "src/a.js").unwrap();
    assert_eq!(a.1, "600 a");
}

#[test]
fn paths_out_of_the_volume_are_refused() {
    let s = Setup::new();
    let budget = Setup::budget();
    let dotdot = [
        raw::file("../../x", 0o644, 1),
        raw::data(0, b"x"),
        raw::END.to_vec(),
    ];
    s.refused(
        &dotdot.concat(),
        &budget,
        "path \"../../x\": has a '..' component",
    );
    let absolute = format!("{}/x", s.canary.parent().unwrap().display());
    let absolute = [
        raw::file(&absolute, 0o644, 1),
        raw::data(0, b"x"),
        raw::END.to_vec(),
    ];
    s.refused(&absolute.concat(), &budget, "absolute");
    let inner = [
        raw::dir("src", 0o755),
        raw::dir("src/../..", 0o755),
        raw::END.to_vec(),
    ];
    s.refused(&inner.concat(), &budget, "has a '..' component");
}

/// debugfs rdump followed a symlink it had just made when a regular file of the same name
/// came next: any host file could be overwritten. A name is taken once, refused or not.
#[test]
fn a_symlink_then_a_file_of_the_same_name_is_refused() {
    let s = Setup::new();
    let budget = Setup::budget();
    let canary = s.canary.display().to_string();
    for link in [canary.as_str(), "../outside/canary", "package.json"] {
        let stream = [
            raw::symlink("passwd", link),
            raw::file("passwd", 0o644, 5),
            raw::data(0, b"owned"),
            raw::END.to_vec(),
        ];
        s.refused(&stream.concat(), &budget, "the guest sent passwd twice");
    }
    // Through a symlink to a folder: its "folder" is no folder the stream made.
    let stream = [
        raw::symlink("d", "src"),
        raw::file("d/x", 0o644, 1),
        raw::data(0, b"x"),
        raw::END.to_vec(),
    ];
    s.refused(
        &stream.concat(),
        &budget,
        "the guest sent d/x outside a folder",
    );
    // A file first, then a symlink of the same name.
    let stream = [
        raw::file("f", 0o644, 0),
        raw::symlink("f", "/etc/passwd"),
        raw::END.to_vec(),
    ];
    s.refused(&stream.concat(), &budget, "the guest sent f twice");
}

#[test]
fn duplicates_and_orphans_are_refused() {
    let s = Setup::new();
    let budget = Setup::budget();
    for (stream, why) in [
        (
            vec![raw::dir("d", 0o755), raw::dir("d", 0o755)],
            "the guest sent d twice",
        ),
        (
            vec![raw::file("f", 0o644, 0), raw::file("f", 0o644, 0)],
            "the guest sent f twice",
        ),
        (
            vec![raw::dir("d", 0o755), raw::file("d", 0o644, 0)],
            "the guest sent d twice",
        ),
        (vec![raw::file("nowhere/f", 0o644, 0)], "outside a folder"),
        // d's entries must follow it: once e has come, d is done.
        (
            vec![
                raw::dir("d", 0o755),
                raw::dir("e", 0o755),
                raw::file("d/f", 0o644, 0),
            ],
            "the guest sent d/f outside a folder",
        ),
        (
            vec![raw::file("f", 0o644, 0)],
            "stops before its end record",
        ),
        (
            vec![raw::END.to_vec(), raw::END.to_vec()],
            "after its end record",
        ),
    ] {
        let mut stream = stream.concat();
        if !why.contains("end record") {
            stream.extend(raw::END);
        }
        s.refused(&stream, &budget, why);
    }
}

#[test]
fn symlinks_leaving_the_volume_are_refused_and_the_rest_copied() {
    let s = Setup::new();
    let stream = [
        raw::dir("src", 0o755),
        raw::symlink("src/up", ".."),
        raw::symlink("src/same", "./a.js"),
        raw::symlink("src/out", "../../outside/canary"),
        raw::symlink("src/back", "a/../../.."),
        raw::symlink("abs", &s.canary.display().to_string()),
        raw::file("kept", 0o644, 4),
        raw::data(0, b"kept"),
        raw::END.to_vec(),
    ]
    .concat();
    let refused = s.copy_back(&stream, &Setup::budget()).unwrap();
    let host = &s.volume.host;
    let lines: Vec<String> = refused.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            format!(
                "{}: the guest's symlink to \"../../outside/canary\" was not copied back: its target leads out of the volume; left as it was",
                host.join("src/out").display()
            ),
            format!(
                "{}: the guest's symlink to \"a/../../..\" was not copied back: its target has '..' after a name; left as it was",
                host.join("src/back").display()
            ),
            format!(
                "{}: the guest's symlink to {:?} was not copied back: its target is absolute; left as it was",
                host.join("abs").display(),
                s.canary.display().to_string()
            ),
        ]
    );
    assert_eq!(
        tree(host, &[]),
        [
            ("kept".into(), "644 kept".into()),
            ("src".into(), "dir 755".into()),
            ("src/same".into(), "-> ./a.js".into()),
            ("src/up".into(), "-> ..".into()),
        ]
    );
    assert_eq!(fs::read_to_string(&s.canary).unwrap(), "canary");
}

/// The host's own symlink that leaves the folder (made by the host's user) is not the guest's
/// to keep: sent back unchanged it is refused, and left as it was without a word.
#[test]
fn a_host_symlink_sent_back_unchanged_is_left_without_a_word() {
    let s = Setup::new();
    let host = &s.volume.host;
    symlink(&s.canary, host.join("cache")).unwrap();
    let before = tree(host, &[]);
    let guest = s.dir.path().join("guest");
    fs::create_dir(&guest).unwrap();
    fs::create_dir(guest.join("src")).unwrap();
    fs::write(guest.join("package.json"), "{}").unwrap();
    fs::write(guest.join("src/a.js"), "a").unwrap();
    symlink(&s.canary, guest.join("cache")).unwrap();
    let refused = s.copy_back(&stream_of(&guest), &Setup::budget()).unwrap();
    assert_eq!(refused, []);
    assert_eq!(tree(host, &[]), before);
}

#[test]
fn modes_are_masked() {
    let s = Setup::new();
    let stream = [
        raw::dir("bin", 0o7777),
        raw::file("bin/suid", 0o4777, 1),
        raw::data(0, b"x"),
        raw::file("bin/sgid", 0o2775, 0),
        raw::file("bin/locked", 0o000, 0),
        raw::dir("bin/sealed", 0o000),
        raw::END.to_vec(),
    ]
    .concat();
    s.copy_back(&stream, &Setup::budget()).unwrap();
    let host = &s.volume.host;
    let mode = |p: &str| fs::symlink_metadata(host.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("bin"), 0o755);
    assert_eq!(mode("bin/suid"), 0o755);
    assert_eq!(mode("bin/sgid"), 0o755);
    // The owner may always read what came back (and search its folders).
    assert_eq!(mode("bin/locked"), 0o400);
    assert_eq!(mode("bin/sealed"), 0o500);
}

#[test]
fn budgets_are_enforced() {
    let s = Setup::new();
    let small = Budget {
        bytes: 10,
        ..Setup::budget()
    };
    let stream = [
        raw::file("a", 0o644, 6),
        raw::data(0, b"123456"),
        raw::file("b", 0o644, 6),
        raw::data(0, b"123456"),
        raw::END.to_vec(),
    ];
    s.refused(
        &stream.concat(),
        &small,
        "more than 10 bytes of file data, more than the volume's disk holds",
    );
    let few = Budget {
        entries: 2,
        ..Setup::budget()
    };
    let stream = [
        raw::dir("a", 0o755),
        raw::dir("b", 0o755),
        raw::dir("c", 0o755),
        raw::END.to_vec(),
    ];
    s.refused(&stream.concat(), &few, "more than 2 entries");
    let no_time = Budget {
        time: Duration::ZERO,
        ..Setup::budget()
    };
    s.refused(&raw::END, &no_time, "did not send its tree within 0 s");
    // A file's size is no data: a huge sparse one is within any byte budget.
    let sparse = [raw::file("huge", 0o644, 1 << 40), raw::END.to_vec()];
    s.copy_back(&sparse.concat(), &small).unwrap();
}

/// An 8 GiB file with 4 KiB of data travels as its data and lands sparse, quickly.
#[test]
fn a_sparse_file_stays_sparse() {
    let s = Setup::new();
    let size = 8u64 << 30;
    let stream = [
        raw::file("sparse", 0o644, size),
        raw::data(1 << 30, &[7; 4096]),
        raw::END.to_vec(),
    ]
    .concat();
    let budget = Budget {
        bytes: 4096,
        ..Setup::budget()
    };
    let started = Instant::now();
    s.copy_back(&stream, &budget).unwrap();
    let elapsed = started.elapsed();
    let meta = fs::metadata(s.volume.host.join("sparse")).unwrap();
    assert_eq!(meta.len(), size);
    assert!(meta.blocks() <= 64, "{} blocks", meta.blocks());
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    let mut byte = [0u8; 1];
    let f = fs::File::open(s.volume.host.join("sparse")).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut byte, (1 << 30) + 4095).unwrap();
    assert_eq!(byte, [7]);
}

/// A file record and its data.
fn file_with(path: &str, mode: u32, data: &[u8]) -> Vec<u8> {
    [raw::file(path, mode, data.len() as u64), raw::data(0, data)].concat()
}

/// A `.git` as it is: its tree when it is a folder, its bytes when it is a file.
fn git_state(path: &Path) -> (Vec<(String, String)>, Option<Vec<u8>>) {
    if path.is_dir() {
        (tree(path, &[]), None)
    } else {
        (Vec::new(), fs::read(path).ok())
    }
}

/// What a guest with a `:rw` volume could do to the next `git` the user runs on the host: a
/// hook, a config that names a program (core.fsmonitor, core.pager), a `.git` file pointing
/// elsewhere, a repository of its own, a repository removed.
fn git_setup(options: &str) -> (Setup, Vec<u8>) {
    let s = Setup::new();
    let host = &s.volume.host;
    fs::create_dir_all(host.join(".git/hooks")).unwrap();
    fs::write(host.join(".git/config"), "[core]\n").unwrap();
    fs::write(host.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    fs::write(host.join(".git/hooks/pre-commit.sample"), "#!/bin/sh\n").unwrap();
    fs::create_dir_all(host.join("sub")).unwrap();
    fs::write(host.join("sub/.git"), "gitdir: ../.git/modules/sub\n").unwrap();
    fs::create_dir_all(host.join("gone/.git")).unwrap();
    fs::write(host.join("gone/.git/config"), "[core]\n").unwrap();
    fs::write(host.join("gone/other"), "other").unwrap();
    let volume = Volume::parse(&format!("{}:/app:{options}", host.display())).unwrap();
    let s = Setup { volume, ..s };
    let stream = [
        raw::dir(".git", 0o755),
        file_with(".git/HEAD", 0o644, b"ref: refs/heads/main\n"),
        file_with(
            ".git/config",
            0o644,
            b"[core]\n\tfsmonitor = /app/evil.sh\n\n",
        ),
        raw::dir(".git/hooks", 0o755),
        file_with(".git/hooks/post-checkout", 0o755, b"#!/bin/sh\n"),
        file_with(".git/hooks/pre-commit.sample", 0o644, b"#!/bin/sh\n"),
        raw::dir("nested", 0o755),
        raw::dir("nested/.git", 0o755),
        file_with("nested/.git/config", 0o644, b"[core]\n"),
        file_with("out.txt", 0o644, b"out"),
        file_with("package.json", 0o644, b"new"),
        raw::dir("src", 0o755),
        file_with("src/a.js", 0o644, b"a"),
        raw::dir("sub", 0o755),
        file_with("sub/.git", 0o644, b"gitdir: /etc\n"),
        raw::END.to_vec(),
    ]
    .concat();
    (s, stream)
}

/// Finding: a guest could plant `.git/hooks/*` or `.git/config` through `:rw`, run by the
/// host's git next time. By default nothing named `.git` changes, one line says what was
/// refused, and the rest of the guest's changes are copied back.
#[test]
fn changes_under_git_are_refused_and_said_the_rest_copied() {
    let (s, stream) = git_setup("rw");
    let host = &s.volume.host;
    let gits = [".git", "sub/.git", "gone/.git"].map(|g| host.join(g));
    let before: Vec<_> = gits.iter().map(|g| git_state(g)).collect();
    let refused = s.copy_back(&stream, &Setup::budget()).unwrap();
    let lines: Vec<String> = refused.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [format!(
            "{}: the guest's 5 changes under .git were not copied back: .git/config, \
             .git/hooks/post-checkout, nested/.git, sub/.git, gone/.git; left as it was (git \
             would run what a guest puts there; -v HOST:GUEST:rw,git copies them)",
            host.display()
        )]
    );
    let after: Vec<_> = gits.iter().map(|g| git_state(g)).collect();
    assert_eq!(after, before, "every .git as it was");
    assert!(!host.join(".git/hooks/post-checkout").exists());
    assert_eq!(
        tree(host, &[&host.join(".git"), &host.join("gone/.git")]),
        [
            ("gone".into(), "dir 755".into()),
            ("nested".into(), "dir 755".into()),
            ("out.txt".into(), "644 out".into()),
            ("package.json".into(), "644 new".into()),
            ("src".into(), "dir 755".into()),
            ("src/a.js".into(), "644 a".into()),
            ("sub".into(), "dir 755".into()),
            (
                "sub/.git".into(),
                "644 gitdir: ../.git/modules/sub\n".into()
            ),
        ],
        "the rest is the guest's: gone/other removed, out.txt new, package.json rewritten"
    );
    assert_eq!(fs::read_to_string(&s.canary).unwrap(), "canary");

    // The host's own tree sent back as it is: nothing refused, nothing said.
    let same = s.copy_back(&stream_of(host), &Setup::budget()).unwrap();
    assert_eq!(same, []);
    assert_eq!(
        gits.iter().map(|g| git_state(g)).collect::<Vec<_>>(),
        before
    );
}

/// `-v HOST:GUEST:rw,git`: the user lets the guest change its repositories.
#[test]
fn rw_git_copies_changes_under_git() {
    let (s, stream) = git_setup("rw,git");
    let host = &s.volume.host;
    let refused = s.copy_back(&stream, &Setup::budget()).unwrap();
    assert_eq!(refused, []);
    assert_eq!(
        fs::read_to_string(host.join(".git/config")).unwrap(),
        "[core]\n\tfsmonitor = /app/evil.sh\n\n"
    );
    assert!(host.join(".git/hooks/post-checkout").is_file());
    assert!(host.join("nested/.git/config").is_file());
    assert_eq!(
        fs::read_to_string(host.join("sub/.git")).unwrap(),
        "gitdir: /etc\n"
    );
    assert!(!host.join("gone").exists());
}
