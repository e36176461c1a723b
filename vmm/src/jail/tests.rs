//! The jail as the VMM process gets it, seen from inside and from the host: this test binary,
//! started again as a probe ([`PROBE_ENV`]), enters the jail the way `nodeos-vm vmm` does and
//! reports what it can reach; the host looks at it through /proc meanwhile. Root only.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::*;
use crate::vm::{Device, Disk};

const PROBE_ENV: &str = "NODEOS_VM_JAIL_PROBE";
const PROBE_TEST: &str = "jail::tests::probe";
/// Marks the probe's report among the test harness's own lines.
const SEEN: &str = "SEEN ";
const JAIL: Jail = Jail {
    uid: DEFAULT_UID,
    gid: DEFAULT_GID,
};

#[derive(Serialize, Deserialize)]
struct ProbeRequest {
    dir: PathBuf,
    spec: VmSpec,
    /// Host files the probe must not be able to open.
    host_files: Vec<PathBuf>,
}

/// What the jailed probe could see and do.
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    spec: VmSpec,
    root: Vec<String>,
    dev: Vec<String>,
    ids: [u32; 4],
    groups: i32,
    pid: i32,
    no_new_privs: i32,
    fds: Vec<i32>,
    /// Of the host files, those it opened.
    host_files_opened: Vec<PathBuf>,
    kernel: Option<String>,
    kernel_writable: bool,
    root_writable: bool,
    /// Whether it could connect to a listener in the agent socket's folder on the host.
    reaches_host_listener: bool,
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Not a test of its own: the jailed probe, when this binary is started as one.
#[test]
fn probe() {
    let Ok(request) = std::env::var(PROBE_ENV) else {
        return;
    };
    let request: ProbeRequest = serde_json::from_str(&request).unwrap();
    close_inherited_fds(3).unwrap();
    let spec = enter(&request.dir, &request.spec, || Ok(())).unwrap();
    drop_privileges(&JAIL).unwrap();

    let socket = spec.agent_socket().unwrap().to_path_buf();
    // SAFETY: the id getters and prctl take no pointers; fcntl probes descriptor numbers.
    let (ids, groups, pid, no_new_privs, fds) = unsafe {
        (
            [
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            ],
            libc::getgroups(0, std::ptr::null_mut()),
            libc::getpid(),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            (0..1024)
                .filter(|&fd| libc::fcntl(fd, libc::F_GETFD) >= 0)
                .collect(),
        )
    };
    let seen = Seen {
        root: names(Path::new("/")),
        dev: names(Path::new("/dev")),
        ids,
        groups,
        pid,
        no_new_privs,
        fds,
        host_files_opened: request
            .host_files
            .into_iter()
            .filter(|p| fs::File::open(p).is_ok())
            .collect(),
        kernel: fs::read_to_string(&spec.kernel).ok(),
        kernel_writable: fs::OpenOptions::new()
            .write(true)
            .open(&spec.kernel)
            .is_ok(),
        root_writable: fs::File::create("/new").is_ok(),
        reaches_host_listener: UnixStream::connect(hybrid_listener(&socket)).is_ok(),
        spec,
    };
    let mut out = std::io::stdout();
    writeln!(out, "{SEEN}{}", serde_json::to_string(&seen).unwrap()).unwrap();
    out.flush().unwrap();
    // Stay until the host has looked (it closes our stdin).
    let _ = std::io::stdin().read_line(&mut String::new());
    std::process::exit(0);
}

fn hybrid_listener(socket: &Path) -> PathBuf {
    contract::hybrid::host_listener_path(socket, contract::READY_PORT)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ns_links(pid: &str) -> BTreeMap<&'static str, PathBuf> {
    ["mnt", "pid", "net", "ipc", "uts"]
        .into_iter()
        .map(|ns| (ns, fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap()))
        .collect()
}

#[test]
fn a_jailed_process_sees_only_its_jail() {
    if !is_root() {
        println!("skipped: the jail needs root");
        return;
    }
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let path = files.path().join(name);
        fs::write(&path, text).unwrap();
        path
    };
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("agent.sock");
    let _listener = UnixListener::bind(hybrid_listener(&socket)).unwrap();
    let spec = VmSpec {
        kernel: file("vmlinux", "the kernel"),
        devices: vec![
            Device::Block(Disk {
                path: file("rootfs.img", "the root"),
                read_only: true,
            }),
            Device::Block(Disk {
                path: file("volume.img", "a volume"),
                read_only: true,
            }),
            Device::AgentLink(socket.clone()),
        ],
        memory_mib: 64,
        cpus: 1,
        cmdline: String::new(),
        seccomp: true,
    };
    let host = HostSide::prepare(&spec).unwrap();
    let secret = file("secret", "host only");
    let request = ProbeRequest {
        dir: host.dir().to_path_buf(),
        spec,
        host_files: vec![
            "/etc/passwd".into(),
            secret.clone(),
            "/proc/self/status".into(),
            "/dev/null".into(),
            sockets.path().join("agent.sock_1025"),
        ],
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", PROBE_TEST, "--nocapture", "--test-threads=1"])
        .env(PROBE_ENV, serde_json::to_string(&request).unwrap())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen: Seen = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| Some(serde_json::from_str(l.split_once(SEEN)?.1).unwrap()))
        .expect("the probe's report");

    // From the host, while it waits: the jailed process is the child of the first one (of
    // its test thread).
    let tasks = fs::read_dir(format!("/proc/{}/task", child.id())).unwrap();
    let inner = tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
        .find_map(|c| c.split_whitespace().next().map(String::from))
        .expect("the jailed process");
    let (ours, its) = (ns_links("self"), ns_links(&inner));
    for (ns, link) in &ours {
        assert_ne!(link, &its[ns], "{ns} namespace shared with the host");
    }
    let status = fs::read_to_string(format!("/proc/{inner}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"; 4],
        "{uid_line}"
    );
    let jail_root = names(Path::new(&format!("/proc/{inner}/root")));
    assert_eq!(jail_root, ["dev", "disk0", "disk1", "kernel"]);
    assert!(
        names(host.dir()).is_empty(),
        "the host sees the jail folder empty"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());

    // From inside.
    assert_eq!(seen.root, jail_root);
    assert_eq!(seen.dev, ["kvm"]);
    assert_eq!(
        seen.ids,
        [DEFAULT_UID, DEFAULT_UID, DEFAULT_GID, DEFAULT_GID]
    );
    assert_eq!(seen.groups, 0, "supplementary groups");
    assert_eq!(seen.pid, 1, "PID 1 of its namespace");
    assert_eq!(seen.no_new_privs, 1);
    assert_eq!(seen.fds, [0, 1, 2], "no inherited descriptor");
    assert!(
        seen.host_files_opened.is_empty(),
        "{:?}",
        seen.host_files_opened
    );
    assert_eq!(seen.kernel.as_deref(), Some("the kernel"));
    assert!(!seen.kernel_writable && !seen.root_writable);
    assert!(
        !seen.reaches_host_listener,
        "the VMM connects to no host socket: the parent's connector does"
    );
    assert_eq!(seen.spec.kernel, Path::new("/kernel"));
    let disks: Vec<_> = seen.spec.disks().map(|d| d.path.as_path()).collect();
    assert_eq!(disks, [Path::new("/disk0"), Path::new("/disk1")]);

    let dir = host.dir().to_path_buf();
    drop(host);
    assert!(!dir.exists(), "the jail folder is removed");
}
