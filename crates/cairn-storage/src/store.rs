//! The long-term tier as a [`Queryable`]: blocks listed by the bucket
//! index, their footers cached, their rows read selectively.
//!
//! Object storage may be slow or down while the heads still answer, so a
//! query never waits on it longer than it can afford:
//! - a cached bucket index past its refresh interval is used as it is
//!   while a fresh one is read in the background;
//! - reads for a query give up at three quarters of the time the query
//!   has left (its [`ReadContext`] deadline), so that the heads' answer
//!   still arrives in time;
//! - after a failed read, or a wait of a second or more in which nothing
//!   at all was read, queries skip object storage for [`OUTAGE_BACKOFF`]
//!   and fail at once with `Unavailable`, which the querier turns into a
//!   warning on an answer from the heads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cairn_common::executor::{DedicatedExecutor, ExecutorGauges};
use cairn_common::metrics::Registry;
use cairn_common::push::MetricMetadata;
use cairn_common::status::ServiceError;
use cairn_common::storage::{
    LabelsRequest, Queryable, ReadContext, SelectRequest, Series, charge_strings, labels_bytes, merge_series,
};
use cairn_common::{Labels, MatchOp, Matcher, TenantId};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tracing::warn;
use ulid::Ulid;

use crate::block::BlockReader;
use crate::config::StorageConfig;
use crate::index::{self, BucketIndex};
use crate::meta::BlockMeta;
use crate::{Error, Result, paths};

/// Blocks read at once by one query.
const READ_CONCURRENCY: usize = 8;
/// How long queries skip object storage after it failed them.
pub const OUTAGE_BACKOFF: Duration = Duration::from_secs(10);
/// The shortest wait without an answer that counts as an outage.
const MIN_OUTAGE_WAIT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct StoreMetrics {
    cache_bytes: Gauge,
    cache_entries: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_evictions: Counter,
    read_bytes: Counter,
    blocks_queried: Counter,
    index_refresh_failures: Counter,
    reads: ExecutorGauges,
}

impl StoreMetrics {
    fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("cairn_storage");
        r.register(
            "metadata_cache_bytes",
            "Heap bytes of cached block footers and page indexes",
            self.cache_bytes.clone(),
        );
        r.register("metadata_cache_entries", "Blocks whose footer is cached", self.cache_entries.clone());
        r.register("metadata_cache_hits", "Block opens served from the footer cache", self.cache_hits.clone());
        r.register("metadata_cache_misses", "Block opens that fetched the footer", self.cache_misses.clone());
        r.register(
            "metadata_cache_evictions",
            "Footers dropped from the cache to stay under its size",
            self.cache_evictions.clone(),
        );
        r.register(
            "read_bytes",
            "Bytes of block files fetched from object storage by queries",
            self.read_bytes.clone(),
        );
        r.register("blocks_queried", "Blocks read by queries", self.blocks_queried.clone());
        r.register(
            "bucket_index_refresh_failures",
            "Failed reads of a bucket index (the last one read is used meanwhile)",
            self.index_refresh_failures.clone(),
        );
        r.register("block_reads_running", "Block reads in progress", self.reads.running.clone());
        r.register(
            "block_reads_waiting",
            "Block reads waiting for one of --storage.max-concurrent-block-reads",
            self.reads.waiting.clone(),
        );
    }
}

struct CachedReader {
    reader: Arc<BlockReader>,
    bytes: usize,
    last_used: u64,
}

/// Footers by block id, least recently used dropped beyond `limit` bytes.
#[derive(Default)]
struct ReaderCache {
    entries: HashMap<Ulid, CachedReader>,
    bytes: usize,
    clock: u64,
}

struct CachedIndex {
    index: Arc<BucketIndex>,
    fetched: Instant,
    /// A background re-read is running.
    refreshing: bool,
}

struct Inner {
    bucket: Arc<dyn ObjectStore>,
    refresh: Duration,
    cache_limit: usize,
    indexes: Mutex<HashMap<TenantId, CachedIndex>>,
    readers: Mutex<ReaderCache>,
    metrics: StoreMetrics,
    /// Until when queries skip object storage, and why.
    outage: Mutex<Option<(Instant, String)>>,
    /// Where block reads run: decoding pages and matching label columns
    /// is CPU work that must not stall the request runtime.
    executor: DedicatedExecutor,
}

/// Read access to the blocks of every tenant in a bucket. Cheap to clone.
#[derive(Clone)]
pub struct BlockStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BlockStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockStore").field("bucket", &self.inner.bucket).finish()
    }
}

impl BlockStore {
    /// A store over `bucket` configured by `cfg` (footer cache, index
    /// refresh, read threads and slots). Starts the threads that read
    /// blocks.
    pub fn new(bucket: Arc<dyn ObjectStore>, cfg: &StorageConfig, registry: &mut Registry) -> Result<Self> {
        let metrics = StoreMetrics::default();
        metrics.register(registry);
        let executor = DedicatedExecutor::new(
            "cairn-block-read",
            cfg.read_threads,
            cfg.max_concurrent_block_reads,
            metrics.reads.clone(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                bucket,
                refresh: cfg.bucket_index_refresh_interval.as_std(),
                cache_limit: usize::try_from(cfg.metadata_cache_bytes).unwrap_or(usize::MAX),
                indexes: Mutex::new(HashMap::new()),
                readers: Mutex::new(ReaderCache::default()),
                metrics,
                outage: Mutex::new(None),
                executor,
            }),
        })
    }

    pub fn bucket(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.bucket
    }

    /// Bytes of block files fetched so far.
    pub fn read_bytes(&self) -> u64 {
        self.inner.metrics.read_bytes.get()
    }

    /// Tells the store about an index this process just wrote, so that its
    /// blocks are queryable at once.
    pub fn notify(&self, tenant: &TenantId, index: BucketIndex) {
        let mut indexes = self.inner.indexes.lock();
        let newer = indexes.get(tenant).is_none_or(|c| c.index.generation < index.generation);
        if newer {
            indexes.insert(
                tenant.clone(),
                CachedIndex { index: Arc::new(index), fetched: Instant::now(), refreshing: false },
            );
        }
    }

    /// The tenant's bucket index. The first call reads it; later calls
    /// answer from the cache at once, and one past the refresh interval
    /// also starts a re-read in the background. A failed re-read keeps the
    /// last index (and is counted) and is tried again an interval later.
    pub async fn index(&self, tenant: &TenantId) -> Result<Arc<BucketIndex>> {
        let cached = {
            let mut indexes = self.inner.indexes.lock();
            indexes.get_mut(tenant).map(|c| {
                let stale = c.fetched.elapsed() >= self.inner.refresh && !c.refreshing;
                if stale {
                    c.refreshing = true;
                }
                (c.index.clone(), stale)
            })
        };
        match cached {
            Some((index, stale)) => {
                if stale {
                    let (this, tenant) = (self.clone(), tenant.clone());
                    tokio::spawn(async move {
                        let _ = this.read_index(&tenant).await;
                    });
                }
                Ok(index)
            }
            None => self.read_index(tenant).await,
        }
    }

    /// Reads the newest bucket index into the cache.
    async fn read_index(&self, tenant: &TenantId) -> Result<Arc<BucketIndex>> {
        let from = self.inner.indexes.lock().get(tenant).map_or(0, |c| c.index.generation);
        let read = index::read_latest(self.inner.bucket.as_ref(), tenant, from).await;
        let mut indexes = self.inner.indexes.lock();
        match read {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                let entry = indexes.entry(tenant.clone()).or_insert_with(|| CachedIndex {
                    index: fresh.clone(),
                    fetched: Instant::now(),
                    refreshing: false,
                });
                if entry.index.generation <= fresh.generation {
                    entry.index = fresh;
                }
                entry.fetched = Instant::now();
                entry.refreshing = false;
                Ok(entry.index.clone())
            }
            Err(e) => {
                self.inner.metrics.index_refresh_failures.inc();
                if let Some(c) = indexes.get_mut(tenant) {
                    warn!(tenant = %tenant, error = %e, "reading the bucket index failed; using the last one read");
                    c.fetched = Instant::now();
                    c.refreshing = false;
                }
                Err(e)
            }
        }
    }

    /// Fails at once while object storage is known to be failing queries.
    fn check_outage(&self) -> Result<()> {
        let mut outage = self.inner.outage.lock();
        match &*outage {
            Some((until, why)) if Instant::now() < *until => Err(Error::Unavailable(format!(
                "object storage failed a read {:.0?} ago ({why}); queries skip it for {OUTAGE_BACKOFF:?} after a failure",
                OUTAGE_BACKOFF.saturating_sub(until.saturating_duration_since(Instant::now()))
            ))),
            Some(_) => {
                *outage = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn note_outage(&self, why: &str) {
        *self.inner.outage.lock() = Some((Instant::now() + OUTAGE_BACKOFF, why.to_owned()));
    }

    /// The reader of a block, from the cache or by loading its footer.
    async fn reader(&self, tenant: &TenantId, meta: &BlockMeta) -> Result<Arc<BlockReader>> {
        {
            let mut cache = self.inner.readers.lock();
            cache.clock += 1;
            let clock = cache.clock;
            if let Some(e) = cache.entries.get_mut(&meta.id) {
                e.last_used = clock;
                self.inner.metrics.cache_hits.inc();
                return Ok(e.reader.clone());
            }
        }
        self.inner.metrics.cache_misses.inc();
        let read_bytes = self.inner.metrics.read_bytes.clone();
        let counter = Arc::new(move |n: u64| {
            read_bytes.inc_by(n);
        });
        let reader = Arc::new(
            BlockReader::open(self.inner.bucket.clone(), paths::data(tenant, meta.id), meta.bytes, counter).await?,
        );
        let bytes = reader.memory_size();
        let mut cache = self.inner.readers.lock();
        cache.clock += 1;
        let last_used = cache.clock;
        if let Some(old) = cache.entries.insert(meta.id, CachedReader { reader: reader.clone(), bytes, last_used }) {
            cache.bytes -= old.bytes;
        }
        cache.bytes += bytes;
        while cache.bytes > self.inner.cache_limit && cache.entries.len() > 1 {
            let Some((&victim, _)) =
                cache.entries.iter().filter(|(id, _)| **id != meta.id).min_by_key(|(_, e)| e.last_used)
            else {
                break;
            };
            if let Some(e) = cache.entries.remove(&victim) {
                cache.bytes -= e.bytes;
                self.inner.metrics.cache_evictions.inc();
            }
        }
        self.inner.metrics.cache_bytes.set(cache.bytes as i64);
        self.inner.metrics.cache_entries.set(cache.entries.len() as i64);
        Ok(reader)
    }

    /// Drops a block's footer from the cache (the block was deleted).
    pub fn forget(&self, id: Ulid) {
        let mut cache = self.inner.readers.lock();
        if let Some(e) = cache.entries.remove(&id) {
            cache.bytes -= e.bytes;
        }
        self.inner.metrics.cache_bytes.set(cache.bytes as i64);
        self.inner.metrics.cache_entries.set(cache.entries.len() as i64);
    }

    /// Runs `f` on the reader of every live block overlapping `[start, end]`,
    /// a few at a time on the read threads, and returns the answers in
    /// block order. Gives up at three quarters of the time `ctx`'s query
    /// has left, and fails at once during an outage (see the module's
    /// documentation).
    async fn each_block<T, F, Fut>(
        &self,
        tenant: &TenantId,
        start: i64,
        end: i64,
        ctx: Option<&dyn ReadContext>,
        f: F,
    ) -> Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(Arc<BlockReader>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        self.check_outage()?;
        let work = async {
            let index = self.index(tenant).await?;
            let metas: Vec<BlockMeta> = index.live_overlapping(start, end).cloned().collect();
            self.inner.metrics.blocks_queried.inc_by(metas.len() as u64);
            futures::stream::iter(metas)
                .map(|meta| {
                    let (store, tenant, f) = (self.clone(), tenant.clone(), f.clone());
                    let read = async move { f(store.reader(&tenant, &meta).await?).await };
                    async move { self.inner.executor.run(read).await? }
                })
                .buffered(READ_CONCURRENCY)
                .try_collect()
                .await
        };
        let budget = ctx.and_then(|c| c.deadline()).map(|d| d.saturating_duration_since(Instant::now()) * 3 / 4);
        let read_before = self.inner.metrics.read_bytes.get();
        let result = match budget {
            Some(b) => match tokio::time::timeout(b, work).await {
                Ok(r) => r,
                Err(_) => {
                    // The query's own time ran out. That shows object
                    // storage failing only if the wait was long enough to
                    // tell and nothing at all was read from it meanwhile
                    // (by any query): a short timeout or a heavy query
                    // must not turn storage off for everyone.
                    if b >= MIN_OUTAGE_WAIT && self.inner.metrics.read_bytes.get() == read_before {
                        self.note_outage("a read timed out");
                    }
                    return Err(Error::Unavailable(format!(
                        "object storage did not answer within {b:.0?}, three quarters of the time the query had left"
                    )));
                }
            },
            None => work.await,
        };
        if let Err(e) = &result
            && e.is_outage()
        {
            self.note_outage(&e.to_string());
        }
        result
    }

    async fn series_sets(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<BTreeSet<Labels>> {
        let sets = matcher_sets_or_all(req.matcher_sets);
        let (start, end) = (req.start, req.end);
        let mut out = BTreeSet::new();
        for set in sets {
            let set: Arc<[Matcher]> = set.into();
            let answers = self
                .each_block(tenant, start, end, req.ctx.as_deref(), move |r| {
                    let set = set.clone();
                    async move { r.series(&set, start, end).await }
                })
                .await?;
            for labels in answers.into_iter().flatten() {
                if let Some(ctx) = &req.ctx
                    && !out.contains(&labels)
                {
                    ctx.charge(labels_bytes(&labels)).map_err(Error::Limit)?;
                }
                out.insert(labels);
            }
        }
        Ok(out)
    }
}

/// The request's matcher sets, or one that matches every series.
fn matcher_sets_or_all(sets: &[Vec<Matcher>]) -> Vec<Vec<Matcher>> {
    if sets.is_empty() {
        let all = Matcher::new(MatchOp::Regex, cairn_common::labels::METRIC_NAME, ".*").expect("valid regex");
        vec![vec![all]]
    } else {
        sets.to_vec()
    }
}

fn limited<T>(mut v: Vec<T>, limit: usize) -> Vec<T> {
    if limit > 0 {
        v.truncate(limit);
    }
    v
}

#[async_trait]
impl Queryable for BlockStore {
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
        let (start, end, latest) = (req.start, req.end, req.latest_only);
        let (matchers, ctx): (Arc<[Matcher]>, _) = (req.matchers.into(), req.ctx.clone());
        let parts = self
            .each_block(tenant, start, end, req.ctx.as_deref(), move |r| {
                let (matchers, ctx) = (matchers.clone(), ctx.clone());
                async move { r.select(&matchers, start, end, latest, ctx.as_deref()).await }
            })
            .await?;
        merge_series(parts, req)
    }

    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError> {
        Ok(limited(self.series_sets(tenant, req).await?.into_iter().collect(), req.limit))
    }

    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError> {
        let names: BTreeSet<String> = if req.matcher_sets.is_empty() {
            let ctx = req.ctx.clone();
            let answers = self
                .each_block(tenant, req.start, req.end, req.ctx.as_deref(), move |r| {
                    let ctx = ctx.clone();
                    async move {
                        let names = r.label_names().map(str::to_owned).collect::<Vec<_>>();
                        charge_strings(ctx.as_deref(), &names).map_err(Error::Limit)?;
                        Ok(names)
                    }
                })
                .await?;
            answers.into_iter().flatten().collect()
        } else {
            let series = self.series_sets(tenant, req).await?;
            series.iter().flat_map(|l| l.iter().map(|l| l.name.clone())).collect()
        };
        Ok(limited(names.into_iter().collect(), req.limit))
    }

    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError> {
        let has = Matcher::new(MatchOp::Regex, name, ".+").map_err(|e| ServiceError::bad_data(e.to_string()))?;
        let (start, end) = (req.start, req.end);
        let mut values = BTreeSet::new();
        for mut set in matcher_sets_or_all(req.matcher_sets) {
            set.push(has.clone());
            let (set, name, ctx): (Arc<[Matcher]>, Arc<str>, _) = (set.into(), name.into(), req.ctx.clone());
            let answers = self
                .each_block(tenant, start, end, req.ctx.as_deref(), move |r| {
                    let (set, name, ctx) = (set.clone(), name.clone(), ctx.clone());
                    async move {
                        let values = r.label_values(&name, &set, start, end).await?;
                        charge_strings(ctx.as_deref(), &values).map_err(Error::Limit)?;
                        Ok(values)
                    }
                })
                .await?;
            values.extend(answers.into_iter().flatten());
        }
        Ok(limited(values.into_iter().collect(), req.limit))
    }

    async fn metadata(
        &self,
        _tenant: &TenantId,
        _metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError> {
        // Blocks hold samples only; metadata lives in the ingesters.
        Ok(BTreeMap::new())
    }
}
