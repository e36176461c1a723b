//! An app's recent output (`GET /apps/{name}/logs`): what its handlers wrote to stdout and
//! stderr, each line tagged with the call that wrote it, and what happened to its runners.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use super::clock::now_ms;

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
    /// Its number in the app's logs, from 1 up: `after` takes the last one seen.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The call's ID (`x-invocation-id`); none for output outside any call.
    pub invocation: Option<String>,
    pub stream: Stream,
    pub text: String,
}

#[derive(Default)]
pub struct Logs(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    lines: VecDeque<Line>,
    /// The number of the last line pushed.
    seq: u64,
}

/// Which of the kept lines a reader wants.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Select<'a> {
    /// Only those of this call.
    pub invocation: Option<&'a str>,
    /// Only those after this number.
    pub after: u64,
    /// Only the last this many (of those the other fields select).
    pub limit: Option<usize>,
}

impl Logs {
    pub fn push(&self, invocation: Option<String>, stream: Stream, text: String) {
        let time_ms = now_ms();
        let mut kept = self.0.lock().unwrap();
        if kept.lines.len() == KEPT_LINES {
            kept.lines.pop_front();
        }
        kept.seq += 1;
        let seq = kept.seq;
        kept.lines.push_back(Line {
            seq,
            time_ms,
            invocation: invocation.map(|id| bounded(&id, MAX_INVOCATION_BYTES)),
            stream,
            text: bounded(text.strip_suffix('\n').unwrap_or(&text), MAX_LINE_BYTES),
        });
    }

    /// The kept lines `select` picks, oldest first.
    pub fn lines(&self, select: Select) -> Vec<Line> {
        let kept = self.0.lock().unwrap();
        let mut picked: Vec<&Line> = kept
            .lines
            .iter()
            .filter(|l| l.seq > select.after)
            .filter(|l| select.invocation.is_none() || l.invocation.as_deref() == select.invocation)
            .collect();
        if let Some(limit) = select.limit {
            picked.drain(..picked.len().saturating_sub(limit));
        }
        picked.into_iter().cloned().collect()
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
        let line = &logs.lines(Select::default())[0];
        assert!(
            line.text.len() <= MAX_LINE_BYTES && line.text.ends_with(CUT_MARK),
            "{}",
            line.text.len()
        );
        let id = line.invocation.as_ref().unwrap();
        assert!(id.len() <= MAX_INVOCATION_BYTES && id.ends_with(CUT_MARK));
        logs.push(None, Stream::Stdout, "short\n".into());
        assert_eq!(logs.lines(Select::default())[1].text, "short");
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
        let all = logs.lines(Select::default());
        assert_eq!(all.len(), KEPT_LINES);
        assert_eq!(all[0].text, "5");
        let c1 = Select {
            invocation: Some("c1"),
            ..Select::default()
        };
        assert!(logs
            .lines(c1)
            .iter()
            .all(|l| l.invocation.as_deref() == Some("c1")));
        assert_eq!(logs.lines(c1).len(), KEPT_LINES / 2);
        // The last few, and those after the last one seen.
        let last = all.last().unwrap().seq;
        let tail = logs.lines(Select {
            limit: Some(3),
            ..c1
        });
        assert_eq!(tail.len(), 3);
        // The last line is c0's; c1's are every other one.
        let seqs: Vec<u64> = tail.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [last - 5, last - 3, last - 1]);
        let after = logs.lines(Select {
            after: last - 4,
            ..Select::default()
        });
        let seqs: Vec<u64> = after.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [last - 3, last - 2, last - 1, last]);
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
