//! The arm64 guest on this x86-64 host: `--arch aarch64` boots NodeOS's arm64 kernel and image
//! (built once, cached like the host's) under QEMU's emulation (TCG). Every `start` and `run`
//! case of the x86 guest (tests/common/cases.rs, run_cases.rs) runs here on the arm64 guest,
//! and a few of arm64's own.

#[macro_use]
mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::{cases, run_cases, Watchdog, BIN, BOOT_LIMIT};

fn start_case(name: &str) {
    let (kernel, rootfs) = arm64_artifacts();
    cases::start_here(name, &["--arch", "aarch64"], kernel, rootfs);
}

fn run_case(name: &str) {
    let (kernel, rootfs) = arm64_artifacts();
    let run = format!(
        "{BIN} run --arch aarch64 --kernel {} --rootfs {}",
        kernel.display(),
        rootfs.display()
    );
    run_cases::run_here(name, &run);
}

case_tests!(start_case);
run_case_tests!(run_case);

/// The arm64 kernel and root image, built once for the test run (a no-op when cached).
fn arm64_artifacts() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(BIN)
            .args(["build", "--arch", "aarch64"])
            .stderr(Stdio::inherit())
            .output()
            .expect("running nodeos-vm build --arch aarch64");
        assert!(
            out.status.success(),
            "nodeos-vm build --arch aarch64 failed"
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let path_of = |prefix: &str| {
            let line = text
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{prefix} in {text}"));
            PathBuf::from(line[prefix.len()..].rsplit_once(" (").unwrap().0.trim())
        };
        (path_of("kernel:"), path_of("root image:"))
    })
}

/// `nodeos-vm SUBCOMMAND --arch aarch64 --kernel K --rootfs R ARGS`, `input` piped in.
fn arm64(subcommand: &str, args: &[&str], input: &str) -> Output {
    let (kernel, rootfs) = arm64_artifacts();
    let mut child = Command::new(BIN)
        .args([subcommand, "--arch", "aarch64", "--kernel"])
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting nodeos-vm");
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let _watchdog = Watchdog::new(child.id(), BOOT_LIMIT);
    child.wait_with_output().expect("waiting for nodeos-vm")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_arm64_repl_answers_on_the_console() {
    let out = arm64(
        "start",
        &["--no-jail"],
        "console.log(6 * 7)\nconsole.log(process.arch, require('os').machine())\n",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("42\n"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("arm64 aarch64"), "stdout: {stdout}");
    // The kernel's power-off line stays out of the user's output.
    assert!(!stdout.contains("Power down"), "stdout: {stdout}");
}

#[test]
fn an_arm64_run_gives_its_output_exit_status_and_volume() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host\n").unwrap();
    let volume = format!("{}:/app:rw", dir.path().display());
    let out = arm64(
        "run",
        &[
            "--no-jail",
            "-v",
            &volume,
            "--",
            "sh",
            "-c",
            "cat /app/in.txt; uname -m; node -p process.arch > /app/out.txt; exit 3",
        ],
        "",
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert_eq!(stdout, "from the host\naarch64\n", "stderr: {stderr}");
    let written = std::fs::read_to_string(dir.path().join("out.txt")).unwrap();
    assert_eq!(written, "arm64\n");
}

#[test]
fn a_kernel_of_the_other_architecture_is_refused_in_one_line() {
    let (x86_kernel, _) = common::artifacts();
    let (_, arm64_rootfs) = arm64_artifacts();
    let out = Command::new(BIN)
        .args(["run", "--arch", "aarch64", "--kernel"])
        .arg(x86_kernel)
        .arg("--rootfs")
        .arg(arm64_rootfs)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(
        stderr.contains("is an x86_64 kernel and this VM is aarch64"),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr}");
}

#[test]
fn kvm_is_refused_for_another_architecture() {
    let out = Command::new(BIN)
        .args(["run", "--arch", "aarch64", "--backend", "kvm", "--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    assert!(
        stderr.contains("an aarch64 guest runs under QEMU's emulation"),
        "stderr: {stderr}"
    );
}
