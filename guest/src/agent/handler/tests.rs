//! The handler over a socketpair, running real programs of the test machine.

use super::*;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use contract::caps::Capabilities;
use contract::frame::{Container, WinSize};
use contract::rlimit::{Rlimit, UNLIMITED};

fn config(home: &str) -> Config {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Config {
        uid,
        gid,
        groups: vec![gid],
        home: PathBuf::from(home),
        base_env: vec![
            b"PATH=/usr/local/bin:/usr/bin:/bin".to_vec(),
            b"HOME=/nonexistent-home".to_vec(),
            b"LANG=C.UTF-8".to_vec(),
        ],
        // Not the test machine's own log: its OOM kills are not the tests'.
        kernel_log: PathBuf::from("/nonexistent-kernel-log"),
    }
}

/// The host's end of a connection served by `serve` in a thread.
struct Session {
    host: UnixStream,
    server: JoinHandle<io::Result<Outcome>>,
}

impl Session {
    fn start_with(cfg: Config) -> Self {
        let (host, guest) = UnixStream::pair().unwrap();
        host.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let server = thread::spawn(move || serve(guest.into(), &cfg));
        Session { host, server }
    }

    fn start() -> Self {
        Self::start_with(config("/"))
    }

    /// Hello both ways, then `exec`.
    fn exec(exec: Exec) -> Self {
        let mut session = Self::start();
        session.hello();
        session.send(&Request::Exec(exec));
        session
    }

    fn hello(&mut self) {
        self.send(&Request::Hello {
            version: frame::VERSION,
        });
        assert_eq!(
            self.recv(),
            Reply::Hello {
                version: frame::VERSION
            }
        );
    }

    fn send(&mut self, request: &Request) {
        frame::write_request(&mut self.host, request).unwrap();
    }

    fn recv(&mut self) -> Reply {
        frame::read_reply(&mut self.host)
            .unwrap()
            .expect("a reply before the end of the connection")
    }

    /// Every reply up to the final one: (stdout, stderr, final reply).
    fn collect(&mut self) -> (Vec<u8>, Vec<u8>, Reply) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.recv() {
                Reply::Started { pid } => assert!(pid > 0),
                Reply::Stdout(data) => {
                    assert!(data.len() <= frame::MAX_CHUNK);
                    out.extend(data)
                }
                Reply::Stderr(data) => err.extend(data),
                last => {
                    assert!(last.is_final(), "{last:?}");
                    return (out, err, last);
                }
            }
        }
    }

    fn finish(self) -> Outcome {
        // The agent's side ends after the final reply; it then waits for ours to close.
        let mut rest = Vec::new();
        (&self.host).read_to_end(&mut rest).unwrap();
        assert!(
            rest.is_empty(),
            "{} bytes after the final reply",
            rest.len()
        );
        drop(self.host);
        self.server.join().unwrap().unwrap()
    }
}

fn argv(args: &[&str]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.as_bytes().to_vec()).collect()
}

fn sh(script: &str) -> Exec {
    Exec {
        argv: argv(&["sh", "-c", script]),
        ..Exec::default()
    }
}

fn run(exec: Exec) -> (Vec<u8>, Vec<u8>, Reply) {
    let mut session = Session::exec(exec);
    let result = session.collect();
    assert_eq!(session.finish(), Outcome::Done);
    result
}

fn temp_file(contents: &[u8]) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "nodeos-agent-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).unwrap();
    path
}

/// Whether `pid` is gone (or a zombie, which holds nothing any more).
fn dead(pid: libc::pid_t) -> bool {
    for _ in 0..200 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat.rsplit_once(") ").map(|(_, rest)| &rest[..1]);
                if state == Some("Z") {
                    return true;
                }
            }
        }
        thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn exit_codes() {
    for code in [0, 1, 3] {
        let (_, _, last) = run(sh(&format!("exit {code}")));
        assert_eq!(last, Reply::Exited(code));
    }
}

#[test]
fn killed_by_a_signal() {
    let (_, _, last) = run(sh("kill -TERM $$"));
    assert_eq!(last, Reply::Signaled(libc::SIGTERM));
}

#[test]
fn a_signal_request_reaches_the_process_group() {
    let mut session = Session::exec(sh("sleep 100 & wait"));
    assert!(matches!(session.recv(), Reply::Started { .. }));
    session.send(&Request::Signal(libc::SIGKILL));
    let (_, _, last) = session.collect();
    assert_eq!(last, Reply::Signaled(libc::SIGKILL));
    session.finish();
}

#[test]
fn stdout_and_stderr_are_separate_and_in_order() {
    let (out, err, last) = run(sh(
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 0",
    ));
    assert_eq!(out, b"out1\nout2\n");
    assert_eq!(err, b"err1\nerr2\n");
    assert_eq!(last, Reply::Exited(0));
}

#[test]
fn ten_megabytes_of_output() {
    let data: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 251) as u8).collect();
    let path = temp_file(&data);
    let (out, err, last) = run(Exec {
        argv: argv(&["cat", path.to_str().unwrap()]),
        ..Exec::default()
    });
    let _ = std::fs::remove_file(&path);
    assert_eq!(last, Reply::Exited(0));
    assert!(err.is_empty());
    assert!(out == data, "{} of {} bytes", out.len(), data.len());
}

#[test]
fn stdin_flows_through_cat_both_ways_at_once() {
    let data: Vec<u8> = (0..10 << 20).map(|i: u32| (i % 253) as u8).collect();
    let mut session = Session::exec(Exec {
        argv: argv(&["cat"]),
        stdin: true,
        ..Exec::default()
    });
    let mut writer = session.host.try_clone().unwrap();
    let input = data.clone();
    let feeder = thread::spawn(move || {
        for chunk in input.chunks(frame::MAX_CHUNK) {
            frame::write_request(&mut writer, &Request::Stdin(chunk.to_vec())).unwrap();
        }
        frame::write_request(&mut writer, &Request::StdinEof).unwrap();
    });
    let (out, _, last) = session.collect();
    feeder.join().unwrap();
    assert_eq!(last, Reply::Exited(0));
    assert!(out == data, "{} of {} bytes", out.len(), data.len());
    session.finish();
}

#[test]
fn without_stdin_the_command_reads_dev_null() {
    let (out, _, last) = run(Exec {
        argv: argv(&["cat"]),
        ..Exec::default()
    });
    assert_eq!((out, last), (Vec::new(), Reply::Exited(0)));
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let started = Instant::now();
    let mut exec = sh("sleep 100 & echo $!; sleep 100");
    exec.timeout_ms = Some(300);
    let (out, _, last) = run(exec);
    assert_eq!(last, Reply::TimedOut { timeout_ms: 300 });
    assert!(started.elapsed() < Duration::from_secs(20));
    let background: libc::pid_t = String::from_utf8(out).unwrap().trim().parse().unwrap();
    assert!(
        dead(background),
        "the background sleep {background} survived"
    );
}

#[test]
fn leftover_children_are_killed_when_the_main_process_exits() {
    let started = Instant::now();
    let (out, _, last) = run(sh("sleep 100 & echo $!"));
    assert_eq!(last, Reply::Exited(0));
    // The background sleep holds stdout open: the handler stops waiting for it.
    assert!(started.elapsed() < Duration::from_secs(20));
    let background: libc::pid_t = String::from_utf8(out).unwrap().trim().parse().unwrap();
    assert!(dead(background));
}

#[test]
fn the_host_going_away_kills_the_command() {
    let mut session = Session::exec(sh("echo $$; sleep 100"));
    let Reply::Started { pid } = session.recv() else {
        panic!("no Started")
    };
    assert!(matches!(session.recv(), Reply::Stdout(_)));
    drop(session.host);
    assert_eq!(session.server.join().unwrap().unwrap(), Outcome::Done);
    assert!(dead(pid));
}

#[test]
fn environment_and_working_directory() {
    let mut exec = sh("echo \"$FOO $HOME $LANG\"; pwd");
    exec.env = argv(&["FOO=bar", "HOME=/elsewhere"]);
    let (out, _, _) = run(exec.clone());
    assert_eq!(out, b"bar /elsewhere C.UTF-8\n/\n");
    exec.cwd = Some(b"/tmp".to_vec());
    let (out, _, _) = run(exec.clone());
    assert!(
        out.ends_with(b"\n/tmp\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // PATH from the request is the one searched.
    let mut exec = Exec {
        argv: argv(&["sh", "-c", "exit 4"]),
        env: argv(&["PATH=/nonexistent"]),
        ..Exec::default()
    };
    let (_, _, last) = run(exec.clone());
    assert!(
        matches!(
            last,
            Reply::Error {
                kind: ErrorKind::NotFound,
                ..
            }
        ),
        "{last:?}"
    );
    exec.env = argv(&["PATH=/bin:/usr/bin"]);
    assert_eq!(run(exec).2, Reply::Exited(4));
}

#[test]
fn start_failures_are_reported() {
    let failure = |exec: Exec| match run(exec) {
        (_, _, Reply::Error { kind, message }) => (kind, message),
        other => panic!("{other:?}"),
    };
    let (kind, message) = failure(Exec {
        argv: argv(&["nodeos-no-such-command"]),
        ..Exec::default()
    });
    assert_eq!(kind, ErrorKind::NotFound);
    assert_eq!(message, "nodeos-no-such-command: No such file or directory");
    let not_executable = temp_file(b"data");
    let (kind, _) = failure(Exec {
        argv: vec![not_executable.as_os_str().as_encoded_bytes().to_vec()],
        ..Exec::default()
    });
    let _ = std::fs::remove_file(&not_executable);
    assert_eq!(kind, ErrorKind::NotExecutable);
    let (kind, message) = failure(Exec {
        argv: argv(&["true"]),
        cwd: Some(b"/nonexistent-dir".to_vec()),
        ..Exec::default()
    });
    assert_eq!(kind, ErrorKind::BadCwd);
    assert!(message.starts_with("chdir /nonexistent-dir: "), "{message}");
    let (kind, _) = failure(Exec::default());
    assert_eq!(kind, ErrorKind::Protocol);
    let (kind, _) = failure(Exec {
        argv: argv(&["true"]),
        env: argv(&["NOEQUALS"]),
        ..Exec::default()
    });
    assert_eq!(kind, ErrorKind::Protocol);
    let (kind, _) = failure(Exec {
        argv: vec![b"a\0b".to_vec()],
        ..Exec::default()
    });
    assert_eq!(kind, ErrorKind::ExecFailed);
}

fn expect_error(session: &mut Session, expected: ErrorKind) {
    match session.recv() {
        Reply::Error { kind, .. } => assert_eq!(kind, expected),
        other => panic!("{other:?}"),
    }
}

#[test]
fn handshake_errors() {
    let mut session = Session::start();
    session.send(&Request::Hello { version: 99 });
    expect_error(&mut session, ErrorKind::Version);
    session.finish();

    let mut session = Session::start();
    session.send(&Request::Exec(sh("exit 0")));
    expect_error(&mut session, ErrorKind::Protocol);
    session.finish();

    let mut session = Session::start();
    session.hello();
    session.send(&Request::StdinEof);
    expect_error(&mut session, ErrorKind::Protocol);
    session.finish();

    // Closing before anything is no error.
    let session = Session::start();
    drop(session.host);
    assert_eq!(session.server.join().unwrap().unwrap(), Outcome::Done);
}

#[test]
fn malformed_frames_get_a_protocol_error() {
    let garbage: [&[u8]; 4] = [
        &[2, 0, 0, 0, 0x42, 0],          // unknown type
        &[0, 0, 0, 0],                   // empty frame
        &[0xff, 0xff, 0xff, 0x7f, 0x01], // far too long
        &[3, 0, 0, 0, 0x01, 1, 2],       // short Hello
    ];
    for bytes in garbage {
        let mut session = Session::start();
        session.host.write_all(bytes).unwrap();
        expect_error(&mut session, ErrorKind::Protocol);
        session.finish();
    }
    // Garbage while a command runs: the error, and the command is killed.
    let mut session = Session::exec(sh("echo $$; sleep 100"));
    let Reply::Started { pid } = session.recv() else {
        panic!("no Started")
    };
    session.host.write_all(&[1, 0, 0, 0, 0x99]).unwrap();
    loop {
        match session.recv() {
            Reply::Stdout(_) => {}
            Reply::Error { kind, .. } => {
                assert_eq!(kind, ErrorKind::Protocol);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    session.finish();
    assert!(dead(pid));
    // A truncated frame at the end of the connection.
    let mut session = Session::start();
    session.host.write_all(&[9, 0, 0, 0, 0x01]).unwrap();
    session.host.shutdown(std::net::Shutdown::Write).unwrap();
    expect_error(&mut session, ErrorKind::Protocol);
    session.finish();
}

#[test]
fn poweroff_is_passed_to_the_caller() {
    let mut session = Session::start();
    session.hello();
    session.send(&Request::Poweroff);
    assert_eq!(session.server.join().unwrap().unwrap(), Outcome::Poweroff);
}

#[test]
fn base_environment_of_the_node_user_with_the_hosts_entries() {
    let user = User {
        name: "node".into(),
        uid: 1000,
        gid: 1000,
        home: PathBuf::from("/home/node"),
        shell: "/usr/bin/node".into(),
    };
    let cfg = Config::for_user(
        &user,
        vec![1000, 29],
        &[
            EnvVar::new("PATH", "/override").unwrap(),
            EnvVar::new("EXTRA", "1").unwrap(),
        ],
    );
    let env: Vec<String> = cfg
        .base_env
        .iter()
        .map(|e| String::from_utf8(e.clone()).unwrap())
        .collect();
    assert_eq!(
        env,
        [
            "HOME=/home/node",
            "USER=node",
            "LOGNAME=node",
            "LANG=C.UTF-8",
            "NODE_COMPILE_CACHE=/run/nodeos/compile-cache",
            // The kernel command line's entries replace the defaults of the same name.
            "PATH=/override",
            "EXTRA=1",
            "TERM=dumb"
        ]
    );
    assert_eq!((cfg.uid, cfg.gid, cfg.groups), (1000, 1000, vec![1000, 29]));
}

#[test]
fn request_env_overrides_by_name() {
    let base = argv(&["A=1", "AB=2", "PATH=/bin"]);
    let merged = command::merge_env(&base, &argv(&["A=9", "C=", "PATH=/x:/y"])).unwrap();
    assert_eq!(merged, argv(&["AB=2", "A=9", "C=", "PATH=/x:/y"]));
    assert!(command::merge_env(&base, &argv(&["=x"])).is_err());
}

impl Session {
    /// A connection through the channel multiplexer (the virtio-serial transport), its two
    /// ends linked by a socket pair, its sockets in `dir`.
    fn through_mux(dir: &Path) -> Self {
        use contract::hybrid;
        use contract::mux::{self, Role};
        use std::os::unix::net::UnixListener;

        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        let (host_link, guest_link) = UnixStream::pair().unwrap();
        let host_path = dir.join("agent.sock");
        let guest_path = dir.join("vsock");
        for (link, path, role) in [
            (host_link, host_path.clone(), Role::Host),
            (guest_link, guest_path.clone(), Role::Guest),
        ] {
            let listener = UnixListener::bind(&path).unwrap();
            thread::spawn(move || mux::run(link.into(), listener, path, role, None));
        }
        // The agent's side: one connection, served.
        let agent = UnixListener::bind(hybrid::host_listener_path(&guest_path, 1024)).unwrap();
        let server = thread::spawn(move || {
            let (conn, _) = agent.accept().unwrap();
            serve(conn.into(), &config("/"))
        });
        let host = hybrid::connect(&host_path, 1024).unwrap();
        host.set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        Session { host, server }
    }
}

fn mux_dir(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nodeos-agent-{test}-{}", std::process::id()))
}

#[test]
fn through_the_channel_multiplexer() {
    let dir = mux_dir("mux");
    let mut session = Session::through_mux(&dir);
    session.hello();
    session.send(&Request::Exec(Exec {
        argv: argv(&["sh", "-c", "cat; echo done >&2; exit 5"]),
        stdin: true,
        ..Exec::default()
    }));
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 241) as u8).collect();
    let mut writer = session.host.try_clone().unwrap();
    let input = data.clone();
    let feeder = thread::spawn(move || {
        for chunk in input.chunks(frame::MAX_CHUNK) {
            frame::write_request(&mut writer, &Request::Stdin(chunk.to_vec())).unwrap();
        }
        frame::write_request(&mut writer, &Request::StdinEof).unwrap();
    });
    let (out, err, last) = session.collect();
    feeder.join().unwrap();
    assert!(out == data, "{} of {} bytes", out.len(), data.len());
    assert_eq!((err, last), (b"done\n".to_vec(), Reply::Exited(5)));
    session.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A command that exits while the host still sends its stdin, through the multiplexer: the
/// host gets the exit status all the same (the agent reads and drops the rest before it
/// closes: a connection closed with unread bytes is torn down, its reply with it).
#[test]
fn the_end_reaches_a_host_still_sending_stdin() {
    let dir = mux_dir("linger");
    for _ in 0..10 {
        let mut session = Session::through_mux(&dir);
        session.hello();
        session.send(&Request::Exec(Exec {
            stdin: true,
            ..sh("exit 3")
        }));
        let mut writer = session.host.try_clone().unwrap();
        let feeder = thread::spawn(move || {
            let chunk = vec![7u8; frame::MAX_CHUNK];
            for _ in 0..(8 << 20) / frame::MAX_CHUNK {
                if frame::write_request(&mut writer, &Request::Stdin(chunk.clone())).is_err() {
                    return;
                }
            }
        });
        let (_, _, last) = session.collect();
        assert_eq!(last, Reply::Exited(3));
        drop(session.host);
        feeder.join().unwrap();
        assert_eq!(session.server.join().unwrap().unwrap(), Outcome::Done);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `Export`: the folder's tree in `TreeData` chunks, then `TreeEnd`; a folder that cannot be
/// read is an `Export` error.
#[test]
fn export_sends_a_tree_then_its_end() {
    let file = temp_file(b"exported");
    let dir = file.with_extension("dir");
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(&file, dir.join("f")).unwrap();
    let mut session = Session::start();
    session.hello();
    session.send(&Request::Export {
        path: dir.as_os_str().as_encoded_bytes().to_vec(),
    });
    let mut decoder = contract::tree::TreeDecoder::new();
    let mut records = Vec::new();
    loop {
        match session.recv() {
            Reply::TreeData(chunk) => {
                assert!(chunk.len() <= frame::MAX_CHUNK);
                decoder.push(&chunk).unwrap();
                while let Some(r) = decoder.next_record().unwrap() {
                    records.push(format!("{r:?}"));
                }
            }
            Reply::TreeEnd => break,
            other => panic!("{other:?}"),
        }
    }
    decoder.finish().unwrap();
    assert_eq!(session.finish(), Outcome::Done);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records[1].contains("[101, 120, 112"), "{records:?}"); // "exp..."

    let mut session = Session::start();
    session.hello();
    session.send(&Request::Export {
        path: b"/nonexistent-export".to_vec(),
    });
    let (_, _, last) = session.collect();
    assert_eq!(
        last,
        Reply::Error {
            kind: ErrorKind::Export,
            message: "open /nonexistent-export: No such file or directory".into()
        }
    );
    session.finish();
}

#[test]
fn a_terminal_carries_both_streams_and_takes_its_size() {
    let (out, err, last) = run(Exec {
        argv: argv(&["sh", "-c", "tty; stty size; echo to-stderr >&2"]),
        tty: Some(WinSize { rows: 24, cols: 91 }),
        ..Exec::default()
    });
    let out = String::from_utf8(out).unwrap();
    assert_eq!(last, Reply::Exited(0));
    assert!(err.is_empty(), "{err:?}");
    assert!(out.starts_with("/dev/pts/"), "{out}");
    // The terminal's line discipline turns each \n into \r\n.
    assert!(out.contains("24 91\r\nto-stderr\r\n"), "{out}");
}

#[test]
fn a_resize_reaches_the_command_as_sigwinch() {
    let mut session = Session::exec(Exec {
        argv: argv(&[
            "sh",
            "-c",
            "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done",
        ]),
        tty: Some(WinSize { rows: 24, cols: 80 }),
        ..Exec::default()
    });
    let mut out = Vec::new();
    while !out.ends_with(b"ready\r\n") {
        match session.recv() {
            Reply::Started { .. } => {}
            Reply::Stdout(data) => out.extend(data),
            other => panic!("{other:?}"),
        }
    }
    session.send(&Request::Resize(WinSize {
        rows: 50,
        cols: 132,
    }));
    let (rest, _, last) = session.collect();
    assert_eq!(last, Reply::Exited(0));
    assert_eq!(String::from_utf8(rest).unwrap(), "50 132\r\n");
    session.finish();
}

/// A container root holding a static busybox as `/bin/sh`, an `/etc` without `passwd`, and a
/// symlink that points out of it by an absolute path.
fn container_root() -> PathBuf {
    let root = temp_file(b"");
    std::fs::remove_file(&root).unwrap();
    for dir in ["bin", "etc", "work"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("etc/hostname"), "inside\n").unwrap();
    std::os::unix::fs::symlink("/etc", root.join("escape")).unwrap();
    root
}

/// Whether this test process may make mount namespaces (root, outside a locked-down sandbox).
fn can_unshare_mounts() -> bool {
    std::process::Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_container_process_sees_only_its_root_as_its_user_with_its_env() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    let root = container_root();
    let script = "echo /*; \
        [ -e /escape/passwd ] && echo escaped; cat /escape/hostname; \
        id -u; id -g; id -G; pwd; env | sort; \
        [ -c /dev/null ] && [ -c /dev/urandom ] && echo devices; \
        cat /proc/self/mountinfo | wc -l";
    let (out, err, last) = run(Exec {
        argv: argv(&["sh", "-c", script]),
        env: vec![b"PATH=/bin".to_vec(), b"ONLY=this".to_vec()],
        cwd: Some(b"/work".to_vec()),
        container: Some(Box::new(Container {
            root: root.as_os_str().as_bytes().to_vec(),
            uid: 4321,
            gid: 4322,
            groups: vec![4323],
            ..Container::default()
        })),
        ..Exec::default()
    });
    let out = String::from_utf8(out).unwrap();
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(last, Reply::Exited(0), "{}", String::from_utf8_lossy(&err));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "/bin /dev /escape /etc /proc /sys /work", "{out}");
    assert_eq!(lines[1], "inside", "{out}");
    assert_eq!(
        &lines[2..6],
        ["4321", "4322", "4322 4323", "/work"],
        "{out}"
    );
    // busybox's env adds PWD and SHLVL, as a shell does; nothing of the agent's.
    assert!(
        !out.contains("HOME=") && !out.contains("LANG="),
        "the agent's environment leaked: {out}"
    );
    assert!(out.contains("ONLY=this\nPATH=/bin\n"), "{out}");
    assert!(out.contains("devices\n"), "{out}");
}

#[test]
fn a_containers_own_mounts_are_in_its_view_only() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    use contract::mount::{Mount, MountKind};
    use std::os::unix::fs::PermissionsExt;
    let shared = temp_file(b"");
    std::fs::remove_file(&shared).unwrap();
    std::fs::create_dir(&shared).unwrap();
    let folder = shared.join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(folder.join("f"), "in the folder\n").unwrap();
    let file = shared.join("file");
    std::fs::write(&file, "a file\n").unwrap();
    let bind = |source: &Path, destination: &str, read_only| Mount {
        destination: destination.into(),
        kind: MountKind::Bind {
            source: source.as_os_str().as_bytes().to_vec(),
        },
        read_only,
        ..Mount::default()
    };
    let mounts = vec![
        // Through the image's symlink /escape -> /etc: inside the root, made there.
        bind(&folder, "/escape/data", true),
        bind(&file, "/work/deep/file", false),
        Mount {
            destination: b"/scratch".to_vec(),
            kind: MountKind::Tmpfs {
                options: b"size=1m,mode=1777".to_vec(),
            },
            nodev: true,
            ..Mount::default()
        },
    ];
    let script = "cat /etc/data/f; echo no > /etc/data/g || echo refused; cat /work/deep/file; \
        echo yes > /scratch/z && cat /scratch/z; grep ' /scratch ' /proc/mounts";
    let (root, mut exec) = in_container(script, Vec::new());
    exec.container.as_mut().unwrap().mounts = mounts;
    let (out, err, last) = run(exec);
    let out = String::from_utf8(out).unwrap();
    let err = String::from_utf8_lossy(&err).into_owned();
    let made = (
        root.join("etc/data").is_dir(),
        root.join("work/deep/file").is_file(),
    );
    let _ = std::fs::remove_dir_all(&root);
    let wrote = folder.join("g").exists();
    let _ = std::fs::remove_dir_all(&shared);
    assert_eq!(last, Reply::Exited(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["in the folder", "refused", "a file", "yes"],
        "{out}{err}"
    );
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(
        lines[4].starts_with("tmpfs /scratch tmpfs rw,nodev,") && lines[4].contains("size=1024k"),
        "{out}"
    );
    assert!(!wrote);
    // The mount points were made in the container's root, the guest's own tree untouched.
    assert_eq!(made, (true, true));
    assert!(!Path::new("/escape").exists() && !Path::new("/etc/data").exists());
}

/// The capability lines and `NoNewPrivs` of a container process of `uid` with `caps`.
fn capabilities_in_container(uid: u32, caps: Capabilities) -> Vec<String> {
    let script = "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs):' /proc/self/status";
    let (root, mut exec) = in_container(script, Vec::new());
    let container = exec.container.as_mut().unwrap();
    container.uid = uid;
    container.capabilities = Some(caps);
    container.no_new_privileges = true;
    let (out, err, last) = run(exec);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(last, Reply::Exited(0), "{}", String::from_utf8_lossy(&err));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn a_containers_capabilities_are_its_specs() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    // CAP_KILL (5) and CAP_NET_BIND_SERVICE (10); inheritable beyond the bounding set is
    // left out, as the kernel would refuse it.
    let caps = Capabilities {
        bounding: 1 << 5 | 1 << 10,
        effective: 1 << 5 | 1 << 10,
        permitted: 1 << 5 | 1 << 10,
        inheritable: 1 << 10 | 1 << 21,
        ambient: 0,
    };
    // Root: what the bounding set allows, and no more.
    assert_eq!(
        capabilities_in_container(0, caps),
        [
            "CapInh: 0000000000000400",
            "CapPrm: 0000000000000420",
            "CapEff: 0000000000000420",
            "CapBnd: 0000000000000420",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 1"
        ]
    );
    // Another user keeps across its exec only the ambient ones.
    let ambient = Capabilities {
        ambient: 1 << 10,
        ..caps
    };
    assert_eq!(
        capabilities_in_container(4321, ambient),
        [
            "CapInh: 0000000000000400",
            "CapPrm: 0000000000000400",
            "CapEff: 0000000000000400",
            "CapBnd: 0000000000000420",
            "CapAmb: 0000000000000400",
            "NoNewPrivs: 1"
        ]
    );
}

#[test]
fn a_containers_devices_are_its_devs_and_its_masked_paths_are_hidden() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    use contract::mount::{Mount, MountKind};
    let path = |destination: &str, kind| Mount {
        destination: destination.into(),
        kind,
        ..Mount::default()
    };
    // Root, with every capability (CAP_MKNOD among them); paths this kernel lacks are
    // passed over.
    let script =
        "mknod /dev/blk b 7 0 && { cat /dev/blk >/dev/null 2>&1 && echo read || echo refused; }; \
        mknod /work/blk b 7 0 && { cat /work/blk >/dev/null 2>&1 && echo read || echo refused; }; \
        wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; \
        grep -c ' /proc/sys ro,' /proc/self/mountinfo";
    let (root, mut exec) = in_container(script, Vec::new());
    let container = exec.container.as_mut().unwrap();
    container.uid = 0;
    container.gid = 0;
    container.mounts = vec![
        path("/proc/timer_list", MountKind::Mask),
        path("/sys/firmware", MountKind::Mask),
        path("/proc/no-such-file", MountKind::Mask),
        path("/proc/sys", MountKind::ReadOnly),
        path("/proc/no-such-folder", MountKind::ReadOnly),
        Mount {
            destination: b"/work".to_vec(),
            kind: MountKind::Tmpfs {
                options: Vec::new(),
            },
            ..Mount::default()
        },
    ];
    let (out, err, last) = run(exec);
    let _ = std::fs::remove_dir_all(&root);
    let out = String::from_utf8(out).unwrap();
    assert_eq!(
        last,
        Reply::Exited(0),
        "{out}{}",
        String::from_utf8_lossy(&err)
    );
    assert_eq!(out, "refused\nrefused\n0\n0\n1\n");
}

/// A seccomp filter that fails mkdir(2) and mkdirat(2) with EACCES and allows the rest.
fn no_mkdir() -> contract::seccomp::Filter {
    let insn = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let ret_errno = 0x0005_0000 | libc::EACCES as u32;
    contract::seccomp::Filter::new(&[
        insn(0x20, 0, 0, 0),
        insn(0x15, 2, 0, libc::SYS_mkdir as u32),
        insn(0x15, 1, 0, libc::SYS_mkdirat as u32),
        insn(0x06, 0, 0, 0x7fff_0000),
        insn(0x06, 0, 0, ret_errno),
    ])
    .unwrap()
}

#[test]
fn a_containers_seccomp_filter_is_installed_with_or_without_new_privileges() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    // A folder anyone may make folders in: what fails is the filter's.
    let scratch = contract::mount::Mount {
        destination: b"/scratch".to_vec(),
        kind: contract::mount::MountKind::Tmpfs {
            options: b"mode=1777".to_vec(),
        },
        ..contract::mount::Mount::default()
    };
    let script = "mkdir /scratch/made 2>/dev/null || echo denied; \
        grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\t' ' '";
    for (uid, no_new_privileges) in [(4321, true), (0, false)] {
        let (root, mut exec) = in_container(script, Vec::new());
        let container = exec.container.as_mut().unwrap();
        container.uid = uid;
        container.no_new_privileges = no_new_privileges;
        container.seccomp = Some(no_mkdir());
        container.mounts = vec![scratch.clone()];
        let (out, err, last) = run(exec);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(last, Reply::Exited(0), "{}", String::from_utf8_lossy(&err));
        let nnp = u8::from(no_new_privileges);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("denied\nNoNewPrivs: {nnp}\nSeccomp: 2\n"),
            "uid {uid}"
        );
    }
}

#[test]
fn a_missing_container_root_is_one_clear_error() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    let (_, _, last) = run(Exec {
        argv: argv(&["sh"]),
        container: Some(Box::new(Container {
            root: b"/nonexistent-container-root".to_vec(),
            ..Container::default()
        })),
        ..Exec::default()
    });
    assert_eq!(
        last,
        Reply::Error {
            kind: ErrorKind::ExecFailed,
            message: "entering the container root /nonexistent-container-root: mount \
                      /nonexistent-container-root on /nonexistent-container-root: No such file \
                      or directory"
                .into()
        }
    );
}

/// A container of [`container_root`] running `script` as uid 4321 with `rlimits`.
fn in_container(script: &str, rlimits: Vec<Rlimit>) -> (PathBuf, Exec) {
    let root = container_root();
    let exec = Exec {
        argv: argv(&["sh", "-c", script]),
        env: vec![b"PATH=/bin".to_vec()],
        container: Some(Box::new(Container {
            root: root.as_os_str().as_bytes().to_vec(),
            uid: 4321,
            gid: 4321,
            rlimits,
            ..Container::default()
        })),
        ..Exec::default()
    };
    (root, exec)
}

const NOFILE: u32 = libc::RLIMIT_NOFILE;

#[test]
fn a_containers_rlimits_are_set_before_it_runs() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    // Its hard limit the test's own, which needs no privilege to keep (raising it needs
    // CAP_SYS_RESOURCE, which the agent has in the guest).
    let mut own = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the rlimit structure `own`.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut own) }, 0);
    let hard = own.rlim_max;
    let limits = vec![
        Rlimit {
            resource: NOFILE,
            soft: 1000,
            hard,
        },
        Rlimit {
            resource: libc::RLIMIT_FSIZE,
            soft: UNLIMITED,
            hard: UNLIMITED,
        },
    ];
    let (root, exec) = in_container("ulimit -S -n; ulimit -H -n; ulimit -f; id -u", limits);
    let (out, err, last) = run(exec);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(last, Reply::Exited(0), "{}", String::from_utf8_lossy(&err));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("1000\n{hard}\nunlimited\n4321\n")
    );
}

#[test]
fn a_limit_linux_refuses_is_one_clear_error_and_nothing_runs() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    let mark = temp_file(b"");
    std::fs::remove_file(&mark).unwrap();
    let script = format!("touch {}", mark.display());
    // Refused before the fork: the soft limit above the hard one.
    let backwards = vec![Rlimit {
        resource: NOFILE,
        soft: 5,
        hard: 4,
    }];
    let (root, exec) = in_container(&script, backwards);
    let (_, _, last) = run(exec);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(
        last,
        Reply::Error {
            kind: ErrorKind::ExecFailed,
            message: "a resource limit: RLIMIT_NOFILE 5/4: the soft limit is above the hard one"
                .into()
        }
    );
    // Refused by the kernel in the child: more descriptors than fs.nr_open allows.
    let too_many = vec![Rlimit {
        resource: NOFILE,
        soft: 1 << 40,
        hard: 1 << 40,
    }];
    let (root, exec) = in_container(&script, too_many);
    let (_, _, last) = run(exec);
    let _ = std::fs::remove_dir_all(&root);
    assert_eq!(
        last,
        Reply::Error {
            kind: ErrorKind::ExecFailed,
            message: "setting RLIMIT_NOFILE 1099511627776/1099511627776: Operation not permitted"
                .into()
        }
    );
    assert!(!mark.exists());
}

#[test]
fn a_containers_oom_kills_are_reported_while_it_runs() {
    if !can_unshare_mounts() {
        eprintln!("skipped: mount namespaces need root");
        return;
    }
    // The kernel's log is a FIFO the test writes records into, as /dev/kmsg gives them.
    let log = temp_file(b"");
    std::fs::remove_file(&log).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&log)
        .status()
        .unwrap();
    assert!(made.success());
    let mut cfg = config("/");
    cfg.kernel_log = log.clone();
    let mut session = Session::start_with(cfg);
    session.hello();
    let (root, mut exec) = in_container("read line; echo $line", Vec::new());
    exec.stdin = true;
    session.send(&Request::Exec(exec));
    assert!(matches!(session.recv(), Reply::Started { .. }));
    // The agent opened the log before it started the command.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&log)
        .unwrap();
    writer
        .write_all(
            b"6,10,1,-;eth0: link up\n\
              3,11,2,-;Out of memory: Killed process 42 (node) total-vm:1024kB\n\
              \x20SUBSYSTEM=memory\n\
              14,12,3,-;Out of memory: Killed process 1 (init)\n",
        )
        .unwrap();
    // The log's end (the writer gone) ends its watch, not the command.
    drop(writer);
    assert_eq!(session.recv(), Reply::OomKilled { seq: 11, pid: 42 });
    session.send(&Request::Stdin(b"still here\n".to_vec()));
    let (out, _, last) = session.collect();
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_file(&log);
    assert_eq!(last, Reply::Exited(0));
    assert_eq!(out, b"still here\n");
    session.finish();
}
