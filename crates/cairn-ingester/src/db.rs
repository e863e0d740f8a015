//! One tenant's database: its head, its WAL, its metadata, and the append
//! path that ties them together.
//!
//! ```text
//!  push(batch) ── append lock ──────────────────────────────────────────┐
//!    1. resolve or create series (new ones get WAL series records)      │
//!    2. admit each sample: in order / out-of-order window / duplicate / │
//!       rejected                                                        │
//!    3. one write(2) of series + samples + metadata records to the WAL  │
//!    4. apply admitted samples to the head's chunks                     │
//!  ─────────────────────────────────────────────────────────────────────┘
//!    5. with sync mode `always`: wait for an fsync covering step 3
//! ```
//!
//! Step 3 before step 4 is what makes an acknowledgement safe: anything a
//! client was told is stored can be rebuilt from the WAL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use cairn_common::push::{MetricMetadata, PushBatch, PushOutcome, RejectReason, Rejection, SeriesInput};
use cairn_common::status::ServiceError;
use cairn_common::time::{MAX_SAMPLE_TIME_MS, MIN_SAMPLE_TIME_MS, format_ms, is_storable};
use cairn_common::{ErrorCode, TenantId};
use parking_lot::{Mutex, RwLock};
use rustc_hash::{FxHashMap, FxHashSet};
use tracing::{info, warn};

use crate::checkpoint::{self, Restored};
use crate::head::{Admit, Head, Series};
use crate::metrics::IngesterMetrics;
use crate::wal::record::{self, DecodeError};
use crate::wal::{self, Position, SyncMode, Wal, frame::put_record};

/// Most distinct metadata entries kept per metric family.
const MAX_METADATA_PER_METRIC: usize = 10;

/// Settings a tenant database needs from the ingester configuration.
#[derive(Clone, Debug)]
pub struct DbOptions {
    pub ooo_window_ms: i64,
    pub max_series: usize,
    pub sync_mode: SyncMode,
    pub segment_size: u64,
}

/// Reusable buffers of the append path, guarded by the append lock.
#[derive(Default)]
struct Scratch {
    new_series: Vec<Arc<Series>>,
    admitted: Vec<(u32, i64, f64)>,
    /// Per entry of the batch: its series and the range of `admitted` rows.
    plan: Vec<(Arc<Series>, usize, usize, bool)>,
    /// Newest admitted in-order sample per series ref within this batch.
    pending: FxHashMap<u32, (i64, f64)>,
    /// Series of this batch queued for a WAL record although they exist.
    relogged: FxHashSet<u32>,
    wal: Vec<u8>,
    body: Vec<u8>,
}

pub struct TenantDb {
    pub tenant: TenantId,
    head: Head,
    wal: Wal,
    opts: DbOptions,
    append: Mutex<Scratch>,
    metadata: RwLock<BTreeMap<String, Vec<MetricMetadata>>>,
    metrics: Arc<IngesterMetrics>,
    /// WAL position of the last checkpoint's cut, to skip idle checkpoints.
    last_checkpoint: Mutex<Option<Position>>,
    /// Samples older than this are refused: their block period was cut.
    /// Persisted in `min-valid-time` so that it survives restarts.
    min_valid_time: AtomicI64,
}

const MIN_VALID_TIME_FILE: &str = "min-valid-time";

fn read_min_valid_time(dir: &Path) -> std::io::Result<i64> {
    match std::fs::read_to_string(dir.join(MIN_VALID_TIME_FILE)) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{MIN_VALID_TIME_FILE}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(i64::MIN),
        Err(e) => Err(e),
    }
}

impl std::fmt::Debug for TenantDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDb").field("tenant", &self.tenant).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening wal in {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
}

impl TenantDb {
    /// Opens a tenant's database, replaying its checkpoint and WAL.
    pub fn open(
        tenant: TenantId,
        dir: &Path,
        opts: DbOptions,
        metrics: Arc<IngesterMetrics>,
    ) -> Result<Self, OpenError> {
        let io = |source| OpenError::Io { dir: dir.to_owned(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let started = Instant::now();
        let head = Head::new();
        let mut metadata = BTreeMap::new();

        // 1. The newest checkpoint that loads.
        let mut from_segment = 0;
        let mut dropped_samples = 0u64;
        let checkpoints = checkpoint::list(dir).map_err(io)?;
        for &n in checkpoints.iter().rev() {
            let file = checkpoint::path(dir, n);
            let loaded = checkpoint::load(&file, |item| match item {
                Restored::Series(s) => {
                    let labels = s.labels.to_labels();
                    let mut data = s.data;
                    let mut samples = s.samples;
                    // Samples outside the storable range (acknowledged by
                    // versions that did not check) are dropped here.
                    let n = data.retain_within(MIN_SAMPLE_TIME_MS, MAX_SAMPLE_TIME_MS);
                    samples = samples.saturating_sub(n);
                    dropped_samples += n;
                    match head.create(labels.hash64(), &labels, Some(s.series_ref)) {
                        Ok((series, _)) => {
                            *series.data.lock() = data;
                            series.logged.store(true, Ordering::Relaxed);
                            head.add_samples_in_memory(samples);
                        }
                        Err(e) => warn!(tenant = %tenant, error = %e, "skipped a checkpointed series"),
                    }
                }
                Restored::Metadata(md) => merge_metadata(&mut metadata, md),
            });
            match loaded {
                Ok(stats) => {
                    info!(tenant = %tenant, checkpoint = n, series = stats.series, bytes = stats.bytes, "loaded checkpoint");
                    from_segment = n;
                    break;
                }
                Err(e) => {
                    warn!(tenant = %tenant, checkpoint = n, error = %e, "ignoring a checkpoint that does not load");
                    metrics.wal_corruptions.inc();
                }
            }
        }

        // 2. The segments after it.
        let mut series_buf = Vec::new();
        let mut samples_buf = Vec::new();
        let mut md_buf = Vec::new();
        let mut replayed_samples = 0u64;
        let stats = wal::replay(dir, from_segment, |body| -> Result<(), DecodeError> {
            match body[0] {
                record::SERIES => {
                    series_buf.clear();
                    record::decode_series(body, &mut series_buf)?;
                    for (r, packed) in series_buf.drain(..) {
                        let labels = packed.to_labels();
                        match head.create(labels.hash64(), &labels, Some(r)) {
                            Ok((series, _)) => series.logged.store(true, Ordering::Relaxed),
                            Err(e) => warn!(tenant = %tenant, error = %e, "skipped a wal series record"),
                        }
                    }
                }
                record::SAMPLES => {
                    samples_buf.clear();
                    record::decode_samples(body, &mut samples_buf)?;
                    for &(r, t, v) in &samples_buf {
                        if !is_storable(t) {
                            dropped_samples += 1;
                            continue;
                        }
                        let Some(series) = head.get_by_ref(r) else { continue };
                        let mut data = series.data.lock();
                        // Whatever is logged was accepted once; only samples
                        // already restored (from the checkpoint) are skipped.
                        match data.admit(data.last(), t, v, i64::MAX) {
                            Admit::InOrder => {
                                data.append(t, v);
                            }
                            Admit::OutOfOrder => data.insert_ooo(t, v),
                            Admit::Duplicate | Admit::Reject(_) => continue,
                        }
                        replayed_samples += 1;
                    }
                }
                record::METADATA => {
                    md_buf.clear();
                    record::decode_metadata(body, &mut md_buf)?;
                    merge_metadata(&mut metadata, md_buf.drain(..));
                }
                _ => return Err(DecodeError("unknown")),
            }
            Ok(())
        })
        .map_err(io)?;
        head.add_samples_in_memory(replayed_samples);
        head.refresh_times();
        if stats.truncated_at.is_some() || stats.quarantined_segments > 0 {
            metrics.wal_corruptions.inc();
        }
        if dropped_samples > 0 {
            warn!(
                tenant = %tenant,
                samples = dropped_samples,
                "dropped samples outside the storable time range (1970 to 9999) found in the wal or checkpoint"
            );
            metrics.replay_dropped_samples.inc_by(dropped_samples);
        }
        let wal = Wal::open(dir, opts.segment_size).map_err(io)?;
        let min_valid_time = read_min_valid_time(dir).map_err(io)?;
        let num_series = head.num_series();
        metrics.tenant_series(&tenant).set(num_series as i64);
        info!(
            tenant = %tenant,
            series = num_series,
            samples = replayed_samples,
            segments = stats.segments,
            bytes = stats.bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed wal"
        );
        Ok(Self {
            tenant,
            head,
            wal,
            opts,
            append: Mutex::new(Scratch::default()),
            metadata: RwLock::new(metadata),
            metrics,
            last_checkpoint: Mutex::new(None),
            min_valid_time: AtomicI64::new(min_valid_time),
        })
    }

    pub fn min_valid_time(&self) -> i64 {
        self.min_valid_time.load(Ordering::Acquire)
    }

    /// Refuses samples older than `t` from now on (durably). Taken under
    /// the append lock: once this returns, no append older than `t` is in
    /// flight, so a block cut below `t` is final.
    #[allow(clippy::disallowed_methods, reason = "fsyncs; callers run it on the blocking pool")]
    pub fn set_min_valid_time(&self, t: i64) -> std::io::Result<()> {
        let _guard = self.append.lock();
        if t <= self.min_valid_time() {
            return Ok(());
        }
        let dir = self.wal.dir();
        let tmp = dir.join(format!("{MIN_VALID_TIME_FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, t.to_string().as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(MIN_VALID_TIME_FILE))?;
        std::fs::File::open(dir)?.sync_all()?;
        self.min_valid_time.store(t, Ordering::Release);
        Ok(())
    }

    /// Drops head samples older than `cut` (they are in an uploaded block)
    /// and the series left empty, then checkpoints so that a restart does
    /// not bring them back from the WAL.
    pub fn truncate_head(&self, cut: i64) -> std::io::Result<(u64, usize)> {
        let dropped = {
            let _guard = self.append.lock();
            self.head.truncate(cut)
        };
        self.metrics.tenant_series(&self.tenant).set(self.head.num_series() as i64);
        *self.last_checkpoint.lock() = None;
        self.checkpoint()?;
        Ok(dropped)
    }

    pub fn head(&self) -> &Head {
        &self.head
    }

    pub fn wal(&self) -> &Wal {
        &self.wal
    }

    /// Appends a validated batch. Accepted samples are in the WAL (and, in
    /// `always` mode, on disk) when this returns Ok.
    pub fn push(&self, batch: &PushBatch) -> Result<PushOutcome, ServiceError> {
        self.push_series(&batch.series, &batch.metadata)
    }

    /// [`TenantDb::push`] of series owned or borrowed from a request.
    pub fn push_series<S: SeriesInput>(
        &self,
        entries: impl IntoIterator<Item = S>,
        metadata: &[MetricMetadata],
    ) -> Result<PushOutcome, ServiceError> {
        let mut outcome = PushOutcome::default();
        let mut rejected: BTreeMap<RejectReason, (u64, String)> = BTreeMap::new();
        let mut reject = |reason: RejectReason, n: u64, msg: &dyn Fn() -> String| {
            let e = rejected.entry(reason).or_insert_with(|| (0, msg()));
            e.0 += n;
        };
        let pos;
        let mut created_series = 0u64;
        {
            let mut guard = self.append.lock();
            let sc = &mut *guard;
            sc.new_series.clear();
            sc.admitted.clear();
            sc.plan.clear();
            sc.pending.clear();
            sc.relogged.clear();
            let min_valid_time = self.min_valid_time();

            // Steps 1 and 2.
            for entry in entries {
                let samples = entry.samples();
                if samples.is_empty() {
                    continue;
                }
                let hash = entry.labels_hash();
                let series = match self.head.get_input(hash, &entry) {
                    Some(s) => {
                        // Created by a batch whose WAL write failed: log it now.
                        if !s.logged.load(Ordering::Relaxed) && sc.relogged.insert(s.series_ref) {
                            sc.new_series.push(s.clone());
                        }
                        s
                    }
                    None => {
                        if self.opts.max_series > 0 && self.head.num_series() >= self.opts.max_series {
                            let max = self.opts.max_series;
                            reject(RejectReason::SeriesLimit, samples.len() as u64, &|| {
                                format!(
                                    "per-tenant series limit of {max} reached, series {} rejected (raise -ingester.max-series-per-tenant)",
                                    entry.describe()
                                )
                            });
                            continue;
                        }
                        let (s, created) = self.head.create(hash, &entry.to_labels()?, None)?;
                        if created {
                            sc.new_series.push(s.clone());
                            created_series += 1;
                        }
                        s
                    }
                };
                let start = sc.admitted.len();
                let mut has_ooo = false;
                {
                    let data = series.data.lock();
                    let mut last = sc.pending.get(&series.series_ref).copied().or_else(|| data.last());
                    for s in samples {
                        if !is_storable(s.t) {
                            reject(RejectReason::OutOfBounds, 1, &|| {
                                format!(
                                    "sample at {}ms is outside the timestamps Cairn stores ({} to {}), series {}",
                                    s.t,
                                    format_ms(MIN_SAMPLE_TIME_MS),
                                    format_ms(MAX_SAMPLE_TIME_MS),
                                    entry.describe()
                                )
                            });
                            continue;
                        }
                        if s.t < min_valid_time {
                            reject(RejectReason::TooOld, 1, &|| {
                                format!(
                                    "sample at {} is older than {min_valid_time}, the start of the period not yet written to a block, series {}",
                                    s.t,
                                    entry.describe()
                                )
                            });
                            continue;
                        }
                        match data.admit(last, s.t, s.v, self.opts.ooo_window_ms) {
                            Admit::InOrder => {
                                sc.admitted.push((series.series_ref, s.t, s.v));
                                last = Some((s.t, s.v));
                            }
                            Admit::OutOfOrder => {
                                // Two out-of-order samples with one timestamp in
                                // one batch: keep the first.
                                let dup = sc.admitted[start..].iter().any(|a| a.1 == s.t);
                                if !dup {
                                    sc.admitted.push((series.series_ref, s.t, s.v));
                                    has_ooo = true;
                                }
                            }
                            Admit::Duplicate => {}
                            Admit::Reject(reason) => {
                                reject(reason, 1, &|| describe(reason, &entry.describe(), s.t, last))
                            }
                        }
                    }
                    if let Some(l) = last {
                        sc.pending.insert(series.series_ref, l);
                    }
                }
                if sc.admitted.len() > start {
                    sc.plan.push((series, start, sc.admitted.len(), has_ooo));
                }
            }

            // Step 3: one WAL write for the whole batch.
            let new_metadata = self.new_metadata(metadata);
            sc.wal.clear();
            if !sc.new_series.is_empty() {
                sc.body.clear();
                record::encode_series(&mut sc.body, sc.new_series.iter().map(|s| (s.series_ref, &s.labels)));
                put_record(&mut sc.wal, &sc.body);
            }
            if !sc.admitted.is_empty() {
                sc.body.clear();
                record::encode_samples(&mut sc.body, &sc.admitted);
                put_record(&mut sc.wal, &sc.body);
            }
            if !new_metadata.is_empty() {
                sc.body.clear();
                record::encode_metadata(&mut sc.body, &new_metadata);
                put_record(&mut sc.wal, &sc.body);
            }
            pos = if sc.wal.is_empty() {
                None
            } else {
                let p = self.wal.log(&sc.wal).map_err(|e| {
                    self.metrics.wal_write_failures.inc();
                    warn!(tenant = %self.tenant, error = %e, "wal write failed");
                    ServiceError::new(ErrorCode::Internal, format!("writing the wal failed: {e}"))
                })?;
                self.metrics.wal_bytes.inc_by(sc.wal.len() as u64);
                for s in &sc.new_series {
                    s.logged.store(true, Ordering::Relaxed);
                }
                Some(p)
            };

            // Step 4. Queries skip heads outside their known time range:
            // widen it before the samples become visible.
            if let (Some(lo), Some(hi)) = (sc.admitted.iter().map(|a| a.1).min(), sc.admitted.iter().map(|a| a.1).max())
            {
                self.head.note_times(lo, hi);
            }
            for (series, start, end, has_ooo) in &sc.plan {
                let mut data = series.data.lock();
                for &(_, t, v) in &sc.admitted[*start..*end] {
                    if *has_ooo && data.last().is_some_and(|(lt, _)| t <= lt) {
                        data.insert_ooo(t, v);
                    } else {
                        data.append(t, v);
                    }
                }
            }
            if !new_metadata.is_empty() {
                merge_metadata(&mut self.metadata.write(), new_metadata);
            }
            outcome.samples_appended = sc.admitted.len() as u64;
            outcome.series_created = created_series;
        }

        // Step 5, outside the append lock so that other writers can join
        // the same fsync.
        if let (Some(p), SyncMode::Always) = (pos, self.opts.sync_mode) {
            let started = Instant::now();
            self.wal
                .sync_through(p)
                .map_err(|e| ServiceError::new(ErrorCode::Internal, format!("syncing the wal failed: {e}")))?;
            self.metrics.wal_fsync_duration.observe(started.elapsed().as_secs_f64());
        }

        self.head.add_samples_in_memory(outcome.samples_appended);
        let m = &self.metrics;
        m.tenant_samples(&self.tenant).inc_by(outcome.samples_appended);
        if outcome.series_created > 0 {
            m.tenant_series(&self.tenant).set(self.head.num_series() as i64);
            m.series_created.inc_by(outcome.series_created);
        }
        for (reason, (n, message)) in rejected {
            m.rejected(&self.tenant, reason).inc_by(n);
            outcome.rejections.push(Rejection { reason, samples: n, message });
        }
        Ok(outcome)
    }

    /// Metadata entries not yet known, de-duplicated.
    fn new_metadata(&self, md: &[MetricMetadata]) -> Vec<MetricMetadata> {
        if md.is_empty() {
            return Vec::new();
        }
        let known = self.metadata.read();
        let mut out: Vec<MetricMetadata> =
            md.iter().filter(|m| !known.get(&m.metric_family).is_some_and(|v| v.contains(m))).cloned().collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn metadata(&self, metric: Option<&str>) -> BTreeMap<String, Vec<MetricMetadata>> {
        let md = self.metadata.read();
        match metric {
            Some(name) => md.get(name).map(|v| (name.to_owned(), v.clone())).into_iter().collect(),
            None => md.clone(),
        }
    }

    /// Writes a checkpoint if anything was logged since the last one, then
    /// deletes what it supersedes. Runs on a blocking thread.
    pub fn checkpoint(&self) -> std::io::Result<Option<checkpoint::CheckpointStats>> {
        let now = self.wal.current();
        if *self.last_checkpoint.lock() == Some(now) {
            return Ok(None);
        }
        // The cut must not interleave with an append (see checkpoint.rs).
        let n = {
            let _guard = self.append.lock();
            self.wal.cut()?
        };
        let started = Instant::now();
        let md: Vec<MetricMetadata> = self.metadata.read().values().flatten().cloned().collect();
        let stats = checkpoint::write(self.wal.dir(), n, &self.head, &md)?;
        let removed = self.wal.remove_segments_before(n)?;
        for old in checkpoint::list(self.wal.dir())? {
            if old < n {
                std::fs::remove_file(checkpoint::path(self.wal.dir(), old))?;
            }
        }
        *self.last_checkpoint.lock() = Some(self.wal.current());
        self.metrics.checkpoint_duration.observe(started.elapsed().as_secs_f64());
        info!(
            tenant = %self.tenant,
            checkpoint = n,
            series = stats.series,
            bytes = stats.bytes,
            removed_segments = removed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "wrote checkpoint"
        );
        Ok(Some(stats))
    }
}

fn merge_metadata(store: &mut BTreeMap<String, Vec<MetricMetadata>>, md: impl IntoIterator<Item = MetricMetadata>) {
    for m in md {
        let entries = store.entry(m.metric_family.clone()).or_default();
        if !entries.contains(&m) {
            if entries.len() >= MAX_METADATA_PER_METRIC {
                entries.remove(0);
            }
            entries.push(m);
        }
    }
}

fn describe(reason: RejectReason, labels: &str, t: i64, last: Option<(i64, f64)>) -> String {
    let last_t = last.map(|l| l.0).unwrap_or_default();
    match reason {
        RejectReason::OutOfOrder => {
            format!(
                "out of order sample: timestamp {t} is older than the series' newest sample at {last_t}, series {labels}"
            )
        }
        RejectReason::DuplicateTimestamp => {
            format!("duplicate sample for timestamp {t} with a different value, series {labels}")
        }
        RejectReason::TooOld => {
            format!(
                "sample at {t} is older than the out-of-order window allows (newest sample at {last_t}), series {labels}"
            )
        }
        RejectReason::SeriesLimit => format!("series limit reached, series {labels}"),
        RejectReason::OutOfBounds => format!("sample at {t}ms is outside the storable time range, series {labels}"),
    }
}

#[cfg(test)]
mod tests;
