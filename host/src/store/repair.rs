//! `host repair --data DIR`: what an operator runs when a station refuses to start on a damaged
//! file (see [`super::Error::Damaged`]).
//!
//! Crash recovery never rewrites what it cannot explain; repair does, and says what it cost. With no
//! station running on the directory (it takes the same lock as one), it:
//!
//! 1. reads the write-ahead log, keeping every round that checks out even past damage;
//! 2. for every object's `state.tsv`: does what crash recovery would, or, where that fails, keeps
//!    the intact batches before the damage and the logged batches that continue them (checked by
//!    their chain hashes), and names the seqs it could not keep;
//! 3. copies every file it changes — and the log — to `repair/{unix-ms}/` first, writes the repaired
//!    files atomically (temp file, fsync, rename, directory fsync), then removes the log, whose
//!    batches are now in the files;
//! 4. writes the report to `repair/{unix-ms}/report.txt` and returns it.
//!
//! A replica elsewhere in the cluster may still hold batches this station lost: the object's chain
//! hash makes the two histories' difference visible, and the directory's catch-up resolves it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::error::{Error, IoContext};
use super::fsutil::{create_dir_durable, fsync_dir, is_valid_id, now_ms, write_atomic};
use super::state::{self, Salvage};
use super::vfs::{Fs, RealFs};
use super::wal::{self, LoggedBatch};
use super::{DataDirLock, StoreConfig};

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// Where the copies of the changed files and the report are.
    pub backup_dir: PathBuf,
    /// Files rewritten because of damage (not counting ordinary crash recovery).
    pub damaged_files: usize,
    /// Batches found that could not be kept, over all objects.
    pub lost_batches: u64,
    /// The report, one line per finding.
    pub text: String,
}

/// Repairs the data directory of `config` (see the module doc).
pub fn repair(config: &StoreConfig) -> Result<RepairReport, Error> {
    if !config.data_dir.join("station.tsv").is_file() {
        return Err(Error::io(
            &config.data_dir,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a station's data directory (it has no station.tsv)",
            ),
        ));
    }
    let _lock = DataDirLock::take(&config.data_dir)?;
    let fs = &config.fs;
    let state_dir = config.data_dir.join("state");
    let backup_dir = config.data_dir.join("repair").join(now_ms().to_string());
    let mut report = Report::default();
    let wal_path = state_dir.join(wal::WAL_FILE);
    let log = read_log(fs, &wal_path, &mut report)?;
    let mut ids: Vec<String> = if fs.is_dir(&state_dir) {
        fs.read_dir(&state_dir)
            .at(&state_dir)?
            .into_iter()
            .filter_map(|name| name.into_string().ok())
            .filter(|name| is_valid_id(name) && fs.is_dir(&state_dir.join(name)))
            .collect()
    } else {
        Vec::new()
    };
    ids.sort();
    for id in &ids {
        let logged: Vec<LoggedBatch> = log.iter().filter(|b| b.object_id == *id).cloned().collect();
        repair_object(config, id, &logged, &backup_dir, &mut report)?;
    }
    if fs.file_len(&wal_path).at(&wal_path)?.is_some() {
        backup(fs, &wal_path, &backup_dir.join("wal.log"))?;
        fs.remove_file(&wal_path).at(&wal_path)?;
        fsync_dir(&**fs, &state_dir)?;
        report.line(format!(
            "write-ahead log: its batches are in the object files now; removed (copy in {})",
            backup_dir.join("wal.log").display()
        ));
    }
    if report.damaged == 0 && report.log_damage == 0 {
        report.line("nothing was damaged: the next start recovers as after any crash".into());
    }
    let text = report.text.clone();
    if fs.is_dir(&backup_dir) || report.damaged > 0 {
        create_dir_durable(&RealFs, &backup_dir)?;
        write_atomic(&RealFs, &backup_dir.join("report.txt"), text.as_bytes())?;
    }
    Ok(RepairReport {
        backup_dir,
        damaged_files: report.damaged + report.log_damage,
        lost_batches: report.lost,
        text,
    })
}

/// What the repair found so far.
#[derive(Default)]
struct Report {
    text: String,
    damaged: usize,
    log_damage: usize,
    lost: u64,
}

impl Report {
    fn line(&mut self, line: String) {
        let _ = writeln!(self.text, "{line}");
    }
}

/// The log's batches: all of them, or, past damage, every round that checks out.
fn read_log(fs: &Fs, path: &Path, report: &mut Report) -> Result<Vec<LoggedBatch>, Error> {
    if fs.file_len(path).at(path)?.is_none() {
        return Ok(Vec::new());
    }
    let bytes = fs.read(path).at(path)?;
    match wal::read(&bytes) {
        Ok(contents) => Ok(contents.batches),
        Err(damage) => {
            let (batches, bad) = wal::salvage(&bytes);
            report.log_damage += 1;
            let ranges: Vec<String> = bad.iter().map(|(a, b)| format!("{a}..{b}")).collect();
            report.line(format!(
                "write-ahead log {}: damaged at byte {} ({}); kept {} batches from the rounds that check out, dropped bytes {}",
                path.display(),
                damage.offset,
                damage.reason,
                batches.len(),
                ranges.join(", ")
            ));
            Ok(batches)
        }
    }
}

/// Repairs one object's file with its logged batches, backing it up first if it changes.
fn repair_object(
    config: &StoreConfig,
    id: &str,
    logged: &[LoggedBatch],
    backup_dir: &Path,
    report: &mut Report,
) -> Result<(), Error> {
    let fs = &config.fs;
    let path = config.data_dir.join("state").join(id).join("state.tsv");
    let bytes = match fs.file_len(&path).at(&path)? {
        Some(_) => fs.read(&path).at(&path)?,
        None => Vec::new(),
    };
    let Salvage {
        content,
        kept_seq,
        lost,
        damage,
    } = state::salvage(&bytes, logged, config.history_versions);
    if content == bytes {
        return Ok(());
    }
    if !bytes.is_empty() {
        backup(
            fs,
            &path,
            &backup_dir.join("state").join(id).join("state.tsv"),
        )?;
    }
    write_atomic(&**fs, &path, &content)?;
    match damage {
        None => report.line(format!(
            "{id}: recovered as after a crash, through seq {kept_seq}"
        )),
        Some(damage) => {
            report.damaged += 1;
            let lost_text = match lost {
                Some((from, to)) => {
                    report.lost += to - from + 1;
                    format!("LOST seqs {from}..={to} ({} batches)", to - from + 1)
                }
                None => "nothing lost".into(),
            };
            report.line(format!(
                "{id}: {} was damaged ({damage}); kept through seq {kept_seq}; {lost_text}; the original is in {}",
                path.display(),
                backup_dir.join("state").join(id).join("state.tsv").display()
            ));
        }
    }
    Ok(())
}

/// Copies `from` to `to` durably (creating `to`'s directories).
fn backup(fs: &Fs, from: &Path, to: &Path) -> Result<(), Error> {
    let bytes = fs.read(from).at(from)?;
    if let Some(dir) = to.parent() {
        create_dir_durable(&RealFs, dir)?;
    }
    write_atomic(&RealFs, to, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Durability, Store, Write};

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            durability: Durability::Fsync,
            ..StoreConfig::new(dir.join("data"))
        }
    }

    fn commit(store: &Store, id: &str, value: &str) {
        let ticket = store
            .state(id)
            .unwrap()
            .commit(vec![Write::Set {
                key: "k".into(),
                value: value.into(),
            }])
            .unwrap();
        futures::executor::block_on(ticket.durable()).unwrap();
    }

    #[test]
    fn a_damaged_file_is_cut_at_the_damage_backed_up_and_what_was_lost_reported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        for i in 1..=4 {
            commit(&store, "hurt", &i.to_string());
            commit(&store, "fine", &i.to_string());
        }
        store.shutdown();
        drop(store);
        let path = dir.path().join("data/state/hurt/state.tsv");
        let original = std::fs::read_to_string(&path).unwrap();
        // Damage the third batch's record (synced at shutdown: no crash explains it).
        let damaged = original.replacen("\tset\tk\t3", "\tsex\tk\t3", 1);
        assert_ne!(damaged, original);
        std::fs::write(&path, &damaged).unwrap();
        let refused = Store::open(config(dir.path()))
            .and_then(|s| s.state("hurt"))
            .map(|_| ());
        assert!(matches!(refused, Err(Error::Damaged { .. })), "{refused:?}");

        let report = repair(&config(dir.path())).unwrap();
        assert_eq!(report.damaged_files, 1);
        assert_eq!(report.lost_batches, 2, "{}", report.text);
        assert!(
            report.text.contains("hurt: ") && report.text.contains("LOST seqs 3..=4"),
            "{}",
            report.text
        );
        let copy = report.backup_dir.join("state/hurt/state.tsv");
        assert_eq!(
            std::fs::read_to_string(copy).unwrap(),
            damaged,
            "the original is kept"
        );
        assert!(report.backup_dir.join("report.txt").exists());

        let store = Store::open(config(dir.path())).unwrap();
        let hurt = store.state("hurt").unwrap();
        assert_eq!(
            (hurt.applied_seq(), hurt.get("k").as_deref()),
            (2, Some("2"))
        );
        let fine = store.state("fine").unwrap();
        assert_eq!(
            (fine.applied_seq(), fine.get("k").as_deref()),
            (4, Some("4"))
        );
        commit(&store, "hurt", "again");
    }

    #[test]
    fn a_damaged_log_keeps_the_rounds_that_check_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        for i in 1..=3 {
            commit(&store, "a", &i.to_string());
        }
        // A crash image: the log holds all three rounds; the object file only what it had synced.
        let image = tempfile::tempdir().unwrap();
        let copy = |from: &Path, to: &Path| {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(from, to).unwrap();
        };
        for rel in ["data/station.tsv", "data/state/wal.log"] {
            copy(&dir.path().join(rel), &image.path().join(rel));
        }
        std::fs::create_dir_all(image.path().join("data/state/a")).unwrap();
        std::fs::write(
            image.path().join("data/state/a/state.tsv"),
            "seq\thlc\top\tkey\tvalue\n",
        )
        .unwrap();
        store.shutdown();
        // Flip a byte in the second round.
        let wal_path = image.path().join("data/state/wal.log");
        let mut log = std::fs::read(&wal_path).unwrap();
        let second = log.len() * 2 / 3 - 10;
        log[second] ^= 0x55;
        std::fs::write(&wal_path, &log).unwrap();
        let refused = Store::open(config(image.path())).map(|_| ());
        let Err(Error::Damaged { path, .. }) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(path, wal_path);

        let report = repair(&config(image.path())).unwrap();
        assert!(report.text.contains("write-ahead log"), "{}", report.text);
        assert!(report.backup_dir.join("wal.log").exists());
        let store = Store::open(config(image.path())).unwrap();
        let a = store.state("a").unwrap();
        assert!(
            a.applied_seq() >= 1,
            "the rounds before the damage are kept"
        );
        assert!(
            report.lost_batches == 3 - a.applied_seq(),
            "what is not kept is reported: {}",
            report.text
        );
    }

    #[test]
    fn repair_refuses_what_is_not_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = repair(&config(dir.path())).unwrap_err();
        assert!(err.to_string().contains("data"), "{err}");
        assert!(!dir.path().join("data").exists(), "nothing is created");
    }

    #[test]
    fn repair_refuses_a_directory_a_station_has_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(config(dir.path())).unwrap();
        let err = repair(&config(dir.path())).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(store);
        repair(&config(dir.path())).unwrap();
    }
}
