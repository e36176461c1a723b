//! Boot benchmark on this host: `nodeos-vm start` to the guest's init and to the REPL
//! answering, per backend and vCPU count, runs interleaved; and Node.js start-up inside the
//! guest against the same binary on the host.
//!
//! cargo run --release -p nodeos-vm-benches --bin boot -- [RUNS] [BACKEND...]
//! (default: 5 runs; backends `qemu` and, where the host's KVM can run Linux, `kvm`)

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use nodeos_vm_benches::{artifacts, boot, nodeos_vm_bin, stats};

fn main() {
    let bin = nodeos_vm_bin();
    let mut args = std::env::args().skip(1);
    let runs: usize = args
        .next()
        .map(|a| a.parse().expect("RUNS is a number"))
        .unwrap_or(5);
    let mut backends: Vec<String> = args.collect();
    if backends.is_empty() {
        backends.push("qemu".into());
        let doctor = Command::new(&bin)
            .arg("doctor")
            .output()
            .expect("nodeos-vm doctor");
        if String::from_utf8_lossy(&doctor.stdout).contains("auto backend: kvm") {
            backends.push("kvm".into());
        }
    }
    let (_, rootfs) = artifacts(&bin);

    println!(
        "## Boot: nodeos-vm start to init and to REPL ready ({runs} runs each, interleaved)\n"
    );
    println!("| backend | vCPUs | to init | to REPL ready | total with .exit |");
    println!("|---|---|---|---|---|");
    let mut medians = Vec::new();
    for cpus in ["1", "2"] {
        let mut samples: Vec<Vec<_>> = vec![Vec::new(); backends.len()];
        for _ in 0..runs {
            for (i, backend) in backends.iter().enumerate() {
                match boot(&bin, &["--backend", backend, "--cpus", cpus]) {
                    Ok(b) => samples[i].push(b),
                    Err(e) => eprintln!("{backend} cpus={cpus}: {e}"),
                }
            }
        }
        for (backend, s) in backends.iter().zip(&samples) {
            let ms = |f: fn(&nodeos_vm_benches::Boot) -> std::time::Duration| {
                stats(
                    &s.iter()
                        .map(|b| f(b).as_secs_f64() * 1000.0)
                        .collect::<Vec<_>>(),
                )
            };
            let (init, ready, total) = (ms(|b| b.init), ms(|b| b.repl_ready), ms(|b| b.total));
            println!("| {backend} | {cpus} | {init} | {ready} | {total} |");
            medians.push((backend.clone(), cpus, init.median, ready.median));
        }
    }
    if let Some((_, _, qemu_init, qemu_ready)) = medians
        .iter()
        .find(|m| m.0 == "qemu" && m.1 == "1")
        .cloned()
    {
        for (backend, cpus, init, ready) in medians.iter().filter(|m| m.0 != "qemu") {
            println!(
                "\nratio {backend}/qemu ({cpus} vCPU): to init {:.2}, to REPL ready {:.2}",
                init / qemu_init,
                ready / qemu_ready
            );
        }
    }

    println!(
        "\n## Node.js start-up (`node -e 0`), guest ({}) against host\n",
        backends[0]
    );
    node_startup(&bin, &backends[0], &rootfs, runs);
}

fn node_startup(bin: &Path, backend: &str, rootfs: &Path, runs: usize) {
    let script = format!(
        "const cp = require('child_process'); JSON.stringify(Array.from({{length: {runs}}}, () => {{ \
         const t = process.hrtime.bigint(); cp.execFileSync('/usr/bin/node', ['-e', '0']); \
         return Number(process.hrtime.bigint() - t) / 1e6 }}))\n"
    );
    let mut child = Command::new(bin)
        .args(["start", "--pipe", "--backend", backend])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("nodeos-vm start");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let guest: Vec<f64> = text
        .trim()
        .trim_matches('\'')
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();

    let dir = std::env::temp_dir().join(format!("nodeos-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = dir.join("node");
    let unpacked = Command::new("unsquashfs")
        .args(["-q", "-n", "-f", "-d"])
        .arg(dir.join("root"))
        .arg(rootfs)
        .arg("usr/bin/node")
        .status()
        .is_ok_and(|s| s.success());
    let host: Vec<f64> =
        if unpacked && std::fs::rename(dir.join("root/usr/bin/node"), &node).is_ok() {
            (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    Command::new(&node).args(["-e", "0"]).status().unwrap();
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect()
        } else {
            Vec::new()
        };
    let _ = std::fs::remove_dir_all(&dir);

    println!("| where | first run | later runs (median) |");
    println!("|---|---|---|");
    for (name, v) in [("guest", &guest), ("host, same binary", &host)] {
        match v.split_first() {
            Some((first, rest)) => println!("| {name} | {first:.1} ms | {} |", stats(rest)),
            None => println!("| {name} | (failed: {}) | |", text.trim()),
        }
    }
}
