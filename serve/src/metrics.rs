//! Counters for `GET /metrics`, in Prometheus' text format: calls per app and status, and a
//! latency histogram per app. Instances are counted by the pools themselves.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Counts {
    /// (HTTP status, calls).
    statuses: Vec<(u16, u64)>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Default)]
pub struct Metrics(Mutex<Counts>);

impl Metrics {
    /// One call answered with `status` after `took`.
    pub fn record(&self, status: u16, took: Duration) {
        let mut c = self.0.lock().unwrap();
        match c.statuses.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => {
                c.statuses.push((status, 1));
                c.statuses.sort();
            }
        }
        let seconds = took.as_secs_f64();
        for (bound, n) in BUCKETS.iter().zip(c.buckets.iter_mut()) {
            if seconds <= *bound {
                *n += 1;
            }
        }
        c.count += 1;
        c.sum_seconds += seconds;
    }
}

/// The metrics text for `apps`: (name, instances running, its counters).
pub fn render(apps: &[(String, usize, &Metrics)]) -> String {
    let mut out = String::new();
    let mut section = |name: &str, kind: &str, help: &str, body: &dyn Fn(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        body(&mut out);
    };
    section(
        "nodeos_serve_instances",
        "gauge",
        "MicroVMs running (or booting) for the app's current version.",
        &|out| {
            for (app, instances, _) in apps {
                let _ = writeln!(out, "nodeos_serve_instances{{app=\"{app}\"}} {instances}");
            }
        },
    );
    section(
        "nodeos_serve_invocations_total",
        "counter",
        "Calls answered, by HTTP status.",
        &|out| {
            for (app, _, m) in apps {
                for (status, n) in &m.0.lock().unwrap().statuses {
                    let _ = writeln!(
                        out,
                        "nodeos_serve_invocations_total{{app=\"{app}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        },
    );
    section(
        "nodeos_serve_errors_total",
        "counter",
        "Calls answered with an error (status 400 or more).",
        &|out| {
            for (app, _, m) in apps {
                let errors: u64 =
                    m.0.lock()
                        .unwrap()
                        .statuses
                        .iter()
                        .filter(|(s, _)| *s >= 400)
                        .map(|(_, n)| n)
                        .sum();
                let _ = writeln!(out, "nodeos_serve_errors_total{{app=\"{app}\"}} {errors}");
            }
        },
    );
    section(
        "nodeos_serve_invocation_seconds",
        "histogram",
        "Time from a call's arrival to its answer.",
        &|out| {
            for (app, _, m) in apps {
                let c = m.0.lock().unwrap();
                for (bound, n) in BUCKETS.iter().zip(c.buckets.iter()) {
                    let _ = writeln!(
                        out,
                        "nodeos_serve_invocation_seconds_bucket{{app=\"{app}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "nodeos_serve_invocation_seconds_bucket{{app=\"{app}\",le=\"+Inf\"}} {}\n\
                     nodeos_serve_invocation_seconds_sum{{app=\"{app}\"}} {}\n\
                     nodeos_serve_invocation_seconds_count{{app=\"{app}\"}} {}",
                    c.count, c.sum_seconds, c.count
                );
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let m = Metrics::default();
        m.record(200, Duration::from_millis(3));
        m.record(200, Duration::from_millis(300));
        m.record(504, Duration::from_secs(40));
        let text = render(&[("hello".into(), 2, &m)]);
        for line in [
            "nodeos_serve_instances{app=\"hello\"} 2",
            "nodeos_serve_invocations_total{app=\"hello\",status=\"200\"} 2",
            "nodeos_serve_invocations_total{app=\"hello\",status=\"504\"} 1",
            "nodeos_serve_errors_total{app=\"hello\"} 1",
            "nodeos_serve_invocation_seconds_bucket{app=\"hello\",le=\"0.005\"} 1",
            "nodeos_serve_invocation_seconds_bucket{app=\"hello\",le=\"0.5\"} 2",
            "nodeos_serve_invocation_seconds_bucket{app=\"hello\",le=\"+Inf\"} 3",
            "nodeos_serve_invocation_seconds_count{app=\"hello\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
