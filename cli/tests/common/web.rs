//! A small HTTP server on the host's loopback for the network tests, and a tiny npm registry:
//! `/hello`, npm package tarballs `/NAME.tgz`, their registry documents `/NAME` (so that
//! `npm install NAME` works with `registry=http://ADDR/`), and `/ci-app.tgz`, a project whose
//! lockfile pins the registry's packages (for `npm ci`).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha512};

use super::npm_package;
use super::run_cases::HELLO;

/// A package of the registry: its package.json and its other files.
struct Package {
    manifest: &'static str,
    files: &'static [(&'static str, &'static str)],
}

/// The packages the registry holds: `greeter` (a library), `hello-cli` (a command) and
/// `stamper` (a library whose `install` script writes the file it exports, as a native
/// addon's build does).
const PACKAGES: &[Package] = &[
    Package {
        manifest: r#"{"name": "greeter", "version": "1.0.0", "main": "index.js"}"#,
        files: &[("index.js", "module.exports = (who) => `hello, ${who}`;\n")],
    },
    Package {
        manifest: r#"{"name": "hello-cli", "version": "1.0.0", "bin": {"hello-cli": "cli.js"}}"#,
        files: &[(
            "cli.js",
            "#!/usr/bin/env node\nconsole.log('hello from a global bin', process.argv.slice(2).join(' '));\n",
        )],
    },
    Package {
        manifest: r#"{"name": "stamper", "version": "1.0.0", "main": "built.js", "scripts": {"install": "node build.js"}}"#,
        files: &[(
            "build.js",
            "require('fs').writeFileSync('built.js', `module.exports = 'built by its install script with node ${process.version}';\\n`);\n",
        )],
    },
];

/// The project of `/ci-app.tgz`: it depends on every package of the registry, lets `stamper`
/// run its install script (npm 11 runs a dependency's only when `allowScripts` names it), and
/// its `npm test` runs `hello-cli` and tests that use the other two.
const CI_APP: &str = r#"{
  "name": "ci-app",
  "version": "1.0.0",
  "private": true,
  "scripts": {"test": "hello-cli in ci && node --test --test-reporter=tap"},
  "dependencies": {"greeter": "^1.0.0", "hello-cli": "^1.0.0", "stamper": "^1.0.0"},
  "allowScripts": {"stamper@1.0.0": true}
}
"#;

const CI_APP_TEST: &str = "const test = require('node:test');
const assert = require('node:assert');
test('a dependency from the lockfile', () => assert.strictEqual(require('greeter')('ci'), 'hello, ci'));
test('what an install script built', () => assert.strictEqual(require('stamper'), `built by its install script with node ${process.version}`));
";

/// A package's tarball and its `dist.integrity` (as npm writes it: `sha512-` and base64).
fn pack(package: &Package) -> (Value, Vec<u8>, String) {
    let manifest: Value = serde_json::from_str(package.manifest).unwrap();
    let mut files = vec![("package.json", package.manifest)];
    files.extend_from_slice(package.files);
    let tarball = npm_package(&files);
    let integrity = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha512::digest(&tarball))
    );
    (manifest, tarball, integrity)
}

/// Every file the server serves (path without the leading `/`, contents), for a guest that
/// reaches the server at `guest_addr` (`10.0.2.2:PORT`).
pub fn site(guest_addr: &str) -> Vec<(String, Vec<u8>)> {
    site_at(&format!("http://{guest_addr}"))
}

/// [`site`] for a guest that reaches the server at the URL `guest_base` (`https://...`).
pub fn site_at(guest_base: &str) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![("hello".to_string(), HELLO.as_bytes().to_vec())];
    let mut locked = serde_json::Map::new();
    locked.insert("".into(), app_root());
    for package in PACKAGES {
        let (mut manifest, tarball, integrity) = pack(package);
        let name = manifest["name"].as_str().unwrap().to_string();
        let version = manifest["version"].clone();
        // The lockfile's entry, as npm writes it with omit-lockfile-registry-resolved: no
        // `resolved` URL, so that npm fetches from the registry it is configured with.
        let mut entry = json!({"version": version, "integrity": integrity});
        if let Some(bin) = manifest.get("bin") {
            entry["bin"] = bin.clone();
        }
        if manifest.pointer("/scripts/install").is_some() {
            entry["hasInstallScript"] = json!(true);
        }
        locked.insert(format!("node_modules/{name}"), entry);
        // The registry's document: the package.json of each version, with where its tarball
        // is and its integrity.
        manifest["dist"] =
            json!({"tarball": format!("{guest_base}/{name}.tgz"), "integrity": integrity});
        let document = json!({
            "name": name,
            "dist-tags": {"latest": version},
            "versions": {version.as_str().unwrap(): manifest},
        });
        files.push((name.clone(), document.to_string().into_bytes()));
        files.push((format!("{name}.tgz"), tarball));
    }
    let lockfile = json!({
        "name": "ci-app",
        "version": "1.0.0",
        "lockfileVersion": 3,
        "requires": true,
        "packages": locked,
    });
    let lockfile = serde_json::to_string_pretty(&lockfile).unwrap();
    files.push((
        "ci-app.tgz".to_string(),
        npm_package(&[
            ("package.json", CI_APP),
            ("package-lock.json", &lockfile),
            ("app.test.js", CI_APP_TEST),
        ]),
    ));
    files
}

/// The lockfile's entry for the project itself (`packages[""]`).
fn app_root() -> Value {
    let app: Value = serde_json::from_str(CI_APP).unwrap();
    json!({
        "name": app["name"],
        "version": app["version"],
        "dependencies": app["dependencies"],
    })
}

/// Serves [`site`] until the process ends; returns `127.0.0.1:PORT`.
pub fn serve() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let site = site(&format!(
        "10.0.2.2:{}",
        listener.local_addr().unwrap().port()
    ));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            // Skip the headers.
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let file = site
                .iter()
                .find(|(name, _)| Some(name.as_str()) == path.strip_prefix('/'));
            let (status, body): (&str, &[u8]) = match file {
                Some((_, body)) => ("200 OK", body),
                None => ("404 Not Found", b"not found"),
            };
            let kind = "application/octet-stream";
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|()| conn.write_all(body));
        }
    });
    addr
}

/// Where the KVM boxes' L1 serves [`site`] (busybox httpd), and where its files are packed.
pub const BOX_WEB: &str = "127.0.0.1:8080";
const BOX_WEB_DIR: &str = "/nodeos/web";

/// L1's set-up for the boxes' `--net` cases: passt needs a default route to pick its outbound
/// interface (L1 has no network of its own: a dummy one does; the `dummy` module) and, run as
/// root, the user `nobody` to drop to; [`site`] served on L1's loopback at [`BOX_WEB`]; cgroup
/// v2 mounted for the jail. `ip` is iproute2's (busybox's has no tuntap).
pub fn box_setup() -> String {
    format!(
        "echo nobody:x:65534:65534:nobody:/:/bin/false >> /etc/passwd; \
         echo nogroup:x:65534: >> /etc/group; \
         ip link set lo up; \
         [ -e /sys/class/net/dummy0 ] || ip link add dummy0 type dummy; ip addr add 192.0.2.1/24 dev dummy0 && \
         ip link set dummy0 up && ip route add default via 192.0.2.254 dev dummy0; \
         mkdir -p /srv && cp {BOX_WEB_DIR}/* /srv/ && busybox httpd -p {BOX_WEB} -h /srv; \
         mount -t cgroup2 cgroup2 /sys/fs/cgroup"
    )
}

/// [`site`] as the guest sees L1's loopback (passt's 10.0.2.2), written into `dir`, for the
/// box.
pub fn box_site(dir: &std::path::Path) -> kvm_box::BoxFile {
    let web_dir = dir.join("web");
    std::fs::create_dir_all(&web_dir).unwrap();
    let guest_web = format!("10.0.2.2:{}", BOX_WEB.rsplit_once(':').unwrap().1);
    for (name, body) in site(&guest_web) {
        std::fs::write(web_dir.join(name), body).unwrap();
    }
    kvm_box::BoxFile::new(web_dir, BOX_WEB_DIR)
}
