//! The npm registry configured on the host, as a guest with `--net` reaches it: npm in the VM
//! uses the same registry (a company mirror, a local Verdaccio) as npm on the host. A registry
//! on the host's loopback is reached through the guest's gateway to it, 10.0.2.2.

use std::path::PathBuf;

use contract::params::EnvVar;
use vmm::vm::NetSpec;

/// The guest environment entry that points the guest's npm at the host's registry
/// (`npm_config_registry`), when the host configures one and the guest has a network.
pub fn guest_env(net: Option<&NetSpec>) -> Option<EnvVar> {
    let net = net?;
    let url = host_registry()?;
    let url = match net {
        NetSpec::User => through_gateway(&url),
        // A TAP network is the host's to route: the URL must already name an address the
        // guest can reach.
        NetSpec::Tap(_) => url,
    };
    EnvVar::new("npm_config_registry", url).ok()
}

/// `npm_config_registry` from the environment (npm reads it in either case), else `registry=`
/// in the user's npmrc (`$NPM_CONFIG_USERCONFIG` or `~/.npmrc`).
fn host_registry() -> Option<String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(url) = var("npm_config_registry").or_else(|| var("NPM_CONFIG_REGISTRY")) {
        return Some(url.trim().to_string());
    }
    let npmrc = var("NPM_CONFIG_USERCONFIG")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| PathBuf::from(home).join(".npmrc")))?;
    registry_in_npmrc(&std::fs::read_to_string(npmrc).ok()?)
}

/// The `registry = URL` line of an npmrc (ini syntax, `;` and `#` comments).
fn registry_in_npmrc(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with(';') && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(key, _)| key.trim() == "registry")
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .rfind(|value| !value.is_empty())
}

/// `URL` with a loopback host (`localhost`, `127.x.y.z`, `[::1]`) replaced by the address the
/// guest reaches the host's loopback at.
fn through_gateway(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
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
        return url.to_string();
    }
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let gateway = contract::net::GATEWAY;
    format!("{scheme}://{userinfo}{gateway}{port}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_go_through_the_gateway() {
        for (host, guest) in [
            ("http://127.0.0.1:4873/", "http://10.0.2.2:4873/"),
            ("http://localhost:4873", "http://10.0.2.2:4873"),
            ("http://LOCALHOST/npm/", "http://10.0.2.2/npm/"),
            ("http://[::1]:4873/x?y", "http://10.0.2.2:4873/x?y"),
            ("http://me:pw@127.1.2.3:80/", "http://me:pw@10.0.2.2:80/"),
            ("https://registry.npmjs.org/", "https://registry.npmjs.org/"),
            (
                "https://npm.example.com:8443/",
                "https://npm.example.com:8443/",
            ),
            (
                "http://127.0.0.1.example.com/",
                "http://127.0.0.1.example.com/",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(through_gateway(host), guest, "{host}");
        }
    }

    #[test]
    fn npmrc_registry_line() {
        let rc = "; comment\n# registry=http://no/\nfund=false\n registry = \"http://127.0.0.1:4873/\" \n";
        assert_eq!(
            registry_in_npmrc(rc).as_deref(),
            Some("http://127.0.0.1:4873/")
        );
        assert_eq!(registry_in_npmrc("@scope:registry=http://x/\n"), None);
        assert_eq!(registry_in_npmrc(""), None);
    }
}
