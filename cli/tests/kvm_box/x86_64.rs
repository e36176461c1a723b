//! Our VMM on real KVM semantics: every `start` case (tests/common/cases.rs) runs with
//! `--backend kvm` inside the KVM box — an L1 Linux under QEMU TCG with emulated SVM and
//! nested paging, whose /dev/kvm behaves like hardware KVM. No QEMU is packed into the box:
//! what boots there is our VMM alone. One box run serves all the tests of this file.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use crate::common;
use common::corpus;
use common::run_cases;
use kvm_box::{BoxFile, BoxRun, Check, Script};

use super::{FIXTURE, NODEOS_VM, ROOTFS, STDERR_MARK};

const KERNEL: &str = "/nodeos/vmlinux";
/// `run -p` on our VMM: a Node server on the guest's port 80, run as its user, answers L1
/// through the published port once it listens (busybox `wget`), then exits, and so does `run`.
const PUBLISH_SCRIPT: &str = r#"D=/tmp/publish; mkdir -p $D
/nodeos/nodeos-vm run --backend kvm --kernel KERNEL --rootfs ROOTFS -p 127.0.0.1:18080:80 -- node -e "
  const s = require('http').createServer((q, r) => { r.end('hi from the guest'); s.close(); })
    .listen(80, () => console.log('listening as uid', process.getuid()))" >$D/out 2>$D/err & r=$!
i=0; until grep -q listening $D/out 2>/dev/null; do i=$((i+1)); [ $i -lt 900 ] || { cat $D/out $D/err; exit 1; }; sleep 0.1; done
echo "got: $(wget -q -O - http://127.0.0.1:18080/)"
wait $r; echo "run exited $?"; cat $D/out $D/err"#;

/// A detached VM on the jailed VMM (L1 runs nodeos-vm as root, with cgroup v2), looked at
/// through /proc from L1, used, paused while a command prints, unpaused, stopped; then what is
/// left of its jail.
const JAIL_SCRIPT: &str = r#"D=/tmp/jailcheck; mkdir -p $D/run; export XDG_RUNTIME_DIR=$D/run
id=$(/nodeos/nodeos-vm start --detach --backend kvm --kernel KERNEL --rootfs ROOTFS) || exit 1
for p in /proc/[0-9]*; do [ -e $p/root/kernel ] && vmm=${p#/proc/}; done
[ -n "$vmm" ] || { echo "no jailed VMM process"; exit 1; }
echo "root: $(ls /proc/$vmm/root/ | tr '\n' ' ')"
grep -E '^(Uid|Gid|Groups|NoNewPrivs|CapEff):' /proc/$vmm/status
for t in /proc/$vmm/task/*; do echo "thread $(cat $t/comm) seccomp $(awk '/^Seccomp:/ {print $2}' $t/status)"; done
for ns in mnt pid net ipc uts; do
  [ "$(readlink /proc/$vmm/ns/$ns)" != "$(readlink /proc/self/ns/$ns)" ] && echo "own $ns namespace"
done
echo "cgroup: $(cat /proc/$vmm/cgroup)"
g=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/$vmm/cgroup)
echo "cpu.max: $(cat $g/cpu.max); memory.max: $(cat $g/memory.max)"
/nodeos/nodeos-vm exec $id -- node -e 'console.log("answer", 6 * 7)'
/nodeos/nodeos-vm exec $id -- node -e 'let i = 0; setInterval(() => console.log(i++), 100)' >$D/ticks & t=$!
ticks() { wc -l <$D/ticks; }
i=0; until [ $(ticks) -ge 3 ]; do i=$((i+1)); [ $i -lt 600 ] || break; sleep 0.1; done
/nodeos/nodeos-vm pause $id >/dev/null && sleep 0.5 && a=$(ticks) && sleep 2 && b=$(ticks)
echo "paused: $(/nodeos/nodeos-vm ps | grep -c paused); ticks while paused: $((b - a))"
/nodeos/nodeos-vm unpause $id >/dev/null
i=0; until [ $(ticks) -gt $((b + 2)) ]; do i=$((i+1)); [ $i -lt 600 ] || break; sleep 0.1; done
echo "ticks after unpause: $(($(ticks) - b))"; kill $t
/nodeos/nodeos-vm stop $id >/dev/null
echo "left: $(ls -A $D/run/nodeos-vm | grep jail)$([ -e $g ] && echo " $g")""#;

/// A VM run by an unprivileged user (`nobody`, KVM opened to everyone for the occasion), its
/// VMM looked at through /proc from L1's root while the guest waits.
const JAIL_USER_SCRIPT: &str = r#"D=/tmp/userjail; mkdir -p $D/run; chown -R 65534:65534 $D
chmod 666 /dev/kvm; chmod -R a+rX /nodeos
[ -e /proc/sys/kernel/unprivileged_userns_clone ] && echo 1 > /proc/sys/kernel/unprivileged_userns_clone
su -s /bin/sh nobody -c "HOME=$D XDG_RUNTIME_DIR=$D/run /nodeos/nodeos-vm run --backend kvm \
  --kernel KERNEL --rootfs ROOTFS -- node -e 'console.log(\"up\", process.getuid()); setTimeout(() => {}, 10000)'" \
  >$D/out 2>$D/err & r=$!
i=0; until grep -q up $D/out 2>/dev/null; do i=$((i+1)); [ $i -lt 900 ] || { cat $D/out $D/err; exit 1; }; sleep 0.1; done
vmm=; for p in /proc/[0-9]*; do [ -e $p/root/kernel ] && [ "$(awk '/^Uid:/ {print $2}' $p/status)" = 65534 ] && vmm=${p#/proc/}; done
[ -n "$vmm" ] || { echo "no jailed VMM process"; cat $D/err; exit 1; }
echo "root: $(ls /proc/$vmm/root/ | tr '\n' ' ')"
grep -E '^(Uid|Gid|NoNewPrivs|CapEff|CapBnd):' /proc/$vmm/status
for t in /proc/$vmm/task/*; do echo "thread $(cat $t/comm) seccomp $(awk '/^Seccomp:/ {print $2}' $t/status)"; done
for ns in user mnt pid net ipc uts; do
  [ "$(readlink /proc/$vmm/ns/$ns)" != "$(readlink /proc/self/ns/$ns)" ] && echo "own $ns namespace"
done
grep -E '^Max (core file size|open files)' /proc/$vmm/limits
wait $r; echo "run exited $?"; cat $D/out $D/err"#;

pub(crate) fn box_checks() -> &'static BTreeMap<String, Check> {
    static CHECKS: OnceLock<BTreeMap<String, Check>> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let (kernel, rootfs) = common::artifacts();
        let mut script = Script::new();
        script.check("doctor", &format!("{NODEOS_VM} doctor"));
        script.check(
            "auto_backend",
            &format!(
                "echo process.pid | {NODEOS_VM} start --kernel {KERNEL} --rootfs {ROOTFS} 2>/tmp/e; s=$?; \
                 echo {STDERR_MARK}; cat /tmp/e; exit $s"
            ),
        );
        super::add_start_cases(&mut script, KERNEL, Duration::from_secs(90));
        super::add_run_cases(&mut script, KERNEL, run_cases::RUN_CASES);
        let run_cmd = format!("{NODEOS_VM} run --backend kvm --kernel {KERNEL} --rootfs {ROOTFS}");
        let corpus = tempfile::tempdir().unwrap();
        let box_corpus: Vec<_> = corpus::PROJECTS.iter().filter(|p| p.in_box).collect();
        for project in &box_corpus {
            corpus::in_box::add_check(&mut script, &run_cmd, project);
        }
        for (name, text) in [
            ("jail", JAIL_SCRIPT),
            ("jail_user", JAIL_USER_SCRIPT),
            ("publish", PUBLISH_SCRIPT),
        ] {
            let text = text.replace("KERNEL", KERNEL).replace("ROOTFS", ROOTFS);
            script.check_with_timeout(name, Duration::from_secs(240), &text);
        }
        script.check_with_timeout(
            "serve",
            Duration::from_secs(240),
            &common::serve::box_script(KERNEL, ROOTFS),
        );
        let web = tempfile::tempdir().unwrap();
        // Host programs the box runs, installed with apt when missing (as root), like
        // nodeos-vm installs what it needs: passt for --net, iproute2's ip (busybox's has no
        // tuntap; ahead of busybox's on L1's PATH), e2fsprogs to pack volumes, to check and
        // grow users' disks (e2fsck, resize2fs) and for the cases to look into one (debugfs).
        let program = |name, package| kvm_box::host_program(name, package).unwrap();
        let passt = program("passt", "passt");
        let mut run = BoxRun::new(script.build())
            .file(common::web::box_site(web.path()))
            .file(BoxFile::with_libs(&passt, "/usr/bin/passt"))
            .file(BoxFile::with_libs(
                program("ip", "iproute2"),
                "/usr/local/sbin/ip",
            ))
            .file(BoxFile::with_libs(common::BIN, "/nodeos/nodeos-vm"))
            .file(BoxFile::new(common::fixture_dir(), FIXTURE))
            .file(common::serve::box_app(web.path()));
        for tool in ["e2fsck", "resize2fs"] {
            let path = program(tool, "e2fsprogs");
            run = run.file(BoxFile::with_libs(&path, path.to_str().unwrap()));
        }
        for file in kvm_box::volume_tools().expect("e2fsprogs for the KVM box") {
            run = run.file(file);
        }
        for project in box_corpus {
            run = run.file(corpus::in_box::file(project, corpus.path()));
        }
        let run = run
            .file(BoxFile::new(kernel, KERNEL))
            .file(BoxFile::new(rootfs, ROOTFS));
        let run = BoxRun {
            // The corpus projects add about a minute and a half.
            timeout: Duration::from_secs(1500),
            modules: vec!["dummy".into(), "tun".into()],
            ..run
        };
        let out = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("the KVM box run failed");
        eprintln!("KVM box: L1 boot {:?}, whole run {:?}", out.boot, out.wall);
        out.checks()
    })
}

fn check(name: &str) -> &'static Check {
    super::check(box_checks, name)
}

fn run_in_box(name: &str) {
    super::start_case(name, check, "our VMM, in the KVM box");
}

case_tests!(run_in_box);

fn run_case_in_box(name: &str) {
    super::run_case(name, check, "our VMM, in the KVM box");
}

mod run {
    use super::run_case_in_box;
    run_case_tests!(run_case_in_box);
}

/// Where KVM has hardware semantics, `auto` picks our VMM, and says nothing about fallbacks.
#[test]
fn auto_picks_our_vmm_where_kvm_is_real() {
    let doctor = check("doctor");
    assert!(
        doctor.output.contains("auto backend: kvm"),
        "{}",
        doctor.output
    );
    let auto = check("auto_backend");
    assert_eq!(auto.status, Some(0), "{}", auto.output);
    // Its first VM makes the template (a line on stderr, not in the REPL's output).
    let (stdout, stderr) = auto.output.split_once(STDERR_MARK).unwrap();
    assert_eq!(
        stdout.trim(),
        "1",
        "auto printed more than the REPL's answer (stderr: {stderr})"
    );
}

/// The corpus projects marked `in_box` (tests/common/corpus.rs): `npm test` in a VM of our
/// VMM gives this host's status and pass/fail counts (all of them: benches/src/bin/corpus.rs).
#[test]
fn corpus_matches_the_host() {
    let dir = tempfile::tempdir().unwrap();
    for project in corpus::PROJECTS.iter().filter(|p| p.in_box) {
        let host = corpus::on_host(&corpus::prepare(project, dir.path()));
        let vm = corpus::in_box::outcome(check(&corpus::in_box::check_name(project)));
        if let Err(why) = corpus::compare(project, &host, &vm, "on our VMM in the KVM box") {
            panic!("{why}");
        }
    }
}

/// `nodeos-vm serve` on our VMM: an app deployed and called over HTTP, then SIGTERM stops its
/// microVM and leaves nothing behind.
#[test]
fn serve_deploys_and_invokes_on_our_vmm() {
    common::serve::check_box_output(check("serve"), "x64");
}

/// `-p` on our VMM (passt and the guard are nodeos-vm's, as on QEMU; the virtio-net device is
/// ours): L1 reaches a Node server in the guest through the published port.
#[test]
fn a_published_port_reaches_our_vmm() {
    let publish = check("publish");
    let out = &publish.output;
    assert_eq!(publish.status, Some(0), "{out}");
    assert!(
        out.contains("got: hi from the guest\nrun exited 0\n"),
        "{out}"
    );
    assert!(out.contains("listening as uid 1000"), "{out}");
}

/// The jail around our VMM, as root in L1: its own root, namespaces, user, cgroup with the
/// VM's limits, all gone once the VM stops (docs/security.md). Only this VM's jail folder and
/// cgroup are looked for afterwards: the run case that SIGKILLs a keeper leaves its own behind.
#[test]
fn the_vmm_runs_jailed_as_root() {
    let jail = check("jail");
    let out = &jail.output;
    assert_eq!(jail.status, Some(0), "{out}");
    // The root image and the VM's disk slots (empty: a file of its own folder), nothing else.
    assert!(
        out.contains("root: dev disk0 disk1 disk2 disk3 disk4 disk5 kernel \n"),
        "{out}"
    );
    // A uid and gid of its own, from the default range (L1 names none of it).
    for key in ["Uid:", "Gid:"] {
        let ids: Vec<u32> = out
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|ids| {
                ids.split_whitespace()
                    .filter_map(|i| i.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            ids.len() == 4 && ids.iter().all(|&id| id == ids[0] && id >= 100_000),
            "{key} {out}"
        );
    }
    assert!(
        out.lines().any(|l| l.trim() == "Groups:"),
        "no groups: {out}"
    );
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    for ns in ["mnt", "pid", "net", "ipc", "uts"] {
        assert!(out.contains(&format!("own {ns} namespace")), "{ns}: {out}");
    }
    assert!(out.contains("cgroup: 0::/nodeos-vm/jail-"), "{out}");
    assert!(
        out.contains("cpu.max: 100000 100000; memory.max: 671088640"),
        "1 vCPU; 512 MiB + 128 MiB: {out}"
    );
    assert!(out.contains("answer 42"), "{out}");
    // Paused, the guest prints nothing; unpaused, it goes on.
    assert!(out.contains("paused: 1; ticks while paused: 0\n"), "{out}");
    let after: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("ticks after unpause: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(after > 2, "{out}");
    assert!(out.trim_end().ends_with("left:"), "{out}");
    // Every thread of the VMM process under its seccomp filter (mode 2), its main thread too.
    let threads: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("thread ")?.rsplit_once(" seccomp "))
        .collect();
    for name in [
        "nodeos-vmm",
        "vmm",
        "vcpu0",
        "virtio",
        "host-control",
        "console-input",
    ] {
        assert!(threads.iter().any(|(t, _)| *t == name), "{name}: {out}");
    }
    assert!(threads.iter().all(|(_, mode)| *mode == "2"), "{out}");
}

/// The jail of an unprivileged user's VMM in L1: a user namespace of its own and every other
/// namespace, the same root as root's jail, no capability, no core dumps, every thread
/// filtered (docs/security.md, finding 1).
#[test]
fn the_vmm_runs_jailed_as_an_unprivileged_user() {
    let jail = check("jail_user");
    let out = &jail.output;
    assert_eq!(jail.status, Some(0), "{out}");
    // The root image and the VM's disk slots (empty: a file of its own folder), nothing else.
    assert!(
        out.contains("root: dev disk0 disk1 disk2 disk3 disk4 disk5 kernel \n"),
        "{out}"
    );
    for line in [
        "Uid:\t65534\t65534\t65534\t65534",
        "NoNewPrivs:\t1",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "run exited 0",
        "up 1000",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    for ns in ["user", "mnt", "pid", "net", "ipc", "uts"] {
        assert!(out.contains(&format!("own {ns} namespace")), "{ns}: {out}");
    }
    let limit = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l[name.len()..].split_whitespace().next())
            .map(String::from)
    };
    assert_eq!(limit("Max core file size").as_deref(), Some("0"), "{out}");
    assert_eq!(limit("Max open files").as_deref(), Some("1024"), "{out}");
    let threads: Vec<(&str, &str)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("thread ")?.rsplit_once(" seccomp "))
        .collect();
    assert!(threads.iter().any(|(t, _)| *t == "vcpu0"), "{out}");
    assert!(threads.iter().all(|(_, mode)| *mode == "2"), "{out}");
}
