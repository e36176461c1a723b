//! `-p/--publish`: a Node HTTP server in the guest reached from this host through a published
//! port, on the backend `auto` picks here (or `NODEOS_VM_TEST_BACKEND`): `run` on a restored
//! and on a cold-booted VM, `start --detach` until it is stopped; a busy host port and bad
//! values refused before anything is built or booted.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ANSWER: &str = "hi from the guest";

/// `run -p 127.0.0.1:PORT:53/udp` of a Node UDP echo server: a datagram from this host's
/// loopback reaches the guest's port 53 (as the guest's user) and the answer comes back, from
/// several clients; the guest's answers reach nothing else of the host's loopback (the guard);
/// TCP on the same port is not published.
#[test]
fn run_publishes_a_udp_port() {
    let runtime = tempfile::tempdir().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("127.0.0.1:{port}:53/udp");
    let mut args = vec!["run"];
    let options = vm_options();
    args.extend(options.iter().map(String::as_str));
    args.extend(["-p", &publish, "--", "node", "-e"]);
    // Echoes each datagram, and also sends one to port 9 of its sender's address (another
    // port of the host's loopback, which it must not reach); exits after two.
    let code = "let left = 2; const s = require('dgram').createSocket('udp4');
        s.on('message', (m, r) => {
          s.send('echo ' + m, r.port, r.address);
          s.send('escape', 9, r.address);
          if (--left === 0) setTimeout(() => process.exit(0), 500);
        });
        s.bind(53, () => console.log('listening on', s.address().port, 'as uid', process.getuid()))";
    args.push(code);
    let mut vm = common::spawn_in(runtime.path(), &args);
    let _watchdog = common::Watchdog::new(vm.id(), common::BOOT_LIMIT);
    let stdout = Stdout::of(&mut vm);
    let listening = stdout.listening();
    // Port 9 of the loopback: what must get nothing.
    let discard = UdpSocket::bind("127.0.0.1:9").ok();
    let ask = |datagram: &str| {
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        client
            .send_to(datagram.as_bytes(), ("127.0.0.1", port))
            .unwrap();
        let mut buf = [0; 64];
        let (n, from) = client.recv_from(&mut buf).ok()?;
        Some((text(&buf[..n]), from.port()))
    };
    let answers = listening.as_ref().map(|_| (ask("one"), ask("two")));
    let out = vm.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        listening.as_deref(),
        Some("listening on 53 as uid 1000"),
        "{stderr}"
    );
    let (one, two) = answers.unwrap();
    assert_eq!(one, Some(("echo one".into(), port)), "{stderr}");
    assert_eq!(two, Some(("echo two".into(), port)), "{stderr}");
    if let Some(discard) = discard {
        discard.set_nonblocking(true).unwrap();
        let mut buf = [0; 64];
        assert!(
            discard.recv_from(&mut buf).is_err(),
            "the guest reached another port of the host's loopback"
        );
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "TCP port {port} was published too"
    );
}

/// A port of this host's loopback that nothing listens on (bound, then closed).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `node -e` code: an HTTP server on the guest's `port` that answers `requests` requests with
/// [`ANSWER`] and exits; it says on stdout once it listens, and as whom.
fn server(port: u16, requests: u32) -> String {
    format!(
        "let left = {requests};
         const s = require('http').createServer((q, r) => {{
           r.end('{ANSWER}');
           if (--left === 0) s.close();
         }}).listen({port}, () => console.log('listening on', s.address().port, 'as uid', process.getuid()))"
    )
}

/// `GET /` from `addr`: the body of a 200 answer; `None` when the connection is refused, reset
/// or closed without one.
fn get(addr: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200 ").then(|| body.to_string())
}

/// The standard output of a process that runs [`server`], read as it comes.
struct Stdout(mpsc::Receiver<String>);

impl Stdout {
    fn of(child: &mut Child) -> Stdout {
        let (lines, receiver) = mpsc::channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        Stdout(receiver)
    }

    /// Waits for the server to listen (a published port accepts before that, and the guest's
    /// end of such a connection is lost: the host's client then waits for passt's handshake
    /// timeout, 10 s, and a reset): its line.
    fn listening(&self) -> Option<String> {
        self.0
            .recv_timeout(common::BOOT_LIMIT)
            .ok()
            .filter(|line| line.starts_with("listening"))
    }

    /// The rest, once the process has ended.
    fn rest(self) -> Vec<String> {
        self.0.into_iter().collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The VM options of every boot here: the backend, kernel and image under test.
fn vm_options() -> Vec<String> {
    common::host_program("passt", "passt");
    let (kernel, rootfs) = common::artifacts();
    vec![
        "--backend".into(),
        common::backend(),
        "--kernel".into(),
        kernel.display().to_string(),
        "--rootfs".into(),
        rootfs.display().to_string(),
    ]
}

/// An address of this host other than the loopback (the one its default route leaves from),
/// when it has one.
fn outside_address() -> Option<Ipv4Addr> {
    let probe = UdpSocket::bind("0.0.0.0:0").ok()?;
    // No datagram is sent: connecting a UDP socket only picks the route.
    probe.connect("192.0.2.1:9").ok()?;
    match probe.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// `run -p PORT:80 -- node server.js` with `extra` options: the server, which listens on a
/// privileged port as the guest's user, answers this host once and exits, and so does `run`;
/// the port is closed with the VM.
fn run_serves_one_request(extra: &[&str]) {
    let runtime = tempfile::tempdir().unwrap();
    let port = free_port();
    let publish = format!("{port}:80");
    let mut args = vec!["run"];
    let options = vm_options();
    args.extend(options.iter().map(String::as_str));
    args.extend(extra);
    args.extend(["-p", &publish, "--", "node", "-e"]);
    let code = server(80, 1);
    args.push(&code);
    let mut vm = common::spawn_in(runtime.path(), &args);
    let _watchdog = common::Watchdog::new(vm.id(), common::BOOT_LIMIT);
    let started = Instant::now();
    let stdout = Stdout::of(&mut vm);
    let listening = stdout.listening();
    let ready = started.elapsed();
    let body = listening
        .as_ref()
        .and_then(|_| get(SocketAddr::from(([127, 0, 0, 1], port))));
    let answered = started.elapsed() - ready;
    let out = vm.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        listening.as_deref(),
        Some("listening on 80 as uid 1000"),
        "{stderr}"
    );
    assert_eq!(body.as_deref(), Some(ANSWER), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.rest(), Vec::<String>::new(), "{stderr}");
    eprintln!(
        "run {extra:?}: listening {ready:?} after nodeos-vm started; answered in {answered:?}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open after the VM ended"
    );
}

#[test]
fn run_publishes_a_port_of_a_restored_vm() {
    run_serves_one_request(&[]);
}

#[test]
fn run_publishes_a_port_of_a_cold_booted_vm() {
    run_serves_one_request(&["--no-snapshot"]);
}

/// `start --detach -p 127.0.0.1:PORT:8080 -p 0.0.0.0:OTHER:8080`: a server started with `exec`
/// answers on both; the loopback's port is not on this host's other addresses; `stop` closes
/// both ports.
#[test]
fn a_detached_vm_publishes_its_ports_until_stopped() {
    let runtime = tempfile::tempdir().unwrap();
    let (port, every_address) = (free_port(), free_port());
    let on_loopback = format!("127.0.0.1:{port}:8080");
    let everywhere = format!("0.0.0.0:{every_address}:8080");
    let mut args = vec!["start", "--detach"];
    let options = vm_options();
    args.extend(options.iter().map(String::as_str));
    args.extend(["-p", &on_loopback, "-p", &everywhere]);
    let out = common::run_in(runtime.path(), &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    // `ps` lists them, as docker does.
    let ps = text(&common::run_in(runtime.path(), &["ps"]).stdout);
    let shown = format!("127.0.0.1:{port}->8080/tcp, 0.0.0.0:{every_address}->8080/tcp");
    assert!(ps.contains(&shown), "{ps}");

    let outside = outside_address();
    let requests = if outside.is_some() { 3 } else { 2 };
    let code = server(8080, requests);
    let mut exec = common::spawn_in(runtime.path(), &["exec", &id, "--", "node", "-e", &code]);
    let _watchdog = common::Watchdog::new(exec.id(), common::BOOT_LIMIT);
    let stdout = Stdout::of(&mut exec);
    let listening = stdout.listening();
    let loopback = Ipv4Addr::LOCALHOST;
    let first = get(SocketAddr::from((loopback, port)));
    let second = get(SocketAddr::from((loopback, every_address)));
    let third = outside.map(|ip| {
        // Published on 127.0.0.1 only: not there.
        assert!(
            TcpStream::connect((ip, port)).is_err(),
            "port {port} of 127.0.0.1 reached on {ip}"
        );
        get(SocketAddr::from((ip, every_address)))
    });
    let out = exec.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(
        listening.as_deref(),
        Some("listening on 8080 as uid 1000"),
        "{stderr}"
    );
    assert_eq!(first.as_deref(), Some(ANSWER), "{stderr}");
    assert_eq!(second.as_deref(), Some(ANSWER), "{stderr}");
    if let Some(third) = third {
        assert_eq!(third.as_deref(), Some(ANSWER), "{stderr}");
    } else {
        eprintln!("this host has no address besides the loopback: 0.0.0.0 checked on it only");
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    let out = common::run_in(runtime.path(), &["stop", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for port in [port, every_address] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open after stop"
        );
    }
}

/// A host port something listens on already: one line that names it and says what to do,
/// before anything is looked for (the kernel named here does not exist), and the listener
/// keeps its port.
#[test]
fn a_busy_host_port_is_one_line_and_boots_nothing() {
    let runtime = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let publish = format!("{port}:8080");
    let no_kernel = ["--kernel", "/nonexistent/vmlinux"];
    for command in [&["run"][..], &["start", "--detach"]] {
        let mut args = command.to_vec();
        args.extend(no_kernel);
        args.extend(["-p", &publish]);
        if command == ["run"] {
            args.extend(["--", "true"]);
        }
        let out = common::run_in(runtime.path(), &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{command:?}: {stderr}");
        assert_eq!(
            stderr,
            format!(
                "nodeos-vm: error: cannot publish 127.0.0.1:{port}:8080: host port \
                 127.0.0.1:{port} is already in use; stop what listens there or publish \
                 another host port\n"
            ),
            "{command:?}"
        );
    }
    let out = common::run_in(runtime.path(), &["ps", "--json"]);
    assert_eq!(text(&out.stdout).trim(), "[]", "a detached VM was left");
    let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    taken.accept().expect("the host's listener lost its port");
}

/// Bad `--publish` values are clap's errors, naming what is wrong; a TAP network cannot
/// publish.
#[test]
fn bad_publish_values_are_refused() {
    let runtime = tempfile::tempdir().unwrap();
    for (value, says) in [
        ("80", "write [HOST_IP:]HOST_PORT:GUEST_PORT"),
        ("70000:80", "host port \"70000\" is not a port (1-65535)"),
        ("a:b", "host port \"a\" is not a port"),
        ("8080:0", "guest port \"0\" is not a port"),
        ("localhost:8080:80", "\"localhost\" is not an IPv4 address"),
        (
            "5353:53/sctp",
            "SCTP ports are not published (TCP and UDP are)",
        ),
    ] {
        let out = common::run_in(runtime.path(), &["run", "-p", value, "--", "true"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{value}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        let clap = format!("error: invalid value '{value}' for '--publish <");
        assert!(first.starts_with(&clap), "{value}: {stderr}");
        assert!(first.contains(says), "{value}: {stderr}");
    }
    let out = common::run_in(
        runtime.path(),
        &["run", "--net", "tap:nodeos0", "-p", "8080:80", "--", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr),
        "nodeos-vm: error: --publish forwards ports through --net user; with --net \
         tap:nodeos0, forward them to the guest's address on this host yourself\n"
    );
    let port = free_port();
    let (first, again) = (format!("{port}:80"), format!("0.0.0.0:{port}:81"));
    let out = common::run_in(
        runtime.path(),
        &["run", "-p", &first, "-p", &again, "--", "true"],
    );
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr),
        format!("nodeos-vm: error: cannot publish {again}: host port {port} is published twice\n")
    );
}
