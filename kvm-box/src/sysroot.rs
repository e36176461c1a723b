//! An architecture's sysroot: Debian packages of that architecture unpacked (not installed)
//! into one tree, `<cache>/kvm-box/<arch>/sysroot`, with everything they depend on. A box
//! whose architecture is not the host's finds a program's shared libraries there instead of
//! with the host's `ldd`; callers take programs from it too (QEMU for arm64, say).
//!
//! The tree only grows: each package version is unpacked once (`sysroot.d/unpacked/`), and
//! each asked-for package's dependencies are resolved once (`sysroot.d/asked/`; delete
//! `sysroot.d` and `sysroot` to start over). A lock file serialises processes and threads.

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Component, Path, PathBuf};

use contract::arch::Arch;

use crate::apt::{self, Apt};
use crate::elf;
use crate::platform::Platform;
use crate::BoxError;

/// What every dynamically linked program needs: the C library and loader, and libgcc_s
/// (Rust programs unwind with it).
pub const BASE_PACKAGES: &[&str] = &["libc6", "libgcc-s1"];

/// Symlinks followed at most while resolving one path, as the kernel's limit.
const MAX_LINKS: usize = 40;

#[derive(Debug, Clone)]
pub struct Sysroot {
    root: PathBuf,
    platform: &'static Platform,
}

impl Sysroot {
    /// The sysroot of `arch` in `cache_dir`, with `packages` and their dependencies unpacked
    /// in it (downloaded the first time; about 1 s of apt per new set, plus the downloads).
    pub fn ensure(cache_dir: &Path, arch: Arch, packages: &[&str]) -> Result<Sysroot, BoxError> {
        let platform = Platform::of(arch);
        let dir = platform.arch_dir(cache_dir);
        let root = dir.join("sysroot");
        let meta = dir.join("sysroot.d");
        for sub in [root.clone(), meta.join("asked"), meta.join("unpacked")] {
            fs::create_dir_all(&sub).map_err(BoxError::io("creating", &sub))?;
        }
        let lock_path = meta.join("lock");
        let lock = fs::File::create(&lock_path).map_err(BoxError::io("creating", &lock_path))?;
        lock.lock().map_err(BoxError::io("locking", &lock_path))?;

        let new: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|p| !meta.join("asked").join(p).exists())
            .collect();
        if !new.is_empty() {
            let apt = Apt::private(arch, &dir.join("apt"))?;
            let closure = apt.with_lists(&new.join(" "), || apt.closure(&new))?;
            let missing: Vec<apt::Package> = closure
                .into_iter()
                .filter(|p| !meta.join("unpacked").join(p.key()).exists())
                .collect();
            if !missing.is_empty() {
                tracing::info!(count = missing.len(), root = %root.display(), "unpacking packages into the sysroot");
                let downloads = tempfile::Builder::new()
                    .prefix(".debs.")
                    .tempdir_in(&meta)
                    .map_err(BoxError::io("creating a download directory in", &meta))?;
                let debs = apt.download(&missing, downloads.path())?;
                for (package, deb) in missing.iter().zip(debs) {
                    apt::extract(&deb, &root)?;
                    mark(&meta.join("unpacked").join(package.key()))?;
                }
            }
            for package in new {
                mark(&meta.join("asked").join(package))?;
            }
        }
        Ok(Sysroot { root, platform })
    }

    /// The directory the packages are unpacked in.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The file a path of the target system names, following symlinks inside the sysroot
    /// (absolute ones from its root, as they would be on the target). `None` if there is none.
    pub fn resolve(&self, guest: &str) -> Option<PathBuf> {
        let mut todo: VecDeque<String> = parts(Path::new(guest));
        let mut at: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = todo.pop_front() {
            if part == ".." {
                at.pop();
                continue;
            }
            let host = self.host_path(&at).join(&part);
            let meta = fs::symlink_metadata(&host).ok()?;
            if !meta.file_type().is_symlink() {
                at.push(part);
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = fs::read_link(&host).ok()?;
            if target.is_absolute() {
                at.clear();
            }
            for (i, p) in parts(&target).into_iter().enumerate() {
                todo.insert(i, p);
            }
        }
        let host = self.host_path(&at);
        host.is_file().then_some(host)
    }

    fn host_path(&self, parts: &[String]) -> PathBuf {
        parts.iter().fold(self.root.clone(), |p, part| p.join(part))
    }

    /// `(path on the target, file here)` of the dynamic loader and every shared library
    /// `binary` needs, theirs included, found in the loader's default directories.
    pub(crate) fn libraries(&self, binary: &Path) -> Result<Vec<(String, PathBuf)>, BoxError> {
        let bad = |reason: String| BoxError::BadFile {
            guest: binary.display().to_string(),
            reason,
        };
        let mut found = Vec::new();
        let mut seen = BTreeSet::new();
        let mut missing = Vec::new();
        let mut todo = VecDeque::from([binary.to_path_buf()]);
        while let Some(file) = todo.pop_front() {
            let data = fs::read(&file).map_err(BoxError::io("reading", &file))?;
            let dynamic = elf::parse(&data).map_err(|source| BoxError::Elf {
                path: file.clone(),
                source,
            })?;
            let wanted = elf::machine_name(dynamic.machine);
            if wanted != self.platform.arch.name() {
                return Err(bad(format!(
                    "{} is for {wanted}, the box for {}",
                    file.display(),
                    self.platform.arch
                )));
            }
            if let Some(loader) = dynamic.interpreter {
                if seen.insert(loader.clone()) {
                    match self.resolve(&loader) {
                        Some(host) => found.push((loader, host)),
                        None => missing.push(loader),
                    }
                }
            }
            for name in dynamic.needed {
                if !seen.insert(name.clone()) {
                    continue;
                }
                let hit = self.platform.library_dirs().into_iter().find_map(|dir| {
                    let guest = format!("{dir}/{name}");
                    self.resolve(&guest).map(|host| (guest, host))
                });
                match hit {
                    Some((guest, host)) => {
                        todo.push_back(host.clone());
                        found.push((guest, host));
                    }
                    None => missing.push(name),
                }
            }
        }
        if !missing.is_empty() {
            return Err(bad(format!(
                "not in the {} sysroot {}: {} (unpack their Debian packages there with \
                 Sysroot::ensure)",
                self.platform.arch,
                self.root.display(),
                missing.join(", ")
            )));
        }
        Ok(found)
    }
}

/// A path's normal components and `..`s, in order (the root and `.` dropped).
fn parts(path: &Path) -> VecDeque<String> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn mark(path: &Path) -> Result<(), BoxError> {
    fs::write(path, b"").map_err(BoxError::io("writing", path))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::elf::{build, EM_AARCH64, EM_X86_64};

    /// A sysroot laid out as Debian 12's arm64 packages lay theirs out.
    fn fake_sysroot() -> (tempfile::TempDir, Sysroot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let put = |path: &str, data: Vec<u8>| {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, data).unwrap();
        };
        put(
            "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
            build(EM_AARCH64, None, &[]),
        );
        put(
            "lib/aarch64-linux-gnu/libc.so.6",
            build(EM_AARCH64, None, &["ld-linux-aarch64.so.1"]),
        );
        put(
            "usr/lib/aarch64-linux-gnu/libz.so.1.2.13",
            build(EM_AARCH64, None, &["libc.so.6"]),
        );
        put(
            "usr/lib/aarch64-linux-gnu/libx86.so.1",
            build(EM_X86_64, None, &[]),
        );
        // Relative and absolute links, as the packages have them.
        symlink(
            "aarch64-linux-gnu/ld-linux-aarch64.so.1",
            root.join("lib/ld-linux-aarch64.so.1"),
        )
        .unwrap();
        symlink(
            "/usr/lib/aarch64-linux-gnu/libz.so.1.2.13",
            root.join("usr/lib/aarch64-linux-gnu/libz.so.1"),
        )
        .unwrap();
        let sysroot = Sysroot {
            root,
            platform: &crate::platform::AARCH64,
        };
        (dir, sysroot)
    }

    #[test]
    fn links_resolve_inside_the_sysroot() {
        let (_dir, sysroot) = fake_sysroot();
        let root = sysroot.path();
        assert_eq!(
            sysroot.resolve("/lib/ld-linux-aarch64.so.1"),
            Some(root.join("lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"))
        );
        // Absolute: from the sysroot's root, not the host's.
        assert_eq!(
            sysroot.resolve("/usr/lib/aarch64-linux-gnu/libz.so.1"),
            Some(root.join("usr/lib/aarch64-linux-gnu/libz.so.1.2.13"))
        );
        assert_eq!(
            sysroot.resolve("/lib/../lib/aarch64-linux-gnu/libc.so.6"),
            Some(root.join("lib/aarch64-linux-gnu/libc.so.6"))
        );
        assert_eq!(sysroot.resolve("/lib/nothing.so"), None);
        assert_eq!(sysroot.resolve("/lib"), None, "a directory is no file");
        symlink("loop", root.join("lib/loop")).unwrap();
        assert_eq!(sysroot.resolve("/lib/loop"), None);
    }

    #[test]
    fn libraries_are_found_transitively() {
        let (dir, sysroot) = fake_sysroot();
        let program = dir.path().join("program");
        fs::write(
            &program,
            build(
                EM_AARCH64,
                Some("/lib/ld-linux-aarch64.so.1"),
                &["libz.so.1", "libc.so.6"],
            ),
        )
        .unwrap();
        let root = sysroot.path();
        assert_eq!(
            sysroot.libraries(&program).unwrap(),
            [
                (
                    "/lib/ld-linux-aarch64.so.1".to_string(),
                    root.join("lib/aarch64-linux-gnu/ld-linux-aarch64.so.1")
                ),
                (
                    "/usr/lib/aarch64-linux-gnu/libz.so.1".to_string(),
                    root.join("usr/lib/aarch64-linux-gnu/libz.so.1.2.13")
                ),
                (
                    "/lib/aarch64-linux-gnu/libc.so.6".to_string(),
                    root.join("lib/aarch64-linux-gnu/libc.so.6")
                ),
                (
                    "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1".to_string(),
                    root.join("lib/aarch64-linux-gnu/ld-linux-aarch64.so.1")
                ),
            ]
        );
    }

    #[test]
    fn missing_and_foreign_libraries_are_named() {
        let (dir, sysroot) = fake_sysroot();
        let program = dir.path().join("program");
        fs::write(
            &program,
            build(EM_AARCH64, None, &["libc.so.6", "libnope.so.2"]),
        )
        .unwrap();
        let err = sysroot.libraries(&program).unwrap_err().to_string();
        assert!(
            err.contains("libnope.so.2") && !err.contains("libc.so.6"),
            "{err}"
        );

        fs::write(&program, build(EM_AARCH64, None, &["libx86.so.1"])).unwrap();
        let err = sysroot.libraries(&program).unwrap_err().to_string();
        assert!(err.contains("is for x86_64, the box for aarch64"), "{err}");
    }
}
