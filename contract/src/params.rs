//! The `nodeos.*` parameters of the kernel command line (docs/guest-contract.md): what the
//! host tells the guest's init to set up.
//!
//! The host builds a [`GuestParams`] and writes it with `Display`; the guest reads
//! /proc/cmdline with [`GuestParams::parse`]. Both sides go through the same checks: the
//! constructors ([`Upper::disk`], [`Volume::new`]) and
//! [`GuestParams::validate`] reject exactly what the guest's parser would, so a host bug shows
//! on the host, not as a guest that fails to boot.

use std::fmt;
use std::net::Ipv4Addr;

mod percent;
#[cfg(test)]
mod tests;

/// How the host drives the console (`nodeos.console`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// The host terminal is raw; the REPL edits lines itself.
    Tty,
    /// Host stdin/stdout are pipes: canonical mode, no echo, byte-clean output, no prompt.
    Pipe,
}

impl ConsoleMode {
    /// The parameter's value, which the guest also hands its shell (`NODEOS_CONSOLE`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleMode::Tty => "tty",
            ConsoleMode::Pipe => "pipe",
        }
    }
}

/// Where the overlay's writable layer lives (`nodeos.upper`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upper {
    Tmpfs,
    /// An ext4 block device (`/dev/vdb`, see [`crate::disks`]), kept across boots.
    Disk(String),
}

impl Upper {
    /// A disk upper layer, checked as the guest checks it.
    pub fn disk(device: impl Into<String>) -> Result<Upper, ParamError> {
        let upper = Upper::Disk(device.into());
        Param::Upper(&upper).check()?;
        Ok(upper)
    }
}

/// What PID 1 ends up running (`nodeos.shell`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Repl,
    /// nsh, the Node shell (`node /usr/lib/nodeos/nsh/nsh.js`), with the REPL's contract.
    Nsh,
    /// Nothing: PID 1 stays our init and only reaps (the agent runs the commands).
    None,
}

impl Shell {
    fn as_str(self) -> &'static str {
        match self {
            Shell::Repl => "repl",
            Shell::Nsh => "nsh",
            Shell::None => "none",
        }
    }
}

/// How the host reaches the guest agent (`nodeos.agent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTransport {
    /// AF_VSOCK, port [`crate::AGENT_PORT`].
    Vsock,
    /// The channel multiplexer on the virtio-serial port [`crate::SERIAL_PORT_NAME`].
    Serial,
}

impl AgentTransport {
    fn as_str(self) -> &'static str {
        match self {
            AgentTransport::Vsock => "vsock",
            AgentTransport::Serial => "serial",
        }
    }
}

/// An ext4 disk to mount (`nodeos.vol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// A virtio-blk device, `/dev/vdX` ([`crate::disks::DiskPlan::volume_device`]).
    pub device: String,
    /// Where in the guest: absolute, not `/`, without `.` or `..` components.
    pub mount_point: String,
    pub read_only: bool,
}

impl Volume {
    /// A volume, checked as the guest checks it.
    pub fn new(
        device: impl Into<String>,
        mount_point: impl Into<String>,
        read_only: bool,
    ) -> Result<Volume, ParamError> {
        let volume = Volume {
            device: device.into(),
            mount_point: mount_point.into(),
            read_only,
        };
        Param::Vol(&volume).check()?;
        Ok(volume)
    }
}

/// The static IPv4 set-up of eth0 (`nodeos.net`); [`crate::net::USER_NET`] is the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub address: Ipv4Addr,
    /// 0..=32.
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

impl NetConfig {
    /// The netmask of the prefix length (`/24` is 255.255.255.0).
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }
}

/// All the `nodeos.*` parameters, with the contract's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestParams {
    pub console: ConsoleMode,
    /// The host terminal's size, 1..=65535 each.
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    pub upper: Upper,
    pub shell: Shell,
    /// No agent when absent.
    pub agent: Option<AgentTransport>,
    /// Run Node.js and npm once before the template point (`nodeos.warm`), so that a snapshot
    /// taken there holds them in its page cache.
    pub warm: bool,
    /// Mounted in this order.
    pub volumes: Vec<Volume>,
    /// Only loopback when absent.
    pub net: Option<NetConfig>,
}

impl Default for GuestParams {
    fn default() -> Self {
        GuestParams {
            console: ConsoleMode::Tty,
            cols: None,
            rows: None,
            upper: Upper::Tmpfs,
            shell: Shell::Repl,
            agent: None,
            warm: false,
            volumes: Vec::new(),
            net: None,
        }
    }
}

/// A `nodeos.*` word the guest does not accept, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    word: String,
    why: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.word, self.why)
    }
}

impl std::error::Error for ParamError {}

impl GuestParams {
    /// Parses the text of /proc/cmdline. Words that are not `nodeos.*` and unknown `nodeos.*`
    /// keys are ignored (a newer host may pass more); a known key with a bad value is an error,
    /// so a host bug shows at once. Where a key is given twice, the last value wins.
    pub fn parse(text: &str) -> Result<GuestParams, ParamError> {
        let mut params = GuestParams::default();
        for word in split_words(text) {
            let Some(rest) = word.strip_prefix("nodeos.") else {
                continue;
            };
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            params.set(key, value).map_err(|why| ParamError {
                word: word.clone(),
                why,
            })?;
        }
        Ok(params)
    }

    /// Checks every parameter the way [`GuestParams::parse`] would: `Ok` means the guest
    /// accepts this value's `Display` and reads back the same value.
    pub fn validate(&self) -> Result<(), ParamError> {
        self.params().iter().try_for_each(Param::check)
    }

    /// Sets the parameter `key` from its text; unknown keys are ignored.
    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key {
            "console" => {
                self.console = match value {
                    "tty" => ConsoleMode::Tty,
                    "pipe" => ConsoleMode::Pipe,
                    _ => return Err("must be tty or pipe".into()),
                }
            }
            "cols" => self.cols = Some(parse_size(value)?),
            "rows" => self.rows = Some(parse_size(value)?),
            "upper" => {
                self.upper = match value {
                    "tmpfs" => Upper::Tmpfs,
                    device => {
                        check_upper_device(device)?;
                        Upper::Disk(device.to_string())
                    }
                }
            }
            "shell" => {
                self.shell = match value {
                    "repl" => Shell::Repl,
                    "nsh" => Shell::Nsh,
                    "none" => Shell::None,
                    _ => return Err("must be repl, nsh or none".into()),
                }
            }
            "agent" => {
                self.agent = match value {
                    "vsock" => Some(AgentTransport::Vsock),
                    "serial" => Some(AgentTransport::Serial),
                    _ => return Err("must be vsock or serial".into()),
                }
            }
            "warm" => match value {
                "" => self.warm = true,
                _ => return Err("takes no value".into()),
            },
            "vol" => self.volumes.push(parse_volume(value)?),
            "net" => self.net = Some(parse_net(value)?),
            _ => {}
        }
        Ok(())
    }

    /// The parameters that differ from the defaults, in the order `Display` writes them.
    fn params(&self) -> Vec<Param<'_>> {
        let defaults = GuestParams::default();
        let mut params = Vec::new();
        if self.console != defaults.console {
            params.push(Param::Console(self.console));
        }
        params.extend(self.cols.map(Param::Cols));
        params.extend(self.rows.map(Param::Rows));
        if self.upper != defaults.upper {
            params.push(Param::Upper(&self.upper));
        }
        if self.shell != defaults.shell {
            params.push(Param::Shell(self.shell));
        }
        params.extend(self.agent.map(Param::Agent));
        if self.warm {
            params.push(Param::Warm);
        }
        params.extend(self.volumes.iter().map(Param::Vol));
        params.extend(self.net.as_ref().map(Param::Net));
        params
    }
}

/// The canonical `nodeos.*` words, space-separated: only what differs from the defaults (so
/// the default is the empty string), values percent-encoded where the guest decodes them.
impl fmt::Display for GuestParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, param) in self.params().iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{param}")?;
        }
        Ok(())
    }
}

/// One `nodeos.*` word of a [`GuestParams`].
enum Param<'a> {
    Console(ConsoleMode),
    Cols(u16),
    Rows(u16),
    Upper(&'a Upper),
    Shell(Shell),
    Agent(AgentTransport),
    Warm,
    Vol(&'a Volume),
    Net(&'a NetConfig),
}

impl Param<'_> {
    /// The checks the guest's parser makes on this word's value.
    fn check(&self) -> Result<(), ParamError> {
        let checked = match self {
            Param::Cols(n) | Param::Rows(n) => check_size(*n),
            Param::Upper(Upper::Disk(device)) => check_upper_device(device),
            Param::Vol(volume) => {
                check_volume_device(&volume.device).and(check_mount_point(&volume.mount_point))
            }
            Param::Net(net) => check_prefix(net.prefix),
            Param::Console(_)
            | Param::Upper(Upper::Tmpfs)
            | Param::Shell(_)
            | Param::Agent(_)
            | Param::Warm => Ok(()),
        };
        checked.map_err(|why| ParamError {
            word: self.to_string(),
            why,
        })
    }
}

impl fmt::Display for Param<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Param::Console(mode) => write!(f, "nodeos.console={}", mode.as_str()),
            Param::Cols(n) => write!(f, "nodeos.cols={n}"),
            Param::Rows(n) => write!(f, "nodeos.rows={n}"),
            Param::Upper(Upper::Tmpfs) => write!(f, "nodeos.upper=tmpfs"),
            Param::Upper(Upper::Disk(device)) => write!(f, "nodeos.upper={device}"),
            Param::Shell(shell) => write!(f, "nodeos.shell={}", shell.as_str()),
            Param::Agent(agent) => write!(f, "nodeos.agent={}", agent.as_str()),
            Param::Warm => write!(f, "nodeos.warm"),
            Param::Vol(v) => write!(
                f,
                "nodeos.vol={}:{}:{}",
                v.device,
                percent::Encoded(&v.mount_point),
                if v.read_only { "ro" } else { "rw" }
            ),
            Param::Net(n) => write!(
                f,
                "nodeos.net={}/{},{},{}",
                n.address, n.prefix, n.gateway, n.dns
            ),
        }
    }
}

const SIZE_FORM: &str = "must be a number 1..=65535";

fn parse_size(value: &str) -> Result<u16, String> {
    let n = value.parse::<u16>().map_err(|_| SIZE_FORM)?;
    check_size(n)?;
    Ok(n)
}

fn check_size(n: u16) -> Result<(), String> {
    if n == 0 {
        return Err(SIZE_FORM.into());
    }
    Ok(())
}

/// A `/dev/` path, written as it is (the guest does not decode it), so plain bytes only.
fn check_upper_device(device: &str) -> Result<(), String> {
    let valid = device.starts_with("/dev/")
        && device.len() > "/dev/".len()
        && !device.contains("..")
        && device.bytes().all(percent::is_plain);
    if !valid {
        return Err("must be tmpfs or a /dev/ path".into());
    }
    Ok(())
}

/// `<dev>:<mountpoint>:<ro|rw>`, the mount point percent-encoded.
fn parse_volume(value: &str) -> Result<Volume, String> {
    let mut parts = value.split(':');
    let (Some(device), Some(mount_point), Some(mode), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("must be /dev/vdX:MOUNTPOINT:ro|rw".into());
    };
    check_volume_device(device)?;
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        _ => return Err(format!("mode {mode:?}: must be ro or rw")),
    };
    let mount_point = String::from_utf8(percent::decode(mount_point)?)
        .map_err(|_| "mount point is not UTF-8".to_string())?;
    check_mount_point(&mount_point)?;
    Ok(Volume {
        device: device.to_string(),
        mount_point,
        read_only,
    })
}

/// `/dev/vd` and letters ([`crate::disks::device_path`]).
fn check_volume_device(device: &str) -> Result<(), String> {
    let letters = device.strip_prefix("/dev/vd").unwrap_or("");
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(format!("device {device:?}: must be a /dev/vdX path"));
    }
    Ok(())
}

fn check_mount_point(mount_point: &str) -> Result<(), String> {
    if mount_point.contains('\0') {
        return Err("mount point contains a NUL byte".into());
    }
    let components: Vec<&str> = mount_point.split('/').filter(|c| !c.is_empty()).collect();
    if !mount_point.starts_with('/')
        || components.is_empty()
        || components.iter().any(|&c| c == "." || c == "..")
    {
        return Err(format!(
            "mount point {mount_point}: must be an absolute path other than /, without . or .."
        ));
    }
    Ok(())
}

/// `<addr>/<prefix>,<gateway>,<dns>`.
fn parse_net(value: &str) -> Result<NetConfig, String> {
    const FORM: &str = "must be ADDRESS/PREFIX,GATEWAY,DNS (IPv4)";
    let mut parts = value.split(',');
    let (Some(cidr), Some(gateway), Some(dns), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FORM.into());
    };
    let (address, prefix) = cidr.split_once('/').ok_or(FORM)?;
    let ip = |text: &str| {
        text.parse::<Ipv4Addr>()
            .map_err(|_| format!("{text:?} is not an IPv4 address"))
    };
    let prefix = prefix
        .parse::<u8>()
        .map_err(|_| format!("prefix {prefix:?} must be 0..=32"))?;
    check_prefix(prefix)?;
    Ok(NetConfig {
        address: ip(address)?,
        prefix,
        gateway: ip(gateway)?,
        dns: ip(dns)?,
    })
}

fn check_prefix(prefix: u8) -> Result<(), String> {
    if prefix > 32 {
        return Err(format!("prefix {prefix} must be 0..=32"));
    }
    Ok(())
}

/// Splits a kernel command line into words: whitespace-separated, with double quotes grouping
/// (the kernel allows `key="a b"`); the quotes themselves are dropped.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut has_word = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_word = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_word {
                    words.push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            c => {
                word.push(c);
                has_word = true;
            }
        }
    }
    if has_word {
        words.push(word);
    }
    words
}
