//! The npm registry configured on the host, as a guest with `--net` reaches it: npm in the VM
//! uses the same registry (a company mirror, a local Verdaccio) as npm on the host. A registry
//! on the host's loopback is reached through the guest's gateway, 10.0.2.2, on its port only:
//! the caller opens that port of the host's loopback to the guest
//! ([`vmm::vm::HostLoopback::open_tcp_port`]), and no other. The CA file npm on the host
//! trusts (`cafile`) goes to the guest too ([`host_cafile`], crate::host_ca).

use std::path::PathBuf;

use contract::env::EnvVar;
use vmm::vm::NetSpec;

/// The host's registry, for the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRegistry {
    /// `npm_config_registry`, pointing the guest's npm at it.
    pub env: EnvVar,
    /// Where it is on the host's loopback (a TCP port), when it is there.
    pub loopback_port: Option<u16>,
}

/// The host's registry as the guest reaches it, when the host configures one and the guest
/// has a network.
pub fn guest_registry(net: Option<&NetSpec>) -> Option<GuestRegistry> {
    let net = net?;
    let url = host_registry()?;
    let (url, loopback_port) = match net {
        NetSpec::User { .. } => match through_gateway(&url) {
            Some((url, port)) => (url, Some(port)),
            None => (url, None),
        },
        // A TAP network is the host's to route: the URL must already name an address the
        // guest can reach.
        NetSpec::Tap(_) => (url, None),
    };
    let env = EnvVar::new("npm_config_registry", url).ok()?;
    Some(GuestRegistry { env, loopback_port })
}

/// The CA file the host's npm trusts (`cafile`), for the guest's `NODE_EXTRA_CA_CERTS`
/// (crate::host_ca); a leading `~/` is the user's home, as npm reads it.
pub fn host_cafile() -> Option<PathBuf> {
    let path = host_setting("cafile")?;
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Some(PathBuf::from(home).join(rest)),
        _ => Some(PathBuf::from(path)),
    }
}

/// The registry npm on the host uses.
fn host_registry() -> Option<String> {
    host_setting("registry")
}

/// npm's setting `key` on the host: `npm_config_KEY` from the environment (npm reads it in
/// either case), else `KEY=` in the user's npmrc (`$NPM_CONFIG_USERCONFIG` or `~/.npmrc`).
fn host_setting(key: &str) -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let lower = format!("npm_config_{key}");
    if let Some(value) = var(&lower).or_else(|| var(&lower.to_uppercase())) {
        return Some(value.trim().to_string());
    }
    let npmrc = var("NPM_CONFIG_USERCONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".npmrc")))?;
    npmrc_value(&std::fs::read_to_string(npmrc).ok()?, key)
}

/// The last non-empty `key = value` of an npmrc (ini syntax, `;` and `#` comments).
fn npmrc_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with(';') && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .rfind(|value| !value.is_empty())
}

/// `URL` with its loopback host (`localhost`, `127.x.y.z`, `[::1]`) replaced by the address
/// the guest reaches the host's loopback at, and the TCP port it names (the scheme's when it
/// names none); `None` when the URL is not on the loopback (or not a URL).
fn through_gateway(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((user, hp)) => (Some(user), hp),
        None => (None, authority),
    };
    let (host, port) = if host_port.starts_with('[') {
        match host_port.find(']') {
            Some(i) => host_port.split_at(i + 1),
            None => (host_port, ""),
        }
    } else {
        match host_port.find(':') {
            Some(i) => host_port.split_at(i),
            None => (host_port, ""),
        }
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return None;
    }
    let port_number = match port.strip_prefix(':') {
        Some(number) => number.parse().ok()?,
        None if scheme.eq_ignore_ascii_case("http") => 80,
        None if scheme.eq_ignore_ascii_case("https") => 443,
        None => return None,
    };
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let gateway = contract::net::GATEWAY;
    Some((
        format!("{scheme}://{userinfo}{gateway}{port}{path}"),
        port_number,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_go_through_the_gateway() {
        for (host, guest) in [
            (
                "http://127.0.0.1:4873/",
                Some(("http://10.0.2.2:4873/", 4873)),
            ),
            (
                "http://localhost:4873",
                Some(("http://10.0.2.2:4873", 4873)),
            ),
            ("http://LOCALHOST/npm/", Some(("http://10.0.2.2/npm/", 80))),
            ("https://localhost/", Some(("https://10.0.2.2/", 443))),
            (
                "http://[::1]:4873/x?y",
                Some(("http://10.0.2.2:4873/x?y", 4873)),
            ),
            (
                "http://me:pw@127.1.2.3:81/",
                Some(("http://me:pw@10.0.2.2:81/", 81)),
            ),
            ("https://registry.npmjs.org/", None),
            ("https://npm.example.com:8443/", None),
            ("http://127.0.0.1.example.com/", None),
            ("http://127.0.0.1:99999/", None),
            ("not a url", None),
        ] {
            let guest = guest.map(|(url, port)| (url.to_string(), port));
            assert_eq!(through_gateway(host), guest, "{host}");
        }
    }

    #[test]
    fn npmrc_registry_line() {
        let rc = "; comment\n# registry=http://no/\nfund=false\n registry = \"http://127.0.0.1:4873/\" \n";
        assert_eq!(
            npmrc_value(rc, "registry").as_deref(),
            Some("http://127.0.0.1:4873/")
        );
        assert_eq!(npmrc_value("@scope:registry=http://x/\n", "registry"), None);
        assert_eq!(npmrc_value("", "registry"), None);
    }

    #[test]
    fn npmrc_cafile_line() {
        let rc =
            "registry=https://npm.example.com/\n;cafile=/no.pem\ncafile = /etc/proxy-ca.pem\nca=\n";
        assert_eq!(
            npmrc_value(rc, "cafile").as_deref(),
            Some("/etc/proxy-ca.pem")
        );
        assert_eq!(npmrc_value("cafile=\n", "cafile"), None);
        assert_eq!(npmrc_value(rc, "ca"), None);
    }
}
