//! `GET /metrics`: the Prometheus text exposition (OpenMetrics) of this station. The call path's
//! counters and histograms come from [`crate::metrics::CallMetrics`]; the gauges (per object,
//! the store, the cluster) are read at each scrape by [`Snapshot`], so an idle station costs
//! nothing between scrapes. Admin-only, like the other views that name objects.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::ApiState;
use super::error::ApiError;
use crate::cluster::MemberState;
use crate::coordinator::replication::ReplicaLag;
use crate::station::ObjectGauges;
use crate::store::{HistogramSnapshot, StoreStats};

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub(super) async fn metrics(
    State(api): State<ApiState>,
    request: Request,
) -> Result<Response, ApiError> {
    super::authorize_admin(&api, request.headers(), request.extensions())?;
    let snapshot = Snapshot::read(&api);
    let mut registry = Registry::with_prefix("op");
    api.station.call_metrics().register(&mut registry);
    api.station.move_metrics().register(&mut registry);
    registry.register_collector(Box::new(snapshot));
    let mut text = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the metrics could not be encoded: {e}"),
        )
    })?;
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

/// The gauges of one scrape.
#[derive(Debug)]
struct Snapshot {
    objects: Vec<ObjectGauges>,
    store: StoreStats,
    /// Stations this one knows, by state.
    stations: [(&'static str, i64); 3],
    leader: bool,
    term: u64,
    voters: i64,
    learners: i64,
    applied_index: u64,
    /// Object calls running or waiting on this station.
    in_flight: u64,
    /// Event streams open here.
    event_subscribers: usize,
    /// Objects with pending alarms on this station's clock.
    alarm_objects: usize,
    /// Client connections open.
    connections: u64,
    /// How far each replica of each object homed here is behind.
    replication: Vec<ReplicaLag>,
}

impl Snapshot {
    fn read(api: &ApiState) -> Snapshot {
        let view = api.cluster.view();
        let count = |state: MemberState| view.members.iter().filter(|m| m.state == state).count();
        let group = api.cluster.directory().group();
        Snapshot {
            objects: api.station.object_gauges(),
            store: api.station.store_stats(),
            stations: [
                ("alive", count(MemberState::Alive) as i64),
                ("suspect", count(MemberState::Suspect) as i64),
                ("dead", count(MemberState::Dead) as i64),
            ],
            leader: group.leader.as_deref() == Some(api.cluster.station_id()),
            term: group.term,
            voters: group.voters.len() as i64,
            learners: group.learners.len() as i64,
            applied_index: group.applied_index,
            in_flight: api.station.in_flight(),
            event_subscribers: api.station.event_subscribers(),
            alarm_objects: api.station.alarm_objects(),
            connections: api.config.open_connections.get(),
            replication: api.coordinator.replicator().lag(),
        }
    }
}

/// Writes one unlabelled gauge.
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes one unlabelled counter.
fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// A histogram read from the store, encoded as one.
#[derive(Debug)]
struct StoredHistogram<'a>(&'a HistogramSnapshot);

impl EncodeMetric for StoredHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        // The store's buckets are cumulative; the encoder adds them up itself, so it is given
        // each bucket's own count.
        let buckets = per_bucket(&self.0.buckets);
        encoder.encode_histogram::<NoLabelSet>(self.0.sum, self.0.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Cumulative `(bound, observations at or below it)` as each bucket's own count.
fn per_bucket(cumulative: &[(f64, u64)]) -> Vec<(f64, u64)> {
    let mut below = 0;
    cumulative
        .iter()
        .map(|&(bound, total)| {
            let own = total.saturating_sub(below);
            below = total.max(below);
            (bound, own)
        })
        .collect()
}

/// Writes one unlabelled histogram.
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: &HistogramSnapshot,
) -> std::fmt::Result {
    let metric = StoredHistogram(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

/// Writes a gauge per object and replica.
fn per_replica(
    encoder: &mut DescriptorEncoder,
    lags: &[ReplicaLag],
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: impl Fn(&ReplicaLag) -> ConstGauge<f64>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for lag in lags {
        let labels = [
            ("object", lag.object.as_str()),
            ("replica", lag.replica.as_str()),
        ];
        value(lag).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes a per-object series of `value` (objects for which it is `None` are left out).
fn per_object(
    encoder: &mut DescriptorEncoder,
    objects: &[ObjectGauges],
    name: &str,
    help: &str,
    kind: MetricType,
    value: impl Fn(&ObjectGauges) -> Option<i64>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for object in objects {
        let Some(v) = value(object) else { continue };
        let labels = [("object", object.id.as_str())];
        let series = family.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v as u64).encode(series)?,
            _ => ConstGauge::new(v).encode(series)?,
        }
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let objects = &self.objects;
        let e = &mut encoder;
        gauge(
            e,
            "objects",
            "Objects deployed on this station",
            objects.len() as i64,
        )?;
        per_object(
            e,
            objects,
            "object_version",
            "Current version",
            MetricType::Gauge,
            |o| Some(i64::from(o.version)),
        )?;
        per_object(
            e,
            objects,
            "object_queue_depth",
            "Calls running or waiting for the turn",
            MetricType::Gauge,
            |o| Some(i64::from(o.queued)),
        )?;
        per_object(
            e,
            objects,
            "object_live_instance",
            "1 if the object has a live instance",
            MetricType::Gauge,
            |o| Some(i64::from(o.live_instance)),
        )?;
        per_object(
            e,
            objects,
            "object_traps",
            "Calls that trapped or ran out of time",
            MetricType::Counter,
            |o| Some(o.traps as i64),
        )?;
        per_object(
            e,
            objects,
            "object_state_keys",
            "Live state keys (objects whose state is open)",
            MetricType::Gauge,
            |o| o.state_keys.map(|k| k as i64),
        )?;
        per_object(
            e,
            objects,
            "object_state_bytes",
            "Bytes of live state (objects whose state is open)",
            MetricType::Gauge,
            |o| o.state_bytes.map(|b| b as i64),
        )?;
        gauge(
            e,
            "live_instances",
            "Objects with a live instance",
            objects.iter().filter(|o| o.live_instance).count() as i64,
        )?;
        gauge(
            e,
            "calls_in_flight",
            "Object calls running or waiting on this station",
            self.in_flight as i64,
        )?;
        gauge(
            e,
            "event_subscribers",
            "Event streams (GET /objects/{id}/events) served by this station now",
            self.event_subscribers as i64,
        )?;
        gauge(
            e,
            "alarm_objects",
            "Objects homed here with pending alarms (one clock entry each)",
            self.alarm_objects as i64,
        )?;
        gauge(
            e,
            "http_connections_open",
            "Client connections open (station links included)",
            self.connections as i64,
        )?;
        let store = &self.store;
        counter(
            e,
            "store_group_commit_rounds",
            "Group-commit rounds of the state writer",
            store.rounds,
        )?;
        counter(
            e,
            "store_batches_written",
            "Batches appended to state files",
            store.batches_written,
        )?;
        counter(
            e,
            "store_written_bytes",
            "Bytes appended to state files",
            store.bytes_written,
        )?;
        counter(
            e,
            "store_syncs",
            "fdatasync/syncfs calls for state files",
            store.fsyncs,
        )?;
        counter(
            e,
            "store_failures",
            "Write or sync failures (each fails one object)",
            store.failures,
        )?;
        gauge(
            e,
            "store_queued_bytes",
            "Bytes committed and not yet written",
            store.queued_bytes as i64,
        )?;
        gauge(
            e,
            "store_queue_capacity_bytes",
            "Most bytes the writer's queue holds",
            store.queue_capacity as i64,
        )?;
        counter(
            e,
            "store_log_written_bytes",
            "Bytes appended to the write-ahead log",
            store.log_bytes,
        )?;
        gauge(
            e,
            "log_followers",
            "Streams following an object's log open now",
            store.log_followers as i64,
        )?;
        counter(
            e,
            "log_followers_cut_off",
            "Log followers cut off for falling behind, then caught up from the files",
            store.log_followers_cut_off,
        )?;
        histogram(
            e,
            "store_log_sync",
            "Time of each write-ahead-log append with its fdatasync",
            Some(&Unit::Seconds),
            &store.log_sync_seconds,
        )?;
        histogram(
            e,
            "store_round_batches",
            "Batches per group-commit round",
            None,
            &store.round_batches,
        )?;
        let mut stations = e.encode_descriptor(
            "cluster_stations",
            "Stations this one knows, by state",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in self.stations {
            ConstGauge::new(n).encode(stations.encode_family(&[("state", state)])?)?;
        }
        per_replica(
            e,
            &self.replication,
            "replication_lag_seqs",
            "Committed batches a replica of an object homed here does not hold yet",
            None,
            |lag| ConstGauge::new(lag.seqs as f64),
        )?;
        per_replica(
            e,
            &self.replication,
            "replication_lag",
            "Seconds since a replica of an object homed here first lacked a committed batch",
            Some(&Unit::Seconds),
            |lag| ConstGauge::new(lag.seconds),
        )?;
        gauge(
            e,
            "raft_is_leader",
            "1 if this station leads the directory's Raft group",
            i64::from(self.leader),
        )?;
        gauge(
            e,
            "raft_term",
            "The directory's current Raft term",
            self.term as i64,
        )?;
        gauge(
            e,
            "raft_voters",
            "Voters of the directory's Raft group",
            self.voters,
        )?;
        gauge(
            e,
            "raft_learners",
            "Learners of the directory's Raft group",
            self.learners,
        )?;
        gauge(
            e,
            "raft_applied_index",
            "Last Raft log index applied here",
            self.applied_index as i64,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_histogram_is_exposed_cumulative_once() {
        let stored = HistogramSnapshot {
            buckets: vec![(0.001, 1), (0.002, 3), (f64::INFINITY, 4)],
            sum: 0.01,
            count: 4,
        };
        assert_eq!(
            per_bucket(&stored.buckets),
            vec![(0.001, 1), (0.002, 2), (f64::INFINITY, 1)]
        );
        #[derive(Debug)]
        struct One(HistogramSnapshot);
        impl Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
                histogram(&mut encoder, "sync", "help", Some(&Unit::Seconds), &self.0)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(stored)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"sync_seconds_bucket{le="0.002"} 3"#,
            r#"sync_seconds_bucket{le="+Inf"} 4"#,
            "sync_seconds_count 4",
        ] {
            assert!(text.contains(line), "{line} missing in\n{text}");
        }
    }
}
