//! The guest's environment: `NAME=VALUE` entries the host adds to every command the agent runs
//! and to the shell PID 1 runs (the host's npm registry, say, whose URL may hold a password).
//!
//! They never go on the kernel command line, which every guest process can read in
//! /proc/cmdline (and the host's process list in QEMU's `-append`): the host sends them over
//! the agent link, as its answer to the agent's ready `Hello` ([`crate::frame::Request::Env`];
//! docs/agent-protocol.md). An [`EnvVar`] is checked when it is made, on either side, so what
//! the host sends is what the guest accepts. Errors name the variable, never its value.

use std::fmt;

/// One checked entry: a shell variable name and a value without a NUL byte.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvVar {
    name: String,
    value: String,
}

/// Why an entry is not one the guest takes (the value is never quoted: it may be a secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    name: String,
    why: &'static str,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "environment variable {:?}: {}", self.name, self.why)
    }
}

impl std::error::Error for EnvError {}

/// Valid entries only, as a host can send them: the name's other characters become `_` (a
/// leading `_` added where it would start with a digit or be empty), NULs leave the value.
#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for EnvVar {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let (name, value): (String, String) = u.arbitrary()?;
        let mut name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            name.insert(0, '_');
        }
        EnvVar::new(name, value.replace('\0', "")).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}

impl EnvVar {
    /// `name` must be a shell variable name (`[A-Za-z_][A-Za-z0-9_]*`), `value` any text
    /// without a NUL byte.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Result<EnvVar, EnvError> {
        let (name, value) = (name.into(), value.into());
        let bad = |why| {
            Err(EnvError {
                name: name.clone(),
                why,
            })
        };
        let valid_name = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return bad("not a shell variable name");
        }
        if value.contains('\0') {
            return bad("its value contains a NUL byte");
        }
        Ok(EnvVar { name, value })
    }

    /// An entry as an environment holds it, `NAME=VALUE`, checked as [`EnvVar::new`] checks.
    pub fn parse(entry: &[u8]) -> Result<EnvVar, EnvError> {
        let text = std::str::from_utf8(entry);
        let Some((name, value)) = text.ok().and_then(|t| t.split_once('=')) else {
            let name = entry.split(|&b| b == b'=').next().unwrap_or_default();
            return Err(EnvError {
                name: String::from_utf8_lossy(name).into_owned(),
                why: "not NAME=VALUE in UTF-8",
            });
        };
        EnvVar::new(name, value)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn value(&self) -> &str {
        &self.value
    }

    /// `NAME=VALUE`, as an environment holds it.
    pub fn entry(&self) -> Vec<u8> {
        format!("{}={}", self.name, self.value).into_bytes()
    }
}

/// The name only: values may be secrets, and debug output ends up in logs.
impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EnvVar({}=…)", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for (name, value) in [
            ("npm_config_registry", "http://me:secret@10.0.2.2:4873/"),
            ("EMPTY", ""),
            ("_A1", "x y=z\n\u{fc}"),
        ] {
            let var = EnvVar::new(name, value).unwrap();
            assert_eq!((var.name(), var.value()), (name, value));
            assert_eq!(var.entry(), format!("{name}={value}").into_bytes());
            assert_eq!(EnvVar::parse(&var.entry()).unwrap(), var);
        }
    }

    #[test]
    fn bad_entries_name_the_variable_not_the_value() {
        for (name, value) in [
            ("1X", "y"),
            ("", "y"),
            ("A-B", "y"),
            ("A B", "y"),
            ("A", "se\0cret"),
        ] {
            let err = EnvVar::new(name, value).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("environment variable {name:?}: ")),
                "{err}"
            );
            assert!(!err.contains("cret"), "{err}");
        }
        for entry in [&b"NOVALUE"[..], b"=x", b"A=\xff", b"\xffA=x"] {
            assert!(EnvVar::parse(entry).is_err(), "{entry:?}");
        }
        let err = EnvVar::parse(b"TOKEN=secret\0").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        let debug = format!("{:?}", EnvVar::new("TOKEN", "secret").unwrap());
        assert!(!debug.contains("secret"), "{debug}");
    }
}
