//! The read side: what the PromQL engine and the query API need from any
//! storage tier (the ingesters' heads now, blocks later).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::chunk::SeriesChunks;
use crate::push::MetricMetadata;
use crate::status::ServiceError;
use crate::{Labels, Matcher, Sample, TenantId};

/// One series with its samples in `[start, end]`, sorted by time, no
/// duplicate timestamps. Staleness markers are included.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

/// The query a read serves, as storage sees it: what it may still hold,
/// when it must answer, and where partial answers are noted.
pub trait ReadContext: Send + Sync + std::fmt::Debug {
    /// Charges `bytes` about to be held. A storage calls it for each series
    /// it materialises, before reading further, so that a query over its
    /// memory limit stops while reading rather than after. Fails (naming
    /// the limit's flag) when that would exceed the limit.
    fn charge(&self, _bytes: usize) -> Result<(), ServiceError> {
        Ok(())
    }

    /// When the query must have answered, if it must.
    fn deadline(&self) -> Option<std::time::Instant> {
        None
    }

    /// Notes that the answer is partial, and why (a tier could not be
    /// read); the query's answer carries it as a warning.
    fn warn(&self, _message: String) {}
}

/// Bytes a series read for a query holds: its samples and some overhead.
pub fn series_bytes(samples: usize) -> usize {
    96usize.saturating_add(samples.saturating_mul(16))
}

/// Bytes a label set copied out of storage holds on the heap.
pub fn labels_bytes(l: &Labels) -> usize {
    l.iter().map(|x| 48usize.saturating_add(x.name.len()).saturating_add(x.value.len())).sum()
}

/// Charges `ctx` (if any) for label names or values a lookup copied out.
pub fn charge_strings(ctx: Option<&dyn ReadContext>, strings: &[String]) -> Result<(), ServiceError> {
    match ctx {
        Some(c) => c.charge(strings.iter().map(|s| 24usize.saturating_add(s.len())).sum()),
        None => Ok(()),
    }
}

/// A request for raw samples.
#[derive(Clone, Debug)]
pub struct SelectRequest<'a> {
    /// All must match (an empty slice matches nothing).
    pub matchers: &'a [Matcher],
    /// Inclusive bounds in milliseconds.
    pub start: i64,
    pub end: i64,
    /// Refuse (with `TooManyRequests`) once more series than this would be
    /// returned; 0 = no limit.
    pub max_series: usize,
    /// Refuse once more samples than this would be returned; 0 = no limit.
    pub max_samples: usize,
    /// Only the newest sample in `[start, end]` of each series is needed
    /// (an instant selector evaluated at one time); a storage may return
    /// just that one.
    pub latest_only: bool,
    /// The query's context (see [`ReadContext`]); none = unmetered, no
    /// deadline.
    pub ctx: Option<Arc<dyn ReadContext>>,
}

impl<'a> SelectRequest<'a> {
    /// Every sample of the series `matchers` match: all time, no limits,
    /// no context.
    pub fn whole(matchers: &'a [Matcher]) -> Self {
        Self { matchers, start: i64::MIN, end: i64::MAX, max_series: 0, max_samples: 0, latest_only: false, ctx: None }
    }

    /// Charges the context, if any, for a series of `samples` samples.
    pub fn charge(&self, samples: usize) -> Result<(), ServiceError> {
        match &self.ctx {
            Some(c) => c.charge(series_bytes(samples)),
            None => Ok(()),
        }
    }
}

/// A request for series, label names or label values: series matching any
/// of the matcher sets (all series when there are none) with samples in
/// `[start, end]`.
#[derive(Clone, Debug)]
pub struct LabelsRequest<'a> {
    pub matcher_sets: &'a [Vec<Matcher>],
    pub start: i64,
    pub end: i64,
    /// Stop after this many results; 0 = no limit.
    pub limit: usize,
    /// The lookup's context (see [`ReadContext`]).
    pub ctx: Option<Arc<dyn ReadContext>>,
}

/// Read access to one tier of storage.
#[async_trait]
pub trait Queryable: Send + Sync + 'static {
    /// Series matching all matchers, sorted by labels.
    async fn select(&self, tenant: &TenantId, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError>;

    /// Label sets of the matching series, sorted.
    async fn series(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<Labels>, ServiceError>;

    /// Label names of the matching series, sorted.
    async fn label_names(&self, tenant: &TenantId, req: &LabelsRequest<'_>) -> Result<Vec<String>, ServiceError>;

    /// Values of label `name` on the matching series, sorted.
    async fn label_values(
        &self,
        tenant: &TenantId,
        name: &str,
        req: &LabelsRequest<'_>,
    ) -> Result<Vec<String>, ServiceError>;

    /// Metadata by metric family, optionally for one metric only.
    async fn metadata(
        &self,
        tenant: &TenantId,
        metric: Option<&str>,
    ) -> Result<BTreeMap<String, Vec<MetricMetadata>>, ServiceError>;
}

/// Merges the answers of several selects (tiers, blocks, replicas) into one:
/// series with the same labels become one, their samples sorted by time
/// with duplicate timestamps kept once (the first answer's sample wins).
/// With `latest_only`, each series keeps only its newest sample. Applies
/// the request's series and sample limits to the merged result.
pub fn merge_series(parts: Vec<Vec<Series>>, req: &SelectRequest<'_>) -> Result<Vec<Series>, ServiceError> {
    let mut parts: Vec<Vec<Series>> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    let sorted = |p: &Vec<Series>| p.windows(2).all(|w| w[0].labels < w[1].labels);
    let mut out: Vec<Series> = if parts.len() == 1 {
        parts.pop().unwrap_or_default()
    } else if parts.iter().all(sorted) {
        // Answers sorted by labels (replicas, tiers): merged pairwise in
        // one pass each, no map.
        let mut merged = Vec::new();
        for part in parts {
            merged = merge_sorted_parts(merged, part);
        }
        merged
    } else {
        let mut by_labels: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        for part in parts {
            for s in part {
                match by_labels.entry(s.labels) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(s.samples);
                    }
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        let merged = merge_samples(std::mem::take(e.get_mut()), s.samples);
                        *e.get_mut() = merged;
                    }
                }
            }
        }
        by_labels.into_iter().map(|(labels, samples)| Series { labels, samples }).collect()
    };
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    if req.latest_only {
        for s in &mut out {
            if s.samples.len() > 1 {
                s.samples.drain(..s.samples.len() - 1);
            }
        }
    }
    check_limits(&out, req)?;
    Ok(out)
}

/// Fails when `out` holds more series or samples than `req` allows.
pub fn check_limits(out: &[Series], req: &SelectRequest<'_>) -> Result<(), ServiceError> {
    if req.max_series > 0 && out.len() > req.max_series {
        return Err(ServiceError::new(
            crate::ErrorCode::TooManyRequests,
            format!("the query would select more than {} series", req.max_series),
        ));
    }
    let samples: usize = out.iter().map(|s| s.samples.len()).sum();
    if req.max_samples > 0 && samples > req.max_samples {
        return Err(ServiceError::new(
            crate::ErrorCode::TooManyRequests,
            format!("the query would load more than {} samples", req.max_samples),
        ));
    }
    Ok(())
}

/// The chunked answers of a store's replicas as series: a series' chunks
/// that several replicas hold byte for byte (replicas that received the
/// same samples cut the same chunks) are decoded once; the rest are
/// decoded and merged, the first answer's sample winning on a timestamp.
/// Applies `latest_only`, charges the request for every decoded series,
/// and checks its limits.
pub fn decode_replicas(
    parts: Vec<Vec<(Labels, SeriesChunks)>>,
    req: &SelectRequest<'_>,
) -> Result<Vec<Series>, ServiceError> {
    let out = decode_copies(group_replicas(parts), req.start, req.end, req.latest_only, req.ctx.as_deref())?;
    check_limits(&out, req)?;
    Ok(out)
}

/// One series as the replicas that hold it answered, the earliest answer
/// first.
#[derive(Debug)]
pub struct Copies {
    labels: Labels,
    first: SeriesChunks,
    others: Vec<SeriesChunks>,
}

impl Copies {
    /// A measure of the work decoding takes, in chunks at most: every
    /// chunk, and loose samples (an older ingester sends only those) as
    /// full chunks would hold them.
    pub fn work(&self) -> usize {
        let per = usize::from(crate::chunk::TARGET_SAMPLES_PER_CHUNK);
        [&self.first].into_iter().chain(&self.others).map(|c| c.chunks.len() + c.samples.len().div_ceil(per)).sum()
    }
}

/// The answers of replicas (each sorted by labels, or sorted here) grouped
/// by series, in label order.
pub fn group_replicas(mut parts: Vec<Vec<(Labels, SeriesChunks)>>) -> Vec<Copies> {
    for p in &mut parts {
        if !p.windows(2).all(|w| w[0].0 < w[1].0) {
            p.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }
    let mut pos = vec![0usize; parts.len()];
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).max().unwrap_or(0));
    loop {
        // The answer whose next series sorts first (the earliest answer
        // of those that hold it).
        let mut first: Option<usize> = None;
        for i in 0..parts.len() {
            if pos[i] < parts[i].len() && first.is_none_or(|f| parts[i][pos[i]].0 < parts[f][pos[f]].0) {
                first = Some(i);
            }
        }
        let Some(f) = first else { return out };
        let (labels, chunks) = std::mem::take(&mut parts[f][pos[f]]);
        pos[f] += 1;
        let mut others = Vec::new();
        for i in f + 1..parts.len() {
            if pos[i] < parts[i].len() && parts[i][pos[i]].0 == labels {
                others.push(std::mem::take(&mut parts[i][pos[i]].1));
                pos[i] += 1;
            }
        }
        out.push(Copies { labels, first: chunks, others });
    }
}

/// Decodes grouped copies into series with samples in `[start, end]`
/// (only the newest with `latest_only`), charging `ctx` for each.
pub fn decode_copies(
    groups: Vec<Copies>,
    start: i64,
    end: i64,
    latest_only: bool,
    ctx: Option<&dyn ReadContext>,
) -> Result<Vec<Series>, ServiceError> {
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let mut samples = decode_series_copies(&g.first, &g.others, start, end);
        if latest_only && samples.len() > 1 {
            samples.drain(..samples.len() - 1);
        }
        if samples.is_empty() {
            continue;
        }
        if let Some(c) = ctx {
            c.charge(series_bytes(samples.len()))?;
        }
        out.push(Series { labels: g.labels, samples });
    }
    Ok(out)
}

/// The samples in `[start, end]` of one series as several replicas hold
/// it; what `others` share with `first` byte for byte is not decoded again.
fn decode_series_copies(first: &SeriesChunks, others: &[SeriesChunks], start: i64, end: i64) -> Vec<Sample> {
    let mut out = Vec::new();
    first.decode_into(start, end, &mut out);
    let same_loose = |o: &SeriesChunks| {
        o.samples.len() == first.samples.len()
            && o.samples.iter().zip(&first.samples).all(|(a, b)| a.t == b.t && a.v.to_bits() == b.v.to_bits())
    };
    for o in others {
        let rest = SeriesChunks {
            chunks: o.chunks.iter().filter(|c| !first.chunks.contains(c)).cloned().collect(),
            samples: if same_loose(o) { Vec::new() } else { o.samples.clone() },
        };
        if rest.chunks.is_empty() && rest.samples.is_empty() {
            continue;
        }
        let mut more = Vec::new();
        rest.decode_into(start, end, &mut more);
        out = merge_samples(out, more);
    }
    out
}

/// Two series lists, each sorted by labels without repeats, as one; a
/// series in both gets the samples of both (`a`'s win on a timestamp).
fn merge_sorted_parts(a: Vec<Series>, b: Vec<Series>) -> Vec<Series> {
    if a.is_empty() {
        return b;
    }
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let order = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.labels.cmp(&y.labels),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return out,
        };
        match order {
            std::cmp::Ordering::Less => out.extend(a.next()),
            std::cmp::Ordering::Greater => out.extend(b.next()),
            std::cmp::Ordering::Equal => {
                if let (Some(x), Some(y)) = (a.next(), b.next()) {
                    out.push(Series { labels: x.labels, samples: merge_samples(x.samples, y.samples) });
                }
            }
        }
    }
}

/// The samples of two copies of a series; replicas usually hold the same
/// ones, which are kept as they are.
fn merge_samples(a: Vec<Sample>, b: Vec<Sample>) -> Vec<Sample> {
    let same = a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.t == y.t);
    if same || b.is_empty() {
        return a;
    }
    if a.is_empty() {
        return b;
    }
    let mut merged = Vec::new();
    crate::sample::merge_sorted(&a, &b, &mut merged);
    merged
}

/// The sorted union of several answers (series, label names or values),
/// cut to `limit` when it is not 0.
pub fn union<T: Ord>(parts: impl IntoIterator<Item = Vec<T>>, limit: usize) -> Vec<T> {
    let set: std::collections::BTreeSet<T> = parts.into_iter().flatten().collect();
    let mut out: Vec<T> = set.into_iter().collect();
    if limit > 0 {
        out.truncate(limit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, ts: &[(i64, f64)]) -> Series {
        Series {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: ts.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
        }
    }

    fn req(latest_only: bool, max_series: usize, max_samples: usize) -> SelectRequest<'static> {
        SelectRequest { matchers: &[], start: 0, end: 100, max_series, max_samples, latest_only, ctx: None }
    }

    #[test]
    fn merge_dedups_overlaps_and_keeps_the_first_answer() {
        let a = vec![series("a", &[(1, 1.0), (2, 2.0)]), series("c", &[(1, 1.0)])];
        let b = vec![series("a", &[(2, 20.0), (3, 3.0)]), series("b", &[(5, 5.0)])];
        let got = merge_series(vec![a, b], &req(false, 0, 0)).expect("merge");
        assert_eq!(
            got,
            vec![series("a", &[(1, 1.0), (2, 2.0), (3, 3.0)]), series("b", &[(5, 5.0)]), series("c", &[(1, 1.0)])]
        );
        let got = merge_series(vec![got, vec![]], &req(true, 0, 0)).expect("merge");
        assert_eq!(got[0], series("a", &[(3, 3.0)]));
    }

    #[test]
    fn sorted_and_unsorted_parts_merge_alike() {
        let a = vec![series("a", &[(1, 1.0), (2, 2.0)]), series("c", &[(1, 1.0)])];
        let b = vec![series("a", &[(2, 20.0), (3, 3.0)]), series("b", &[(5, 5.0)]), series("d", &[])];
        let c = vec![series("c", &[(1, 9.0), (4, 4.0)])];
        let sorted = merge_series(vec![a.clone(), b.clone(), c.clone()], &req(false, 0, 0)).expect("merge");
        let mut b_unsorted = b;
        b_unsorted.reverse();
        let unsorted = merge_series(vec![a, b_unsorted, c], &req(false, 0, 0)).expect("merge");
        assert_eq!(sorted, unsorted);
        assert_eq!(
            sorted,
            vec![
                series("a", &[(1, 1.0), (2, 2.0), (3, 3.0)]),
                series("b", &[(5, 5.0)]),
                series("c", &[(1, 1.0), (4, 4.0)]),
                series("d", &[]),
            ]
        );
    }

    #[test]
    fn merge_applies_limits() {
        let a = vec![series("a", &[(1, 1.0), (2, 2.0)]), series("b", &[(1, 1.0)])];
        assert!(merge_series(vec![a.clone()], &req(false, 1, 0)).is_err());
        assert!(merge_series(vec![a.clone()], &req(false, 0, 2)).is_err());
        assert!(merge_series(vec![a], &req(false, 2, 3)).is_ok());
    }

    fn chunk(ts: &[(i64, f64)]) -> crate::chunk::Chunk {
        let mut app = crate::chunk::XorAppender::new();
        for &(t, v) in ts {
            app.append(t, v);
        }
        crate::chunk::Chunk { min_t: ts[0].0, max_t: ts[ts.len() - 1].0, data: bytes::Bytes::from(app.finish()) }
    }

    fn chunked(name: &str, chunks: &[&[(i64, f64)]], loose: &[(i64, f64)]) -> (Labels, SeriesChunks) {
        (
            Labels::from_pairs([("__name__", name)]),
            SeriesChunks {
                chunks: chunks.iter().map(|c| chunk(c)).collect(),
                samples: loose.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
            },
        )
    }

    fn flat(out: &[Series]) -> Vec<(String, Vec<(i64, f64)>)> {
        out.iter()
            .map(|s| (s.labels.metric_name().unwrap_or("").to_owned(), s.samples.iter().map(|x| (x.t, x.v)).collect()))
            .collect()
    }

    #[test]
    fn replicas_decode_to_one_copy_of_each_series() {
        let shared: &[(i64, f64)] = &[(10, 1.0), (20, 2.0)];
        let r1 = vec![chunked("a", &[shared, &[(30, 3.0)]], &[]), chunked("b", &[&[(10, 5.0)]], &[])];
        // The second replica: the same closed chunk, a head chunk with one
        // more sample, a conflicting value for b, and a series of its own.
        let r2 = vec![
            chunked("a", &[shared, &[(30, 3.0), (40, 4.0)]], &[]),
            chunked("b", &[&[(10, 6.0), (20, 7.0)]], &[]),
            chunked("c", &[&[(10, 1.0)]], &[]),
        ];
        let out = decode_replicas(vec![r1.clone(), r2.clone()], &req(false, 0, 0)).expect("decodes");
        assert_eq!(
            flat(&out),
            vec![
                ("a".into(), vec![(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]),
                ("b".into(), vec![(10, 5.0), (20, 7.0)]),
                ("c".into(), vec![(10, 1.0)]),
            ],
            "shared chunks once, the rest merged, the first answer wins a timestamp"
        );
        // The same as decoding each replica and merging the samples.
        let each: Vec<Vec<Series>> =
            [r1, r2].into_iter().map(|r| decode_replicas(vec![r], &req(false, 0, 0)).expect("decodes")).collect();
        assert_eq!(flat(&merge_series(each, &req(false, 0, 0)).expect("merges")), flat(&out));
        // Identical replicas: exactly one copy.
        let r = vec![chunked("a", &[shared], &[(25, 2.5)])];
        let out = decode_replicas(vec![r.clone(), r.clone(), r], &req(false, 0, 0)).expect("decodes");
        assert_eq!(flat(&out), vec![("a".into(), vec![(10, 1.0), (20, 2.0), (25, 2.5)])]);
    }

    #[test]
    fn decoding_work_counts_chunks_and_loose_samples() {
        let loose: Vec<(i64, f64)> = (0..121).map(|t| (t, 1.0)).collect();
        let groups =
            group_replicas(vec![vec![chunked("a", &[&[(1, 1.0)], &[(2, 2.0)]], &[])], vec![chunked("a", &[], &loose)]]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].work(), 2 + 2, "two chunks, and 121 loose samples as two chunks' worth");
    }

    #[test]
    fn replica_answers_in_samples_or_out_of_order_still_merge() {
        // An ingester that predates chunks answers with loose samples, in
        // any series order; stale markers (NaN) compare by their bits.
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let old = vec![chunked("z", &[], &[(5, 0.5)]), chunked("a", &[], &[(10, 1.0), (20, stale)])];
        let new = vec![chunked("a", &[&[(10, 1.0)]], &[(20, stale)])];
        let out = decode_replicas(vec![new, old], &req(false, 0, 0)).expect("decodes");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].samples.len(), 2);
        assert_eq!(out[0].samples[1].v.to_bits(), stale.to_bits());
        assert_eq!(flat(&out[1..]), vec![("z".into(), vec![(5, 0.5)])]);
    }

    #[test]
    fn replica_decoding_keeps_the_range_latest_only_and_limits() {
        let r = vec![chunked("a", &[&[(10, 1.0), (200, 2.0)]], &[]), chunked("b", &[&[(50, 1.0), (60, 2.0)]], &[])];
        let out = decode_replicas(vec![r.clone()], &req(true, 0, 0)).expect("decodes");
        assert_eq!(flat(&out), vec![("a".into(), vec![(10, 1.0)]), ("b".into(), vec![(60, 2.0)])]);
        assert!(decode_replicas(vec![r.clone()], &req(false, 1, 0)).is_err(), "two series, one allowed");
        assert!(decode_replicas(vec![r.clone()], &req(false, 0, 2)).is_err(), "three samples, two allowed");
        assert!(decode_replicas(vec![r], &req(false, 2, 3)).is_ok());
    }
}
