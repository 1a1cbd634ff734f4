//! No lost updates under concurrency; no acknowledged write lost in a crash; damage refused, then repaired.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

#[test]
fn a_thousand_concurrent_posts_lose_nothing() {
    const N: usize = 1000;
    let mut st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    let url = format!("{}/objects/counter", st.url);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let answers: Vec<(u16, String)> = rt.block_on(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("client");
        let in_flight = Arc::new(tokio::sync::Semaphore::new(100));
        let mut tasks = Vec::with_capacity(N);
        for _ in 0..N {
            let (client, url, in_flight) = (client.clone(), url.clone(), in_flight.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = in_flight.acquire_owned().await.expect("semaphore");
                match client.post(&url).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (
                            status,
                            r.text()
                                .await
                                .unwrap_or_else(|e| format!("<body error {e}>")),
                        )
                    }
                    Err(e) => (0, format!("<request error {e}>")),
                }
            }));
        }
        let mut out = Vec::with_capacity(N);
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    });
    drop(rt);

    let mut counts = Vec::with_capacity(N);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "a concurrent POST answered {status}: {body}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        counts.push(
            v["count"]
                .as_i64()
                .unwrap_or_else(|| panic!("no count: {body}")),
        );
    }
    counts.sort_unstable();
    let want: Vec<i64> = (1..=N as i64).collect();
    if counts != want {
        let dupes: Vec<_> = counts
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .take(10)
            .collect();
        panic!(
            "counts are not exactly 1..={N}: min {:?} max {:?}, duplicates (first 10) {dupes:?}",
            counts.first(),
            counts.last()
        );
    }
    assert_eq!(
        st.call("GET", "counter", "", Vec::new()).expect_json(200),
        json!({"count": N})
    );
    st.restart();
    assert_eq!(
        st.call("GET", "counter", "", Vec::new()).expect_json(200),
        json!({"count": N})
    );
}

/// What one writer saw.
struct Written {
    key: String,
    attempts: i64,
    acked: Vec<i64>,
    unexpected: Vec<String>,
    cut_off: bool,
}

#[test]
fn a_crash_loses_no_acknowledged_write() {
    const WRITERS: usize = 8;
    let mut st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    st.deploy_fixture("kv", "kv");

    let base = st.url.clone();
    let client = st.client();
    let stop = AtomicBool::new(false);
    let acked_total = AtomicUsize::new(0);

    let written: Vec<Written> = thread::scope(|s| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (client, base, stop, acked_total) =
                    (client.clone(), base.clone(), &stop, &acked_total);
                s.spawn(move || {
                    let (key, path, body) = if w < WRITERS / 2 {
                        ("counter".to_string(), "/objects/counter".to_string(), "")
                    } else {
                        let k = format!("k{w}");
                        (k.clone(), format!("/objects/kv/{k}"), "1")
                    };
                    let started = Instant::now();
                    let mut out = Written {
                        key,
                        attempts: 0,
                        acked: Vec::new(),
                        unexpected: Vec::new(),
                        cut_off: false,
                    };
                    // Bounded by count and time; normally ended by the kill.
                    while !stop.load(Ordering::SeqCst)
                        && out.attempts < 20_000
                        && started.elapsed() < Duration::from_secs(60)
                    {
                        out.attempts += 1;
                        match client.post(format!("{base}{path}")).body(body).send() {
                            Ok(r) if r.status().as_u16() == 200 => {
                                let Ok(text) = r.text() else {
                                    // The body was cut by the kill: not acknowledged.
                                    out.cut_off = true;
                                    break;
                                };
                                let v: Value = serde_json::from_str(&text)
                                    .unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
                                let n = if out.key == "counter" {
                                    &v["count"]
                                } else {
                                    &v["value"]
                                };
                                out.acked.push(as_i64(n));
                                acked_total.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(r) => {
                                let status = r.status();
                                out.unexpected.push(format!(
                                    "{path}: {status} {}",
                                    r.text().unwrap_or_default()
                                ));
                            }
                            Err(_) => {
                                out.cut_off = true;
                                break;
                            }
                        }
                    }
                    out
                })
            })
            .collect();

        // Let them write for about two seconds (and at least until 100 acknowledgements).
        let t0 = Instant::now();
        poll("writers to make progress", Duration::from_secs(60), || {
            (t0.elapsed() >= Duration::from_secs(2) && acked_total.load(Ordering::SeqCst) >= 100)
                .then_some(())
        });
        st.kill9();
        stop.store(true, Ordering::SeqCst);
        handles
            .into_iter()
            .map(|h| h.join().expect("writer"))
            .collect()
    });

    for w in &written {
        assert!(
            w.unexpected.is_empty(),
            "unexpected answers: {:?}",
            w.unexpected
        );
    }
    assert!(
        written.iter().any(|w| w.cut_off),
        "no writer was still writing when the station was killed"
    );

    eprintln!(
        "crash test: acknowledged per writer {:?}, cut off {}",
        written
            .iter()
            .map(|w| (w.key.as_str(), w.acked.len(), w.attempts))
            .collect::<Vec<_>>(),
        written.iter().filter(|w| w.cut_off).count()
    );
    st.restart();

    // The counter: writers share it, so every acknowledged count is distinct.
    let counter: Vec<&Written> = written.iter().filter(|w| w.key == "counter").collect();
    let mut seen = BTreeSet::new();
    for w in &counter {
        for n in &w.acked {
            assert!(seen.insert(*n), "count {n} acknowledged twice");
        }
    }
    let max_acked = seen.last().copied().unwrap_or(0);
    let attempts: i64 = counter.iter().map(|w| w.attempts).sum();
    let now = st.call("GET", "counter", "", Vec::new()).expect_json(200);
    let count = now["count"].as_i64().expect("count");
    assert!(
        count >= max_acked,
        "acknowledged count {max_acked} lost: count after crash is {count}"
    );
    assert!(
        count <= attempts,
        "count {count} exceeds the {attempts} POSTs sent"
    );

    for w in written.iter().filter(|w| w.key != "counter") {
        let max_acked = w.acked.iter().copied().max().unwrap_or(0);
        let v = st.call("GET", "kv", &format!("/{}", w.key), Vec::new());
        let value = if v.status == 404 && max_acked == 0 {
            0
        } else {
            as_i64(&v.expect_json(200)["value"])
        };
        assert!(
            value >= max_acked,
            "kv {}: acknowledged {max_acked} but found {value} after the crash",
            w.key
        );
        assert!(
            value <= w.attempts,
            "kv {}: {value} exceeds {} attempts",
            w.key,
            w.attempts
        );
    }

    // The station serves, and its files are valid TSV.
    let after = st.call("POST", "counter", "", Vec::new()).expect_json(200);
    assert_eq!(after["count"], count + 1, "{after}");
    st.stop();
    for id in ["counter", "kv"] {
        let rows = read_state_tsv(&st.data_dir().join(format!("state/{id}/state.tsv")));
        assert!(!rows.is_empty(), "state/{id}/state.tsv has no rows");
    }
}

#[test]
fn a_damaged_state_file_answers_503_until_host_repair_keeps_what_is_intact() {
    let mut st = Station::start(Opts::new().fsync());
    st.deploy_fixture("counter", "counter");
    for n in 1..=5 {
        let v = st.call("POST", "counter", "/", "").expect_json(200);
        assert_eq!(as_i64(&v["count"]), n);
    }
    // A clean stop checkpoints: every batch is synced into state.tsv and the log is emptied, so
    // damage found later is no crash's doing.
    st.stop();
    let data = st.data_dir().to_path_buf();
    let path = data.join("state/counter/state.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let fourth = text
        .lines()
        .find(|l| l.starts_with("4\t") && l.contains("\tset\t"))
        .expect("batch 4 in the file")
        .to_string();
    let damaged = text.replacen(&fourth, &fourth.replacen("\tset\t", "\tsex\t", 1), 1);
    std::fs::write(&path, &damaged).unwrap();

    st.restart();
    let err = st
        .call("GET", "counter", "/", "")
        .expect_error(503, "storage_error");
    let message = err["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("state.tsv") && message.contains("host repair --data"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        damaged,
        "the damaged file is left as it is"
    );
    // The directory is locked: a second station on it is refused at once.
    let data_arg = data.to_string_lossy().to_string();
    let second = cli(
        &["serve", "--port", "0", "--no-watch", "--data", &data_arg],
        &[],
    );
    assert!(!second.status.success());
    assert!(second.stderr.contains("in use"), "{}", second.stderr);
    // So is a repair while the station runs.
    let busy = cli(&["repair", "--data", &data_arg], &[]);
    assert!(!busy.status.success(), "{}", busy.stdout);

    st.stop();
    let repaired = cli(&["repair", "--data", &data_arg], &[]);
    assert!(repaired.status.success(), "{}", repaired.stderr);
    assert!(
        repaired.stdout.contains("counter:") && repaired.stdout.contains("LOST seqs 4..=5"),
        "{}",
        repaired.stdout
    );
    let backups: Vec<_> = std::fs::read_dir(data.join("repair")).unwrap().collect();
    assert_eq!(backups.len(), 1);
    let backup = backups[0].as_ref().unwrap().path();
    assert_eq!(
        std::fs::read_to_string(backup.join("state/counter/state.tsv")).unwrap(),
        damaged,
        "repair keeps a copy of what it changed"
    );
    assert!(backup.join("report.txt").exists());

    st.restart();
    let v = st.call("GET", "counter", "/", "").expect_json(200);
    assert_eq!(
        as_i64(&v["count"]),
        3,
        "the intact batches before the damage"
    );
    let v = st.call("POST", "counter", "/", "").expect_json(200);
    assert_eq!(as_i64(&v["count"]), 4);
}
