//! Helpers for the integration tests: they boot real guests (our kernel, our root image) with
//! the real `nodeos-vm` binary, on the backend `NODEOS_VM_TEST_BACKEND` names (default `auto`).

#![allow(dead_code, unused_macros)] // each test file uses its own subset

/// One `#[test]` per case of `cases::CASES`, each calling `$runner(name)`: every backend's
/// test file runs every case, and a case added to `CASES` must be added here.
macro_rules! case_tests {
    ($runner:ident) => {
        case_tests!(@each $runner;
            repl_is_pid_1,
            unprivileged_user_and_no_root_account,
            overlay_root_over_a_read_only_image_and_ephemeral_writes,
            node_is_the_pinned_version,
            two_vcpus,
            exit_statuses,
            no_zombies_under_pid_1,
            missing_kernel_error,
            truncated_image_error,
            bad_memory_errors);
    };
    (@each $runner:ident; $($name:ident),*) => {$(
        #[test]
        fn $name() {
            $runner(stringify!($name));
        }
    )*};
}

/// One `#[test]` per case of `run_cases::RUN_CASES`, each calling `$runner(name)`.
#[allow(unused_macros)] // tests/start.rs has no run cases
macro_rules! run_case_tests {
    ($runner:ident) => {
        case_tests!(@each $runner;
            exit_codes_and_signals,
            stdout_and_stderr_apart_and_in_order,
            ten_megabytes_of_output,
            stdin_piped_in,
            timeout_kills_the_command,
            command_not_found,
            out_of_memory_is_said,
            volume_is_visible_and_host_files_unchanged,
            read_only_and_read_write_volumes,
            rw_volume_copy_back_is_checked,
            rw_volume_leaves_git_alone,
            npm_test_of_a_node_project,
            no_network_without_net,
            host_loopback_is_opt_in,
            guest_env_is_not_on_the_kernel_command_line,
            npm_install_from_the_host_loopback,
            tap_network,
            user_layer_persists_and_is_private,
            user_disk_full_is_enospc_and_grows,
            user_vm_killed_keeps_synced_data,
            npm_global_install_is_per_user,
            package_json_idioms,
            npm_ci_of_a_lockfile_with_an_install_script);
    };
}

pub mod cases;
pub mod corpus;
pub mod run_cases;
pub mod serve;
pub mod web;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const BIN: &str = env!("CARGO_BIN_EXE_nodeos-vm");

/// The host program `name`, installed from Debian's `package` with apt when it is missing (as
/// root; otherwise the panic names the command to run), the way `start` installs what it needs.
pub fn host_program(name: &str, package: &str) -> std::path::PathBuf {
    kvm_box::host_program(name, package).unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the kernel and root image once for the whole test run (a no-op when cached).
pub fn artifacts() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| build(&[]))
}

/// `nodeos-vm build OPTIONS`: the kernel and root image it names.
pub fn build(options: &[&str]) -> (PathBuf, PathBuf) {
    let out = Command::new(BIN)
        .arg("build")
        .args(options)
        .stderr(Stdio::inherit())
        .output()
        .expect("running nodeos-vm build");
    assert!(out.status.success(), "nodeos-vm build {options:?} failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let path_of = |prefix: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {text}"));
        PathBuf::from(line[prefix.len()..].rsplit_once(" (").unwrap().0.trim())
    };
    (path_of("kernel:"), path_of("root image:"))
}

pub fn backend() -> String {
    std::env::var("NODEOS_VM_TEST_BACKEND").unwrap_or_else(|_| "auto".into())
}

/// `nodeos-vm start` with `args`, `input` on its stdin (a pipe: the console's pipe mode).
pub fn start(args: &[&str], input: &str) -> Output {
    start_with_backend(&backend(), args, input)
}

/// `nodeos-vm start --backend <backend>` with `args` and `input` piped in.
pub fn start_with_backend(backend: &str, args: &[&str], input: &str) -> Output {
    artifacts();
    let args: Vec<&str> = ["--backend", backend]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    start_with(&args, input)
}

/// `nodeos-vm start ARGS` (all of its options in `args`) with `input` piped in.
pub fn start_with(args: &[&str], input: &str) -> Output {
    piped("start", args, input)
}

/// `nodeos-vm SUBCOMMAND ARGS` with `input` piped in, killed if it outlives [`BOOT_LIMIT`].
pub fn piped(subcommand: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg(subcommand)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nodeos-vm");
    // A nodeos-vm that refuses its arguments ends before it reads its input: that is no error
    // of the test's, its status says what happened.
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    if let Err(e) = written {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing the input: {e}"
        );
    }
    let _watchdog = Watchdog::new(child.id(), BOOT_LIMIT);
    child.wait_with_output().expect("waiting for nodeos-vm")
}

/// `nodeos-vm run` with `args` (after the backend, kernel and image options), stdin empty:
/// (status, stdout, stderr).
pub fn run(args: &[&str]) -> (Option<i32>, String, String) {
    run_with_env(args, &[])
}

/// [`run`] with these variables added to its environment.
pub fn run_with_env(
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (Option<i32>, String, String) {
    let (kernel, rootfs) = artifacts();
    let child = Command::new(BIN)
        .arg("run")
        .args(["--backend", &backend()])
        .arg("--kernel")
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nodeos-vm run");
    let _watchdog = Watchdog::new(child.id(), BOOT_LIMIT);
    let out = child.wait_with_output().expect("waiting for nodeos-vm run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// tests/fixtures/node-project: a small Node project with tests and a dependency.
pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node-project")
}

/// A fresh copy of tests/fixtures/node-project in `dir`.
pub fn fixture_copy(dir: &std::path::Path) -> PathBuf {
    let src = fixture_dir();
    let dst = dir.join("node-project");
    copy_tree(&src, &dst);
    dst
}

fn copy_tree(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// Longest a test VM may live: a hung guest fails its test instead of hanging the suite.
pub const BOOT_LIMIT: std::time::Duration = std::time::Duration::from_secs(180);

/// Kills a process (SIGKILL) if it outlives the limit; dropping the watchdog disarms it.
pub struct Watchdog(std::sync::mpsc::Sender<()>);

impl Watchdog {
    pub fn new(pid: u32, limit: std::time::Duration) -> Watchdog {
        Watchdog::kill_after(pid as i32, limit)
    }

    /// Kills the whole process group `pgid`.
    pub fn for_group(pgid: u32, limit: std::time::Duration) -> Watchdog {
        Watchdog::kill_after(-(pgid as i32), limit)
    }

    fn kill_after(pid: i32, limit: std::time::Duration) -> Watchdog {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if rx.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                eprintln!("watchdog: killing pid {pid} after {limit:?}");
                // SAFETY: kill(2) with a plain pid and signal number has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        Watchdog(tx)
    }
}

/// An npm-pack-like tarball (gzipped tar of `package/`) of `files` (path under `package/`,
/// contents).
pub fn npm_package(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join("package").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let tgz = dir.path().join("app.tgz");
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(dir.path())
        .arg("package")
        .status()
        .unwrap();
    assert!(status.success(), "tar czf failed");
    std::fs::read(tgz).unwrap()
}

/// `nodeos-vm ARGS` with its runtime folder in `runtime` (where detached VMs live), stdin
/// empty, stdout and stderr piped; not waited for.
pub fn spawn_in(runtime: &std::path::Path, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// [`spawn_in`], run to its end (killed after [`BOOT_LIMIT`]): its output.
pub fn run_in(runtime: &std::path::Path, args: &[&str]) -> Output {
    let child = spawn_in(runtime, args);
    let _watchdog = Watchdog::new(child.id(), BOOT_LIMIT);
    child.wait_with_output().unwrap()
}
