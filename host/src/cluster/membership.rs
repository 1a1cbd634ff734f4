//! Membership and failure detection, from the `chitchat` gossip library (scuttlebutt anti-entropy
//! with a phi-accrual failure detector).
//!
//! chitchat was chosen over foca because it carries versioned per-station key/values with catch-up
//! for late joiners: each station gossips its HTTP address, its load and the stateless code it
//! holds, and a station that joins late learns all of it without a separate protocol. Ownership
//! of stateful objects is not gossiped: it is the directory's (Raft). This module owns the chitchat handle, the refresh loop that turns
//! its state into a [`View`], and seed discovery; it knows nothing of HTTP routes or wasmtime.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use serde::Serialize;

use super::load::Load;

/// Key prefix of the stateless objects' code a station holds (`code:<id>` → `version:sha256`, or
/// `version:` once that version was undeployed).
pub const CODE_KEY_PREFIX: &str = "code:";
const HTTP_KEY: &str = "http";
const LOAD_KEY: &str = "load";
const READY_KEY: &str = "ready";

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This station's id (stable across restarts).
    pub station_id: String,
    /// Advertised HTTP base URL, e.g. `http://127.0.0.1:8001`.
    pub http_url: String,
    /// UDP address to gossip on.
    pub gossip_addr: SocketAddr,
    /// Cluster name: stations only talk to stations with the same one.
    pub cluster_id: String,
    /// Interval between gossip rounds.
    pub gossip_interval: Duration,
    /// Phi-accrual threshold above which a station is declared dead.
    pub phi_threshold: f64,
}

/// How a station looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Heartbeats arrive.
    Alive,
    /// Still considered alive, but no heartbeat for a while.
    Suspect,
    /// Declared dead by the failure detector.
    Dead,
}

/// The code of a stateless object a station holds, as gossiped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CodeClaim {
    /// Version number.
    pub version: u32,
    /// sha256 of the code; `None` when this version was undeployed (a tombstone).
    pub sha256: Option<String>,
}

impl CodeClaim {
    /// The order in which claims supersede each other, the same on every station: the higher
    /// version, then an undeploy over a deploy of the same version, then the larger sha256 (two
    /// stations deploying the same number at once).
    pub fn precedence(&self) -> (u32, bool, &str) {
        (
            self.version,
            self.sha256.is_none(),
            self.sha256.as_deref().unwrap_or(""),
        )
    }
}

/// A station of the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// Station id.
    pub id: String,
    /// HTTP base URL.
    pub address: String,
    /// Alive, suspect or dead.
    pub state: MemberState,
    /// Last load it reported.
    pub load: Load,
    /// Whether it reports itself ready to serve (quorum reached).
    pub ready: bool,
    /// Stateless objects' code it holds (or undeployed).
    #[serde(skip)]
    pub code: BTreeMap<String, CodeClaim>,
    /// Generation (start time) of the station process.
    pub generation: u64,
}

impl Member {
    /// Whether calls may be sent to it.
    pub fn is_live(&self) -> bool {
        self.state != MemberState::Dead
    }
}

/// A consistent picture of the cluster at one moment.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// Every station known, self included, sorted by id.
    pub members: Vec<Member>,
}

impl View {
    /// The member with this id.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Live members.
    pub fn live(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.is_live())
    }
}

/// The running gossip: a chitchat handle plus the latest [`View`].
pub struct Membership {
    handle: ChitchatHandle,
    config: MembershipConfig,
    view: Arc<RwLock<Arc<View>>>,
    heartbeats: std::sync::Mutex<HashMap<String, (u64, Instant)>>,
}

impl Membership {
    /// Starts gossiping on `config.gossip_addr`.
    pub async fn start(config: MembershipConfig) -> anyhow::Result<Arc<Membership>> {
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let chitchat_id =
            ChitchatId::new(config.station_id.clone(), generation, config.gossip_addr);
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.gossip_addr,
            seed_nodes: Vec::new(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: config.phi_threshold,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                initial_interval: config.gossip_interval,
                dead_node_grace_period: Duration::from_secs(3600),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let initial = vec![
            (HTTP_KEY.to_string(), config.http_url.clone()),
            (READY_KEY.to_string(), "false".to_string()),
        ];
        let handle = chitchat::spawn_chitchat(chitchat_config, initial, &UdpTransport).await?;
        let membership = Arc::new(Membership {
            handle,
            config,
            view: Arc::new(RwLock::new(Arc::new(View::default()))),
            heartbeats: std::sync::Mutex::new(HashMap::new()),
        });
        membership.refresh().await;
        Ok(membership)
    }

    /// This station's id.
    pub fn station_id(&self) -> &str {
        &self.config.station_id
    }

    /// The gossip interval.
    pub fn gossip_interval(&self) -> Duration {
        self.config.gossip_interval
    }

    /// The latest view (cheap: an `Arc`).
    pub fn view(&self) -> Arc<View> {
        self.view.read().expect("view lock").clone()
    }

    /// Gossips with an address now (seed discovery).
    pub fn gossip_with(&self, addr: SocketAddr) {
        let _ = self.handle.gossip(addr);
    }

    /// Sets one of this station's keys.
    pub async fn set(&self, key: String, value: String) {
        let chitchat = self.handle.chitchat();
        let mut chitchat = chitchat.lock().await;
        chitchat.self_node_state().set(key, value);
    }

    /// Deletes one of this station's keys.
    pub async fn delete(&self, key: &str) {
        let chitchat = self.handle.chitchat();
        let mut chitchat = chitchat.lock().await;
        chitchat.self_node_state().delete(key);
    }

    /// Announces the stateless code of `object` this station holds (or undeployed).
    pub async fn claim_code(&self, object: &str, claim: &CodeClaim) {
        let value = format!(
            "{}:{}",
            claim.version,
            claim.sha256.as_deref().unwrap_or("")
        );
        self.set(format!("{CODE_KEY_PREFIX}{object}"), value).await;
    }

    /// Publishes this station's load.
    pub async fn publish_load(&self, load: &Load) {
        self.set(LOAD_KEY.to_string(), load.encode()).await;
    }

    /// Publishes whether this station is ready.
    pub async fn publish_ready(&self, ready: bool) {
        self.set(READY_KEY.to_string(), ready.to_string()).await;
    }

    /// Rebuilds the view from chitchat's state.
    pub async fn refresh(&self) {
        let view = {
            let chitchat = self.handle.chitchat();
            let chitchat = chitchat.lock().await;
            let live: std::collections::HashSet<&ChitchatId> = chitchat.live_nodes().collect();
            // Keep only the newest generation of each station id.
            let mut newest: BTreeMap<String, (&ChitchatId, &chitchat::NodeState)> = BTreeMap::new();
            for (id, state) in chitchat.node_states() {
                let entry = newest.entry(id.node_id.to_string()).or_insert((id, state));
                if id.generation_id > entry.0.generation_id {
                    *entry = (id, state);
                }
            }
            let now = Instant::now();
            let stale_after = self.config.gossip_interval * 4;
            let mut heartbeats = self.heartbeats.lock().expect("heartbeat lock");
            let members = newest
                .into_iter()
                .filter_map(|(station, (id, state))| {
                    let address = state.get(HTTP_KEY)?.to_string();
                    let heartbeat = u64::from(state.heartbeat());
                    let seen = heartbeats
                        .entry(station.clone())
                        .or_insert((heartbeat, now));
                    if seen.0 != heartbeat {
                        *seen = (heartbeat, now);
                    }
                    let is_self = station == self.config.station_id;
                    let state_now = if !live.contains(id) {
                        MemberState::Dead
                    } else if !is_self && now.duration_since(seen.1) > stale_after {
                        MemberState::Suspect
                    } else {
                        MemberState::Alive
                    };
                    let code = state
                        .iter_prefix(CODE_KEY_PREFIX)
                        .filter_map(|(key, value)| {
                            let object = key.strip_prefix(CODE_KEY_PREFIX)?;
                            parse_code(&value.value).map(|c| (object.to_string(), c))
                        })
                        .collect();
                    Some(Member {
                        id: station,
                        address,
                        state: state_now,
                        load: state
                            .get(LOAD_KEY)
                            .and_then(Load::decode)
                            .unwrap_or_default(),
                        ready: state.get(READY_KEY) == Some("true"),
                        code,
                        generation: id.generation_id,
                    })
                })
                .collect();
            View { members }
        };
        *self.view.write().expect("view lock") = Arc::new(view);
    }

    /// Leaves the cluster: stops gossiping.
    pub async fn shutdown(&self) {
        let _ = self.handle.initiate_shutdown();
    }
}

fn parse_code(value: &str) -> Option<CodeClaim> {
    let (version, sha256) = value.split_once(':')?;
    Some(CodeClaim {
        version: version.parse().ok()?,
        sha256: Some(sha256).filter(|s| !s.is_empty()).map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_claims_parse_and_an_undeploy_supersedes_its_version() {
        let deployed = parse_code("3:abc").unwrap();
        assert_eq!(deployed.sha256.as_deref(), Some("abc"));
        let undeployed = parse_code("3:").unwrap();
        assert_eq!(undeployed.sha256, None);
        assert!(undeployed.precedence() > deployed.precedence());
        assert!(parse_code("4:aaa").unwrap().precedence() > undeployed.precedence());
        assert_eq!(parse_code("x:abc"), None);
        assert_eq!(parse_code("3"), None);
    }
}
