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
//! Once it listens, the agent marks the template point (contract::ports::TEMPLATE_READY) and
//! waits for the host's first connection, whose one request is `Activate`
//! (contract::activation): it makes the guest that VM (activate.rs), hands the activation on
//! to init for the shell PID 1 runs, and answers `Hello`. Each later connection is served by
//! its own forked handler (handler.rs); a `Poweroff` request ends the VM from there
//! (poweroff.rs); an `Export` request sends a folder's tree (export.rs). While a container's
//! process runs, its handler reports the kernel's OOM kills (oom.rs).

mod activate;
mod caps;
mod command;
mod container;
mod export;
mod handler;
mod oom;
mod serial;
mod tty;
mod vsock;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use contract::activation::Activation;
use contract::frame::{self, ErrorKind, Reply, Request};
use contract::params::AgentTransport;
use contract::{hybrid, status, AGENT_PORT};

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

/// Opens the transport and forks the agent, whose commands run as `user` with `groups`.
/// Returns where [`read_activation`] reads the host's activation once the agent has applied it.
pub fn start(transport: AgentTransport, user: &User, groups: &[u32]) -> Result<OwnedFd> {
    let transport = match transport {
        AgentTransport::Vsock => Transport::Vsock(
            vsock::listen(AGENT_PORT).context(|| format!("listen on vsock port {AGENT_PORT}"))?,
        ),
        AgentTransport::Serial => Transport::Serial(serial::Mux::open()?),
    };
    let (activated, to_init) = sys::pipe().context(|| "pipe for the activation".into())?;
    match sys::fork().context(|| "fork the agent".into())? {
        Fork::Child => {
            drop(activated);
            run(transport, user, groups.to_vec(), to_init)
        }
        Fork::Parent(_) => Ok(activated),
    }
}

/// The host's activation, from the descriptor [`start`] returned; waits until the agent has
/// applied it.
pub fn read_activation(from: OwnedFd) -> Result<Activation> {
    let what = "the activation from the agent";
    match frame::read_request(&mut File::from(from)) {
        Ok(Some(Request::Activate(activation))) => Ok(*activation),
        Ok(Some(other)) => Err(Error::invalid(
            what,
            format!("got {}", handler::name(&other)),
        )),
        Ok(None) => Err(Error::invalid(what, "the agent sent nothing")),
        Err(e) => Err(Error::invalid(what, e)),
    }
}

/// The agent process; the activation goes to init through `to_init`.
fn run(transport: Transport, user: &User, groups: Vec<u32>, to_init: OwnedFd) -> ! {
    // SAFETY: setsid/prctl/signal have no memory arguments.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let listener = listen(transport).unwrap_or_else(|e| fatal(&e));
    let children = sys::signalfd(&[libc::SIGCHLD])
        .unwrap_or_else(|e| fatal(&Error::sys("signalfd SIGCHLD", e)));
    let activation = activate(&listener, to_init).unwrap_or_else(|e| fatal(&e));
    let persistent = poweroff::persistent_mounts(&activation.params);
    let cfg = Config::for_user(user, groups, &activation.env);
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
                match handler::serve(conn, &cfg) {
                    Ok(Outcome::Poweroff) => poweroff::power_off(&persistent, 0),
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

/// Marks the template point and waits for the host's activation: the first request of the
/// first connection that sends one. Applies it, hands it to init and answers `Hello`; a
/// connection that asks for anything else is refused and the wait goes on. An activation that
/// cannot be applied is answered with the reason and is the agent's end.
fn activate(listener: &Listener, to_init: OwnedFd) -> Result<Activation> {
    ports::mark_template_ready();
    loop {
        // ECONNABORTED and the like: that host connection is gone; the next one may work.
        let Ok(conn) = listener.accept() else {
            continue;
        };
        let mut conn = File::from(conn);
        // Past the connection's `Hello` (the host checks versions on the answer).
        let request = match frame::read_request(&mut conn) {
            Ok(Some(Request::Hello { .. })) => frame::read_request(&mut conn),
            other => other,
        };
        let activation = match request {
            Ok(Some(Request::Activate(activation))) => activation,
            Ok(Some(other)) => {
                let message = format!("expected Activate, got {}", handler::name(&other));
                let _ = reply(&mut conn, &error_reply(ErrorKind::Protocol, message));
                continue;
            }
            Ok(None) | Err(_) => continue,
        };
        if let Err(e) = activate::apply(&activation) {
            let _ = reply(&mut conn, &error_reply(ErrorKind::Activate, e.to_string()));
            return Err(e);
        }
        let frame = Request::Activate(activation.clone())
            .encode()
            .map_err(|e| Error::invalid("encode the activation for init", e))?;
        sys::write_all(to_init.as_fd(), &frame).context(|| "hand init the activation".into())?;
        let hello = Reply::Hello {
            version: frame::VERSION,
        };
        // A host gone before the answer finds the guest activated all the same.
        let _ = reply(&mut conn, &hello);
        return Ok(*activation);
    }
}

fn error_reply(kind: ErrorKind, message: String) -> Reply {
    Reply::Error { kind, message }
}

fn reply(conn: &mut File, reply: &Reply) -> Result<()> {
    let frame = reply
        .encode()
        .map_err(|e| Error::invalid("encode a reply", e))?;
    conn.write_all(&frame)
        .context(|| "answer the activation".into())
}

/// Without its agent, the host could only wait: end the VM the way a boot failure does.
fn fatal(err: &Error) -> ! {
    let line = format!("nodeos-init: agent: {err}\n");
    let _ = sys::write_all(io::stderr().as_fd(), line.as_bytes());
    poweroff::quiet_console();
    ports::exit_vm(status::BOOT_FAILURE)
}
