//! The cluster (DESIGN §6): stations that find each other, know where every object lives, and
//! forward calls to it in one hop.
//!
//! - [`directory`]: the ownership directory, an embedded Raft group: which station homes each
//!   object at which epoch, with which replicas; write leases;
//! - [`membership`]: chitchat gossip and failure detection → a [`View`] of the stations, their
//!   addresses and load (hints: gossip decides nothing that must be agreed);
//! - [`placement`]: pure functions over a view: replicas to assign, least-loaded station;
//! - [`load`]: what a station reports about how busy it is;
//! - [`forward`]: station-to-station HTTP (reqwest, keep-alive) with the hop and chain headers.
//!
//! The cluster knows nothing of axum or wasmtime; `lib.rs` connects it to the station.

pub mod directory;
pub mod forward;
pub mod link;
pub mod load;
pub mod membership;
pub mod placement;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use directory::{Directory, ObjectEntry};
pub use forward::{ForwardError, ForwardRequest, Forwarded, HOP_HEADER};
pub use load::Load;
pub use membership::{CodeClaim, Member, MemberState, View};

use membership::{Membership, MembershipConfig};

/// Cluster settings, from the command line.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This station's id.
    pub station_id: String,
    /// This station's HTTP base URL as peers should use it.
    pub http_url: String,
    /// UDP address for gossip.
    pub gossip_addr: SocketAddr,
    /// HTTP addresses (`host:port`) of stations to join.
    pub join: Vec<String>,
    /// Replicas per object, besides its home.
    pub replicas: usize,
    /// Interval between gossip rounds.
    pub gossip_interval: Duration,
    /// Phi-accrual threshold for declaring a station dead.
    pub phi_threshold: f64,
    /// Stations that must be alive before this one serves calls.
    pub min_stations: usize,
    /// Shared secret for station-to-station routes (also names the gossip cluster).
    pub secret: Option<String>,
    /// Where the directory keeps its Raft log and snapshots (`data/cluster`).
    pub directory_dir: std::path::PathBuf,
    /// Voters the directory's Raft group grows to (`--voters`).
    pub voters: usize,
    /// Trust for stations reached over `https://` (the platform's roots and `--tls-ca`).
    pub tls: rustls::ClientConfig,
    /// Where the directory records the failovers it commits (the station's, for `GET /metrics`).
    pub move_metrics: crate::metrics::MoveMetrics,
}

/// Where a stateful object is homed, from the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Station id.
    pub station: String,
    /// Its HTTP base URL.
    pub address: String,
    /// The directory entry.
    pub entry: ObjectEntry,
}

/// Answer of `GET /cluster/info`: what a joining station needs to gossip with this one.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    /// Station id.
    pub station_id: String,
    /// HTTP base URL.
    pub http: String,
    /// UDP gossip address.
    pub gossip: SocketAddr,
}

/// The handle to this station's view of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    membership: Arc<Membership>,
    directory: Directory,
    http: reqwest::Client,
    /// Multiplexed links for forwarded calls.
    links: link::Links,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Set once this station has heard from the cluster it joins (at once without `--join`).
    /// Until then it serves nothing: it might be a returning home whose objects moved.
    converged: Arc<AtomicBool>,
}

/// How long a station with `--join` waits to hear from a peer before serving on its own.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(10);

impl Cluster {
    /// Starts gossip, seed discovery and the load and view refresh loops.
    pub async fn start(
        config: ClusterConfig,
        in_flight: Arc<AtomicU64>,
    ) -> anyhow::Result<Cluster> {
        let cluster_id = match &config.secret {
            // Stations with different secrets form different clusters instead of half-trusting each other.
            Some(secret) => {
                use sha2::Digest;
                format!(
                    "op-{}",
                    &hex::encode(sha2::Sha256::digest(secret.as_bytes()))[..16]
                )
            }
            None => "object-primitive".to_string(),
        };
        let membership = Membership::start(MembershipConfig {
            station_id: config.station_id.clone(),
            http_url: config.http_url.clone(),
            gossip_addr: config.gossip_addr,
            cluster_id,
            gossip_interval: config.gossip_interval,
            phi_threshold: config.phi_threshold,
        })
        .await?;
        // Outgoing connections leave from the address gossip is bound to (the station's own).
        let local = Some(config.gossip_addr.ip()).filter(|ip| !ip.is_unspecified());
        let http = forward::client(local, &config.tls)?;
        let directory = Directory::start(
            directory::DirectoryConfig {
                station_id: config.station_id.clone(),
                address: config.http_url.clone(),
                dir: config.directory_dir.clone(),
                voters: config.voters,
                replicas: config.replicas,
                join: config.join.clone(),
                move_metrics: config.move_metrics.clone(),
            },
            http.clone(),
            config.secret.clone(),
            Arc::new(GossipAddresses(membership.clone())),
        )
        .await?;
        let links = link::Links::new(
            local,
            config.secret.clone(),
            Some(Arc::new(config.tls.clone())),
        );
        let config_join_empty = config.join.is_empty();
        let cluster = Cluster {
            inner: Arc::new(Inner {
                config,
                membership,
                directory,
                http,
                links,
                tasks: Mutex::new(Vec::new()),
                converged: Arc::new(AtomicBool::new(config_join_empty)),
            }),
        };
        let mut tasks = vec![
            cluster.spawn_refresh_loop(in_flight),
            cluster.spawn_converge_watch(),
        ];
        for seed in cluster.inner.config.join.clone() {
            tasks.push(cluster.spawn_seed_loop(seed));
        }
        cluster
            .inner
            .tasks
            .lock()
            .expect("tasks lock")
            .extend(tasks);
        Ok(cluster)
    }

    /// This station's id.
    pub fn station_id(&self) -> &str {
        &self.inner.config.station_id
    }

    /// What peers need to join this station.
    pub fn info(&self) -> ClusterInfo {
        ClusterInfo {
            station_id: self.inner.config.station_id.clone(),
            http: self.inner.config.http_url.clone(),
            gossip: self.inner.config.gossip_addr,
        }
    }

    /// The shared secret station-to-station requests must carry, if any.
    pub fn secret(&self) -> Option<&str> {
        self.inner.config.secret.as_deref()
    }

    /// The latest view of the stations.
    pub fn view(&self) -> Arc<View> {
        self.inner.membership.view()
    }

    /// The ownership directory.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// Where the stateful object `object` is homed, as the directory applied here knows it.
    pub fn home_of(&self, object: &str) -> Option<Home> {
        let entry = self.inner.directory.lookup(object)?;
        self.home_from(entry)
    }

    /// The home of a directory entry (`None` for a stateless object).
    pub fn home_from(&self, entry: ObjectEntry) -> Option<Home> {
        if entry.mode != directory::Mode::Stateful {
            return None;
        }
        let address = self.address_of(&entry.home).unwrap_or_default();
        Some(Home {
            station: entry.home.clone(),
            address,
            entry,
        })
    }

    /// The HTTP base URL of a station (gossip first, then the directory's membership).
    pub fn address_of(&self, station: &str) -> Option<String> {
        self.inner.directory.address_of(station)
    }

    /// Every stateful object of the directory with its home.
    pub fn objects(&self) -> std::collections::BTreeMap<String, Home> {
        let applied = self.inner.directory.applied();
        applied
            .directory
            .objects
            .iter()
            .filter_map(|(id, entry)| Some((id.clone(), self.home_from(entry.clone())?)))
            .collect()
    }

    /// Replicas to assign to a new object homed at `home`: `--replicas` live stations, stable
    /// (rendezvous hashing).
    pub fn choose_replicas(&self, object: &str, home: &str) -> Vec<String> {
        placement::replicas_of(&self.view(), object, home, self.inner.config.replicas)
    }

    /// The least-loaded ready station.
    pub fn least_loaded(&self) -> Option<Member> {
        placement::least_loaded(&self.view()).cloned()
    }

    /// The newest claim on a stateless object's code among live stations, with a station (id,
    /// address) making it.
    pub fn newest_code(&self, object: &str) -> Option<((String, String), CodeClaim)> {
        let view = self.view();
        placement::newest_code(&view, object)
            .map(|(m, c)| ((m.id.clone(), m.address.clone()), c.clone()))
    }

    /// Where a call to a stateless object runs: the station id and address of the least-loaded
    /// holder of its newest code (this station when it is close enough); `None` if none holds it.
    pub fn stateless_target(&self, object: &str) -> Option<(String, String)> {
        let view = self.view();
        placement::stateless_target(&view, object, self.station_id())
            .map(|m| (m.id.clone(), m.address.clone()))
    }

    /// Every stateless object of the cluster: its newest code and the stations holding it.
    pub fn stateless_objects(
        &self,
    ) -> std::collections::BTreeMap<String, (CodeClaim, Vec<String>)> {
        placement::stateless_objects(&self.view())
    }

    /// Announces the stateless code this station holds for `object` (or its undeploy).
    pub async fn claim_code(&self, object: &str, claim: &CodeClaim) {
        self.inner.membership.claim_code(object, claim).await;
        // This station's own listing shows the new claim at once, not at the next refresh.
        self.inner.membership.refresh().await;
    }

    /// Live stations (self included).
    pub fn live_count(&self) -> usize {
        self.view().live().count()
    }

    /// The gossip interval.
    pub fn gossip_interval(&self) -> Duration {
        self.inner.config.gossip_interval
    }

    /// Whether this station has heard from the cluster it joins.
    pub fn converged(&self) -> bool {
        self.inner.converged.load(Ordering::Acquire)
    }

    /// Waits until [`Cluster::converged`].
    pub async fn wait_converged(&self) {
        while !self.converged() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn spawn_converge_watch(&self) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            while !cluster.converged() {
                let others = cluster
                    .view()
                    .live()
                    .filter(|m| m.id != cluster.station_id())
                    .count();
                if others > 0 || started.elapsed() >= CONVERGE_TIMEOUT {
                    if others == 0 {
                        tracing::warn!(
                            "no seed station answered within {CONVERGE_TIMEOUT:?}: serving on our own"
                        );
                    }
                    // One more gossip round so the peers' claims are in the view.
                    tokio::time::sleep(cluster.gossip_interval() * 2).await;
                    cluster.inner.membership.refresh().await;
                    cluster.inner.converged.store(true, Ordering::Release);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Whether enough stations are alive for this one to serve (`--min-stations`).
    pub fn quorum(&self) -> Result<(), String> {
        if !self.converged() {
            return Err("joining the cluster: waiting to hear from a peer station".into());
        }
        let live = self.live_count();
        let need = self.inner.config.min_stations;
        if live >= need {
            Ok(())
        } else {
            Err(format!(
                "{live} of the {need} stations required by --min-stations are alive"
            ))
        }
    }

    /// Sends a request to another station (one hop), over this station's link to it.
    pub async fn forward(&self, request: ForwardRequest) -> Result<Forwarded, ForwardError> {
        forward::send(&self.inner.links, self.station_id(), self.secret(), request).await
    }

    /// The shared HTTP client (keep-alive pool) for station-to-station requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    fn spawn_refresh_loop(&self, in_flight: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
        let membership = self.inner.membership.clone();
        let min_stations = self.inner.config.min_stations;
        tokio::spawn(async move {
            let mut sampler = load::LoadSampler::new(in_flight);
            let mut tick = tokio::time::interval(membership.gossip_interval() / 2);
            let mut last_load = std::time::Instant::now() - Duration::from_secs(10);
            loop {
                tick.tick().await;
                membership.refresh().await;
                if last_load.elapsed() >= Duration::from_secs(1) {
                    last_load = std::time::Instant::now();
                    let load = sampler.sample();
                    membership.publish_load(&load).await;
                    let live = membership.view().live().count();
                    membership.publish_ready(live >= min_stations).await;
                }
            }
        })
    }

    /// Learns a seed's gossip address from its `GET /cluster/info` and keeps gossiping with it, so
    /// a seed that starts later, or comes back after a partition, is found.
    fn spawn_seed_loop(&self, seed: String) -> tokio::task::JoinHandle<()> {
        let membership = self.inner.membership.clone();
        let http = self.inner.http.clone();
        let url = if seed.starts_with("http://") || seed.starts_with("https://") {
            format!("{}/cluster/info", seed.trim_end_matches('/'))
        } else {
            format!("http://{seed}/cluster/info")
        };
        tokio::spawn(async move {
            let mut gossip: Option<SocketAddr> = None;
            let mut warned = false;
            loop {
                if gossip.is_none() {
                    match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                        Ok(response) => match response.json::<ClusterInfo>().await {
                            Ok(info) => {
                                tracing::info!(seed = %url, station = %info.station_id, gossip = %info.gossip, "found seed station");
                                gossip = Some(info.gossip);
                            }
                            Err(e) => {
                                tracing::warn!(seed = %url, "seed answered something else than cluster info: {e}")
                            }
                        },
                        Err(e) if !warned => {
                            warned = true;
                            tracing::warn!(seed = %url, "seed not reachable yet, will keep trying: {e}");
                        }
                        Err(_) => {}
                    }
                }
                if let Some(addr) = gossip {
                    membership.gossip_with(addr);
                }
                tokio::time::sleep(membership.gossip_interval() * 4).await;
            }
        })
    }

    /// Stops the loops and gossip.
    pub async fn shutdown(&self) {
        for task in self.inner.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
        self.inner.directory.shutdown().await;
        self.inner.membership.shutdown().await;
    }
}

/// Station addresses from the gossip view (they change when a station restarts on a new port).
struct GossipAddresses(Arc<Membership>);

impl directory::network::AddressBook for GossipAddresses {
    fn address(&self, station: &str) -> Option<String> {
        self.0.view().member(station).map(|m| m.address.clone())
    }
}
