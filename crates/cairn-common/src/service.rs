//! What every role of a process implements, so that the binary only
//! composes them.
//!
//! A role contributes HTTP routes and gRPC services, may need start-up work
//! before it is ready (the ingester replays its WAL and joins the ring), may
//! have something to do when the process is told to stop while it still
//! serves requests (the ingester leaves the ring), and may run background
//! duties until shutdown. `cairn all` runs every role; `cairn ingester`
//! runs one; either way the roles are the same values.

use async_trait::async_trait;

use crate::Shutdown;

/// A role's start-up or background failure.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[async_trait]
pub trait Service: Send + Sync {
    fn name(&self) -> &'static str;

    /// HTTP routes this role serves.
    fn http(&self) -> axum::Router {
        axum::Router::new()
    }

    /// gRPC services this role serves.
    fn grpc(&self, _routes: &mut tonic::service::RoutesBuilder) {}

    /// Work before the role is ready (replay, joining).
    async fn start(&self) -> Result<(), BoxError> {
        Ok(())
    }

    fn is_ready(&self) -> bool {
        true
    }

    /// Called once when the process is told to stop, while it still serves
    /// requests.
    async fn stopping(&self) {}

    /// Background duties until `shutdown`, then the role's own flush.
    async fn run(&self, shutdown: Shutdown) -> Result<(), BoxError> {
        shutdown.cancelled().await;
        Ok(())
    }
}
