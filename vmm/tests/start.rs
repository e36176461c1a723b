//! `nodeos-vm start`: the Node.js REPL is PID 1 of a fresh microVM (issue: guest image and
//! first boot). Each test boots real guests.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repl, start, stderr, BIN};

fn lines(out: &str) -> Vec<&str> {
    out.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect()
}

#[test]
fn repl_is_pid_1() {
    assert_eq!(lines(&repl(&[], "process.pid\n")), ["1"]);
}

#[test]
fn repl_runs_as_an_unprivileged_user_and_there_is_no_root_account() {
    let out = repl(
        &[],
        "process.getuid()\nprocess.getgid()\n\
         require('fs').readFileSync('/etc/passwd','utf8').split('\\n').some(l => l.split(':')[0] === 'root' || l.split(':')[2] === '0')\n",
    );
    assert_eq!(lines(&out), ["1000", "1000", "false"]);
}

#[test]
fn root_is_an_overlay_over_a_read_only_image_and_writes_are_ephemeral() {
    let probe = "const fs = require('fs')\n\
        fs.readFileSync('/proc/mounts','utf8').split('\\n').find(l => l.split(' ')[1] === '/').split(' ')[2]\n\
        (() => { try { fs.writeFileSync('/run/nodeos/lower/usr/x', '1'); return 'written' } catch (e) { return e.code } })()\n\
        fs.existsSync('/home/node/kept')\n\
        fs.writeFileSync('/home/node/kept', 'data'); fs.readFileSync('/home/node/kept', 'utf8')\n";
    let first = repl(&[], probe);
    assert_eq!(lines(&first), ["undefined", "'overlay'", "'EROFS'", "false", "'data'"], "{first}");
    // A fresh VM starts from the image again: the file is gone.
    let second = repl(&[], probe);
    assert_eq!(lines(&second)[3], "false", "{second}");
}

#[test]
fn node_is_the_pinned_version() {
    let versions = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../rootfs/versions")).unwrap();
    let pinned = versions
        .lines()
        .find_map(|l| l.strip_prefix("NODE_VERSION="))
        .expect("NODE_VERSION in rootfs/versions")
        .trim_matches('"');
    let out = repl(&[], "require('child_process').execFileSync('node', ['--version'], {encoding: 'utf8'}).trim()\n");
    assert_eq!(lines(&out), [format!("'v{pinned}'")]);
}

#[test]
fn cpus_option_sets_the_vcpu_count() {
    assert_eq!(lines(&repl(&["--cpus", "2"], "require('os').cpus().length\n")), ["2"]);
}

#[test]
fn leaving_the_repl_ends_the_vm_with_its_status() {
    for (input, status) in [(".exit\n", 0), ("", 0), ("process.exit(3)\n", 3), ("1+1\n", 0)] {
        let out = start(&[], input);
        assert_eq!(out.status.code(), Some(status), "input {input:?}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("Kernel panic") && !stderr(&out).contains("Kernel panic"), "{stdout}");
    }
}

#[test]
fn orphaned_processes_do_not_become_zombies() {
    // A child that starts a detached grandchild and exits at once: the grandchild is orphaned.
    let out = repl(
        &[],
        "const cp = require('child_process')\n\
         cp.execFileSync('node', ['-e', \"require('child_process').spawn('node', ['-e', 'setTimeout(() => {}, 200)'], {detached: true, stdio: 'ignore'}).unref()\"])\n\
         Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3000)\n\
         require('fs').readdirSync('/proc').filter(p => /^\\d+$/.test(p)).filter(p => { try { return require('fs').readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1][0] === 'Z' } catch { return false } }).length\n",
    );
    assert_eq!(lines(&out).last(), Some(&"0"), "{out}");
}

#[test]
fn a_missing_kernel_is_a_clear_error() {
    let out = start(&["--kernel", "/nonexistent/vmlinux"], "");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(err.contains("/nonexistent/vmlinux does not exist"), "{err}");
}

#[test]
fn a_truncated_root_image_is_a_clear_error() {
    let (_, rootfs) = common::artifacts();
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("rootfs.img");
    let data = std::fs::read(rootfs).unwrap();
    std::fs::write(&truncated, &data[..data.len() / 2]).unwrap();
    let out = start(&["--rootfs", truncated.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("truncated or corrupt"), "{}", stderr(&out));
}

#[test]
fn an_impossible_memory_size_is_a_clear_error() {
    for (memory, expect) in [("100000G", "this host has only"), ("12", "at least"), ("lots", "is not a size")] {
        let out = start(&["--memory", memory], "");
        assert_eq!(out.status.code(), Some(125), "--memory {memory}");
        assert!(stderr(&out).contains(expect), "--memory {memory}: {}", stderr(&out));
    }
}

/// On a terminal the REPL is interactive: prompt, echo, line editing in the guest.
#[test]
fn interactive_terminal_session() {
    common::artifacts();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
    let mut child = Command::new(BIN)
        .args(["start", "--backend", &common::backend()])
        .stdin(slave())
        .stdout(slave())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let mut wait_for = |master: &mut std::fs::File, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            assert!(Instant::now() < deadline, "timed out waiting for {needle:?}; saw {seen:?}");
            let n = master.read(&mut buf).unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen.clear();
    };
    wait_for(&mut master, "> ");
    master.write_all(b"process.pid * 7\r").unwrap();
    wait_for(&mut master, "7");
    wait_for(&mut master, "> ");
    master.write_all(b".exit\r").unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
}
