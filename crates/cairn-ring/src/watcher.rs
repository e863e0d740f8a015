//! The ring as seen by processes that are not members (distributors,
//! queriers): polled from the members every second, preferring the leader,
//! and never moved backwards (a snapshot older than the one held is
//! ignored).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_common::Shutdown;
use cairn_common::service::{BoxError, Service};
use cairn_proto::ring::ring_client::RingClient;
use cairn_proto::ring::{GetRingRequest, WriteRequest};
use tracing::{info, warn};

use crate::state::{Command, RingState};
use crate::view::{RingSnapshot, RingView};
use crate::{RingAccess, RingError};
use cairn_common::grpc::{Channels, with_deadline};

const POLL: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct RingWatcher {
    seeds: Vec<String>,
    view: RingView,
    channels: Channels,
}

impl RingWatcher {
    pub fn new(seeds: Vec<String>, view: RingView, channels: Channels) -> Self {
        Self { seeds, view, channels }
    }

    /// Where to ask: the leader first, then the other members, then seeds.
    fn targets(&self) -> Vec<String> {
        let snap = self.view.snapshot();
        let mut out: Vec<String> = Vec::new();
        if let Some(m) = snap.leader.as_ref().and_then(|l| snap.state.members.get(l)) {
            out.push(m.addr.clone());
        }
        for m in snap.members() {
            if !out.contains(&m.addr) {
                out.push(m.addr.clone());
            }
        }
        for s in &self.seeds {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Fetches the ring once from the first member that answers.
    pub async fn refresh(&self) -> Result<(), RingError> {
        let mut last = RingError::Unavailable("no ring member configured (--ring.join)".into());
        for addr in self.targets() {
            let channel = match self.channels.get(&addr) {
                Ok(c) => c,
                Err(e) => {
                    last = RingError::Unavailable(e);
                    continue;
                }
            };
            let mut req = tonic::Request::new(GetRingRequest {});
            req.set_timeout(Duration::from_secs(2));
            match with_deadline(Duration::from_secs(2), RingClient::new(channel).get_ring(req)).await {
                Ok(r) => {
                    let r = r.into_inner();
                    if let Err(e) = crate::format::check_message("the ring", r.format) {
                        return Err(RingError::Unavailable(format!("{addr}: {e}")));
                    }
                    let state: RingState = serde_json::from_slice(&r.state)
                        .map_err(|e| RingError::Unavailable(format!("{addr}: bad ring state: {e}")))?;
                    let leader = (!r.leader.is_empty()).then_some(r.leader);
                    self.view.update(RingSnapshot::new(state, r.applied_index, leader), false);
                    return Ok(());
                }
                Err(s) => last = RingError::Unavailable(format!("{addr}: {}", s.message())),
            }
        }
        Err(last)
    }

    /// Waits until the ring has been read once (or `shutdown`).
    pub async fn start(&self, shutdown: &Shutdown) -> Result<(), RingError> {
        let mut attempt = 0u32;
        loop {
            match self.refresh().await {
                Ok(()) => {
                    info!(members = self.view.snapshot().members().len(), "read the ring");
                    return Ok(());
                }
                Err(e) => {
                    attempt += 1;
                    if attempt % 5 == 1 {
                        warn!(error = %e, "reading the ring; retrying");
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Err(RingError::Setup("stopped before the ring could be read".into())),
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }

    pub async fn run(&self, shutdown: Shutdown) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            if let Err(e) = self.refresh().await {
                warn!(error = %e, "refreshing the ring");
            }
        }
    }
}

/// A distributor's or querier's role of keeping its view of the ring fresh
/// (ready once the ring was read), with the ring page.
pub struct RingWatcherService {
    watcher: Arc<RingWatcher>,
    ready: AtomicBool,
}

impl RingWatcherService {
    pub fn new(watcher: Arc<RingWatcher>) -> Self {
        Self { watcher, ready: AtomicBool::new(false) }
    }
}

#[async_trait::async_trait]
impl Service for RingWatcherService {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn http(&self) -> axum::Router {
        crate::http::routes(self.watcher.clone() as Arc<dyn RingAccess>)
    }

    async fn start(&self) -> Result<(), BoxError> {
        self.watcher.start(&Shutdown::new()).await?;
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    async fn run(&self, shutdown: Shutdown) -> Result<(), BoxError> {
        self.watcher.run(shutdown).await;
        Ok(())
    }
}

#[async_trait::async_trait]
impl RingAccess for RingWatcher {
    fn view(&self) -> &RingView {
        &self.view
    }

    async fn propose(&self, cmd: Command) -> Result<(), RingError> {
        let command = serde_json::to_vec(&cmd).map_err(|e| RingError::Unavailable(e.to_string()))?;
        let mut last = RingError::Unavailable("no ring member reachable".into());
        for addr in self.targets() {
            let Ok(channel) = self.channels.get(&addr) else { continue };
            let mut req = tonic::Request::new(WriteRequest {
                command: command.clone(),
                hops: 0,
                format: crate::format::MESSAGE_FORMAT,
            });
            req.set_timeout(Duration::from_secs(20));
            match with_deadline(Duration::from_secs(20), RingClient::new(channel).write(req)).await {
                Ok(_) => {
                    let _ = self.refresh().await;
                    return Ok(());
                }
                Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                    return Err(RingError::Rejected(s.message().to_owned()));
                }
                Err(s) => last = RingError::Unavailable(format!("{addr}: {}", s.message())),
            }
        }
        Err(last)
    }
}
