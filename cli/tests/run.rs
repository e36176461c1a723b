//! `nodeos-vm run` on this host: commands in fresh microVMs on the backend `auto` picks here
//! (or `NODEOS_VM_TEST_BACKEND`); the same cases run on our VMM inside the KVM box
//! (tests/kvm_box/).

#[macro_use]
mod common;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use common::run_cases;
use common::BIN;

fn run_on_host(name: &str) {
    let (kernel, rootfs) = common::artifacts();
    let run = format!(
        "{BIN} run --backend {} --kernel {} --rootfs {}",
        common::backend(),
        kernel.display(),
        rootfs.display()
    );
    run_cases::run_here(name, &run);
}

run_case_tests!(run_on_host);

/// `pause` and `unpause` of detached VM `id`: while it is paused a command that prints every
/// 100 ms (its output streamed by `exec`) prints nothing, `ps` says so, `exec` and a second
/// `pause` are refused with what to do; unpaused, the command goes on.
fn paused_and_unpaused(runtime: &std::path::Path, id: &str) {
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let js = "let i = 0; setInterval(() => console.log(i++), 100)";
    let mut ticker = common::spawn_in(runtime, &["exec", id, "--", "node", "-e", js]);
    let _watchdog = common::Watchdog::new(ticker.id(), common::BOOT_LIMIT);
    let printed = Arc::new(AtomicUsize::new(0));
    let counted = printed.clone();
    let stdout = ticker.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for _ in BufReader::new(stdout).lines().map_while(Result::ok) {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let count = || printed.load(Ordering::Relaxed);
    let grows_past = |from: usize| {
        let until = Instant::now() + Duration::from_secs(60);
        while count() <= from + 2 {
            assert!(
                Instant::now() < until,
                "the command printed {} lines",
                count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    grows_past(0);
    let vm = |args: &[&str]| {
        let out = common::run_in(runtime, args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, out, err) = vm(&["pause", id]);
    assert_eq!((status, out.trim()), (Some(0), id), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let held = count();
    let (_, ps, _) = vm(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with(id) && l.contains("paused")),
        "{ps}"
    );
    let (status, _, err) = vm(&["exec", id, "--", "true"]);
    assert_eq!(status, Some(125), "{err}");
    assert!(
        err.contains(&format!("`nodeos-vm unpause {id}` first")),
        "{err}"
    );
    let (status, _, err) = vm(&["pause", id]);
    assert_ne!(status, Some(0));
    assert!(err.contains("it is not running"), "{err}");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(count(), held, "a paused VM printed");

    let (status, out, err) = vm(&["unpause", id]);
    assert_eq!((status, out.trim()), (Some(0), id), "{err}");
    grows_past(held);
    let (_, ps, _) = vm(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with(id) && l.contains("running")),
        "{ps}"
    );
    let _ = ticker.kill();
    let _ = ticker.wait();
    reader.join().unwrap();
}

/// `start --detach` prints an ID once the VM is ready; `ps`, `exec`, `logs`, `pause`,
/// `unpause` and `stop` work on it; a VM whose process is gone is cleaned up.
#[test]
fn detached_vm_lifecycle() {
    let (kernel, rootfs) = common::artifacts();
    let runtime = tempfile::tempdir().unwrap();
    let vm = |args: &[&str]| {
        let out = common::run_in(runtime.path(), args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let backend = common::backend();
    let (status, id, err) = vm(&[
        "start",
        "--detach",
        "--backend",
        &backend,
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
    assert_eq!(status, Some(0), "{err}");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 12, "{id:?}");

    let (_, ps, _) = vm(&["ps"]);
    assert!(
        ps.lines()
            .any(|l| l.starts_with(&id) && l.contains("running")),
        "{ps}"
    );
    let script = "require('fs').writeFileSync('/tmp/kept', 'state'); console.log(process.getuid())";
    let (status, out, err) = vm(&["exec", &id[..6], "--", "node", "-e", script]);
    assert_eq!((status, out.as_str()), (Some(0), "1000\n"), "{err}");
    // The same VM: what the first command wrote is there.
    let (status, out, err) = vm(&["exec", &id, "-e", "X=y", "--", "node", "-e",
        "console.log(require('fs').readFileSync('/tmp/kept', 'utf8'), process.env.X); process.exit(4)"]);
    assert_eq!((status, out.as_str()), (Some(4), "state y\n"), "{err}");
    let (status, _, _) = vm(&["logs", &id]);
    assert_eq!(status, Some(0));
    // What the guest wrote to its console reaches this terminal escaped, unless --raw: here an
    // escape sequence that clears the screen and one that sets the window title.
    let hostile = "\x1b[2J\x1b]0;owned\x07\r\n";
    std::fs::OpenOptions::new()
        .append(true)
        .open(
            runtime
                .path()
                .join(format!("nodeos-vm/vms/{id}/console.log")),
        )
        .and_then(|mut log| log.write_all(hostile.as_bytes()))
        .unwrap();
    let (status, out, err) = vm(&["logs", &id]);
    assert_eq!(status, Some(0), "{err}");
    assert!(
        out.ends_with("\\x1b[2J\\x1b]0;owned\\x07\r\n") && !out.contains('\x1b'),
        "{out:?}"
    );
    let (status, out, err) = vm(&["logs", "--raw", &id]);
    assert_eq!(status, Some(0), "{err}");
    assert!(out.ends_with(hostile), "{out:?}");

    paused_and_unpaused(runtime.path(), &id);

    let (status, out, err) = vm(&["stop", &id]);
    assert_eq!((status, out.trim()), (Some(0), id.as_str()), "{err}");
    let (_, ps, _) = vm(&["ps"]);
    assert!(!ps.contains(&id), "{ps}");
    let (status, _, err) = vm(&["exec", &id, "--", "node", "-e", "0"]);
    assert_eq!(status, Some(125));
    assert!(err.contains("no running VM"), "{err}");

    // A record whose keeper is gone is removed by ps.
    let stale = runtime.path().join("nodeos-vm/vms/deadbeef0000");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(
        stale.join("state.json"),
        r#"{"id":"deadbeef0000","pid":999999999,"backend":"kvm","memory_mib":512,"cpus":1,"started":0,"running":true}"#,
    )
    .unwrap();
    let (_, ps, _) = vm(&["ps"]);
    assert!(!ps.contains("deadbeef0000"), "{ps}");
    assert!(!stale.exists());
}

/// The most used prebuilt native addons, pinned. npm installs each one's build for this
/// platform (linux-x64, glibc) from the registry itself, an optional dependency:
/// `@esbuild/linux-x64` (a program), `@rollup/rollup-linux-x64-gnu`, `@swc/core-linux-x64-gnu`,
/// `lightningcss-linux-x64-gnu`, `@node-rs/bcrypt-linux-x64-gnu` (Rust, N-API) and
/// `@img/sharp-linux-x64` with `@img/sharp-libvips-linux-x64` (C++, libvips and libstdc++).
/// sharp 0.34 is the last for Node 18, Debian 12's host node (.ci/run).
const NATIVE_ADDONS: &[&str] = &[
    "esbuild@0.28.2",
    "rollup@4.69.3",
    "@swc/core@1.16.22",
    "lightningcss@1.33.0",
    "@node-rs/bcrypt@2.0.0",
    "sharp@0.34.5",
];

/// Uses each of [`NATIVE_ADDONS`] once, a line each (what varies between runs, bcrypt's salt,
/// is left out).
const USE_NATIVE_ADDONS: &str = r#"
const esbuild = require('esbuild');
console.log('esbuild', esbuild.transformSync('let x: number = 1 + 2', { loader: 'ts', minify: true }).code.trim());
const { parseAst } = require('rollup/parseAst');
console.log('rollup', parseAst('export const answer = 6 * 7;').body[0].type);
const swc = require('@swc/core');
console.log('swc', swc.transformSync('const f = (a) => a ?? 1;', { jsc: { target: 'es5', parser: { syntax: 'ecmascript' } }, minify: true }).code.trim());
const css = require('lightningcss');
console.log('lightningcss', css.transform({ filename: 'a.css', code: Buffer.from('.a { color: #ff0000; margin: 0px 0px; }'), minify: true }).code.toString());
const bcrypt = require('@node-rs/bcrypt');
const hash = bcrypt.hashSync('secret', { cost: 4 });
console.log('bcrypt', hash.slice(0, 7), bcrypt.verifySync('secret', hash), bcrypt.verifySync('wrong', hash));
const sharp = require('sharp');
sharp({ create: { width: 3, height: 2, channels: 4, background: '#336699' } }).png().toBuffer()
  .then((png) => sharp(png).metadata())
  .then((m) => console.log('sharp', m.format, m.width, m.height, m.channels, sharp.versions.vips));
"#;

/// A project with [`NATIVE_ADDONS`] installed by the host's npm, from the registry the host is
/// configured with: kept in the cache folder, one per set of versions, so that reruns fetch
/// nothing. Install scripts are skipped (they only check the prebuilt binaries; npm 11 skips
/// them anyway unless approved), so every npm installs the same files.
fn native_addons_project() -> std::path::PathBuf {
    use sha2::{Digest, Sha256};
    let cache = sandbox::folders::cache_dir()
        .expect("a cache folder: set NODEOS_VM_CACHE, XDG_CACHE_HOME or HOME");
    let key = hex::encode(&Sha256::digest(NATIVE_ADDONS.join(" "))[..8]);
    let project = cache.join(format!("test-native-addons-{key}"));
    if project.exists() {
        return project;
    }
    std::fs::create_dir_all(&cache).unwrap();
    let installing = tempfile::tempdir_in(&cache).unwrap();
    std::fs::write(
        installing.path().join("package.json"),
        "{\"private\": true}\n",
    )
    .unwrap();
    let installed = Command::new(common::host_program("npm", "npm"))
        .args([
            "install",
            "--ignore-scripts",
            "--save-exact",
            "--no-audit",
            "--no-fund",
        ])
        .args(["--loglevel=error"])
        .args(NATIVE_ADDONS)
        .current_dir(installing.path())
        .output()
        .expect("running the host's npm (.ci/run installs Debian's npm)");
    assert!(
        installed.status.success(),
        "npm install {}: {}",
        NATIVE_ADDONS.join(" "),
        String::from_utf8_lossy(&installed.stderr)
    );
    // Complete or not there: when a concurrent run got there first, its install stays and
    // this one is removed with `installing`.
    let _ = std::fs::rename(installing.path(), &project);
    project
}

/// The most used prebuilt native addons from the npm registry load and work in the VM, from
/// a read-only project: each prints what the same script prints with the host's node.
#[test]
fn native_addons_from_the_npm_registry_load() {
    let project = native_addons_project();
    let on_host = Command::new(common::host_program("node", "nodejs"))
        .args(["-e", USE_NATIVE_ADDONS])
        .current_dir(&project)
        .output()
        .expect("running the host's node (.ci/run installs Debian's nodejs)");
    let want = String::from_utf8_lossy(&on_host.stdout).into_owned();
    let names: Vec<_> = want.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(
        (on_host.status.code(), names),
        (
            Some(0),
            vec![
                "esbuild",
                "rollup",
                "swc",
                "lightningcss",
                "bcrypt",
                "sharp"
            ]
        ),
        "on the host: {}",
        String::from_utf8_lossy(&on_host.stderr)
    );
    let volume = format!("{}:/app:ro", project.display());
    let used = run_vm(
        &[
            "-v",
            &volume,
            "-w",
            "/app",
            "--",
            "node",
            "-e",
            USE_NATIVE_ADDONS,
        ],
        &[],
    );
    assert_eq!(
        (
            used.status.code(),
            String::from_utf8_lossy(&used.stdout).as_ref()
        ),
        (Some(0), want.as_str()),
        "{}",
        String::from_utf8_lossy(&used.stderr)
    );
}

/// `nodeos-vm run` on the test kernel and image with `args` after them and `env` added to its
/// environment; killed if it outlives the test's limit.
fn run_vm(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let (kernel, rootfs) = common::artifacts();
    let child = Command::new(BIN)
        .args(["run", "--backend", &common::backend(), "--kernel"])
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let _watchdog = common::Watchdog::for_group(child.id(), common::BOOT_LIMIT * 2);
    child.wait_with_output().unwrap()
}

/// An HTTPS server on the host's loopback (the host's node): serves the files of the folder
/// `argv[1]` by name, with the key `argv[2]` and certificate chain `argv[3]`; prints its port.
const HTTPS_SERVER: &str = r#"
const [dir, key, cert] = process.argv.slice(1);
const server = require('https').createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (req, res) => {
  fs.readFile(path.join(dir, path.basename(req.url)), (err, body) => {
    res.writeHead(err ? 404 : 200);
    res.end(err ? 'not found' : body);
  });
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
"#;

/// Node's fetch of the host's registry in the guest: `trusted`, or the error's code (as cheap
/// as npm is slow).
const FETCH_REGISTRY: &str = "node -e 'fetch(process.env.npm_config_registry + \"greeter\").then(() => console.log(\"trusted\"), (e) => console.log(e.cause.code))'";

/// Behind a TLS-intercepting proxy, Node and npm in the guest trust the proxy's CA when given
/// it with `--ca-file` (not without), or when the host's npm config names it (`cafile`): here
/// the host's npm registry is on HTTPS with a certificate of a CA of the test's own (openssl),
/// sent with its chain as such a proxy does.
#[test]
fn npm_trusts_a_ca_given_to_the_guest() {
    let dir = tempfile::tempdir().unwrap();
    let (server, site) = (dir.path().join("server"), dir.path().join("site"));
    for folder in [&server, &site] {
        std::fs::create_dir(folder).unwrap();
    }
    let openssl = |args: &[&str]| {
        let out = Command::new(common::host_program("openssl", "openssl"))
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(args)
            .current_dir(&server)
            .output()
            .expect("running openssl (ca-certificates depends on it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "-subj",
        "/CN=nodeos-vm test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "-subj",
        "/CN=10.0.2.2",
        "-addext",
        "subjectAltName=IP:10.0.2.2",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-keyout",
        "key.pem",
        "-out",
        "leaf.pem",
    ]);
    let ca = server.join("ca.pem");
    let chain = [
        std::fs::read(server.join("leaf.pem")).unwrap(),
        std::fs::read(&ca).unwrap(),
    ]
    .concat();
    std::fs::write(server.join("chain.pem"), chain).unwrap();

    let mut https = Command::new(common::host_program("node", "nodejs"))
        .args(["-e", HTTPS_SERVER])
        .args([&site, &server.join("key.pem"), &server.join("chain.pem")])
        .stdout(Stdio::piped())
        .spawn()
        .expect("running the host's node (.ci/run installs Debian's nodejs)");
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(https.stdout.take().unwrap()),
        &mut port,
    )
    .unwrap();
    let port = port.trim().to_string();
    for (name, body) in common::web::site_at(&format!("https://10.0.2.2:{port}")) {
        std::fs::write(site.join(name), body).unwrap();
    }
    let registry = format!("https://127.0.0.1:{port}/");
    let ca = ca.to_str().unwrap();
    // Only the test's CA: none of this host's (it may have a proxy's).
    let host = [
        ("npm_config_registry", registry.as_str()),
        ("NODE_EXTRA_CA_CERTS", ""),
        ("NPM_CONFIG_USERCONFIG", "/dev/null"),
    ];
    let npm_config = [host.as_slice(), &[("npm_config_cafile", ca)]].concat();
    // Two VMs at once: the test's time is the slower's.
    let (given, from_npm_config) = std::thread::scope(|scope| {
        let from_npm_config =
            scope.spawn(|| run_vm(&["--net", "--", "sh", "-c", FETCH_REGISTRY], &npm_config));
        let given = run_vm(
            &[
                "--net",
                "--ca-file",
                ca,
                "-w",
                "/home/node",
                "--",
                "sh",
                "-c",
                &format!(
                    "env -u NODE_EXTRA_CA_CERTS {FETCH_REGISTRY}
                    npm install --no-audit --no-fund --loglevel=error greeter >/dev/null && node -e 'console.log(require(\"greeter\")(\"over TLS\"))'"
                ),
            ],
            &host,
        );
        (given, from_npm_config.join().unwrap())
    });
    https.kill().unwrap();
    https.wait().unwrap();
    for (used, want) in [
        (given, "SELF_SIGNED_CERT_IN_CHAIN\nhello, over TLS\n"),
        (from_npm_config, "trusted\n"),
    ] {
        assert_eq!(
            (
                used.status.code(),
                String::from_utf8_lossy(&used.stdout).as_ref()
            ),
            (Some(0), want),
            "{}",
            String::from_utf8_lossy(&used.stderr)
        );
    }
}

/// A CA file that is missing or not PEM is refused before anything boots, in one line that
/// names it and where it comes from.
#[test]
fn bad_ca_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (der, missing) = (dir.path().join("ca.der"), dir.path().join("missing.pem"));
    std::fs::write(&der, b"\x30\x82\x01\x0a").unwrap();
    let (der, missing) = (der.to_str().unwrap(), missing.to_str().unwrap());
    // The options, npm's cafile on the host, the error.
    let cases = [
        (
            vec!["--ca-file", der],
            None,
            format!("--ca-file {der}: not PEM"),
        ),
        (
            vec!["--ca-file", missing],
            None,
            format!("--ca-file {missing}: No such file"),
        ),
        (
            vec!["--net"],
            Some(missing),
            format!("your npm config's cafile {missing}: No such file"),
        ),
    ];
    for (args, npm_cafile, want) in cases {
        let out = Command::new(BIN)
            .args(["run", "--kernel", "/nonexistent/vmlinux"])
            .args(["--rootfs", "/nonexistent/rootfs.squashfs"])
            .args(args)
            .args(["--", "true"])
            .envs(npm_cafile.map(|file| ("npm_config_cafile", file)))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{stderr}");
        assert!(
            stderr.starts_with(&format!("nodeos-vm: error: {want}")) && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
}
