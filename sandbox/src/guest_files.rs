//! A guest's files as its user sees them (the sandbox API's files, `nodeos-vm cp` into a VM). Every operation is one POSIX sh script that the
//! guest agent runs as the guest's user (uid 1000, `node`): the guest's kernel enforces that
//! user's permissions, and the host never reads the guest's file system — file contents and
//! tar archives pass through as bytes, and the one thing the host parses is a folder's listing
//! (bounded by the caller). Paths are absolute and plain ([`check_path`]); the script refuses a
//! path that goes through a symlink (the guest's `realpath` of it differs from it): a link the
//! guest made cannot redirect a write or a read the client aimed elsewhere. (The check and the
//! operation are two steps inside the guest, whose own processes could race them: that only
//! moves data within the guest, which its user may do anyway.)

use std::time::Duration;

use serde::Serialize;

use crate::agent::{Command, Outcome};

/// Longest path taken, in bytes (Linux's `PATH_MAX` less its NUL).
const MAX_PATH: usize = 4095;
/// How long one operation may run in the guest (an upload or download included).
const OP_TIMEOUT: Duration = Duration::from_secs(600);

/// The operations, each a branch of [`SCRIPT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// The file's bytes on stdout.
    Read,
    /// Stdin into the file (created, or truncated; missing folders above it made).
    Write,
    /// The folder's entries, NUL-separated `TYPE SIZE MODE MTIME NAME` (find's `-printf`).
    List,
    /// The file or folder, and all in it.
    Remove,
    /// The folder and those above it (made only below a folder reached through no symlink).
    Mkdir,
    /// A tar archive of the folder's contents (or of the file) on stdout.
    TarOut,
    /// The tar archive on stdin, extracted into the folder (made when missing).
    TarIn,
    /// What is there, on stdout: `dir`, `file`, `other` (a symlink included) or `none` (its
    /// folder exists, it does not).
    Kind,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::List => "list",
            Op::Remove => "remove",
            Op::Mkdir => "mkdir",
            Op::TarOut => "tar-out",
            Op::TarIn => "tar-in",
            Op::Kind => "kind",
        }
    }

    /// Whether it reads its stdin.
    fn takes_input(self) -> bool {
        matches!(self, Op::Write | Op::TarIn)
    }
}

/// Exit statuses of [`SCRIPT`]'s refusals (its message on stderr).
const NOT_FOUND: i32 = 10;
const THROUGH_SYMLINK: i32 = 11;
const WRONG_KIND: i32 = 12;

/// Run as `sh -c SCRIPT sh OP PATH`.
const SCRIPT: &str = r#"set -u
fail() { printf '%s\n' "$2" >&2; exit "$1"; }
plain() {
  r=$(realpath -e -- "$1" 2>/dev/null) || fail 10 "$1: no such file or folder (or the sandbox's user may not reach it)"
  [ "$r" = "$1" ] || fail 11 "$1 goes through a symlink (to $r): refused"
}
parent() { d=${1%/*}; printf '%s' "${d:-/}"; }
made() {
  a=$1; while [ ! -e "$a" ] && [ ! -L "$a" ]; do a=$(parent "$a"); done
  plain "$a"; mkdir -p -- "$1" || { [ -e "$1" ] && fail 12 "$1 is not a folder"; exit 1; }
  plain "$1"
}
op=$1 p=$2
case $op in
read) plain "$p"; [ -f "$p" ] || fail 12 "$p is not a regular file"; exec cat -- "$p";;
write) d=$(parent "$p"); made "$d"
  [ -L "$p" ] && fail 11 "$p is a symlink: refused"
  [ -d "$p" ] && fail 12 "$p is a folder"
  exec cat > "$p";;
list) plain "$p"; [ -d "$p" ] || fail 12 "$p is not a folder"
  exec find "$p" -mindepth 1 -maxdepth 1 -printf '%y %s %m %T@ %f\0';;
remove) [ "$p" = / ] && fail 12 "the root folder cannot be removed"
  plain "$(parent "$p")"
  [ -e "$p" ] || [ -L "$p" ] || fail 10 "$p: no such file or folder"
  exec rm -rf -- "$p";;
mkdir) made "$p";;
tar-out) plain "$p"
  if [ -d "$p" ]; then exec tar -c -f - -C "$p" .; fi
  exec tar -c -f - -C "$(parent "$p")" -- "${p##*/}";;
tar-in) made "$p"; [ -d "$p" ] || fail 12 "$p is not a folder"
  exec tar -x -f - -C "$p" --no-same-owner;;
kind) [ "$p" = / ] || plain "$(parent "$p")"
  if [ -L "$p" ]; then echo other; elif [ -d "$p" ]; then echo dir; elif [ -f "$p" ]; then echo file
  elif [ -e "$p" ]; then echo other; else echo none; fi;;
esac
"#;

/// Why an operation did not happen (the guest's words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    ThroughSymlink(String),
    #[error("{0}")]
    WrongKind(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Failed(String),
}

/// Refuses a path that is not absolute and plain: no `.` or `..` component, no empty one but
/// a trailing `/`, no NUL, at most [`MAX_PATH`] bytes. Gives it without its trailing `/`.
pub fn check_path(path: &str) -> Result<&str, Refusal> {
    let bad = |why: &str| Err(Refusal::BadPath(format!("path {path:?} {why}")));
    if !path.starts_with('/') {
        return bad("is not absolute: give the guest's path, like /home/node/file.txt");
    }
    if path.len() > MAX_PATH || path.contains('\0') {
        return bad(&format!("is longer than {MAX_PATH} bytes or holds a NUL"));
    }
    let trimmed = match path.trim_end_matches('/') {
        "" => "/",
        t => t,
    };
    if trimmed != "/"
        && trimmed[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("has an empty, `.` or `..` component: give it plain");
    }
    Ok(trimmed)
}

/// The guest command that does `op` on `path` (checked), as the guest's user.
pub fn command(op: Op, path: &str) -> Command {
    Command {
        argv: ["sh", "-c", SCRIPT, "sh", op.name(), path]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect(),
        env: Vec::new(),
        cwd: None,
        stdin: op.takes_input(),
        timeout: Some(OP_TIMEOUT),
        container: None,
        tty: None,
    }
}

/// What an operation's end means: done, or the refusal its status and `stderr` say.
pub fn outcome(outcome: &Outcome, stderr: &[u8]) -> Result<(), Refusal> {
    let message = || String::from_utf8_lossy(stderr).trim().to_string();
    match outcome {
        Outcome::Exited(0) => Ok(()),
        Outcome::Exited(NOT_FOUND) => Err(Refusal::NotFound(message())),
        Outcome::Exited(THROUGH_SYMLINK) => Err(Refusal::ThroughSymlink(message())),
        Outcome::Exited(WRONG_KIND) => Err(Refusal::WrongKind(message())),
        Outcome::Exited(_) if message().contains("Permission denied") => {
            Err(Refusal::Denied(message()))
        }
        Outcome::Exited(code) => Err(Refusal::Failed(format!(
            "the guest's {code}: {}",
            message()
        ))),
        Outcome::Signaled(signal) => Err(Refusal::Failed(format!(
            "ended by signal {signal} in the guest"
        ))),
        Outcome::TimedOut(t) => Err(Refusal::Failed(format!("ran longer than {t:?}"))),
        Outcome::NotFound(m) | Outcome::NotExecutable(m) => Err(Refusal::Failed(m.clone())),
    }
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub mode: u32,
    pub modified_ms: u64,
}

/// Parses [`Op::List`]'s output, sorted by name; a record that does not parse, or whose name
/// is not one plain component, is left out (the guest wrote it).
pub fn parse_listing(output: &[u8]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = output
        .split(|&b| b == 0)
        .filter_map(|record| {
            let text = std::str::from_utf8(record).ok()?;
            let mut fields = text.splitn(5, ' ');
            let kind = match fields.next()? {
                "f" => "file",
                "d" => "dir",
                "l" => "symlink",
                _ => "other",
            };
            let size = fields.next()?.parse().ok()?;
            let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
            let seconds: f64 = fields.next()?.parse().ok()?;
            let name = fields
                .next()
                .filter(|n| !matches!(*n, "" | "." | "..") && !n.contains('/'))?;
            Some(Entry {
                name: name.to_string(),
                kind,
                size,
                mode,
                modified_ms: (seconds * 1000.0) as u64,
            })
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_absolute_and_plain() {
        assert_eq!(check_path("/home/node/a.txt"), Ok("/home/node/a.txt"));
        assert_eq!(check_path("/home/node/"), Ok("/home/node"));
        assert_eq!(check_path("/"), Ok("/"));
        assert_eq!(check_path("//"), Ok("/"));
        for bad in [
            "a.txt",
            "",
            "/home/../etc",
            "/home/./x",
            "/home//x",
            "/a\0b",
        ] {
            assert!(
                matches!(check_path(bad), Err(Refusal::BadPath(_))),
                "{bad:?}"
            );
        }
        assert!(check_path(&format!("/{}", "a".repeat(MAX_PATH))).is_err());
    }

    #[test]
    fn a_listing_parses_and_bad_records_are_left_out() {
        let output = b"f 12 644 1700000000.5 b c.txt\0d 4096 755 1700000001.0000000000 a\0\
                       l 9 777 1.0 link\0x y z\0f 1 644 1.0 \0f 1 644 1.0 a/b\0d 1 755 1.0 ..\0";
        let entries = parse_listing(output);
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b c.txt", "link"]);
        assert_eq!(entries[1].kind, "file");
        assert_eq!(entries[1].size, 12);
        assert_eq!(entries[1].mode, 0o644);
        assert_eq!(entries[1].modified_ms, 1_700_000_000_500);
        assert_eq!(entries[0].kind, "dir");
        assert_eq!(entries[2].kind, "symlink");
    }

    #[test]
    fn statuses_become_refusals() {
        let err = |code, text: &str| outcome(&Outcome::Exited(code), text.as_bytes());
        assert_eq!(err(0, ""), Ok(()));
        assert!(matches!(err(10, "x"), Err(Refusal::NotFound(m)) if m == "x"));
        assert!(matches!(err(11, "x"), Err(Refusal::ThroughSymlink(_))));
        assert!(matches!(err(12, "x"), Err(Refusal::WrongKind(_))));
        assert!(matches!(
            err(2, "sh: 1: cannot create /etc/x: Permission denied"),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(err(1, "boom"), Err(Refusal::Failed(_))));
    }
}
