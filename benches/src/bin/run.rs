//! `nodeos-vm run -- node -e 'console.log(1)'` end to end (boot, agent ready, command, output
//! back, VM destroyed), and microVMs started per second with 10 `run`s in parallel.
//!
//! - `run host [RUNS]`: on this host, with the backend `auto` picks (QEMU/TCG where KVM is PVM).
//! - `run box [RUNS]`: in one KVM box run, our VMM (`--backend kvm`) against QEMU microvm with
//!   KVM (`--backend qemu`), runs interleaved: the ratio is the figure that matters.
//!
//! cargo build --release && ./target/release/run box 5

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kvm_box::{BoxRun, Script};
use nodeos_vm_benches::{artifacts, mode_and_runs, nodeos_vm_bin, side_by_side_box, stats};

const PARALLEL: usize = 10;
const NODE_ARGS: &str = "-- node -e 'console.log(1)'";

fn main() {
    let (mode, runs) = mode_and_runs();
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);
    match mode.as_str() {
        "host" => on_host(&bin, &kernel, &rootfs, runs),
        "box" => in_box(&bin, &kernel, &rootfs, runs),
        _ => panic!("usage: run host|box [RUNS]"),
    }
}

fn run_command(bin: &Path, kernel: &Path, rootfs: &Path) -> String {
    format!(
        "{} run --kernel {} --rootfs {} {NODE_ARGS}",
        bin.display(),
        kernel.display(),
        rootfs.display()
    )
}

fn on_host(bin: &Path, kernel: &Path, rootfs: &Path, runs: usize) {
    let cmd = run_command(bin, kernel, rootfs);
    let time = |script: &str| {
        let started = Instant::now();
        let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    };
    let single: Vec<f64> = (0..runs).map(|_| ms(time(&cmd))).collect();
    let parallel = parallel_script(&cmd);
    let waves: Vec<f64> = (0..runs.div_ceil(2)).map(|_| ms(time(&parallel))).collect();
    println!("## This host: `nodeos-vm run {NODE_ARGS}` (backend auto)\n");
    println!("| what | median (min–max) |\n|---|---|");
    println!("| one run, end to end | {} |", stats(&single));
    let wave = stats(&waves);
    println!("| {PARALLEL} runs in parallel | {wave} |");
    println!(
        "\nmicroVMs per second with {PARALLEL} in parallel: {:.2} ({:.2} per host core)",
        PARALLEL as f64 / (wave.median / 1000.0),
        PARALLEL as f64 / (wave.median / 1000.0) / cores() as f64
    );
}

fn in_box(bin: &Path, kernel: &Path, rootfs: &Path, runs: usize) {
    let mut script = Script::new();
    for i in 0..runs {
        for backend in ["kvm", "qemu"] {
            let cmd = format!(
                "/nodeos/nodeos-vm run --backend {backend} --kernel /nodeos/vmlinux --rootfs /nodeos/rootfs.img {NODE_ARGS}"
            );
            script.check_with_timeout(&format!("{backend}.{i}"), Duration::from_secs(120), &cmd);
            if i % 2 == 0 {
                script.check_with_timeout(
                    &format!("{backend}.parallel.{i}"),
                    Duration::from_secs(300),
                    &parallel_script(&cmd),
                );
            }
        }
    }
    let run = side_by_side_box(bin, kernel, rootfs, script.build());
    // Ten 512 MiB guests at once: L1 needs the room (guest RAM is touched lazily).
    let run = BoxRun {
        timeout: Duration::from_secs(3000),
        memory_mib: 6144,
        cpus: 2,
        ..run
    };
    let result = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("KVM box run");
    let checks = result.checks();
    println!(
        "## In the KVM box (L1: 2 vCPUs): `nodeos-vm run {NODE_ARGS}`, ours vs QEMU microvm\n"
    );
    println!("| backend | one run, end to end | {PARALLEL} in parallel (wall) | microVMs/s |");
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    for backend in ["kvm", "qemu"] {
        let times = |prefix: &str| -> Vec<f64> {
            (0..runs)
                .filter_map(|i| checks.get(&format!("{backend}.{prefix}{i}")))
                .filter(|c| {
                    let ok = c.passed()
                        && (!prefix.is_empty() || c.output.lines().any(|l| l.trim() == "1"));
                    if !ok {
                        eprintln!("failed: {}", c.output);
                    }
                    ok
                })
                .filter_map(|c| c.elapsed.map(ms))
                .collect()
        };
        let (single, wave) = (stats(&times("")), stats(&times("parallel.")));
        println!(
            "| {backend} | {single} | {wave} | {:.2} |",
            PARALLEL as f64 / (wave.median / 1000.0)
        );
        medians.push(single.median);
    }
    println!(
        "\nratio ours/QEMU, one run end to end: {:.2}",
        medians[0] / medians[1]
    );
    println!(
        "(L1 boot {:?}, whole box run {:?})",
        result.boot, result.wall
    );
}

/// `PARALLEL` copies of `cmd` at once; fails unless all succeed and print their line.
fn parallel_script(cmd: &str) -> String {
    let mut s = String::new();
    for i in 0..PARALLEL {
        s.push_str(&format!("({cmd}) > /tmp/p{i} 2>&1 & "));
    }
    s.push_str("wait; n=0; for i in");
    for i in 0..PARALLEL {
        s.push_str(&format!(" {i}"));
    }
    s.push_str(&format!(
        "; do [ \"$(cat /tmp/p$i)\" = 1 ] && n=$((n+1)); done; echo \"$n ok\"; [ $n = {PARALLEL} ]"
    ));
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
