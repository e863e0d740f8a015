//! Roles: the components a process can run, behind one interface.
//!
//! A role contributes HTTP routes and gRPC services, may need start-up work
//! before it is ready (the ingester replays its WAL), and may run background
//! duties until shutdown. `cairn all` runs all of them; `cairn ingester`
//! runs one. Either way each role is built by the same function here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
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
use cairn_ring::channels::Channels;
use cairn_ring::node::Identity;
use cairn_ring::replication::Clients;
use cairn_ring::{MemberState, ReplicatedPusher, ReplicatedQueryable, RingAccess, RingNode, RingView, RingWatcher};
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
    /// Called once when the process is told to stop, while it still serves
    /// requests (an ingester announces it is leaving the ring).
    async fn stopping(&self) {}
    /// Background duties until `shutdown`, then the role's own flush.
    async fn run(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        shutdown.cancelled().await;
        Ok(())
    }
}

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
impl Role for IngesterRole {
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
        routes.add_service(cairn_ingester::grpc::service(self.ingester.clone()));
        if let Some(node) = &self.ring {
            routes.add_service(node.service());
        }
    }
    /// In a ring: registers (JOINING: no writes, and reads count it as
    /// failed until it is ready), replays the WAL, becomes ACTIVE. Alone:
    /// replays the WAL.
    async fn start(&self) -> anyhow::Result<()> {
        if let Some(node) = &self.ring {
            node.join(&Shutdown::new()).await?;
        }
        self.ingester.start().await?;
        if let Some(node) = &self.ring {
            node.set_state(MemberState::Active).await.context("becoming ACTIVE in the ring")?;
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
        // Distributors poll the ring every second: let them see LEAVING
        // before pushes are refused, so that few requests fail over.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        self.ingester.stop_accepting_writes();
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
    async fn run(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        let Some(node) = &self.ring else {
            self.ingester.run(shutdown).await;
            return Ok(());
        };
        tokio::join!(self.ingester.run(shutdown.clone()), node.run(shutdown));
        node.shutdown().await;
        Ok(())
    }
}

/// Keeps a distributor's or querier's view of the ring fresh.
pub struct RingWatcherRole {
    watcher: Arc<RingWatcher>,
    ready: AtomicBool,
}

#[async_trait]
impl Role for RingWatcherRole {
    fn name(&self) -> &'static str {
        "ring"
    }
    fn http(&self) -> Router {
        cairn_ring::http::routes(self.watcher.clone() as Arc<dyn RingAccess>)
    }
    async fn start(&self) -> anyhow::Result<()> {
        self.watcher.start(&Shutdown::new()).await?;
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
    async fn run(&self, shutdown: Shutdown) -> anyhow::Result<()> {
        self.watcher.run(shutdown).await;
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
            // A panic on one tenant's blocks fails that tenant only.
            let enforced =
                cairn_common::task::catch_panic_async(retention::enforce(&self.bucket, &tenant, self.policy, now))
                    .await;
            match enforced {
                Ok(Ok((_, Some(index)))) => self.blocks.notify(&tenant, index),
                Ok(Ok((_, None))) => {}
                Ok(Err(e)) => {
                    tracing::warn!(tenant = %tenant, error = %e, "applying retention failed; retried next run");
                    first.get_or_insert(anyhow::Error::from(e));
                }
                Err(panic) => {
                    tracing::error!(tenant = %tenant, error = %panic, "applying retention panicked; retried next run");
                    first.get_or_insert(anyhow::anyhow!("retention panicked for tenant {tenant}: {panic}"));
                }
            }
        }
        first.map_or(Ok(()), Err)
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
    /// ingester and the querier reads from it. No ring.
    All,
    /// A ring member keeping replicas of series.
    Ingester,
    /// The remote write receiver of a cluster.
    Distributor,
    /// The query API of a cluster, also SQL and retention.
    Querier,
}

/// This machine's host name, for defaults.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cairn".to_owned())
}

/// Who this ingester is in the ring: `--ring.instance-id` (default: the
/// host name) reachable at `--ring.advertise-address` (default: the gRPC
/// listen address, with the host name when it listens on every interface).
fn identity(cfg: &Config) -> anyhow::Result<Identity> {
    let id = if cfg.ring.instance_id.is_empty() { host_name() } else { cfg.ring.instance_id.clone() };
    let addr = if cfg.ring.advertise_address.is_empty() {
        let listen = crate::config::listen_addr(&cfg.server.grpc_listen_address)?;
        if listen.ip().is_unspecified() { format!("{}:{}", host_name(), listen.port()) } else { listen.to_string() }
    } else {
        cfg.ring.advertise_address.clone()
    };
    Ok(Identity { id, addr, zone: cfg.ring.zone.clone() })
}

fn open_blocks(
    cfg: &Config,
    registry: &mut Registry,
) -> anyhow::Result<(Arc<dyn object_store::ObjectStore>, BlockStore)> {
    let bucket = cfg.storage.open(&cfg.data_dir)?;
    let blocks = BlockStore::new(
        bucket.clone(),
        cfg.storage.bucket_index_refresh_interval.as_std(),
        cfg.storage.metadata_cache_bytes as usize,
        registry,
    );
    Ok((bucket, blocks))
}

fn open_ingester(
    cfg: &Config,
    registry: &mut Registry,
    bucket: &Arc<dyn object_store::ObjectStore>,
    blocks: &BlockStore,
    source: String,
) -> anyhow::Result<Ingester> {
    let notify = {
        let blocks = blocks.clone();
        Arc::new(move |tenant: &cairn_common::TenantId, index| blocks.notify(tenant, index))
    };
    let sink = BlockSink { bucket: bucket.clone(), notify, source };
    Ok(Ingester::new(cfg.ingester.clone(), &cfg.data_dir, registry, Some(sink))?)
}

/// The query, SQL and retention roles over `recent` (heads) and the blocks.
fn read_roles(
    cfg: &Config,
    recent: Arc<dyn Queryable>,
    bucket: Arc<dyn object_store::ObjectStore>,
    blocks: BlockStore,
) -> Vec<Box<dyn Role>> {
    let store: Arc<dyn Queryable> = Arc::new(Tiers::new(recent, Arc::new(blocks.clone())));
    let querier = Querier::new(cfg.querier.clone(), store, build_info());
    #[cfg(feature = "sql")]
    let sql =
        cairn_sql::Sql::new(blocks.clone(), cfg.sql.clone(), cfg.querier.timeout.as_std(), querier.memory_budget());
    let mut roles: Vec<Box<dyn Role>> = vec![Box::new(QuerierRole(querier))];
    #[cfg(feature = "sql")]
    roles.push(Box::new(SqlRole(sql)));
    roles.push(Box::new(RetentionRole {
        bucket,
        blocks,
        policy: RetentionPolicy {
            retention_ms: cfg.storage.retention.as_millis() as i64,
            deletion_delay_ms: cfg.storage.deletion_delay.as_millis() as i64,
        },
    }));
    roles
}

fn ring_watcher(cfg: &Config, view: &RingView, channels: &Channels) -> anyhow::Result<Arc<RingWatcher>> {
    if cfg.ring.join.is_empty() {
        anyhow::bail!("--ring.join must name at least one ingester (host:port of its gRPC address)");
    }
    Ok(Arc::new(RingWatcher::new(cfg.ring.join.clone(), view.clone(), channels.clone())))
}

/// Builds the roles of `target` in start order.
pub async fn build(target: Target, cfg: &Config, registry: &mut Registry) -> anyhow::Result<Vec<Box<dyn Role>>> {
    let view = RingView::new(cfg.ring.heartbeat_timeout.as_millis() as i64);
    let channels = Channels::default();
    let rf = cfg.distributor.replication_factor;
    let roles: Vec<Box<dyn Role>> = match target {
        Target::All => {
            let (bucket, blocks) = open_blocks(cfg, registry)?;
            let ingester = open_ingester(cfg, registry, &bucket, &blocks, host_name())?;
            let pusher: Arc<dyn Pusher> = Arc::new(ingester.clone());
            let mut roles: Vec<Box<dyn Role>> = vec![
                Box::new(IngesterRole::new(ingester.clone(), None)),
                Box::new(DistributorRole(Distributor::new(
                    cfg.distributor.clone(),
                    cfg.limits.clone(),
                    pusher,
                    registry,
                ))),
            ];
            roles.extend(read_roles(cfg, Arc::new(ingester), bucket, blocks));
            roles
        }
        Target::Ingester => {
            let me = identity(cfg)?;
            let (bucket, blocks) = open_blocks(cfg, registry)?;
            let ingester = open_ingester(cfg, registry, &bucket, &blocks, me.id.clone())?;
            let node = RingNode::open(&cfg.ring, me, &cfg.data_dir, view).await?;
            vec![Box::new(IngesterRole::new(ingester, Some(node)))]
        }
        Target::Distributor => {
            let watcher = ring_watcher(cfg, &view, &channels)?;
            let clients = Clients { channels, timeout: cfg.distributor.remote_timeout.as_std() };
            let pusher: Arc<dyn Pusher> = Arc::new(ReplicatedPusher::new(view, clients, rf));
            vec![
                Box::new(RingWatcherRole { watcher, ready: AtomicBool::new(false) }),
                Box::new(DistributorRole(Distributor::new(
                    cfg.distributor.clone(),
                    cfg.limits.clone(),
                    pusher,
                    registry,
                ))),
            ]
        }
        Target::Querier => {
            let watcher = ring_watcher(cfg, &view, &channels)?;
            let (bucket, blocks) = open_blocks(cfg, registry)?;
            let clients = Clients { channels, timeout: cfg.querier.timeout.as_std() };
            // A departed ingester's blocks are seen after the next index refresh.
            let settle = 2 * cfg.storage.bucket_index_refresh_interval.as_millis() as i64;
            let recent: Arc<dyn Queryable> = Arc::new(ReplicatedQueryable::new(view, clients, rf, settle));
            let mut roles: Vec<Box<dyn Role>> =
                vec![Box::new(RingWatcherRole { watcher, ready: AtomicBool::new(false) })];
            roles.extend(read_roles(cfg, recent, bucket, blocks));
            roles
        }
    };
    Ok(roles)
}
