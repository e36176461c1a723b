//! The VMM process of a `run` — QEMU on this host when `auto` picks it, our VMM where KVM is
//! real — lives in namespaces of its own, sees only its jail and holds no privilege, whoever
//! runs nodeos-vm: root, and an unprivileged user (`nobody` when the tests run as root).
//! docs/security.md, "The VMM process and its jail".

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::BIN;

/// What a jail may hold at its root: the VM's files, `/dev/kvm`, and for QEMU the host's
/// programs and libraries.
const JAIL_ENTRIES: &[&str] = &[
    "bin", "dev", "disk0", "kernel", "lib", "lib64", "sbin", "usr",
];
/// The guest says it runs, then waits for its input to end.
const WAITING_GUEST: &str =
    "console.log('up'); process.stdin.on('end', () => process.exit(0)).resume()";
const NOBODY: (u32, u32) = (65534, 65534);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A place of the user's own: nodeos-vm (which writes the VMM program it carries into the
/// cache under this home), the kernel and image (the user may reach none of the originals), its
/// runtime folder, and a socket listening in it.
struct Home {
    dir: tempfile::TempDir,
    bin: PathBuf,
    kernel: PathBuf,
    rootfs: PathBuf,
    socket: PathBuf,
    _listener: UnixListener,
}

impl Home {
    fn new(owner: Option<(u32, u32)>) -> Home {
        let (kernel, rootfs) = common::artifacts();
        let dir = tempfile::tempdir().unwrap();
        let place = |from: &Path, name: &str| {
            let to = dir.path().join(name);
            if fs::hard_link(from, &to).is_err() {
                fs::copy(from, &to).unwrap();
            }
            to
        };
        let bin = place(Path::new(BIN), "nodeos-vm");
        let (kernel, rootfs) = (place(kernel, "vmlinux"), place(rootfs, "rootfs.img"));
        fs::create_dir(dir.path().join("run")).unwrap();
        let socket = dir.path().join("agent-of-the-user.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        // The files stay as they are (readable; links share their owner with the originals):
        // the folders become the user's.
        if let Some((uid, gid)) = owner {
            for folder in [dir.path().join("run").as_path(), dir.path()] {
                chown(folder, Some(uid), Some(gid)).unwrap();
            }
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Home {
            dir,
            bin,
            kernel,
            rootfs,
            socket,
            _listener: listener,
        }
    }
}

fn first_child(pid: u32) -> Option<u32> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
        .find_map(|c| c.split_whitespace().next()?.parse().ok())
}

fn status_field(pid: u32, key: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in {status}"))
        .trim()
        .to_string()
}

/// Runs a guest that waits, as `user` when given, and looks at its VMM process meanwhile.
fn the_vmm_is_jailed(user: Option<(u32, u32)>, expected_ids: (u32, u32), user_ns: bool) {
    let home = Home::new(user);
    let mut command = Command::new(&home.bin);
    command
        .args(["run", "-i", "--backend", &common::backend(), "--kernel"])
        .arg(&home.kernel)
        .arg("--rootfs")
        .arg(&home.rootfs)
        .args(["--", "node", "-e", WAITING_GUEST])
        .env("HOME", home.dir.path())
        // The VMM program is written into the cache under this home.
        .env_remove("NODEOS_VM_CACHE")
        .env_remove("XDG_CACHE_HOME")
        .env("XDG_RUNTIME_DIR", home.dir.path().join("run"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    let mut child = command.spawn().unwrap();
    let _watchdog = common::Watchdog::new(child.id(), common::BOOT_LIMIT);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    if line.trim() != "up" {
        let mut stderr = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
        panic!("the guest did not start: {line:?}; {stderr}");
    }

    // nodeos-vm, the jail's first process, the VMM: the last of the line.
    let mut vmm = child.id();
    while let Some(next) = first_child(vmm) {
        vmm = next;
    }
    assert_ne!(vmm, child.id(), "no VMM process");
    for ns in ["mnt", "pid", "net", "ipc", "uts"]
        .into_iter()
        .chain(user_ns.then_some("user"))
    {
        let link = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(
            link("self"),
            link(&vmm.to_string()),
            "{ns} namespace shared"
        );
    }
    let root = PathBuf::from(format!("/proc/{vmm}/root"));
    let entries: BTreeSet<String> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(entries.contains("kernel"), "{entries:?}");
    assert!(
        entries.iter().all(|e| JAIL_ENTRIES.contains(&e.as_str())),
        "only its files: {entries:?}"
    );
    let seen_from_the_jail = |path: &Path| root.join(path.strip_prefix("/").unwrap());
    assert!(
        !seen_from_the_jail(&home.socket).exists(),
        "the user's socket is out of its sight"
    );
    let (uid, gid) = (expected_ids.0.to_string(), expected_ids.1.to_string());
    let ids = |key| {
        status_field(vmm, key)
            .split_whitespace()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids("Uid:"), [uid.as_str(); 4]);
    assert_eq!(ids("Gid:"), [gid.as_str(); 4]);
    assert_eq!(status_field(vmm, "NoNewPrivs:"), "1");
    assert_eq!(status_field(vmm, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(vmm, "CapBnd:"), "0000000000000000");
    assert_eq!(status_field(vmm, "Seccomp:"), "2");
    let limits = fs::read_to_string(format!("/proc/{vmm}/limits")).unwrap();
    assert!(
        limits.lines().any(
            |l| l.starts_with("Max core file size") && l.split_whitespace().nth(4) == Some("0")
        ),
        "{limits}"
    );

    child.stdin.take().unwrap().write_all(b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn roots_vmm_is_jailed_as_nobody() {
    if !is_root() {
        println!("skipped: root's jail needs root");
        return;
    }
    the_vmm_is_jailed(None, NOBODY, false);
}

/// Finding: an unprivileged user's VMM was not confined beyond seccomp, and QEMU was never
/// jailed. Now both live in a user namespace of their own, in their jail.
#[test]
fn an_unprivileged_users_vmm_is_jailed_in_a_user_namespace() {
    if is_root() {
        the_vmm_is_jailed(Some(NOBODY), NOBODY, true);
    } else {
        // SAFETY: the id getters have no preconditions.
        let ids = unsafe { (libc::getuid(), libc::getgid()) };
        the_vmm_is_jailed(None, ids, true);
    }
}
