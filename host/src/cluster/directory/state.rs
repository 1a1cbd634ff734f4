//! The directory's state machine: which station homes each object, at which epoch, with which
//! replicas and version. Pure: [`DirectoryState::apply`] takes a [`Command`] and returns an
//! [`Outcome`]; every station applies the same committed commands in the same order and so holds
//! the same directory. No I/O, no clocks: what a command needs (the replicas it assigns, the
//! station it moves to) is decided by its proposer and carried in the command.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How an object is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One home accepts its calls and writes; replicas follow it.
    Stateful,
    /// No state, no home: every station holding its code serves it.
    Stateless,
}

/// One object, as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Stateful or stateless.
    pub mode: Mode,
    /// The station that accepts its calls and writes (for a stateless object: the station it was
    /// first deployed on, which routing ignores).
    pub home: String,
    /// Increases with every change of home; a write or a replicated batch carries it.
    pub epoch: u64,
    /// Stations holding a copy, best first (never the home).
    pub replicas: Vec<String>,
    /// The replicas known to hold every acknowledged write (Kafka's in-sync set); only these may
    /// be promoted.
    pub in_sync: Vec<String>,
    /// Current version number (0 while the first deploy is being installed).
    pub version: u32,
    /// sha256 of the current version.
    pub sha256: String,
}

/// A change to the directory, proposed by a station and committed through Raft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "command")]
pub enum Command {
    /// Make `station` the home of `object` at epoch 1 if no station homes it; otherwise change
    /// nothing (the outcome names the home).
    Claim {
        /// Object id.
        object: String,
        /// The claiming station.
        station: String,
        /// How it is served.
        mode: Mode,
        /// Replicas to assign (in sync from the start: the object has no writes yet).
        replicas: Vec<String>,
    },
    /// The home installed a new current version.
    SetVersion {
        /// Object id.
        object: String,
        /// The home sending it.
        station: String,
        /// The epoch it homes the object at.
        epoch: u64,
        /// Version number.
        version: u32,
        /// Its sha256.
        sha256: String,
    },
    /// The object is undeployed: its entry goes.
    Remove {
        /// Object id.
        object: String,
        /// The epoch the remover knows (a stale remover changes nothing).
        epoch: u64,
    },
    /// A new home at `epoch + 1` (migration or failover).
    Move {
        /// Object id.
        object: String,
        /// The epoch the mover knows.
        epoch: u64,
        /// The new home.
        to: String,
        /// Replicas from now on.
        replicas: Vec<String>,
        /// In-sync replicas from now on (a subset of `replicas`).
        in_sync: Vec<String>,
    },
    /// New replicas or in-sync set at the same epoch.
    SetReplicas {
        /// Object id.
        object: String,
        /// The epoch the proposer knows.
        epoch: u64,
        /// Replicas from now on.
        replicas: Vec<String>,
        /// In-sync replicas from now on (a subset of `replicas`).
        in_sync: Vec<String>,
    },
}

impl Command {
    /// The object the command is about.
    pub fn object(&self) -> &str {
        match self {
            Command::Claim { object, .. }
            | Command::SetVersion { object, .. }
            | Command::Remove { object, .. }
            | Command::Move { object, .. }
            | Command::SetReplicas { object, .. } => object,
        }
    }
}

/// Why a command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Another station homes the object (see the entry).
    HomedElsewhere,
    /// The object is served in the other mode.
    ModeConflict,
    /// The proposer's epoch is not the current one.
    StaleEpoch,
    /// No such object.
    NotFound,
    /// The command names something invalid (e.g. a new home that is the current one).
    Invalid,
}

impl ObjectEntry {
    /// The replicas and in-sync set after a move to `to`: `to` leaves both, and the old home
    /// becomes a replica that is not in sync until it has caught up.
    pub fn after_move(&self, to: &str) -> (Vec<String>, Vec<String>) {
        let mut replicas: Vec<String> =
            self.replicas.iter().filter(|s| *s != to).cloned().collect();
        replicas.push(self.home.clone());
        let in_sync = self.in_sync.iter().filter(|s| *s != to).cloned().collect();
        (replicas, in_sync)
    }
}

/// What applying a command did: the object's entry after it, and the refusal if it changed
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The entry after the command (`None`: no such object).
    pub entry: Option<ObjectEntry>,
    /// Set when the command was refused.
    pub refused: Option<Refusal>,
}

impl Outcome {
    fn applied(entry: Option<&ObjectEntry>) -> Outcome {
        Outcome {
            entry: entry.cloned(),
            refused: None,
        }
    }

    fn refused(entry: Option<&ObjectEntry>, why: Refusal) -> Outcome {
        Outcome {
            entry: entry.cloned(),
            refused: Some(why),
        }
    }
}

/// The whole directory: every object's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryState {
    /// Object id → entry.
    pub objects: BTreeMap<String, ObjectEntry>,
}

impl DirectoryState {
    /// The entry of `object`.
    pub fn get(&self, object: &str) -> Option<&ObjectEntry> {
        self.objects.get(object)
    }

    /// Applies one committed command.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Claim {
                object,
                station,
                mode,
                replicas,
            } => {
                if let Some(entry) = self.objects.get(object) {
                    let why = if entry.mode != *mode {
                        Refusal::ModeConflict
                    } else if entry.home != *station && *mode == Mode::Stateful {
                        Refusal::HomedElsewhere
                    } else {
                        return Outcome::applied(Some(entry));
                    };
                    return Outcome::refused(Some(entry), why);
                }
                let replicas = without(replicas, station);
                let entry = ObjectEntry {
                    mode: *mode,
                    home: station.clone(),
                    epoch: 1,
                    in_sync: replicas.clone(),
                    replicas,
                    version: 0,
                    sha256: String::new(),
                };
                self.objects.insert(object.clone(), entry);
                Outcome::applied(self.objects.get(object))
            }
            Command::SetVersion {
                object,
                station,
                epoch,
                version,
                sha256,
            } => {
                let Some(entry) = self.objects.get_mut(object) else {
                    return Outcome::refused(None, Refusal::NotFound);
                };
                if entry.mode == Mode::Stateful && (entry.home != *station || entry.epoch != *epoch)
                {
                    let why = if entry.home != *station {
                        Refusal::HomedElsewhere
                    } else {
                        Refusal::StaleEpoch
                    };
                    return Outcome::refused(Some(entry), why);
                }
                // Versions only move forward; a stateless object's stations race to report the
                // same number and the first one wins.
                if *version > entry.version {
                    entry.version = *version;
                    entry.sha256 = sha256.clone();
                }
                Outcome::applied(Some(entry))
            }
            Command::Remove { object, epoch } => {
                let Some(entry) = self.objects.get(object) else {
                    return Outcome::refused(None, Refusal::NotFound);
                };
                if entry.epoch != *epoch {
                    return Outcome::refused(Some(entry), Refusal::StaleEpoch);
                }
                self.objects.remove(object);
                Outcome::applied(None)
            }
            Command::Move {
                object,
                epoch,
                to,
                replicas,
                in_sync,
            } => {
                let entry = match self.entry_at(object, *epoch) {
                    Ok(entry) => entry,
                    Err(refused) => return refused,
                };
                if entry.mode != Mode::Stateful || entry.home == *to {
                    return Outcome::refused(Some(entry), Refusal::Invalid);
                }
                entry.home = to.clone();
                entry.epoch += 1;
                entry.replicas = without(replicas, to);
                entry.in_sync = subset(in_sync, &entry.replicas);
                Outcome::applied(Some(entry))
            }
            Command::SetReplicas {
                object,
                epoch,
                replicas,
                in_sync,
            } => {
                let entry = match self.entry_at(object, *epoch) {
                    Ok(entry) => entry,
                    Err(refused) => return refused,
                };
                entry.replicas = without(replicas, &entry.home);
                entry.in_sync = subset(in_sync, &entry.replicas);
                Outcome::applied(Some(entry))
            }
        }
    }

    /// The entry of `object` if it is at `epoch`; otherwise the refusal to answer with.
    fn entry_at(&mut self, object: &str, epoch: u64) -> Result<&mut ObjectEntry, Outcome> {
        match self.objects.get_mut(object) {
            None => Err(Outcome::refused(None, Refusal::NotFound)),
            Some(entry) if entry.epoch != epoch => {
                Err(Outcome::refused(Some(entry), Refusal::StaleEpoch))
            }
            Some(entry) => Ok(entry),
        }
    }

    /// The stateful objects homed at `station`, with their entries.
    pub fn homed_at<'a>(
        &'a self,
        station: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a ObjectEntry)> + 'a {
        self.objects
            .iter()
            .filter(move |(_, e)| e.mode == Mode::Stateful && e.home == station)
    }
}

fn without(stations: &[String], station: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in stations {
        if s != station && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

fn subset(stations: &[String], of: &[String]) -> Vec<String> {
    of.iter()
        .filter(|s| stations.contains(s))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(object: &str, station: &str, replicas: &[&str]) -> Command {
        Command::Claim {
            object: object.into(),
            station: station.into(),
            mode: Mode::Stateful,
            replicas: replicas.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_claim_wins_and_later_ones_learn_the_home() {
        let mut dir = DirectoryState::default();
        let first = dir.apply(&claim("x", "a", &["b", "a"]));
        assert_eq!(first.refused, None);
        let entry = first.entry.unwrap();
        assert_eq!((entry.home.as_str(), entry.epoch), ("a", 1));
        assert_eq!(
            entry.replicas,
            vec!["b"],
            "the home is never its own replica"
        );
        assert_eq!(entry.in_sync, vec!["b"]);
        let second = dir.apply(&claim("x", "b", &[]));
        assert_eq!(second.refused, Some(Refusal::HomedElsewhere));
        assert_eq!(second.entry.unwrap().home, "a");
        // The home claiming again (a restart) is fine and changes nothing.
        assert_eq!(dir.apply(&claim("x", "a", &[])).refused, None);
        assert_eq!(dir.get("x").unwrap().replicas, vec!["b"]);
    }

    #[test]
    fn a_claim_in_the_other_mode_is_a_conflict() {
        let mut dir = DirectoryState::default();
        dir.apply(&claim("x", "a", &[]));
        let stateless = Command::Claim {
            object: "x".into(),
            station: "a".into(),
            mode: Mode::Stateless,
            replicas: vec![],
        };
        assert_eq!(dir.apply(&stateless).refused, Some(Refusal::ModeConflict));
    }

    #[test]
    fn versions_come_from_the_home_at_its_epoch_and_only_move_forward() {
        let mut dir = DirectoryState::default();
        dir.apply(&claim("x", "a", &[]));
        let set = |station: &str, epoch, version| Command::SetVersion {
            object: "x".into(),
            station: station.into(),
            epoch,
            version,
            sha256: format!("sha{version}"),
        };
        assert_eq!(dir.apply(&set("a", 1, 1)).refused, None);
        assert_eq!(
            dir.apply(&set("b", 1, 2)).refused,
            Some(Refusal::HomedElsewhere)
        );
        assert_eq!(
            dir.apply(&set("a", 2, 2)).refused,
            Some(Refusal::StaleEpoch)
        );
        dir.apply(&set("a", 1, 3));
        dir.apply(&set("a", 1, 2));
        let entry = dir.get("x").unwrap();
        assert_eq!((entry.version, entry.sha256.as_str()), (3, "sha3"));
    }

    #[test]
    fn a_move_happens_once_per_epoch() {
        let mut dir = DirectoryState::default();
        dir.apply(&claim("x", "a", &["b", "c"]));
        let mv = |to: &str| Command::Move {
            object: "x".into(),
            epoch: 1,
            to: to.into(),
            replicas: vec!["a".into(), "c".into(), to.into()],
            in_sync: vec!["c".into()],
        };
        let moved = dir.apply(&mv("b"));
        assert_eq!(moved.refused, None);
        let entry = moved.entry.unwrap();
        assert_eq!((entry.home.as_str(), entry.epoch), ("b", 2));
        assert_eq!(entry.replicas, vec!["a", "c"]);
        assert_eq!(entry.in_sync, vec!["c"]);
        // A second failover decided from the same epoch (another leader, a retry) changes nothing.
        let again = dir.apply(&mv("c"));
        assert_eq!(again.refused, Some(Refusal::StaleEpoch));
        assert_eq!(dir.get("x").unwrap().home, "b");
    }

    #[test]
    fn replicas_change_at_the_current_epoch_only_and_removal_needs_it_too() {
        let mut dir = DirectoryState::default();
        dir.apply(&claim("x", "a", &["b", "c"]));
        let shrink = Command::SetReplicas {
            object: "x".into(),
            epoch: 1,
            replicas: vec!["b".into(), "c".into()],
            in_sync: vec!["b".into(), "z".into()],
        };
        assert_eq!(dir.apply(&shrink).entry.unwrap().in_sync, vec!["b"]);
        let stale = Command::Remove {
            object: "x".into(),
            epoch: 7,
        };
        assert_eq!(dir.apply(&stale).refused, Some(Refusal::StaleEpoch));
        let remove = Command::Remove {
            object: "x".into(),
            epoch: 1,
        };
        assert_eq!(dir.apply(&remove), Outcome::default());
        assert!(dir.get("x").is_none());
        assert_eq!(dir.apply(&remove).refused, Some(Refusal::NotFound));
    }
}
