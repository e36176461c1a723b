//! User environments on this host (backend `auto`):
//! - time to the REPL answering, a fresh VM against a user's VM (`start --user`) whose layer
//!   already holds an npm-installed package, runs interleaved;
//! - `npm install -g` of a small package from a local tarball, timed inside the VM (a fresh
//!   user each time) and on the host (a fresh prefix and cache each time), the same tarball.
//!
//! cargo build --release && ./target/release/users [RUNS]

use std::path::Path;
use std::process::Command;

use nodeos_vm_benches::{artifacts, boot, count_arg, nodeos_vm_bin, stats};

const PACKAGE: &str = "hello-cli";
/// Times `npm install -g <tarball>` from inside Node, so that only the install is measured.
const TIMED_INSTALL: &str = "const t = process.hrtime.bigint(); \
require('child_process').execFileSync('npm', ['install', '-g', '--no-audit', '--no-fund', \
'--loglevel=error', process.argv[1]], { stdio: 'ignore' }); \
console.log(Number(process.hrtime.bigint() - t) / 1e6)";

fn main() {
    let runs = count_arg(5);
    let bin = nodeos_vm_bin();
    let (kernel, rootfs) = artifacts(&bin);
    let work = tempfile::tempdir().unwrap();
    let pkg_dir = work.path().join("pkg");
    std::fs::create_dir(&pkg_dir).unwrap();
    let tarball = pack(&pkg_dir);
    let images = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ];
    let vm = |args: &[&str]| {
        let out = Command::new(&bin)
            .args(args)
            .env("NODEOS_VM_DATA", work.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let volume = format!("{}:/pkg:ro", pkg_dir.display());
    let guest_tarball = format!("/pkg/{}", tarball.file_name().unwrap().to_str().unwrap());

    // A user whose layer holds something, as a returning user's does.
    vm(&[
        &["run", "--user", "bench", "-v", &volume][..],
        &images,
        &["--", "npm", "install", "-g", &guest_tarball],
    ]
    .concat());

    let (mut fresh, mut user) = (Vec::new(), Vec::new());
    std::env::set_var("NODEOS_VM_DATA", work.path().join("data"));
    for _ in 0..runs {
        fresh.push(boot(&bin, &images).unwrap().repl_ready.as_secs_f64() * 1000.0);
        let args = [&images[..], &["--user", "bench"]].concat();
        user.push(boot(&bin, &args).unwrap().repl_ready.as_secs_f64() * 1000.0);
    }

    let (mut guest_install, mut host_install) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let name = format!("npm{i}");
        let out = vm(&[
            &["run", "--user", &name, "-v", &volume][..],
            &images,
            &["--", "node", "-e", TIMED_INSTALL, &guest_tarball],
        ]
        .concat());
        guest_install.push(out.trim().parse::<f64>().unwrap());
        host_install.push(host_timed_install(work.path(), i, &tarball));
    }

    let (fresh, user) = (stats(&fresh), stats(&user));
    let (guest_install, host_install) = (stats(&guest_install), stats(&host_install));
    println!("## User environments: this host, backend auto, {runs} runs each, ms\n");
    println!("| what | median (min–max) |\n|---|---|");
    println!("| fresh VM, to the REPL answering | {fresh} |");
    println!("| `--user` VM (persistent ext4 layer), to the REPL answering | {user} |");
    println!("| `npm install -g` of {PACKAGE} in the VM (fresh user) | {guest_install} |");
    println!("| the same install on the host (fresh prefix and cache) | {host_install} |");
    println!(
        "\nuser VM / fresh VM: {:.2} (target ≤ 1.10); npm install -g in the VM / on the host: {:.2} (target ≤ 1.5)",
        user.median / fresh.median,
        guest_install.median / host_install.median
    );
}

/// A small package with a command, packed as npm would (a gzipped tar of `package/`).
fn pack(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src/package");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("package.json"),
        format!(r#"{{"name": "{PACKAGE}", "version": "1.0.0", "bin": {{"{PACKAGE}": "cli.js"}}}}"#),
    )
    .unwrap();
    std::fs::write(
        src.join("cli.js"),
        "#!/usr/bin/env node\nconsole.log('hello');\n",
    )
    .unwrap();
    let tarball = dir.join(format!("{PACKAGE}-1.0.0.tgz"));
    let status = Command::new("tar")
        .arg("czf")
        .arg(&tarball)
        .arg("-C")
        .arg(dir.join("src"))
        .arg("package")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(dir.join("src")).unwrap();
    tarball
}

fn host_timed_install(work: &Path, i: usize, tarball: &Path) -> f64 {
    let prefix = work.join(format!("host-prefix{i}"));
    let out = Command::new("node")
        .args(["-e", TIMED_INSTALL])
        .arg(tarball)
        .env("npm_config_prefix", &prefix)
        .env("npm_config_cache", work.join(format!("host-cache{i}")))
        .output()
        .expect("node on the host");
    assert!(
        out.status.success(),
        "host npm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
