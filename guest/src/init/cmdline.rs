//! The `nodeos.*` parameters of the kernel command line (docs/guest-contract.md).

use std::path::PathBuf;

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
}

/// The parsed `nodeos.*` parameters, with the contract's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    pub console: ConsoleMode,
    pub cols: Option<u16>,
    pub rows: Option<u16>,
    pub upper: Upper,
    pub shell: Shell,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            console: ConsoleMode::Tty,
            cols: None,
            rows: None,
            upper: Upper::Tmpfs,
            shell: Shell::Repl,
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
                        _ => return Err(bad("must be repl")),
                    }
                }
                _ => {}
            }
        }
        Ok(cmdline)
    }
}

fn parse_size(value: &str) -> Option<u16> {
    value.parse::<u16>().ok().filter(|&n| n > 0)
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
            }
        );
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
