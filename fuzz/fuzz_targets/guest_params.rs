//! The `nodeos.*` kernel parameters: the host renders a `GuestParams` with `Display`, the
//! guest's init reads /proc/cmdline with `GuestParams::parse`. Any text parses or is refused
//! without a panic; whatever parses renders as plain kernel words and reads back the same; and a
//! value the host builds from the checked constructors reads back the same exactly when
//! `validate` accepts it.
#![no_main]

use std::net::Ipv4Addr;

use arbitrary::Arbitrary;
use contract::disks::device_path;
use contract::params::{AgentTransport, ConsoleMode, GuestParams, NetConfig, Shell, Upper, Volume};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Case {
    /// Any text as /proc/cmdline.
    Text(String),
    /// `nodeos.KEY=VALUE` words, with the keys the guest knows (and two it does not: `env`
    /// is an old host's, the environment now comes over the agent link).
    Words(Vec<(u8, String)>),
    /// A value the host builds.
    Value(Value),
}

const KEYS: [&str; 11] = [
    "console", "cols", "rows", "upper", "shell", "agent", "warm", "vol", "net", "env", "other",
];
const SHELLS: [Shell; 3] = [Shell::Repl, Shell::Nsh, Shell::None];
const AGENTS: [Option<AgentTransport>; 3] = [
    None,
    Some(AgentTransport::Vsock),
    Some(AgentTransport::Serial),
];

/// A [`GuestParams`] as the host could build it, every field from the input.
#[derive(Arbitrary, Debug)]
struct Value {
    pipe: bool,
    cols: Option<u16>,
    rows: Option<u16>,
    upper: Option<Device>,
    shell: u8,
    agent: u8,
    warm: bool,
    volumes: Vec<(Device, String, bool)>,
    net: Option<Net>,
}

#[derive(Arbitrary, Debug)]
struct Net {
    address: [u8; 4],
    prefix: u8,
    gateway: [u8; 4],
    dns: [u8; 4],
}

/// A block device: the one the host attaches at an index, or any text.
#[derive(Arbitrary, Debug)]
enum Device {
    Index(u16),
    Text(String),
}

impl Device {
    fn path(self) -> String {
        match self {
            Device::Index(i) => device_path(usize::from(i)),
            Device::Text(text) => text,
        }
    }
}

/// The value, with the disks and volumes that the constructors accept.
fn build(v: Value) -> GuestParams {
    GuestParams {
        console: if v.pipe {
            ConsoleMode::Pipe
        } else {
            ConsoleMode::Tty
        },
        cols: v.cols,
        rows: v.rows,
        upper: v
            .upper
            .and_then(|d| Upper::disk(d.path()).ok())
            .unwrap_or(Upper::Tmpfs),
        shell: SHELLS[usize::from(v.shell) % SHELLS.len()],
        agent: AGENTS[usize::from(v.agent) % AGENTS.len()],
        warm: v.warm,
        volumes: v
            .volumes
            .into_iter()
            .filter_map(|(device, mount_point, ro)| {
                Volume::new(device.path(), mount_point, ro).ok()
            })
            .collect(),
        net: v.net.map(|n| NetConfig {
            address: Ipv4Addr::from(n.address),
            prefix: n.prefix,
            gateway: Ipv4Addr::from(n.gateway),
            dns: Ipv4Addr::from(n.dns),
        }),
    }
}

/// Parses `text` as the guest does; what it accepts must survive the host's rendering.
fn check_text(text: &str) {
    if let Ok(p) = GuestParams::parse(text) {
        assert_eq!(p.validate(), Ok(()), "{text:?}");
        check_round_trip(&p);
    }
}

/// `p` renders as words the kernel splits as the guest does, and reads back as itself.
fn check_round_trip(p: &GuestParams) {
    let text = p.to_string();
    assert!(
        text.bytes()
            .all(|b| (b.is_ascii_graphic() && b != b'"') || b == b' '),
        "{text:?}"
    );
    assert!(!text.starts_with(' ') && !text.ends_with(' ') && !text.contains("  "));
    assert_eq!(GuestParams::parse(&text).as_ref(), Ok(p), "{text:?}");
}

fuzz_target!(|case: Case| match case {
    Case::Text(text) => check_text(&text),
    Case::Words(words) => {
        let text: Vec<String> = words
            .iter()
            .map(|(key, value)| format!("nodeos.{}={value}", KEYS[usize::from(*key) % KEYS.len()]))
            .collect();
        check_text(&text.join(" "));
    }
    Case::Value(value) => {
        let p = build(value);
        match p.validate() {
            Ok(()) => check_round_trip(&p),
            Err(e) => assert_ne!(
                GuestParams::parse(&p.to_string()),
                Ok(p),
                "refused by validate ({e}), read back by the guest"
            ),
        }
    }
});
