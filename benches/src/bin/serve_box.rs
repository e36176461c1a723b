//! `nodeos-vm serve` in the KVM box: our VMM (`--backend kvm`) against QEMU microvm with KVM
//! (`--backend qemu`), our VMM without a standby VM (apps deployed with `standby=false`: each
//! cold start restores its VM), and our VMM with instances booted cold (`--no-snapshot`,
//! `standby=false`: how serve started instances before template snapshots), one serve of each
//! in one box run, rounds interleaved. Per round: a deploy (its package packed, an instance
//! started and the app loaded: ready to answer), a warm call, and a cold call (the instance
//! stopped at its 1 s idle limit and, where the app has one, its standby VM booted; the call
//! starts an instance: `x-cold-start: 1`), then the app deleted, so that no serve's idle VMs
//! slow down another's round. Templates are made before timing. Times are L1's (emulated); the
//! ratios are what count.
//!
//! cargo build --release && ./target/release/serve_box [RUNS]

use std::time::Duration;

use kvm_box::{BoxFile, BoxRun, Script, HTTP_CLIENT};
use nodeos_vm_benches::{artifacts, count_arg, nodeos_vm_bin, npm_pack, side_by_side_box, stats};

/// Each serve: its name, its backend and options, whether its apps keep a standby VM, its
/// admin port (the apps' port is the next).
const SERVES: [(&str, &str, bool, u16); 4] = [
    ("kvm", "--backend kvm", true, 8090),
    ("kvm-no-standby", "--backend kvm", false, 8096),
    ("qemu", "--backend qemu", true, 8092),
    ("kvm-cold", "--backend kvm --no-snapshot", false, 8094),
];
const APP: &str = "/nodeos/bench-app.tgz";
const HANDLER: &str = "exports.handler = async (event) => ({ n: event.n + 1 });\n";

fn main() {
    let runs = count_arg(3);
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);
    let dir = tempfile::tempdir().expect("a scratch folder");
    std::fs::create_dir(dir.path().join("package")).unwrap();
    std::fs::write(
        dir.path().join("package/package.json"),
        r#"{"name": "bench", "version": "1.0.0", "main": "index.js"}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("package/index.js"), HANDLER).unwrap();
    let app = dir.path().join("bench-app.tgz");
    std::fs::write(&app, npm_pack(dir.path())).unwrap();

    let mut script = Script::new();
    // One serve each, on ports of its own; its token and helpers for the checks.
    for (backend, options, _, port) in SERVES {
        script.setup(&format!(
            "D=/tmp/{backend}; mkdir -p $D/run
XDG_RUNTIME_DIR=$D/run NODEOS_VM_DATA=$D/data /nodeos/nodeos-vm serve {options} \
  --listen 127.0.0.1:{port} --kernel /nodeos/vmlinux --rootfs /nodeos/rootfs.img >$D/url 2>$D/err &
i=0; until grep -q '^apps: ' $D/url 2>/dev/null; do i=$((i+1)); [ $i -lt 600 ] || break; sleep 0.1; done"
        ));
    }
    script.setup(&format!(
        "cat >/tmp/bench.sh <<'EOF'\n{HTTP_CLIENT}\nprintf '{{\"n\": 41}}' >/tmp/event\nEOF"
    ));
    let long = Duration::from_secs(600);
    for (backend, _, standby, port) in SERVES {
        // The template of the apps' VMs, made by a first deploy, and a first cold start.
        script.check_with_timeout(
            &format!("{backend}.warmup"),
            long,
            &format!(
                "{} && {}",
                deploy(backend, port, "warmup", standby),
                delete(backend, port, "warmup")
            ),
        );
    }
    for i in 0..runs {
        for (backend, _, standby, port) in SERVES {
            let app = format!("bench{i}");
            let calls = port + 1;
            script.check_with_timeout(
                &format!("{backend}.deploy.{i}"),
                long,
                &deploy(backend, port, &app, standby),
            );
            script.check(
                &format!("{backend}.warm.{i}"),
                &format!(
                    "{} POST /apps/{app}/invoke /tmp/event",
                    http(backend, calls)
                ),
            );
            // Untimed: until the app has no instance left (and its standby VM is booted).
            let booted = if standby {
                "grep -q '\"standby\":\"booted\"'"
            } else {
                "true"
            };
            script.check(
                &format!("{backend}.idle.{i}"),
                &format!(
                    "until a=$({} GET /apps/{app} /dev/null); echo \"$a\" | grep -q '\"instances\":0' && echo \"$a\" | {booted}; do sleep 0.2; done",
                    http(backend, port)
                ),
            );
            script.check(
                &format!("{backend}.cold.{i}"),
                &format!(
                    "{} POST /apps/{app}/invoke /tmp/event",
                    http(backend, calls)
                ),
            );
            // Untimed: no VM of this serve is left to slow down the next one's rounds.
            script.check(
                &format!("{backend}.delete.{i}"),
                &delete(backend, port, &app),
            );
        }
    }
    let run = BoxRun {
        timeout: Duration::from_secs(3600),
        memory_mib: 4096,
        cpus: 2,
        ..side_by_side_box(&bin, &kernel, &rootfs, script.build())
    }
    .file(BoxFile::new(&app, APP));
    let run = kvm_box::volume_tools()
        .expect("e2fsprogs for the KVM box")
        .into_iter()
        .fold(run, BoxRun::file);
    let result = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("KVM box run");
    let checks = result.checks();

    println!(
        "## In the KVM box (L1: 2 vCPUs): `nodeos-vm serve`, ours vs QEMU microvm vs ours booting \
         instances cold, {runs} rounds\n"
    );
    println!("| serve | deploy → ready | warm call | cold call (an instance started) |");
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    for (backend, _, _, _) in SERVES {
        let times = |what: &str, answer: Option<&str>| -> Vec<f64> {
            (0..runs)
                .filter_map(|i| checks.get(&format!("{backend}.{what}.{i}")))
                .filter(|c| {
                    let ok = c.passed() && answer.is_none_or(|a| c.output.contains(a));
                    if !ok {
                        eprintln!("{backend} {what} failed: {}", c.output);
                    }
                    ok
                })
                .filter_map(|c| c.elapsed.map(|d| d.as_secs_f64() * 1000.0))
                .collect()
        };
        let deploy = stats(&times("deploy", Some("HTTP/1.1 200")));
        let warm = stats(&times("warm", Some("{\"n\":42}")));
        let cold = stats(&times("cold", Some("x-cold-start: 1")));
        println!("| {backend} | {deploy} | {warm} | {cold} |");
        medians.push((deploy.median, cold.median));
    }
    let [ours, bare, qemu, ours_cold] = [medians[0], medians[1], medians[2], medians[3]];
    println!(
        "\nratio ours/QEMU: deploy {:.2}, cold call {:.2}; ours / ours booted cold: deploy {:.2}, \
         cold call {:.2} (without a standby VM {:.2}) (medians; L1's clock, 10 ms steps)",
        ours.0 / qemu.0,
        ours.1 / qemu.1,
        ours.0 / ours_cold.0,
        ours.1 / ours_cold.1,
        bare.1 / ours_cold.1
    );
    println!(
        "(L1 boot {:?}, whole box run {:?})",
        result.boot, result.wall
    );
}

/// The shell that sends one request to `port` of `backend`'s serve, with its token.
fn http(backend: &str, port: u16) -> String {
    format!(". /tmp/bench.sh; TOKEN=$(cat /tmp/{backend}/data/serve-token) http {port}")
}

/// Deletes `app` (its instances and standby VM stop).
fn delete(backend: &str, port: u16, app: &str) -> String {
    format!("{} DELETE /apps/{app} /dev/null", http(backend, port))
}

/// Deploys the bench app as `app` (instances stop after 1 s idle), with a standby VM or not.
fn deploy(backend: &str, port: u16, app: &str, standby: bool) -> String {
    format!(
        "{} PUT '/apps/{app}?idle=1s&max=1&standby={standby}' {APP}",
        http(backend, port)
    )
}
