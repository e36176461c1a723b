//! Our VMM on arm64 KVM: nodeos-vm cross-built for aarch64 (cli/cross-build.sh) boots the arm64
//! guest with `--backend kvm` inside the arm64 KVM box — an arm64 L1 Linux under QEMU's TCG with
//! EL2 emulated (`-M virt,virtualization=on`), whose /dev/kvm is Debian's arm64 KVM. Every
//! `start` case (tests/common/cases.rs), `run` cases (volumes, users and `--net` among them:
//! Debian's arm64 e2fsprogs, passt and iproute2 packed from the box's sysroot) and a `serve`
//! app run there, and a REPL on QEMU's `virt` with `-accel kvm` (the QEMU backend on an arm64 host:
//! Debian's arm64 QEMU, from the box's arm64 sysroot), booted cold and restored from its template;
//! one box run serves all the tests of this file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common;
use common::run_cases;
use kvm_box::{Arch, BoxFile, BoxRun, Check, Script, Sysroot};

use super::{FIXTURE, NODEOS_VM, ROOTFS};

const KERNEL: &str = "/nodeos/Image";

pub(crate) fn box_checks() -> &'static BTreeMap<String, Check> {
    static CHECKS: OnceLock<BTreeMap<String, Check>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let (kernel, rootfs) = common::build(&["--arch", "aarch64"]);
        let mut script = Script::new();
        script.check("doctor", &format!("{NODEOS_VM} doctor"));
        script.check_with_timeout(
            "qemu_kvm",
            Duration::from_secs(120),
            &repl("qemu --no-snapshot"),
        );
        // Each backend's first `start` makes its template, then it and each run restore.
        for backend in ["qemu", "kvm"] {
            script.check_with_timeout(
                &format!("{backend}_kvm_restored"),
                Duration::from_secs(240),
                &restored_twice(backend),
            );
        }
        super::add_start_cases(&mut script, KERNEL, Duration::from_secs(120));
        super::add_run_cases(
            &mut script,
            KERNEL,
            RUN_CASES.iter().map(|name| run_cases::run_case(name)),
        );
        script.check_with_timeout(
            "serve",
            Duration::from_secs(240),
            &common::serve::box_script(KERNEL, ROOTFS),
        );
        let app = tempfile::tempdir().unwrap();
        let sysroot = Sysroot::ensure(
            &kvm_box::default_cache_dir(),
            Arch::Aarch64,
            &["qemu-system-arm", "e2fsprogs", "passt", "iproute2"],
        )
        .unwrap_or_else(|e| panic!("arm64 packages for the box: {e}"));
        let from_sysroot = |path: &str| {
            sysroot
                .resolve(path)
                .unwrap_or_else(|| panic!("{path} is not in the arm64 sysroot"))
        };
        let run = arm64_box(script, kernel, rootfs)
            .file(common::serve::box_app(app.path()))
            .file(BoxFile::new(common::fixture_dir(), FIXTURE))
            .file(common::web::box_site(app.path()))
            // --net: passt; iproute2's ip ahead of busybox's on L1's PATH (it has tuntap).
            .file(BoxFile::with_libs(
                from_sysroot("/usr/bin/passt"),
                "/usr/bin/passt",
            ))
            .file(BoxFile::with_libs(
                from_sysroot("/bin/ip"),
                "/usr/local/sbin/ip",
            ));
        let run = kvm_box::sysroot_volume_tools(&sysroot)
            .and_then(|mut files| {
                files.extend(kvm_box::sysroot_qemu(&sysroot)?);
                Ok(files)
            })
            .expect("e2fsprogs and QEMU for the arm64 box")
            .into_iter()
            .fold(run, BoxRun::file);
        let run = BoxRun {
            timeout: Duration::from_secs(1800),
            modules: vec!["dummy".into(), "tun".into()],
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

/// `start` answering `6 * 7` on `backend`, then two `run`s printing a random UUID each, with
/// the template cache's log lines.
fn restored_twice(backend: &str) -> String {
    let run = format!(
        "RUST_LOG=sandbox=info {NODEOS_VM} run --backend {backend} --kernel {KERNEL} \
         --rootfs {ROOTFS} -- node -e 'console.log(require(\"crypto\").randomUUID())' 2>&1"
    );
    format!("{} && {run} && {run}", repl(backend))
}

/// An arm64 box run of `script` with nodeos-vm (the CLI in the dev profile: it does little; its
/// VMM program is built in release, as always), the arm64 kernel and image.
fn arm64_box(script: Script, kernel: PathBuf, rootfs: PathBuf) -> BoxRun {
    BoxRun::new(script.build())
        .arch(Arch::Aarch64)
        .file(BoxFile::with_libs(
            kvm_box::nodeos_vm_for(&kvm_box::default_cache_dir(), Arch::Aarch64, "dev")
                .unwrap_or_else(|e| panic!("nodeos-vm for aarch64: {e}")),
            NODEOS_VM,
        ))
        .file(BoxFile::new(kernel, KERNEL))
        .file(BoxFile::new(rootfs, ROOTFS))
}

/// `start --backend BACKEND` answering `6 * 7` (BACKEND may carry options), with the template
/// cache's log lines.
fn repl(backend: &str) -> String {
    format!(
        "printf 'console.log(6 * 7, process.arch)\\n' | RUST_LOG=sandbox=info {NODEOS_VM} \
         start --backend {backend} --kernel {KERNEL} --rootfs {ROOTFS} 2>&1"
    )
}

/// A box run whose L1 has a GICv2, as a Raspberry Pi has: its KVM gives our VMM a vGICv2.
fn gic_v2_checks() -> &'static BTreeMap<String, Check> {
    static CHECKS: OnceLock<BTreeMap<String, Check>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let (kernel, rootfs) = common::build(&["--arch", "aarch64"]);
        let mut script = Script::new();
        script.check("gic", "dmesg | grep -E 'GIC|vgic'");
        script.check_with_timeout("cold", Duration::from_secs(120), &repl("kvm --no-snapshot"));
        script.check_with_timeout("restored", Duration::from_secs(240), &restored_twice("kvm"));
        let run = BoxRun {
            gic_v2: true,
            timeout: Duration::from_secs(900),
            ..arm64_box(script, kernel, rootfs)
        };
        kvm_box::run(&kvm_box::default_cache_dir(), &run)
            .expect("the arm64 KVM box run (GICv2) failed")
            .checks()
    })
}

/// The run cases: all but the ones that need a TAP interface, the host's npm, or a long time.
const RUN_CASES: &[&str] = &[
    "exit_codes_and_signals",
    "stdout_and_stderr_apart_and_in_order",
    "stdin_piped_in",
    "timeout_kills_the_command",
    "command_not_found",
    "volume_is_visible_and_host_files_unchanged",
    "npm_test_of_a_node_project",
    "user_layer_persists_and_is_private",
    "no_network_without_net",
    "host_loopback_is_opt_in",
];

fn check(name: &str) -> &'static Check {
    super::check(box_checks, name)
}

fn run_in_box(name: &str) {
    super::start_case(name, check, "our VMM, in the arm64 KVM box");
}

case_tests!(run_in_box);

fn run_case_in_box(name: &str) {
    super::run_case(name, check, "our VMM, in the arm64 KVM box");
}

mod run {
    use super::run_case_in_box;
    case_tests!(@each run_case_in_box;
        exit_codes_and_signals,
        stdout_and_stderr_apart_and_in_order,
        stdin_piped_in,
        timeout_kills_the_command,
        command_not_found,
        volume_is_visible_and_host_files_unchanged,
        npm_test_of_a_node_project,
        user_layer_persists_and_is_private,
        no_network_without_net,
        host_loopback_is_opt_in);
}

/// `nodeos-vm serve` on our VMM on arm64: an app deployed and called over HTTP, then SIGTERM
/// stops its microVM and leaves nothing behind.
#[test]
fn serve_deploys_and_invokes_on_arm64_kvm() {
    common::serve::check_box_output(check("serve"), "arm64");
}

/// The QEMU backend on an arm64 host: `virt` on KVM.
#[test]
fn qemu_runs_the_guest_on_arm64_kvm() {
    let c = check("qemu_kvm");
    assert_eq!(c.status, Some(0), "{}", c.output);
    assert!(c.output.contains("42 arm64"), "{}", c.output);
}

/// A [`restored_twice`] check's template made once (by its `start`), `start` and both `run`s
/// restored from it, and the two restored VMs' random UUIDs different.
fn assert_restored_twice(c: &Check) {
    assert_eq!(c.status, Some(0), "{}", c.output);
    assert!(c.output.contains("42 arm64"), "{}", c.output);
    assert_eq!(
        c.output.matches("made the template ").count(),
        1,
        "{}",
        c.output
    );
    assert_eq!(c.output.matches("restoring ").count(), 3, "{}", c.output);
    let uuids: Vec<&str> = c
        .output
        .lines()
        .filter(|l| l.len() == 36 && l.matches('-').count() == 4)
        .collect();
    assert_eq!(uuids.len(), 2, "{}", c.output);
    assert_ne!(uuids[0], uuids[1], "{}", c.output);
}

/// QEMU's snapshots on arm64 KVM (`virt` with KVM).
#[test]
fn qemu_restores_the_guest_on_arm64_kvm() {
    assert_restored_twice(check("qemu_kvm_restored"));
}

/// Our VMM's snapshots on arm64 KVM with a GICv3: the vCPUs' registers, the GIC, the PL031,
/// the marks port.
#[test]
fn our_vmm_restores_the_guest_on_arm64_kvm() {
    assert_restored_twice(check("kvm_kvm_restored"));
}

/// Our VMM on a host with a GICv2 (a Raspberry Pi's): booted cold, then its template made and
/// restored, the vGICv2's registers saved and put back.
#[test]
fn our_vmm_boots_and_restores_on_a_gicv2_host() {
    let checks = gic_v2_checks();
    let gic = &checks["gic"];
    assert!(gic.output.contains("GICv2"), "L1's GIC: {}", gic.output);
    let cold = &checks["cold"];
    assert_eq!(cold.status, Some(0), "{}", cold.output);
    assert!(cold.output.contains("42 arm64"), "{}", cold.output);
    assert_restored_twice(&checks["restored"]);
}

#[test]
fn doctor_finds_kvm_usable_on_arm64() {
    let c = check("doctor");
    assert_eq!(c.status, Some(0), "{}", c.output);
    for line in [
        "kvm: usable (hardware virtualization)",
        "auto backend: kvm",
        "x86_64 guests (--arch x86_64): QEMU's emulation",
    ] {
        assert!(c.output.contains(line), "{line}: {}", c.output);
    }
}
