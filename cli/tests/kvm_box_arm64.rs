//! Our VMM on arm64 KVM: nodeos-vm cross-built for aarch64 (cli/cross-build.sh) boots the arm64
//! guest with `--backend kvm` inside the arm64 KVM box — an arm64 L1 Linux under QEMU's TCG with
//! EL2 emulated (`-M virt,virtualization=on`), whose /dev/kvm is Debian's arm64 KVM. Every
//! `start` case (tests/common/cases.rs) and the run cases that need no volume or network run
//! there; one box run serves all the tests of this file.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::cases::{self, Outcome};
use common::run_cases::{self, RunOutcome};
use kvm_box::{shell_quote, Arch, BoxFile, BoxRun, Check, Script};

const KERNEL: &str = "/nodeos/Image";
const ROOTFS: &str = "/nodeos/rootfs.img";
const TRUNCATED: &str = "/tmp/truncated.img";
const STDERR_MARK: &str = "@@STDERR@@";
const NODEOS_VM: &str = "/nodeos/nodeos-vm";

/// nodeos-vm for aarch64, built once (cached in the cache's cross-target folder): the CLI in
/// the dev profile (it does little), the VMM program it carries in release, as always.
fn nodeos_vm_aarch64() -> PathBuf {
    let cache = kvm_box::default_cache_dir();
    let out = cache.join("cross-aarch64");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/cross-build.sh");
    let status = Command::new("bash")
        .arg(script)
        .args(["aarch64"])
        .arg(&out)
        .arg("dev")
        .env("CARGO_TARGET_DIR", cache.join("cross-target"))
        .status()
        .expect("running cli/cross-build.sh");
    assert!(status.success(), "cli/cross-build.sh aarch64 failed");
    out.join("nodeos-vm")
}

fn box_checks() -> &'static BTreeMap<String, Check> {
    static CHECKS: OnceLock<BTreeMap<String, Check>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let (kernel, rootfs) = common::build(&["--arch", "aarch64"]);
        let mut script = Script::new();
        script.setup(&format!(
            "head -c $(( $(wc -c < {ROOTFS}) / 2 )) {ROOTFS} > {TRUNCATED}"
        ));
        script.check("doctor", &format!("{NODEOS_VM} doctor"));
        for case in cases::CASES {
            for (i, boot) in case.boots.iter().enumerate() {
                let mut args = cases::args(boot, KERNEL, ROOTFS, TRUNCATED);
                for (flag, default) in [("--kernel", KERNEL), ("--rootfs", ROOTFS)] {
                    if !args.iter().any(|a| a == flag) {
                        args.extend([flag.to_string(), default.to_string()]);
                    }
                }
                let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
                script.check_with_timeout(
                    &format!("{}.{i}", case.name),
                    Duration::from_secs(120),
                    &format!(
                        "printf %s {} | {NODEOS_VM} start --backend kvm {} >/tmp/o 2>/tmp/e; s=$?; \
                         cat /tmp/o; echo {STDERR_MARK}; cat /tmp/e; exit $s",
                        shell_quote(boot.input),
                        args.join(" ")
                    ),
                );
            }
        }
        let run_cmd = format!("{NODEOS_VM} run --backend kvm --kernel {KERNEL} --rootfs {ROOTFS}");
        for name in RUN_CASES {
            let case = run_cases::run_case(name);
            script.check_with_timeout(
                &format!("run.{name}"),
                Duration::from_secs(240),
                &format!(
                    "mkdir -p /tmp/run/{name} && cd /tmp/run/{name} && \
                     printf %s {} | RUN={} sh -c {} >/tmp/o 2>/tmp/e; s=$?; \
                     cd /root; cat /tmp/o; echo {STDERR_MARK}; cat /tmp/e; exit $s",
                    shell_quote(case.stdin),
                    shell_quote(&run_cmd),
                    shell_quote(case.script),
                ),
            );
        }
        let run = BoxRun::new(script.build())
            .arch(Arch::Aarch64)
            .file(BoxFile::with_libs(nodeos_vm_aarch64(), NODEOS_VM))
            .file(BoxFile::new(kernel, KERNEL))
            .file(BoxFile::new(rootfs, ROOTFS));
        let run = BoxRun {
            timeout: Duration::from_secs(1800),
            ..run
        };
        let out = kvm_box::run(&kvm_box::default_cache_dir(), &run)
            .expect("the arm64 KVM box run failed");
        eprintln!(
            "arm64 KVM box: L1 boot {:?}, whole run {:?}",
            out.boot, out.wall
        );
        out.checks()
    })
}

/// The run cases that need neither volumes (their ext4 tools are the host's, x86-64) nor a
/// network in the box.
const RUN_CASES: &[&str] = &[
    "exit_codes_and_signals",
    "stdout_and_stderr_apart_and_in_order",
    "stdin_piped_in",
    "timeout_kills_the_command",
    "command_not_found",
];

fn check(name: &str) -> &'static Check {
    box_checks()
        .get(name)
        .unwrap_or_else(|| panic!("the box printed no section {name}: the box ended early"))
}

fn split(c: &Check) -> (String, String) {
    let (stdout, stderr) = c.output.split_once(STDERR_MARK).unwrap_or((&c.output, ""));
    (
        stdout.to_string(),
        stderr.trim_start_matches('\n').to_string(),
    )
}

fn run_in_box(name: &str) {
    let case = cases::case(name);
    let outcomes: Vec<Outcome> = (0..case.boots.len())
        .map(|i| {
            let c = check(&format!("{name}.{i}"));
            let (stdout, stderr) = split(c);
            Outcome {
                status: c.status,
                stdout,
                stderr,
            }
        })
        .collect();
    if let Err(why) = (case.check)(&outcomes) {
        panic!("{name} (our VMM, in the arm64 KVM box): {why}");
    }
}

case_tests!(run_in_box);

fn run_case_in_box(name: &str) {
    let case = run_cases::run_case(name);
    let c = check(&format!("run.{name}"));
    let (stdout, stderr) = split(c);
    let outcome = RunOutcome {
        status: c.status,
        stdout,
        stderr,
    };
    if let Err(why) = (case.check)(&outcome) {
        panic!("run {name} (our VMM, in the arm64 KVM box): {why}");
    }
}

mod run {
    use super::run_case_in_box;
    case_tests!(@each run_case_in_box;
        exit_codes_and_signals,
        stdout_and_stderr_apart_and_in_order,
        stdin_piped_in,
        timeout_kills_the_command,
        command_not_found);
}

#[test]
fn doctor_finds_kvm_usable_on_arm64() {
    let c = check("doctor");
    assert_eq!(c.status, Some(0), "{}", c.output);
    assert!(c.output.contains("aarch64"), "{}", c.output);
}
