//! A ring member: the Raft node an ingester runs, its lifecycle in the ring
//! (join, ACTIVE, LEAVING, LEFT), its heartbeats, and the leader's duties
//! (recording heartbeats, choosing voters, dropping departed nodes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_common::Shutdown;
use cairn_proto::ring::ring_client::RingClient;
use cairn_proto::ring::ring_server::{Ring as RingRpc, RingServer};
use cairn_proto::ring::{
    GetRingRequest, GetRingResponse, HeartbeatRequest, HeartbeatResponse, RaftMessage, WriteRequest, WriteResponse,
};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::config::RingConfig;
use crate::format;
use crate::network::Network;
use crate::state::{Command, Member, MemberState, RingState, node_id};
use crate::store::{LogStore, StateMachine};
use crate::view::{Health, RingSnapshot, RingView};
use crate::{RingAccess, RingError, TypeConfig};
use cairn_common::grpc::{Channels, with_deadline};

/// Most times a write or heartbeat is forwarded before giving up (a leader
/// change in flight can make two nodes point at each other briefly).
const MAX_HOPS: u32 = 3;

/// What the other seeds said when asked whether a ring exists.
enum Probe {
    RingExists,
    /// Every seed answered; none has a ring.
    NoRing,
    /// These seeds did not answer.
    Silent(Vec<String>),
}

/// Who this member is.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: String,
    pub addr: String,
    pub zone: String,
}

pub struct RingNode {
    raft: Raft<TypeConfig>,
    me: Identity,
    node_id: u64,
    tokens: Vec<u32>,
    cfg: RingConfig,
    view: RingView,
    channels: Channels,
    /// The leader's instance id as this node last saw it.
    leader: Arc<Mutex<Option<String>>>,
    /// Leader only: heartbeats received since the last batch was recorded.
    beats: Mutex<HashMap<String, i64>>,
    /// Leader only: nodes made learners whose `Join` is not committed yet;
    /// they are not in the ring, but have not departed either.
    joining: Mutex<BTreeSet<u64>>,
    /// The Raft storage was empty when this node opened it, and it did not
    /// start the ring itself.
    fresh: AtomicBool,
}

impl std::fmt::Debug for RingNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingNode").field("id", &self.me.id).field("addr", &self.me.addr).finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> RingError {
    RingError::Unavailable(e.to_string())
}

/// Loads this member's tokens, or draws and saves new ones: a restarted
/// ingester takes back the same part of the ring.
/// A setup step's error, naming the step.
fn setup(step: impl std::fmt::Display, e: impl std::fmt::Display) -> RingError {
    RingError::Setup(format!("{step}: {e}"))
}

fn load_tokens(path: &Path, n: usize) -> Result<Vec<u32>, RingError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let tokens: Vec<u32> = serde_json::from_slice(&bytes)
                .map_err(|e| setup(format!("reading ring tokens {}", path.display()), e))?;
            if !tokens.is_empty() {
                return Ok(tokens);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(setup(format!("reading ring tokens {}", path.display()), e)),
    }
    let mut set = BTreeSet::new();
    while set.len() < n {
        set.insert(rand::random::<u32>());
    }
    let tokens: Vec<u32> = set.into_iter().collect();
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec(&tokens).map_err(|e| setup("encoding ring tokens", e))?;
    std::fs::write(&tmp, json).map_err(|e| setup(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| setup(format!("writing {}", path.display()), e))?;
    Ok(tokens)
}

/// This ingester's instance id when `--ring.instance-id` is not set: the
/// one recorded in `<data_dir>/ring/instance-id` by an earlier start, else
/// the host name for a data directory that already holds Raft state (the
/// default of older versions, kept so that an upgrade does not turn the
/// member into a new one), else `default`. The id chosen is recorded.
pub fn default_instance_id(data_dir: &Path, host: &str, default: String) -> Result<String, RingError> {
    let dir = data_dir.join("ring");
    let file = dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = if dir.join("raft.redb").exists() { host.to_owned() } else { default };
    std::fs::create_dir_all(&dir).map_err(|e| setup(format!("creating {}", dir.display()), e))?;
    std::fs::write(&file, format!("{id}\n")).map_err(|e| setup(format!("writing {}", file.display()), e))?;
    Ok(id)
}

impl RingNode {
    /// Opens the Raft storage under `<data_dir>/ring` and starts the Raft
    /// node. It serves Raft traffic at once; [`RingNode::join`] registers
    /// it in the ring.
    pub async fn open(cfg: &RingConfig, me: Identity, data_dir: &Path, view: RingView) -> Result<Arc<Self>, RingError> {
        let dir: PathBuf = data_dir.join("ring");
        std::fs::create_dir_all(&dir).map_err(|e| setup(format!("creating {}", dir.display()), e))?;
        let tokens = load_tokens(&dir.join("tokens.json"), cfg.num_tokens)?;
        let log = LogStore::open(&dir.join("raft.redb")).map_err(|e| setup("opening the ring's Raft log", e))?;
        let leader: Arc<Mutex<Option<String>>> = Default::default();
        let on_apply = {
            let view = view.clone();
            let leader = leader.clone();
            Arc::new(move |ring: &RingState, applied: u64| {
                view.update(RingSnapshot::new(ring.clone(), applied, leader.lock().clone()), true);
            })
        };
        let sm = StateMachine::open(Some(dir.join("snapshot.json")), Some(on_apply))
            .map_err(|e| setup("loading the ring's snapshot", e))?;
        let heartbeat = 250;
        let config = openraft::Config {
            cluster_name: "cairn-ring".into(),
            heartbeat_interval: heartbeat,
            election_timeout_min: 4 * heartbeat,
            election_timeout_max: 8 * heartbeat,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(1000),
            max_in_snapshot_log_to_keep: 100,
            ..Default::default()
        }
        .validate()
        .map_err(|e| setup("ring Raft settings", e))?;
        let channels = Channels::default();
        let id = node_id(&me.id);
        let raft = Raft::new(id, Arc::new(config), Network { channels: channels.clone() }, log, sm)
            .await
            .map_err(|e| setup("starting the ring's Raft node", e))?;
        let fresh = !raft.is_initialized().await.map_err(|e| setup("reading the ring's Raft state", e))?;
        Ok(Arc::new(Self {
            raft,
            node_id: id,
            me,
            tokens,
            cfg: cfg.clone(),
            view,
            channels,
            leader,
            beats: Mutex::new(HashMap::new()),
            joining: Mutex::new(BTreeSet::new()),
            fresh: AtomicBool::new(fresh),
        }))
    }

    pub fn service(self: &Arc<Self>) -> RingServer<RingService> {
        RingServer::new(RingService { node: self.clone() })
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    pub fn id(&self) -> &str {
        &self.me.id
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// The gRPC address of the leader this node knows of.
    fn leader_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone())
    }

    fn leader_instance(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let snap = self.view.snapshot();
        snap.members()
            .iter()
            .find(|mb| node_id(&mb.id) == leader)
            .map(|mb| mb.id.clone())
            .or_else(|| m.membership_config.membership().get_node(&leader).map(|n| n.addr.clone()))
    }

    fn seeds(&self) -> Vec<String> {
        self.cfg.join.iter().filter(|a| **a != self.me.addr).cloned().collect()
    }

    /// Starts a new ring when this node is the designated first one, has no
    /// Raft state, and every other seed answers without a ring (a seed that
    /// does not answer may be running one: waiting is safer than two rings);
    /// then registers this member (JOINING), retrying until a leader
    /// accepts it or `shutdown`.
    pub async fn join(&self, shutdown: &Shutdown) -> Result<(), RingError> {
        let first = self.cfg.join.first().is_none_or(|a| *a == self.me.addr);
        let mut waited = 0u32;
        while self.fresh.load(Ordering::SeqCst)
            && first
            && !self.raft.is_initialized().await.map_err(|e| setup("reading the ring's Raft state", e))?
        {
            match self.probe_seeds().await {
                Probe::RingExists => {
                    info!("a ring already runs at the other seeds; joining it");
                    break;
                }
                Probe::NoRing => {
                    info!(id = %self.me.id, addr = %self.me.addr, "starting a new ring");
                    let nodes = BTreeMap::from([(self.node_id, BasicNode::new(&self.me.addr))]);
                    match self.raft.initialize(nodes).await {
                        Ok(()) => self.fresh.store(false, Ordering::SeqCst),
                        Err(e) => warn!(error = %e, "initializing the ring"),
                    }
                    break;
                }
                Probe::Silent(addrs) => {
                    if waited.is_multiple_of(10) {
                        warn!(
                            seeds = ?addrs,
                            "waiting for every seed to answer before starting a new ring (one may already run it)"
                        );
                    }
                    waited += 1;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(RingError::Setup("stopped before joining the ring".into())),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let member = Member {
            id: self.me.id.clone(),
            addr: self.me.addr.clone(),
            zone: self.me.zone.clone(),
            tokens: self.tokens.clone(),
            state: MemberState::Joining,
            heartbeat_ms: cairn_common::time::now_ms(),
            registered_ms: cairn_common::time::now_ms(),
            lost_data_ms: 0,
        };
        let mut attempt = 0u32;
        loop {
            match self.write(Command::Join { member: member.clone(), fresh: self.fresh.load(Ordering::SeqCst) }).await {
                Ok(()) => {
                    info!(id = %self.me.id, tokens = self.tokens.len(), "joined the ring");
                    return Ok(());
                }
                Err(RingError::Rejected(e)) => {
                    return Err(RingError::Setup(format!("the ring refused this member: {e}")));
                }
                Err(e) => {
                    attempt += 1;
                    if attempt % 5 == 1 {
                        warn!(error = %e, seeds = ?self.cfg.join, "joining the ring; retrying");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(RingError::Setup("stopped before joining the ring".into())),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn probe_seeds(&self) -> Probe {
        let mut silent = Vec::new();
        for addr in self.seeds() {
            match tokio::time::timeout(Duration::from_secs(2), self.get_ring(&addr)).await {
                Ok(Ok(r)) if !r.leader.is_empty() || r.applied_index > 0 => return Probe::RingExists,
                Ok(Ok(_)) => {}
                _ => silent.push(addr),
            }
        }
        if silent.is_empty() { Probe::NoRing } else { Probe::Silent(silent) }
    }

    async fn get_ring(&self, addr: &str) -> Result<GetRingResponse, Status> {
        let channel = self.channels.get(addr).map_err(Status::invalid_argument)?;
        Ok(RingClient::new(channel).get_ring(GetRingRequest {}).await?.into_inner())
    }

    /// Moves this member to `state`.
    pub async fn set_state(&self, state: MemberState) -> Result<(), RingError> {
        let at_ms = cairn_common::time::now_ms();
        self.write(Command::SetState { id: self.me.id.clone(), state, at_ms }).await?;
        info!(id = %self.me.id, state = state.as_str(), "ring state changed");
        Ok(())
    }

    /// After LEFT: waits briefly for the leader to drop this node from the
    /// Raft group (a leader does not wait: the others elect a successor,
    /// which drops it), then stops the Raft node.
    pub async fn shutdown(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !self.is_leader() {
            let m = self.raft.metrics().borrow().clone();
            let still_voter = m.membership_config.membership().voter_ids().any(|v| v == self.node_id);
            if !still_voter || m.membership_config.membership().voter_ids().count() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = self.raft.shutdown().await;
    }

    /// Proposes `cmd`, retrying through leader elections for a while.
    pub async fn write(&self, cmd: Command) -> Result<(), RingError> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.write_once(cmd.clone(), 0).await {
                Ok(()) => return Ok(()),
                Err(RingError::Rejected(e)) => return Err(RingError::Rejected(e)),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    async fn write_once(&self, cmd: Command, hops: u32) -> Result<(), RingError> {
        if self.is_leader() {
            return self.leader_write(cmd).await;
        }
        if hops >= MAX_HOPS {
            return Err(unavailable("too many forwards; the leader is changing"));
        }
        // The leader first; the seeds too, in case it is gone and this node
        // has not heard of its successor yet (a restart after a crash).
        let mut targets: Vec<String> = self.leader_addr().filter(|a| *a != self.me.addr).into_iter().collect();
        for s in self.seeds() {
            if !targets.contains(&s) {
                targets.push(s);
            }
        }
        let command = serde_json::to_vec(&cmd).map_err(unavailable)?;
        let mut last = unavailable("no leader known and no other seed to ask");
        for addr in targets {
            let channel = self.channels.get(&addr).map_err(unavailable)?;
            let mut req =
                Request::new(WriteRequest { command: command.clone(), hops: hops + 1, format: format::MESSAGE_FORMAT });
            let deadline = Duration::from_secs(35);
            req.set_timeout(deadline);
            match with_deadline(deadline, RingClient::new(channel).write(req)).await {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    return Err(RingError::Rejected(s.message().to_owned()));
                }
                Err(s) => last = unavailable(format!("{addr}: {}", s.message())),
            }
        }
        Err(last)
    }

    /// On the leader: makes a joining member a Raft learner (or updates its
    /// address) before recording it, then commits the command.
    async fn leader_write(&self, cmd: Command) -> Result<(), RingError> {
        let mut joining = None;
        if let Command::Join { member, fresh } = &cmd {
            let nid = node_id(&member.id);
            self.joining.lock().insert(nid);
            joining = Some(nid);
            let result = tokio::time::timeout(Duration::from_secs(30), self.admit(nid, &member.addr, *fresh)).await;
            let result = match result {
                Ok(r) => r,
                Err(_) => Err(unavailable(format!("{} did not catch up with the ring's log", member.id))),
            };
            if let Err(e) = result {
                self.joining.lock().remove(&nid);
                return Err(e);
            }
        }
        let result = self.raft.client_write(cmd).await;
        if let Some(nid) = joining {
            self.joining.lock().remove(&nid);
        }
        match result {
            Ok(resp) => match resp.data.error {
                Some(e) => Err(RingError::Rejected(e)),
                None => Ok(()),
            },
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Makes a joining node a learner of the Raft group, or updates its
    /// address. A node whose Raft state is gone (`fresh`) but that is still
    /// a voter is demoted first: it must not vote with an empty log.
    async fn admit(&self, nid: u64, addr: &str, fresh: bool) -> Result<(), RingError> {
        let node = BasicNode::new(addr);
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        if fresh && voters.contains(&nid) {
            let rest: BTreeSet<u64> = voters.iter().filter(|v| **v != nid).copied().collect();
            if rest.is_empty() {
                return Err(RingError::Rejected("the ring's only voter lost its state".into()));
            }
            warn!(node = nid, "a voter rejoins without its Raft state; it is a learner until it catches up");
            self.raft.change_membership(ChangeMembers::ReplaceAllVoters(rest), true).await.map_err(raft_err)?;
        }
        match membership.get_node(&nid) {
            Some(n) if n.addr == addr => Ok(()),
            Some(_) => self
                .raft
                .change_membership(ChangeMembers::SetNodes(BTreeMap::from([(nid, node)])), false)
                .await
                .map(drop)
                .map_err(raft_err),
            None => self.raft.add_learner(nid, node, true).await.map(drop).map_err(raft_err),
        }
    }

    /// Background duties until `shutdown`: heartbeats, and on the leader,
    /// recording them and keeping the voter set right.
    pub async fn run(&self, shutdown: Shutdown) {
        let period = self.cfg.heartbeat_period.as_std();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leader_seen = None;
        let mut failed_beats = 0u32;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let leader = self.leader_instance();
            if leader != leader_seen {
                info!(leader = ?leader, "ring leader");
                leader_seen = leader.clone();
                *self.leader.lock() = leader.clone();
                let (ring, applied) = self.ring_state();
                self.view.update(RingSnapshot::new(ring, applied, leader), true);
            }
            if self.is_leader() {
                self.record_heartbeats().await;
                if let Err(e) = self.reconcile().await {
                    warn!(error = %e, "adjusting the ring's Raft voters");
                }
            } else if !self.view.snapshot().state.members.contains_key(&self.me.id) {
                // Not registered yet (still joining): nothing to report.
            } else if let Err(e) = self.heartbeat(&self.me.id.clone(), 0).await {
                // One miss is a leader change in flight; several in a row
                // will make this member unhealthy.
                failed_beats += 1;
                if failed_beats >= 3 {
                    warn!(error = %e, misses = failed_beats, "sending the ring heartbeat");
                }
            } else {
                failed_beats = 0;
            }
        }
    }

    fn ring_state(&self) -> (RingState, u64) {
        let snap = self.view.snapshot();
        (snap.state.clone(), snap.applied)
    }

    async fn heartbeat(&self, id: &str, hops: u32) -> Result<(), RingError> {
        if self.is_leader() {
            self.beats.lock().insert(id.to_owned(), cairn_common::time::now_ms());
            return Ok(());
        }
        if hops >= MAX_HOPS {
            return Err(unavailable("too many forwards"));
        }
        let addr = self.leader_addr().ok_or_else(|| unavailable("no leader known"))?;
        let channel = self.channels.get(&addr).map_err(unavailable)?;
        let mut req = Request::new(HeartbeatRequest { instance_id: id.to_owned(), hops: hops + 1 });
        req.set_timeout(self.cfg.heartbeat_period.as_std());
        with_deadline(self.cfg.heartbeat_period.as_std(), RingClient::new(channel).heartbeat(req))
            .await
            .map_err(|s| unavailable(s.message()))?;
        Ok(())
    }

    /// One Raft entry for every heartbeat received since the last one.
    async fn record_heartbeats(&self) {
        let mut beats: Vec<(String, i64)> = std::mem::take(&mut *self.beats.lock()).into_iter().collect();
        beats.push((self.me.id.clone(), cairn_common::time::now_ms()));
        beats.sort();
        if let Err(e) = self.raft.client_write(Command::Heartbeats { beats }).await {
            warn!(error = %e, "recording heartbeats");
        }
    }

    /// Voters: the largest odd number up to 5 of the ring's present members,
    /// healthy ones first, so that a dead voter is replaced when a healthy
    /// learner can take its place. Nodes that left or were forgotten are
    /// removed from the Raft group.
    async fn reconcile(&self) -> Result<(), RingError> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        if membership.get_joint_config().len() > 1 {
            return Ok(()); // a change is in flight
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let nodes: BTreeSet<u64> = membership.nodes().map(|(id, _)| *id).collect();
        let snap = self.view.snapshot();
        let health = Health::now(self.cfg.heartbeat_timeout.as_millis() as i64);
        let present: BTreeMap<u64, &Member> = snap
            .members()
            .iter()
            .filter(|m| m.state != MemberState::Left)
            .map(|m| (node_id(&m.id), m))
            .filter(|(id, _)| nodes.contains(id))
            .collect();
        if present.is_empty() {
            return Ok(());
        }
        let healthy = |id: &u64| *id == self.node_id || present.get(id).is_some_and(|m| health.is_healthy(m));
        let target = match present.len().min(5) {
            n if n % 2 == 0 => n - 1,
            n => n,
        };
        let mut desired: Vec<u64> = Vec::new();
        // The leader stays a voter; then healthy voters, healthy active
        // learners, and last unhealthy voters.
        desired.push(self.node_id);
        let keep_healthy = voters.iter().filter(|v| present.contains_key(v) && healthy(v));
        let learners = present
            .iter()
            .filter(|(id, m)| !voters.contains(id) && m.state == MemberState::Active && healthy(id))
            .map(|(id, _)| id);
        let keep_unhealthy = voters.iter().filter(|v| present.contains_key(v) && !healthy(v));
        for id in keep_healthy.chain(learners).chain(keep_unhealthy) {
            if desired.len() >= target {
                break;
            }
            if !desired.contains(id) {
                desired.push(*id);
            }
        }
        let desired: BTreeSet<u64> = desired.into_iter().collect();
        if desired != voters {
            info!(voters = ?desired, "changing the ring's Raft voters");
            self.raft
                .change_membership(ChangeMembers::ReplaceAllVoters(desired.clone()), true)
                .await
                .map_err(raft_err)?;
        }
        let joining = self.joining.lock().clone();
        let departed: BTreeSet<u64> = nodes
            .iter()
            .filter(|id| !present.contains_key(id) && !desired.contains(id) && !joining.contains(id))
            .copied()
            .collect();
        if !departed.is_empty() {
            info!(nodes = ?departed, "removing departed members from the ring's Raft group");
            self.raft.change_membership(ChangeMembers::RemoveNodes(departed), false).await.map_err(raft_err)?;
        }
        Ok(())
    }
}

fn raft_err(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> RingError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => unavailable("leadership moved"),
        other => unavailable(other),
    }
}

#[async_trait::async_trait]
impl RingAccess for RingNode {
    fn view(&self) -> &RingView {
        &self.view
    }

    async fn propose(&self, cmd: Command) -> Result<(), RingError> {
        self.write(cmd).await
    }
}

/// The `Ring` gRPC service of a member.
#[derive(Clone, Debug)]
pub struct RingService {
    node: Arc<RingNode>,
}

/// Reads a message of the sender's `format`; a newer format than this
/// build reads is refused, naming both.
fn decode<T: DeserializeOwned>(what: &'static str, format: u32, bytes: &[u8]) -> Result<T, Status> {
    format::check_message(what, format).map_err(|e| Status::failed_precondition(e.to_string()))?;
    serde_json::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("bad ring message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftMessage>, Status> {
    let json = serde_json::to_vec(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { json, format: format::MESSAGE_FORMAT }))
}

#[tonic::async_trait]
impl RingRpc for RingService {
    async fn append_entries(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req = req.into_inner();
        let rpc = decode("an AppendEntries message", req.format, &req.json)?;
        encode(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req = req.into_inner();
        let rpc = decode("a Vote message", req.format, &req.json)?;
        encode(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req = req.into_inner();
        let rpc = decode("an InstallSnapshot message", req.format, &req.json)?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn write(&self, req: Request<WriteRequest>) -> Result<Response<WriteResponse>, Status> {
        let req = req.into_inner();
        let cmd: Command = decode("a ring command", req.format, &req.command)?;
        match self.node.write_once(cmd, req.hops).await {
            Ok(()) => Ok(Response::new(WriteResponse {})),
            Err(RingError::Rejected(e)) => Err(Status::failed_precondition(e)),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn heartbeat(&self, req: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        let req = req.into_inner();
        self.node.heartbeat(&req.instance_id, req.hops).await.map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(HeartbeatResponse {}))
    }

    async fn get_ring(&self, _req: Request<GetRingRequest>) -> Result<Response<GetRingResponse>, Status> {
        let (ring, applied) = self.node.ring_state();
        let state = serde_json::to_vec(&ring).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(GetRingResponse {
            state,
            applied_index: applied,
            leader: self.node.leader_instance().unwrap_or_default(),
            format: format::MESSAGE_FORMAT,
        }))
    }
}
