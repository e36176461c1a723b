//! The box gives a working /dev/kvm with nested paging, and its harness behaves: statuses
//! and bytes pass through, checks are sectioned, extra modules load, one VM is held all along
//! (so that L1 never patches its text under a script's VMs), a hung box is killed.

mod common;

use std::time::{Duration, Instant};

use kvm_box::{BoxError, BoxRun, Script};

#[test]
fn dev_kvm_exists_with_nested_paging() {
    let mut script = Script::new();
    script
        .check("dev-kvm", "test -c /dev/kvm && echo present")
        .check("npt", "cat /sys/module/kvm_amd/parameters/npt")
        .check("fails", "echo oops >&2; exit 3")
        .check_with_timeout("hangs", Duration::from_secs(1), "sleep 30")
        .check("after-hang", "echo still here")
        .check("vhost-vsock", "test -c /dev/vhost-vsock")
        .check(
            "held-vms",
            "for fd in /proc/[0-9]*/fd/*; do readlink $fd; done | grep -c '^anon_inode:kvm-vm$'",
        );
    let run = BoxRun {
        modules: vec!["vhost_vsock".into()],
        ..BoxRun::new(script.build())
    };
    let out = kvm_box::run(&common::cache(), &run).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "empty-ish box: L1 boot {:?}, wall {:?}, initramfs {} KiB",
        out.boot,
        out.wall,
        out.initramfs_bytes / 1024
    );
    let checks = out.checks();
    assert_eq!(checks["dev-kvm"].output, "present\n", "{}", out.output);
    assert!(checks["dev-kvm"].passed());
    assert_eq!(
        checks["npt"].output.trim(),
        "Y",
        "nested paging is off:\n{}",
        out.console
    );
    assert_eq!(checks["fails"].status, Some(3));
    assert_eq!(checks["fails"].output, "oops\n");
    assert_eq!(
        checks["hangs"].status,
        Some(137),
        "a check past its timeout is killed"
    );
    assert_eq!(checks["after-hang"].output, "still here\n");
    assert!(
        checks["vhost-vsock"].passed(),
        "an extra module loads with its dependencies:\n{}",
        out.console
    );
    assert_eq!(
        checks["held-vms"].output, "1\n",
        "the box's VM holder holds one VM before the script starts:\n{}",
        out.console
    );
    assert_eq!(out.script_status, 0);
}

#[test]
fn script_status_and_files_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::write(&data, "payload\n").unwrap();
    let run = BoxRun::new("cat /opt/data; printf 'crlf\\r\\n'; /opt/true-dyn && exit 42")
        .file(kvm_box::BoxFile::new(&data, "/opt/data"))
        // A dynamically linked binary runs in L1 once its libraries are packed.
        .file(kvm_box::BoxFile::with_libs(
            "/usr/bin/true",
            "/opt/true-dyn",
        ));
    let out = kvm_box::run(&common::cache(), &run).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out.script_status, 42,
        "output:\n{}\nconsole:\n{}",
        out.output, out.console
    );
    assert_eq!(
        out.output, "payload\ncrlf\r\n",
        "the script's bytes arrive unchanged"
    );
}

#[test]
fn a_hung_box_is_killed_at_its_timeout() {
    let run = BoxRun {
        timeout: Duration::from_secs(8),
        ..BoxRun::new("echo before; sleep 600")
    };
    let start = Instant::now();
    match kvm_box::run(&common::cache(), &run) {
        Err(BoxError::Timeout { output, .. }) => assert!(output.contains("before"), "{output}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}
