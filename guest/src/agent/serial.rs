//! The serial transport: the channel multiplexer (contract::mux) on the virtio-serial port
//! `org.nodeos.agent`, which gives the guest the same hybrid-vsock interface as the VMM's
//! vsock device gives the host: the agent listens on `<MUX_SOCKET>_1024`, and reaches host
//! port P by `CONNECT P` on [`MUX_SOCKET`].

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use contract::mux::{self, Role};
use contract::SERIAL_PORT_NAME;

use crate::error::{Context, Result};
use crate::sys::{self, Fork};
use crate::virtio_ports;

/// The guest's hybrid-vsock socket: guest-to-host connections start here, and host-to-guest
/// connections to port P reach `<MUX_SOCKET>_P`.
pub const MUX_SOCKET: &str = "/run/nodeos/vsock";
/// The virtio-console driver adds ports asynchronously after its probe: how long to wait.
const PORT_WAIT: Duration = Duration::from_secs(5);

/// Finds the agent's port (`/dev/vportNpM`) by its name, waiting a little for it to appear.
pub fn find_port() -> Result<PathBuf> {
    virtio_ports::find(SERIAL_PORT_NAME, PORT_WAIT)
}

/// Binds a Unix socket only root may connect to.
pub fn listen_private(path: &Path) -> Result<UnixListener> {
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path).context(|| format!("listen on {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// The multiplexer's ends, opened by init (so that failures are boot failures and
/// connections can queue at once), run by the agent.
pub struct Mux {
    port: PathBuf,
    link: OwnedFd,
    listener: UnixListener,
}

impl Mux {
    /// Finds and opens the port, and listens on [`MUX_SOCKET`].
    pub fn open() -> Result<Self> {
        let port = find_port()?;
        let link = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&port)
            .context(|| format!("open {}", port.display()))?
            .into();
        let listener = listen_private(Path::new(MUX_SOCKET))?;
        Ok(Mux {
            port,
            link,
            listener,
        })
    }

    /// Runs the multiplexer in a child process, which prints why if it ever fails.
    pub fn spawn(self) -> Result<()> {
        match sys::fork().context(|| "fork the channel multiplexer".into())? {
            Fork::Child => {
                let local = PathBuf::from(MUX_SOCKET);
                let code = match mux::run(self.link, self.listener, local, Role::Guest, None) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!(
                            "nodeos-init: agent: channel multiplexer on {}: {e}",
                            self.port.display()
                        );
                        1
                    }
                };
                sys::exit_now(code)
            }
            Fork::Parent(_) => Ok(()),
        }
    }
}
