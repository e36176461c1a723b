//! L1's initramfs: busybox, the KVM and output modules, `/init`, the script and the caller's
//! files.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::assets::Assets;
use crate::cpio::CpioWriter;
use crate::platform::Platform;
use crate::sysroot::Sysroot;
use crate::{holder, host, BoxError, BoxFile};

/// Where the box's own files live in L1; callers may not put files there.
pub(crate) const BOX_DIR: &str = "/kvm-box";
pub(crate) const SCRIPT_PATH: &str = "/kvm-box/script.sh";

/// Lines `/init` writes on the console (first UART) so the host can follow it.
pub(crate) const MARK_READY: &str = "KVM-BOX-READY";
pub(crate) const MARK_NO_KVM: &str = "KVM-BOX-NO-KVM";
pub(crate) const MARK_STATUS: &str = "KVM-BOX-STATUS ";

#[derive(Debug)]
enum Entry {
    Dir,
    Host { path: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A file tree keyed by absolute guest path. A `BTreeMap` orders every directory before what
/// it contains (a path sorts before its extensions), which the kernel's unpacker needs.
#[derive(Debug, Default)]
pub(crate) struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// The fixed part of every box: busybox and its applets, modules, the VM holder if the
    /// platform has one, `/init`, mount points. `modules`: `(name, file)` in load order.
    pub(crate) fn base(
        assets: &Assets,
        platform: &Platform,
        modules: &[(String, PathBuf)],
        holder: Option<&Path>,
        script: &str,
    ) -> Result<Self, BoxError> {
        let mut tree = Tree::default();
        for dir in [
            "/dev",
            "/proc",
            "/sys",
            "/tmp",
            "/root",
            "/run",
            "/etc",
            "/usr/bin",
            "/usr/sbin",
            "/sbin",
        ] {
            tree.dir(dir);
        }
        tree.host_file("/bin/busybox", &assets.busybox, 0o755)?;
        for applet in &assets.applets {
            if applet != "busybox" {
                tree.put(&format!("/bin/{applet}"), Entry::Symlink("busybox".into()));
            }
        }
        for (name, path) in modules {
            tree.host_file(&format!("{BOX_DIR}/modules/{name}.ko"), path, 0o644)?;
        }
        if let Some(holder) = holder {
            tree.host_file(&format!("{BOX_DIR}/{}", holder::NAME), holder, 0o755)?;
        }
        let names: Vec<&str> = modules.iter().map(|(name, _)| name.as_str()).collect();
        let init = init_script(platform, &names, holder.is_some());
        tree.bytes("/init", init.into_bytes(), 0o755);
        tree.bytes(SCRIPT_PATH, script.as_bytes().to_vec(), 0o755);
        tree.bytes(
            "/etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
            0o644,
        );
        tree.bytes("/etc/group", b"root:x:0:\n".to_vec(), 0o644);
        Ok(tree)
    }

    /// Adds a caller's file (or directory, recursively), with its shared libraries if asked:
    /// from `sysroot` when given (a box of another architecture), else from the host's `ldd`.
    pub(crate) fn add(
        &mut self,
        file: &BoxFile,
        sysroot: Option<&Sysroot>,
    ) -> Result<(), BoxError> {
        let guest = normalize_guest(&file.guest)?;
        if guest == "/init" || guest == BOX_DIR || guest.starts_with(&format!("{BOX_DIR}/")) {
            return Err(BoxError::BadFile {
                guest,
                reason: format!("/init and {BOX_DIR} belong to the box"),
            });
        }
        let meta = fs::metadata(&file.host).map_err(BoxError::io("reading", &file.host))?;
        if meta.is_dir() {
            if file.with_libs {
                return Err(BoxError::BadFile {
                    guest,
                    reason: "with_libs is for a file, not a directory".into(),
                });
            }
            return self.host_dir(&guest, &file.host);
        }
        self.host_file(&guest, &file.host, meta.permissions().mode())?;
        if file.with_libs {
            let libraries = match sysroot {
                Some(sysroot) => sysroot.libraries(&file.host)?,
                None => shared_libraries(&file.host)?,
            };
            for (guest_lib, host_lib) in libraries {
                self.host_file(&normalize_guest(&guest_lib)?, &host_lib, 0o755)?;
            }
        }
        Ok(())
    }

    /// Writes the tree as a newc cpio; returns its size in bytes.
    pub(crate) fn write_cpio(&self, dest: &Path) -> Result<u64, BoxError> {
        let file = fs::File::create(dest).map_err(BoxError::io("creating", dest))?;
        let mut cpio = CpioWriter::new(BufWriter::with_capacity(1 << 20, file));
        let err = BoxError::io;
        for (path, entry) in &self.entries {
            let name = &path[1..];
            match entry {
                Entry::Dir => cpio.dir(name, 0o755).map_err(err("writing", dest))?,
                Entry::Bytes { data, mode } => {
                    cpio.file(name, *mode, data).map_err(err("writing", dest))?
                }
                Entry::Symlink(target) => {
                    cpio.symlink(name, target).map_err(err("writing", dest))?
                }
                Entry::Host { path: host, mode } => {
                    let mut f = fs::File::open(host).map_err(err("reading", host))?;
                    let size = f.metadata().map_err(err("reading", host))?.len();
                    cpio.file_from(name, *mode, size, &mut f)
                        .map_err(err("packing", host))?;
                }
            }
        }
        let (_, size) = cpio.finish().map_err(BoxError::io("writing", dest))?;
        Ok(size)
    }

    fn dir(&mut self, path: &str) {
        self.put(path, Entry::Dir);
    }

    fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.put(path, Entry::Bytes { data, mode });
    }

    fn host_file(&mut self, guest: &str, host: &Path, mode: u32) -> Result<(), BoxError> {
        // Follow symlinks: a library path such as libz.so.1 is usually one.
        let path = fs::canonicalize(host).map_err(BoxError::io("resolving", host))?;
        self.put(
            guest,
            Entry::Host {
                path,
                mode: mode & 0o7777,
            },
        );
        Ok(())
    }

    /// A directory copied recursively; symlinks inside it stay symlinks.
    fn host_dir(&mut self, guest: &str, host: &Path) -> Result<(), BoxError> {
        self.dir(guest);
        let entries = fs::read_dir(host).map_err(BoxError::io("reading", host))?;
        for entry in entries {
            let entry = entry.map_err(BoxError::io("reading", host))?;
            let child_host = entry.path();
            let child_guest = format!(
                "{}/{}",
                guest.trim_end_matches('/'),
                entry.file_name().to_string_lossy()
            );
            let meta =
                fs::symlink_metadata(&child_host).map_err(BoxError::io("reading", &child_host))?;
            if meta.file_type().is_symlink() {
                let target =
                    fs::read_link(&child_host).map_err(BoxError::io("reading", &child_host))?;
                self.put(
                    &child_guest,
                    Entry::Symlink(target.to_string_lossy().into_owned()),
                );
            } else if meta.is_dir() {
                self.host_dir(&child_guest, &child_host)?;
            } else if meta.is_file() {
                self.put(
                    &child_guest,
                    Entry::Host {
                        path: child_host,
                        mode: meta.permissions().mode() & 0o7777,
                    },
                );
            }
        }
        Ok(())
    }

    /// Inserts `entry` at `path` (replacing what was there) and the directories above it.
    fn put(&mut self, path: &str, entry: Entry) {
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent {
            let dir_str = dir.to_string_lossy();
            if dir_str != "/" {
                self.entries
                    .entry(dir_str.into_owned())
                    .or_insert(Entry::Dir);
            }
            parent = dir.parent();
        }
        self.entries.insert(path.to_string(), entry);
    }
}

/// An absolute, `..`-free guest path without a trailing slash.
fn normalize_guest(guest: &str) -> Result<String, BoxError> {
    let bad = |reason: &str| BoxError::BadFile {
        guest: guest.to_string(),
        reason: reason.to_string(),
    };
    let path = Path::new(guest);
    if !path.is_absolute() {
        return Err(bad("the guest path must be absolute"));
    }
    let mut out = String::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => {
                out.push('/');
                out.push_str(&part.to_string_lossy());
            }
            Component::ParentDir | Component::Prefix(_) => return Err(bad("`..` is not allowed")),
        }
    }
    if out.is_empty() {
        return Err(bad("the guest path names the root"));
    }
    Ok(out)
}

/// The shared libraries (and the dynamic loader) `binary` needs, from `ldd`, each at its host
/// path: `(path in L1, host file)`.
fn shared_libraries(binary: &Path) -> Result<Vec<(String, PathBuf)>, BoxError> {
    let mut cmd = Command::new("ldd");
    cmd.arg(binary);
    let line = host::describe(&cmd);
    let out = cmd.output().map_err(|source| BoxError::Spawn {
        cmd: line.clone(),
        source,
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ldd exits 1 for a static binary ("not a dynamic executable").
    if !out.status.success() {
        if stdout.contains("not a dynamic executable")
            || stderr.contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        return Err(BoxError::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: stderr.into_owned(),
        });
    }
    let libraries = parse_ldd(&stdout).map_err(|missing| BoxError::BadFile {
        guest: binary.display().to_string(),
        reason: format!("ldd cannot find its libraries: {}", missing.join(", ")),
    })?;
    Ok(libraries
        .into_iter()
        .map(|lib| (lib.to_string_lossy().into_owned(), lib))
        .collect())
}

/// Paths from `ldd` output: `libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)` and the
/// loader's `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file. Err: the libraries
/// reported `not found`.
fn parse_ldd(out: &str) -> Result<Vec<PathBuf>, Vec<String>> {
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in out.lines().map(str::trim) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    missing.push(name.trim().to_string());
                    continue;
                }
                rest
            }
            None => line,
        };
        let path = target.split_whitespace().next().unwrap_or("");
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    if missing.is_empty() {
        Ok(libs)
    } else {
        Err(missing)
    }
}

/// How long `/init` waits for what it starts to be there (`wait_for`): the output device (a
/// virtio console appears when its driver has talked to QEMU, shortly after the module
/// loaded), the VM holder's VM (it takes milliseconds).
const WAIT_CENTISECONDS: u32 = 500;

/// PID 1 of L1 (busybox sh).
fn init_script(platform: &Platform, modules: &[&str], holds_a_vm: bool) -> String {
    let console = platform.console_tty;
    let output = platform.output_tty;
    // Started before the script and waited for, killed with what the script leaves (`holder`).
    let hold = if holds_a_vm {
        let name = holder::NAME;
        format!(
            r#"{BOX_DIR}/{name} /run/{name}.ready &
wait_for -e /run/{name}.ready ||
    echo "kvm-box: {name} holds no VM: L1 may patch its text under the script's VMs""#
        )
    } else {
        String::new()
    };
    format!(
        r#"#!/bin/sh
# kvm-box /init: mount, load KVM, run the script on {output}, report its status, power off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
# First move to a root that is a real mount (a tmpfs), as on any host: programs that sandbox
# themselves with pivot_root (passt) fail on the initramfs's rootfs.
if [ ! -e /.tmpfs-root ]; then
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755 tmpfs /newroot
    cd /
    for f in * .[!.]*; do
        [ -e "$f" ] && [ "$f" != newroot ] && cp -a "$f" /newroot/
    done
    : > /newroot/.tmpfs-root
    exec switch_root /newroot /init
fi
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ip link set lo up 2>/dev/null
# wait_for TEST PATH: until `test TEST PATH` holds, or {WAIT_CENTISECONDS} centiseconds.
wait_for() {{
    i=0
    while ! test "$1" "$2" && [ $i -lt {WAIT_CENTISECONDS} ]; do sleep 0.01; i=$((i + 1)); done
    test "$1" "$2"
}}
for m in {modules}; do
    insmod {BOX_DIR}/modules/$m.ko || echo "kvm-box: insmod $m failed"
done
if [ ! -c /dev/kvm ]; then
    echo "kvm-box: no /dev/kvm after loading the modules"
    echo "{MARK_NO_KVM}"
    exec poweroff -f
fi
{hold}
if ! wait_for -c {output}; then
    echo "kvm-box: no {output} for the script's output"
    exec poweroff -f
fi
echo "{MARK_READY}"
cd /root
# Raw: the script's bytes reach the host as they are (no \n -> \r\n).
{{ stty -F {output} raw -echo; sh {SCRIPT_PATH} </dev/null; }} >{output} 2>&1
status=$?
# Stop what the script left running, then open and close each tty: the last close waits
# until it has sent everything, before the power goes.
kill -KILL -1 2>/dev/null
sleep 0.05
exec </dev/null >/dev/null 2>&1
: >{output}
echo "{MARK_STATUS}$status" >{console}
exec poweroff -f
"#,
        modules = modules.join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_parses() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd0b7f2000)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f0e1c5a0000)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0e1c3b0000)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f0e1c5d0000)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so.2 => not found\n").unwrap_err(),
            vec!["libfoo.so.2".to_string()]
        );
    }

    #[test]
    fn guest_paths_are_normalized() {
        assert_eq!(normalize_guest("/usr//bin/./q/").unwrap(), "/usr/bin/q");
        assert!(normalize_guest("usr/bin").is_err());
        assert!(normalize_guest("/usr/../etc").is_err());
        assert!(normalize_guest("/").is_err());
    }

    #[test]
    fn parents_come_before_children() {
        let mut tree = Tree::default();
        tree.bytes("/a/b/c", b"x".to_vec(), 0o644);
        tree.bytes("/a-z", b"y".to_vec(), 0o644);
        let order: Vec<&str> = tree.entries.keys().map(String::as_str).collect();
        assert_eq!(order, ["/a", "/a-z", "/a/b", "/a/b/c"]);
        assert!(matches!(tree.entries["/a/b"], Entry::Dir));
    }
}
