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
//! Once it listens, the agent says so: it connects to host port [`READY_PORT`] and sends a
//! `Hello` reply; the host answers there with the guest's environment (`Env`), which every
//! command gets on top of its login environment, and which the agent passes on to init for
//! the shell PID 1 runs (never on the kernel command line: contract::env). Each connection is
//! then served by its own forked handler (handler.rs); a `Poweroff` request ends the VM from
//! there (poweroff.rs); an `Export` request sends a folder's tree (export.rs).

mod command;
mod export;
mod handler;
mod serial;
mod vsock;

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use contract::env::EnvVar;
use contract::frame::{self, Reply, Request};
use contract::params::AgentTransport;
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
/// `persistent` are the disks a `Poweroff` makes clean. With `for_shell`, the agent also hands
/// the guest's environment on to the shell PID 1 is about to run: the descriptor returned is
/// where [`read_env`] reads it, once the host has sent it.
pub fn start(
    transport: AgentTransport,
    persistent: Vec<PathBuf>,
    user: &User,
    groups: &[u32],
    for_shell: bool,
) -> Result<Option<OwnedFd>> {
    let transport = match transport {
        AgentTransport::Vsock => Transport::Vsock(
            vsock::listen(AGENT_PORT).context(|| format!("listen on vsock port {AGENT_PORT}"))?,
        ),
        AgentTransport::Serial => Transport::Serial(serial::Mux::open()?),
    };
    let (shell_env, to_shell) = if for_shell {
        let (read, write) = sys::pipe().context(|| "pipe for the shell's environment".into())?;
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    match sys::fork().context(|| "fork the agent".into())? {
        Fork::Child => {
            drop(shell_env);
            run(transport, user, groups.to_vec(), &persistent, to_shell)
        }
        Fork::Parent(_) => Ok(shell_env),
    }
}

/// The guest's environment, from the agent's descriptor [`start`] returned (an `Env` frame);
/// waits until the host has sent it.
pub fn read_env(from: OwnedFd) -> Result<Vec<EnvVar>> {
    let what = "the guest's environment from the agent";
    match frame::read_request(&mut File::from(from)) {
        Ok(Some(Request::Env(env))) => Ok(env),
        Ok(Some(other)) => Err(Error::invalid(
            what,
            format!("got {}", handler::name(&other)),
        )),
        Ok(None) => Err(Error::invalid(what, "the agent sent nothing")),
        Err(e) => Err(Error::invalid(what, e)),
    }
}

/// The agent process; `to_shell`, when given, is where the guest's environment goes for the
/// shell.
fn run(
    transport: Transport,
    user: &User,
    groups: Vec<u32>,
    persistent: &[PathBuf],
    to_shell: Option<OwnedFd>,
) -> ! {
    // SAFETY: setsid/prctl/signal have no memory arguments.
    unsafe {
        libc::setsid();
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let listener = listen(transport).unwrap_or_else(|e| fatal(&e));
    let children = sys::signalfd(&[libc::SIGCHLD])
        .unwrap_or_else(|e| fatal(&Error::sys("signalfd SIGCHLD", e)));
    let env = say_ready(&listener).unwrap_or_else(|e| fatal(&e));
    if let Some(to_shell) = to_shell {
        pass_env(to_shell, &env).unwrap_or_else(|e| fatal(&e));
    }
    let cfg = Config::for_user(user, groups, &env);
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

/// Writes the guest's environment where init reads it for the shell.
fn pass_env(to_shell: OwnedFd, env: &[EnvVar]) -> Result<()> {
    let frame = Request::Env(env.to_vec())
        .encode()
        .map_err(|e| Error::invalid("encode the shell's environment", e))?;
    sys::write_all(to_shell.as_fd(), &frame).context(|| "pass the shell its environment".into())
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

/// Tells the host the agent listens (`Hello` on a connection to host port [`READY_PORT`]) and
/// reads its answer there: the guest's environment.
fn say_ready(listener: &Listener) -> Result<Vec<EnvVar>> {
    let hello = Reply::Hello {
        version: frame::VERSION,
    }
    .encode()
    .map_err(|e| Error::invalid("encode Hello", e))?;
    let what = || format!("tell the host the agent is ready (port {READY_PORT})");
    let conn: OwnedFd = match listener {
        Listener::Vsock(_) => vsock::connect(HOST_CID, READY_PORT).context(what)?,
        Listener::Unix(_) => hybrid::connect(Path::new(serial::MUX_SOCKET), READY_PORT)
            .context(what)?
            .into(),
    };
    let mut conn = File::from(conn);
    conn.write_all(&hello).context(what)?;
    let what = format!("the guest's environment from the host (port {READY_PORT})");
    match frame::read_request(&mut conn) {
        Ok(Some(Request::Env(env))) => Ok(env),
        Ok(Some(other)) => Err(Error::invalid(
            what,
            format!("expected Env, got {}", handler::name(&other)),
        )),
        Ok(None) => Err(Error::invalid(what, "the host closed the connection")),
        Err(e) => Err(Error::invalid(what, e)),
    }
}

/// Without its agent, the host could only wait: end the VM the way a boot failure does.
fn fatal(err: &Error) -> ! {
    let line = format!("nodeos-init: agent: {err}\n");
    let _ = sys::write_all(io::stderr().as_fd(), line.as_bytes());
    poweroff::quiet_console();
    ports::exit_vm(status::BOOT_FAILURE)
}
