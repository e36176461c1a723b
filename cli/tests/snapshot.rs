//! Template snapshots on the test backend (QEMU with TCG on hosts whose KVM cannot run Linux;
//! our VMM's are in kvm_box/): VMs restored from one template share nothing of their own, and
//! a template that is missing, broken, or being made by another process is never used wrongly.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a restored VM says of itself: its randomness, identities and clock.
const IDENTITY_JS: &str = r#"
const fs = require('fs'), crypto = require('crypto');
console.log(JSON.stringify({
  bytes: crypto.randomBytes(16).toString('hex'),
  uuid: crypto.randomUUID(),
  math: Math.random(),
  kernel_uuid: fs.readFileSync('/proc/sys/kernel/random/uuid', 'utf8').trim(),
  boot_id: fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
  hostname: require('os').hostname(),
  mac: fs.readFileSync('/sys/class/net/eth0/address', 'utf8').trim(),
  now: Date.now(),
}));
"#;

/// `nodeos-vm run ARGS -- CMD...` with the test's kernel and image and the cache `cache`
/// (the default one when `None`), saying what it restores: (status, stdout, stderr).
fn run_in(cache: Option<&Path>, args: &[&str], cmd: &[&str]) -> (Option<i32>, String, String) {
    let mut all = args.to_vec();
    all.push("--");
    all.extend(cmd);
    let mut env = vec![("RUST_LOG", OsStr::new("sandbox=info"))];
    env.extend(cache.map(|c| ("NODEOS_VM_CACHE", c.as_os_str())));
    common::run_with_env(&all, &env)
}

/// The template snapshots in `cache`.
fn templates(cache: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(cache.join("templates")) else {
        return Vec::new();
    };
    let mut snaps: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    snaps.sort();
    snaps
}

/// What a VM restored with a network (`--net`) says of itself.
fn identity(cache: Option<&Path>) -> serde_json::Value {
    let (status, out, err) = run_in(cache, &["--net"], &["node", "-e", IDENTITY_JS]);
    assert_eq!(status, Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("restoring "), "not restored: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Two VMs restored from one template: every random source and identity (the Ethernet address
/// too: locally administered) differs, and the clock is the host's.
#[test]
fn restored_vms_share_no_randomness_nor_identity() {
    let (a, b) = (identity(None), identity(None));
    for field in [
        "bytes",
        "uuid",
        "math",
        "kernel_uuid",
        "boot_id",
        "hostname",
        "mac",
    ] {
        assert_ne!(a[field], b[field], "{field}: {a} {b}");
    }
    for vm in [&a, &b] {
        let first = u8::from_str_radix(&vm["mac"].as_str().unwrap()[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "not a local unicast address: {vm}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for vm in [&a, &b] {
        let skew = (now - vm["now"].as_i64().unwrap()).abs();
        assert!(skew < 60_000, "the guest's clock is {skew} ms off: {vm}");
    }
}

/// `--no-snapshot` boots cold and makes no template.
#[test]
fn no_snapshot_boots_cold() {
    let cache = tempfile::tempdir().unwrap();
    let (status, out, err) = run_in(Some(cache.path()), &["--no-snapshot"], &["echo", "cold"]);
    assert_eq!((status, out.as_str()), (Some(0), "cold\n"), "{err}");
    assert!(!err.contains("restoring"), "{err}");
    assert!(templates(cache.path()).is_empty());
}

/// A template that does not read back whole (cut short, one byte changed) is made again, and
/// the VM runs all the same.
#[test]
fn a_broken_template_is_made_again() {
    let cache = tempfile::tempdir().unwrap();
    let echo = |what: &str| run_in(Some(cache.path()), &[], &["echo", what]);
    let (status, out, err) = echo("first");
    assert_eq!((status, out.as_str()), (Some(0), "first\n"), "{err}");
    assert!(err.contains("made the template"), "{err}");
    let [snap] = &templates(cache.path())[..] else {
        panic!("one template: {:?}", templates(cache.path()));
    };
    let whole = std::fs::read(snap).unwrap();
    /// What was done to the file, and how.
    type Breakage = (&'static str, Box<dyn Fn(&mut Vec<u8>)>);
    let breakages: [Breakage; 3] = [
        ("cut short", Box::new(|b| b.truncate(b.len() / 2))),
        (
            "a byte of its state changed",
            Box::new(|b| b[4096 + 10] ^= 0x20),
        ),
        ("emptied", Box::new(|b| b.clear())),
    ];
    for (what, break_it) in breakages {
        let mut broken = whole.clone();
        break_it(&mut broken);
        std::fs::write(snap, &broken).unwrap();
        let (status, out, err) = echo(what);
        assert_eq!((status, out.trim()), (Some(0), what), "{what}: {err}");
        assert!(err.contains("is unusable, made again"), "{what}: {err}");
        assert!(err.contains("made the template"), "{what}: {err}");
        // Made again whole (its stream is not byte for byte the same each time).
        let len = std::fs::metadata(snap).unwrap().len() as f64;
        assert!(
            (len / whole.len() as f64 - 1.0).abs() < 0.05,
            "{what}: {len} bytes"
        );
        let (_, _, err) = echo("again");
        assert!(!err.contains("made the template"), "{what}, then: {err}");
    }
}

/// Two first runs at once: one makes the template, the other waits for it; both restore.
#[test]
fn concurrent_first_runs_make_one_template() {
    let cache = tempfile::tempdir().unwrap();
    let path = cache.path().to_path_buf();
    let runs: Vec<_> = (0..2)
        .map(|i| {
            let cache = path.clone();
            std::thread::spawn(move || run_in(Some(&cache), &[], &["echo", &format!("run {i}")]))
        })
        .collect();
    let results: Vec<_> = runs.into_iter().map(|r| r.join().unwrap()).collect();
    let mut made = 0;
    for (i, (status, out, err)) in results.iter().enumerate() {
        assert_eq!(
            (*status, out.trim()),
            (Some(0), format!("run {i}").as_str()),
            "{err}"
        );
        assert!(err.contains("restoring "), "{err}");
        made += err.matches("made the template").count();
    }
    assert_eq!(made, 1, "{results:?}");
    assert_eq!(templates(cache.path()).len(), 1);
    let left: BTreeSet<String> = std::fs::read_dir(cache.path().join("templates"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A cache where no template can be made: the VM boots cold, and one line says why.
#[test]
fn an_unusable_cache_boots_cold_with_one_line() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(cache.path().join("templates"), "not a folder").unwrap();
    let why = booted_cold_with_one_line(cache.path(), &[]);
    assert!(why.contains("the snapshot folder"), "{why}");
}

/// `run ARGS -- echo cold` with the cache `cache`, which must boot cold and say why in one
/// line: that line.
fn booted_cold_with_one_line(cache: &Path, args: &[&str]) -> String {
    let (status, out, err) = run_in(Some(cache), args, &["echo", "cold"]);
    assert_eq!((status, out.as_str()), (Some(0), "cold\n"), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("booting without a snapshot"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        !err.contains("booting the VM to snapshot"),
        "a template boot was tried: {err}"
    );
    lines[0].to_string()
}

/// `doctor` names the templates of the default size, without and with a network: the ones
/// `run` restores from.
#[test]
fn doctor_names_the_templates_runs_restore_from() {
    // Another backend's templates are not the ones doctor reports (the auto backend's).
    if common::backend() != "auto" {
        return;
    }
    // Each run uses its template last: none is the least recently used when doctor looks.
    let restored: Vec<String> = [&[][..], &["--net"][..]]
        .into_iter()
        .map(|args| {
            let (status, _, err) = run_in(None, args, &["true"]);
            assert_eq!(status, Some(0), "{err}");
            err.lines()
                .find_map(|l| Some(l.split("restoring ").nth(1)?.trim().to_string()))
                .unwrap_or_else(|| panic!("not restored: {err}"))
        })
        .collect();
    let out = std::process::Command::new(common::BIN)
        .args(["doctor", "--json"])
        .output()
        .expect("running nodeos-vm doctor");
    let doctor: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let templates = doctor["templates"]
        .as_array()
        .unwrap_or_else(|| panic!("{doctor}"));
    let named: Vec<(&str, &str)> = templates
        .iter()
        .map(|t| {
            (
                t["shape"].as_str().unwrap_or_default(),
                t["path"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(named.len(), 2, "{doctor}");
    assert!(named[0].0.starts_with("512 MiB, 1 vCPU, "), "{doctor}");
    assert!(!named[0].0.contains("network"), "{doctor}");
    assert!(named[1].0.contains(", with a network, "), "{doctor}");
    assert_eq!(
        [named[0].1, named[1].1],
        [&*restored[0], &*restored[1]],
        "{doctor}"
    );
}

/// A template maker killed half-way (SIGKILL, its template's file begun) leaves nothing that
/// is used: the next run makes the template again and restores from it, and no temporary file
/// is left.
#[test]
fn a_template_maker_killed_half_way_leaves_nothing_used() {
    let cache = tempfile::tempdir().unwrap();
    let (kernel, rootfs) = common::artifacts();
    let mut maker = std::process::Command::new(common::BIN)
        .args(["run", "--backend", &common::backend()])
        .arg("--kernel")
        .arg(kernel)
        .arg("--rootfs")
        .arg(rootfs)
        .args(["--", "true"])
        .env("NODEOS_VM_CACHE", cache.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting nodeos-vm run");
    let begun = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let dir = cache.path().join("templates");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while begun(&dir).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no template begun in {}",
            dir.display()
        );
        assert!(
            maker.try_wait().unwrap().is_none(),
            "the maker ended before its template was begun"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    maker.kill().unwrap();
    maker.wait().unwrap();
    assert!(
        templates(cache.path()).is_empty(),
        "{:?}",
        templates(cache.path())
    );
    assert_eq!(
        begun(&dir).len(),
        1,
        "the half-made template is left behind"
    );

    let (status, out, err) = run_in(Some(cache.path()), &[], &["echo", "after"]);
    assert_eq!((status, out.as_str()), (Some(0), "after\n"), "{err}");
    assert!(err.contains("made the template"), "{err}");
    assert!(err.contains("restoring "), "{err}");
    assert_eq!(templates(cache.path()).len(), 1);
    assert!(begun(&dir).is_empty(), "{:?}", begun(&dir));
}

/// A cache without room for a template: refused before any template boot, the VM boots cold,
/// and one line says how much room it takes. (Mounting a small file system takes root.)
#[test]
fn a_cache_without_room_boots_cold_without_trying() {
    let Some(cache) = Tmpfs::mount("size=40m") else {
        return;
    };
    let why = booted_cold_with_one_line(cache.path(), &[]);
    assert!(
        why.contains("MB free; a template is made only where 256 MB or more are"),
        "{why}"
    );
}

/// A read-only cache: its templates are restored from, a missing one is not made (the VM boots
/// cold, one line says why). (Mounting a file system takes root.)
#[test]
fn a_read_only_cache_restores_what_it_has() {
    let Some(cache) = Tmpfs::mount("size=600m") else {
        return;
    };
    let (status, out, err) = run_in(Some(cache.path()), &[], &["echo", "made"]);
    assert_eq!((status, out.as_str()), (Some(0), "made\n"), "{err}");
    assert!(err.contains("made the template"), "{err}");
    cache.read_only();
    let (status, out, err) = run_in(Some(cache.path()), &[], &["echo", "restored"]);
    assert_eq!((status, out.as_str()), (Some(0), "restored\n"), "{err}");
    assert!(err.contains("restoring "), "{err}");
    // With a network: another template, which cannot be made.
    let why = booted_cold_with_one_line(cache.path(), &["--net"]);
    assert!(why.contains("Read-only file system"), "{why}");
}

/// A tmpfs mounted on a folder of its own for a test, unmounted when dropped (the test failed
/// or not).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// One mounted with `options`; none, said on stderr, where this process may not mount
    /// (it takes root).
    fn mount(options: &str) -> Option<Tmpfs> {
        let folder = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(folder.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mounting a tmpfs takes root");
        }
        mounted.then_some(Tmpfs(folder))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "remounting {} read-only",
            self.path().display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.path())
            .status();
    }
}
