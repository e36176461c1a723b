//! Our VMM on real KVM semantics, in the KVM boxes (kvm-box/): `x86_64` in the x86-64 box,
//! `arm64` in the arm64 one. Each box is an L1 Linux under QEMU's TCG with one vCPU, about one
//! host core's work for minutes; the first test that needs either box starts both, so the two
//! run side by side instead of one after the other. Both run the `start` and `run` cases
//! (tests/common/) the same way: here.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod arm64;
mod x86_64;

use std::collections::BTreeMap;
use std::sync::Once;
use std::thread;
use std::time::Duration;

use common::cases::{self, Outcome};
use common::run_cases::{self, RunCase, RunOutcome};
use kvm_box::{shell_quote, Check, Script};

/// Where both boxes' scripts find nodeos-vm, the root image, the fixture project, and where
/// they make a truncated copy of the image.
const NODEOS_VM: &str = "/nodeos/nodeos-vm";
const ROOTFS: &str = "/nodeos/rootfs.img";
const FIXTURE: &str = "/nodeos/fixture";
const TRUNCATED: &str = "/tmp/truncated.img";
/// Printed between a check's stdout and its stderr.
const STDERR_MARK: &str = "@@STDERR@@";
/// How long before a `start` case's check is killed its watch says it hung.
const HANG_NOTICE: Duration = Duration::from_secs(15);

/// Run beside the `nodeos-vm start` whose pid is `$1` (and killed once it ended, its `sleep`
/// with it): one still running after `$2` seconds is said hung, with what the threads of every nodeos-vm process do
/// (state, user and system clock ticks; 3 s later again, with their kernel stacks), and then
/// stopped: a VM that never answers leaves what it was doing in the check's output.
const HANG_WATCH: &str = r#"p=$1; sleep $2 & s=$!
trap 'kill $s; exit 0' TERM
wait $s
[ -e /proc/$p ] || exit 0
echo "hung: still running after $2 s; threads (state utime stime):"
for round in 1 2; do
  for d in /proc/[0-9]*; do
    case "$(cat $d/comm 2>/dev/null)" in nodeos*) ;; *) continue ;; esac
    echo "process ${d#/proc/} $(cat $d/comm)"
    for t in $d/task/*; do
      echo "  $(cat $t/comm) $(cut -d' ' -f3,14,15 $t/stat)"
      [ $round = 1 ] || sed 's/^/    /' $t/stack
    done
  done
  [ $round = 2 ] || sleep 3
done
kill -TERM $p; sleep 3; kill -KILL $p 2>/dev/null"#;
const HANG_WATCH_PATH: &str = "/tmp/hang-watch";

/// Starts the runs of both boxes on threads of their own, once, when this binary runs all its
/// tests (given no filter: a filtered run starts only the box its tests ask for). A run that
/// fails there is run again by the next test that asks for its checks (each file's `OnceLock`
/// stays empty when its initialisation panics), as when a test starts it.
fn start_both_boxes() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        if std::env::args().skip(1).any(|arg| !arg.starts_with('-')) {
            return;
        }
        thread::spawn(|| {
            x86_64::box_checks();
        });
        thread::spawn(|| {
            arm64::box_checks();
        });
    });
}

/// The check `name` of the box run whose checks `checks` gives (both boxes started first).
fn check(checks: fn() -> &'static BTreeMap<String, Check>, name: &str) -> &'static Check {
    start_both_boxes();
    checks()
        .get(name)
        .unwrap_or_else(|| panic!("the box printed no section {name}: the box ended early"))
}

/// Adds a check `{case}.{i}` per boot of every `start` case (tests/common/cases.rs), on our
/// VMM with `kernel`, killed after `timeout` (said hung, with what its threads do,
/// [`HANG_NOTICE`] before), and before them the truncated image some cases boot.
fn add_start_cases(script: &mut Script, kernel: &str, timeout: Duration) {
    script.setup(&format!(
        "head -c $(( $(wc -c < {ROOTFS}) / 2 )) {ROOTFS} > {TRUNCATED}"
    ));
    script.setup(&format!(
        "cat > {HANG_WATCH_PATH} <<'EOF'\n{HANG_WATCH}\nEOF"
    ));
    let watch = timeout.saturating_sub(HANG_NOTICE).as_secs();
    for case in cases::CASES {
        for (i, boot) in case.boots.iter().enumerate() {
            let mut args = cases::args(boot, kernel, ROOTFS, TRUNCATED);
            for (flag, default) in [("--kernel", kernel), ("--rootfs", ROOTFS)] {
                if !args.iter().any(|a| a == flag) {
                    args.extend([flag.to_string(), default.to_string()]);
                }
            }
            let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
            script.check_with_timeout(
                &format!("{}.{i}", case.name),
                timeout,
                &format!(
                    "printf %s {} | {NODEOS_VM} start --backend kvm {} >/tmp/o 2>/tmp/e & p=$!; \
                     sh {HANG_WATCH_PATH} $p {watch} & w=$!; wait $p; s=$?; kill $w 2>/dev/null; \
                     cat /tmp/o; echo {STDERR_MARK}; cat /tmp/e; exit $s",
                    shell_quote(boot.input),
                    args.join(" ")
                ),
            );
        }
    }
}

/// Adds a check `run.{name}` per case of `run_cases` (tests/common/run_cases.rs), on our VMM
/// with `kernel`, each in a folder of its own with a copy of the fixture project, after the
/// setup of the box's web server (`--net` cases reach it).
fn add_run_cases<'a>(
    script: &mut Script,
    kernel: &str,
    run_cases: impl IntoIterator<Item = &'a RunCase>,
) {
    let run_cmd = format!("{NODEOS_VM} run --backend kvm --kernel {kernel} --rootfs {ROOTFS}");
    script.setup(&common::web::box_setup());
    for case in run_cases {
        let dir = format!("/tmp/run/{}", case.name);
        script.check_with_timeout(
            &format!("run.{}", case.name),
            Duration::from_secs(240),
            &format!(
                "mkdir -p {dir} && cp -r {FIXTURE} {dir}/node-project && cd {dir} && \
                 printf %s {} | RUN={} FIXTURE={dir}/node-project WEB={} \
                 IPROUTE=/usr/local/sbin/ip sh -c {} >/tmp/o 2>/tmp/e; s=$?; \
                 cd /root; cat /tmp/o; echo {STDERR_MARK}; cat /tmp/e; exit $s",
                shell_quote(case.stdin),
                shell_quote(&run_cmd),
                common::web::BOX_WEB,
                shell_quote(case.script),
            ),
        );
    }
}

/// What a check printed: its stdout, and its stderr (after [`STDERR_MARK`]).
fn split(c: &Check) -> (String, String) {
    let (stdout, stderr) = c.output.split_once(STDERR_MARK).unwrap_or((&c.output, ""));
    (
        stdout.to_string(),
        stderr.trim_start_matches('\n').to_string(),
    )
}

/// Checks the `start` case `name` against what its boots printed in a box (`check` finds a
/// check by name; `place` says which box, for the message).
fn start_case(name: &str, check: fn(&str) -> &'static Check, place: &str) {
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
        panic!("{name} ({place}): {why}");
    }
}

/// Checks the `run` case `name` against what it printed in a box, as [`start_case`] does.
fn run_case(name: &str, check: fn(&str) -> &'static Check, place: &str) {
    let case = run_cases::run_case(name);
    let c = check(&format!("run.{name}"));
    let (stdout, stderr) = split(c);
    let outcome = RunOutcome {
        status: c.status,
        stdout,
        stderr,
    };
    if let Err(why) = (case.check)(&outcome) {
        panic!("run {name} ({place}): {why}");
    }
}
