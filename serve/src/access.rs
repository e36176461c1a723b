//! Who may use which listener. The admin API takes only requests that carry its token
//! (`Authorization: Bearer <token>`): whatever can reach it — a `--net` guest reaches the
//! host's loopback at 10.0.2.2, so can any local user — can otherwise deploy code. Both
//! listeners take only requests addressed to them (`Host`): a web page whose own name its site
//! rebinds to 127.0.0.1 (DNS rebinding) still sends that name, and is refused.

use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file in serve's data folder that holds the token serve generated.
pub const TOKEN_FILE: &str = "serve-token";
/// Random bytes in a generated token (written as hex).
const TOKEN_BYTES: usize = 32;
/// Shortest token taken from `--token-file`.
const MIN_TOKEN_CHARS: usize = 16;
/// Permission bits that let anyone but the owner read or write a file.
const OTHERS_BITS: u32 = 0o077;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("generating the admin token")]
    Random(#[source] getrandom::Error),
    #[error("reading the token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the token file {path} may be read or written by other users (mode {mode:o}); `chmod 600` it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the token file {path} holds no token")]
    Empty { path: PathBuf },
    #[error("the token in {path} is shorter than {MIN_TOKEN_CHARS} characters: too easy to guess")]
    TooShort { path: PathBuf },
    #[error("the token in {path} has characters an Authorization header cannot carry (use printable ASCII without spaces)")]
    Unsendable { path: PathBuf },
    #[error("writing the token file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Why a request to the admin API is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the admin API needs the header `Authorization: Bearer <token>`, with the token `nodeos-vm serve` printed at start (also in the file {TOKEN_FILE} in its data folder)")]
    NoToken,
    #[error("the Authorization header is not `Bearer <token>`")]
    NotBearer,
    #[error("the token is not this server's")]
    WrongToken,
}

/// The admin API's secret. Its text is printed once and kept in a file only its owner reads;
/// `Debug` does not show it.
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A fresh token: `TOKEN_BYTES` random bytes from the kernel, in hex.
    pub fn generate() -> Result<Token, TokenError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
        Ok(Token(hex::encode(bytes)))
    }

    /// The token in the file at `path` (surrounding white space ignored), which no other user
    /// may read or write.
    pub fn from_file(path: &Path) -> Result<Token, TokenError> {
        let read = |source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & OTHERS_BITS != 0 {
            return Err(TokenError::Exposed {
                path: path.to_path_buf(),
                mode: mode & 0o7777,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let token = text.trim();
        let path = path.to_path_buf();
        if token.is_empty() {
            Err(TokenError::Empty { path })
        } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
            Err(TokenError::Unsendable { path })
        } else if token.len() < MIN_TOKEN_CHARS {
            Err(TokenError::TooShort { path })
        } else {
            Ok(Token(token.to_string()))
        }
    }

    /// Writes the token to `path`, readable and writable by this user only: written whole
    /// into a new file of mode 0600 beside it, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let write = |source| TokenError::Write {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(write)?;
        // tempfile creates its files with mode 0600.
        let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write)?;
        writeln!(file, "{}", self.0).map_err(write)?;
        file.persist(path).map_err(|e| write(e.error))?;
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `authorization` (the header's value, if any) is `Bearer <this token>`. The
    /// comparison takes the same time wherever the two differ.
    pub fn check(&self, authorization: Option<&[u8]>) -> Result<(), Refusal> {
        let value = authorization.ok_or(Refusal::NoToken)?;
        let presented = bearer(value).ok_or(Refusal::NotBearer)?;
        if same_bytes(presented, self.0.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::WrongToken)
        }
    }
}

/// The credentials of an `Authorization: Bearer <credentials>` value (the scheme's case is
/// free, RFC 9110).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    let (scheme, rest) = value.split_at_checked(SCHEME.len())?;
    scheme
        .eq_ignore_ascii_case(SCHEME)
        .then(|| rest.trim_ascii())
}

/// `a == b` in a time that depends on their lengths only, not on their contents (a token's
/// length is no secret: a generated one is always `2 * TOKEN_BYTES` characters).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    // Keeps the compiler from stopping at the first difference.
    std::hint::black_box(difference) == 0
}

#[derive(Debug, thiserror::Error)]
#[error("host name {0:?}: use letters, digits, '-' and '.' (no port, no scheme)")]
pub struct BadHostName(String);

/// A `--allow-host` value: a DNS name (or an IP address), lower case.
pub fn host_name(name: &str) -> Result<String, BadHostName> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && (name.parse::<IpAddr>().is_ok()
            || name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if ok {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(BadHostName(name.to_string()))
    }
}

/// The `Host` values a listener takes: its own address (`IP:port` as bound; any IP address
/// with its port when it is bound to all of them: a client that names an address cannot have
/// been rebound), `localhost:port`, and the names the operator allowed, at any port.
#[derive(Debug, Clone)]
pub struct Hosts {
    bound: SocketAddr,
    names: Arc<[String]>,
}

impl Hosts {
    /// For a listener bound to `bound`; `names` as `host_name` gives them.
    pub fn new(bound: SocketAddr, names: &[String]) -> Hosts {
        Hosts {
            bound,
            names: names.into(),
        }
    }

    /// Whether `host` (a `Host` header's value, or a request target's authority) names this
    /// listener.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        let name = name.to_ascii_lowercase();
        if self.names.contains(&name) {
            return true;
        }
        if port != self.bound.port() {
            return false;
        }
        match name.parse::<IpAddr>() {
            Ok(ip) => ip == self.bound.ip() || self.bound.ip().is_unspecified(),
            Err(_) => name == "localhost",
        }
    }

    /// What `allows` takes, for an error message.
    pub fn describe(&self) -> String {
        let mut text = format!("{} or localhost:{}", self.bound, self.bound.port());
        if !self.names.is_empty() {
            text.push_str(&format!(" or {}", self.names.join(", ")));
        }
        text
    }
}

/// A `Host` value's name (an IPv6 address without its brackets) and port (80 when none).
fn split_host(host: &str) -> Option<(&str, u16)> {
    const HTTP_PORT: u16 = 80;
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        (ip, after)
    } else {
        match host.rsplit_once(':') {
            // An IPv6 address must be in brackets.
            Some((name, _)) if name.contains(':') => return None,
            Some((name, _)) => (name, &host[name.len()..]),
            None => (host, ""),
        }
    };
    let port = match port {
        "" => HTTP_PORT,
        p => p.strip_prefix(':')?.parse().ok()?,
    };
    (!name.is_empty()).then_some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_random_and_saved_for_the_owner_only() {
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert_eq!(a.as_str().len(), 2 * TOKEN_BYTES);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(format!("{a:?}"), "Token(..)");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data").join(TOKEN_FILE);
        a.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(Token::from_file(&path).unwrap().as_str(), a.as_str());
        // A second start replaces it.
        b.save(&path).unwrap();
        assert_eq!(Token::from_file(&path).unwrap().as_str(), b.as_str());
    }

    #[test]
    fn token_files_that_others_can_read_or_that_hold_no_good_token_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let good = "0123456789abcdef-long-enough";
        assert_eq!(
            Token::from_file(&file("good", &format!("  {good}\n"), 0o600))
                .unwrap()
                .as_str(),
            good
        );
        assert_eq!(
            Token::from_file(&file("read-only", good, 0o400))
                .unwrap()
                .as_str(),
            good
        );
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602] {
            let error = Token::from_file(&file("exposed", good, mode)).unwrap_err();
            assert!(matches!(error, TokenError::Exposed { .. }), "{mode:o}");
            assert!(
                error.to_string().contains(&format!("mode {mode:o}")),
                "{error}"
            );
        }
        for (text, kind) in [
            ("", "empty"),
            (" \n\n", "empty"),
            ("short", "short"),
            ("0123456789abcdef with spaces", "unsendable"),
            ("0123456789abcdefé", "unsendable"),
        ] {
            let error = Token::from_file(&file("bad", text, 0o600)).unwrap_err();
            let matched = match kind {
                "empty" => matches!(error, TokenError::Empty { .. }),
                "short" => matches!(error, TokenError::TooShort { .. }),
                _ => matches!(error, TokenError::Unsendable { .. }),
            };
            assert!(matched, "{text:?}: {error}");
        }
        let missing = Token::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }

    #[test]
    fn only_bearer_and_the_exact_token_pass() {
        let token = Token("s3cret-token-0123456789".into());
        assert_eq!(token.check(Some(b"Bearer s3cret-token-0123456789")), Ok(()));
        assert_eq!(
            token.check(Some(b"bearer  s3cret-token-0123456789 ")),
            Ok(())
        );
        assert_eq!(token.check(None), Err(Refusal::NoToken));
        for not_bearer in [
            &b"Basic czNjcmV0"[..],
            b"Bearer",
            b"s3cret-token-0123456789",
            b"",
        ] {
            assert_eq!(token.check(Some(not_bearer)), Err(Refusal::NotBearer));
        }
        for wrong in [
            &b"Bearer s3cret-token-012345678"[..],
            b"Bearer s3cret-token-01234567890",
            b"Bearer S3cret-token-0123456789",
            b"Bearer ",
        ] {
            assert_eq!(token.check(Some(wrong)), Err(Refusal::WrongToken));
        }
        assert!(same_bytes(b"", b""));
        assert!(!same_bytes(b"a", b"b"));
    }

    #[test]
    fn hosts_are_the_listeners_own_localhost_or_allowed_names() {
        let loopback = Hosts::new("127.0.0.1:8080".parse().unwrap(), &[]);
        for good in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080"] {
            assert!(loopback.allows(good), "{good}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost",
            "localhost.:8080",
            "127.0.0.2:8080",
            "[::1]:8080",
            "127.0.0.1:8080:8080",
            "127.0.0.1:",
            ":8080",
            "",
        ] {
            assert!(!loopback.allows(bad), "{bad}");
        }

        let names = [host_name("API.example.com").unwrap()];
        let allowed = Hosts::new("127.0.0.1:8080".parse().unwrap(), &names);
        for good in [
            "api.example.com",
            "api.example.com:443",
            "Api.Example.Com:8080",
        ] {
            assert!(allowed.allows(good), "{good}");
        }
        assert!(!allowed.allows("example.com:8080"));

        let v6 = Hosts::new("[::1]:9000".parse().unwrap(), &[]);
        assert!(v6.allows("[::1]:9000") && v6.allows("localhost:9000"));
        assert!(!v6.allows("[::1]") && !v6.allows("::1:9000"));

        // Bound to every address: any address (not a name) at its port.
        let any = Hosts::new("0.0.0.0:80".parse().unwrap(), &[]);
        for good in ["10.1.2.3", "10.1.2.3:80", "[fe80::1]", "localhost"] {
            assert!(any.allows(good), "{good}");
        }
        assert!(!any.allows("rebound.example") && !any.allows("10.1.2.3:81"));
    }

    #[test]
    fn allowed_host_names_are_checked() {
        assert_eq!(host_name("My-Host.example").unwrap(), "my-host.example");
        assert_eq!(host_name("10.0.0.1").unwrap(), "10.0.0.1");
        for bad in ["", "host:80", "http://host", "a b", "host/x", "é.example"] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
    }
}
