//! The real-project corpus (tests/corpus/): small projects in the styles real projects use,
//! their devDependencies pinned by a lockfile, each run with `npm test` on this host and with
//! `nodeos-vm run -v DIR:/app -w /app -- npm test` in a microVM. The VM must give the host's
//! exit status and pass/fail counts; the host must give the counts the project's tests are
//! written for (some fail on purpose, marked `FAILS ON PURPOSE`), so that a runner that finds
//! no tests at all on both sides fails too.
//!
//! Dependencies are installed on this host with `npm ci` (from the npm registry, scripts run
//! as for any user) once per lockfile, into `<nodeos-vm cache>/test-corpus/<project>-<hash>`;
//! every run gets a fresh copy of the project with that `node_modules`.
//!
//! Shared by tests/corpus.rs (QEMU/TCG here), tests/kvm_box/x86_64.rs (our VMM in the KVM box) and
//! the bench benches/src/bin/corpus.rs, so it needs nothing but std and the kvm-box crate.

use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Longest one `npm test` may take, on the host or in a VM (`run --timeout`).
pub const TEST_LIMIT: Duration = Duration::from_secs(600);

/// How a runner reports its totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// `  5 passing (29ms)` / `  1 failing`.
    Mocha,
    /// TAP's trailer (tape, `node --test --test-reporter=tap`): `# pass 5` / `# fail 1`.
    Tap,
    /// vitest's `      Tests  1 failed | 5 passed (6)`.
    Vitest,
    /// jest's `Tests:       1 failed, 5 passed, 6 total`.
    Jest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u32,
    pub failed: u32,
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

pub struct Project {
    /// Its folder under tests/corpus/.
    pub name: &'static str,
    pub reporter: Reporter,
    /// What its tests are written to give.
    pub expected: Counts,
    /// Also run in the KVM box on every test run (the box is slow: the rest is in the bench).
    pub in_box: bool,
}

pub const fn counts(passed: u32, failed: u32) -> Counts {
    Counts { passed, failed }
}

pub const PROJECTS: &[Project] = &[
    Project {
        name: "mocha",
        reporter: Reporter::Mocha,
        expected: counts(5, 1),
        in_box: true,
    },
    Project {
        name: "tape",
        reporter: Reporter::Tap,
        expected: counts(6, 1),
        in_box: false,
    },
    Project {
        name: "node-test",
        reporter: Reporter::Tap,
        expected: counts(5, 0),
        in_box: true,
    },
    Project {
        name: "esm",
        reporter: Reporter::Tap,
        expected: counts(5, 1),
        in_box: false,
    },
    Project {
        name: "scripts",
        reporter: Reporter::Tap,
        expected: counts(4, 0),
        in_box: true,
    },
    Project {
        name: "typescript",
        reporter: Reporter::Tap,
        expected: counts(4, 1),
        in_box: false,
    },
    Project {
        name: "vitest",
        reporter: Reporter::Vitest,
        expected: counts(5, 1),
        in_box: true,
    },
    Project {
        name: "jest",
        reporter: Reporter::Jest,
        expected: counts(6, 0),
        in_box: false,
    },
];

pub fn project(name: &str) -> &'static Project {
    PROJECTS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no corpus project {name}"))
}

/// One `npm test`.
pub struct Outcome {
    pub status: Option<i32>,
    /// stdout and stderr.
    pub output: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn counts(&self, reporter: Reporter) -> Option<Counts> {
        parse(reporter, &self.output)
    }
}

/// The totals `reporter` printed in `output`, if it printed them.
pub fn parse(reporter: Reporter, output: &str) -> Option<Counts> {
    let text = strip_ansi(output);
    let lines = || text.lines().map(str::trim);
    // The number just before (`5 passing`) or just after (`# pass 5`) a word, on the last line
    // that starts with `prefix`: runners print their summary last.
    let before = |prefix: &str, word: &str| -> Option<u32> {
        lines()
            .rev()
            .filter(|l| l.starts_with(prefix))
            .find_map(|l| {
                let tokens: Vec<&str> = l.split_whitespace().collect();
                tokens
                    .windows(2)
                    .find(|w| w[1].trim_end_matches(',') == word)
                    .and_then(|w| w[0].parse().ok())
            })
    };
    let after = |prefix: &str| -> Option<u32> {
        lines()
            .rev()
            .filter_map(|l| l.strip_prefix(prefix))
            .find_map(|rest| rest.trim().parse().ok())
    };
    let (passed, failed) = match reporter {
        Reporter::Mocha => (before("", "passing"), before("", "failing")),
        Reporter::Tap => (after("# pass "), after("# fail ")),
        Reporter::Vitest => (before("Tests ", "passed"), before("Tests ", "failed")),
        Reporter::Jest => (before("Tests:", "passed"), before("Tests:", "failed")),
    };
    // A runner leaves out the count of failures when there are none (mocha, tape, vitest,
    // jest) but always prints the passes, unless nothing passed (then it prints failures).
    match (passed, failed) {
        (None, None) => None,
        (p, f) => Some(counts(p.unwrap_or(0), f.unwrap_or(0))),
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The checked-in projects: tests/corpus/ of the `nodeos-vm` crate (from this crate or the
/// benches').
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/corpus")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The host's npm (Debian's, with its nodejs, installed with apt when missing, as root).
fn npm() -> PathBuf {
    kvm_box::host_program("npm", "npm").unwrap_or_else(|e| panic!("{e}"))
}

/// `cmd`, which must succeed.
fn must(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The project's `node_modules`, installed by `npm ci` once per package.json and lockfile.
fn installed(project: &Project) -> PathBuf {
    let src = corpus_dir().join(project.name);
    let mut manifests = read(&src.join("package.json"));
    manifests.extend(read(&src.join("package-lock.json")));
    let cache = kvm_box::default_cache_dir().join("test-corpus");
    let key = hex::encode(&sha2::Sha256::digest(&manifests)[..8]);
    let dir = cache.join(format!("{}-{key}", project.name));
    if dir.join("node_modules").is_dir() {
        return dir;
    }
    // What an interrupted install left behind.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&cache).unwrap();
    let work = tempfile::tempdir_in(&cache).unwrap();
    for file in ["package.json", "package-lock.json"] {
        std::fs::copy(src.join(file), work.path().join(file)).unwrap();
    }
    must(
        Command::new(npm())
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(work.path()),
    );
    // npm makes none for a project without dependencies.
    std::fs::create_dir_all(work.path().join("node_modules")).unwrap();
    // Another test process may have won the race: its install is as good as ours.
    if std::fs::rename(work.path(), &dir).is_err() && !dir.join("node_modules").is_dir() {
        panic!(
            "could not move the install of {} to {}",
            project.name,
            dir.display()
        );
    }
    dir
}

/// A fresh copy of the project in `parent`, with its installed `node_modules` (symlinks kept:
/// `node_modules/.bin` is made of them) and no build output left from a developer's tree.
pub fn prepare(project: &Project, parent: &Path) -> PathBuf {
    let modules = installed(project).join("node_modules");
    let src = corpus_dir().join(project.name);
    let dst = parent.join(project.name);
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        if !["node_modules", "dist"].contains(&entry.file_name().to_str().unwrap()) {
            must(Command::new("cp").arg("-a").arg(entry.path()).arg(&dst));
        }
    }
    must(Command::new("cp").arg("-a").arg(modules).arg(&dst));
    dst
}

fn timed(cmd: &mut Command) -> Outcome {
    let start = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Outcome {
        status: out.status.code(),
        output,
        elapsed: start.elapsed(),
    }
}

/// `npm test` in `dir` on this host.
pub fn on_host(dir: &Path) -> Outcome {
    timed(
        Command::new("timeout")
            .arg(TEST_LIMIT.as_secs().to_string())
            .arg(npm())
            .arg("test")
            .current_dir(dir),
    )
}

/// `nodeos-vm run --timeout LIMIT -v DIR:/app -w /app -- npm test`; `run` is the nodeos-vm
/// binary and its options before the volume (`run`, backend, kernel, image).
pub fn in_vm(run: &[String], dir: &Path) -> Outcome {
    let (bin, args) = run.split_first().expect("a nodeos-vm command");
    timed(
        Command::new(bin)
            .args(args)
            .arg("--timeout")
            .arg(format!("{}s", TEST_LIMIT.as_secs()))
            .arg("-v")
            .arg(format!("{}:/app", dir.display()))
            .args(["-w", "/app", "--", "npm", "test"]),
    )
}

/// The KVM box side: `npm test` of carried projects in VMs of our VMM inside L1 (one box run
/// for many projects; see the kvm-box crate).
pub mod in_box {
    use std::path::Path;
    use std::time::Duration;

    use kvm_box::{BoxFile, Check, Script};

    use super::{prepare, Outcome, Project, TEST_LIMIT};

    /// The box check of `project`.
    pub fn check_name(project: &Project) -> String {
        format!("corpus.{}", project.name)
    }

    fn carried(project: &Project) -> String {
        format!("/nodeos/corpus/{}", project.name)
    }

    /// The project with its `node_modules`, prepared in `parent`, to carry into L1.
    pub fn file(project: &Project, parent: &Path) -> BoxFile {
        BoxFile::new(prepare(project, parent), carried(project))
    }

    /// Adds `project`'s check to `script`: `npm test` in a VM on a fresh copy of the carried
    /// project (the copy is written to), `run` being the `nodeos-vm run ...` prefix.
    pub fn add_check(script: &mut Script, run: &str, project: &Project) {
        let dir = format!("/tmp/corpus/{}", project.name);
        script.check_with_timeout(
            &check_name(project),
            TEST_LIMIT + Duration::from_secs(60),
            &format!(
                "mkdir -p /tmp/corpus && cp -a {} {dir} && {run} --timeout {}s -v {dir}:/app -w /app -- npm test 2>&1",
                carried(project),
                TEST_LIMIT.as_secs()
            ),
        );
    }

    pub fn outcome(check: &Check) -> Outcome {
        Outcome {
            status: check.status,
            output: check.output.clone(),
            elapsed: check.elapsed.unwrap_or_default(),
        }
    }
}

/// The VM gave the host's status and counts, and the host the counts the tests are written for.
pub fn compare(
    project: &Project,
    host: &Outcome,
    vm: &Outcome,
    where_: &str,
) -> Result<(), String> {
    let tail = |o: &Outcome| {
        let lines: Vec<&str> = o.output.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let host_counts = host.counts(project.reporter);
    if host_counts != Some(project.expected) {
        return Err(format!(
            "{} on the host: expected {}, got {host_counts:?} (status {:?}):\n{}",
            project.name,
            project.expected,
            host.status,
            tail(host)
        ));
    }
    let vm_counts = vm.counts(project.reporter);
    if vm_counts != host_counts || vm.status != host.status {
        return Err(format!(
            "{} {where_}: status {:?}, {vm_counts:?}; on the host: status {:?}, {host_counts:?}. \
             The VM's output:\n{}",
            project.name,
            vm.status,
            host.status,
            tail(vm)
        ));
    }
    Ok(())
}
