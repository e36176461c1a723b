//! An app's recent output (`GET /apps/{name}/logs`): what its handlers wrote to stdout and
//! stderr, each line tagged with the call that wrote it, and what happened to its runners.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Lines kept per app; older ones are dropped.
const KEPT_LINES: usize = 2000;
/// Longest line kept; the rest of a longer one is cut (and marked), so that an app's logs
/// take at most KEPT_LINES * (MAX_LINE_BYTES + MAX_INVOCATION_BYTES) (about 32 MiB) whatever
/// its handlers print.
const MAX_LINE_BYTES: usize = 16 << 10;
/// Longest call ID kept: ours are short (`x-invocation-id`); the guest may tag lines with any.
const MAX_INVOCATION_BYTES: usize = 128;
const CUT_MARK: &str = " [cut]";

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    /// What happened to the runner (its end).
    System,
}

impl Stream {
    /// The stream a runner's tagged line names; anything but `stdout` is stderr.
    pub fn tagged(name: &str) -> Stream {
        if name == "stdout" {
            Stream::Stdout
        } else {
            Stream::Stderr
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The call's ID (`x-invocation-id`); none for output outside any call.
    pub invocation: Option<String>,
    pub stream: Stream,
    pub text: String,
}

#[derive(Default)]
pub struct Logs(Mutex<VecDeque<Line>>);

impl Logs {
    pub fn push(&self, invocation: Option<String>, stream: Stream, text: String) {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut lines = self.0.lock().unwrap();
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(Line {
            time_ms,
            invocation: invocation.map(|id| bounded(&id, MAX_INVOCATION_BYTES)),
            stream,
            text: bounded(text.strip_suffix('\n').unwrap_or(&text), MAX_LINE_BYTES),
        });
    }

    /// The kept lines, oldest first; only those of `invocation` when given.
    pub fn lines(&self, invocation: Option<&str>) -> Vec<Line> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| invocation.is_none() || l.invocation.as_deref() == invocation)
            .cloned()
            .collect()
    }
}

/// `text`, cut at a character boundary when longer than `max` bytes.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max - CUT_MARK.len();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{CUT_MARK}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut() {
        let logs = Logs::default();
        logs.push(
            Some("i".repeat(1 << 20)),
            Stream::Stdout,
            format!("{}\n", "é".repeat(MAX_LINE_BYTES)),
        );
        let line = &logs.lines(None)[0];
        assert!(
            line.text.len() <= MAX_LINE_BYTES && line.text.ends_with(CUT_MARK),
            "{}",
            line.text.len()
        );
        let id = line.invocation.as_ref().unwrap();
        assert!(id.len() <= MAX_INVOCATION_BYTES && id.ends_with(CUT_MARK));
        logs.push(None, Stream::Stdout, "short\n".into());
        assert_eq!(logs.lines(None)[1].text, "short");
    }

    #[test]
    fn keeps_the_last_lines_and_filters() {
        let logs = Logs::default();
        for i in 0..KEPT_LINES + 5 {
            logs.push(
                Some(format!("c{}", i % 2)),
                Stream::Stdout,
                format!("{i}\n"),
            );
        }
        let all = logs.lines(None);
        assert_eq!(all.len(), KEPT_LINES);
        assert_eq!(all[0].text, "5");
        assert!(logs
            .lines(Some("c1"))
            .iter()
            .all(|l| l.invocation.as_deref() == Some("c1")));
        assert_eq!(logs.lines(Some("c1")).len(), KEPT_LINES / 2);
    }

    #[test]
    fn streams_are_ours_whatever_the_runner_tags() {
        assert_eq!(Stream::tagged("stdout"), Stream::Stdout);
        assert_eq!(Stream::tagged("stderr"), Stream::Stderr);
        assert_eq!(Stream::tagged(&"x".repeat(1 << 20)), Stream::Stderr);
        assert_eq!(
            serde_json::to_value(Stream::System).unwrap(),
            serde_json::json!("system")
        );
    }
}
