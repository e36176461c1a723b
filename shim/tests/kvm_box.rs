//! The shim on **our VMM**: inside the KVM box (an L1 Linux under QEMU TCG whose /dev/kvm
//! behaves like hardware KVM, and no QEMU in it), Debian's containerd runs the NodeOS image
//! with `--runtime io.containerd.nodeos.v2`. One box run serves the whole file.

mod common;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use kvm_box::{BoxFile, BoxRun, Check, Script};

const CTR: &str = "ctr --address /tmp/ct/containerd.sock --namespace nodeos-test";
const IMAGE: &str = "docker.io/library/nodeos:latest";
/// containerd in L1, with the snapshotter that needs no kernel module (overlay may be absent).
const SETUP: &str = r#"mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mkdir -p /tmp/ct /tmp/cache
printf 'version = 2\nroot = "/tmp/ct/root"\nstate = "/tmp/ct/state"\n[grpc]\naddress = "/tmp/ct/containerd.sock"\n[plugins."io.containerd.grpc.v1.cri"]\ndisable = true\n' >/tmp/ct/config.toml
export PATH=/nodeos:$PATH NODEOS_VM_KERNEL=/nodeos/vmlinux NODEOS_VM_ROOTFS=/nodeos/rootfs.img NODEOS_VM_CACHE=/tmp/cache
containerd --config /tmp/ct/config.toml >/tmp/ct/log 2>&1 &
i=0; until ctr --address /tmp/ct/containerd.sock version >/dev/null 2>&1; do i=$((i+1)); [ $i -lt 600 ] || break; sleep 0.1; done"#;

fn box_checks() -> &'static BTreeMap<String, Check> {
    static CHECKS: OnceLock<BTreeMap<String, Check>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let (kernel, rootfs) = common::artifacts();
        let archive = common::image_archive();
        let run = format!("{CTR} run --snapshotter native --runtime io.containerd.nodeos.v2");
        let mut script = Script::new();
        script.setup(SETUP);
        script.check(
            "import",
            &format!("{CTR} image import --snapshotter native /nodeos/nodeos.tar"),
        );
        script.check_with_timeout(
            "hello",
            Duration::from_secs(300),
            &format!(
                "{run} --rm {IMAGE} hello node -e \
                 'console.log(6 * 7, process.getuid(), require(\"os\").release()); process.exit(3)'"
            ),
        );
        script.check_with_timeout(
            "exec_and_kill",
            Duration::from_secs(300),
            &format!(
                "{run} -d {IMAGE} forever node -e 'setInterval(() => {{}}, 1000)' || exit 1
                 echo \"vmm processes: $(ps | grep -c '[n]odeos-vmm')\"
                 {CTR} task exec --exec-id e1 forever node -e 'console.log(\"exec\", process.getuid())'
                 {CTR} task kill --signal SIGKILL forever
                 i=0; until {CTR} task ls | grep -q STOPPED; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done
                 {CTR} task delete forever && {CTR} container delete forever
                 sleep 1; echo \"left: $(ls -A /tmp/cache/shim) $(ps | grep -c '[n]odeos-vmm')\""
            ),
        );
        let pod = "--annotation io.kubernetes.cri.sandbox-id=pod \
                   --annotation io.kubernetes.cri.container-type";
        let boot_id = "require(\"fs\").readFileSync(\"/proc/sys/kernel/random/boot_id\", \"utf8\").trim()";
        script.check_with_timeout(
            "pod",
            Duration::from_secs(300),
            &format!(
                "{run} -d {pod}=sandbox {IMAGE} pod node -e 'setInterval(() => {{}}, 1000)' || exit 1
                 mkdir -p /tmp/share && echo shared note >/tmp/share/note
                 {run} --rm {pod}=container --mount type=bind,src=/tmp/share,dst=/share,options=rbind:ro \
                   {IMAGE} member node -e 'console.log(\"member\", {boot_id}, require(\"fs\").readFileSync(\"/share/note\", \"utf8\").trim())' || exit 1
                 {CTR} task exec --exec-id b pod node -e 'console.log(\"sandbox\", {boot_id})' || exit 1
                 {CTR} task kill --signal SIGKILL pod
                 i=0; until {CTR} task ls | grep -q STOPPED; do i=$((i+1)); [ $i -lt 300 ] || exit 1; sleep 0.1; done
                 {CTR} task delete pod && {CTR} container delete pod
                 sleep 1; echo \"left: $(ls -A /tmp/cache/shim) $(ps | grep -c '[n]odeos-vmm')\""
            ),
        );
        script.check("log", "tail -n 30 /tmp/ct/log");
        let mut run = BoxRun::new(script.build())
            .file(BoxFile::with_libs(
                env!("CARGO_BIN_EXE_containerd-shim-nodeos-v2"),
                "/nodeos/containerd-shim-nodeos-v2",
            ))
            .file(BoxFile::with_libs(
                vmm::host_packages::ensure("containerd", "containerd").unwrap(),
                "/usr/bin/containerd",
            ))
            .file(BoxFile::with_libs(
                vmm::host_packages::ensure("ctr", "containerd").unwrap(),
                "/usr/bin/ctr",
            ))
            .file(BoxFile::new(archive, "/nodeos/nodeos.tar"))
            .file(BoxFile::new(kernel, "/nodeos/vmlinux"))
            .file(BoxFile::new(rootfs, "/nodeos/rootfs.img"));
        for file in kvm_box::volume_tools().expect("e2fsprogs for the KVM box") {
            run = run.file(file);
        }
        let run = BoxRun {
            memory_mib: 4096,
            timeout: Duration::from_secs(900),
            ..run
        };
        let out = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("the KVM box run failed");
        eprintln!("KVM box: L1 boot {:?}, whole run {:?}", out.boot, out.wall);
        out.checks()
    })
}

fn check(name: &str) -> &'static Check {
    let checks = box_checks();
    checks.get(name).unwrap_or_else(|| {
        panic!(
            "the box printed no section {name}: the box ended early; containerd's log:\n{}",
            checks.get("log").map_or("", |c| &c.output)
        )
    })
}

/// `check`'s output, which must have passed (with containerd's log when it did not).
fn passed(name: &str) -> &'static str {
    let c = check(name);
    assert!(
        c.passed(),
        "{name}: status {:?}\n{}\ncontainerd's log:\n{}",
        c.status,
        c.output,
        check("log").output
    );
    &c.output
}

#[test]
fn containerd_runs_a_container_on_our_vmm() {
    passed("import");
    let hello = check("hello");
    assert_eq!(hello.status, Some(3), "{}", hello.output);
    let line = hello.output.trim();
    assert!(line.starts_with("42 1000 6."), "{line}");
    eprintln!(
        "ctr run --rm of a hello container on our VMM, in L1: {:?}",
        hello.elapsed
    );
}

#[test]
fn exec_kill_and_delete_on_our_vmm() {
    let out = passed("exec_and_kill");
    // The jailed VMM is a process or two (its pid namespace's first one waits for it).
    assert!(
        out.contains("vmm processes: ") && !out.contains("vmm processes: 0"),
        "{out}"
    );
    assert!(out.contains("exec 1000"), "{out}");
    assert!(out.contains("left:  0"), "{out}");
}

#[test]
fn a_pods_containers_share_one_microvm_on_our_vmm() {
    let out = passed("pod");
    let id_of = |who: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(who)?.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {who} line: {out}"))
    };
    assert_eq!(id_of("member "), id_of("sandbox "), "one kernel: {out}");
    assert!(out.contains("shared note"), "{out}");
    assert!(out.contains("left:  0"), "{out}");
}
