//! Our VMM against QEMU microvm, side by side in one KVM box run: same L1, same kernel, same
//! root image, same memory and vCPUs, runs interleaved. Absolute times in the box are emulated
//! (not hardware times); the ratio ours/QEMU is the figure that matters.
//!
//! cargo build --release && cargo run --release -p nodeos-vm-benches --bin kvm_box -- [RUNS]

use std::time::Duration;

use kvm_box::{BoxRun, Script};
use nodeos_vm_benches::{artifacts, nodeos_vm_bin, parse_timings, side_by_side_box, stats};

const BACKENDS: [&str; 2] = ["kvm", "qemu"];

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("RUNS is a number"))
        .unwrap_or(5);
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);

    let mut script = Script::new();
    for i in 0..runs {
        for backend in BACKENDS {
            script.check_with_timeout(
                &format!("{backend}.{i}"),
                Duration::from_secs(120),
                &format!(
                    "printf '6*7\\n' | /nodeos/nodeos-vm start --pipe --timings --backend {backend} \
                     --kernel /nodeos/vmlinux --rootfs /nodeos/rootfs.img 2>&1"
                ),
            );
        }
    }
    let run = side_by_side_box(&bin, &kernel, &rootfs, script.build());
    let run = BoxRun {
        timeout: Duration::from_secs(1800),
        memory_mib: 3072,
        ..run
    };
    let result = kvm_box::run(&kvm_box::default_cache_dir(), &run).expect("KVM box run");
    let checks = result.checks();

    println!(
        "## In the KVM box: nodeos-vm start, our VMM (kvm) vs QEMU microvm (qemu, -accel kvm)\n"
    );
    println!("{runs} runs each, interleaved; 1 vCPU, 512 MiB; `6*7` piped to the REPL, then end of input.\n");
    println!("| backend | to init | boot + REPL answers + VM ends | whole command (L1 clock) |");
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    let mut memory = Vec::new();
    for backend in BACKENDS {
        let (mut init, mut total, mut wall, mut overhead) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let Some(check) = checks.get(&format!("{backend}.{i}")) else {
                continue;
            };
            if !check.passed() || !check.output.lines().any(|l| l.trim() == "42") {
                eprintln!("{backend}.{i} failed: {}", check.output);
                continue;
            }
            if let Some((a, b)) = parse_timings(&check.output) {
                init.push(a);
                total.push(b);
            }
            if let Some(mib) = check
                .output
                .lines()
                .find_map(|l| l.split("VMM overhead ").nth(1))
            {
                overhead.extend(mib.split(' ').next().and_then(|m| m.parse::<f64>().ok()));
            }
            if let Some(e) = check.elapsed {
                wall.push(e.as_secs_f64() * 1000.0);
            }
        }
        let (init, total, wall) = (stats(&init), stats(&total), stats(&wall));
        println!("| {backend} | {init} | {total} | {wall} |");
        if !overhead.is_empty() {
            memory.push((backend, stats(&overhead)));
        }
        medians.push((init.median, total.median));
    }
    println!(
        "\nratio ours/QEMU: to init {:.2}, boot + REPL + end {:.2}",
        medians[0].0 / medians[1].0,
        medians[0].1 / medians[1].1
    );
    for (backend, mib) in memory {
        println!("{backend}: VMM memory overhead besides guest RAM: median {:.1} MiB (min {:.1}, max {:.1})", mib.median, mib.min, mib.max);
    }
    println!(
        "(L1 boot {:?}, whole box run {:?})",
        result.boot, result.wall
    );
}
