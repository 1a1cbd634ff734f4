//! Prometheus metrics: what the call path records as it runs (calls by object, method and
//! status class; call and turn-wait durations; timeouts), kept here, and the text exposition
//! `GET /metrics` serves (`api/metrics.rs` adds the gauges it reads at each scrape).
//!
//! Labels are bounded: an object id (one per deployed object), a method (the five an object
//! answers), a status class — never a request, a key or a client-chosen string.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of one call count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Object id.
    pub object: String,
    /// HTTP method the object ran (`GET`, `POST`, ...).
    pub method: String,
    /// `2xx` … `5xx` for an object's answer, `error` for a station error (trap, timeout, ...).
    pub status: &'static str,
}

/// Labels of a per-object series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// Object id.
    pub object: String,
}

type HistogramFamily = Family<ObjectLabels, Histogram, fn() -> Histogram>;

/// Durations from 50 µs to ~6.5 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// The metrics the call path records. Cheap to clone (the families are shared).
#[derive(Clone, Debug)]
pub struct CallMetrics {
    calls: Family<CallLabels, Counter>,
    duration: HistogramFamily,
    turn_wait: HistogramFamily,
    timeouts: Family<ObjectLabels, Counter>,
    compile: Histogram,
}

impl Default for CallMetrics {
    fn default() -> CallMetrics {
        CallMetrics {
            calls: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            turn_wait: Family::new_with_constructor(duration_histogram),
            timeouts: Family::default(),
            // From 1 ms to ~65 s.
            compile: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        }
    }
}

/// The status class label of an answer with this status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl CallMetrics {
    /// Records a finished call: `status` is a [`status_class`] or `error`.
    pub fn call(&self, object: &str, method: &str, status: &'static str, took: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                object: object.to_string(),
                method: method.to_string(),
                status,
            })
            .inc();
        self.duration
            .get_or_create(&ObjectLabels {
                object: object.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Records how long a call waited for its object's turn.
    pub fn turn_wait(&self, object: &str, waited: Duration) {
        self.turn_wait
            .get_or_create(&ObjectLabels {
                object: object.to_string(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Records how long a component took to compile (or to load from the compiled cache).
    pub fn compiled(&self, took: Duration) {
        self.compile.observe(took.as_secs_f64());
    }

    /// Counts a call that ran out of time.
    pub fn timed_out(&self, object: &str) {
        self.timeouts
            .get_or_create(&ObjectLabels {
                object: object.to_string(),
            })
            .inc();
    }

    /// Adds these metrics to `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "calls",
            "Calls by object, method and status class (error: a station error)",
            self.calls.clone(),
        );
        registry.register_with_unit(
            "call_duration",
            "Time from a call's arrival to its answer, by object",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register_with_unit(
            "turn_wait",
            "Time a call waited for its object's turn, by object",
            Unit::Seconds,
            self.turn_wait.clone(),
        );
        registry.register_with_unit(
            "compile",
            "Time to compile a component, or to load its artifact from the compiled cache",
            Unit::Seconds,
            self.compile.clone(),
        );
        registry.register(
            "call_timeouts",
            "Calls that ran past their deadline, by object",
            self.timeouts.clone(),
        );
    }
}

/// Labels of a migration count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, or `failed` (the object stayed where it was).
    pub result: &'static str,
}

/// What moving objects between stations records: migrations started here with the pause their
/// object saw, and failovers this station committed as directory leader with the time the object
/// had no writer. Cheap to clone (the metrics are shared).
#[derive(Clone, Debug)]
pub struct MoveMetrics {
    migrations: Family<OutcomeLabels, Counter>,
    migration_pause: Histogram,
    failovers: Counter,
    failover_pause: Histogram,
}

impl Default for MoveMetrics {
    fn default() -> MoveMetrics {
        MoveMetrics {
            migrations: Family::default(),
            // From 1 ms to ~65 s.
            migration_pause: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            failovers: Counter::default(),
            // From 100 ms to ~100 s.
            failover_pause: Histogram::new(exponential_buckets(0.1, 2.0, 11)),
        }
    }
}

impl MoveMetrics {
    /// Records a migration of an object homed here: done (`pause`: how long its calls waited) or
    /// failed (`None`: the object serves here again).
    pub fn migrated(&self, pause: Option<Duration>) {
        let result = if pause.is_some() { "ok" } else { "failed" };
        self.migrations
            .get_or_create(&OutcomeLabels { result })
            .inc();
        if let Some(pause) = pause {
            self.migration_pause.observe(pause.as_secs_f64());
        }
    }

    /// Records a failover this station committed as leader; `without_writer` is the time from the
    /// old home's last lease renewal to the new home's commit.
    pub fn failed_over(&self, without_writer: Duration) {
        self.failovers.inc();
        self.failover_pause.observe(without_writer.as_secs_f64());
    }

    /// Adds these metrics to `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "migrations",
            "Migrations of objects homed here, by result (ok, failed)",
            self.migrations.clone(),
        );
        registry.register_with_unit(
            "migration_pause",
            "How long a migrated object's calls waited while it moved",
            Unit::Seconds,
            self.migration_pause.clone(),
        );
        registry.register(
            "failovers",
            "Failovers this station committed as directory leader",
            self.failovers.clone(),
        );
        registry.register_with_unit(
            "failover_pause",
            "Time from a failed home's last lease renewal to its object's new home being committed",
            Unit::Seconds,
            self.failover_pause.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_calls_appear_in_the_exposition_with_bounded_labels() {
        let metrics = CallMetrics::default();
        metrics.call(
            "counter",
            "POST",
            status_class(200),
            Duration::from_millis(2),
        );
        metrics.call(
            "counter",
            "POST",
            status_class(201),
            Duration::from_millis(3),
        );
        metrics.call("counter", "GET", "error", Duration::from_millis(1));
        metrics.timed_out("counter");
        let mut registry = Registry::with_prefix("op");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"op_calls_total{object="counter",method="POST",status="2xx"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"op_calls_total{object="counter",method="GET",status="error"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"op_call_duration_seconds_count{object="counter"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"op_call_timeouts_total{object="counter"} 1"#),
            "{text}"
        );
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(599), "5xx");
    }

    #[test]
    fn migrations_and_failovers_are_counted_with_their_pauses() {
        let metrics = MoveMetrics::default();
        metrics.migrated(Some(Duration::from_millis(40)));
        metrics.migrated(None);
        metrics.failed_over(Duration::from_millis(2500));
        let mut registry = Registry::with_prefix("op");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"op_migrations_total{result="ok"} 1"#,
            r#"op_migrations_total{result="failed"} 1"#,
            "op_migration_pause_seconds_count 1",
            "op_failovers_total 1",
            "op_failover_pause_seconds_sum 2.5",
            r#"op_failover_pause_seconds_bucket{le="3.2"} 1"#,
            r#"op_failover_pause_seconds_bucket{le="1.6"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
