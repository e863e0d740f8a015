//! One series in the head: its labels and its samples in XOR chunks.

use std::sync::atomic::AtomicBool;

use bytes::Bytes;
use cairn_common::Sample;
use cairn_common::chunk::{Chunk, MAX_BYTES_PER_CHUNK, SeriesChunks, TARGET_SAMPLES_PER_CHUNK, XorAppender, XorIter};
use cairn_common::push::RejectReason;
use parking_lot::Mutex;

use super::packed::PackedLabels;

/// A finished, immutable chunk.
pub type ClosedChunk = Chunk;

/// A series: immutable labels plus mutable sample data behind a lock that is
/// held only for the time of one append or one copy-out.
#[derive(Debug)]
pub struct Series {
    pub series_ref: u32,
    pub labels: PackedLabels,
    pub data: Mutex<SeriesData>,
    /// Whether the WAL holds this series' record. A series is created in
    /// the head before the WAL write of its batch; if that write fails, the
    /// next batch that uses the series logs its record again, so that no
    /// logged sample refers to a series replay would not know.
    pub logged: AtomicBool,
}

/// The samples of a series. In-order samples go to XOR chunks; when an
/// out-of-order window is configured, older samples within it go to a small
/// sorted buffer that queries merge in.
#[derive(Debug, Default)]
pub struct SeriesData {
    pub closed: Vec<ClosedChunk>,
    pub head: Option<HeadChunk>,
    pub ooo: Option<Box<Vec<Sample>>>,
}

/// The chunk being appended to.
#[derive(Debug)]
pub struct HeadChunk {
    pub min_t: i64,
    pub app: XorAppender,
}

/// Outcome of checking one sample against a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Newer than everything: append in order.
    InOrder,
    /// Older, but inside the out-of-order window and not yet stored.
    OutOfOrder,
    /// Already stored with the same value: accept silently, store nothing.
    Duplicate,
    Reject(RejectReason),
}

impl SeriesData {
    /// Timestamp and value of the newest in-order sample.
    pub fn last(&self) -> Option<(i64, f64)> {
        let h = self.head.as_ref()?;
        Some((h.app.last_t(), h.app.last_v()))
    }

    /// Decides what to do with a sample at `t`, given the newest in-order
    /// sample `last` (which may be a pending one of the same batch).
    pub fn admit(&self, last: Option<(i64, f64)>, t: i64, v: f64, ooo_window: i64) -> Admit {
        let Some((last_t, last_v)) = last else {
            return Admit::InOrder;
        };
        if t > last_t {
            return Admit::InOrder;
        }
        if t == last_t {
            return if v.to_bits() == last_v.to_bits() {
                Admit::Duplicate
            } else {
                Admit::Reject(RejectReason::DuplicateTimestamp)
            };
        }
        if ooo_window <= 0 {
            return Admit::Reject(RejectReason::OutOfOrder);
        }
        if t < last_t.saturating_sub(ooo_window) {
            return Admit::Reject(RejectReason::TooOld);
        }
        match self.stored_value_at(t) {
            Some(old) if old.to_bits() == v.to_bits() => Admit::Duplicate,
            Some(_) => Admit::Reject(RejectReason::DuplicateTimestamp),
            None => Admit::OutOfOrder,
        }
    }

    /// The stored value at exactly `t`, searching chunks that may hold it.
    fn stored_value_at(&self, t: i64) -> Option<f64> {
        if let Some(ooo) = &self.ooo
            && let Ok(i) = ooo.binary_search_by_key(&t, |s| s.t)
        {
            return Some(ooo[i].v);
        }
        let in_head = self.head.as_ref().filter(|h| h.min_t <= t).map(|h| h.app.bytes());
        let bytes = match in_head {
            Some(b) => b,
            None => {
                let c = self.closed.iter().rev().find(|c| c.min_t <= t && t <= c.max_t)?;
                &c.data[..]
            }
        };
        XorIter::new(bytes).find(|s| s.t == t).map(|s| s.v)
    }

    /// Appends an in-order sample, cutting a new chunk when the current one
    /// is full. Returns true when a chunk was closed.
    pub fn append(&mut self, t: i64, v: f64) -> bool {
        let mut closed = false;
        if let Some(h) = &self.head
            && (h.app.num_samples() >= TARGET_SAMPLES_PER_CHUNK || h.app.len_bytes() >= MAX_BYTES_PER_CHUNK)
            && let Some(h) = self.head.take()
        {
            let max_t = h.app.last_t();
            self.closed.push(ClosedChunk { min_t: h.min_t, max_t, data: Bytes::from(h.app.finish()) });
            closed = true;
        }
        let head = self.head.get_or_insert_with(|| HeadChunk { min_t: t, app: XorAppender::new() });
        head.app.append(t, v);
        closed
    }

    /// Inserts an out-of-order sample (the caller checked `admit`).
    pub fn insert_ooo(&mut self, t: i64, v: f64) {
        let ooo = self.ooo.get_or_insert_with(Default::default);
        let i = ooo.partition_point(|s| s.t < t);
        ooo.insert(i, Sample::new(t, v));
    }

    pub fn min_time(&self) -> Option<i64> {
        let chunks = self.closed.first().map(|c| c.min_t).or(self.head.as_ref().map(|h| h.min_t));
        let ooo = self.ooo.as_ref().and_then(|o| o.first()).map(|s| s.t);
        match (chunks, ooo) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn max_time(&self) -> Option<i64> {
        let chunks = self.last().map(|(t, _)| t);
        let ooo = self.ooo.as_ref().and_then(|o| o.last()).map(|s| s.t);
        match (chunks, ooo) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        match (self.min_time(), self.max_time()) {
            (Some(lo), Some(hi)) => lo <= end && hi >= start,
            _ => false,
        }
    }

    /// Copies out what a query over `[start, end]` needs: chunk handles (cheap
    /// clones) and the head chunk's bytes. Decoding happens after the lock.
    pub fn snapshot(&self, start: i64, end: i64) -> SeriesChunks {
        let mut chunks: Vec<ClosedChunk> =
            self.closed.iter().filter(|c| c.min_t <= end && c.max_t >= start).cloned().collect();
        if let Some(h) = &self.head
            && h.min_t <= end
            && h.app.last_t() >= start
        {
            chunks.push(ClosedChunk {
                min_t: h.min_t,
                max_t: h.app.last_t(),
                data: Bytes::copy_from_slice(h.app.bytes()),
            });
        }
        let samples = self
            .ooo
            .as_ref()
            .map(|o| o.iter().filter(|s| s.t >= start && s.t <= end).copied().collect())
            .unwrap_or_default();
        SeriesChunks { chunks, samples }
    }

    /// Drops every sample older than `cut` (they are in an uploaded block).
    /// Chunks straddling `cut` are re-encoded. Returns how many samples
    /// were dropped.
    pub fn truncate_before(&mut self, cut: i64) -> u64 {
        let mut dropped = 0u64;
        let mut kept: Vec<ClosedChunk> = Vec::with_capacity(self.closed.len());
        for c in self.closed.drain(..) {
            if c.min_t >= cut {
                kept.push(c);
                continue;
            }
            let (old, new) = split_at(XorIter::new(&c.data), cut);
            dropped += old;
            if let Some(first) = new.first() {
                let mut app = XorAppender::new();
                for s in &new {
                    app.append(s.t, s.v);
                }
                kept.push(ClosedChunk { min_t: first.t, max_t: new[new.len() - 1].t, data: Bytes::from(app.finish()) });
            }
        }
        self.closed = kept;
        if let Some(h) = &self.head
            && h.min_t < cut
        {
            let (old, new) = split_at(XorIter::new(h.app.bytes()), cut);
            dropped += old;
            self.head = new.first().map(|first| {
                let mut app = XorAppender::new();
                for s in &new {
                    app.append(s.t, s.v);
                }
                HeadChunk { min_t: first.t, app }
            });
        }
        if let Some(ooo) = &mut self.ooo {
            let before = ooo.len();
            ooo.retain(|s| s.t >= cut);
            dropped += (before - ooo.len()) as u64;
            if ooo.is_empty() {
                self.ooo = None;
            }
        }
        dropped
    }

    /// Drops every sample outside `[start, end]`, re-encoding what is kept
    /// in order. Returns how many samples were dropped.
    pub fn retain_within(&mut self, start: i64, end: i64) -> u64 {
        match (self.min_time(), self.max_time()) {
            (Some(min), Some(max)) if min < start || max > end => {}
            _ => return 0,
        }
        let mut all = Vec::new();
        self.snapshot(i64::MIN, i64::MAX).decode_into(i64::MIN, i64::MAX, &mut all);
        let mut kept = SeriesData::default();
        let mut dropped = 0;
        for s in all {
            if (start..=end).contains(&s.t) {
                kept.append(s.t, s.v);
            } else {
                dropped += 1;
            }
        }
        *self = kept;
        dropped
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none() && self.closed.is_empty() && self.ooo.is_none()
    }

    /// Approximate heap bytes held by this series' samples.
    pub fn heap_size(&self) -> usize {
        let closed: usize = self.closed.iter().map(|c| c.data.len() + size_of::<ClosedChunk>()).sum();
        let head = self.head.as_ref().map(|h| h.app.len_bytes()).unwrap_or(0);
        let ooo = self.ooo.as_ref().map(|o| o.capacity() * size_of::<Sample>()).unwrap_or(0);
        closed + head + ooo
    }
}

/// Counts the samples before `cut` and collects the rest.
fn split_at(samples: impl Iterator<Item = Sample>, cut: i64) -> (u64, Vec<Sample>) {
    let mut old = 0;
    let mut new = Vec::new();
    for s in samples {
        if s.t < cut {
            old += 1;
        } else {
            new.push(s);
        }
    }
    (old, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(d: &SeriesData) -> Vec<(i64, f64)> {
        let mut out = Vec::new();
        d.snapshot(i64::MIN, i64::MAX).decode_into(i64::MIN, i64::MAX, &mut out);
        out.into_iter().map(|s| (s.t, s.v)).collect()
    }

    #[test]
    fn cuts_chunks_and_reads_back_everything() {
        let mut d = SeriesData::default();
        for i in 0..1000 {
            d.append(i * 10, i as f64);
        }
        assert_eq!(d.closed.len(), 1000 / TARGET_SAMPLES_PER_CHUNK as usize);
        let got = samples(&d);
        assert_eq!(got.len(), 1000);
        assert_eq!(got[999], (9990, 999.0));
        let mut part = Vec::new();
        d.snapshot(100, 200).decode_into(100, 200, &mut part);
        assert_eq!(part.len(), 11);
    }

    #[test]
    fn admits_like_prometheus() {
        let mut d = SeriesData::default();
        d.append(100, 1.0);
        let last = d.last();
        assert_eq!(d.admit(last, 101, 1.0, 0), Admit::InOrder);
        assert_eq!(d.admit(last, 100, 1.0, 0), Admit::Duplicate);
        assert_eq!(d.admit(last, 100, 2.0, 0), Admit::Reject(RejectReason::DuplicateTimestamp));
        assert_eq!(d.admit(last, 99, 1.0, 0), Admit::Reject(RejectReason::OutOfOrder));
        assert_eq!(d.admit(last, 99, 1.0, 10), Admit::OutOfOrder);
        assert_eq!(d.admit(last, 80, 1.0, 10), Admit::Reject(RejectReason::TooOld));
    }

    #[test]
    fn truncation_keeps_exactly_the_newer_samples() {
        let mut d = SeriesData::default();
        for i in 0..1000 {
            d.append(i * 10, i as f64);
        }
        d.insert_ooo(-5, 0.5);
        let before = samples(&d);
        // Cut inside a closed chunk, then inside the head chunk, then everything.
        for cut in [1235, 9_000, 9_995, 10_000] {
            let mut t = SeriesData::default();
            for &(ts, v) in before.iter().filter(|s| s.0 >= 0) {
                t.append(ts, v);
            }
            t.insert_ooo(-5, 0.5);
            let dropped = t.truncate_before(cut);
            let want: Vec<_> = before.iter().copied().filter(|s| s.0 >= cut).collect();
            assert_eq!(samples(&t), want, "cut at {cut}");
            assert_eq!(dropped as usize, before.len() - want.len());
            assert_eq!(t.is_empty(), want.is_empty());
            assert_eq!(t.min_time(), want.first().map(|s| s.0));
        }
        // Appending after a truncation continues the series.
        d.truncate_before(9_000);
        d.append(10_000, 1.0);
        assert_eq!(d.last(), Some((10_000, 1.0)));
        assert_eq!(samples(&d).len(), 101);
    }

    #[test]
    fn retaining_a_range_keeps_exactly_the_samples_in_it() {
        let mut d = SeriesData::default();
        for i in 0..1000 {
            d.append(i * 10, i as f64);
        }
        d.insert_ooo(-5, 0.5);
        assert_eq!(d.retain_within(i64::MIN, i64::MAX), 0);
        let before = samples(&d);
        let dropped = d.retain_within(0, 5_000);
        let want: Vec<_> = before.iter().copied().filter(|s| (0..=5_000).contains(&s.0)).collect();
        assert_eq!(samples(&d), want);
        assert_eq!(dropped as usize, before.len() - want.len());
        assert_eq!((d.min_time(), d.max_time()), (Some(0), Some(5_000)));
        d.append(5_010, 1.0);
        assert_eq!(d.last(), Some((5_010, 1.0)), "appends continue after the last kept sample");
        assert_eq!(d.retain_within(100_000, 200_000), 502);
        assert!(d.is_empty());
    }

    #[test]
    fn out_of_order_samples_merge_into_reads() {
        let mut d = SeriesData::default();
        d.append(10, 1.0);
        d.append(30, 3.0);
        d.insert_ooo(20, 2.0);
        d.insert_ooo(5, 0.5);
        assert_eq!(samples(&d), vec![(5, 0.5), (10, 1.0), (20, 2.0), (30, 3.0)]);
        assert_eq!(d.admit(d.last(), 20, 2.0, 100), Admit::Duplicate);
        assert_eq!(d.admit(d.last(), 10, 9.0, 100), Admit::Reject(RejectReason::DuplicateTimestamp));
        assert_eq!(d.min_time(), Some(5));
    }
}
