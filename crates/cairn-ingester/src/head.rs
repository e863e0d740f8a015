//! The in-memory head of one tenant: series, their chunks and the index.
//!
//! Writers are serialised by the tenant's append lock (held by
//! [`crate::db::TenantDb`]); readers take the index lock shared, clone the
//! `Arc`s of matching series, and copy chunk handles under each series' own
//! short lock. No lock is held while samples are decoded.

pub mod packed;
pub mod postings;
pub mod series;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use cairn_common::chunk::SeriesChunks;
use cairn_common::push::SeriesInput;
use cairn_common::storage::{ReadContext, Series as QuerySeries, series_bytes};
use cairn_common::{ErrorCode, Labels, Matcher, status::ServiceError};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;

use self::packed::PackedLabels;
use self::postings::Index;
pub use self::series::{Admit, Series, SeriesData};

/// Series lookup and index, guarded together.
#[derive(Debug, Default)]
struct HeadIndex {
    /// Series by ref; `None` where a ref was never used or was dropped.
    series: Vec<Option<Arc<Series>>>,
    /// Labels hash -> ref. A second series with the same hash (a 64-bit
    /// collision) goes to `collisions`.
    /// (The keys are XXH3 hashes already: FxHash only spreads them.)
    by_hash: FxHashMap<u64, u32>,
    collisions: FxHashMap<u64, Vec<u32>>,
    postings: Index,
    num_series: usize,
}

impl HeadIndex {
    /// The series under `hash` whose labels `same` accepts.
    fn find(&self, hash: u64, same: impl Fn(&PackedLabels) -> bool) -> Option<&Arc<Series>> {
        let r = *self.by_hash.get(&hash)?;
        let s = self.get(r)?;
        if same(&s.labels) {
            return Some(s);
        }
        self.collisions.get(&hash)?.iter().filter_map(|r| self.get(*r)).find(|s| same(&s.labels))
    }

    fn get(&self, r: u32) -> Option<&Arc<Series>> {
        self.series.get(r as usize)?.as_ref()
    }

    fn insert(&mut self, hash: u64, series: Arc<Series>) {
        let r = series.series_ref;
        match self.by_hash.get(&hash) {
            None => {
                self.by_hash.insert(hash, r);
            }
            Some(_) => self.collisions.entry(hash).or_default().push(r),
        }
        self.postings.add(r, series.labels.pairs().map_while(|p| p));
        let slot = r as usize;
        if self.series.len() <= slot {
            self.series.resize(slot + 1, None);
        }
        self.series[slot] = Some(series);
        self.num_series += 1;
    }
}

/// The head of one tenant.
#[derive(Debug)]
pub struct Head {
    index: RwLock<HeadIndex>,
    next_ref: AtomicU64,
    samples_in_memory: AtomicU64,
    /// Oldest and newest sample time the head may hold: never narrower
    /// than the truth (widened before samples are applied, narrowed only
    /// by truncation), so that a query outside them can skip the head.
    min_t: AtomicI64,
    max_t: AtomicI64,
}

impl Default for Head {
    fn default() -> Self {
        Self::new()
    }
}

impl Head {
    pub fn new() -> Self {
        Self {
            index: RwLock::new(HeadIndex::default()),
            next_ref: AtomicU64::new(0),
            samples_in_memory: AtomicU64::new(0),
            min_t: AtomicI64::new(i64::MAX),
            max_t: AtomicI64::new(i64::MIN),
        }
    }

    pub fn num_series(&self) -> usize {
        self.index.read().num_series
    }

    /// Finds the series with these labels.
    pub fn get(&self, hash: u64, labels: &Labels) -> Option<Arc<Series>> {
        self.index.read().find(hash, |p| p.equals(labels)).cloned()
    }

    /// Finds the series of a write's entry, without owning its labels.
    pub fn get_input(&self, hash: u64, series: &impl SeriesInput) -> Option<Arc<Series>> {
        self.index.read().find(hash, |p| p.equals_pairs(series.label_pairs())).cloned()
    }

    pub fn get_by_ref(&self, r: u32) -> Option<Arc<Series>> {
        self.index.read().get(r).cloned()
    }

    /// Creates a series. With `with_ref`, it takes that ref (WAL replay), and
    /// an existing series under that ref with the same labels is returned
    /// instead; otherwise a fresh ref is allocated. Returns the series and
    /// whether it was created.
    pub fn create(
        &self,
        hash: u64,
        labels: &Labels,
        with_ref: Option<u32>,
    ) -> Result<(Arc<Series>, bool), ServiceError> {
        let mut ix = self.index.write();
        if let Some(s) = ix.find(hash, |p| p.equals(labels)) {
            return Ok((s.clone(), false));
        }
        let r = match with_ref {
            Some(r) => {
                if ix.get(r).is_some() {
                    return Err(ServiceError::internal(format!("series ref {r} is already taken by other labels")));
                }
                self.next_ref.fetch_max(u64::from(r) + 1, Ordering::Relaxed);
                r
            }
            None => {
                let r = self.next_ref.fetch_add(1, Ordering::Relaxed);
                u32::try_from(r).map_err(|_| {
                    ServiceError::new(ErrorCode::TooManyRequests, "tenant exhausted the head's series refs")
                })?
            }
        };
        let series = Arc::new(Series {
            series_ref: r,
            labels: PackedLabels::new(labels),
            data: Default::default(),
            logged: Default::default(),
        });
        ix.insert(hash, series.clone());
        Ok((series, true))
    }

    pub fn add_samples_in_memory(&self, n: u64) {
        self.samples_in_memory.fetch_add(n, Ordering::Relaxed);
    }

    pub fn samples_in_memory(&self) -> u64 {
        self.samples_in_memory.load(Ordering::Relaxed)
    }

    /// Every series, in ref order (for checkpoints).
    pub fn all_series(&self) -> Vec<Arc<Series>> {
        self.index.read().series.iter().flatten().cloned().collect()
    }

    /// Widens the head's known time range to cover `[lo, hi]`; call before
    /// samples in that range become visible.
    pub fn note_times(&self, lo: i64, hi: i64) {
        self.min_t.fetch_min(lo, Ordering::AcqRel);
        self.max_t.fetch_max(hi, Ordering::AcqRel);
    }

    /// Whether the head may hold samples in `[start, end]`: false only when
    /// it surely holds none (a cheap check, no lock).
    pub fn may_overlap(&self, start: i64, end: i64) -> bool {
        self.min_t.load(Ordering::Acquire) <= end && self.max_t.load(Ordering::Acquire) >= start
    }

    /// Sets the known time range from the series themselves (after replay
    /// and truncation).
    pub fn refresh_times(&self) {
        let (lo, hi) = self.time_bounds().unwrap_or((i64::MAX, i64::MIN));
        self.min_t.store(lo, Ordering::Release);
        self.max_t.store(hi, Ordering::Release);
    }

    /// The oldest and newest sample timestamps in the head (walks every
    /// series).
    pub fn time_bounds(&self) -> Option<(i64, i64)> {
        let mut bounds: Option<(i64, i64)> = None;
        for s in self.all_series() {
            let data = s.data.lock();
            if let (Some(lo), Some(hi)) = (data.min_time(), data.max_time()) {
                bounds = Some(bounds.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
        bounds
    }

    /// Drops every sample older than `cut`, and the series left without
    /// samples. The caller holds the tenant's append lock, so no append
    /// races with the removal of a series. Returns the samples and series
    /// dropped.
    pub fn truncate(&self, cut: i64) -> (u64, usize) {
        let mut dropped = 0;
        let mut emptied = Vec::new();
        for s in self.all_series() {
            let mut data = s.data.lock();
            if data.min_time().is_some_and(|t| t < cut) {
                dropped += data.truncate_before(cut);
            }
            if data.is_empty() {
                emptied.push(s.series_ref);
            }
        }
        if !emptied.is_empty() {
            let mut ix = self.index.write();
            for &r in &emptied {
                let Some(s) = ix.series[r as usize].take() else { continue };
                let hash = s.labels.to_labels().hash64();
                if ix.by_hash.get(&hash) == Some(&r) {
                    ix.by_hash.remove(&hash);
                    // A colliding series takes over the primary slot.
                    if let Some(list) = ix.collisions.get_mut(&hash)
                        && let Some(next) = list.pop()
                    {
                        ix.by_hash.insert(hash, next);
                    }
                } else if let Some(list) = ix.collisions.get_mut(&hash) {
                    list.retain(|x| *x != r);
                }
                if ix.collisions.get(&hash).is_some_and(Vec::is_empty) {
                    ix.collisions.remove(&hash);
                }
                ix.num_series -= 1;
            }
            // Postings are rebuilt rather than edited: this runs once per
            // block period, and rebuilding keeps every list sorted.
            let mut postings = Index::default();
            for s in ix.series.iter().flatten() {
                postings.add(s.series_ref, s.labels.pairs().map_while(|p| p));
            }
            ix.postings = postings;
        }
        self.samples_in_memory.fetch_sub(dropped.min(self.samples_in_memory()), Ordering::Relaxed);
        // The caller holds the append lock: no sample arrives meanwhile.
        self.refresh_times();
        (dropped, emptied.len())
    }

    /// Series matching all `matchers` (index lookups only).
    pub fn matching(&self, matchers: &[Matcher]) -> Vec<Arc<Series>> {
        let ix = self.index.read();
        ix.postings.select(matchers).into_iter().filter_map(|r| ix.get(r).cloned()).collect()
    }

    /// Series matching all `matchers` with samples in `[start, end]`,
    /// sorted by labels. Fails once `max_series` or `max_samples` (0 = no
    /// limit) would be exceeded.
    pub fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
        max_series: usize,
        max_samples: usize,
    ) -> Result<Vec<QuerySeries>, ServiceError> {
        Self::read(self.matching(matchers), start, end, max_series, max_samples, false, None)
    }

    /// What a read of `[start, end]` needs of one series, copied out under
    /// its lock: chunk handles, or with `latest_only` and a newest sample
    /// inside the range, just that sample (kept decoded: no chunk to read).
    fn copy_out(s: &Series, start: i64, end: i64, latest_only: bool) -> SeriesChunks {
        let data = s.data.lock();
        match data.last() {
            Some((t, v)) if latest_only && t <= end => SeriesChunks {
                chunks: Vec::new(),
                samples: if t >= start { vec![cairn_common::Sample::new(t, v)] } else { Vec::new() },
            },
            _ => data.snapshot(start, end),
        }
    }

    /// The samples in `[start, end]` of `series` (see [`Head::select`]);
    /// with `latest_only`, just the newest of them.
    pub fn read(
        series: Vec<Arc<Series>>,
        start: i64,
        end: i64,
        max_series: usize,
        max_samples: usize,
        latest_only: bool,
        budget: Option<Arc<dyn ReadContext>>,
    ) -> Result<Vec<QuerySeries>, ServiceError> {
        let mut out = Vec::new();
        let mut total_samples = 0usize;
        for s in series {
            let mut samples = Vec::new();
            Self::copy_out(&s, start, end, latest_only).decode_into(start, end, &mut samples);
            if latest_only && samples.len() > 1 {
                samples.drain(..samples.len() - 1);
            }
            if samples.is_empty() {
                continue;
            }
            if let Some(b) = &budget {
                b.charge(series_bytes(samples.len()))?;
            }
            total_samples += samples.len();
            check_limits(out.len() + 1, total_samples, max_series, max_samples)?;
            out.push(QuerySeries { labels: s.labels.to_labels(), samples });
        }
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }

    /// The chunks holding `[start, end]` of `series`, undecoded, for a
    /// reader in another process, in label order. The sample limit is
    /// checked against the samples certainly in the range (the reader
    /// applies it exactly), so it never refuses a read that fits.
    pub fn read_chunks(
        series: Vec<Arc<Series>>,
        start: i64,
        end: i64,
        max_series: usize,
        max_samples: usize,
        latest_only: bool,
    ) -> Result<Vec<(Arc<Series>, SeriesChunks)>, ServiceError> {
        let mut out = Vec::new();
        let mut total_samples = 0usize;
        for s in series {
            let chunks = Self::copy_out(&s, start, end, latest_only);
            if chunks.chunks.is_empty() && chunks.samples.is_empty() {
                continue;
            }
            total_samples = total_samples.saturating_add(chunks.surely_within(start, end).min(if latest_only {
                1
            } else {
                usize::MAX
            }));
            check_limits(out.len() + 1, total_samples, max_series, max_samples)?;
            out.push((s, chunks));
        }
        out.sort_by(|a, b| a.0.labels.cmp_labels(&b.0.labels));
        Ok(out)
    }

    /// Refs of series matching any matcher set (all series for no sets)
    /// with samples overlapping `[start, end]`.
    fn matching_sets(&self, sets: &[Vec<Matcher>], start: i64, end: i64) -> Vec<Arc<Series>> {
        let candidates: Vec<Arc<Series>> = if sets.is_empty() {
            self.index.read().series.iter().flatten().cloned().collect()
        } else {
            let ix = self.index.read();
            let refs = postings::union(
                sets.iter().map(|m| ix.postings.select(m)).collect::<Vec<_>>().iter().map(Vec::as_slice),
            );
            refs.into_iter().filter_map(|r| ix.get(r).cloned()).collect()
        };
        candidates.into_iter().filter(|s| s.data.lock().overlaps(start, end)).collect()
    }

    /// Label sets of the matching series, sorted. `ctx` is charged for
    /// each copied, so a lookup of everything stops at the query memory
    /// limit.
    pub fn series_labels(
        &self,
        sets: &[Vec<Matcher>],
        start: i64,
        end: i64,
        limit: usize,
        ctx: Option<&dyn ReadContext>,
    ) -> Result<Vec<Labels>, ServiceError> {
        let matching = self.matching_sets(sets, start, end);
        let mut out: Vec<Labels> = Vec::with_capacity(matching.len());
        for s in matching {
            if let Some(c) = ctx {
                c.charge(series_bytes(0).saturating_add(s.labels.heap_size()))?;
            }
            out.push(s.labels.to_labels());
        }
        out.sort();
        truncate(&mut out, limit);
        Ok(out)
    }

    pub fn label_names(&self, sets: &[Vec<Matcher>], start: i64, end: i64, limit: usize) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        for s in self.matching_sets(sets, start, end) {
            for (n, _) in s.labels.pairs().map_while(|p| p) {
                if !names.contains(n) {
                    names.insert(n.to_owned());
                }
            }
        }
        let mut out: Vec<String> = names.into_iter().collect();
        truncate(&mut out, limit);
        out
    }

    pub fn label_values(&self, name: &str, sets: &[Vec<Matcher>], start: i64, end: i64, limit: usize) -> Vec<String> {
        let mut values = std::collections::BTreeSet::new();
        if sets.is_empty() {
            // Straight from the index: a value counts if any of its series
            // has samples in range.
            let ix = self.index.read();
            for (v, refs) in ix.postings.values(name) {
                let live = refs.iter().filter_map(|r| ix.get(*r)).any(|s| s.data.lock().overlaps(start, end));
                if live {
                    values.insert(v.to_owned());
                }
            }
        } else {
            for s in self.matching_sets(sets, start, end) {
                if let Some(v) = s.labels.get(name)
                    && !values.contains(v)
                {
                    values.insert(v.to_owned());
                }
            }
        }
        let mut out: Vec<String> = values.into_iter().collect();
        truncate(&mut out, limit);
        out
    }

    /// Approximate heap bytes of the head (index, labels, chunks).
    pub fn heap_size(&self) -> usize {
        let ix = self.index.read();
        let mut n =
            ix.postings.heap_size() + ix.series.capacity() * 8 + ix.by_hash.capacity() * 16 + ix.collisions.len() * 48;
        for s in ix.series.iter().flatten() {
            n += size_of::<Series>() + 16 + s.labels.heap_size() + s.data.lock().heap_size();
        }
        n
    }
}

fn truncate<T>(v: &mut Vec<T>, limit: usize) {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
    }
}

/// Fails once a read holds more series or samples than allowed (0 = no
/// limit).
fn check_limits(series: usize, samples: usize, max_series: usize, max_samples: usize) -> Result<(), ServiceError> {
    if max_samples > 0 && samples > max_samples {
        return Err(ServiceError::new(
            ErrorCode::TooManyRequests,
            format!("the query would load more than {max_samples} samples from the head"),
        ));
    }
    if max_series > 0 && series > max_series {
        return Err(ServiceError::new(
            ErrorCode::TooManyRequests,
            format!("the query would select more than {max_series} series"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_common::MatchOp;

    #[test]
    fn creates_finds_and_selects_series() {
        let head = Head::new();
        let a = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let (sa, created) = head.create(a.hash64(), &a, None).expect("create");
        assert!(created);
        let (again, created) = head.create(a.hash64(), &a, None).expect("create");
        assert!(!created);
        assert_eq!(again.series_ref, sa.series_ref);
        let (sb, _) = head.create(b.hash64(), &b, None).expect("create");
        sa.data.lock().append(1000, 1.0);
        sb.data.lock().append(1000, 2.0);
        sb.data.lock().append(2000, 3.0);
        let m = [Matcher::new(MatchOp::Equal, "__name__", "up").expect("m")];
        let got = head.select(&m, 0, 1500, 0, 0).expect("select");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].labels, b, "sorted by labels");
        assert_eq!(got[0].samples.len(), 1);
        assert!(head.select(&m, 0, 5000, 1, 0).is_err(), "series limit");
        assert!(head.select(&m, 0, 5000, 0, 2).is_err(), "sample limit");
        assert_eq!(head.label_values("job", &[], 0, 5000, 0), vec!["a", "b"]);
        assert_eq!(head.label_values("job", &[], 1500, 5000, 0), vec!["a"], "time-filtered");
        assert_eq!(head.label_names(&[m.to_vec()], 0, 5000, 1), vec!["__name__"]);
        assert_eq!(head.series_labels(&[], 0, 5000, 0, None).expect("labels"), vec![b, a]);
    }

    #[test]
    fn latest_only_reads_the_newest_sample_in_range() {
        let head = Head::new();
        let l = Labels::from_pairs([("__name__", "x")]);
        let (s, _) = head.create(l.hash64(), &l, None).expect("create");
        for t in 0..300 {
            s.data.lock().append(t * 10, t as f64);
        }
        let read = |start, end| {
            let got = Head::read(vec![s.clone()], start, end, 0, 0, true, None).expect("read");
            got.into_iter().flat_map(|x| x.samples).map(|x| (x.t, x.v)).collect::<Vec<_>>()
        };
        assert_eq!(read(0, 5000), vec![(2990, 299.0)], "from the kept newest sample");
        assert_eq!(read(0, 1234), vec![(1230, 123.0)], "decoded when the range ends earlier");
        assert_eq!(read(3000, 4000), vec![], "nothing in range");
    }

    #[test]
    fn replay_keeps_refs() {
        let head = Head::new();
        let a = Labels::from_pairs([("__name__", "x")]);
        let (s, _) = head.create(a.hash64(), &a, Some(7)).expect("create");
        assert_eq!(s.series_ref, 7);
        let b = Labels::from_pairs([("__name__", "y")]);
        let (s, _) = head.create(b.hash64(), &b, None).expect("create");
        assert_eq!(s.series_ref, 8, "new refs continue after the highest replayed one");
        assert!(head.create(a.hash64(), &Labels::from_pairs([("__name__", "z")]), Some(7)).is_err());
    }
}
