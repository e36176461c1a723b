//! The VMM process of a `run` — QEMU on this host when `auto` picks it, our VMM where KVM is
//! real — lives in namespaces of its own, sees only its jail and holds no privilege, whoever
//! runs nodeos-vm: root (each VMM as a user of its own), and an unprivileged user (`nobody` when
//! the tests run as root).
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

/// A `run` whose guest waits for its input to end, as `user` when given, and its VMM process.
struct Running {
    home: Home,
    child: std::process::Child,
    /// nodeos-vm, the jail's first process, the VMM: the last of the line.
    vmm: u32,
    _watchdog: common::Watchdog,
}

impl Running {
    fn start(user: Option<(u32, u32)>) -> Running {
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
        let watchdog = common::Watchdog::new(child.id(), common::BOOT_LIMIT);
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim() != "up" {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr);
            panic!("the guest did not start: {line:?}; {stderr}");
        }
        let mut vmm = child.id();
        while let Some(next) = first_child(vmm) {
            vmm = next;
        }
        assert_ne!(vmm, child.id(), "no VMM process");
        Running {
            home,
            child,
            vmm,
            _watchdog: watchdog,
        }
    }

    /// Its uid and gid, each the same for real, effective, saved and file system.
    fn ids(&self) -> (u32, u32) {
        let id = |key| {
            let ids: Vec<u32> = status_field(self.vmm, key)
                .split_whitespace()
                .map(|id| id.parse().unwrap())
                .collect();
            assert!(
                ids.len() == 4 && ids.iter().all(|&i| i == ids[0]),
                "{key} {ids:?}"
            );
            ids[0]
        };
        (id("Uid:"), id("Gid:"))
    }

    /// In namespaces of its own (a user namespace too, when `user_ns`), seeing only its
    /// files, without privileges, filtered, with no core dumps.
    fn check_jailed(&self, user_ns: bool) {
        let vmm = self.vmm;
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
            !seen_from_the_jail(&self.home.socket).exists(),
            "the user's socket is out of its sight"
        );
        assert_eq!(status_field(vmm, "NoNewPrivs:"), "1");
        assert_eq!(status_field(vmm, "CapEff:"), "0000000000000000");
        assert_eq!(status_field(vmm, "CapBnd:"), "0000000000000000");
        assert_eq!(status_field(vmm, "Seccomp:"), "2");
        let limits = fs::read_to_string(format!("/proc/{vmm}/limits")).unwrap();
        assert!(
            limits
                .lines()
                .any(|l| l.starts_with("Max core file size")
                    && l.split_whitespace().nth(4) == Some("0")),
            "{limits}"
        );
    }

    /// Ends the guest's input: the command, and nodeos-vm, end with status 0.
    fn finish(mut self) {
        self.child.stdin.take().unwrap().write_all(b"").unwrap();
        let out = self.child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The ids the host names in `file` (`/etc/passwd`, `/etc/group`).
fn named_ids(file: &str) -> Vec<u32> {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect()
}

/// Finding: every VMM root jailed ran as uid 65534, so two VMs' VMMs could signal, trace or
/// read each other's /proc files. Now each takes a uid and gid of its own, held while it runs.
#[test]
fn roots_vmms_are_jailed_each_as_a_user_of_their_own() {
    if !is_root() {
        println!("skipped: root's jail needs root");
        return;
    }
    let first = Running::start(None);
    let second = Running::start(None);
    let (a, b) = (first.ids(), second.ids());
    assert_ne!(a.0, b.0, "two VMMs, one uid");
    let named: Vec<u32> = named_ids("/etc/passwd")
        .into_iter()
        .chain(named_ids("/etc/group"))
        .collect();
    for (uid, gid) in [a, b] {
        assert_eq!(uid, gid);
        assert!(uid >= 100_000, "from the default range: {uid}");
        assert!(!named.contains(&uid), "{uid} is named by the host");
    }
    for vm in [&first, &second] {
        vm.check_jailed(false);
        assert_eq!(status_field(vm.vmm, "Groups:"), "");
    }
    first.finish();
    second.finish();
}

/// Finding: an unprivileged user's VMM was not confined beyond seccomp, and QEMU was never
/// jailed. Now both live in a user namespace of their own, in their jail.
#[test]
fn an_unprivileged_users_vmm_is_jailed_in_a_user_namespace() {
    let (user, ids) = if is_root() {
        (Some(NOBODY), NOBODY)
    } else {
        // SAFETY: the id getters have no preconditions.
        (None, unsafe { (libc::getuid(), libc::getgid()) })
    };
    let vm = Running::start(user);
    vm.check_jailed(true);
    assert_eq!(vm.ids(), ids);
    vm.finish();
}
