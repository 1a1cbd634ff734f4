//! Prometheus metrics: what the call path records as it runs (calls by object, method and
//! status class; call and turn-wait durations; timeouts), kept here, and the text exposition
//! `GET /metrics` serves (`api/metrics.rs` adds the gauges it reads at each scrape).
//!
//! Labels are bounded: an object id (one per deployed object), a method (the five an object
//! answers), a status class — never a request, a key or a client-chosen string.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
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

/// The methods an object answers (HEAD runs as GET), for reading the call counts back.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];
/// Every status label of [`CallLabels`].
pub const STATUSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

/// Finite buckets of the call-duration histogram: 50 µs, doubling, to ~6.5 s (then +Inf).
const DURATION_BUCKETS: usize = 18;

/// Durations from 50 µs to ~6.5 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, DURATION_BUCKETS as u16))
}

/// The upper bound of call-duration bucket `i` in seconds (`+Inf` for the last), the same
/// bounds as [`duration_histogram`].
fn duration_bound(i: usize) -> f64 {
    if i >= DURATION_BUCKETS {
        f64::INFINITY
    } else {
        0.000_05 * 2f64.powf(i as f64)
    }
}

/// A call-duration histogram with lock-free counts that can be read back ([`CallMetrics::object`]
/// for `GET /admin/stats`), exposed to Prometheus like prometheus-client's own histogram (same
/// buckets). Cheap to clone (the counts are shared).
#[derive(Debug, Clone, Default)]
pub struct CallDurations(Arc<DurationCounts>);

#[derive(Debug, Default)]
struct DurationCounts {
    /// Observations per bucket (not cumulative), +Inf last.
    counts: [AtomicU64; DURATION_BUCKETS + 1],
    /// Sum of the observations in nanoseconds.
    sum_nanos: AtomicU64,
}

impl CallDurations {
    /// Records one call's duration.
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = (0..DURATION_BUCKETS)
            .find(|&i| seconds <= duration_bound(i))
            .unwrap_or(DURATION_BUCKETS);
        self.0.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts as they are now.
    pub fn snapshot(&self) -> DurationSnapshot {
        let buckets: Vec<(f64, u64)> = self
            .0
            .counts
            .iter()
            .enumerate()
            .map(|(i, c)| (duration_bound(i), c.load(Ordering::Relaxed)))
            .collect();
        DurationSnapshot {
            count: buckets.iter().map(|(_, n)| n).sum(),
            sum_seconds: self.0.sum_nanos.load(Ordering::Relaxed) as f64 * 1e-9,
            buckets,
        }
    }
}

impl TypedMetric for CallDurations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CallDurations {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let snapshot = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(
            snapshot.sum_seconds,
            snapshot.count,
            &snapshot.buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A [`CallDurations`] as read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationSnapshot {
    /// `(upper bound in seconds, observations in this bucket)`, not cumulative, +Inf last.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of the observations in seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl DurationSnapshot {
    /// An estimate of quantile `q` (0 < q ≤ 1) in seconds, as Prometheus' `histogram_quantile`
    /// makes it: linear within the bucket holding the rank; a rank in the +Inf bucket gives the
    /// last finite bound. `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for &(upper, n) in &self.buckets {
            if n > 0 && (below + n) as f64 >= rank {
                if upper.is_infinite() {
                    return Some(lower);
                }
                let within = (rank - below as f64).max(0.0) / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += n;
            if upper.is_finite() {
                lower = upper;
            }
        }
        Some(lower)
    }
}

/// What [`CallMetrics`] counted for one object since the station started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectCalls {
    /// Finished calls by status label ([`STATUSES`]: `2xx` … `5xx`, `error`).
    pub by_status: [(&'static str, u64); 5],
    /// Calls that ran past their deadline.
    pub timeouts: u64,
    /// Their durations.
    pub durations: DurationSnapshot,
}

/// The metrics the call path records. Cheap to clone (the families are shared).
#[derive(Clone, Debug)]
pub struct CallMetrics {
    calls: Family<CallLabels, Counter>,
    duration: Family<ObjectLabels, CallDurations>,
    turn_wait: HistogramFamily,
    timeouts: Family<ObjectLabels, Counter>,
    compile: Histogram,
    alarms_fired: Family<ObjectLabels, Counter>,
    alarms_failed: Family<ObjectLabels, Counter>,
    alarm_delay: Histogram,
}

impl Default for CallMetrics {
    fn default() -> CallMetrics {
        CallMetrics {
            calls: Family::default(),
            duration: Family::default(),
            turn_wait: Family::new_with_constructor(duration_histogram),
            timeouts: Family::default(),
            // From 1 ms to ~65 s.
            compile: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            alarms_fired: Family::default(),
            alarms_failed: Family::default(),
            // From 1 ms to ~65 s.
            alarm_delay: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        }
    }
}

/// One object's call counters and duration histogram, each series looked up on its first use
/// and kept (the counters share their values with the family `GET /metrics` encodes).
#[derive(Debug)]
pub struct ObjectCallMeters {
    object: String,
    family: Family<CallLabels, Counter>,
    /// By index in [`METHODS`], then in [`STATUSES`].
    calls: [[OnceLock<Counter>; STATUSES.len()]; METHODS.len()],
    duration: CallDurations,
    turn_wait: Histogram,
}

impl ObjectCallMeters {
    /// Records a finished call: `status` is a [`status_class`] or `error`.
    pub fn call(&self, method: &str, status: &'static str, took: Duration) {
        let labels = || CallLabels {
            object: self.object.clone(),
            method: method.to_string(),
            status,
        };
        let m = METHODS.iter().position(|known| *known == method);
        let s = STATUSES.iter().position(|known| *known == status);
        match (m, s) {
            (Some(m), Some(s)) => self.calls[m][s]
                .get_or_init(|| self.family.get_or_create(&labels()).clone())
                .inc(),
            _ => self.family.get_or_create(&labels()).inc(),
        };
        self.duration.observe(took);
    }

    /// Records how long a call waited for the object's turn.
    pub fn turn_wait(&self, waited: Duration) {
        self.turn_wait.observe(waited.as_secs_f64());
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
            .observe(took);
    }

    /// `object`'s call series, resolved once: a call then counts without building labels or
    /// looking the series up ([`ObjectCallMeters::call`]).
    pub fn for_object(&self, object: &str) -> ObjectCallMeters {
        let labels = ObjectLabels {
            object: object.to_string(),
        };
        ObjectCallMeters {
            object: object.to_string(),
            family: self.calls.clone(),
            calls: Default::default(),
            duration: self.duration.get_or_create(&labels).clone(),
            turn_wait: self.turn_wait.get_or_create(&labels).clone(),
        }
    }

    /// What was counted for `object` (zeros for an object without calls).
    pub fn object(&self, object: &str) -> ObjectCalls {
        let mut by_status = STATUSES.map(|status| (status, 0));
        for method in METHODS {
            for (status, n) in &mut by_status {
                let labels = CallLabels {
                    object: object.to_string(),
                    method: method.to_string(),
                    status,
                };
                *n += self.calls.get(&labels).map_or(0, |c| c.get());
            }
        }
        let labels = ObjectLabels {
            object: object.to_string(),
        };
        ObjectCalls {
            by_status,
            timeouts: self.timeouts.get(&labels).map_or(0, |c| c.get()),
            durations: self
                .duration
                .get(&labels)
                .map(|d| d.snapshot())
                .unwrap_or_default(),
        }
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

    /// Counts an alarm handled by `object`, `late_ms` after it was due.
    pub fn alarm_fired(&self, object: &str, late_ms: u64) {
        self.alarms_fired
            .get_or_create(&ObjectLabels {
                object: object.to_string(),
            })
            .inc();
        self.alarm_delay.observe(late_ms as f64 / 1000.0);
    }

    /// Counts a fire of `object`'s alarm that failed (it is retried or dropped).
    pub fn alarm_failed(&self, object: &str) {
        self.alarms_failed
            .get_or_create(&ObjectLabels {
                object: object.to_string(),
            })
            .inc();
    }

    /// Adds these metrics to `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "alarms_fired",
            "Alarms an object handled (fire returned ok and its batch committed), by object",
            self.alarms_fired.clone(),
        );
        registry.register(
            "alarm_failures",
            "Alarm fires that failed or trapped (retried with backoff, or dropped), by object",
            self.alarms_failed.clone(),
        );
        registry.register_with_unit(
            "alarm_delay",
            "Time from an alarm's due time to the start of its fire",
            Unit::Seconds,
            self.alarm_delay.clone(),
        );
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
    fn p99_is_estimated_within_the_bucket_that_holds_its_rank() {
        let durations = CallDurations::default();
        assert_eq!(durations.snapshot().quantile(0.99), None);
        // 98 calls of 1 ms (bucket 0.8–1.6 ms) and 2 of 100 ms (bucket 51.2–102.4 ms).
        for _ in 0..98 {
            durations.observe(Duration::from_millis(1));
        }
        for _ in 0..2 {
            durations.observe(Duration::from_millis(100));
        }
        let snapshot = durations.snapshot();
        assert_eq!(snapshot.count, 100);
        assert!((snapshot.sum_seconds - 0.298).abs() < 1e-9, "{snapshot:?}");
        // Rank 99 is the first of the 2 slow calls: half-way into 51.2–102.4 ms.
        let p99 = snapshot.quantile(0.99).unwrap();
        assert!((p99 - 0.0768).abs() < 1e-9, "p99 {p99}");
        // Rank 50 lies in the 1 ms bucket: between its bounds.
        let p50 = snapshot.quantile(0.5).unwrap();
        assert!(p50 > 0.0008 && p50 <= 0.0016, "p50 {p50}");
        // All the way up is the upper bound of the highest bucket used.
        assert!((snapshot.quantile(1.0).unwrap() - 0.1024).abs() < 1e-9);
    }

    #[test]
    fn a_rank_past_the_last_bound_reports_the_last_bound() {
        let durations = CallDurations::default();
        durations.observe(Duration::from_secs(60));
        let last = duration_bound(DURATION_BUCKETS - 1);
        assert_eq!(durations.snapshot().quantile(0.99), Some(last));
        // The fastest calls land in the first bucket, from zero.
        let fast = CallDurations::default();
        fast.observe(Duration::from_micros(1));
        let p99 = fast.snapshot().quantile(0.99).unwrap();
        assert!(p99 > 0.0 && p99 <= 0.000_05, "{p99}");
    }

    #[test]
    fn object_counts_read_back_what_the_call_path_recorded() {
        let metrics = CallMetrics::default();
        metrics.call("a", "GET", "2xx", Duration::from_millis(1));
        // The call path counts through the object's meters: into the same series.
        let a = metrics.for_object("a");
        a.call("POST", "2xx", Duration::from_millis(2));
        metrics.call("a", "PUT", "error", Duration::from_millis(3));
        metrics.call("b", "GET", "4xx", Duration::from_millis(1));
        metrics.timed_out("a");
        let a = metrics.object("a");
        assert_eq!(a.durations.count, 3);
        assert_eq!(a.timeouts, 1);
        assert_eq!(
            a.by_status,
            [("2xx", 2), ("3xx", 0), ("4xx", 0), ("5xx", 0), ("error", 1)]
        );
        assert_eq!(
            metrics.object("none"),
            ObjectCalls {
                by_status: STATUSES.map(|s| (s, 0)),
                ..ObjectCalls::default()
            }
        );
        // The histogram's buckets are those Prometheus saw before: 50 µs doubling.
        let mut registry = Registry::with_prefix("op");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"op_call_duration_seconds_bucket{le="0.0016",object="a"} 1"#,
            r#"op_call_duration_seconds_bucket{le="+Inf",object="a"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
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
