//! The guest agent: runs the host's commands (`nodeos-vm run`), speaking the agent protocol
//! (contract::frame, docs/agent-protocol.md) on vsock port 1024.
//!
//! Forked by init as root when the kernel command line says `nodeos.agent=vsock|serial`. It
//! lives in a session of its own (the console's signals are not for it) and is a child
//! subreaper, so orphans of the commands are reaped here. Transports:
//! - `vsock`: AF_VSOCK, any CID, port [`AGENT_PORT`].
//! - `serial`: the channel multiplexer on the virtio-serial port (serial.rs), a child process;
//!   the agent listens on `/run/nodeos/vsock_1024`, root only.
//!
//! Once it listens, the agent says so: it connects to host port [`READY_PORT`], sends a
//! `Hello` reply and closes. Each connection is then served by its own forked handler
//! (handler.rs); a `Poweroff` request ends the VM from there (poweroff.rs); an `Export` request
//! sends a folder's tree (export.rs).

mod command;
mod export;
mod handler;
mod serial;
mod vsock;

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use contract::frame::{self, Reply};
use contract::params::{AgentTransport, EnvVar};
use contract::{hybrid, status, AGENT_PORT, HOST_CID, READY_PORT};

use crate::error::{Context, Error, Result};
use crate::init::user::User;
use crate::sys::{self, Fork};
use crate::{ports, poweroff};
use handler::{Config, Outcome};

/// What init opens for the agent before forking it.
enum Transport {
    /// The listening vsock socket.
    Vsock(OwnedFd),
    Serial(serial::Mux),
}

/// Where the agent accepts connections.
enum Listener {
    Vsock(OwnedFd),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<OwnedFd> {
        match self {
            Listener::Vsock(fd) => vsock::accept(fd.as_fd()),
            Listener::Unix(listener) => listener.accept().map(|(conn, _)| conn.into()),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Vsock(fd) => fd.as_fd(),
            Listener::Unix(listener) => listener.as_fd(),
        }
    }
}

/// Opens the transport and forks the agent. Commands run as `user` with `groups`;
/// `persistent` are the disks a `Poweroff` makes clean.
pub fn start(
    transport: AgentTransport,
    persistent: Vec<PathBuf>,
    user: &User,
    groups: &[u32],
    extra_env: &[EnvVar],
) -> Result<()> {
    let transport = match transport {
        AgentTransport::Vsock => Transport::Vsock(
            vsock::listen(AGENT_PORT).context(|| format!("listen on vsock port {AGENT_PORT}"))?,
        ),
        AgentTransport::Serial => Transport::Serial(serial::Mux::open()?),
    };
    let cfg = Config::for_user(user, groups.to_vec(), extra_env);
    match sys::fork().context(|| "fork the agent".into())? {
        Fork::Child => run(transport, &cfg, &persistent),
        Fork::Parent(_) => Ok(()),
    }
}

/// The agent process.
fn run(transport: Transport, cfg: &Config, persistent: &[PathBuf]) -> ! {
    // SAFETY: setsid/prctl/signal have no memory arguments.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let listener = listen(transport).unwrap_or_else(|e| fatal(&e));
    let children = sys::signalfd(&[libc::SIGCHLD])
        .unwrap_or_else(|e| fatal(&Error::sys("signalfd SIGCHLD", e)));
    say_ready(&listener).unwrap_or_else(|e| fatal(&e));
    loop {
        let ready = sys::poll_readable(&[listener.as_fd(), children.as_fd()], -1)
            .unwrap_or_else(|e| fatal(&Error::sys("poll", e)));
        if ready[1] {
            while let Ok(Some(_)) = sys::read_signal(children.as_fd()) {}
            while let Ok(Some(_)) = sys::waitpid(-1, libc::WNOHANG) {}
        }
        if !ready[0] {
            continue;
        }
        // ECONNABORTED and the like: that host connection is gone; the next one may work.
        let Ok(conn) = listener.accept() else {
            continue;
        };
        match sys::fork() {
            Ok(Fork::Child) => {
                drop(listener);
                drop(children);
                // A bug in one handler ends its connection, not the VM (init's panic hook would).
                let _ = std::panic::take_hook();
                match handler::serve(conn, cfg) {
                    Ok(Outcome::Poweroff) => poweroff::power_off(persistent, 0),
                    Ok(Outcome::Done) => sys::exit_now(0),
                    Err(_) => sys::exit_now(1), // the host went away; nobody to tell
                }
            }
            // Dropping the connection tells the host (it sees the stream close).
            Ok(Fork::Parent(_)) | Err(_) => drop(conn),
        }
    }
}

/// Starts the transport's moving parts and listens on the agent port.
fn listen(transport: Transport) -> Result<Listener> {
    match transport {
        Transport::Vsock(fd) => Ok(Listener::Vsock(fd)),
        Transport::Serial(mux) => {
            mux.spawn()?;
            let path = hybrid::host_listener_path(Path::new(serial::MUX_SOCKET), AGENT_PORT);
            Ok(Listener::Unix(serial::listen_private(&path)?))
        }
    }
}

/// Tells the host the agent listens: `Hello` on a connection to host port [`READY_PORT`].
fn say_ready(listener: &Listener) -> Result<()> {
    let hello = Reply::Hello {
        version: frame::VERSION,
    }
    .encode()
    .map_err(|e| Error::invalid("encode Hello", e))?;
    let what = || format!("tell the host the agent is ready (port {READY_PORT})");
    match listener {
        Listener::Vsock(_) => {
            let conn = vsock::connect(HOST_CID, READY_PORT).context(what)?;
            sys::write_all(conn.as_fd(), &hello).context(what)
        }
        Listener::Unix(_) => {
            let mut conn =
                hybrid::connect(Path::new(serial::MUX_SOCKET), READY_PORT).context(what)?;
            conn.write_all(&hello).context(what)
        }
    }
}

/// Without its agent, the host could only wait: end the VM the way a boot failure does.
fn fatal(err: &Error) -> ! {
    let line = format!("nodeos-init: agent: {err}\n");
    let _ = sys::write_all(io::stderr().as_fd(), line.as_bytes());
    poweroff::quiet_console();
    ports::exit_vm(status::BOOT_FAILURE)
}
