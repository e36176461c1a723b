//! The image's POSIX shell (Debian's dash as /bin/sh) and the commands scripts call, against
//! this host's dash: every script of tests/shell/corpus runs in ONE VM under the image's `sh`
//! and here under `dash` (tests/shell/run-corpus.sh runs each in a fresh folder with the same
//! small environment), and each must print the same and end with the same status. A command
//! missing from the image or a shell feature that breaks shows as a difference.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What one script did: its status and its stdout and stderr together.
#[derive(PartialEq)]
struct Outcome {
    status: String,
    output: String,
}

fn shell_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/shell")
}

/// The records run-corpus.sh prints: `=== NAME STATUS BYTES` and BYTES bytes of output each.
fn parse_records(text: &str) -> Result<BTreeMap<String, Outcome>, String> {
    let mut records = BTreeMap::new();
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a record header without its newline")?;
        let header = String::from_utf8_lossy(&rest[..end]);
        let fields: Vec<&str> = header
            .strip_prefix("=== ")
            .ok_or_else(|| format!("not a record header: {header:?}"))?
            .split(' ')
            .collect();
        let [name, status, bytes] = fields[..] else {
            return Err(format!("bad record header: {header:?}"));
        };
        let bytes: usize = bytes
            .parse()
            .map_err(|_| format!("bad byte count in {header:?}"))?;
        let body = rest
            .get(end + 1..end + 1 + bytes)
            .ok_or_else(|| format!("{name}: output cut short"))?;
        records.insert(
            name.to_string(),
            Outcome {
                status: status.to_string(),
                output: String::from_utf8_lossy(body).into_owned(),
            },
        );
        rest = &rest[end + 1 + bytes..];
    }
    Ok(records)
}

/// `diff -u` of the host's and the guest's output of one script.
fn diff(name: &str, host: &str, guest: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (h, g) = (dir.path().join("host-dash"), dir.path().join("guest-sh"));
    std::fs::write(&h, host).unwrap();
    std::fs::write(&g, guest).unwrap();
    let out = Command::new("diff")
        .args(["-u", "--label", &format!("{name} (host dash)")])
        .args(["--label", &format!("{name} (guest sh)")])
        .arg(&h)
        .arg(&g)
        .output()
        .expect("running diff");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn corpus_runs_the_same_under_the_guest_sh_and_host_dash() {
    let dir = shell_dir();
    let scripts = std::fs::read_dir(dir.join("corpus"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sh".as_ref()))
        .count();
    assert!(scripts >= 10, "corpus scripts in {}", dir.display());

    let host = Command::new(common::host_program("dash", "dash"))
        .arg(dir.join("run-corpus.sh"))
        .arg("dash")
        .arg(dir.join("corpus"))
        .output()
        .expect("running dash (Debian's package `dash`)");
    assert!(
        host.status.success(),
        "run-corpus.sh under host dash failed"
    );
    let host = parse_records(&String::from_utf8_lossy(&host.stdout)).unwrap();

    let volume = format!("{}:/shell:ro", dir.display());
    let (status, out, err) = common::run(&[
        "-v",
        &volume,
        "--",
        "sh",
        "/shell/run-corpus.sh",
        "sh",
        "/shell/corpus",
    ]);
    assert_eq!(status, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    let guest = parse_records(&out).unwrap();

    assert_eq!(host.len(), scripts, "scripts run by host dash");
    assert_eq!(
        guest.keys().collect::<Vec<_>>(),
        host.keys().collect::<Vec<_>>(),
        "scripts run in the guest"
    );
    let mut differences = String::new();
    for (name, want) in &host {
        let got = &guest[name];
        if got != want {
            differences.push_str(&format!(
                "{name}: status {} under host dash, {} under the guest's sh\n{}\n",
                want.status,
                got.status,
                diff(name, &want.output, &got.output)
            ));
        }
    }
    assert!(differences.is_empty(), "{differences}");
}
