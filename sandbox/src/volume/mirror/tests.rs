//! The mirror between real folders: the host folder's symlinks, hard links and special files.

use super::*;
use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt};

struct Dirs {
    _dir: tempfile::TempDir,
    scratch: PathBuf,
    host: PathBuf,
    outside: PathBuf,
}

fn dirs() -> Dirs {
    let dir = tempfile::tempdir().unwrap();
    let [scratch, host, outside] = ["scratch", "host", "outside"].map(|n| dir.path().join(n));
    for d in [&scratch, &host, &outside] {
        fs::create_dir(d).unwrap();
    }
    fs::write(outside.join("canary"), "canary").unwrap();
    fs::create_dir(outside.join("folder")).unwrap();
    fs::write(outside.join("folder/file"), "outside").unwrap();
    Dirs {
        _dir: dir,
        scratch,
        host,
        outside,
    }
}

impl Dirs {
    fn mirror(&self, keep: &[&str]) -> Result<(), MirrorError> {
        self.mirror_git(keep, Git::Copied).map(drop)
    }

    fn mirror_git(&self, keep: &[&str], git: Git) -> Result<GitRefused, MirrorError> {
        let keep = keep.iter().map(|k| k.as_bytes().to_vec()).collect();
        mirror(
            &Folder::open(&self.scratch).unwrap(),
            &Folder::open(&self.host).unwrap(),
            &keep,
            git,
        )
    }

    fn outside_unchanged(&self) {
        assert_eq!(
            fs::read_to_string(self.outside.join("canary")).unwrap(),
            "canary"
        );
        assert_eq!(
            fs::read_to_string(self.outside.join("folder/file")).unwrap(),
            "outside"
        );
        let names: Vec<_> = fs::read_dir(self.outside.join("folder"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }
}

#[test]
fn host_symlinks_are_replaced_never_followed() {
    let d = dirs();
    symlink(d.outside.join("folder"), d.host.join("link")).unwrap();
    symlink(d.outside.join("canary"), d.host.join("f")).unwrap();
    fs::create_dir(d.host.join("sub")).unwrap();
    symlink(d.outside.join("canary"), d.host.join("sub/x")).unwrap();
    fs::create_dir(d.host.join("gone")).unwrap();
    symlink(d.outside.join("folder"), d.host.join("gone/link")).unwrap();

    fs::create_dir(d.scratch.join("link")).unwrap();
    fs::write(d.scratch.join("link/file"), "guest").unwrap();
    fs::write(d.scratch.join("f"), "guest").unwrap();
    fs::create_dir(d.scratch.join("sub")).unwrap();
    fs::write(d.scratch.join("sub/x"), "guest").unwrap();
    d.mirror(&[]).unwrap();

    d.outside_unchanged();
    for path in ["link/file", "f", "sub/x"] {
        let path = d.host.join(path);
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&path).unwrap(), "guest");
    }
    assert!(!d.host.join("gone").exists());
}

#[test]
fn a_file_linked_elsewhere_is_replaced_not_written_through() {
    let d = dirs();
    let shared = d.outside.join("canary");
    fs::hard_link(&shared, d.host.join("changed")).unwrap();
    fs::hard_link(&shared, d.host.join("chmodded")).unwrap();
    fs::write(d.scratch.join("changed"), "guest").unwrap();
    fs::write(d.scratch.join("chmodded"), "canary").unwrap();
    fs::set_permissions(
        d.scratch.join("chmodded"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mode = fs::metadata(&shared).unwrap().mode();
    d.mirror(&[]).unwrap();
    d.outside_unchanged();
    assert_eq!(fs::metadata(&shared).unwrap().mode(), mode);
    assert_eq!(fs::read_to_string(d.host.join("changed")).unwrap(), "guest");
    let chmodded = fs::metadata(d.host.join("chmodded")).unwrap();
    assert_eq!(chmodded.mode() & 0o7777, 0o600);
    assert_ne!(chmodded.ino(), fs::metadata(&shared).unwrap().ino());
}

#[test]
fn files_are_rewritten_in_place_only_when_they_differ() {
    let d = dirs();
    fs::write(d.host.join("same"), "same").unwrap();
    fs::write(d.host.join("edited"), "old contents").unwrap();
    fs::set_permissions(d.host.join("same"), fs::Permissions::from_mode(0o664)).unwrap();
    fs::write(d.scratch.join("same"), "same").unwrap();
    fs::write(d.scratch.join("edited"), "new").unwrap();
    let before = |n: &str| fs::metadata(d.host.join(n)).unwrap();
    let (same, edited) = (before("same"), before("edited"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    d.mirror(&[]).unwrap();
    let after = |n: &str| fs::metadata(d.host.join(n)).unwrap();
    // Unchanged: not written, and its group-write bit (masked away in the scratch copy) kept.
    assert_eq!(after("same").mtime_nsec(), same.mtime_nsec());
    assert_eq!(after("same").mode() & 0o7777, 0o664);
    // Changed: the same inode, new contents.
    assert_eq!(after("edited").ino(), edited.ino());
    assert_eq!(fs::read_to_string(d.host.join("edited")).unwrap(), "new");
}

const LOST_FOUND: &str = "lost+found";

#[test]
fn special_files_and_kept_paths_stay_lost_found_is_a_folder_like_any() {
    let d = dirs();
    let fifo = std::ffi::CString::new(d.host.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: fifo is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    fs::create_dir(d.host.join(LOST_FOUND)).unwrap();
    fs::create_dir(d.host.join("sub")).unwrap();
    fs::write(d.host.join("sub/kept"), "host").unwrap();
    fs::create_dir(d.host.join("sub").join(LOST_FOUND)).unwrap();
    fs::create_dir(d.scratch.join("sub")).unwrap();
    d.mirror(&["sub/kept"]).unwrap();
    assert!(fs::symlink_metadata(d.host.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(fs::read_to_string(d.host.join("sub/kept")).unwrap(), "host");
    // The images have no lost+found of ext4's: one the guest's tree lacks, it removed.
    assert!(!d.host.join(LOST_FOUND).exists());
    assert!(!d.host.join("sub").join(LOST_FOUND).exists());
}

/// A folder the guest replaced by a file, or removed, keeps the `.git` it holds; what else it
/// held goes. `.GIT` is a `.git` too (a case-insensitive host folder).
#[test]
fn a_folder_holding_git_keeps_it_when_the_guest_replaces_or_removes_it() {
    let d = dirs();
    for repo in ["replaced", "removed/deep"] {
        fs::create_dir_all(d.host.join(repo).join(".git")).unwrap();
        fs::write(d.host.join(repo).join(".git/HEAD"), "ref").unwrap();
        fs::write(d.host.join(repo).join("x"), "x").unwrap();
    }
    fs::create_dir_all(d.host.join("upper/.GIT")).unwrap();
    fs::write(d.scratch.join("replaced"), "a file now").unwrap();
    fs::create_dir(d.scratch.join("upper")).unwrap();
    let refused = d.mirror_git(&[], Git::Protected).unwrap();
    let paths: Vec<_> = refused
        .first
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(paths, ["replaced/.git", "upper/.GIT", "removed/deep/.git"]);
    assert_eq!(refused.count, 3);
    for repo in ["replaced", "removed/deep"] {
        let repo = d.host.join(repo);
        assert_eq!(fs::read_to_string(repo.join(".git/HEAD")).unwrap(), "ref");
        assert!(!repo.join("x").exists(), "the rest went");
    }
    assert!(d.host.join("upper/.GIT").is_dir());
    d.outside_unchanged();
}
