//! Roles: the components a process can run, behind one interface.
//!
//! A role contributes HTTP routes and gRPC services, may need start-up work
//! before it is ready (the ingester replays its WAL), and may run background
//! duties until shutdown. `cairn all` runs all of them; `cairn ingester`
//! runs one. Either way each role is built by the same function here.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use cairn_common::Shutdown;
use cairn_common::metrics::Registry;
use cairn_common::push::Pusher;
use cairn_common::storage::Queryable;
use cairn_distributor::Distributor;
use cairn_ingester::Ingester;
use cairn_querier::{BuildInfo, Querier};
use tonic::service::RoutesBuilder;

use crate::config::Config;

#[async_trait]
pub trait Role: Send + Sync {
    fn name(&self) -> &'static str;
    /// HTTP routes this role serves.
    fn http(&self) -> Router {
        Router::new()
    }
    /// gRPC services this role serves.
    fn grpc(&self, _routes: &mut RoutesBuilder) {}
    /// Work before the role is ready (replay, joining).
    async fn start(&self) -> anyhow::Result<()> {
        Ok(())
    }
    fn is_ready(&self) -> bool {
        true
    }
    /// Background duties until `shutdown`, then the role's own flush.
    async fn run(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }
}

pub struct IngesterRole(pub Ingester);

#[async_trait]
impl Role for IngesterRole {
    fn name(&self) -> &'static str {
        "ingester"
    }
    fn http(&self) -> Router {
        Router::new().route("/ingester/flush", axum::routing::post(flush)).with_state(self.0.clone())
    }
    fn grpc(&self, routes: &mut RoutesBuilder) {
        routes.add_service(cairn_ingester::grpc::service(self.0.clone()));
    }
    async fn start(&self) -> anyhow::Result<()> {
        Ok(self.0.start().await?)
    }
    fn is_ready(&self) -> bool {
        self.0.is_ready()
    }
    async fn run(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        self.0.run(shutdown).await;
        Ok(())
    }
}

/// `POST /ingester/flush`: fsync every WAL and checkpoint every head now.
async fn flush(axum::extract::State(ing): axum::extract::State<Ingester>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match ing.flush().await {
        Ok(()) => axum::http::StatusCode::NO_CONTENT.into_response(),
        Err(e) => (e.code.http_status(), format!("{}\n", e.message)).into_response(),
    }
}

pub struct DistributorRole(pub Distributor);

#[async_trait]
impl Role for DistributorRole {
    fn name(&self) -> &'static str {
        "distributor"
    }
    fn http(&self) -> Router {
        cairn_distributor::http::routes(self.0.clone())
    }
}

pub struct QuerierRole(pub Querier);

#[async_trait]
impl Role for QuerierRole {
    fn name(&self) -> &'static str {
        "querier"
    }
    fn http(&self) -> Router {
        cairn_querier::api::routes(self.0.clone())
    }
}

pub fn build_info() -> BuildInfo {
    BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        revision: option_env!("CAIRN_GIT_REVISION").unwrap_or("unknown").to_owned(),
        branch: option_env!("CAIRN_GIT_BRANCH").unwrap_or("").to_owned(),
        build_date: option_env!("CAIRN_BUILD_DATE").unwrap_or("").to_owned(),
        toolchain: format!("rustc {}", option_env!("CAIRN_RUSTC_VERSION").unwrap_or("1.95")),
    }
}

/// Which roles a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every role, wired in process: the distributor pushes to the local
    /// ingester and the querier reads from it.
    All,
    /// The ingester alone, reachable over gRPC.
    Ingester,
}

/// Builds the roles of `target` in start order.
pub fn build(target: Target, cfg: &Config, registry: &mut Registry) -> anyhow::Result<Vec<Box<dyn Role>>> {
    let ingester = Ingester::new(cfg.ingester.clone(), &cfg.data_dir, registry)?;
    let mut roles: Vec<Box<dyn Role>> = vec![Box::new(IngesterRole(ingester.clone()))];
    if target == Target::All {
        let pusher: Arc<dyn Pusher> = Arc::new(ingester.clone());
        let store: Arc<dyn Queryable> = Arc::new(ingester);
        roles.push(Box::new(DistributorRole(Distributor::new(
            cfg.distributor.clone(),
            cfg.limits.clone(),
            pusher,
            registry,
        ))));
        roles.push(Box::new(QuerierRole(Querier::new(cfg.querier.clone(), store, build_info()))));
    }
    Ok(roles)
}
