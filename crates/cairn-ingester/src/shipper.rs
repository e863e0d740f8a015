//! Cuts the head into blocks and ships them to object storage.
//!
//! ```text
//!  every tick, per tenant:
//!   1. pending blocks in <data.dir>/blocks/<tenant>/<id>/ (oldest first):
//!        upload data.parquet, then meta.json, then add to the bucket index
//!        -> truncate the head below the block's end, checkpoint, delete the
//!           local copy
//!   2. when the head holds a whole block period [start, end) that can no
//!      longer change (newest sample >= end + grace, or end <= the minimum
//!      valid time after a restart), or on request the whole head:
//!        min valid time := end (durable; older samples are refused)
//!        write the period's series to <id>.tmp/, fsync, rename to <id>/
//!        -> step 1
//! ```
//!
//! Nothing leaves the head or the WAL before its block is in the bucket
//! index, so a storage outage only makes the head (and WAL) grow; uploads
//! are retried with backoff. A block id is chosen once, when its local copy
//! is written: a retried or resumed upload rewrites the same objects and
//! the index entry is added once, so data never appears twice.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_common::ErrorCode;
use cairn_common::status::CodedError;
use cairn_common::task::catch_panic_async;
use cairn_common::{Labels, Sample, Shutdown, TenantId};
use cairn_storage::block::{BlockWriter, WriteOptions, row_order};
use cairn_storage::index::{self, BucketIndex};
use cairn_storage::meta::{BlockMeta, FORMAT_VERSION};
use cairn_storage::paths;
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};
use ulid::Ulid;

use crate::Ingester;
use crate::db::TenantDb;

/// Hears of each bucket index the shipper writes.
pub type IndexListener = Arc<dyn Fn(&TenantId, BucketIndex) + Send + Sync>;

/// Where blocks go and who hears of them.
#[derive(Clone)]
pub struct BlockSink {
    pub bucket: Arc<dyn ObjectStore>,
    /// Called with each bucket index this ingester writes, so that an
    /// in-process querier sees new blocks at once.
    pub notify: IndexListener,
    /// Recorded in each block's `source` field.
    pub source: String,
}

impl std::fmt::Debug for BlockSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockSink").field("bucket", &self.bucket).field("source", &self.source).finish()
    }
}

#[derive(Debug, Default)]
pub struct ShipperMetrics {
    pub blocks_cut: Counter,
    pub blocks_uploaded: Counter,
    pub upload_failures: Counter,
    pub tenant_failures: Counter,
    pub blocks_pending: Gauge,
    pub last_upload_seconds: Gauge,
}

impl ShipperMetrics {
    pub fn register(&self, registry: &mut cairn_common::metrics::Registry) {
        let r = registry.sub_registry_with_prefix("cairn_ingester");
        r.register("blocks_cut", "Blocks written from the head to the local disk", self.blocks_cut.clone());
        r.register("blocks_uploaded", "Blocks uploaded to object storage and indexed", self.blocks_uploaded.clone());
        r.register(
            "block_upload_failures",
            "Failed block uploads (each is retried; the head keeps the data meanwhile)",
            self.upload_failures.clone(),
        );
        r.register(
            "shipping_tenant_failures",
            "Shipping rounds that failed for one tenant (an error or a panic on its data); the others carry on",
            self.tenant_failures.clone(),
        );
        r.register("blocks_pending_upload", "Blocks written locally and not yet uploaded", self.blocks_pending.clone());
        r.register(
            "last_block_upload_timestamp_seconds",
            "Unix time of the last successful block upload",
            self.last_upload_seconds.clone(),
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("local block files: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] cairn_storage::Error),
    #[error("object storage: {0}")]
    Object(#[from] object_store::Error),
    #[error("block metadata: {0}")]
    Json(#[from] serde_json::Error),
    #[error("shipping panicked: {0}")]
    Panic(String),
}

impl CodedError for ShipError {
    fn error_code(&self) -> ErrorCode {
        match self {
            // Object storage failing is retryable; a local disk or a bug
            // is the ingester's fault.
            ShipError::Object(_) => ErrorCode::Unavailable,
            ShipError::Storage(e) => e.error_code(),
            ShipError::Io(_) | ShipError::Json(_) | ShipError::Panic(_) => ErrorCode::Internal,
        }
    }
}

/// The block shipping state of one ingester.
pub struct Shipper {
    sink: BlockSink,
    staging: PathBuf,
    block_ms: i64,
    grace_ms: i64,
    opts: WriteOptions,
    pub metrics: ShipperMetrics,
    /// Newest bucket index generation written or read per tenant, so index
    /// updates start from it instead of listing.
    generations: Mutex<std::collections::HashMap<TenantId, u64>>,
    /// One round at a time (the background loop and `/ingester/flush`).
    round: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper").field("staging", &self.staging).field("block_ms", &self.block_ms).finish()
    }
}

/// The block period containing `t` (saturating at `i64::MIN`, which no
/// stored timestamp comes near).
pub fn period_start(t: i64, block_ms: i64) -> i64 {
    t.div_euclid(block_ms).saturating_mul(block_ms)
}

impl Shipper {
    pub fn new(sink: BlockSink, data_dir: &Path, block_ms: i64, ooo_window_ms: i64) -> Self {
        Self {
            sink,
            staging: data_dir.join("blocks"),
            block_ms,
            // A period is final once samples that far past its end arrive:
            // half a period (as Prometheus waits before compacting its
            // head), or the out-of-order window when that is longer.
            grace_ms: (block_ms / 2).max(ooo_window_ms),
            opts: WriteOptions::default(),
            metrics: ShipperMetrics::default(),
            generations: Mutex::new(Default::default()),
            round: tokio::sync::Mutex::new(()),
        }
    }

    fn tenant_dir(&self, tenant: &TenantId) -> PathBuf {
        self.staging.join(tenant.as_str())
    }

    /// Local blocks of a tenant waiting for upload, oldest first (see
    /// [`pending_blocks`]), listed on the blocking pool.
    async fn pending(&self, tenant: &TenantId) -> std::io::Result<Vec<PathBuf>> {
        let dir = self.tenant_dir(tenant);
        blocking_io(move || pending_blocks(&dir)).await
    }

    /// Tenants with local blocks, whether or not their head is open.
    async fn tenants_with_pending(&self) -> Vec<TenantId> {
        let staging = self.staging.clone();
        blocking_io(move || {
            let Ok(entries) = std::fs::read_dir(&staging) else { return Ok(Vec::new()) };
            Ok(entries.filter_map(|e| e.ok()?.file_name().to_str().and_then(|n| TenantId::new(n).ok())).collect())
        })
        .await
        .unwrap_or_default()
    }

    /// One round over every tenant: upload what is pending, cut what is
    /// final. Errors are per tenant; the first is returned after all
    /// tenants had their turn.
    /// With `whole_head`, every sample in the heads is cut, the current
    /// period up to its newest sample (see [`Shipper::next_period`]).
    pub async fn ship_all(&self, ingester: &Ingester, whole_head: bool) -> Result<(), ShipError> {
        let _round = self.round.lock().await;
        let mut tenants = self.tenants_with_pending().await;
        tenants.extend(ingester.tenants().into_iter().map(|db| db.tenant.clone()));
        tenants.sort();
        tenants.dedup();
        let mut first_err = None;
        let mut pending = 0;
        for tenant in tenants {
            let db = ingester.get_tenant(&tenant);
            // One tenant's failure, even a panic on its data, must not stop
            // the others' shipping.
            let result = match catch_panic_async(self.ship(&tenant, db.as_ref(), whole_head)).await {
                Ok(r) => r,
                Err(panic) => Err(ShipError::Panic(panic)),
            };
            if let Err(e) = result {
                warn!(tenant = %tenant, error = %e, "shipping blocks failed; the head keeps the data and it is retried");
                self.metrics.tenant_failures.inc();
                first_err.get_or_insert(e);
            }
            pending += self.pending(&tenant).await.map(|p| p.len()).unwrap_or(0);
        }
        self.metrics.blocks_pending.set(pending as i64);
        first_err.map_or(Ok(()), Err)
    }

    async fn ship(&self, tenant: &TenantId, db: Option<&Arc<TenantDb>>, whole_head: bool) -> Result<(), ShipError> {
        for dir in self.pending(tenant).await? {
            self.upload(tenant, db, &dir).await?;
        }
        let Some(db) = db else { return Ok(()) };
        while let Some((start, end)) = self.next_period(db, whole_head) {
            // From here on the period cannot change.
            let db2 = db.clone();
            tokio::task::spawn_blocking(move || db2.set_min_valid_time(end))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            let (db2, dir, opts, source) =
                (db.clone(), self.tenant_dir(tenant), self.opts.clone(), self.sink.source.clone());
            let written = tokio::task::spawn_blocking(move || write_period(&db2, start, end, &dir, &opts, &source))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
            match written {
                Some(dir) => {
                    self.metrics.blocks_cut.inc();
                    self.upload(tenant, Some(db), &dir).await?;
                }
                None => {
                    // Nothing in the period (only out-of-order stragglers
                    // below the previous cut): just drop it from the head.
                    let db2 = db.clone();
                    tokio::task::spawn_blocking(move || db2.truncate_head(end))
                        .await
                        .map_err(|e| std::io::Error::other(e.to_string()))??;
                }
            }
        }
        Ok(())
    }

    /// The oldest block period in the head that is final, as `[start,
    /// end)`, if any. With `whole_head`, the period holding the newest
    /// sample counts as final up to that sample: it is cut short at
    /// `newest + 1`, which becomes the minimum valid time, and the rest of
    /// the period is cut later as a block of its own. Writes of newer
    /// samples go on meanwhile.
    fn next_period(&self, db: &TenantDb, whole_head: bool) -> Option<(i64, i64)> {
        let (lo, hi) = db.head().time_bounds()?;
        let start = period_start(lo, self.block_ms);
        let end = start.saturating_add(self.block_ms);
        if end <= db.min_valid_time() || hi >= end.saturating_add(self.grace_ms) {
            Some((start, end))
        } else if whole_head {
            Some((start, end.min(hi.saturating_add(1))))
        } else {
            None
        }
    }

    /// Uploads a local block (idempotently), indexes it, truncates the head
    /// and removes the local copy.
    async fn upload(&self, tenant: &TenantId, db: Option<&Arc<TenantDb>>, dir: &Path) -> Result<(), ShipError> {
        let started = Instant::now();
        let meta: BlockMeta = serde_json::from_slice(&tokio::fs::read(dir.join("meta.json")).await?)?;
        let bucket = &self.sink.bucket;
        let result: Result<BucketIndex, ShipError> = async {
            let mut file = tokio::fs::File::open(dir.join("data.parquet")).await?;
            let mut w = BufWriter::new(bucket.clone(), paths::data(tenant, meta.id));
            if let Err(e) = tokio::io::copy(&mut file, &mut w).await {
                let _ = w.abort().await;
                return Err(e.into());
            }
            w.shutdown().await?;
            bucket.put(&paths::meta(tenant, meta.id), serde_json::to_vec_pretty(&meta)?.into()).await?;
            let known = self.generations.lock().get(tenant).copied().unwrap_or(0);
            let idx = index::update(bucket, tenant, known, |idx| {
                if !idx.contains(meta.id) {
                    idx.blocks.push(meta.clone());
                }
            })
            .await?;
            Ok(idx)
        }
        .await;
        let idx = match result {
            Ok(idx) => idx,
            Err(e) => {
                self.metrics.upload_failures.inc();
                return Err(e);
            }
        };
        self.generations.lock().insert(tenant.clone(), idx.generation);
        (self.sink.notify)(tenant, idx);
        self.metrics.blocks_uploaded.inc();
        self.metrics.last_upload_seconds.set(cairn_common::time::now_ms() / 1000);
        info!(
            tenant = %tenant,
            block = %meta.id,
            series = meta.series,
            samples = meta.samples,
            bytes = meta.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "uploaded block"
        );
        if let Some(db) = db {
            let (db, cut) = (db.clone(), meta.max_time.saturating_add(1));
            tokio::task::spawn_blocking(move || db.truncate_head(cut))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        tokio::fs::remove_dir_all(dir).await?;
        Ok(())
    }

    /// Ships until shutdown, backing off after failures.
    pub async fn run(&self, ingester: Ingester, shutdown: Shutdown) {
        let tick = Duration::from_millis((self.block_ms / 8).clamp(1_000, 30_000) as u64);
        let mut failures = 0u32;
        loop {
            let wait = if failures == 0 { tick } else { Duration::from_secs(1 << failures.min(5)) };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            if !ingester.is_ready() {
                continue;
            }
            match self.ship_all(&ingester, false).await {
                Ok(()) => failures = 0,
                Err(_) => failures += 1,
            }
        }
    }
}

/// Writes the head's samples in `[start, end)` as a block in `dir/<id>/`;
/// `None` when the period holds no sample.
/// Local blocks in `dir` waiting for upload, oldest first. Leftover
/// temporary directories (a crash mid-write) are removed: their period is
/// still in the head and is cut again.
fn pending_blocks(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".tmp") {
            std::fs::remove_dir_all(&path)?;
        } else if name.parse::<Ulid>().is_ok() {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Runs file-system work on the blocking pool.
async fn blocking_io<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| std::io::Error::other(e.to_string()))?
}

#[allow(clippy::disallowed_methods, reason = "fsyncs; callers run it on the blocking pool")]
fn write_period(
    db: &TenantDb,
    start: i64,
    end: i64,
    dir: &Path,
    opts: &WriteOptions,
    source: &str,
) -> Result<Option<PathBuf>, ShipError> {
    let mut series: Vec<(Labels, Arc<crate::head::Series>)> = db
        .head()
        .all_series()
        .into_iter()
        .filter(|s| s.data.lock().overlaps(start, end - 1))
        .map(|s| (s.labels.to_labels(), s))
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    series.sort_by(|a, b| row_order(&a.0, &b.0));
    let mut names: Vec<String> = series.iter().flat_map(|(l, _)| l.iter().map(|l| l.name.clone())).collect();
    names.sort();
    names.dedup();

    let id = Ulid::new();
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{id}.tmp"));
    std::fs::create_dir_all(&tmp)?;
    let file = std::fs::File::create(tmp.join("data.parquet"))?;
    let mut w = BlockWriter::new(std::io::BufWriter::new(file), &id.to_string(), names, opts)?;
    let mut samples: Vec<Sample> = Vec::new();
    for (labels, s) in &series {
        let snap = s.data.lock().snapshot(start, end - 1);
        snap.decode_into(start, end - 1, &mut samples);
        w.append(labels, &samples)?;
    }
    let stats = w.finish()?;
    if stats.series == 0 {
        std::fs::remove_dir_all(&tmp)?;
        return Ok(None);
    }
    let data = std::fs::File::open(tmp.join("data.parquet"))?;
    data.sync_all()?;
    let meta = BlockMeta {
        id,
        tenant: db.tenant.to_string(),
        min_time: stats.min_time,
        max_time: stats.max_time,
        series: stats.series,
        samples: stats.samples,
        bytes: data.metadata()?.len(),
        format_version: FORMAT_VERSION,
        source: source.to_owned(),
        compaction_level: 1,
    };
    {
        let mut f = std::fs::File::create(tmp.join("meta.json"))?;
        std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(&meta)?)?;
        f.sync_all()?;
    }
    let done = dir.join(id.to_string());
    std::fs::rename(&tmp, &done)?;
    std::fs::File::open(dir)?.sync_all()?;
    info!(tenant = %db.tenant, block = %id, start, end, series = meta.series, samples = meta.samples, bytes = meta.bytes, "cut block");
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Block periods of any timestamp, even ones no stored sample has.
        #[test]
        fn periods_of_any_time(t in proptest::prelude::any::<i64>(), block in 1i64..i64::MAX) {
            let start = period_start(t, block);
            proptest::prop_assert!(start <= t);
            if start > i64::MIN {
                proptest::prop_assert!(i128::from(t) - i128::from(start) < i128::from(block));
            }
        }
    }
}
