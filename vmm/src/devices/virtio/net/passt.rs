//! passt, user-mode networking without privileges: it gives the guest 10.0.2.15/24, answers
//! ARP and DHCP for the network, maps the gateway 10.0.2.2 to the host's loopback (connections
//! to 10.0.2.2:P reach 127.0.0.1:P on the host) and forwards DNS sent to 10.0.2.3 to the host's
//! resolver. Everything else leaves through the host's own sockets.
//!
//! passt gets one end of a socket pair (`--fd`), so no socket path is involved, and exits when
//! our end closes; it is killed and reaped with the device anyway, and dies with us.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use contract::net;

use crate::devices::lock;
use crate::host_packages::{self, HostPackageError};
use crate::seccomp::ThreadKind;

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

/// passt's command line: our network, IPv4 only, talking over descriptor `fd`.
fn args(fd: i32) -> Vec<String> {
    let mut args: Vec<String> = ["--fd", &fd.to_string(), "--foreground", "--quiet"]
        .map(String::from)
        .into();
    for (option, value) in [
        ("--ipv4-only", None),
        // The guest's side of the network is the contract's (contract::net): passt's is the
        // same, so that 10.0.2.2 is the host's loopback and DNS at 10.0.2.3 reaches the host's.
        ("--address", Some(net::GUEST_ADDRESS.to_string())),
        ("--netmask", Some(net::PREFIX.to_string())),
        ("--gateway", Some(net::GATEWAY.to_string())),
        ("--dns-forward", Some(net::DNS.to_string())),
        ("--mtu", Some(MTU.to_string())),
    ] {
        args.push(option.into());
        args.extend(value);
    }
    args
}

/// Whether the thread that drains passt's stderr, which runs in the process that starts passt,
/// installs its seccomp filter (crate::seccomp): in a VMM whose threads are filtered it does;
/// in nodeos-vm, which starts passt for a VMM process and whose own threads are not, it does
/// not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StderrThread {
    Filtered,
    Unfiltered,
}

/// Starts passt on one end of a new socket pair; returns the other end, and passt, which runs
/// until the [`Process`] is dropped.
pub fn spawn(stderr_thread: StderrThread) -> Result<(UnixStream, Process), Error> {
    host_packages::ensure(PASST, "passt")?;
    let (ours, theirs) = UnixStream::pair().map_err(Error::Socket)?;
    let fd = theirs.as_raw_fd();
    let mut command = Command::new(PASST);
    command
        .args(args(fd))
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
    // Drained all along, so that passt never blocks on a full pipe.
    let drain = thread::Builder::new()
        .name("passt-stderr".into())
        .spawn(move || {
            // A filter that cannot be installed here cannot be on the VM's own threads either,
            // and those end the VM; this one keeps draining meanwhile.
            if stderr_thread == StderrThread::Filtered {
                if let Err(e) = crate::seccomp::apply(ThreadKind::PasstStderr) {
                    tracing::error!("{e}");
                }
            }
            keep_tail(stderr, &tail)
        });
    let process = Process { child, stderr_tail };
    drain.map_err(Error::Spawn)?;
    Ok((ours, process))
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
