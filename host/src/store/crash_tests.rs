//! Crash-image tests of the durable state path: the store runs on a simulated disk
//! (`vfs/sim.rs`), a power cut falls on a random change to it, and the disk it leaves — unsynced
//! writes dropped, torn, zeroed, in any order — is opened again and checked against a model of what
//! was acknowledged.
//!
//! After every simulated crash, for every object: the store opens; the recovered state is exactly one
//! of the states the object went through (so nothing is half-applied and no batch is there twice)
//! and not older than the last acknowledged one (so nothing acknowledged is lost); and it takes writes
//! again. Workloads mix commits of one to four writes over several objects, waits for some tickets and
//! not others, snapshot installs, purges and re-creates; the store runs with a tiny checkpoint size
//! and compaction threshold so checkpoints and compactions happen all the time.
//!
//! `OP_CRASH_CASES` sets the number of cases (default 160), `OP_CRASH_SEED` runs one seed; a failure
//! names its seed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::vfs::sim::{CrashMode, Fault, FaultOp, SimFs};
use super::vfs::{Fs, Vfs as _};
use super::{CommitTicket, Durability, Error, ObjectState, Store, StoreConfig, Write};

const OBJECTS: [&str; 3] = ["a", "b", "c"];
const KEYS: [&str; 6] = ["k0", "k1", "k2", "tab\tkey", "k4", "long"];
/// Crashes per case: the disk each one leaves is where the next run starts.
const CYCLES: usize = 3;

/// An object's state as the tests compare it: applied seq and current values.
type Content = (u64, BTreeMap<String, String>);

/// One object's states in the order the workload made them; `acked` is the newest one acknowledged.
#[derive(Debug, Clone)]
struct History {
    states: Vec<Content>,
    acked: usize,
}

impl History {
    fn new() -> History {
        History {
            states: vec![(0, BTreeMap::new())],
            acked: 0,
        }
    }

    fn current(&self) -> &Content {
        self.states.last().expect("never empty")
    }

    /// Records a new state; returns its index (to acknowledge it later).
    fn push(&mut self, content: Content) -> usize {
        self.states.push(content);
        self.states.len() - 1
    }

    fn ack(&mut self, index: usize) {
        self.acked = self.acked.max(index);
    }

    /// Checks a recovered state and makes it the base: what came after it was lost in the crash
    /// (and was not acknowledged, or the check fails).
    fn recovered(&mut self, got: &Content) -> Result<(), String> {
        let Some(at) = self.states[self.acked..].iter().position(|s| s == got) else {
            let older = self.states[..self.acked].iter().rposition(|s| s == got);
            return Err(format!(
                "recovered {got:?}, which is {} (last acknowledged {:?}; states since: {:?})",
                match older {
                    Some(i) => format!("the older state #{i}: acknowledged writes were lost"),
                    None => "no state the object went through: half-applied or invented".into(),
                },
                self.states[self.acked],
                &self.states[self.acked..],
            ));
        };
        self.states.truncate(self.acked + at + 1);
        self.acked = self.states.len() - 1;
        Ok(())
    }
}

fn config(dir: &Path, disk: &SimFs) -> StoreConfig {
    StoreConfig {
        durability: Durability::Fsync,
        history_versions: 3,
        fs: Fs(Arc::new(disk.clone())),
        checkpoint_bytes: 1500,
        compaction_min_records: 10,
        ..StoreConfig::new(dir.join("data"))
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn content(state: &ObjectState) -> Content {
    (state.applied_seq(), state.snapshot())
}

fn random_writes(rng: &mut StdRng) -> Vec<Write> {
    (0..rng.random_range(1..=4))
        .map(|_| {
            let key = KEYS[rng.random_range(0..KEYS.len())].to_string();
            if rng.random_bool(0.2) {
                Write::Delete { key }
            } else {
                let len = if key == "long" { 300 } else { 6 };
                let value: String = (0..len)
                    .map(|_| ['x', 'y', '\n', '"', '\t', 'z'][rng.random_range(0..6)])
                    .collect();
                Write::Set { key, value }
            }
        })
        .collect()
}

fn apply(content: &Content, writes: &[Write]) -> Content {
    let mut values = content.1.clone();
    for w in writes {
        match w {
            Write::Set { key, value } => values.insert(key.clone(), value.clone()),
            Write::Delete { key } => values.remove(key),
        };
    }
    (content.0 + 1, values)
}

/// What one run of the workload did before it stopped.
#[derive(Default)]
struct Tally {
    crashes: u64,
    acked: u64,
}

/// One case: `CYCLES` runs of a random workload, each ended by a power cut, each checked.
fn run_case(seed: u64, tally: &mut Tally) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut disk = SimFs::new();
    let mut model: BTreeMap<&str, History> =
        OBJECTS.iter().map(|&id| (id, History::new())).collect();
    for cycle in 0..=CYCLES {
        let store = Store::open(config(dir.path(), &disk))
            .map_err(|e| format!("cycle {cycle}: the store does not open: {e}"))?;
        for (id, history) in model.iter_mut() {
            let state = store
                .state(id)
                .map_err(|e| format!("cycle {cycle}: `{id}` does not load: {e}"))?;
            history
                .recovered(&content(&state))
                .map_err(|e| format!("cycle {cycle}: `{id}`: {e}"))?;
        }
        if cycle == CYCLES {
            store.shutdown();
            return Ok(());
        }
        disk.crash_after(rng.random_range(0..300), rng.random());
        workload(&store, &mut model, &mut rng, tally);
        let image = disk
            .take_crash()
            .unwrap_or_else(|| disk.crash(&mut rng, CrashMode::Random));
        tally.crashes += 1;
        drop(store);
        disk = image;
    }
    Ok(())
}

/// Runs random operations until the disk crashes or the steps run out.
fn workload(
    store: &Store,
    model: &mut BTreeMap<&str, History>,
    rng: &mut StdRng,
    tally: &mut Tally,
) {
    let mut pending: Vec<(&str, usize, CommitTicket)> = Vec::new();
    for _ in 0..rng.random_range(20..120) {
        let id = OBJECTS[rng.random_range(0..OBJECTS.len())];
        let Ok(state) = store.state(id) else { break };
        let step = rng.random_range(0..100);
        let going = match step {
            0..70 => {
                let writes = random_writes(rng);
                let history = model.get_mut(id).expect("modelled");
                let next = apply(history.current(), &writes);
                match state.commit(writes) {
                    Ok(ticket) => {
                        let index = history.push(next);
                        pending.push((id, index, ticket));
                        true
                    }
                    Err(_) => false,
                }
            }
            70..82 => settle(&mut pending, model, tally),
            82..92 => {
                let donor = OBJECTS[rng.random_range(0..OBJECTS.len())];
                install(store, &state, donor, model)
            }
            _ => {
                let ok = store.purge_state(id).is_ok();
                let history = model.get_mut(id).expect("modelled");
                let index = history.push((0, BTreeMap::new()));
                if ok {
                    history.ack(index);
                }
                ok
            }
        };
        if rng.random_bool(0.3) && !settle(&mut pending, model, tally) {
            break;
        }
        if !going {
            break;
        }
    }
    settle(&mut pending, model, tally);
}

/// Waits for every pending ticket, acknowledging those that resolve; false once one fails.
fn settle(
    pending: &mut Vec<(&str, usize, CommitTicket)>,
    model: &mut BTreeMap<&str, History>,
    tally: &mut Tally,
) -> bool {
    let mut all_ok = true;
    for (id, index, ticket) in pending.drain(..) {
        match block_on(ticket.durable()) {
            Ok(()) => {
                model.get_mut(id).expect("modelled").ack(index);
                tally.acked += 1;
            }
            Err(_) => all_ok = false,
        }
    }
    all_ok
}

/// Installs `donor`'s snapshot into `state`'s object (not itself, and not an empty one).
fn install(
    store: &Store,
    state: &ObjectState,
    donor: &str,
    model: &mut BTreeMap<&str, History>,
) -> bool {
    if donor == state.object_id() {
        return true;
    }
    let Ok(donor_state) = store.state(donor) else {
        return false;
    };
    let snapshot = donor_state.export_snapshot();
    if snapshot.seq == 0 {
        return true;
    }
    let installed = (snapshot.seq, donor_state.snapshot());
    let history = model.get_mut(state.object_id()).expect("modelled");
    let index = history.push(installed);
    match state.install_snapshot(&snapshot) {
        Ok(()) => {
            history.ack(index);
            true
        }
        Err(Error::Busy { .. }) => true,
        Err(_) => false,
    }
}

#[test]
fn every_acknowledged_batch_survives_any_power_cut_and_nothing_is_half_applied() {
    let seeds: Vec<u64> = match std::env::var("OP_CRASH_SEED") {
        Ok(seed) => vec![seed.parse().expect("OP_CRASH_SEED is a number")],
        Err(_) => {
            let cases: u64 = std::env::var("OP_CRASH_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(160);
            (0..cases).map(|case| 0x5eed_0000 + case).collect()
        }
    };
    let mut tally = Tally::default();
    for &seed in &seeds {
        if let Err(e) = run_case(seed, &mut tally) {
            panic!("crash-image case failed; replay with OP_CRASH_SEED={seed}: {e}");
        }
    }
    eprintln!(
        "crash images: {} cases, {} simulated power cuts, {} acknowledged batches checked",
        seeds.len(),
        tally.crashes,
        tally.acked
    );
    assert!(tally.crashes >= seeds.len() as u64);
}

// ---------------------------------------------------------------------------------------------
// Directed faults: each was a silent loss or a refusal to start before the store failed stop.

/// A store on `disk` with one object written and acknowledged three times.
fn store_with_three_batches(dir: &Path, disk: &SimFs) -> (Store, ObjectState) {
    let store = Store::open(config(dir, disk)).unwrap();
    let state = store.state("a").unwrap();
    for i in 0..3 {
        let ticket = state
            .commit(vec![Write::Set {
                key: "n".into(),
                value: i.to_string(),
            }])
            .unwrap();
        block_on(ticket.durable()).unwrap();
    }
    // Acknowledged batches reach their object file after the log: let the writer finish.
    store.writer_idle();
    (store, state)
}

/// The store a power cut now leaves (only what was synced), and its disk.
fn reopen_after_power_cut(dir: &Path, disk: &SimFs, store: Store) -> (Store, SimFs) {
    let mut rng = StdRng::seed_from_u64(1);
    let image = disk.crash(&mut rng, CrashMode::DropAll);
    drop(store);
    (Store::open(config(dir, &image)).unwrap(), image)
}

fn commit_one(state: &ObjectState, value: &str) -> Result<(), Error> {
    let ticket = state.commit(vec![Write::Set {
        key: "n".into(),
        value: value.into(),
    }])?;
    block_on(ticket.durable())
}

#[test]
fn a_failed_checkpoint_sync_stops_writes_instead_of_emptying_the_log() {
    // fsyncgate: the failed syncfs dropped the dirty pages; a retry would report success and the
    // checkpoint would empty the log while the object file lacks the batches.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimFs::new();
    let (store, state) = store_with_three_batches(dir.path(), &disk);
    disk.inject(Fault {
        op: FaultOp::SyncFs,
        path: String::new(),
        skip: 0,
        errno: libc::EIO,
    });
    let other = store.state("b").unwrap();
    // Enough bytes to pass the checkpoint size: the checkpoint fails on the way.
    let mut result = Ok(());
    for i in 0..40 {
        result = commit_one(&state, &format!("{i:0>200}"));
        if result.is_err() {
            break;
        }
    }
    assert_eq!(disk.faults_left(), 0, "the checkpoint ran");
    let refused = commit_one(&other, "x").unwrap_err();
    assert!(
        matches!(&refused, Error::Failed(msg) if msg.contains("syncfs")),
        "every object refuses writes, naming the sync: {refused}"
    );
    let acked_before = state.durable_seq();
    let (store, _) = reopen_after_power_cut(dir.path(), &disk, store);
    let state = store.state("a").unwrap();
    assert!(
        state.applied_seq() >= acked_before,
        "acknowledged batches are replayed from the log that was kept"
    );
    drop(result);
    commit_one(&state, "after").unwrap();
}

#[test]
fn a_partial_log_append_stops_writes_and_hides_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimFs::new();
    let (store, state) = store_with_three_batches(dir.path(), &disk);
    disk.inject(Fault {
        op: FaultOp::Write { keep: 7 },
        path: "wal.log".into(),
        skip: 0,
        errno: libc::ENOSPC,
    });
    let failed = commit_one(&state, "lost").unwrap_err();
    assert!(
        matches!(&failed, Error::Failed(msg) if msg.contains("wal.log")),
        "{failed}"
    );
    // Later rounds are not appended after the garbage and acknowledged.
    let later = commit_one(&store.state("b").unwrap(), "later").unwrap_err();
    assert!(matches!(later, Error::Failed(_)), "{later}");
    let (store, _) = reopen_after_power_cut(dir.path(), &disk, store);
    let state = store.state("a").unwrap();
    assert_eq!(state.applied_seq(), 3);
    assert_eq!(state.get("n").as_deref(), Some("2"));
    commit_one(&state, "after").unwrap();
}

#[test]
fn a_failed_object_file_write_after_the_log_keeps_the_acknowledged_batch() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimFs::new();
    let (store, state) = store_with_three_batches(dir.path(), &disk);
    disk.inject(Fault {
        op: FaultOp::Write { keep: 5 },
        path: "a/state.tsv".into(),
        skip: 0,
        errno: libc::EIO,
    });
    // Logged and acknowledged first; the object file write fails after.
    commit_one(&state, "logged").unwrap();
    let refused = commit_one(&state, "next").unwrap_err();
    assert!(
        matches!(&refused, Error::Failed(msg) if msg.contains("a/state.tsv")),
        "{refused}"
    );
    let (store, _) = reopen_after_power_cut(dir.path(), &disk, store);
    let state = store.state("a").unwrap();
    assert_eq!(state.applied_seq(), 4);
    assert_eq!(state.get("n").as_deref(), Some("logged"));
}

#[test]
fn a_purge_whose_checkpoint_fails_is_refused_and_brings_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimFs::new();
    let (store, _state) = store_with_three_batches(dir.path(), &disk);
    disk.inject(Fault {
        op: FaultOp::SyncFs,
        path: String::new(),
        skip: 0,
        errno: libc::EIO,
    });
    assert!(store.purge_state("a").is_err());
    assert!(
        disk.is_dir(&dir.path().join("data/state/a")),
        "the directory stays until the log is checkpointed"
    );
    let (store, disk) = reopen_after_power_cut(dir.path(), &disk, store);
    assert_eq!(store.state("a").unwrap().applied_seq(), 3);
    store.purge_state("a").unwrap();
    let state = store.state("a").unwrap();
    assert_eq!(state.applied_seq(), 0, "re-created empty");
    commit_one(&state, "new").unwrap();
    let (store, _) = reopen_after_power_cut(dir.path(), &disk, store);
    let state = store.state("a").unwrap();
    assert_eq!(
        (state.applied_seq(), state.get("n").as_deref()),
        (1, Some("new")),
        "no batch of the purged history comes back"
    );
}

#[test]
fn reordered_write_back_with_zeros_before_complete_lines_recovers_from_the_log() {
    // The object file's later page reached the disk, an earlier one did not: zeros, then whole
    // commit lines. The log proves both batches, so the file is cut back and they are re-appended.
    let dir = tempfile::tempdir().unwrap();
    let disk = SimFs::new();
    let (store, state) = store_with_three_batches(dir.path(), &disk);
    let path = dir.path().join("data/state/a/state.tsv");
    let before = disk.file_len(&path).unwrap().unwrap() as usize;
    commit_one(&state, "four").unwrap();
    commit_one(&state, "five").unwrap();
    store.writer_idle();
    let bytes = disk.read(&path).unwrap();
    let fourth_len = bytes[before..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let image = disk.crash(&mut StdRng::seed_from_u64(0), CrashMode::KeepAll);
    drop((state, store));
    image.damage(&path, before, &vec![0; fourth_len]);
    let store = Store::open(config(dir.path(), &image)).unwrap();
    let state = store.state("a").unwrap();
    assert_eq!(
        (state.applied_seq(), state.get("n").as_deref()),
        (5, Some("five"))
    );
    assert_eq!(image.read(&path).unwrap(), bytes, "the file is whole again");
}

#[test]
fn damage_a_crash_cannot_explain_refuses_to_open_and_names_the_repair() {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimFs::new();
    let (store, state) = store_with_three_batches(dir.path(), &disk);
    // Shutdown checkpoints: the three batches are synced and leave the log.
    store.shutdown();
    drop((state, store));
    let store = Store::open(config(dir.path(), &disk)).unwrap();
    commit_one(&store.state("a").unwrap(), "four").unwrap();
    let image = disk.crash(&mut StdRng::seed_from_u64(0), CrashMode::KeepAll);
    drop(store);
    // The first batch's seq changes: synced at the checkpoint, so no crash did it.
    let path = dir.path().join("data/state/a/state.tsv");
    let header_end = image
        .read(&path)
        .unwrap()
        .iter()
        .position(|&b| b == b'\n')
        .unwrap()
        + 1;
    image.damage(&path, header_end, b"x");
    let damaged = image.read(&path).unwrap();
    let err = Store::open(config(dir.path(), &image))
        .and_then(|s| s.state("a"))
        .map(|_| ())
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, Error::Damaged { offset, .. } if *offset == header_end as u64),
        "{message}"
    );
    assert!(
        message.contains("state.tsv") && message.contains("host repair --data"),
        "{message}"
    );
    assert_eq!(image.read(&path).unwrap(), damaged, "left as it is");
}

// ---------------------------------------------------------------------------------------------
// Bounded memory: a disk slower than the commits slows the commits down.

#[test]
fn commits_wait_for_a_slow_disk_once_the_writer_queue_is_full() {
    use futures::FutureExt as _;
    let dir = tempfile::tempdir().unwrap();
    let disk = SimFs::new();
    let store = Store::open(StoreConfig {
        writer_queue_bytes: 1 << 20,
        checkpoint_bytes: 64 << 20,
        ..config(dir.path(), &disk)
    })
    .unwrap();
    let state = store.state("a").unwrap();
    let big = |value: &str| {
        vec![Write::Set {
            key: "blob".into(),
            value: value.repeat(600 << 10),
        }]
    };
    disk.hold_syncs();
    // The first batch takes 600 KiB of the 1 MiB queue; the writer holds it while its log sync waits.
    let first = state.commit(big("a")).unwrap();
    disk.wait_for_held_sync();
    assert!(store.stats().queued_bytes >= 600 << 10);
    // A second one does not fit until the disk has taken the first.
    let cost = super::write_cost(&big("b"));
    assert!(
        state.reserve(cost).now_or_never().is_none(),
        "room was granted while the queue was full"
    );
    disk.release_syncs();
    let permit = block_on(state.reserve(cost)).unwrap();
    let second = state.commit_reserved(big("b"), None, permit).unwrap();
    block_on(first.durable()).unwrap();
    block_on(second.durable()).unwrap();
    store.writer_idle();
    assert_eq!(
        store.stats().queued_bytes,
        0,
        "written batches give their room back"
    );
    assert_eq!(state.get("blob").unwrap(), "b".repeat(600 << 10));
}
