//! passt, user-mode networking without privileges: it gives the guest 10.0.2.15/24, answers
//! ARP and DHCP for the network, forwards DNS sent to 10.0.2.3 to the host's resolver, and,
//! only when the user opens the host's loopback ([`HostLoopback`]), maps the gateway 10.0.2.2
//! to it (connections to 10.0.2.2:P reach 127.0.0.1:P on the host; `--no-map-gw` otherwise).
//! Everything else leaves through the host's own sockets. Inbound, it listens on the host
//! addresses of the published ports ([`PublishedPort`], `-t ADDR/PORT:GUEST_PORT`) and makes
//! each connection there one to the guest's port.
//!
//! passt gets one end of a socket pair (`--fd`), so no socket path is involved, and exits when
//! its other end closes; it is killed and reaped with the device anyway, and dies with us. That
//! other end is not the VM's: a relay thread moves the frames between the VM's link and passt,
//! each of the guest's through the [`Guard`] first, which is what keeps the host's loopback
//! out of reach (guard.rs says why passt's options alone do not).

use std::collections::HashSet;
use std::io::{self, Read};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use contract::net;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::guard::{Guard, Verdict};
use super::{Link, Stream};
use crate::devices::lock;
use crate::host_packages::{self, HostPackageError};
use crate::seccomp::ThreadKind;
use crate::vm::{HostLoopback, Protocol, PublishedPort};

/// The MTU the guest uses (the kernel's default); passt offers it over DHCP too.
const MTU: u16 = 1500;
const PASST: &str = "passt";
/// The end of passt's stderr kept to explain why it stopped.
const STDERR_TAIL: usize = 4096;
/// How long a passt that closed its socket is given to exit, to report its status.
const EXIT_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    NotInstalled(#[from] HostPackageError),
    #[error("cannot create the socket pair for passt")]
    Socket(#[source] io::Error),
    #[error("cannot start {PASST}")]
    Spawn(#[source] io::Error),
    #[error("cannot start the {name} thread that serves {PASST}")]
    Thread {
        name: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot publish {port}: host port {} is already in use; stop what listens there or \
         publish another host port",
        port.host
    )]
    PortBusy { port: PublishedPort },
    #[error("cannot publish {port}: cannot listen on {} on this host", port.host)]
    CannotListen {
        port: PublishedPort,
        #[source]
        source: io::Error,
    },
    #[error("cannot publish {port}: host port {} is published twice", port.host.port())]
    PublishedTwice { port: PublishedPort },
}

/// A running passt, killed and reaped when dropped.
pub struct Process {
    child: Child,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
}

impl Process {
    /// Why passt closed its socket: its exit status and last words.
    pub(super) fn exit_report(&mut self) -> String {
        let deadline = Instant::now() + EXIT_WAIT;
        let status = loop {
            match self.child.try_wait() {
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(status) => break status,
                Err(_) => break None,
            }
        };
        let tail = lock(&self.stderr_tail);
        let said = String::from_utf8_lossy(&tail);
        let said = said.trim();
        match (status, said.is_empty()) {
            (Some(s), true) => format!("passt exited ({s})"),
            (Some(s), false) => format!("passt exited ({s}): {said}"),
            (None, _) => "passt closed its socket".into(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Checks that passt can listen on the host side of every port of `published`, by binding
/// there (and closing at once), before anything is started: passt would exit on the first it
/// cannot bind, leaving the guest without a network. passt takes each host port of a protocol
/// once, whatever its address.
pub fn check_host_ports(published: &[PublishedPort]) -> Result<(), Error> {
    let mut seen = HashSet::new();
    for &port in published {
        if !seen.insert((port.protocol, port.host.port())) {
            return Err(Error::PublishedTwice { port });
        }
        // std sets SO_REUSEADDR on a TCP listener, as passt does: a port with connections
        // still in TIME_WAIT is free to both.
        let bound = match port.protocol {
            Protocol::Tcp => TcpListener::bind(port.host).map(drop),
            Protocol::Udp => UdpSocket::bind(port.host).map(drop),
        };
        match bound {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(Error::PortBusy { port }),
            Err(source) => return Err(Error::CannotListen { port, source }),
        }
    }
    Ok(())
}

/// passt's command line: our network, IPv4 only, talking over descriptor `fd`, the gateway
/// mapped to the host's loopback only when some of it is open or a UDP port is published, and
/// the published ports.
fn args(fd: i32, host_loopback: &HostLoopback, published: &[PublishedPort]) -> Vec<String> {
    let mut args: Vec<String> = ["--fd", &fd.to_string(), "--foreground", "--quiet"]
        .map(String::from)
        .into();
    for (option, value) in [
        ("--ipv4-only", None),
        // The guest's side of the network is the contract's (contract::net): passt's is the
        // same, so that DNS at 10.0.2.3 reaches the host's, and 10.0.2.2 is the gateway.
        ("--address", Some(net::GUEST_ADDRESS.to_string())),
        ("--netmask", Some(net::PREFIX.to_string())),
        ("--gateway", Some(net::GATEWAY.to_string())),
        ("--dns-forward", Some(net::DNS.to_string())),
        ("--mtu", Some(MTU.to_string())),
    ] {
        args.push(option.into());
        args.extend(value);
    }
    // Which ports of the loopback are open is the guard's to enforce; passt maps them all.
    // Unmapped, passt sends the guest's answers from a published UDP port to the gateway
    // itself rather than to the host client on the loopback that it presented as the gateway:
    // those flows are the guard's to keep apart too.
    let udp_published = published.iter().any(|p| p.protocol == Protocol::Udp);
    if *host_loopback == HostLoopback::Closed && !udp_published {
        args.push("--no-map-gw".into());
    }
    for port in published {
        args.push(
            match port.protocol {
                Protocol::Tcp => "--tcp-ports",
                Protocol::Udp => "--udp-ports",
            }
            .into(),
        );
        args.push(format!(
            "{}/{}:{}",
            port.host.ip(),
            port.host.port(),
            port.guest_port
        ));
    }
    args
}

/// Whether the threads that serve passt, which run in the process that starts it (one that
/// drains its stderr, the relay), install their seccomp filters (crate::seccomp): in a VMM
/// whose threads are filtered they do; in nodeos-vm, which starts passt for a VMM process and
/// whose own threads are not, they do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperThreads {
    Filtered,
    Unfiltered,
}

impl HelperThreads {
    /// Installs `kind`'s filter on the calling thread when these threads are filtered. A
    /// filter that cannot be installed here cannot be on the VM's own threads either, and
    /// those end the VM; this thread goes on meanwhile.
    fn filter(self, kind: ThreadKind) {
        if self == HelperThreads::Filtered {
            if let Err(e) = crate::seccomp::apply(kind) {
                tracing::error!("{e}");
            }
        }
    }
}

/// Starts passt for a guest that may reach `host_loopback` of the host's loopback, with
/// `published` forwarded to it; returns the VM's end of the link (frames go through the guard
/// to passt, and back), and passt, which runs until the [`Process`] is dropped.
pub fn spawn(
    host_loopback: &HostLoopback,
    published: &[PublishedPort],
    helpers: HelperThreads,
) -> Result<(UnixStream, Process), Error> {
    host_packages::ensure(PASST, "passt")?;
    // Once more, right before passt binds them: the caller's check was maybe long ago.
    check_host_ports(published)?;
    let (ours, theirs) = UnixStream::pair().map_err(Error::Socket)?;
    let (vm_end, relay_end) = UnixStream::pair().map_err(Error::Socket)?;
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(PASST);
    command
        .args(args(fd, host_loopback, published))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the child between fork and exec and only calls prctl(2) and
    // fcntl(2), which are async-signal-safe; `fd` is open there, inherited from us.
    unsafe {
        command.pre_exec(move || {
            // passt must not outlive us. (It drops the signal when it changes to an
            // unprivileged user, but then it still exits when our end of the socket closes.)
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Our socket is close-on-exec; passt's end must stay open across exec.
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(Error::Spawn)?;
    drop(theirs);
    let stderr = child.stderr.take().expect("stderr is piped");
    let stderr_tail = Arc::new(Mutex::new(Vec::new()));
    let tail = Arc::clone(&stderr_tail);
    let process = Process { child, stderr_tail };
    // Drained all along, so that passt never blocks on a full pipe.
    thread::Builder::new()
        .name(ThreadKind::PasstStderr.name().into())
        .spawn(move || {
            helpers.filter(ThreadKind::PasstStderr);
            keep_tail(stderr, &tail)
        })
        .map_err(|source| Error::Thread {
            name: ThreadKind::PasstStderr.name(),
            source,
        })?;
    let vm = Stream::new(relay_end, None).map_err(Error::Socket)?;
    let passt = Stream::new(ours, None).map_err(Error::Socket)?;
    let mut guard = Guard::new(host_loopback.clone(), published);
    // It ends when either side closes: the VM's link, or passt (killed with the Process).
    thread::Builder::new()
        .name(ThreadKind::PasstRelay.name().into())
        .spawn(move || {
            helpers.filter(ThreadKind::PasstRelay);
            if let Err(e) = relay(vm, passt, &mut guard) {
                tracing::debug!("passt relay: {e}");
            }
        })
        .map_err(|source| Error::Thread {
            name: ThreadKind::PasstRelay.name(),
            source,
        })?;
    Ok((vm_end, process))
}

/// Moves frames between the VM's end of the link and passt's until either closes, each of the
/// guest's through `guard` first (a refused one answered back to the guest), each of passt's
/// shown to it. Both directions are bounded by the streams' buffers: a side that does not read
/// stops what would fill them.
fn relay(mut vm: Stream, mut passt: Stream, guard: &mut Guard) -> io::Result<()> {
    loop {
        let now = Instant::now();
        // A guest frame may produce one for either side.
        while passt.can_queue() && vm.can_queue() {
            let Some(frame) = vm.recv()? else { break };
            match guard.check(frame, now) {
                Verdict::Pass => passt.queue(frame),
                Verdict::Drop => {}
                Verdict::Refuse(answer) => vm.queue(&answer),
            }
            vm.consume();
        }
        while vm.can_queue() {
            let Some(frame) = passt.recv()? else { break };
            guard.saw_from_passt(frame, now);
            vm.queue(frame);
            passt.consume();
        }
        let (vm_pending, passt_pending) = (!vm.flush()?, !passt.flush()?);
        let flags = |read: bool, write: bool| {
            let mut flags = PollFlags::empty();
            flags.set(PollFlags::POLLIN, read);
            flags.set(PollFlags::POLLOUT, write);
            flags
        };
        let mut fds = [
            PollFd::new(
                vm.as_fd(),
                flags(passt.can_queue() && vm.can_queue(), vm_pending),
            ),
            PollFd::new(passt.as_fd(), flags(vm.can_queue(), passt_pending)),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let gone = PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL;
        if fds
            .iter()
            .any(|fd| fd.revents().is_some_and(|r| r.intersects(gone)))
        {
            return Ok(());
        }
    }
}

/// Reads `from` to its end, keeping the last [`STDERR_TAIL`] bytes in `tail`.
fn keep_tail(mut from: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let mut tail = lock(tail);
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(STDERR_TAIL);
                tail.drain(..excess);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_is_mapped_only_when_some_of_the_loopback_is_open() {
        let closed = args(3, &HostLoopback::Closed, &[]);
        assert_eq!(closed[..2], ["--fd", "3"]);
        assert!(closed.iter().any(|a| a == "--no-map-gw"), "{closed:?}");
        for open in [HostLoopback::TcpPorts(vec![4873]), HostLoopback::All] {
            let args = args(3, &open, &[]);
            assert!(!args.iter().any(|a| a == "--no-map-gw"), "{args:?}");
        }
        let gateway = closed.iter().position(|a| a == "--gateway").unwrap();
        assert_eq!(closed[gateway + 1], "10.0.2.2");
        assert!(!closed.iter().any(|a| a == "--tcp-ports"), "{closed:?}");
    }

    #[test]
    fn published_ports_are_passts_tcp_and_udp_ports() {
        let port = |host: &str, guest_port, protocol| PublishedPort {
            host: host.parse().unwrap(),
            guest_port,
            protocol,
        };
        let tcp = [
            port("127.0.0.1:8080", 80, Protocol::Tcp),
            port("0.0.0.0:3000", 3000, Protocol::Tcp),
        ];
        let options = |args: &[String], option: &str| -> Vec<String> {
            args.windows(2)
                .filter(|w| w[0] == option)
                .map(|w| w[1].clone())
                .collect()
        };
        let args = args(3, &HostLoopback::Closed, &tcp);
        assert_eq!(
            options(&args, "--tcp-ports"),
            ["127.0.0.1/8080:80", "0.0.0.0/3000:3000"]
        );
        assert!(args.iter().any(|a| a == "--no-map-gw"), "{args:?}");
        // With a UDP port, passt maps the gateway (its answers reach the host's clients), and
        // the guard keeps the rest of the loopback closed.
        let both = [tcp[0], port("127.0.0.1:5353", 53, Protocol::Udp)];
        let args = super::args(3, &HostLoopback::Closed, &both);
        assert_eq!(options(&args, "--tcp-ports"), ["127.0.0.1/8080:80"]);
        assert_eq!(options(&args, "--udp-ports"), ["127.0.0.1/5353:53"]);
        assert!(!args.iter().any(|a| a == "--no-map-gw"), "{args:?}");
    }

    #[test]
    fn a_host_port_in_use_or_published_twice_is_refused() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = PublishedPort {
            host: match taken.local_addr().unwrap() {
                std::net::SocketAddr::V4(addr) => addr,
                other => panic!("{other}"),
            },
            guest_port: 80,
            protocol: Protocol::Tcp,
        };
        let err = check_host_ports(&[busy]).unwrap_err();
        assert!(matches!(err, Error::PortBusy { .. }), "{err}");
        let port = busy.host.port();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot publish 127.0.0.1:{port}:80: host port 127.0.0.1:{port} is already in \
                 use; stop what listens there or publish another host port"
            )
        );
        drop(taken);
        check_host_ports(&[busy]).unwrap();
        let elsewhere = PublishedPort {
            host: format!("0.0.0.0:{port}").parse().unwrap(),
            guest_port: 81,
            protocol: Protocol::Tcp,
        };
        let err = check_host_ports(&[busy, elsewhere]).unwrap_err();
        assert!(matches!(err, Error::PublishedTwice { .. }), "{err}");
        // The same port over UDP is another port, busy or not as UDP says.
        let udp = PublishedPort {
            protocol: Protocol::Udp,
            ..busy
        };
        check_host_ports(&[busy, udp]).unwrap();
        let taken = UdpSocket::bind(udp.host).unwrap();
        let err = check_host_ports(&[udp]).unwrap_err();
        assert!(matches!(err, Error::PortBusy { .. }), "{err}");
        drop(taken);
        // An address this host does not have.
        let foreign = PublishedPort {
            host: "192.0.2.1:8080".parse().unwrap(),
            guest_port: 80,
            protocol: Protocol::Tcp,
        };
        let err = check_host_ports(&[foreign]).unwrap_err();
        assert!(matches!(err, Error::CannotListen { .. }), "{err}");
    }
}
