//! Cairn's ingester: recent samples in memory, backed by a write-ahead log.
//!
//! ```text
//!            Pusher::push / gRPC Push            Queryable::select, labels, series
//!                      │                                   ▲
//!                      ▼                                   │
//!   Ingester ── tenant ──> TenantDb ─┬─ append lock ─> Wal (segments, fsync policy)
//!                                    ├─ Head: series (packed labels, XOR chunks)
//!                                    │        postings index (name -> value -> refs)
//!                                    └─ metadata by metric family
//!   background: fsync every sync interval, checkpoint every checkpoint interval
//! ```
//!
//! Each tenant has its own head and WAL under `<data.dir>/wal/<tenant>/`, so
//! tenants never contend on one lock and can be replayed independently.
//! The ingester never validates label syntax (the distributor does) and never
//! talks to other components: it is reached through [`Pusher`] and
//! [`Queryable`], in process or over gRPC.

mod arrivals;
pub mod checkpoint;
pub mod config;
pub mod db;
#[doc(hidden)]
pub mod fuzz;
pub mod grpc;
pub mod head;
pub mod metrics;
pub mod role;
pub mod shipper;
pub mod wal;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cairn_common::inflight::{Held, InFlight};
use cairn_common::metrics::Registry;
use cairn_common::push::{MetricMetadata, PushBatch, PushOutcome, Pusher, SeriesInput};
use cairn_common::status::{CodedError, ServiceError};
use cairn_common::storage::{LabelsRequest, Queryable, SelectRequest, Series, charge_strings};
use cairn_common::task::catch_panic;
use cairn_common::{ErrorCode, Labels, Shutdown, TenantId};
use parking_lot::{Mutex, RwLock};
use tracing::{error, info, warn};

pub use config::IngesterConfig;
use db::{DbOptions, TenantDb};
use metrics::IngesterMetrics;
use shipper::{BlockSink, Shipper};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Open(#[from] db::OpenError),
    #[error("listing tenants in {dir}: {source}")]
    List { dir: PathBuf, source: std::io::Error },
    #[error("invalid ingester configuration: {0}")]
    Config(String),
}

/// Selects of at most this many series are decoded on the calling task.
const INLINE_SELECT_SERIES: usize = 16;

/// The longest a leaving ingester waits for the pushes it admitted.
const DRAIN_PUSHES: std::time::Duration = std::time::Duration::from_secs(10);

struct Inner {
    cfg: IngesterConfig,
    wal_root: PathBuf,
    tenants: RwLock<HashMap<TenantId, Arc<TenantDb>>>,
    /// Serialises opening a tenant's database (replay) per process.
    opening: Mutex<()>,
    metrics: Arc<IngesterMetrics>,
    ready: AtomicBool,
    /// Set when the ingester leaves a ring: pushes are refused (retryably)
    /// so that the head can be cut whole and handed to object storage.
    leaving: AtomicBool,
    shipper: Option<Arc<Shipper>>,
    /// Pushes admitted and not yet answered.
    in_flight: Arc<InFlight>,
    /// Each tenant's pushes in the order they arrived.
    arrivals: arrivals::Arrivals,
}

/// A cheap-to-clone handle to the ingester of this process.
#[derive(Clone)]
pub struct Ingester {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Ingester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingester").field("wal_root", &self.inner.wal_root).finish()
    }
}

impl Ingester {
    /// An ingester keeping its state under `data_dir`. With a `sink`, it
    /// cuts its heads into blocks and ships them there; without one, the
    /// head only grows (benchmarks, tests of the write path).
    pub fn new(
        cfg: IngesterConfig,
        data_dir: &Path,
        registry: &mut Registry,
        sink: Option<BlockSink>,
    ) -> Result<Self, Error> {
        cfg.validate().map_err(Error::Config)?;
        let shipper = sink.map(|sink| {
            let s = Shipper::new(
                sink,
                data_dir,
                cfg.block_duration.as_millis() as i64,
                cfg.out_of_order_time_window.as_millis() as i64,
            );
            s.metrics.register(registry);
            Arc::new(s)
        });
        let metrics = Arc::new(IngesterMetrics::new(registry));
        let in_flight = InFlight::with_gauges(
            cfg.max_inflight_push_requests,
            0,
            metrics.inflight_push_requests.clone(),
            Default::default(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                wal_root: data_dir.join("wal"),
                tenants: RwLock::new(HashMap::new()),
                opening: Mutex::new(()),
                metrics,
                ready: AtomicBool::new(false),
                leaving: AtomicBool::new(false),
                shipper,
                in_flight,
                arrivals: Default::default(),
            }),
        })
    }

    fn db_options(&self) -> DbOptions {
        let c = &self.inner.cfg;
        DbOptions {
            ooo_window_ms: c.out_of_order_time_window.as_millis() as i64,
            max_series: c.max_series_per_tenant,
            sync_mode: c.wal.sync_mode,
            segment_size: c.wal.segment_size_bytes,
        }
    }

    /// Replays every tenant's checkpoint and WAL found on disk, then marks
    /// the ingester ready. Blocking; run it on a blocking thread.
    pub fn replay_all(&self) -> Result<(), Error> {
        let root = &self.inner.wal_root;
        std::fs::create_dir_all(root).map_err(|source| Error::List { dir: root.clone(), source })?;
        let entries = std::fs::read_dir(root).map_err(|source| Error::List { dir: root.clone(), source })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::List { dir: root.clone(), source })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match TenantId::new(name) {
                Ok(tenant) => {
                    self.open_tenant(&tenant)?;
                }
                Err(e) => {
                    warn!(dir = %entry.path().display(), error = %e, "ignoring a wal folder that is not a tenant id")
                }
            }
        }
        self.inner.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Replays on a blocking thread.
    pub async fn start(&self) -> Result<(), Error> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.replay_all())
            .await
            .map_err(|e| Error::Config(format!("replay task failed: {e}")))?
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// From now on pushes answer 503 ("leaving"): writers count this
    /// replica as failed and their quorum comes from the others. Returns
    /// once the pushes admitted before have finished (at most
    /// [`DRAIN_PUSHES`]), so that a head cut afterwards holds every sample
    /// this ingester acknowledged: a push that saw the flag unset may
    /// still be waiting for its turn or for the append lock.
    pub async fn stop_accepting_writes(&self) {
        // SeqCst on both sides: a push counts itself in flight before it
        // reads the flag, this reads the count after setting it, so one of
        // the two sees the other.
        self.inner.leaving.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + DRAIN_PUSHES;
        while self.inner.in_flight.requests() > 0 {
            if tokio::time::Instant::now() >= deadline {
                warn!(pushes = self.inner.in_flight.requests(), "pushes still running after {DRAIN_PUSHES:?}");
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    fn get_tenant(&self, tenant: &TenantId) -> Option<Arc<TenantDb>> {
        self.inner.tenants.read().get(tenant).cloned()
    }

    fn open_tenant(&self, tenant: &TenantId) -> Result<Arc<TenantDb>, Error> {
        let _guard = self.inner.opening.lock();
        if let Some(db) = self.get_tenant(tenant) {
            return Ok(db);
        }
        let dir = self.inner.wal_root.join(tenant.as_str());
        let db = Arc::new(TenantDb::open(tenant.clone(), &dir, self.db_options(), self.inner.metrics.clone())?);
        self.inner.tenants.write().insert(tenant.clone(), db.clone());
        Ok(db)
    }

    fn tenants(&self) -> Vec<Arc<TenantDb>> {
        self.inner.tenants.read().values().cloned().collect()
    }

    /// Appends a write for a tenant: its series, owned or borrowed from a
    /// request, and metadata. Blocking (WAL I/O).
    fn push_blocking<S: SeriesInput>(
        &self,
        tenant: &TenantId,
        series: impl IntoIterator<Item = S>,
        metadata: &[MetricMetadata],
    ) -> Result<PushOutcome, ServiceError> {
        if !self.is_ready() {
            return Err(ServiceError::new(ErrorCode::Unavailable, "ingester is replaying its write-ahead log"));
        }
        if self.inner.leaving.load(Ordering::SeqCst) {
            return Err(ServiceError::new(ErrorCode::Unavailable, "ingester is leaving the ring"));
        }
        let db = match self.get_tenant(tenant) {
            Some(db) => db,
            None => self.open_tenant(tenant).map_err(|e| {
                error!(tenant = %tenant, error = %e, "opening tenant database failed");
                ServiceError::new(ErrorCode::Internal, format!("opening the tenant's database failed: {e}"))
            })?,
        };
        db.push_series(series, metadata)
    }

    /// Uploads pending blocks and cuts every final block period now; with
    /// `whole_head`, every sample in the heads (before a shutdown that
    /// hands the data over, or to measure blocks).
    pub async fn ship_blocks(&self, whole_head: bool) -> Result<(), ServiceError> {
        match &self.inner.shipper {
            Some(s) => s
                .ship_all(self, whole_head)
                .await
                .map_err(|e| ServiceError::new(e.error_code(), format!("shipping blocks: {e}"))),
            None => Ok(()),
        }
    }

    /// fsyncs every tenant's WAL.
    pub fn sync_all(&self) {
        for db in self.tenants() {
            let error = match catch_panic(|| db.wal().sync()) {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("panicked: {panic}"),
            };
            error!(tenant = %db.tenant, error = %error, "wal fsync failed");
            self.inner.metrics.background_failures.inc();
        }
    }

    /// Checkpoints every tenant that changed since its last checkpoint.
    /// Returns the tenants whose checkpoint failed (their WAL is kept).
    pub fn checkpoint_all(&self) -> Vec<TenantId> {
        let mut failed = Vec::new();
        for db in self.tenants() {
            let error = match catch_panic(|| db.checkpoint()) {
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => e.to_string(),
                Err(panic) => format!("panicked: {panic}"),
            };
            error!(tenant = %db.tenant, error = %error, "checkpoint failed; the wal is kept");
            self.inner.metrics.background_failures.inc();
            failed.push(db.tenant.clone());
        }
        failed
    }

    /// Makes everything written so far durable and compact, now: fsyncs
    /// every WAL and writes a checkpoint of every changed head.
    pub async fn flush(&self) -> Result<(), ServiceError> {
        let this = self.clone();
        let failed = tokio::task::spawn_blocking(move || {
            this.sync_all();
            this.checkpoint_all()
        })
        .await
        .map_err(|e| ServiceError::internal(format!("flush task failed: {e}")))?;
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::internal(format!("checkpoints failed for tenants {failed:?}; see the logs")))
        }
    }

    /// Background duties until shutdown: periodic fsync (interval mode),
    /// periodic checkpoints, the memory gauge. On shutdown, fsyncs every WAL
    /// so that nothing acknowledged depends on the page cache.
    pub async fn run(&self, shutdown: Shutdown) {
        let cfg = &self.inner.cfg;
        let sync_every = match cfg.wal.sync_mode {
            wal::SyncMode::Interval => cfg.wal.sync_interval.as_std(),
            _ => Duration::from_secs(3600 * 24 * 365),
        };
        let checkpoint_every = match cfg.wal.checkpoint_interval.as_std() {
            d if d.is_zero() => Duration::from_secs(3600 * 24 * 365),
            d => d,
        };
        let shipping = self.inner.shipper.clone().map(|s| {
            let (this, shutdown) = (self.clone(), shutdown.clone());
            tokio::spawn(async move { s.run(this, shutdown).await })
        });
        let mut sync_tick = tokio::time::interval(sync_every);
        let mut checkpoint_tick = tokio::time::interval(checkpoint_every);
        let mut memory_tick = tokio::time::interval(Duration::from_secs(60));
        checkpoint_tick.reset();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = sync_tick.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || this.sync_all()).await;
                }
                _ = checkpoint_tick.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || { this.checkpoint_all(); }).await;
                }
                _ = memory_tick.tick() => {
                    let this = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        let bytes: usize = this.tenants().iter().map(|db| db.head().heap_size()).sum();
                        this.inner.metrics.memory_bytes.set(bytes as i64);
                    }).await;
                }
            }
        }
        if let Some(task) = shipping {
            let _ = task.await;
        }
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.sync_all()).await;
        info!("ingester stopped; write-ahead logs synced");
    }

    /// Admits one more push, or refuses it (retryably) over
    /// `--ingester.instance-limits.max-inflight-push-requests`: pushes wait
    /// for append threads, and that queue must not grow without bound.
    fn admit_push(&self) -> Result<Held, ServiceError> {
        self.inner.in_flight.enter().map_err(|_| {
            ServiceError::new(
                ErrorCode::Unavailable,
                format!(
                    "this ingester is handling {} pushes already \
                     (--ingester.instance-limits.max-inflight-push-requests); retry later",
                    self.inner.cfg.max_inflight_push_requests
                ),
            )
            .retry_after(1)
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(Ingester) -> Result<T, ServiceError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(|e| ServiceError::internal(format!("ingester task failed: {e}")))?
    }

    /// A push request as it came over gRPC, decoded off the async runtime
    /// (see `cairn_rpc::codec`).
    ///
    /// Pushes of one tenant append in the order they arrived (see
    /// [`arrivals`]), each decoded in parallel with the others.
    pub async fn push_encoded(&self, request: bytes::Bytes) -> Result<PushOutcome, ServiceError> {
        let _held = self.admit_push()?;
        let ticket = cairn_rpc::codec::push_tenant(&request)
            .filter(|t| TenantId::new(t).is_ok())
            .map(|t| self.inner.arrivals.ticket(t));
        self.blocking(move |ing| {
            let push = cairn_rpc::codec::decode_push_borrowed(&request)?;
            if let Some(t) = &ticket {
                t.wait_turn(arrivals::MAX_WAIT);
            }
            ing.push_blocking(&push.tenant, push.series(), &push.metadata)
        })
        .await
    }

    /// The head chunks of the series a select matches, undecoded (see
    /// [`head::Head::read_chunks`]), as the bytes of a `SelectResponse`:
    /// labels written from the head's own bytes, chunks copied once.
    pub async fn select_encoded(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Bytes, ServiceError> {
        let Some(db) = self.get_tenant(tenant).filter(|db| db.head().may_overlap(req.start, req.end)) else {
            return Ok(Bytes::new());
        };
        let (start, end, max_series, max_samples, latest) =
            (req.start, req.end, req.max_series, req.max_samples, req.latest_only);
        let series = db.head().matching(req.matchers);
        let inline = series.len() <= INLINE_SELECT_SERIES;
        let encode = move || {
            let read = head::Head::read_chunks(series, start, end, max_series, max_samples, latest)?;
            let mut out = Vec::new();
            for (s, chunks) in &read {
                cairn_rpc::codec::encode_chunked_series(s.labels.raw_pairs().map_while(|p| p), chunks, &mut out);
            }
            Ok(Bytes::from(out))
        };
        if inline { encode() } else { self.blocking(move |_| encode()).await }
    }
}

#[async_trait]
impl Pusher for Ingester {
    async fn push(&self, tenant: &TenantId, batch: PushBatch) -> Result<PushOutcome, ServiceError> {
        let _held = self.admit_push()?;
        let tenant = tenant.clone();
        self.blocking(move |ing| ing.push_blocking(&tenant, &batch.series, &batch.metadata)).await
    }
}

#[async_trait]
impl Queryable for Ingester {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let Some(db) = self.get_tenant(tenant).filter(|db| db.head().may_overlap(req.start, req.end)) else {
            return Ok(Vec::new());
        };
        let (start, end, max_series, max_samples, latest) =
            (req.start, req.end, req.max_series, req.max_samples, req.latest_only);
        let budget = req.ctx.clone();
        let series = db.head().matching(req.matchers);
        // Decoding a few series costs less than handing them to a thread.
        if series.len() <= INLINE_SELECT_SERIES {
            return head::Head::read(series, start, end, max_series, max_samples, latest, budget);
        }
        self.blocking(move |_| head::Head::read(series, start, end, max_series, max_samples, latest, budget)).await
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        let Some(db) = self.get_tenant(tenant).filter(|db| db.head().may_overlap(req.start, req.end)) else {
            return Ok(Vec::new());
        };
        let (sets, start, end, limit) = (req.matcher_sets.to_vec(), req.start, req.end, req.limit);
        let ctx = req.ctx.clone();
        self.blocking(move |_| db.head().series_labels(&sets, start, end, limit, ctx.as_deref())).await
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let Some(db) = self.get_tenant(tenant).filter(|db| db.head().may_overlap(req.start, req.end)) else {
            return Ok(Vec::new());
        };
        let (sets, start, end, limit) = (req.matcher_sets.to_vec(), req.start, req.end, req.limit);
        let ctx = req.ctx.clone();
        self.blocking(move |_| {
            let names = db.head().label_names(&sets, start, end, limit);
            charge_strings(ctx.as_deref(), &names)?;
            Ok(names)
        })
        .await
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let Some(db) = self.get_tenant(tenant).filter(|db| db.head().may_overlap(req.start, req.end)) else {
            return Ok(Vec::new());
        };
        let (sets, start, end, limit, name) =
            (req.matcher_sets.to_vec(), req.start, req.end, req.limit, name.to_owned());
        let ctx = req.ctx.clone();
        self.blocking(move |_| {
            let values = db.head().label_values(&name, &sets, start, end, limit);
            charge_strings(ctx.as_deref(), &values)?;
            Ok(values)
        })
        .await
    }

    async fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError> {
        Ok(self.get_tenant(tenant).map(|db| db.metadata(metric)).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use cairn_common::push::PushSeries;
    use cairn_common::{Labels, Sample};
    use cairn_rpc::codec::{EncodedPush, SeriesBuffer, encode_head};

    use super::*;

    /// A leaving ingester waits for the pushes it admitted before it
    /// stopped taking writes: one held back by its turn in the line has
    /// finished (here refused, as it checks the flag after its turn) by the
    /// time `stop_accepting_writes` returns, so no push appends after the
    /// head is cut.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leaving_waits_for_the_pushes_it_admitted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ing =
            Ingester::new(IngesterConfig::default(), dir.path(), &mut Registry::default(), None).expect("ingester");
        ing.replay_all().expect("replay");
        let tenant = TenantId::new("t").expect("tenant");
        let batch = PushBatch {
            series: vec![PushSeries {
                labels: Labels::from_pairs([("__name__", "m")]),
                samples: vec![Sample::new(1, 1.0)],
            }],
            metadata: vec![],
        };
        let mut buf = SeriesBuffer::for_series(&batch.series);
        for s in &batch.series {
            buf.push(s);
        }
        let request = EncodedPush::all(encode_head(&tenant, &[]), buf.finish()).to_bytes();
        // An earlier push that has not finished holds the line.
        let earlier = ing.inner.arrivals.ticket("t");
        let push = tokio::spawn({
            let ing = ing.clone();
            async move { ing.push_encoded(request).await }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while ing.inner.in_flight.requests() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the push is admitted");
        ing.stop_accepting_writes().await;
        assert_eq!(ing.inner.in_flight.requests(), 0, "returned before the admitted push finished");
        drop(earlier);
        let refused = push.await.expect("join").expect_err("it reached the check after the flag");
        assert_eq!(refused.code, ErrorCode::Unavailable);
        assert!(ing.push(&tenant, batch).await.is_err(), "refused once leaving");
    }
}
