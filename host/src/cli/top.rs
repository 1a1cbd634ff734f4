//! `host top`: the cluster's stations and its busiest objects, refreshed in the terminal — from
//! `GET /cluster/stations` and `GET /admin/stats?scope=cluster` (every live station's figures),
//! with calls/s from two successive samples.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::time::Duration;

use serde_json::Value;

use super::client::Client;

/// What `host top` shows and how often.
pub struct TopArgs {
    /// Time between two refreshes (and between the two samples of `--once`).
    pub interval: Duration,
    /// Objects shown, busiest first.
    pub limit: usize,
    /// Print one screen (after two samples) and exit.
    pub once: bool,
}

/// Runs `host top` until interrupted (or once).
pub async fn top(client: &Client, args: TopArgs) -> anyhow::Result<()> {
    let clear = std::io::stdout().is_terminal() && !args.once;
    let mut previous = Sample::read(&client.get_json("/admin/stats?scope=cluster").await?);
    loop {
        tokio::time::sleep(args.interval).await;
        let stations = client.get_json("/cluster/stations").await?;
        let stats = client.get_json("/admin/stats?scope=cluster").await?;
        let sample = Sample::read(&stats);
        let screen = render(
            &stations,
            &stats,
            &sample.rates_since(&previous),
            args.limit,
        );
        if clear {
            print!("\x1b[H\x1b[2J");
        }
        print!("{screen}");
        if args.once {
            return Ok(());
        }
        previous = sample;
    }
}

/// Each object's call count on each station, and when the station counted it.
#[derive(Default)]
struct Sample {
    calls: HashMap<(String, String), (u64, u64)>,
}

impl Sample {
    fn read(stats: &Value) -> Sample {
        let mut calls = HashMap::new();
        for station in stats["stations"].as_array().into_iter().flatten() {
            let id = station["station"].as_str().unwrap_or("").to_string();
            let at_ms = station["at_ms"].as_u64().unwrap_or(0);
            for object in station["objects"].as_array().into_iter().flatten() {
                let object_id = object["id"].as_str().unwrap_or("").to_string();
                let n = object["calls"].as_u64().unwrap_or(0);
                calls.insert((id.clone(), object_id), (n, at_ms));
            }
        }
        Sample { calls }
    }

    /// Calls per second of each object since `earlier`, summed over the stations.
    fn rates_since(&self, earlier: &Sample) -> HashMap<String, f64> {
        let mut rates: HashMap<String, f64> = HashMap::new();
        for ((station, object), (calls, at_ms)) in &self.calls {
            let rate = rates.entry(object.clone()).or_default();
            let Some((before, then_ms)) = earlier.calls.get(&(station.clone(), object.clone()))
            else {
                continue;
            };
            if at_ms > then_ms {
                *rate += calls.saturating_sub(*before) as f64 * 1000.0 / (at_ms - then_ms) as f64;
            }
        }
        rates
    }
}

/// One object's figures over every station that serves it.
#[derive(Default)]
struct ObjectRow {
    stations: Vec<String>,
    version: u64,
    calls: u64,
    traps: u64,
    p99_ms: Option<f64>,
    state_bytes: u64,
}

/// The screen: the stations, then the `limit` busiest objects.
fn render(stations: &Value, stats: &Value, rates: &HashMap<String, f64>, limit: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<24} {:<8} {:<8} {:>5} {:>5} {:>9} {:>7}",
        "STATION", "ADDRESS", "STATE", "ROLE", "CPU%", "MEM%", "IN-FLIGHT", "OBJECTS"
    );
    for s in stations["stations"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<14} {:<24} {:<8} {:<8} {:>5.0} {:>5.0} {:>9} {:>7}",
            s["id"].as_str().unwrap_or(""),
            s["address"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["role"].as_str().unwrap_or(""),
            s["load"]["cpu"].as_f64().unwrap_or(0.0),
            s["load"]["memory"].as_f64().unwrap_or(0.0),
            s["load"]["in_flight"].as_u64().unwrap_or(0),
            s["objects"].as_array().map_or(0, Vec::len),
        );
    }
    for u in stats["unreachable"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "(no figures from {}: {})",
            u["station"].as_str().unwrap_or("?"),
            u["message"].as_str().unwrap_or("")
        );
    }
    let rows = object_rows(stats);
    let mut busiest: Vec<(&String, &ObjectRow)> = rows.iter().collect();
    let rate = |id: &str| rates.get(id).copied().unwrap_or(0.0);
    busiest.sort_by(|a, b| {
        rate(b.0)
            .total_cmp(&rate(a.0))
            .then(b.1.calls.cmp(&a.1.calls))
            .then(a.0.cmp(b.0))
    });
    let _ = writeln!(
        out,
        "\n{:<24} {:<14} {:>7} {:>9} {:>10} {:>9} {:>7} {:>11}",
        "OBJECT", "STATIONS", "VERSION", "CALLS/S", "CALLS", "P99 MS", "TRAPS", "STATE BYTES"
    );
    for (id, row) in busiest.into_iter().take(limit) {
        let _ = writeln!(
            out,
            "{:<24} {:<14} {:>7} {:>9.1} {:>10} {:>9} {:>7} {:>11}",
            id,
            row.stations.join(","),
            row.version,
            rate(id),
            row.calls,
            row.p99_ms.map_or("-".to_string(), |p| format!("{p:.1}")),
            row.traps,
            row.state_bytes,
        );
    }
    if rows.len() > limit {
        let _ = writeln!(out, "({} more objects)", rows.len() - limit);
    }
    out
}

/// Each object's figures summed over the stations (p99: the largest station's).
fn object_rows(stats: &Value) -> BTreeMap<String, ObjectRow> {
    let mut rows: BTreeMap<String, ObjectRow> = BTreeMap::new();
    for station in stats["stations"].as_array().into_iter().flatten() {
        let station_id = station["station"].as_str().unwrap_or("");
        for object in station["objects"].as_array().into_iter().flatten() {
            let row = rows
                .entry(object["id"].as_str().unwrap_or("").to_string())
                .or_default();
            let calls = object["calls"].as_u64().unwrap_or(0);
            // Replicas list an object without calls; the stations shown are those that serve it.
            if calls > 0 || object["live_instance"] == true {
                row.stations.push(station_id.to_string());
            }
            row.version = row.version.max(object["version"].as_u64().unwrap_or(0));
            row.calls += calls;
            row.traps += object["traps"].as_u64().unwrap_or(0);
            row.state_bytes = row
                .state_bytes
                .max(object["state_bytes"].as_u64().unwrap_or(0));
            if let Some(p99) = object["p99_ms"].as_f64() {
                row.p99_ms = Some(row.p99_ms.map_or(p99, |p: f64| p.max(p99)));
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stats(at_ms: u64, a_calls: u64, b_calls: u64) -> Value {
        json!({"stations": [
            {"station": "st-a", "at_ms": at_ms, "objects": [
                {"id": "counter", "version": 2, "calls": a_calls, "traps": 1, "p99_ms": 4.5,
                 "state_bytes": 10, "live_instance": true},
                {"id": "idle", "version": 1, "calls": 0, "traps": 0, "p99_ms": null,
                 "state_bytes": 0, "live_instance": false}]},
            {"station": "st-b", "at_ms": at_ms, "objects": [
                {"id": "hello", "version": 1, "calls": b_calls, "traps": 0, "p99_ms": 1.0,
                 "state_bytes": 0, "live_instance": true}]}],
            "unreachable": [{"station": "st-c", "message": "timed out"}]})
    }

    #[test]
    fn the_busiest_objects_come_first_with_rates_from_two_samples() {
        let earlier = Sample::read(&stats(1_000, 10, 100));
        let now = stats(3_000, 50, 120);
        let rates = Sample::read(&now).rates_since(&earlier);
        assert_eq!(rates["counter"], 20.0);
        assert_eq!(rates["hello"], 10.0);
        let stations = json!({"stations": [{"id": "st-a", "address": "http://127.0.0.1:1",
            "state": "alive", "role": "leader", "load": {"cpu": 3.0, "memory": 40.0,
            "in_flight": 2}, "objects": ["counter", "idle"]}]});
        let screen = render(&stations, &now, &rates, 2);
        let lines: Vec<&str> = screen.lines().collect();
        assert!(
            lines[1].starts_with("st-a") && lines[1].contains("leader"),
            "{screen}"
        );
        assert!(
            screen.contains("(no figures from st-c: timed out)"),
            "{screen}"
        );
        let counter = lines.iter().position(|l| l.starts_with("counter")).unwrap();
        let hello = lines.iter().position(|l| l.starts_with("hello")).unwrap();
        assert!(counter < hello, "busiest first:\n{screen}");
        assert!(lines[counter].contains("20.0") && lines[counter].contains("4.5"));
        assert!(
            !screen.contains("\nidle"),
            "limit 2 leaves idle out:\n{screen}"
        );
        assert!(screen.contains("(1 more objects)"), "{screen}");
    }
}
