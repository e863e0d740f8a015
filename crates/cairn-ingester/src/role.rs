//! The ingester as a role of a process: its gRPC service, its HTTP routes,
//! and in a cluster its life in the ring (join, ACTIVE, leave).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use cairn_common::Shutdown;
use cairn_common::service::{BoxError, Service};
use cairn_ring::{MemberState, RingAccess, RingNode};
use tonic::service::RoutesBuilder;

use crate::Ingester;

/// How long a leaving ingester keeps taking writes after it announced
/// LEAVING: distributors poll the ring every second, so that they stop
/// choosing it before pushes are refused and few requests fail over.
const LEAVE_NOTICE: Duration = Duration::from_secs(2);

/// The ingester; in a cluster also a member of the ring.
pub struct IngesterRole {
    ingester: Ingester,
    ring: Option<Arc<RingNode>>,
    /// In the ring and ACTIVE (always true without a ring once replayed).
    joined: AtomicBool,
}

impl IngesterRole {
    pub fn new(ingester: Ingester, ring: Option<Arc<RingNode>>) -> Self {
        Self { ingester, ring, joined: AtomicBool::new(false) }
    }
}

#[async_trait]
impl Service for IngesterRole {
    fn name(&self) -> &'static str {
        "ingester"
    }

    fn http(&self) -> Router {
        let router =
            Router::new().route("/ingester/flush", axum::routing::post(flush)).with_state(self.ingester.clone());
        match &self.ring {
            Some(node) => router.merge(cairn_ring::http::routes(node.clone() as Arc<dyn RingAccess>)),
            None => router,
        }
    }

    fn grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(crate::grpc::service(self.ingester.clone()));
        if let Some(node) = &self.ring {
            routes.add_service(node.service());
        }
    }

    /// In a ring: registers (JOINING: no writes, and reads count it as
    /// failed until it is ready), replays the WAL, becomes ACTIVE. Alone:
    /// replays the WAL.
    async fn start(&self) -> Result<(), BoxError> {
        if let Some(node) = &self.ring {
            node.join(&Shutdown::new()).await?;
        }
        self.ingester.start().await?;
        if let Some(node) = &self.ring {
            node.set_state(MemberState::Active).await.map_err(|e| format!("becoming ACTIVE in the ring: {e}"))?;
        }
        self.joined.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.ingester.is_ready() && self.joined.load(Ordering::SeqCst)
    }

    /// Leaves the ring while still serving reads and Raft: LEAVING (writers
    /// stop choosing it), pushes refused from then on, the whole head cut
    /// into blocks and uploaded, then LEFT. If the upload fails it stays
    /// LEAVING and its WAL keeps the data for the next start.
    async fn stopping(&self) {
        let Some(node) = &self.ring else { return };
        if !self.joined.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = node.set_state(MemberState::Leaving).await {
            tracing::warn!(error = %e, "could not mark this ingester LEAVING");
        }
        tokio::time::sleep(LEAVE_NOTICE).await;
        self.ingester.stop_accepting_writes().await;
        match self.ingester.ship_blocks(true).await {
            Ok(()) => {
                tracing::info!("head flushed to object storage");
                if let Err(e) = node.set_state(MemberState::Left).await {
                    tracing::warn!(error = %e, "could not mark this ingester LEFT");
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                "flushing the head to object storage failed; staying LEAVING, the WAL keeps the data"
            ),
        }
    }

    async fn run(&self, shutdown: Shutdown) -> Result<(), BoxError> {
        let Some(node) = &self.ring else {
            self.ingester.run(shutdown).await;
            return Ok(());
        };
        tokio::join!(self.ingester.run(shutdown.clone()), node.run(shutdown));
        node.shutdown().await;
        Ok(())
    }
}

/// `POST /ingester/flush`: fsync every WAL and checkpoint every head now,
/// then upload pending blocks and cut every block period that is final
/// (with `?all=true`, the whole head).
async fn flush(State(ing): State<Ingester>, RawQuery(query): RawQuery) -> Response {
    let all = query.is_some_and(|q| q.split('&').any(|kv| kv == "all=true" || kv == "all=1"));
    let result = match ing.flush().await {
        Ok(()) => ing.ship_blocks(all).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => axum::http::StatusCode::NO_CONTENT.into_response(),
        Err(e) => (e.code.http_status(), format!("{}\n", e.message)).into_response(),
    }
}
