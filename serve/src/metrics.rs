//! `GET /metrics` in Prometheus' text format (prometheus-client): instances per app, calls per
//! app and status, errors per app and a latency histogram per app. An app's series outlive its
//! versions and go when it is deleted.

use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of `GET /metrics`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// HTTP statuses (those `http::StatusCode` can hold): what `forget` looks for.
const STATUSES: std::ops::RangeInclusive<u16> = 100..=999;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    app: String,
    status: u16,
}

type Histograms = Family<AppLabel, Histogram, fn() -> Histogram>;

/// Every app's series, registered once.
pub struct Metrics {
    registry: Registry,
    instances: Family<AppLabel, Gauge>,
    invocations: Family<CallLabels, Counter>,
    errors: Family<AppLabel, Counter>,
    seconds: Histograms,
}

impl Default for Metrics {
    fn default() -> Self {
        let instances = Family::default();
        let invocations = Family::default();
        let errors = Family::default();
        let seconds: Histograms = Family::new_with_constructor(|| Histogram::new(BUCKETS));
        let mut registry = Registry::default();
        registry.register(
            "nodeos_serve_instances",
            "MicroVMs running (or booting) for the app's current version",
            instances.clone(),
        );
        registry.register(
            "nodeos_serve_invocations",
            "Calls answered, by HTTP status",
            invocations.clone(),
        );
        registry.register(
            "nodeos_serve_errors",
            "Calls answered with an error (status 400 or more)",
            errors.clone(),
        );
        registry.register(
            "nodeos_serve_invocation_seconds",
            "Time from a call's arrival to its answer",
            seconds.clone(),
        );
        Metrics {
            registry,
            instances,
            invocations,
            errors,
            seconds,
        }
    }
}

impl Metrics {
    /// One call to `app` answered with `status` after `took`.
    pub fn record(&self, app: &str, status: u16, took: Duration) {
        let label = AppLabel { app: app.into() };
        self.invocations
            .get_or_create(&CallLabels {
                app: label.app.clone(),
                status,
            })
            .inc();
        if status >= 400 {
            self.errors.get_or_create(&label).inc();
        }
        self.seconds
            .get_or_create(&label)
            .observe(took.as_secs_f64());
    }

    /// Drops every series of `app`.
    pub fn forget(&self, app: &str) {
        let label = AppLabel { app: app.into() };
        self.instances.remove(&label);
        self.errors.remove(&label);
        self.seconds.remove(&label);
        let mut call = CallLabels {
            app: label.app,
            status: 0,
        };
        for status in STATUSES {
            call.status = status;
            self.invocations.remove(&call);
        }
    }

    /// The metrics text for `apps`, (name, instances running), every one listed even before
    /// its first call.
    pub fn render<'a>(&self, apps: impl IntoIterator<Item = (&'a str, usize)>) -> String {
        for (app, instances) in apps {
            let label = AppLabel { app: app.into() };
            self.instances
                .get_or_create(&label)
                .set(i64::try_from(instances).unwrap_or(i64::MAX));
            // Listed with zero errors and an empty histogram until the first call.
            let _ = self.errors.get_or_create(&label);
            let _ = self.seconds.get_or_create(&label);
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let m = Metrics::default();
        m.record("hello", 200, Duration::from_millis(3));
        m.record("hello", 200, Duration::from_millis(300));
        m.record("hello", 504, Duration::from_secs(40));
        let text = m.render([("hello", 2)]);
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

    #[test]
    fn help_and_types() {
        let m = Metrics::default();
        m.record("hello", 200, Duration::from_millis(3));
        let text = m.render([("hello", 1)]);
        for line in [
            "# HELP nodeos_serve_instances MicroVMs running (or booting) for the app's current version.",
            "# TYPE nodeos_serve_instances gauge",
            "# HELP nodeos_serve_invocations_total Calls answered, by HTTP status.",
            "# TYPE nodeos_serve_invocations_total counter",
            "# TYPE nodeos_serve_errors_total counter",
            "# TYPE nodeos_serve_invocation_seconds histogram",
            "nodeos_serve_invocation_seconds_bucket{app=\"hello\",le=\"1\"} 1",
            "nodeos_serve_invocation_seconds_bucket{app=\"hello\",le=\"30\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    /// An app with no call yet is listed with zero errors and an empty histogram.
    #[test]
    fn an_app_without_calls() {
        let text = Metrics::default().render([("idle", 0)]);
        for line in [
            "nodeos_serve_instances{app=\"idle\"} 0",
            "nodeos_serve_errors_total{app=\"idle\"} 0",
            "nodeos_serve_invocation_seconds_count{app=\"idle\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("nodeos_serve_invocations_total{"), "{text}");
    }

    #[test]
    fn a_forgotten_app_is_not_listed() {
        let m = Metrics::default();
        m.record("gone", 200, Duration::from_millis(3));
        m.record("gone", 429, Duration::from_millis(3));
        m.record("kept", 200, Duration::from_millis(3));
        m.render([("gone", 1), ("kept", 1)]);
        m.forget("gone");
        let text = m.render([("kept", 1)]);
        assert!(!text.contains("gone"), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "nodeos_serve_invocations_total{app=\"kept\",status=\"200\"} 1"),
            "{text}"
        );
    }
}
