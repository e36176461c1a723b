//! The shim with the real thing: Debian's containerd, started by each test as a private
//! instance (its root, state and socket in a temporary folder), importing the NodeOS image
//! `nodeos-vm image export` writes, and `ctr` running it with runc and with our shim
//! (`--runtime io.containerd.nodeos.v2`), whose microVMs run on this host's backend.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sandbox::artifacts::{Artifact, Store};
use sandbox::oci_image::{self, ImageName};

const IMAGE: &str = "docker.io/library/nodeos:latest";
const RUNTIME: &str = "io.containerd.nodeos.v2";
const NAMESPACE: &str = "nodeos-test";
/// The most any one `ctr` command may take (a microVM's boot under TCG included).
const CTR_TIME: &str = "180";

/// The NodeOS image as an archive, exported once per root image (kept in the target folder).
fn image_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let rootfs = Store::from_env()
            .unwrap()
            .ensure(Artifact::Rootfs, false)
            .unwrap();
        let build = rootfs
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        let archive = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nodeos-{build}.tar"));
        if !archive.exists() {
            let name = ImageName::parse("nodeos").unwrap();
            oci_image::export(&rootfs, &name, &archive).unwrap();
        }
        archive
    })
}

/// Whether this test may run containerd of its own (it needs root); says why not.
fn can_run_containerd() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        println!("skipped: a containerd of the test's own needs root");
    }
    root
}

/// A containerd of the test's own, with the NodeOS image imported and our shim on its PATH.
struct Containerd {
    dir: tempfile::TempDir,
    daemon: Child,
}

impl Containerd {
    fn start() -> Containerd {
        let containerd = vmm::host_packages::ensure("containerd", "containerd").unwrap();
        vmm::host_packages::ensure("runc", "runc").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let p = dir.path().display();
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{p}/root\"\nstate = \"{p}/state\"\n\
                 [grpc]\naddress = \"{p}/containerd.sock\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\ndisable = true\n"
            ),
        )
        .unwrap();
        // containerd finds a runtime's shim on its PATH: ours is this build's.
        let shim_dir = Path::new(env!("CARGO_BIN_EXE_containerd-shim-nodeos-v2"))
            .parent()
            .unwrap();
        let path = format!(
            "{}:{}",
            shim_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let daemon = Command::new(containerd)
            .arg("--config")
            .arg(&config)
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .unwrap();
        let ours = Containerd { dir, daemon };
        let until = Instant::now() + Duration::from_secs(30);
        while !ours.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < until,
                "containerd did not start: {}",
                ours.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let archive = image_archive().to_str().unwrap();
        let imported = ours.ctr_ok(&["image", "import", archive]);
        assert!(imported.contains(IMAGE), "{imported}");
        ours
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command
            .args([CTR_TIME, "ctr", "--address"])
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        command
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().unwrap()
    }

    /// `ctr args`, which must succeed: its stdout.
    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "ctr {args:?}: {stdout}{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        stdout
    }

    /// `ctr run` of the NodeOS image in a microVM: `options` before the image, then the
    /// container's id and its command.
    fn run(&self, options: &[&str], id: &str, command: &[&str]) -> Output {
        let mut args = vec!["run", "--runtime", RUNTIME];
        args.extend_from_slice(options);
        args.extend_from_slice(&[IMAGE, id]);
        args.extend_from_slice(command);
        self.ctr(&args)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Its shims first (each stops its microVM as it goes), then containerd.
        for pid in processes_naming(&format!("-namespace {NAMESPACE} -id")) {
            if shim_of(pid, self.dir.path()) {
                // SAFETY: kill has no memory arguments.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Whatever of its snapshots is still mounted (a failed test's container) goes too.
        let _ = Command::new("umount")
            .args(["--recursive", "--lazy"])
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether the shim `pid` is one of the containerd whose folder is `dir`.
fn shim_of(pid: i32, dir: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&*dir.to_string_lossy()))
}

/// The processes whose command line (arguments joined by spaces) contains `text`.
fn processes_naming(text: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let joined = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if joined.contains(text) && pid != std::process::id() as i32 {
            found.push(pid);
        }
    }
    found
}

/// The folder of the container `id`'s disk, agent socket and console log.
fn scratch_of(id: &str) -> PathBuf {
    sandbox::folders::cache_dir()
        .unwrap()
        .join("shim")
        .join(format!("{NAMESPACE}-{id}"))
}

/// Waits (a while) until nothing of the container `id` is left on this host: no process
/// names its folder (its microVM's), its folder is gone.
fn assert_nothing_left_of(id: &str) {
    let scratch = scratch_of(id);
    let name = scratch.to_string_lossy().into_owned();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_naming(&name);
        if left.is_empty() && !scratch.exists() {
            return;
        }
        assert!(
            Instant::now() < until,
            "left of container {id}: processes {left:?}, folder {} exists: {}",
            scratch.display(),
            scratch.exists()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn runc_runs_the_nodeos_image() {
    if !can_run_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let js = "const os = require('os'); \
              console.log(6 * 7, process.getuid(), os.userInfo().username, process.cwd())";
    let out = containerd.ctr_ok(&["run", "--rm", IMAGE, "node-e", "node", "-e", js]);
    assert_eq!(out.trim(), "42 1000 node /home/node");
    let out = containerd.ctr_ok(&["run", "--rm", IMAGE, "npm", "npm", "--version"]);
    assert!(out.trim().split('.').count() == 3, "{out}");
}

#[test]
fn a_container_runs_in_a_microvm_with_its_user_and_exit_status() {
    if !can_run_containerd() {
        return;
    }
    let containerd = Containerd::start();
    // Our kernel (built as nodeos@nodeos-vm), not the host's; the image's user and folder;
    // processes of the microVM's own (containerd's pid there is not containerd); stdout and
    // stderr apart.
    let js = format!(
        "const fs = require('fs'); \
         console.log(fs.readFileSync('/proc/version', 'utf8').includes('nodeos@nodeos-vm')); \
         console.log(process.getuid(), process.getgid(), process.cwd()); \
         let host = ''; try {{ host = fs.readFileSync('/proc/{}/cmdline', 'utf8') }} catch {{}} \
         console.log(host.includes('containerd')); \
         console.log(fs.readdirSync('/').join(' ')); \
         console.error('to stderr'); process.exit(3)",
        containerd.daemon.id()
    );
    let out = containerd.run(&["--rm"], "hello", &["node", "-e", &js]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}{}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        ["true", "1000 1000 /home/node", "false"],
        "{text}"
    );
    // The image's root as the image has it (mke2fs's lost+found taken out), with the
    // container's /dev, /proc and /sys.
    assert_eq!(
        lines[3], "bin dev etc home lib lib64 proc run sbin sys tmp usr",
        "{text}"
    );
    assert!(stderr(&out).contains("to stderr"), "{}", stderr(&out));
    assert_nothing_left_of("hello");

    let out = containerd.run(&["--rm"], "missing", &["no-such-command"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("no-such-command: No such file or directory"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_nothing_left_of("missing");
}

#[test]
fn exec_kill_and_delete_two_containers_at_once() {
    if !can_run_containerd() {
        return;
    }
    let containerd = Containerd::start();
    let forever = ["node", "-e", "setInterval(() => {}, 1000)"];
    for id in ["one", "two"] {
        containerd.ctr_ok(&[
            "run",
            "--runtime",
            RUNTIME,
            "-d",
            IMAGE,
            id,
            forever[0],
            forever[1],
            forever[2],
        ]);
    }
    let tasks = containerd.ctr_ok(&["task", "ls"]);
    assert_eq!(tasks.matches("RUNNING").count(), 2, "{tasks}");

    // A second process in the first container's microVM, which sees its files.
    let js = "require('fs').writeFileSync('/tmp/mark', 'x'); console.log('exec', process.getuid())";
    let out = containerd.ctr_ok(&["task", "exec", "--exec-id", "e1", "one", "node", "-e", js]);
    assert_eq!(out.trim(), "exec 1000");
    let check = "console.log(require('fs').existsSync('/tmp/mark'))";
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "one",
        "node",
        "-e",
        check,
    ]);
    assert_eq!(out.trim(), "true");
    let out = containerd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e3",
        "two",
        "node",
        "-e",
        check,
    ]);
    assert_eq!(out.trim(), "false", "the containers share their files");
    let out = containerd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e4",
        "two",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));

    let ps = containerd.ctr_ok(&["task", "ps", "one"]);
    assert_eq!(ps.lines().count(), 2, "{ps}");

    // SIGTERM ends node (143); SIGKILL the other.
    containerd.ctr_ok(&["task", "kill", "one"]);
    containerd.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "two"]);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = containerd.ctr_ok(&["task", "ls"]);
        if tasks.matches("STOPPED").count() == 2 {
            break;
        }
        assert!(Instant::now() < until, "{tasks}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for id in ["one", "two"] {
        containerd.ctr_ok(&["task", "delete", id]);
        containerd.ctr_ok(&["container", "delete", id]);
        assert_nothing_left_of(id);
    }
}

#[test]
fn a_terminal_session_and_a_memory_limit() {
    if !can_run_containerd() {
        return;
    }
    let containerd = Containerd::start();
    // `ctr run -t` wants a terminal: script(1) gives it one, of this size.
    let js = "const mib = Math.round(require('os').totalmem() / 2 ** 20); \
              console.log([process.stdout.isTTY, process.stdout.columns, process.stdout.rows, mib].join(' '))";
    let ctr = containerd.ctr_command(&[
        "run",
        "-t",
        "--runtime",
        RUNTIME,
        "--memory-limit",
        &(300u64 << 20).to_string(),
        "--rm",
        IMAGE,
        "tty",
        "node",
        "-e",
        js,
    ]);
    let line = format!(
        "stty cols 101 rows 33; {}",
        std::iter::once(ctr.get_program())
            .chain(ctr.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    // ctr types a NUL into every terminal it starts (runc's too), which the terminal echoes.
    let fields: Vec<&str> = text.trim_start_matches("^@").split_whitespace().collect();
    assert_eq!(fields[..3], ["true", "101", "33"], "{text:?}");
    // The microVM has the limit as its memory: its kernel keeps some of it.
    let total: u64 = fields[3].parse().unwrap();
    assert!((200..=300).contains(&total), "{text:?}");
    assert_nothing_left_of("tty");
}

#[test]
fn a_killed_shim_leaves_nothing_behind() {
    if !can_run_containerd() {
        return;
    }
    let containerd = Containerd::start();
    containerd.ctr_ok(&[
        "run",
        "--runtime",
        RUNTIME,
        "-d",
        IMAGE,
        "doomed",
        "node",
        "-e",
        "setInterval(() => {}, 1000)",
    ]);
    let shims = processes_naming(&format!("-namespace {NAMESPACE} -id doomed"));
    assert_eq!(shims.len(), 1, "{shims:?}");
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(shims[0], libc::SIGKILL) };
    // containerd sees its shim gone, runs `shim delete`, and the task is stopped.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = containerd.ctr(&["task", "ls"]);
        if !stdout(&tasks).contains("RUNNING") {
            break;
        }
        assert!(Instant::now() < until, "{}", stdout(&tasks));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_nothing_left_of("doomed");
    let _ = containerd.ctr(&["task", "delete", "doomed"]);
    containerd.ctr_ok(&["container", "delete", "doomed"]);
}
