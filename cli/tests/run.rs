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
    WEB.get_or_init(common::web::serve)
}

fn run_on_host(name: &str) {
    let case = run_cases::run_case(name);
    // SAFETY: geteuid has no preconditions.
    if case.root && unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: {name} creates a TAP interface, which needs root");
        return;
    }
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

/// `start --detach` prints an ID once the VM is ready; `ps`, `exec`, `logs` and `stop` work on
/// it; a VM whose process is gone is cleaned up.
#[test]
fn detached_vm_lifecycle() {
    let (kernel, rootfs) = common::artifacts();
    let runtime = tempfile::tempdir().unwrap();
    let vm = |args: &[&str]| {
        let mut cmd = Command::new(BIN);
        cmd.args(args).env("XDG_RUNTIME_DIR", runtime.path());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _watchdog = common::Watchdog::new(child.id(), common::BOOT_LIMIT);
        let out = child.wait_with_output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let backend = common::backend();
    let (status, id, err) = vm(&[
        "start",
        "--detach",
        "--backend",
        &backend,
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(0), "{err}");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 12, "{id:?}");

    let (_, ps, _) = vm(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with(&id) && l.contains("running")),
        "{ps}"
    );
    let script = "require('fs').writeFileSync('/tmp/kept', 'state'); console.log(process.getuid())";
    let (status, out, err) = vm(&["exec", &id[..6], "--", "node", "-e", script]);
    assert_eq!((status, out.as_str()), (Some(0), "1000\n"), "{err}");
    // The same VM: what the first command wrote is there.
    let (status, out, err) = vm(&["exec", &id, "-e", "X=y", "--", "node", "-e",
        "console.log(require('fs').readFileSync('/tmp/kept', 'utf8'), process.env.X); process.exit(4)"]);
    assert_eq!((status, out.as_str()), (Some(4), "state y\n"), "{err}");
    let (status, _, _) = vm(&["logs", &id]);
    assert_eq!(status, Some(0));
    // What the guest wrote to its console reaches this terminal escaped, unless --raw: here an
    // escape sequence that clears the screen and one that sets the window title.
    let hostile = "\x1b[2J\x1b]0;owned\x07\r\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(
            runtime
                .path()
                .join(format!("nodeos-vm/vms/{id}/console.log")),
        )
        .and_then(|mut log| log.write_all(hostile.as_bytes()))
        .unwrap();
    let (status, out, err) = vm(&["logs", &id]);
    assert_eq!(status, Some(0), "{err}");
    assert!(
        out.ends_with("\\x1b[2J\\x1b]0;owned\\x07\r\n") && !out.contains('\x1b'),
        "{out:?}"
    );
    let (status, out, err) = vm(&["logs", "--raw", &id]);
    assert_eq!(status, Some(0), "{err}");
    assert!(out.ends_with(hostile), "{out:?}");

    let (status, out, err) = vm(&["stop", &id]);
    assert_eq!((status, out.trim()), (Some(0), id.as_str()), "{err}");
    let (_, ps, _) = vm(&["ps"]);
    assert!(!ps.contains(&id), "{ps}");
    let (status, _, err) = vm(&["exec", &id, "--", "node", "-e", "0"]);
    assert_eq!(status, Some(125));
    assert!(err.contains("no running VM"), "{err}");

    // A record whose keeper is gone is removed by ps.
    let stale = runtime.path().join("nodeos-vm/vms/deadbeef0000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(
        stale.join("state.json"),
        r#"{"id":"deadbeef0000","pid":999999999,"backend":"kvm","memory_mib":512,"cpus":1,"started":0,"running":true}"#,
    )
    .unwrap();
    let (_, ps, _) = vm(&["ps"]);
    assert!(!ps.contains("deadbeef0000"), "{ps}");
    assert!(!stale.exists());
}

/// A prebuilt native addon from the npm registry itself loads in the VM: rollup's native
/// build (`@rollup/rollup-linux-x64-gnu`, which links libdl, librt, libpthread, libgcc_s and
/// libc), fetched as npm would (its tarball, with curl on the host), used once from a
/// read-only project.
#[test]
fn a_native_addon_from_the_npm_registry_loads() {
    let (kernel, rootfs) = common::artifacts();
    let project = tempfile::tempdir().unwrap();
    let package = project
        .path()
        .join("node_modules/@rollup/rollup-linux-x64-gnu");
    std::fs::create_dir_all(&package).unwrap();
    let fetched = Command::new("sh")
        .arg("-c")
        .arg(
            "curl -fsSL https://registry.npmjs.org/@rollup/rollup-linux-x64-gnu/-/rollup-linux-x64-gnu-4.69.3.tgz \
             | tar -xz --strip-components=1",
        )
        .current_dir(&package)
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "fetching the addon from the npm registry: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let volume = format!("{}:/app:ro", project.path().display());
    let child = Command::new(BIN)
        .args(["run", "--backend", &common::backend(), "--kernel"])
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .args(["-v", &volume, "-w", "/app", "--", "node", "-e"])
        .arg(
            "const rollup = require('@rollup/rollup-linux-x64-gnu');
             console.log(typeof rollup.parse, rollup.xxhashBase16(new Uint8Array([1, 2, 3])).length);",
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let _watchdog = common::Watchdog::for_group(child.id(), common::BOOT_LIMIT * 2);
    let used = child.wait_with_output().unwrap();
    assert_eq!(
        (
            used.status.code(),
            String::from_utf8_lossy(&used.stdout).as_ref()
        ),
        (Some(0), "function 32\n"),
        "{}",
        String::from_utf8_lossy(&used.stderr)
    );
}
