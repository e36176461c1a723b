//! Many checks in one box run: a box costs seconds to start, so tests batch their commands
//! into one script and read each one's output and status back from delimited sections.
//!
//! ```no_run
//! use kvm_box::{BoxRun, Script};
//! let mut script = Script::new();
//! script.setup("mkdir -p /tmp/work");
//! script.check("kvm-exists", "test -c /dev/kvm");
//! script.check("uname", "uname -r");
//! let out = kvm_box::run(&kvm_box::default_cache_dir(), &BoxRun::new(script.build())).unwrap();
//! let checks = out.checks();
//! assert!(checks["kvm-exists"].passed());
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

const BEGIN: &str = "@@KVM-BOX-CHECK-BEGIN ";
const END: &str = "@@KVM-BOX-CHECK-END ";

/// A shell function for L1, which has busybox `nc` but no curl: `http PORT METHOD PATH FILE`
/// sends one HTTP/1.1 request to 127.0.0.1:PORT with FILE as its body (and `$TOKEN`, when
/// set, as its bearer token) and prints the whole answer, head included. nc's input stays
/// open (a FIFO) until the server answers and closes: a server may drop a request whose client
/// half-closes first.
pub const HTTP_CLIENT: &str = r#"http() {
  f=/tmp/http.$$; rm -f $f; mkfifo $f
  nc 127.0.0.1 $1 <$f & nc=$!
  exec 3>$f
  printf '%s %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nAuthorization: Bearer %s\r\nContent-Length: %s\r\nConnection: close\r\n\r\n' "$2" "$3" $1 "$TOKEN" $(wc -c <"$4") >&3
  cat "$4" >&3
  wait $nc; exec 3>&-; rm -f $f; echo
}"#;

/// Each check's default time limit inside L1; a hung check then costs only itself.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Builds a box script from named checks.
#[derive(Debug, Clone, Default)]
pub struct Script {
    text: String,
    names: Vec<String>,
}

impl Script {
    pub fn new() -> Self {
        Self::default()
    }

    /// Shell lines run as they are, outside any check (set-up; their output is unsectioned).
    pub fn setup(&mut self, shell: &str) -> &mut Self {
        self.text.push_str(shell);
        self.text.push('\n');
        self
    }

    /// A check: `shell` runs in its own `sh -c`, stdout and stderr together, killed after
    /// [`DEFAULT_CHECK_TIMEOUT`].
    pub fn check(&mut self, name: &str, shell: &str) -> &mut Self {
        self.check_with_timeout(name, DEFAULT_CHECK_TIMEOUT, shell)
    }

    /// A check killed (status 137) after `timeout`; the next checks still run.
    ///
    /// Panics if `name` is empty, not made of `[A-Za-z0-9_.:-]`, or used twice: those are
    /// mistakes in the test, not conditions to handle.
    pub fn check_with_timeout(&mut self, name: &str, timeout: Duration, shell: &str) -> &mut Self {
        let valid = |c: char| c.is_ascii_alphanumeric() || "_.:-".contains(c);
        assert!(
            !name.is_empty() && name.chars().all(valid),
            "check name {name:?}: use [A-Za-z0-9_.:-]"
        );
        assert!(
            !self.names.iter().any(|n| n == name),
            "check name {name:?} used twice"
        );
        self.names.push(name.to_string());
        let secs = timeout.as_secs().max(1);
        // `read` is a shell builtin: the timing costs no fork. The newline before END puts the
        // marker on a line of its own whatever the check printed; the parser takes it off.
        self.text.push_str(&format!(
            "echo '{BEGIN}{name}'\n\
             read kvm_box_t0 kvm_box_rest </proc/uptime\n\
             timeout -s KILL {secs} sh -c {body} </dev/null 2>&1\n\
             kvm_box_status=$?\n\
             read kvm_box_t1 kvm_box_rest </proc/uptime\n\
             echo\n\
             echo \"{END}{name} $kvm_box_status $kvm_box_t0 $kvm_box_t1\"\n",
            body = shell_quote(shell)
        ));
        self
    }

    pub fn build(&self) -> String {
        self.text.clone()
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What it printed (stdout and stderr, interleaved), byte for byte.
    pub output: String,
    /// Its exit status; `None` if the box ended before it finished.
    pub status: Option<i32>,
    /// How long it ran by L1's clock (10 ms steps; emulated time, see the crate docs).
    pub elapsed: Option<Duration>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.status == Some(0)
    }
}

/// The checks found in a script's output, by name.
pub fn parse_checks(output: &str) -> BTreeMap<String, Check> {
    let mut checks = BTreeMap::new();
    let mut open: Option<(String, String)> = None;
    for line in output.split_inclusive('\n') {
        let bare = line.strip_suffix('\n').unwrap_or(line);
        if let Some(name) = bare.strip_prefix(BEGIN) {
            if let Some((name, text)) = open.take() {
                checks.insert(name, unfinished(text));
            }
            open = Some((name.to_string(), String::new()));
        } else if let Some(rest) = bare.strip_prefix(END) {
            let Some((name, mut text)) = open.take() else {
                continue;
            };
            // The wrapper's own newline before END.
            if text.ends_with('\n') {
                text.pop();
            }
            let check = match rest.split(' ').collect::<Vec<_>>().as_slice() {
                [end_name, status, t0, t1] if *end_name == name => Check {
                    output: text,
                    status: status.parse().ok(),
                    elapsed: elapsed(t0, t1),
                },
                _ => unfinished(text),
            };
            checks.insert(name, check);
        } else if let Some((_, text)) = open.as_mut() {
            text.push_str(line);
        }
    }
    if let Some((name, text)) = open {
        checks.insert(name, unfinished(text));
    }
    checks
}

fn unfinished(output: String) -> Check {
    Check {
        output,
        status: None,
        elapsed: None,
    }
}

/// The time between two `/proc/uptime` readings (seconds, two decimals).
fn elapsed(t0: &str, t1: &str) -> Option<Duration> {
    let (t0, t1): (f64, f64) = (t0.parse().ok()?, t1.parse().ok()?);
    Duration::try_from_secs_f64(t1 - t0).ok()
}

/// `'text'` for sh, with embedded single quotes closed, escaped and reopened.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the box prints for one check: BEGIN, the output, the wrapper's newline, END.
    fn section(name: &str, output: &str, end: &str) -> String {
        format!("{BEGIN}{name}\n{output}\n{END}{name} {end}\n")
    }

    #[test]
    fn checks_round_trip() {
        let mut s = Script::new();
        s.check("a", "echo 'hi'").check("b", "false");
        assert!(s.build().contains(r#"sh -c 'echo '\''hi'\''' "#));

        let output = format!(
            "noise\n{}{}{BEGIN}c\npartial",
            section("a", "hi\n", "0 3.10 3.35"),
            section("b", "no newline", "1 3.40 3.40"),
        );
        let checks = parse_checks(&output);
        assert_eq!(checks["a"].output, "hi\n");
        assert_eq!(checks["a"].status, Some(0));
        let ms = checks["a"].elapsed.unwrap().as_millis();
        assert!((249..=251).contains(&ms), "{ms}");
        assert_eq!(checks["b"].output, "no newline");
        assert_eq!(checks["b"].status, Some(1));
        assert_eq!(checks["c"], unfinished("partial".into()));
    }

    #[test]
    fn the_generated_script_runs_in_sh() {
        let mut s = Script::new();
        s.check("ok", r"printf 'two\nlines'")
            .check("fails", "echo err >&2; exit 4");
        // The host has no busybox timeout necessarily; coreutils' takes the same arguments.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(s.build())
            .output()
            .unwrap();
        let checks = parse_checks(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(checks["ok"].output, "two\nlines");
        assert_eq!(checks["ok"].status, Some(0));
        assert!(checks["ok"].elapsed.is_some());
        assert_eq!(checks["fails"].output, "err\n");
        assert_eq!(checks["fails"].status, Some(4));
    }

    #[test]
    #[should_panic(expected = "used twice")]
    fn duplicate_names_panic() {
        Script::new().check("a", "true").check("a", "true");
    }
}
