//! Template snapshots against cold boots: `nodeos-vm run -- node -e 'console.log(1)'` end to
//! end, `start` → the REPL answering `6*7` (then ending), and the backend's start → the guest
//! running (`start --timings`: a restored VM's vCPUs resumed, a cold one's init started),
//! restored (the default) vs cold (`--no-snapshot`), rounds interleaved.
//!
//! - `snapshot host [RUNS]`: on this host, with the backend `auto` picks (QEMU/TCG where KVM is
//!   PVM).
//! - `snapshot box [RUNS]`: in one KVM box run, our VMM and QEMU microvm with KVM, each
//!   restored and cold; the templates are made first, outside the timings.
//! - `snapshot box-arm64 [RUNS]`: the same in one arm64 KVM box run, against QEMU `virt` with
//!   KVM (nodeos-vm cross-built for aarch64, the arm64 guest).
//!
//! cargo build --release && ./target/release/snapshot host 5

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvm_box::{Arch, BoxRun, Script};
use nodeos_vm_benches::{
    artifacts, mode_and_runs, nodeos_vm_bin, parse_timings, side_by_side_box,
    side_by_side_box_arm64, stats, Stats,
};

const NODE_ARGS: &str = "-- node -e 'console.log(1)'";
/// The tables' header.
const HEADER: &str =
    "| VM | `run -- node -e 'console.log(1)'`, end to end | `start` → REPL answers \
    `6*7`, VM ended | backend start → guest running (restored: vCPUs resumed; cold: init) |";
/// The two ways a VM comes up, as `run`/`start` options.
const MODES: [(&str, &str); 2] = [("restored", ""), ("cold", "--no-snapshot")];

fn main() {
    let (mode, runs) = mode_and_runs();
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);
    match mode.as_str() {
        "host" => on_host(&bin, &kernel, &rootfs, runs),
        "box" => in_box(runs, Arch::X86_64, |script| {
            side_by_side_box(&bin, &kernel, &rootfs, script)
        }),
        "box-arm64" => in_box(runs, Arch::Aarch64, |script| {
            side_by_side_box_arm64(&bin, script)
        }),
        _ => panic!("usage: snapshot host|box|box-arm64 [RUNS]"),
    }
}

fn on_host(bin: &Path, kernel: &Path, rootfs: &Path, runs: usize) {
    let images = format!(
        "--kernel {} --rootfs {}",
        kernel.display(),
        rootfs.display()
    );
    let run = |options: &str| {
        let script = format!("{} run {images} {options} {NODE_ARGS}", bin.display());
        let started = Instant::now();
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ms(started.elapsed())
    };
    // The templates are made (once) before anything is timed.
    run("");
    repl_answer(bin, &images, "");
    let mut times: Vec<[Vec<f64>; 3]> = vec![Default::default(), Default::default()];
    for _ in 0..runs {
        for (i, (_, options)) in MODES.iter().enumerate() {
            times[i][0].push(run(options));
            let (answer, running) = repl_answer(bin, &images, options);
            times[i][1].push(answer);
            times[i][2].push(running);
        }
    }
    println!("## This host: restored vs cold (backend auto)\n");
    println!("{HEADER}");
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    for (i, (name, _)) in MODES.iter().enumerate() {
        let (run, repl, running) = (
            stats(&times[i][0]),
            stats(&times[i][1]),
            stats(&times[i][2]),
        );
        println!("| {name} | {run} | {repl} | {running} |");
        medians.push((run.median, repl.median));
    }
    println!(
        "\nrestored/cold: run {:.2}, start → REPL {:.2}",
        medians[0].0 / medians[1].0,
        medians[0].1 / medians[1].1
    );
    templates_in_cache(kernel);
}

/// Milliseconds from starting `nodeos-vm start --pipe --timings` to the REPL's answer to
/// `6*7`, and the guest-running time it reports.
fn repl_answer(bin: &Path, images: &str, options: &str) -> (f64, f64) {
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} start --pipe --timings {images} {options}",
            bin.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"6*7\n").unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut answered = None;
    for line in stdout.lines() {
        if line.unwrap().trim() == "42" {
            answered = Some(started.elapsed());
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (
        ms(answered.expect("the REPL answered 42")),
        guest_running(&stderr),
    )
}

/// The milliseconds to the guest running that `start --timings` printed in `text`; NaN if none.
fn guest_running(text: &str) -> f64 {
    parse_timings(text).map_or(f64::NAN, |(init, _)| init)
}

/// The templates in the cache the kernel `kernel` (`<cache>/vmlinux-<key>/vmlinux`) is in.
fn templates_in_cache(kernel: &Path) {
    let Some(cache) = kernel.parent().and_then(Path::parent) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(cache.join("templates")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "snap") {
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            println!("template {}: {:.1} MB", path.display(), size as f64 / 1e6);
        }
    }
}

/// The box bench on `arch`'s KVM box, whose run `make_run` makes of the script.
fn in_box(runs: usize, arch: Arch, make_run: impl FnOnce(String) -> BoxRun) {
    let images = "--kernel /nodeos/vmlinux --rootfs /nodeos/rootfs.img";
    let run = |backend: &str, options: &str| {
        format!("/nodeos/nodeos-vm run --backend {backend} {images} {options} {NODE_ARGS}")
    };
    let repl = |backend: &str, options: &str| {
        format!(
            "printf '6*7\\n' | /nodeos/nodeos-vm start --pipe --timings --backend {backend} {images} {options} 2>/tmp/t | grep -qx 42; s=$?; cat /tmp/t; exit $s"
        )
    };
    let mut script = Script::new();
    for backend in ["kvm", "qemu"] {
        script.check_with_timeout(
            &format!("{backend}.template"),
            Duration::from_secs(600),
            &format!(
                "{}; ls -l /root/.cache/nodeos-vm/templates",
                run(backend, "")
            ),
        );
    }
    for i in 0..runs {
        for backend in ["kvm", "qemu"] {
            for (mode, options) in MODES {
                let timeout = Duration::from_secs(180);
                let name = format!("{backend}.{mode}.run.{i}");
                script.check_with_timeout(&name, timeout, &run(backend, options));
                let name = format!("{backend}.{mode}.repl.{i}");
                script.check_with_timeout(&name, timeout, &repl(backend, options));
            }
        }
    }
    for backend in ["kvm", "qemu"] {
        for (mode, options) in MODES {
            let name = format!("{backend}.{mode}.density");
            let script_text = density(backend, arch, images, options);
            script.check_with_timeout(&name, Duration::from_secs(900), &script_text);
        }
    }
    let run = make_run(script.build());
    let run = BoxRun {
        timeout: Duration::from_secs(3000),
        memory_mib: 8192,
        cpus: 2,
        ..run
    };
    let result = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("KVM box run");
    let checks = result.checks();
    for backend in ["kvm", "qemu"] {
        if let Some(c) = checks.get(&format!("{backend}.template")) {
            println!("{backend} template: {}", c.output.trim());
        }
    }
    println!("\n## In the {arch} KVM box (L1: 2 vCPUs): restored vs cold, ours vs QEMU\n");
    println!("{HEADER}");
    println!("|---|---|---|---|");
    let mut medians = std::collections::BTreeMap::new();
    for backend in ["kvm", "qemu"] {
        for (mode, _) in MODES {
            let times = |what: &str| -> Stats {
                let values: Vec<f64> = (0..runs)
                    .filter_map(|i| checks.get(&format!("{backend}.{mode}.{what}.{i}")))
                    .filter(|c| {
                        if !c.passed() {
                            eprintln!("failed: {}", c.output);
                        }
                        c.passed()
                    })
                    .filter_map(|c| c.elapsed.map(ms))
                    .collect();
                stats(&values)
            };
            let (run, repl) = (times("run"), times("repl"));
            let running: Vec<f64> = (0..runs)
                .filter_map(|i| checks.get(&format!("{backend}.{mode}.repl.{i}")))
                .filter(|c| c.passed())
                .map(|c| guest_running(&c.output))
                .collect();
            let running = stats(&running);
            println!("| {backend} {mode} | {run} | {repl} | {running} |");
            medians.insert((backend, mode), (run.median, repl.median));
        }
    }
    println!("\n| VM | total PSS of {DENSITY} idle VMs' VMM processes |\n|---|---|");
    let mut pss = std::collections::BTreeMap::new();
    for backend in ["kvm", "qemu"] {
        for (mode, _) in MODES {
            let kib = checks
                .get(&format!("{backend}.{mode}.density"))
                .and_then(|c| {
                    c.output
                        .lines()
                        .find_map(|l| l.strip_prefix("pss_kib ")?.trim().parse::<f64>().ok())
                })
                .unwrap_or(f64::NAN);
            println!("| {backend} {mode} | {:.0} MiB |", kib / 1024.0);
            pss.insert((backend, mode), kib);
        }
    }
    for backend in ["kvm", "qemu"] {
        println!(
            "{backend}: restored/cold PSS {:.2}",
            pss[&(backend, "restored")] / pss[&(backend, "cold")]
        );
    }
    let ratio = |a: (&str, &str), b: (&str, &str)| {
        let (a, b) = (medians[&a], medians[&b]);
        format!("run {:.2}, start {:.2}", a.0 / b.0, a.1 / b.1)
    };
    println!(
        "\nours restored / QEMU cold: {}",
        ratio(("kvm", "restored"), ("qemu", "cold"))
    );
    println!(
        "ours restored / ours cold: {}",
        ratio(("kvm", "restored"), ("kvm", "cold"))
    );
    println!(
        "QEMU restored / QEMU cold: {}",
        ratio(("qemu", "restored"), ("qemu", "cold"))
    );
    println!(
        "(L1 boot {:?}, whole box run {:?})",
        result.boot, result.wall
    );
}

/// VMs started at once for the density figure.
const DENSITY: usize = 20;

/// Starts [`DENSITY`] detached VMs, lets them settle, prints the sum of their VMM processes'
/// proportional set sizes (`pss_kib N`), and stops them.
fn density(backend: &str, arch: Arch, images: &str, options: &str) -> String {
    let process = match (backend, arch) {
        ("kvm", _) => "nodeos-vmm",
        (_, Arch::X86_64) => "qemu-system-x86_64",
        (_, Arch::Aarch64) => "qemu-system-aarch64",
    };
    format!(
        "ids=; for i in $(seq {DENSITY}); do id=$(/nodeos/nodeos-vm start --detach --backend {backend} {images} {options}) || exit 1; ids=\"$ids $id\"; done
sleep 10; total=0
for p in $(pidof {process}); do k=$(awk '/^Pss:/ {{print $2}}' /proc/$p/smaps_rollup); total=$((total + k)); done
echo \"pss_kib $total\"
for id in $ids; do /nodeos/nodeos-vm stop $id >/dev/null; done"
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
