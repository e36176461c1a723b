//! The shell run on the host, with the host's programs (/bin/cat, printf, ...): each script
//! runs in a forked child, since the shell may exec, cd or exit; outputs go through
//! redirections to files in a temporary directory.

use std::fmt;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::run;
use crate::sys::{self, ExitStatus, Fork};

/// A fresh temporary directory, removed when dropped; displays as its path.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nodeos-sh-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.0.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn has(&self, name: &str) -> bool {
        self.0.join(name).exists()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl fmt::Display for TempDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

struct Outcome {
    /// The exit status, 128+N for a signal.
    status: i32,
    /// The pid the shell ran as.
    pid: libc::pid_t,
    /// What the shell (and its commands) wrote on its standard error.
    stderr: String,
}

const ENV: [&str; 2] = ["PATH=/usr/bin:/bin", "HOME=/tmp"];

fn sh_with(script: &str, params: &[&str]) -> Outcome {
    let dir = TempDir::new();
    let stderr = std::fs::File::create(dir.0.join("stderr")).unwrap();
    let env = ENV.iter().map(|e| e.as_bytes().to_vec()).collect();
    let params = params.iter().map(|p| p.as_bytes().to_vec()).collect();
    match sys::fork().unwrap() {
        Fork::Child => {
            // SAFETY: dup2 only changes this child's descriptor table.
            unsafe { libc::dup2(stderr.as_raw_fd(), 2) };
            // The test harness's own descriptors are not the script's business.
            for fd in 3..10 {
                // SAFETY: closing descriptors in this child only; nothing here uses them again.
                unsafe { libc::close(fd) };
            }
            sys::exit_now(run(script.as_bytes(), b"sh".to_vec(), params, env))
        }
        Fork::Parent(pid) => {
            let (_, exit) = sys::waitpid(pid, 0).unwrap().unwrap();
            let status = match exit {
                ExitStatus::Code(code) => code,
                ExitStatus::Signal(signal) => 128 + signal,
            };
            Outcome {
                status,
                pid,
                stderr: dir.read("stderr"),
            }
        }
    }
}

fn sh(script: &str) -> Outcome {
    sh_with(script, &[])
}

#[test]
fn sh_builtins_and_programs_write_through_redirections() {
    let d = TempDir::new();
    let out = sh(&format!(
        "echo one > {d}/a; /bin/echo two >> {d}/a; printf '%s-' x y >>{d}/a; echo -n n >> {d}/a"
    ));
    assert_eq!((out.status, out.stderr.as_str()), (0, ""));
    assert_eq!(d.read("a"), "one\ntwo\nx-y-n");
}

#[test]
fn sh_quoting_and_parameters() {
    let d = TempDir::new();
    let out = sh_with(
        &format!(
            r#"X='a  b'; printf '[%s]' $X "$X" '$X' \$X "$1" $# "$@" "${{U:-d}}" $0 ~ > {d}/o"#
        ),
        &["p 1", "p2"],
    );
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(
        d.read("o"),
        "[a][b][a  b][$X][$X][p 1][2][p 1][p2][d][sh][/tmp]"
    );
}

#[test]
fn sh_lists_and_statuses() {
    let d = TempDir::new();
    let out = sh(&format!(
        "false && echo 1 >> {d}/o; true || echo 2 >> {d}/o; false || echo 3 >> {d}/o
         true && echo 4 >> {d}/o
         false; echo $? >> {d}/o; ! true; echo $? >> {d}/o; : && echo 5 >> {d}/o"
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("o"), "3\n4\n1\n1\n5\n");
    assert_eq!(sh("false").status, 1);
    assert_eq!(sh("true; false").status, 1);
    assert_eq!(sh("false\ntrue\n").status, 0);
    assert_eq!(sh("! true").status, 1);
    assert_eq!(sh("! false").status, 0);
    assert_eq!(sh("exit 3; echo not here").status, 3);
    assert_eq!(sh("false; exit").status, 1);
    assert_eq!(sh("exit 300").status, 44);
    assert_eq!(sh("").status, 0);
    assert_eq!(sh("# just a comment").status, 0);
}

#[test]
fn sh_pipelines() {
    let d = TempDir::new();
    let out = sh(&format!(
        "printf 'b\\na\\n' | sort | head -n 1 > {d}/o; echo hi | cat | cat > {d}/p
         cat {d}/missing 2>&1 | wc -l > {d}/q; yes | head -n 2 > {d}/y; exit 5 | true; echo $? > {d}/s"
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("o"), "a\n");
    assert_eq!(d.read("p"), "hi\n");
    assert_eq!(d.read("q").trim(), "1");
    assert_eq!(d.read("y"), "y\ny\n");
    assert_eq!(d.read("s"), "0\n");
    assert_eq!(sh("false | true").status, 0);
    assert_eq!(sh("true | false").status, 1);
    assert_eq!(sh("! true | false").status, 0);
}

#[test]
fn sh_redirections() {
    let d = TempDir::new();
    std::fs::write(d.0.join("in"), "data\n").unwrap();
    let out = sh(&format!(
        "cat < {d}/in > {d}/out; cat {d}/missing > {d}/both 2>&1; echo $? > {d}/s
         echo to-err 2>{d}/e >&2; echo again 2>>{d}/e 1>&2; /bin/echo ext 2>>{d}/e >&2
         > {d}/created; cat 0<{d}/in 3>&1 1>&2 2>&3 2>>{d}/swap"
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("out"), "data\n");
    assert!(d.read("both").contains("missing"));
    assert_eq!(d.read("s"), "1\n");
    assert_eq!(d.read("e"), "to-err\nagain\next\n");
    assert_eq!(d.read("created"), "");
    assert_eq!(out.stderr, "data\n");
}

#[test]
fn sh_redirection_failures() {
    let d = TempDir::new();
    let out = sh(&format!(
        "echo x > {d}/no/f; echo $? > {d}/s; echo y >&7; echo $? >> {d}/s; echo z >&-"
    ));
    assert_eq!(out.status, 1);
    assert_eq!(d.read("s"), "1\n1\n");
    assert_eq!(
        out.stderr,
        format!(
            "sh: cannot open {d}/no/f: No such file or directory\nsh: 7: Bad file descriptor\n\
             sh: write error: Bad file descriptor\n"
        )
    );
}

#[test]
fn sh_not_found_and_not_executable() {
    let d = TempDir::new();
    let out = sh(&format!(
        "nodeos-no-such-command 2> {d}/e; echo $? > {d}/s; nodeos-no-such-command"
    ));
    assert_eq!(out.status, 127);
    assert_eq!(d.read("e"), "sh: nodeos-no-such-command: not found\n");
    assert_eq!(d.read("s"), "127\n");
    assert_eq!(out.stderr, "sh: nodeos-no-such-command: not found\n");

    std::fs::write(d.0.join("script"), "#!/bin/sh\n").unwrap();
    let out = sh(&format!("{d}/script"));
    assert_eq!(out.status, 126);
    assert_eq!(out.stderr, format!("sh: {d}/script: Permission denied\n"));
    assert_eq!(sh(&format!("{d}/script; true")).status, 0);
}

#[test]
fn sh_a_command_killed_by_a_signal_gives_128_plus_n() {
    let d = TempDir::new();
    let out = sh(&format!("/bin/sh -c 'kill -TERM $$'; echo $? > {d}/s"));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("s"), "143\n");
}

#[test]
fn sh_the_last_command_replaces_the_shell() {
    let d = TempDir::new();
    let pid_in = |name: &str| -> libc::pid_t {
        let stat = d.read(name);
        stat.split(' ').next().unwrap().parse().unwrap()
    };
    for (script, replaces) in [
        ("cat /proc/self/stat > {d}/stat", true),
        ("true && cat /proc/self/stat > {d}/stat", true),
        ("false || A=1 cat /proc/self/stat > {d}/stat", true),
        ("cat /proc/self/stat > {d}/stat; true", false),
        ("cat /proc/self/stat > {d}/stat || true", false),
        ("! cat /proc/self/stat > {d}/stat", false),
        ("cat /proc/self/stat | cat > {d}/stat", false),
    ] {
        let out = sh(&script.replace("{d}", &d.to_string()));
        assert_eq!(pid_in("stat") == out.pid, replaces, "{script}");
    }
}

#[test]
fn sh_assignments_and_the_environment() {
    let d = TempDir::new();
    let out = sh(&format!(
        "A=1 printenv A > {d}/a; B=2; printenv B > {d}/b; echo \"$?[$B]\" >> {d}/b
         C=3; export C D=4; printenv C D > {d}/c; E=5 true; echo \"[$E]\" > {d}/e
         unset HOME; printenv HOME > {d}/h; echo $? >> {d}/h; X=a\\ b Y=\"$X\"; echo \"$Y\" > {d}/y
         export -p > {d}/p"
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("a"), "1\n");
    assert_eq!(d.read("b"), "1[2]\n");
    assert_eq!(d.read("c"), "3\n4\n");
    assert_eq!(d.read("e"), "[]\n");
    assert_eq!(d.read("h"), "1\n");
    assert_eq!(d.read("y"), "a b\n");
    assert_eq!(
        d.read("p"),
        "export C='3'\nexport D='4'\nexport PATH='/usr/bin:/bin'\n"
    );
}

#[test]
fn sh_cd() {
    let d = TempDir::new();
    let here = std::env::current_dir().unwrap();
    let out = sh(&format!(
        "cd {d} && pwd > out; cd - > {d}/back; cd && pwd > {d}/home; cd {d}/missing 2> {d}/e; echo $? >> {d}/e"
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("out"), format!("{d}\n"));
    assert_eq!(d.read("back"), format!("{}\n", here.display()));
    assert_eq!(d.read("home"), "/tmp\n");
    assert_eq!(
        d.read("e"),
        format!("sh: cd: {d}/missing: No such file or directory\n1\n")
    );
}

#[test]
fn sh_exec() {
    let d = TempDir::new();
    let out = sh(&format!(
        "exec /bin/echo replaced > {d}/o; echo not reached > {d}/o2"
    ));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("o"), "replaced\n");
    assert!(!d.has("o2"));
    let out = sh(&format!(
        "exec 2>{d}/e; nodeos-no-such-command; exec nodeos-no-such-command; echo not reached"
    ));
    assert_eq!(out.status, 127);
    assert_eq!(
        d.read("e"),
        "sh: nodeos-no-such-command: not found\nsh: nodeos-no-such-command: not found\n"
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn sh_unsupported_syntax_runs_nothing() {
    let d = TempDir::new();
    let out = sh(&format!("echo x > {d}/o; if true; then echo y; fi"));
    assert_eq!(out.status, 2);
    assert_eq!(
        out.stderr,
        "sh: unsupported syntax: `if` (compound commands)\n"
    );
    assert!(!d.has("o"));
    let out = sh("echo $(pwd)");
    assert_eq!(
        (out.status, out.stderr.as_str()),
        (
            2,
            "sh: unsupported syntax: `$(...)` (command substitution)\n"
        )
    );
    let out = sh("echo 'open");
    assert_eq!(
        (out.status, out.stderr.as_str()),
        (2, "sh: syntax error: unterminated '\n")
    );
}

#[test]
fn sh_globs() {
    let d = TempDir::new();
    for f in ["b.js", "a.js"] {
        std::fs::write(d.0.join(f), "").unwrap();
    }
    let out = sh(&format!("printf '%s\\n' {d}/*.js '*' {d}/*.none > {d}/o"));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(d.read("o"), format!("{d}/a.js\n{d}/b.js\n*\n{d}/*.none\n"));
}
