//! The jail as the VMM process gets it, seen from inside and from the host: this test binary,
//! started again as a probe ([`PROBE_ENV`]), enters the jail the way `nodeos-vmm` does and
//! reports what it can reach; the host looks at it through /proc meanwhile.
//!
//! Root's jail needs root. An unprivileged user's jail runs as the user who runs the tests, or,
//! when that is root, as `nobody` (so that CI, which runs as root, checks it too).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::*;
use crate::vm::{Device, Disk};

const PROBE_ENV: &str = "NODEOS_VM_JAIL_PROBE";
const PROBE_TEST: &str = "jail::tests::probe";
/// Marks the probe's report among the test harness's own lines.
const SEEN: &str = "SEEN ";
/// `nobody` and `nogroup`: the ids the probes of root's jail become (root's jails take theirs
/// from a range, crate::jail::ids; here the ids are given), and the user an unprivileged probe
/// runs as when the tests run as root.
const NOBODY: u32 = 65534;
const ROOT_JAIL: Identity = Identity::Root {
    uid: NOBODY,
    gid: NOBODY,
};
/// The size of the writable disk: the most the jailed process may write to a file.
const VOLUME_BYTES: u64 = 1 << 20;

#[derive(Serialize, Deserialize)]
struct ProbeRequest {
    request: Request,
    spec: VmSpec,
    /// Where the probe chroots first, a mount whose parent is shared, so that `pivot_root`
    /// fails with EINVAL as on an initramfs: the other paths are as seen from there.
    chroot: Option<PathBuf>,
    /// Host files the probe must not be able to open.
    host_files: Vec<PathBuf>,
    /// A Unix socket listening in the user's home.
    home_socket: PathBuf,
    /// The name of an abstract Unix socket listening in the host's network namespace.
    abstract_socket: String,
    /// A file of the user's that the probe must not be able to remove.
    home_file: PathBuf,
}

/// What the jailed probe could see and do.
#[derive(Debug, Serialize, Deserialize)]
struct Seen {
    spec: VmSpec,
    /// Its root's entries, or why it could not list them.
    root: Result<Vec<String>, String>,
    ids: [u32; 4],
    pid: i32,
    no_new_privs: i32,
    fds: Vec<i32>,
    /// Of the host files, those it opened.
    host_files_opened: Vec<PathBuf>,
    kernel: Option<String>,
    kernel_writable: bool,
    volume_writable: bool,
    root_writable: bool,
    reaches_home_socket: bool,
    reaches_abstract_socket: bool,
    removed_home_file: bool,
}

fn names(dir: &Path) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `f` in a child process that has only this thread, as a VMM process has when it enters
/// its jail (a new user namespace is refused to a process with threads: the test harness runs
/// each test on a thread of its own); exits as the child did.
pub(crate) fn in_single_threaded_child(f: impl FnOnce()) -> ! {
    // SAFETY: the child runs only `f`, on the one thread fork gives it; the harness's other
    // thread only waits for this one.
    match unsafe { libc::fork() } {
        0 => {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            f();
            std::process::exit(0)
        }
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        child => {
            let mut status = 0;
            // SAFETY: status is a valid out-pointer.
            while unsafe { libc::waitpid(child, &mut status, 0) } < 0 {}
            std::process::exit(if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else {
                128 + libc::WTERMSIG(status)
            })
        }
    }
}

/// Not a test of its own: the jailed probe, when this binary is started as one.
#[test]
fn probe() {
    let Ok(request) = std::env::var(PROBE_ENV) else {
        return;
    };
    let probe: ProbeRequest = serde_json::from_str(&request).unwrap();
    close_inherited_fds(3).unwrap();
    in_single_threaded_child(|| jailed_probe(probe))
}

fn jailed_probe(probe: ProbeRequest) {
    if let Some(dir) = &probe.chroot {
        let dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        let mount = |source: &std::ffi::CStr, target: &std::ffi::CStr, flags| {
            // SAFETY: the pointers are null or NUL-terminated strings that outlive the call.
            let ret = unsafe {
                libc::mount(
                    source.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                )
            };
            assert_eq!(ret, 0, "{:?}", std::io::Error::last_os_error());
        };
        // SAFETY: unshare takes flags.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0);
        mount(c"", c"/", libc::MS_REC | libc::MS_PRIVATE);
        mount(&dir, &dir, libc::MS_BIND | libc::MS_REC);
        mount(c"", c"/", libc::MS_SHARED);
        // SAFETY: chroot reads a NUL-terminated string that outlives the call.
        assert_eq!(unsafe { libc::chroot(dir.as_ptr()) }, 0);
        std::env::set_current_dir("/").unwrap();
    }
    let spec = enter(&probe.request, &probe.spec, || Ok(())).unwrap();
    // As the VMM opens its files: before it gives up its privileges.
    let writable = |path: &Path| fs::OpenOptions::new().write(true).open(path).is_ok();
    let volume = spec.disks().find(|d| !d.read_only).unwrap().path.clone();
    let (kernel_writable, volume_writable) = (writable(&spec.kernel), writable(&volume));
    drop_privileges(&probe.request.identity).unwrap();

    // SAFETY: the id getters and prctl take no pointers; fcntl probes descriptor numbers.
    let (ids, pid, no_new_privs, fds) = unsafe {
        (
            [
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            ],
            libc::getpid(),
            libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            (0..1024)
                .filter(|&fd| libc::fcntl(fd, libc::F_GETFD) >= 0)
                .collect(),
        )
    };
    let abstract_addr = SocketAddr::from_abstract_name(&probe.abstract_socket).unwrap();
    let seen = Seen {
        root: names(Path::new("/")),
        ids,
        pid,
        no_new_privs,
        fds,
        host_files_opened: probe
            .host_files
            .into_iter()
            .filter(|p| fs::File::open(p).is_ok())
            .collect(),
        kernel: fs::read_to_string(&spec.kernel).ok(),
        kernel_writable,
        volume_writable,
        root_writable: fs::File::create("/new").is_ok(),
        reaches_home_socket: UnixStream::connect(&probe.home_socket).is_ok(),
        reaches_abstract_socket: UnixStream::connect_addr(&abstract_addr).is_ok(),
        removed_home_file: fs::remove_file(&probe.home_file).is_ok(),
        spec,
    };
    let mut out = std::io::stdout();
    writeln!(out, "{SEEN}{}", serde_json::to_string(&seen).unwrap()).unwrap();
    out.flush().unwrap();
    // Stay until the host has looked (it closes our stdin).
    let _ = std::io::stdin().read_line(&mut String::new());
}

/// What a VMM's console is written to, but for `start > file`: a pipe (its write end).
fn console_pipe() -> std::os::fd::OwnedFd {
    nix::unistd::pipe().unwrap().1
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether this kernel has Landlock.
fn has_landlock() -> bool {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION (1) asks for the ABI version and reads nothing.
    unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0,
            1u32,
        ) >= 1
    }
}

fn ns_links(pid: &str, user: bool) -> BTreeMap<&'static str, PathBuf> {
    let mut kinds = vec!["mnt", "pid", "net", "ipc", "uts"];
    if user {
        kinds.push("user");
    }
    kinds
        .into_iter()
        .map(|ns| (ns, fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap()))
        .collect()
}

/// The files of one probe, in a folder of the probe's user: what the host gives the VM, and
/// what of the user's it must not reach.
struct Setup {
    home: tempfile::TempDir,
    spec: VmSpec,
    dir: PathBuf,
    /// Keep listening while the probe runs.
    _listeners: (UnixListener, UnixListener),
    home_socket: PathBuf,
    abstract_socket: String,
    home_file: PathBuf,
    secret: PathBuf,
}

impl Setup {
    /// Everything in a fresh folder that `owner` owns, when given.
    fn new(owner: Option<(u32, u32)>) -> Setup {
        let home = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            let path = home.path().join(name);
            fs::write(&path, text).unwrap();
            path
        };
        let volume = home.path().join("volume.img");
        fs::File::create(&volume)
            .unwrap()
            .set_len(VOLUME_BYTES)
            .unwrap();
        let spec = VmSpec {
            arch: contract::arch::Arch::host(),
            kernel: file("vmlinux", "the kernel"),
            devices: vec![
                Device::Block(Disk {
                    path: file("rootfs.img", "the root"),
                    read_only: true,
                }),
                Device::Block(Disk {
                    path: volume,
                    read_only: false,
                }),
                Device::AgentLink(home.path().join("agent.sock")),
            ],
            memory_mib: 64,
            cpus: 1,
            cmdline: String::new(),
            seccomp: true,
            start: Default::default(),
            measure_overhead: false,
        };
        let home_socket = home.path().join("ssh-agent.sock");
        static SETUPS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let abstract_socket = format!(
            "nodeos-vm-jail-test-{}-{}",
            std::process::id(),
            SETUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let abstract_addr = SocketAddr::from_abstract_name(&abstract_socket).unwrap();
        let listeners = (
            UnixListener::bind(&home_socket).unwrap(),
            UnixListener::bind_addr(&abstract_addr).unwrap(),
        );
        let dir = home.path().join("jail");
        fs::create_dir(&dir).unwrap();
        let setup = Setup {
            spec,
            dir,
            _listeners: listeners,
            home_socket,
            abstract_socket,
            home_file: file("notes.txt", "mine"),
            secret: file("secret", "host only"),
            home,
        };
        if let Some((uid, gid)) = owner {
            for entry in fs::read_dir(setup.home.path()).unwrap() {
                chown(entry.unwrap().path(), Some(uid), Some(gid)).unwrap();
            }
            chown(setup.home.path(), Some(uid), Some(gid)).unwrap();
        }
        setup
    }

    fn probe_request(&self, identity: Identity) -> ProbeRequest {
        ProbeRequest {
            request: Request {
                identity,
                dir: self.dir.clone(),
                limits: Limits::for_vm(&self.spec, console_pipe().as_fd()).unwrap(),
            },
            spec: self.spec.clone(),
            chroot: None,
            host_files: vec![
                "/etc/passwd".into(),
                self.secret.clone(),
                "/proc/self/status".into(),
                "/dev/null".into(),
            ],
            home_socket: self.home_socket.clone(),
            abstract_socket: self.abstract_socket.clone(),
            home_file: self.home_file.clone(),
        }
    }
}

/// A probe running in its jail, and what it saw.
struct Probe {
    child: std::process::Child,
    /// The jailed process, PID 1 of its namespace.
    inner: String,
    seen: Seen,
}

impl Probe {
    /// Starts `exe` as a probe for `request`, as `user` when given.
    fn start(exe: &Path, request: &ProbeRequest, user: Option<(u32, u32)>) -> Probe {
        let mut command = Command::new(exe);
        command
            .args(["--exact", PROBE_TEST, "--nocapture", "--test-threads=1"])
            .env(PROBE_ENV, serde_json::to_string(request).unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some((uid, gid)) = user {
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn().unwrap();
        let seen: Seen = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map_while(Result::ok)
            .find_map(|l| Some(serde_json::from_str(l.split_once(SEEN)?.1).unwrap()))
            .expect("the probe's report");
        // The probe's single-threaded child, the first process of the jail, then the jailed
        // one: the last of the line.
        let first_child = |pid: &str| {
            fs::read_dir(format!("/proc/{pid}/task"))
                .ok()?
                .filter_map(|t| fs::read_to_string(t.ok()?.path().join("children")).ok())
                .find_map(|c| c.split_whitespace().next().map(String::from))
        };
        let mut inner = child.id().to_string();
        while let Some(next) = first_child(&inner) {
            inner = next;
        }
        Probe { child, inner, seen }
    }

    /// A line of its /proc/PID/`file` starting with `key`, split into words after the key.
    fn proc_line(&self, file: &str, key: &str) -> Vec<String> {
        let text = fs::read_to_string(format!("/proc/{}/{file}", self.inner)).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {text}"));
        line[key.len()..]
            .split_whitespace()
            .map(String::from)
            .collect()
    }

    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

/// What every jail shows, from the host and from inside, for a probe that runs as `ids`.
fn check_jail(probe: &Probe, dir: &Path, ids: (u32, u32), user_ns: bool) {
    let (ours, its) = (ns_links("self", user_ns), ns_links(&probe.inner, user_ns));
    for (ns, link) in &ours {
        assert_ne!(link, &its[ns], "{ns} namespace shared with the host");
    }
    let jail_root = ["dev", "disk0", "disk1", "kernel"].map(String::from);
    assert_eq!(
        names(Path::new(&format!("/proc/{}/root", probe.inner))).unwrap(),
        jail_root
    );
    assert_eq!(
        names(dir).unwrap(),
        [] as [String; 0],
        "seen empty from the host"
    );
    let uid = ids.0.to_string();
    assert_eq!(probe.proc_line("status", "Uid:"), [uid.as_str(); 4]);
    assert_eq!(probe.proc_line("status", "CapEff:"), ["0000000000000000"]);
    assert_eq!(probe.proc_line("status", "CapBnd:"), ["0000000000000000"]);
    assert_eq!(probe.proc_line("status", "NoNewPrivs:"), ["1"]);
    assert_eq!(
        probe.proc_line("limits", "Max core file size"),
        ["0", "0", "bytes"]
    );
    assert_eq!(
        probe.proc_line("limits", "Max open files"),
        ["1024", "1024", "files"]
    );
    let fsize = VOLUME_BYTES.to_string();
    assert_eq!(
        probe.proc_line("limits", "Max file size"),
        [fsize.as_str(), fsize.as_str(), "bytes"]
    );

    let seen = &probe.seen;
    if has_landlock() {
        assert!(seen.root.is_err(), "Landlock: not even its root: {seen:?}");
    } else {
        assert_eq!(seen.root.as_deref(), Ok(&jail_root[..]));
    }
    assert_eq!(seen.ids, [ids.0, ids.0, ids.1, ids.1]);
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
    assert!(seen.volume_writable, "its writable disk");
    assert_eq!(seen.spec.kernel, Path::new("/kernel"));
    let disks: Vec<_> = seen.spec.disks().map(|d| d.path.as_path()).collect();
    assert_eq!(disks, [Path::new("/disk0"), Path::new("/disk1")]);
}

/// What of the user's a jail must not reach: a Unix socket in their home, an abstract socket,
/// their files.
fn check_users_things_out_of_reach(seen: &Seen, setup: &Setup) {
    assert!(!seen.reaches_home_socket, "a socket in the user's home");
    assert!(!seen.reaches_abstract_socket, "an abstract socket");
    assert!(!seen.removed_home_file && setup.home_file.exists());
}

#[test]
fn a_jailed_process_sees_only_its_jail() {
    if !is_root() {
        println!("skipped: root's jail needs root");
        return;
    }
    let setup = Setup::new(None);
    let exe = std::env::current_exe().unwrap();
    let probe = Probe::start(&exe, &setup.probe_request(ROOT_JAIL), None);
    check_jail(&probe, &setup.dir, (NOBODY, NOBODY), false);
    assert_eq!(probe.proc_line("status", "Groups:"), [] as [String; 0]);
    check_users_things_out_of_reach(&probe.seen, &setup);
    probe.finish();
}

/// Finding: a non-root user's VMM was confined by seccomp alone, which let it connect to any
/// Unix socket of the user's and remove the user's files. Now it is jailed as root's is, in a
/// user namespace of its own, with Landlock.
#[test]
fn an_unprivileged_users_jailed_process_sees_only_its_jail() {
    let user = if is_root() {
        (NOBODY, NOBODY)
    } else {
        // SAFETY: the id getters have no preconditions.
        unsafe { (libc::getuid(), libc::getgid()) }
    };
    let setup = Setup::new(is_root().then_some(user));
    // The test binary may be where the user cannot reach it: a copy in their folder runs.
    let exe = setup.home.path().join("probe");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let probe = Probe::start(
        &exe,
        &setup.probe_request(Identity::User),
        is_root().then_some(user),
    );
    check_jail(&probe, &setup.dir, user, true);
    check_users_things_out_of_reach(&probe.seen, &setup);
    probe.finish();
}

/// Finding: root's jail failed where the host's root is an initramfs, which `pivot_root`
/// refuses (EINVAL). A probe chrooted first into a mount whose parent is shared gets the same
/// refusal; the jail then moves its root over `/` and chroots into it.
#[test]
fn where_pivot_root_is_refused_the_jail_moves_its_root_over_slash() {
    if !is_root() {
        println!("skipped: root's jail needs root");
        return;
    }
    let setup = Setup::new(None);
    let base = setup.home.path();
    let exe = std::env::current_exe().unwrap();
    let mut request = setup.probe_request(ROOT_JAIL);
    let from_base = |p: &Path| Path::new("/").join(p.strip_prefix(base).unwrap());
    request.chroot = Some(base.to_path_buf());
    request.request.dir = from_base(&setup.dir);
    request.spec.kernel = from_base(&setup.spec.kernel);
    for device in &mut request.spec.devices {
        if let Device::Block(disk) = device {
            disk.path = from_base(&disk.path);
        }
    }
    request.host_files = vec![from_base(&setup.secret)];
    request.home_file = from_base(&setup.home_file);
    request.home_socket = from_base(&setup.home_socket);
    // /dev/kvm is bound from the host's /dev, which the chroot does not have: a node of the
    // same device there stands in for it.
    fs::create_dir(base.join("dev")).unwrap();
    let kvm = fs::metadata(layout::KVM_DEVICE).map(|m| std::os::unix::fs::MetadataExt::rdev(&m));
    let Ok(rdev) = kvm else {
        println!("skipped: no {}", layout::KVM_DEVICE);
        return;
    };
    let node =
        std::ffi::CString::new(base.join("dev/kvm").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: node is a NUL-terminated path that outlives the call.
    let made = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, rdev) };
    assert_eq!(made, 0);
    let probe = Probe::start(&exe, &request, None);
    check_jail(&probe, &setup.dir, (NOBODY, NOBODY), false);
    check_users_things_out_of_reach(&probe.seen, &setup);
    probe.finish();
}

/// The host's side removes its folder once the jailed process is gone.
#[test]
fn the_host_side_removes_the_jail_folder() {
    let setup = Setup::new(None);
    let console = console_pipe();
    let allowance = cgroup::VMM_MEMORY_ALLOWANCE_MIB;
    let host = HostSide::prepare(Jail::User, &setup.spec, console.as_fd(), allowance).unwrap();
    let dir = host.request().dir.clone();
    assert!(dir.is_dir());
    drop(host);
    assert!(!dir.exists(), "the jail folder is removed");
}
