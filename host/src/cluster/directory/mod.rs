//! The ownership directory (DESIGN §6): an embedded Raft group (openraft) whose state machine maps
//! every object to its home, epoch, replicas, in-sync set, mode and current version.
//!
//! - [`state`]: the pure state machine (commands, outcomes), unit-tested without sockets;
//! - [`storage`]: the Raft log, vote and snapshots in redb under `data/cluster/`;
//! - [`network`]: Raft messages over the stations' HTTP API, and an in-memory twin for tests;
//! - [`lease`]: write leases, the rule that keeps one writer per object;
//! - [`duties`]: what the leader decides on its own: failover and voter membership.
//!
//! The first stations to form the cluster are voters (`--voters`, 3 by default); later ones join as
//! learners and are promoted when a voter is gone. A station alone is a one-voter group.
//! The directory knows nothing of axum, wasmtime or object state: `api/` calls its handlers and
//! the coordinator follows its changes.

pub mod duties;
pub mod lease;
pub mod network;
pub mod state;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState};
use serde::{Deserialize, Serialize};

pub use state::{Command, DirectoryState, Mode, ObjectEntry, Outcome, Refusal};
pub use storage::Applied;

/// A Raft node id: derived from the station id ([`node_id`]).
pub type NodeId = u64;

/// A station as a Raft node: its id and HTTP base URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StationNode {
    /// Station id.
    pub station: String,
    /// HTTP base URL.
    pub address: String,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for the directory.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = StationNode,
);

/// The directory's Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// The Raft node id of a station: the first 8 bytes of the sha256 of its id.
pub fn node_id(station: &str) -> NodeId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(station.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Errors the directory reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No leader is known or it does not answer: a retryable condition.
    #[error("the cluster directory has no reachable leader: {0}")]
    NoLeader(String),
    /// openraft failed in a way retrying will not fix.
    #[error("cluster directory: {0}")]
    Raft(String),
}

/// Settings of the directory.
#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    /// This station's id.
    pub station_id: String,
    /// This station's HTTP base URL.
    pub address: String,
    /// Where the Raft log and snapshots live (`data/cluster`).
    pub dir: std::path::PathBuf,
    /// Voters the group grows to before later stations stay learners.
    pub voters: usize,
    /// Replicas per object the leader keeps assigned (`--replicas`).
    pub replicas: usize,
    /// HTTP addresses of stations to join through (empty: found a new group if not a member).
    pub join: Vec<String>,
    /// Where the failovers this station commits as leader are counted.
    pub move_metrics: crate::metrics::MoveMetrics,
}

/// Who is who in the group, for `host stations`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The leader's station id, if known.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// Voting stations.
    pub voters: Vec<String>,
    /// Learners (receive the log, do not vote).
    pub learners: Vec<String>,
    /// The last log index applied here.
    pub applied_index: u64,
}

/// Body of `POST /cluster/internal/raft/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joining station.
    pub station: String,
    /// Its HTTP base URL.
    pub address: String,
}

/// Body of `POST /cluster/internal/raft/lease`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The renewing station.
    pub station: String,
}

/// Answer of a proposal: the outcome and the log index it was committed at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Proposed {
    /// What applying the command did.
    pub outcome: Outcome,
    /// Its log index.
    pub index: u64,
}

/// The handle to the directory. Cheap to clone.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

struct Inner {
    config: DirectoryConfig,
    raft: Raft,
    machine: storage::StateMachine,
    http: reqwest::Client,
    secret: Option<String>,
    book: Arc<dyn network::AddressBook>,
    held: lease::Held,
    granted: lease::Granted,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// How long a commit or a leadership check at the leader may wait for a quorum.
const QUORUM_WITHIN: Duration = Duration::from_secs(3);
/// How long [`Directory::propose`] keeps retrying (a new leader, a forward) in all.
const PROPOSE_WITHIN: Duration = Duration::from_secs(10);

/// openraft's timing: heartbeats every 100 ms; a voter refuses votes for [`lease::VOTE_QUIET`]
/// (800 ms, openraft's leader lease = `election_timeout_max`) after it last heard from its leader,
/// and stands for election 400–800 ms after that.
fn raft_config() -> anyhow::Result<Arc<Config>> {
    let config = Config {
        cluster_name: "object-primitive".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: lease::VOTE_QUIET.as_millis() as u64,
        install_snapshot_timeout: 10_000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

impl Directory {
    /// Opens the directory's storage under `config.dir` and starts its Raft node, with messages
    /// over HTTP. A station that is no member yet founds a one-voter group (no `join`) or asks the
    /// stations in `join` to be added.
    pub async fn start(
        config: DirectoryConfig,
        http: reqwest::Client,
        secret: Option<String>,
        book: Arc<dyn network::AddressBook>,
    ) -> anyhow::Result<Directory> {
        let net = network::HttpNetwork::new(http.clone(), secret.clone(), book.clone());
        let directory = Directory::start_with(config, net, http, secret, book).await?;
        directory.spawn_loops();
        Ok(directory)
    }

    /// Starts the node with any network (the in-memory one in tests); no background loops.
    pub async fn start_with<N>(
        config: DirectoryConfig,
        net: N,
        http: reqwest::Client,
        secret: Option<String>,
        book: Arc<dyn network::AddressBook>,
    ) -> anyhow::Result<Directory>
    where
        N: openraft::network::RaftNetworkFactory<TypeConfig>,
    {
        let db = storage::open_db(&config.dir)?;
        let log = storage::LogStore::new(db.clone());
        let machine = storage::StateMachine::open(db)?;
        let me = node_id(&config.station_id);
        let raft = Raft::new(me, raft_config()?, net, log, machine.clone()).await?;
        if config.join.is_empty() && !raft.is_initialized().await? {
            let node = StationNode {
                station: config.station_id.clone(),
                address: config.address.clone(),
            };
            raft.initialize(BTreeMap::from([(me, node)])).await?;
            tracing::info!(station = %config.station_id, "founded the cluster directory (one voter)");
        }
        Ok(Directory {
            inner: Arc::new(Inner {
                config,
                raft,
                machine,
                http,
                secret,
                book,
                held: lease::Held::default(),
                granted: lease::Granted::default(),
                tasks: Mutex::new(Vec::new()),
            }),
        })
    }

    fn spawn_loops(&self) {
        let tasks = vec![
            tokio::spawn(self.clone().lease_loop()),
            tokio::spawn(self.clone().leader_watch()),
            tokio::spawn(self.clone().join_loop()),
            tokio::spawn(duties::run(self.clone())),
        ];
        self.inner.tasks.lock().expect("tasks lock").extend(tasks);
    }

    /// The Raft handle (the API passes Raft messages to it).
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// This station's id.
    pub fn station_id(&self) -> &str {
        &self.inner.config.station_id
    }

    /// The directory as applied on this station.
    pub fn applied(&self) -> Arc<Applied> {
        self.inner.machine.current()
    }

    /// Follows every applied change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Applied>> {
        self.inner.machine.subscribe()
    }

    /// The entry of `object` as applied here (may lag the leader by a moment).
    pub fn lookup(&self, object: &str) -> Option<ObjectEntry> {
        self.applied().directory.get(object).cloned()
    }

    /// `f` of the entry of `object` as applied here, without copying the entry (the call path
    /// asks several times per call).
    pub fn with_entry<R>(&self, object: &str, f: impl FnOnce(&ObjectEntry) -> R) -> Option<R> {
        self.applied().directory.get(object).map(f)
    }

    /// The last log index applied here.
    pub fn applied_index(&self) -> u64 {
        self.applied().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// Waits (bounded) until this station has applied the log up to `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.subscribe();
        let wait = rx.wait_for(|a| a.last_applied.map(|l| l.index).unwrap_or(0) >= index);
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }

    /// The HTTP base URL of a station: from gossip, else from the Raft membership.
    pub fn address_of(&self, station: &str) -> Option<String> {
        if station == self.station_id() {
            return Some(self.inner.config.address.clone());
        }
        self.inner.book.address(station).or_else(|| {
            self.applied()
                .membership
                .membership()
                .nodes()
                .find(|(_, n)| n.station == station)
                .map(|(_, n)| n.address.clone())
        })
    }

    /// The leader as this station knows it: (station id, address).
    pub fn leader(&self) -> Option<(String, String)> {
        let id = self.inner.raft.metrics().borrow().current_leader?;
        let applied = self.applied();
        let node = applied.membership.membership().get_node(&id)?.clone();
        let address = self.address_of(&node.station).unwrap_or(node.address);
        Some((node.station, address))
    }

    /// Whether this station leads the group now.
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Voters, learners, leader and term.
    pub fn group(&self) -> GroupInfo {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let station = |id: &NodeId| {
            membership
                .get_node(id)
                .map(|n| n.station.clone())
                .unwrap_or_else(|| id.to_string())
        };
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        GroupInfo {
            leader: metrics.current_leader.map(|id| station(&id)),
            term: metrics.current_term,
            voters: voters.iter().map(station).collect(),
            learners: membership.learner_ids().map(|id| station(&id)).collect(),
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
        }
    }

    /// Commits a command, at the leader wherever it is, and waits until this station has applied
    /// it too (so routing here sees it at once).
    pub async fn propose(&self, command: Command) -> Result<Outcome, Error> {
        let mut last_error = String::new();
        let deadline = Instant::now() + PROPOSE_WITHIN;
        for attempt in 0..40u32 {
            if Instant::now() >= deadline {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let proposed = if self.is_leader() {
                match self.commit_here(command.clone()).await {
                    Ok(p) => p,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                }
            } else {
                let Some((_, address)) = self.leader() else {
                    last_error = "no leader elected yet".into();
                    continue;
                };
                match self
                    .post::<_, Proposed>(&address, "propose", &command)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        last_error = e.to_string();
                        continue;
                    }
                }
            };
            self.wait_applied(proposed.index, Duration::from_secs(5))
                .await;
            return Ok(proposed.outcome);
        }
        Err(Error::NoLeader(last_error))
    }

    /// Commits a command on this station, which must be the leader (`POST .../raft/propose`).
    pub async fn commit_here(&self, command: Command) -> Result<Proposed, Error> {
        // A leader cut off from its voters does not know it: bound the wait for a quorum.
        let written = tokio::time::timeout(QUORUM_WITHIN, self.inner.raft.client_write(command))
            .await
            .map_err(|_| Error::NoLeader("no quorum of voters answered in time".into()))?;
        match written {
            Ok(response) => Ok(Proposed {
                outcome: response.data,
                index: response.log_id.index,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Error::NoLeader(format!(
                    "not the leader (leader: {:?})",
                    f.leader_node.map(|n| n.station)
                )))
            }
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// The entry of `object` as of now, linearizable: read at the leader after it confirmed its
    /// leadership with a quorum. Used before a station answers 404 for an id it does not know.
    pub async fn lookup_linearizable(&self, object: &str) -> Result<Option<ObjectEntry>, Error> {
        if self.is_leader() {
            return self.lookup_here(object).await;
        }
        let Some((_, address)) = self.leader() else {
            return Err(Error::NoLeader("no leader elected yet".into()));
        };
        let path = format!(
            "lookup/{}",
            percent_encoding::utf8_percent_encode(object, percent_encoding::NON_ALPHANUMERIC)
        );
        self.get::<Option<ObjectEntry>>(&address, &path)
            .await
            .map_err(|e| Error::NoLeader(e.to_string()))
    }

    /// A linearizable read on this station, which must be the leader.
    pub async fn lookup_here(&self, object: &str) -> Result<Option<ObjectEntry>, Error> {
        self.confirm_leader().await?;
        Ok(self.lookup(object))
    }

    async fn confirm_leader(&self) -> Result<u64, Error> {
        let confirmed = tokio::time::timeout(QUORUM_WITHIN, self.inner.raft.ensure_linearizable())
            .await
            .map_err(|_| Error::NoLeader("no quorum of voters answered in time".into()))?;
        match confirmed {
            Ok(read) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_))) => {
                Err(Error::NoLeader("not the leader".into()))
            }
            Err(RaftError::APIError(e)) => Err(Error::NoLeader(e.to_string())),
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Grants `station` a lease (`POST .../raft/lease`); this station must lead.
    pub async fn grant_lease(&self, station: &str) -> Result<lease::Grant, Error> {
        let index = self.confirm_leader().await?;
        self.inner.granted.record(station);
        Ok(lease::Grant {
            lease_ms: lease::LEASE.as_millis() as u64,
            applied_index: index,
        })
    }

    /// Whether this station holds a valid write lease now.
    pub fn lease_valid(&self) -> bool {
        self.inner.held.valid(self.applied_index())
    }

    /// Whether, as leader, `station` may still hold a lease (see [`lease::Granted::may_hold`]).
    pub fn may_hold_lease(&self, station: &str) -> bool {
        self.inner.granted.may_hold(station)
    }

    /// Whether `station` renewed its lease with this leader recently.
    pub fn renewed_recently(&self, station: &str) -> bool {
        station == self.station_id() || self.inner.granted.is_fresh(station)
    }

    /// How long ago `station` last renewed its lease with this leader (since this leader's
    /// election when it has not renewed since); `None` when this station is not the leader.
    pub fn silent_since(&self, station: &str) -> Option<Duration> {
        self.inner.granted.silent_since(station)
    }

    /// Where this station records the failovers it commits.
    pub(crate) fn move_metrics(&self) -> &crate::metrics::MoveMetrics {
        &self.inner.config.move_metrics
    }

    /// Whether, as leader, `station` has not renewed its lease for longer than `quiet`.
    pub fn silent_for(&self, station: &str, quiet: Duration) -> bool {
        station != self.station_id() && self.inner.granted.silent_for(station, quiet)
    }

    /// Handles `POST .../raft/join` on any station: the leader adds the station, others pass the
    /// request on to the leader.
    pub async fn join(&self, join: &JoinRequest) -> Result<(), Error> {
        if self.is_leader() {
            return self.add_station(join).await;
        }
        let Some((_, address)) = self.leader() else {
            return Err(Error::NoLeader("no leader elected yet".into()));
        };
        self.post::<_, serde_json::Value>(&address, "join", join)
            .await
            .map(|_| ())
            .map_err(|e| Error::NoLeader(e.to_string()))
    }

    /// Adds a station to the group (`POST .../raft/join`); this station must lead. A new station
    /// becomes a learner, then a voter while the group has fewer than `--voters`; a known one
    /// with a new address is updated.
    pub async fn add_station(&self, join: &JoinRequest) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(Error::NoLeader("not the leader".into()));
        }
        let id = node_id(&join.station);
        let node = StationNode {
            station: join.station.clone(),
            address: join.address.clone(),
        };
        let membership = self.applied().membership.membership().clone();
        let raft_err = |e: RaftError<NodeId, ClientWriteError<NodeId, StationNode>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                Error::NoLeader("not the leader".into())
            }
            other => Error::Raft(other.to_string()),
        };
        match membership.get_node(&id) {
            None => {
                self.inner
                    .raft
                    .add_learner(id, node, true)
                    .await
                    .map_err(raft_err)?;
                tracing::info!(station = %join.station, "added to the directory as a learner");
            }
            Some(known) if *known != node => {
                self.inner
                    .raft
                    .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
                    .await
                    .map_err(raft_err)?;
            }
            Some(_) => {}
        }
        duties::fill_voters(self).await;
        Ok(())
    }

    async fn post<B: Serialize, R: for<'de> Deserialize<'de>>(
        &self,
        address: &str,
        route: &str,
        body: &B,
    ) -> anyhow::Result<R> {
        let request = self
            .inner
            .http
            .post(format!("{address}{}/{route}", network::RAFT_PATH))
            .json(body);
        self.send(request).await
    }

    async fn get<R: for<'de> Deserialize<'de>>(
        &self,
        address: &str,
        route: &str,
    ) -> anyhow::Result<R> {
        let request = self
            .inner
            .http
            .get(format!("{address}{}/{route}", network::RAFT_PATH));
        self.send(request).await
    }

    async fn send<R: for<'de> Deserialize<'de>>(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> anyhow::Result<R> {
        request = request.timeout(Duration::from_secs(5));
        if let Some(secret) = &self.inner.secret {
            request = request.header(crate::cluster::forward::SECRET_HEADER, secret);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("{status}: {}", response.text().await.unwrap_or_default());
        }
        Ok(response.json().await?)
    }

    /// Renews this station's lease every [`lease::RENEW_EVERY`].
    async fn lease_loop(self) {
        let mut tick = tokio::time::interval(lease::RENEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sent = Instant::now();
            let grant = if self.is_leader() {
                self.grant_lease(&self.inner.config.station_id.clone())
                    .await
                    .ok()
            } else if let Some((_, address)) = self.leader() {
                let request = LeaseRequest {
                    station: self.inner.config.station_id.clone(),
                };
                self.post::<_, lease::Grant>(&address, "lease", &request)
                    .await
                    .ok()
            } else {
                None
            };
            if let Some(grant) = grant {
                self.inner.held.granted(sent, grant);
            }
        }
    }

    /// Whether this station may answer a vote request now (see [`lease::Granted::may_vote`]).
    pub fn may_vote(&self) -> bool {
        self.inner.granted.may_vote()
    }

    /// Tracks when this station becomes or stops being the leader.
    async fn leader_watch(self) {
        let mut metrics = self.inner.raft.metrics();
        loop {
            let leading = metrics.borrow_and_update().state == ServerState::Leader;
            self.inner.granted.set_leader(leading);
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    /// Until this station is a member with its current address, asks the stations it knows to
    /// add it (they pass the request to the leader).
    async fn join_loop(self) {
        let me = node_id(self.station_id());
        let request = JoinRequest {
            station: self.inner.config.station_id.clone(),
            address: self.inner.config.address.clone(),
        };
        let mut warned = false;
        loop {
            let applied = self.applied();
            let member = applied
                .membership
                .membership()
                .get_node(&me)
                .is_some_and(|n| n.address == request.address);
            if member {
                return;
            }
            let mut seeds: Vec<String> = self
                .inner
                .config
                .join
                .iter()
                .map(|s| {
                    if s.starts_with("http://") || s.starts_with("https://") {
                        s.trim_end_matches('/').to_string()
                    } else {
                        format!("http://{s}")
                    }
                })
                .collect();
            if let Some((_, leader)) = self.leader() {
                seeds.insert(0, leader);
            }
            for seed in seeds {
                match self
                    .post::<_, serde_json::Value>(&seed, "join", &request)
                    .await
                {
                    Ok(_) => break,
                    Err(e) if !warned => {
                        warned = true;
                        tracing::warn!(seed = %seed, "could not join the directory yet, retrying: {e:#}");
                    }
                    Err(_) => {}
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Stops the loops and the Raft node.
    pub async fn shutdown(&self) {
        for task in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
        let _ = self.inner.raft.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::network::{AddressBook, MemNetwork};
    use super::*;

    struct NoBook;

    impl AddressBook for NoBook {
        fn address(&self, _station: &str) -> Option<String> {
            None
        }
    }

    async fn node(
        net: &MemNetwork,
        station: &str,
        dir: &std::path::Path,
        found: bool,
    ) -> Directory {
        let config = DirectoryConfig {
            station_id: station.into(),
            address: format!("http://{station}"),
            dir: dir.to_path_buf(),
            voters: 3,
            replicas: 2,
            join: if found { vec![] } else { vec!["seed".into()] },
            move_metrics: Default::default(),
        };
        let id = node_id(station);
        // A node restarted in the same process may find its database still held for a moment by
        // the blocking tasks of the node that just shut down.
        let mut attempts = 0;
        let directory = loop {
            match Directory::start_with(
                config.clone(),
                net.from(id),
                reqwest::Client::new(),
                None,
                Arc::new(NoBook),
            )
            .await
            {
                Ok(directory) => break directory,
                Err(e) if attempts < 100 && e.to_string().contains("already open") => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("start {station}: {e:#}"),
            }
        };
        net.add(id, directory.raft().clone());
        directory
    }

    async fn until(what: &str, mut check: impl FnMut() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn claim(object: &str, station: &str) -> Command {
        Command::Claim {
            object: object.into(),
            station: station.into(),
            mode: Mode::Stateful,
            replicas: vec![],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_voters_agree_survive_the_leader_and_a_restart_catches_up() {
        let net = MemNetwork::default();
        let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let a = node(&net, "a", dirs[0].path(), true).await;
        until("a leads", || a.is_leader()).await;
        let b = node(&net, "b", dirs[1].path(), false).await;
        let c = node(&net, "c", dirs[2].path(), false).await;
        for station in ["b", "c"] {
            a.grant_lease(station).await.unwrap();
            let join = JoinRequest {
                station: station.into(),
                address: format!("http://{station}"),
            };
            a.add_station(&join).await.unwrap();
        }
        until("three voters", || a.group().voters.len() == 3).await;
        assert!(a.group().learners.is_empty(), "learners were promoted");

        let first = a.commit_here(claim("x", "a")).await.unwrap();
        assert_eq!(first.outcome.refused, None);
        // A concurrent claim of the same id by another station loses and learns the home.
        let second = a.commit_here(claim("x", "b")).await.unwrap();
        assert_eq!(second.outcome.refused, Some(Refusal::HomedElsewhere));
        assert_eq!(second.outcome.entry.unwrap().home, "a");
        for d in [&b, &c] {
            assert!(d.wait_applied(second.index, Duration::from_secs(5)).await);
            assert_eq!(d.lookup("x").unwrap().home, "a");
        }

        // The leader crashes: the other two elect a leader and keep committing.
        net.remove(node_id("a"));
        a.shutdown().await;
        drop(a);
        until("a new leader", || b.is_leader() || c.is_leader()).await;
        let leader = if b.is_leader() { &b } else { &c };
        let moved = leader
            .commit_here(Command::Move {
                object: "x".into(),
                epoch: 1,
                to: "b".into(),
                replicas: vec!["a".into()],
                in_sync: vec![],
            })
            .await
            .unwrap();
        assert_eq!(moved.outcome.entry.as_ref().unwrap().epoch, 2);
        leader.commit_here(claim("y", "c")).await.unwrap();

        // The old leader restarts from its files and catches up with what it missed.
        let a = node(&net, "a", dirs[0].path(), true).await;
        let last = leader.applied_index();
        assert!(a.wait_applied(last, Duration::from_secs(10)).await);
        assert_eq!(a.applied().directory, leader.applied().directory);
        let x = a.lookup("x").unwrap();
        assert_eq!((x.home.as_str(), x.epoch), ("b", 2));
        for d in [&a, &b, &c] {
            d.shutdown().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_single_station_is_a_one_voter_group_that_keeps_its_directory_across_restarts() {
        let net = MemNetwork::default();
        let dir = tempfile::tempdir().unwrap();
        let a = node(&net, "a", dir.path(), true).await;
        until("a leads", || a.is_leader()).await;
        assert_eq!(a.group().voters, vec!["a".to_string()]);
        a.commit_here(claim("x", "a")).await.unwrap();
        let grant = a.grant_lease("a").await.unwrap();
        assert!(grant.applied_index >= 1);
        a.shutdown().await;
        net.remove(node_id("a"));
        drop(a);
        let a = node(&net, "a", dir.path(), true).await;
        until("a leads again", || a.is_leader()).await;
        until("the claim is re-applied", || a.lookup("x").is_some()).await;
        assert_eq!(a.lookup("x").unwrap().home, "a");
        a.shutdown().await;
    }
}
