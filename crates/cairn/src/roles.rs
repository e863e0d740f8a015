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
use cairn_ingester::shipper::BlockSink;
use cairn_querier::tiers::Tiers;
use cairn_querier::{BuildInfo, Querier};
use cairn_storage::BlockStore;
use cairn_storage::retention::{self, RetentionPolicy};
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

/// `POST /ingester/flush`: fsync every WAL and checkpoint every head now,
/// then upload pending blocks and cut every block period that is final
/// (with `?all=true`, the whole head).
async fn flush(
    axum::extract::State(ing): axum::extract::State<Ingester>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> axum::response::Response {
    use axum::response::IntoResponse;
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

/// `POST /api/v1/sql` over the blocks.
#[cfg(feature = "sql")]
pub struct SqlRole(pub cairn_sql::Sql);

#[cfg(feature = "sql")]
#[async_trait]
impl Role for SqlRole {
    fn name(&self) -> &'static str {
        "sql"
    }
    fn http(&self) -> Router {
        cairn_sql::http::routes(self.0.clone())
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

/// Applies `--storage.retention` to every tenant's blocks. One per bucket
/// (in `cairn all`, the only process using it).
pub struct RetentionRole {
    bucket: Arc<dyn object_store::ObjectStore>,
    blocks: BlockStore,
    policy: RetentionPolicy,
}

impl RetentionRole {
    /// Runs every tenant once; returns the first error after trying all.
    pub async fn enforce_all(&self) -> anyhow::Result<()> {
        let now = cairn_common::time::now_ms();
        let mut first = None;
        for tenant in retention::tenants(self.bucket.as_ref()).await? {
            match retention::enforce(&self.bucket, &tenant, self.policy, now).await {
                Ok((_, Some(index))) => self.blocks.notify(&tenant, index),
                Ok((_, None)) => {}
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "applying retention failed; retried next run");
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), |e| Err(e.into()))
    }
}

#[async_trait]
impl Role for RetentionRole {
    fn name(&self) -> &'static str {
        "retention"
    }
    async fn run(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        if self.policy.retention_ms <= 0 {
            shutdown.cancelled().await;
            return Ok(());
        }
        // Often enough that deletion follows its delay closely, rarely
        // enough that the top-level LIST costs nothing.
        let every =
            std::time::Duration::from_millis((self.policy.deletion_delay_ms / 4).clamp(1_000, 5 * 60_000) as u64);
        loop {
            let _ = self.enforce_all().await;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
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

/// The name this process records as the source of the blocks it writes.
fn source_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cairn".to_owned())
}

/// Builds the roles of `target` in start order.
pub fn build(target: Target, cfg: &Config, registry: &mut Registry) -> anyhow::Result<Vec<Box<dyn Role>>> {
    let bucket = cfg.storage.open(&cfg.data_dir)?;
    let blocks = BlockStore::new(
        bucket.clone(),
        cfg.storage.bucket_index_refresh_interval.as_std(),
        cfg.storage.metadata_cache_bytes as usize,
        registry,
    );
    let notify = {
        let blocks = blocks.clone();
        Arc::new(move |tenant: &cairn_common::TenantId, index| blocks.notify(tenant, index))
    };
    let sink = BlockSink { bucket: bucket.clone(), notify, source: source_name() };
    let ingester = Ingester::new(cfg.ingester.clone(), &cfg.data_dir, registry, Some(sink))?;
    let mut roles: Vec<Box<dyn Role>> = vec![Box::new(IngesterRole(ingester.clone()))];
    if target == Target::All {
        let pusher: Arc<dyn Pusher> = Arc::new(ingester.clone());
        let store: Arc<dyn Queryable> = Arc::new(Tiers::new(
            Arc::new(ingester),
            Arc::new(blocks.clone()),
            cfg.querier.query_ingesters_within.as_millis() as i64,
        ));
        roles.push(Box::new(DistributorRole(Distributor::new(
            cfg.distributor.clone(),
            cfg.limits.clone(),
            pusher,
            registry,
        ))));
        roles.push(Box::new(QuerierRole(Querier::new(cfg.querier.clone(), store, build_info()))));
        #[cfg(feature = "sql")]
        roles.push(Box::new(SqlRole(cairn_sql::Sql::new(
            blocks.clone(),
            cfg.sql.max_rows,
            cfg.querier.timeout.as_std(),
        ))));
        roles.push(Box::new(RetentionRole {
            bucket: bucket.clone(),
            blocks: blocks.clone(),
            policy: RetentionPolicy {
                retention_ms: cfg.storage.retention.as_millis() as i64,
                deletion_delay_ms: cfg.storage.deletion_delay.as_millis() as i64,
            },
        }));
    }
    Ok(roles)
}
