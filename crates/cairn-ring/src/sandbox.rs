//! An in-process ring for tests: Raft nodes with the ring's own storage
//! (redb log, snapshot files) and state machine, connected by a router
//! that can cut a node off or delay its messages. Process-level tests
//! (kill -9, restarts) stay in `tests/tests/e2e/cluster.rs`; this one sees
//! inside: who leads, what each node applied, how long commits take.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{BasicNode, Raft};
use parking_lot::Mutex;

use crate::TypeConfig;
use crate::state::{Command, RingState};
use crate::store::{LogStore, StateMachine};

type NodeId = u64;

#[derive(Default)]
struct Faults {
    /// Nodes whose messages, to or from them, are lost.
    cut: HashSet<NodeId>,
    /// Extra latency of messages to or from a node.
    delay: BTreeMap<NodeId, Duration>,
}

/// Delivers Raft messages between in-process nodes, with faults.
#[derive(Clone, Default)]
pub struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft<TypeConfig>>>>,
    faults: Arc<Mutex<Faults>>,
}

impl Router {
    /// Cuts `id` off: its messages, both ways, are lost until healed.
    pub fn cut(&self, id: NodeId) {
        self.faults.lock().cut.insert(id);
    }

    pub fn heal(&self, id: NodeId) {
        self.faults.lock().cut.remove(&id);
    }

    /// Delays every message to or from `id`.
    pub fn delay(&self, id: NodeId, by: Duration) {
        self.faults.lock().delay.insert(id, by);
    }

    /// The target's Raft handle, after the faults between the two nodes.
    async fn deliver(&self, from: NodeId, to: NodeId) -> Result<Raft<TypeConfig>, Unreachable> {
        let (cut, delay) = {
            let f = self.faults.lock();
            let cut = f.cut.contains(&from) || f.cut.contains(&to);
            let delay = f.delay.get(&from).copied().unwrap_or_default() + f.delay.get(&to).copied().unwrap_or_default();
            (cut, delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if cut {
            return Err(Unreachable::new(&std::io::Error::other(format!("{from} -> {to} is cut"))));
        }
        self.nodes
            .lock()
            .get(&to)
            .cloned()
            .ok_or_else(|| Unreachable::new(&std::io::Error::other(format!("no node {to}"))))
    }
}

/// One node's link to the others through the router.
pub struct Link {
    router: Router,
    from: NodeId,
    to: NodeId,
}

/// A router bound to its sending node.
#[derive(Clone)]
pub struct NodeRouter {
    router: Router,
    me: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for NodeRouter {
    type Network = Link;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Link {
        Link { router: self.router.clone(), from: self.me, to: target }
    }
}

fn network<E: std::error::Error>(e: impl std::error::Error + 'static) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.deliver(self.from, self.to).await.map_err(RPCError::Unreachable)?;
        raft.append_entries(rpc).await.map_err(|e| network(std::io::Error::other(e.to_string())))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>>
    {
        let raft = self.router.deliver(self.from, self.to).await.map_err(RPCError::Unreachable)?;
        raft.install_snapshot(rpc).await.map_err(|e| network(std::io::Error::other(e.to_string())))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.router.deliver(self.from, self.to).await.map_err(RPCError::Unreachable)?;
        raft.vote(rpc).await.map_err(|e| network(std::io::Error::other(e.to_string())))
    }
}

/// In-process voters with the ring's storage, over one [`Router`].
pub struct Sandbox {
    pub router: Router,
    pub nodes: BTreeMap<NodeId, (Raft<TypeConfig>, StateMachine)>,
    _dir: tempfile::TempDir,
}

impl Sandbox {
    /// Starts `n` voters (ids 1..=n) and initialises the group.
    pub async fn start(n: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let router = Router::default();
        let config = Arc::new(
            openraft::Config {
                cluster_name: "sandbox".into(),
                heartbeat_interval: 50,
                election_timeout_min: 200,
                election_timeout_max: 400,
                snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
                max_in_snapshot_log_to_keep: 100,
                ..Default::default()
            }
            .validate()
            .expect("config"),
        );
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let node_dir = dir.path().join(id.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let log = LogStore::open(&node_dir.join("raft.redb")).expect("log");
            let sm = StateMachine::open(Some(node_dir.join("snapshot.json")), None).expect("state machine");
            let net = NodeRouter { router: router.clone(), me: id };
            let raft = Raft::new(id, config.clone(), net, log, sm.clone()).await.expect("raft");
            router.nodes.lock().insert(id, raft.clone());
            nodes.insert(id, (raft, sm));
        }
        let members: BTreeMap<NodeId, BasicNode> = (1..=n).map(|id| (id, BasicNode::new(id.to_string()))).collect();
        nodes[&1].0.initialize(members).await.expect("initialize");
        Self { router, nodes, _dir: dir }
    }

    /// The leader every node that is not cut off agrees on, once there is one.
    pub async fn leader(&self) -> NodeId {
        for _ in 0..200 {
            let cut = self.router.faults.lock().cut.clone();
            let mut seen = HashSet::new();
            for (id, (raft, _)) in &self.nodes {
                if !cut.contains(id) {
                    seen.insert(raft.metrics().borrow().current_leader);
                }
            }
            if seen.len() == 1
                && let Some(Some(l)) = seen.into_iter().next()
                && !cut.contains(&l)
            {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no leader agreed on within 5 s");
    }

    /// Commits `cmd` through the current leader; returns how long it took.
    pub async fn write(&self, cmd: Command) -> Duration {
        loop {
            let leader = self.leader().await;
            let started = std::time::Instant::now();
            match self.nodes[&leader].0.client_write(cmd.clone()).await {
                Ok(_) => return started.elapsed(),
                // Leadership moved meanwhile: ask again.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The ring node `id` has applied.
    pub fn ring(&self, id: NodeId) -> RingState {
        self.nodes[&id].1.ring().0
    }

    /// Waits until node `id` has applied the same ring as the leader.
    pub async fn caught_up(&self, id: NodeId) {
        for _ in 0..400 {
            let leader = self.leader().await;
            if self.ring(id) == self.ring(leader) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("node {id} did not catch up within 10 s");
    }

    pub async fn shutdown(self) {
        for (raft, _) in self.nodes.values() {
            let _ = raft.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests;
