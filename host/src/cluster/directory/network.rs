//! How the directory's Raft messages travel: over the stations' own HTTP API under
//! `/cluster/internal/raft/{append,vote,snapshot}` with the cluster secret ([`HttpNetwork`]), or
//! between in-process Raft nodes in unit tests ([`MemNetwork`]).
//!
//! A station's address can change across restarts (a new port); the network asks an
//! [`AddressBook`] (the gossip view) first and falls back to the address in the Raft membership.

// openraft's error types (fixed by its traits) are large; its own examples allow this too.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{NodeId, Raft, StationNode, TypeConfig};

/// Path prefix of the Raft routes.
pub const RAFT_PATH: &str = "/cluster/internal/raft";

/// Where a station can be reached now, by station id (from gossip); `None` when not known.
pub trait AddressBook: Send + Sync + 'static {
    /// The HTTP base URL of `station`.
    fn address(&self, station: &str) -> Option<String>;
}

/// Raft over the stations' HTTP API.
#[derive(Clone)]
pub struct HttpNetwork {
    http: reqwest::Client,
    secret: Option<String>,
    book: Arc<dyn AddressBook>,
}

impl HttpNetwork {
    /// A network sending with `http`, authenticated by `secret`.
    pub fn new(
        http: reqwest::Client,
        secret: Option<String>,
        book: Arc<dyn AddressBook>,
    ) -> HttpNetwork {
        HttpNetwork { http, secret, book }
    }
}

/// One peer over HTTP.
pub struct HttpPeer {
    net: HttpNetwork,
    target: NodeId,
    node: StationNode,
}

impl RaftNetworkFactory<TypeConfig> for HttpNetwork {
    type Network = HttpPeer;

    async fn new_client(&mut self, target: NodeId, node: &StationNode) -> HttpPeer {
        HttpPeer {
            net: self.clone(),
            target,
            node: node.clone(),
        }
    }
}

impl HttpPeer {
    async fn send<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        route: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RPCError<NodeId, StationNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let address = self
            .net
            .book
            .address(&self.node.station)
            .unwrap_or_else(|| self.node.address.clone());
        let mut builder = self
            .net
            .http
            .post(format!("{address}{RAFT_PATH}/{route}"))
            .timeout(timeout)
            .json(request);
        if let Some(secret) = &self.net.secret {
            builder = builder.header(crate::cluster::forward::SECRET_HEADER, secret);
        }
        let response = builder.send().await.map_err(|e| {
            if e.is_connect() {
                RPCError::Unreachable(Unreachable::new(&e))
            } else {
                RPCError::Network(NetworkError::new(&e))
            }
        })?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let error = std::io::Error::other(format!("{status}: {text}"));
            return Err(RPCError::Network(NetworkError::new(&error)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> = response
            .json()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for HttpPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, StationNode, RaftError<NodeId>>>
    {
        self.send("append", &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, StationNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.send(
            "snapshot",
            &rpc,
            option.hard_ttl().max(Duration::from_secs(10)),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, StationNode, RaftError<NodeId>>> {
        self.send("vote", &rpc, option.hard_ttl()).await
    }
}

/// In-process Raft nodes for unit tests: a router from node id to its `Raft`, with links that
/// can be cut to model a partition.
#[derive(Clone, Default)]
pub struct MemNetwork {
    nodes: Arc<Mutex<HashMap<NodeId, Raft>>>,
    cut: Arc<Mutex<std::collections::HashSet<(NodeId, NodeId)>>>,
}

impl MemNetwork {
    /// Registers a node.
    pub fn add(&self, id: NodeId, raft: Raft) {
        self.nodes.lock().expect("nodes lock").insert(id, raft);
    }

    /// Removes a node (it crashed).
    pub fn remove(&self, id: NodeId) {
        self.nodes.lock().expect("nodes lock").remove(&id);
    }

    /// Cuts (or heals) both directions between `a` and `b`.
    pub fn set_cut(&self, a: NodeId, b: NodeId, cut: bool) {
        let mut links = self.cut.lock().expect("cut lock");
        for pair in [(a, b), (b, a)] {
            if cut {
                links.insert(pair);
            } else {
                links.remove(&pair);
            }
        }
    }

    /// The factory one node sends with.
    pub fn from(&self, source: NodeId) -> MemFactory {
        MemFactory {
            net: self.clone(),
            source,
        }
    }

    fn target(&self, source: NodeId, target: NodeId) -> Result<Raft, Unreachable> {
        if self
            .cut
            .lock()
            .expect("cut lock")
            .contains(&(source, target))
        {
            return Err(Unreachable::new(&std::io::Error::other("link cut")));
        }
        self.nodes
            .lock()
            .expect("nodes lock")
            .get(&target)
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other("node down")))
    }
}

/// The in-memory network as seen from one node.
pub struct MemFactory {
    net: MemNetwork,
    source: NodeId,
}

/// One in-memory link.
pub struct MemPeer {
    net: MemNetwork,
    source: NodeId,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for MemFactory {
    type Network = MemPeer;

    async fn new_client(&mut self, target: NodeId, _node: &StationNode) -> MemPeer {
        MemPeer {
            net: self.net.clone(),
            source: self.source,
            target,
        }
    }
}

impl MemPeer {
    fn raft<E: std::error::Error>(
        &self,
    ) -> Result<Raft, RPCError<NodeId, StationNode, RaftError<NodeId, E>>> {
        self.net
            .target(self.source, self.target)
            .map_err(RPCError::Unreachable)
    }
}

impl RaftNetwork<TypeConfig> for MemPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, StationNode, RaftError<NodeId>>>
    {
        let raft = self.raft()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, StationNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.raft()?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, StationNode, RaftError<NodeId>>> {
        let raft = self.raft()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}
