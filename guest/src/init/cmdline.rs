//! The `nodeos.*` parameters of the kernel command line (docs/guest-contract.md).

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStringExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// How the host drives the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// The host terminal is raw; the REPL edits lines itself.
    Tty,
    /// Host stdin/stdout are pipes: canonical mode, no echo, byte-clean output, no prompt.
    Pipe,
}

impl ConsoleMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsoleMode::Tty => "tty",
            ConsoleMode::Pipe => "pipe",
        }
    }
}

/// Where the overlay's writable layer lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upper {
    Tmpfs,
    /// An ext4 block device, kept across boots.
    Disk(PathBuf),
}

/// What PID 1 ends up running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Repl,
    /// nsh, the Node shell (`node /usr/lib/nodeos/nsh/nsh.js`), with the REPL's contract.
    Nsh,
    /// Nothing: PID 1 stays our init and only reaps (the agent runs the commands).
    None,
}

/// How the host reaches the guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentTransport {
    /// AF_VSOCK, port 1024.
    Vsock,
    /// The channel multiplexer on the virtio-serial port `org.nodeos.agent`.
    Serial,
}

/// An ext4 device to mount (`nodeos.vol`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub device: PathBuf,
    pub mount_point: PathBuf,
    pub read_only: bool,
}

/// The static IPv4 set-up of eth0 (`nodeos.net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Ipv4Addr,
}

impl NetConfig {
    /// The netmask of the prefix length (`/24` is 255.255.255.0).
    pub fn netmask(&self) -> Ipv4Addr {
        let bits = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        Ipv4Addr::from(bits)
    }
}

/// The parsed `nodeos.*` parameters, with the contract's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    pub console: ConsoleMode,
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    pub upper: Upper,
    pub shell: Shell,
    /// No agent when absent.
    pub agent: Option<AgentTransport>,
    /// Mounted in this order.
    pub volumes: Vec<Volume>,
    pub net: Option<NetConfig>,
    /// `nodeos.env=NAME=VALUE` entries (the value percent-encoded): added to the environment
    /// of the shell and of the agent's commands.
    pub env: Vec<Vec<u8>>,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            console: ConsoleMode::Tty,
            cols: None,
            rows: None,
            upper: Upper::Tmpfs,
            shell: Shell::Repl,
            agent: None,
            volumes: Vec::new(),
            net: None,
            env: Vec::new(),
        }
    }
}

impl Cmdline {
    /// Parses the text of /proc/cmdline. Unknown `nodeos.*` keys are ignored (a newer host may
    /// pass more); a known key with a bad value is an error, so a host bug shows at once.
    pub fn parse(text: &str) -> Result<Self> {
        let mut cmdline = Cmdline::default();
        for word in split_words(text) {
            let Some(rest) = word.strip_prefix("nodeos.") else {
                continue;
            };
            let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
            let bad = |why: &str| Error::invalid(format!("kernel command line: {word}"), why);
            match key {
                "console" => {
                    cmdline.console = match value {
                        "tty" => ConsoleMode::Tty,
                        "pipe" => ConsoleMode::Pipe,
                        _ => return Err(bad("must be tty or pipe")),
                    }
                }
                "cols" => {
                    cmdline.cols =
                        Some(parse_size(value).ok_or_else(|| bad("must be a number 1..=65535"))?)
                }
                "rows" => {
                    cmdline.rows =
                        Some(parse_size(value).ok_or_else(|| bad("must be a number 1..=65535"))?)
                }
                "upper" => {
                    cmdline.upper = match value {
                        "tmpfs" => Upper::Tmpfs,
                        dev if dev.starts_with("/dev/")
                            && dev.len() > "/dev/".len()
                            && !dev.contains("..") =>
                        {
                            Upper::Disk(PathBuf::from(dev))
                        }
                        _ => return Err(bad("must be tmpfs or a /dev/ path")),
                    }
                }
                "shell" => {
                    cmdline.shell = match value {
                        "repl" => Shell::Repl,
                        "nsh" => Shell::Nsh,
                        "none" => Shell::None,
                        _ => return Err(bad("must be repl, nsh or none")),
                    }
                }
                "agent" => {
                    cmdline.agent = match value {
                        "vsock" => Some(AgentTransport::Vsock),
                        "serial" => Some(AgentTransport::Serial),
                        _ => return Err(bad("must be vsock or serial")),
                    }
                }
                "vol" => cmdline
                    .volumes
                    .push(parse_volume(value).map_err(|why| bad(&why))?),
                "net" => cmdline.net = Some(parse_net(value).map_err(|why| bad(&why))?),
                "env" => cmdline.env.push(parse_env(value).map_err(|why| bad(&why))?),
                _ => {}
            }
        }
        Ok(cmdline)
    }
}

fn parse_size(value: &str) -> Option<u16> {
    value.parse::<u16>().ok().filter(|&n| n > 0)
}

/// `<dev>:<mountpoint>:<ro|rw>`, the mount point percent-encoded.
fn parse_volume(value: &str) -> std::result::Result<Volume, String> {
    const FORM: &str = "must be /dev/vdX:MOUNTPOINT:ro|rw";
    let mut parts = value.split(':');
    let (Some(device), Some(mount_point), Some(mode), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FORM.into());
    };
    let letters = device.strip_prefix("/dev/vd").unwrap_or("");
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return Err(format!("device {device:?}: must be a /dev/vdX path"));
    }
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        _ => return Err(format!("mode {mode:?}: must be ro or rw")),
    };
    let decoded = percent_decode(mount_point)?;
    if decoded.contains(&0) {
        return Err("mount point contains a NUL byte".into());
    }
    let mount_point = PathBuf::from(OsString::from_vec(decoded));
    let bad_component = mount_point
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir));
    if !mount_point.is_absolute() || bad_component || mount_point == Path::new("/") {
        return Err(format!(
            "mount point {}: must be an absolute path other than /, without . or ..",
            mount_point.display()
        ));
    }
    Ok(Volume {
        device: PathBuf::from(device),
        mount_point,
        read_only,
    })
}

/// Decodes `%XX` escapes (the host encodes every byte outside `[A-Za-z0-9/._-]`).
/// `NAME=VALUE`, the value percent-encoded; NAME is a shell variable name.
fn parse_env(value: &str) -> std::result::Result<Vec<u8>, String> {
    let (name, encoded) = value.split_once('=').ok_or("must be NAME=VALUE")?;
    let valid_name = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid_name {
        return Err(format!("{name:?} is not a variable name"));
    }
    let decoded = percent_decode(encoded)?;
    if decoded.contains(&0) {
        return Err("the value contains a NUL byte".into());
    }
    let mut entry = format!("{name}=").into_bytes();
    entry.extend(decoded);
    Ok(entry)
}

fn percent_decode(text: &str) -> std::result::Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| format!("bad percent escape at byte {i} of {text:?}"))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// `<addr>/<prefix>,<gateway>,<dns>`.
fn parse_net(value: &str) -> std::result::Result<NetConfig, String> {
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
        .ok()
        .filter(|&p| p <= 32)
        .ok_or_else(|| format!("prefix {prefix:?} must be 0..=32"))?;
    Ok(NetConfig {
        address: ip(address)?,
        prefix,
        gateway: ip(gateway)?,
        dns: ip(dns)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "console=ttyS0 reboot=t panic=-1 quiet root=/dev/vda rootfstype=squashfs ro init=/sbin/init";

    #[test]
    fn defaults_without_nodeos_parameters() {
        assert_eq!(Cmdline::parse(BASE).unwrap(), Cmdline::default());
        assert_eq!(Cmdline::default().console, ConsoleMode::Tty);
        assert_eq!(Cmdline::default().upper, Upper::Tmpfs);
    }

    #[test]
    fn all_parameters() {
        let text = format!(
            "{BASE} virtio_mmio.device=4K@0xd0000000:5 nodeos.console=pipe nodeos.cols=120 nodeos.rows=40 nodeos.upper=/dev/vdb nodeos.shell=repl\n"
        );
        let cmdline = Cmdline::parse(&text).unwrap();
        assert_eq!(
            cmdline,
            Cmdline {
                console: ConsoleMode::Pipe,
                cols: Some(120),
                rows: Some(40),
                upper: Upper::Disk(PathBuf::from("/dev/vdb")),
                shell: Shell::Repl,
                agent: None,
                volumes: Vec::new(),
                net: None,
                env: Vec::new(),
            }
        );
    }

    #[test]
    fn environment_entries() {
        let cmdline = Cmdline::parse(
            "nodeos.env=npm_config_registry=http%3A//10.0.2.2%3A4873/ nodeos.env=EMPTY= nodeos.env=A_1=x%20y",
        )
        .unwrap();
        assert_eq!(
            cmdline.env,
            vec![
                b"npm_config_registry=http://10.0.2.2:4873/".to_vec(),
                b"EMPTY=".to_vec(),
                b"A_1=x y".to_vec()
            ]
        );
        for bad in [
            "nodeos.env=NOVALUE",
            "nodeos.env=1X=y",
            "nodeos.env==y",
            "nodeos.env=A-B=y",
            "nodeos.env=A=%00",
            "nodeos.env=A=%zz",
        ] {
            assert!(Cmdline::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn agent_shell_volumes_and_network() {
        let cmdline = Cmdline::parse(
            "nodeos.agent=serial nodeos.shell=none nodeos.vol=/dev/vdc:/data:rw \
             nodeos.vol=/dev/vdd:/mnt/my%20files%3a%25:ro nodeos.net=10.0.2.15/24,10.0.2.2,10.0.2.3",
        )
        .unwrap();
        assert_eq!(cmdline.agent, Some(AgentTransport::Serial));
        assert_eq!(cmdline.shell, Shell::None);
        assert_eq!(
            cmdline.volumes,
            vec![
                Volume {
                    device: PathBuf::from("/dev/vdc"),
                    mount_point: PathBuf::from("/data"),
                    read_only: false,
                },
                Volume {
                    device: PathBuf::from("/dev/vdd"),
                    mount_point: PathBuf::from("/mnt/my files:%"),
                    read_only: true,
                },
            ]
        );
        let net = cmdline.net.unwrap();
        assert_eq!(
            net,
            NetConfig {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Ipv4Addr::new(10, 0, 2, 2),
                dns: Ipv4Addr::new(10, 0, 2, 3),
            }
        );
        assert_eq!(net.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            Cmdline::parse("nodeos.agent=vsock").unwrap().agent,
            Some(AgentTransport::Vsock)
        );
        let mask = |prefix| NetConfig { prefix, ..net }.netmask();
        assert_eq!(mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(mask(32), Ipv4Addr::new(255, 255, 255, 255));
        assert_eq!(mask(20), Ipv4Addr::new(255, 255, 240, 0));
        // A non-UTF-8 mount point survives decoding.
        let raw = Cmdline::parse("nodeos.vol=/dev/vdb:/x%ff:rw").unwrap();
        assert_eq!(
            raw.volumes[0].mount_point.as_os_str().as_encoded_bytes(),
            b"/x\xff"
        );
    }

    #[test]
    fn shell_values() {
        for (value, shell) in [
            ("repl", Shell::Repl),
            ("nsh", Shell::Nsh),
            ("none", Shell::None),
        ] {
            let cmdline = Cmdline::parse(&format!("{BASE} nodeos.shell={value}")).unwrap();
            assert_eq!(cmdline.shell, shell, "{value}");
        }
        assert_eq!(Cmdline::parse(BASE).unwrap().shell, Shell::Repl);
    }

    #[test]
    fn last_value_wins_and_unknown_keys_are_ignored() {
        let cmdline = Cmdline::parse(
            "nodeos.console=pipe nodeos.console=tty nodeos.future=1 nodeos.upper=tmpfs",
        )
        .unwrap();
        assert_eq!(cmdline.console, ConsoleMode::Tty);
        assert_eq!(cmdline.upper, Upper::Tmpfs);
    }

    #[test]
    fn bad_values_are_errors_naming_the_parameter() {
        for bad in [
            "nodeos.console=serial",
            "nodeos.cols=0",
            "nodeos.rows=-3",
            "nodeos.cols=99999",
            "nodeos.upper=vdb",
            "nodeos.upper=/dev/",
            "nodeos.upper=/dev/../etc",
            "nodeos.shell=bash",
            "nodeos.agent=tcp",
            "nodeos.agent=",
            "nodeos.vol=/dev/vdc:/data",
            "nodeos.vol=/dev/vdc:/data:rw:x",
            "nodeos.vol=/dev/vdc:/data:rx",
            "nodeos.vol=/dev/sda:/data:rw",
            "nodeos.vol=/dev/vd:/data:rw",
            "nodeos.vol=/dev/vd1:/data:rw",
            "nodeos.vol=/dev/vdc:data:rw",
            "nodeos.vol=/dev/vdc:/:rw",
            "nodeos.vol=/dev/vdc:/a/../etc:rw",
            "nodeos.vol=/dev/vdc:/a/%2e%2e/etc:rw",
            "nodeos.vol=/dev/vdc:/a%2:rw",
            "nodeos.vol=/dev/vdc:/a%zz:rw",
            "nodeos.vol=/dev/vdc:/a%00b:rw",
            "nodeos.net=10.0.2.15/24,10.0.2.2",
            "nodeos.net=10.0.2.15,10.0.2.2,10.0.2.3",
            "nodeos.net=10.0.2.15/33,10.0.2.2,10.0.2.3",
            "nodeos.net=10.0.2.256/24,10.0.2.2,10.0.2.3",
            "nodeos.net=10.0.2.15/24,gw,10.0.2.3",
            "nodeos.net=10.0.2.15/24,10.0.2.2,10.0.2.3,1.1.1.1",
            "nodeos.net=::1/64,::2,::3",
        ] {
            let err = Cmdline::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("kernel command line: {bad}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn quotes_group_words() {
        assert_eq!(split_words(r#"a="b c" d  "e""#), vec!["a=b c", "d", "e"]);
        assert_eq!(split_words("  \n"), Vec::<String>::new());
        assert_eq!(split_words(r#"x="""#), vec!["x="]);
    }
}
