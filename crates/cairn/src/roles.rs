//! Which roles a process runs, built from configuration.
//!
//! Each role is a [`Service`] implemented by the crate that owns its
//! behaviour; this module only reads the configuration and composes them:
//! in `cairn all` the distributor pushes to the ingester in process and the
//! querier reads from it, in a cluster both reach the ingesters through the
//! ring.

use std::sync::Arc;

use cairn_common::grpc::Channels;
use cairn_common::metrics::Registry;
use cairn_common::push::Pusher;
use cairn_common::service::Service;
use cairn_common::storage::Queryable;
use cairn_distributor::Distributor;
use cairn_distributor::replication::ReplicatedPusher;
use cairn_ingester::Ingester;
use cairn_ingester::role::IngesterRole;
use cairn_ingester::shipper::BlockSink;
use cairn_querier::ingesters::ReplicatedQueryable;
use cairn_querier::tiers::Tiers;
use cairn_querier::{BuildInfo, Querier};
use cairn_ring::node::Identity;
use cairn_ring::{RingNode, RingView, RingWatcher, RingWatcherService};
use cairn_rpc::Clients;
use cairn_storage::BlockStore;
use cairn_storage::retention::{RetentionPolicy, RetentionService};

use crate::config::Config;

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
/// host name and the gRPC port, so that ingesters sharing a host differ)
/// reachable at `--ring.advertise-address` (default: the gRPC listen
/// address, with the host name when it listens on every interface).
fn identity(cfg: &Config) -> anyhow::Result<Identity> {
    let listen = crate::config::listen_addr(&cfg.server.grpc_listen_address)?;
    let id = if cfg.ring.instance_id.is_empty() {
        let id = cairn_ring::node::default_instance_id(
            &cfg.data_dir,
            &host_name(),
            format!("{}-{}", host_name(), listen.port()),
        )?;
        tracing::info!(id = %id, "ring instance id not set (--ring.instance-id): using {id}");
        id
    } else {
        cfg.ring.instance_id.clone()
    };
    let addr = if cfg.ring.advertise_address.is_empty() {
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
    let blocks = BlockStore::new(bucket.clone(), &cfg.storage, registry)?;
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
) -> Vec<Box<dyn Service>> {
    let store: Arc<dyn Queryable> = Arc::new(Tiers::new(recent, Arc::new(blocks.clone())));
    let querier = Querier::new(cfg.querier.clone(), store, build_info());
    #[cfg(feature = "sql")]
    let sql =
        cairn_sql::Sql::new(blocks.clone(), cfg.sql.clone(), cfg.querier.timeout.as_std(), querier.memory_budget());
    let mut roles: Vec<Box<dyn Service>> = vec![Box::new(querier)];
    #[cfg(feature = "sql")]
    roles.push(Box::new(sql));
    let policy = RetentionPolicy {
        retention_ms: cfg.storage.retention.as_millis() as i64,
        deletion_delay_ms: cfg.storage.deletion_delay.as_millis() as i64,
    };
    roles.push(Box::new(RetentionService::new(bucket, blocks, policy)));
    roles
}

fn ring_watcher(cfg: &Config, view: &RingView, channels: &Channels) -> anyhow::Result<Box<dyn Service>> {
    if cfg.ring.join.is_empty() {
        anyhow::bail!("--ring.join must name at least one ingester (host:port of its gRPC address)");
    }
    let watcher = Arc::new(RingWatcher::new(cfg.ring.join.clone(), view.clone(), channels.clone()));
    Ok(Box::new(RingWatcherService::new(watcher)))
}

/// Builds the roles of `target` in start order.
pub async fn build(target: Target, cfg: &Config, registry: &mut Registry) -> anyhow::Result<Vec<Box<dyn Service>>> {
    let view = RingView::new(cfg.ring.heartbeat_timeout.as_millis() as i64);
    let channels = Channels::default();
    let rf = cfg.distributor.replication_factor;
    let roles: Vec<Box<dyn Service>> = match target {
        Target::All => {
            let (bucket, blocks) = open_blocks(cfg, registry)?;
            let ingester = open_ingester(cfg, registry, &bucket, &blocks, host_name())?;
            let pusher: Arc<dyn Pusher> = Arc::new(ingester.clone());
            let mut roles: Vec<Box<dyn Service>> = vec![
                Box::new(IngesterRole::new(ingester.clone(), None)),
                Box::new(Distributor::new(cfg.distributor.clone(), cfg.limits.clone(), pusher, registry)),
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
            vec![watcher, Box::new(Distributor::new(cfg.distributor.clone(), cfg.limits.clone(), pusher, registry))]
        }
        Target::Querier => {
            let watcher = ring_watcher(cfg, &view, &channels)?;
            let (bucket, blocks) = open_blocks(cfg, registry)?;
            let clients = Clients { channels, timeout: cfg.querier.timeout.as_std() };
            // A departed ingester's blocks are seen after the next index refresh.
            let settle = 2 * cfg.storage.bucket_index_refresh_interval.as_millis() as i64;
            let hedge = cfg.querier.ingester_hedge_delay.as_std();
            let recent: Arc<dyn Queryable> = Arc::new(ReplicatedQueryable::new(view, clients, rf, settle, hedge));
            let mut roles: Vec<Box<dyn Service>> = vec![watcher];
            roles.extend(read_roles(cfg, recent, bucket, blocks));
            roles
        }
    };
    Ok(roles)
}
