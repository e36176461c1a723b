//! The arm64 guest on this x86-64 host: `--arch aarch64` boots NodeOS's arm64 kernel and image
//! (built once, cached like the host's) under QEMU's emulation (TCG). Every `start` and `run`
//! case of the x86 guest (tests/common/cases.rs, run_cases.rs) runs here on the arm64 guest,
//! and a few of arm64's own.

#[macro_use]
mod common;

use std::ffi::OsStr;
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
    BUILT.get_or_init(|| common::build(&["--arch", "aarch64"]))
}

/// `nodeos-vm SUBCOMMAND --arch aarch64 --kernel K --rootfs R ARGS`, `input` piped in.
fn arm64(subcommand: &str, args: &[&str], input: &str) -> Output {
    let (kernel, rootfs) = arm64_artifacts();
    let images = [
        "--arch",
        "aarch64",
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ];
    let all: Vec<&str> = images.into_iter().chain(args.iter().copied()).collect();
    common::piped(subcommand, &all, input)
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

/// `nodeos-vm run ARGS -- true`, which must be refused before anything boots: its stderr.
fn refused_run(args: &[&OsStr]) -> String {
    let out = Command::new(BIN)
        .arg("run")
        .args(args)
        .args(["--", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr: {stderr}");
    stderr
}

#[test]
fn a_kernel_of_the_other_architecture_is_refused_in_one_line() {
    let (x86_kernel, _) = common::artifacts();
    let (_, arm64_rootfs) = arm64_artifacts();
    let stderr = refused_run(&[
        "--arch".as_ref(),
        "aarch64".as_ref(),
        "--kernel".as_ref(),
        x86_kernel.as_os_str(),
        "--rootfs".as_ref(),
        arm64_rootfs.as_os_str(),
    ]);
    assert!(
        stderr.contains("is an x86_64 kernel and this VM is aarch64"),
        "stderr: {stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "stderr: {stderr}");
}

#[test]
fn kvm_is_refused_for_another_architecture() {
    let args = ["--arch", "aarch64", "--backend", "kvm"].map(OsStr::new);
    let stderr = refused_run(&args);
    assert!(
        stderr.contains("an aarch64 guest runs under QEMU's emulation"),
        "stderr: {stderr}"
    );
}

/// `nodeos-vm image export --format rpi` writes a card that boots on QEMU's Raspberry Pi 3 B
/// (`raspi3b`) to the REPL answering on the serial console, with the card's own kernel, device
/// tree and command line (QEMU starts the kernel itself, not the board's boot firmware), and
/// what the REPL writes stays on the card.
#[test]
fn the_raspberry_pi_card_boots_to_the_repl_on_qemus_raspi3b() {
    let mcopy = common::host_program("mcopy", "mtools");
    let qemu = common::host_program("qemu-system-aarch64", "qemu-system-arm");
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.img");
    let out = Command::new(BIN)
        .args(["image", "export", "--format", "rpi", "-o"])
        .arg(&card)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Raspberry Pi SD card image"),
        "{}",
        text(&out.stdout)
    );
    // The boot partition starts at 4 MiB (rootfs/rpi-card.sh).
    for file in [
        "Image",
        "bcm2837-rpi-3-b.dtb",
        "cmdline.txt",
        "config.txt",
        "start.elf",
    ] {
        let status = Command::new(&mcopy)
            .arg("-i")
            .arg(format!("{}@@4M", card.display()))
            .arg(format!("::/{file}"))
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "{file} is not on the card's boot partition"
        );
    }
    let cmdline = std::fs::read_to_string(dir.path().join("cmdline.txt")).unwrap();
    assert!(cmdline.contains("nodeos.upper=/dev/mmcblk0p3"), "{cmdline}");
    let answer = |input: &str, expect: &str| {
        let mut child = Command::new(&qemu)
            .args(["-M", "raspi3b", "-display", "none", "-no-reboot"])
            .arg("-kernel")
            .arg(dir.path().join("Image"))
            .arg("-dtb")
            .arg(dir.path().join("bcm2837-rpi-3-b.dtb"))
            .args(["-append", cmdline.trim()])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=sd", card.display()))
            // The PL011 (the Bluetooth chip's on the board) to nowhere, the mini UART here.
            .args(["-serial", "null", "-serial", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _watchdog = Watchdog::new(child.id(), BOOT_LIMIT);
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        let mut sent = false;
        loop {
            use std::io::Read;
            let n = stdout.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            // The REPL's prompt: it reads its terminal now.
            if !sent && seen.contains("> ") {
                stdin.write_all(input.as_bytes()).unwrap();
                sent = true;
            }
            if sent && seen.contains(expect) {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            seen.contains(expect),
            "{expect:?} not in the console's output:\n{seen}"
        );
    };
    answer(
        // Written and synced to the card: the test then pulls the plug.
        "f = fs.openSync('/home/node/kept', 'w'); fs.writeSync(f, String(6 * 7)); fs.fsyncSync(f); 6 * 7\r",
        "42",
    );
    // A second boot of the same card reads what the first wrote on its data partition.
    answer(
        "'kept:' + fs.readFileSync('/home/node/kept', 'utf8')\r",
        "kept:42",
    );
}

/// `serve --arch aarch64`: an app deployed and invoked runs on the arm64 guest.
#[test]
fn serve_runs_apps_on_the_arm64_guest() {
    let (kernel, rootfs) = arm64_artifacts();
    let mut serve = common::serve::Serve::start_on(kernel, rootfs, &["--arch", "aarch64"]);
    let package = common::npm_package(&[
        (
            "package.json",
            r#"{"name": "where", "version": "1.0.0", "main": "index.js"}"#,
        ),
        (
            "index.js",
            "exports.handler = async (event) => ({ arch: process.arch, twice: event.n * 2 });\n",
        ),
    ]);
    let (status, info) = serve.deploy("where", "", &package);
    assert_eq!(status, 200, "{info}");
    let (status, answer) = serve.invoke("where", serde_json::json!({ "n": 21 }));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, serde_json::json!({ "arch": "arm64", "twice": 42 }));
    assert_eq!(serve.terminate(), Some(0));
}
