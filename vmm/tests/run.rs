//! `nodeos-vm run` on this host: commands in fresh microVMs on the backend `auto` picks here
//! (or `NODEOS_VM_TEST_BACKEND`); the same cases run on our VMM inside the KVM box
//! (tests/kvm_box.rs).

#[macro_use]
mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::run_cases::{self, RunOutcome};
use common::BIN;

fn web() -> &'static str {
    static WEB: OnceLock<String> = OnceLock::new();
    WEB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        common::web::serve(common::web::greeter_tarball(dir.path()))
    })
}

fn run_on_host(name: &str) {
    let case = run_cases::run_case(name);
    let (kernel, rootfs) = common::artifacts();
    let dir = tempfile::tempdir().unwrap();
    let fixture = common::fixture_copy(dir.path());
    let run = format!(
        "{BIN} run --backend {} --kernel {} --rootfs {}",
        common::backend(),
        kernel.display(),
        rootfs.display()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(case.script)
        .current_dir(dir.path())
        .env("RUN", run)
        .env("FIXTURE", &fixture)
        .env("WEB", web())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(case.stdin.as_bytes()).unwrap();
    drop(stdin);
    let _watchdog = common::Watchdog::for_group(child.id(), common::BOOT_LIMIT * 2);
    let out = child.wait_with_output().unwrap();
    let outcome = RunOutcome {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if let Err(why) = (case.check)(&outcome) {
        panic!("{name}: {why}");
    }
}

run_case_tests!(run_on_host);
