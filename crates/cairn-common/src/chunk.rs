//! Sample compression.
//!
//! Cairn keeps samples in Prometheus's XOR chunk encoding (Gorilla's
//! delta-of-delta timestamps and XOR'd floats), byte for byte, so that chunks
//! can be served to remote read clients and checked against Prometheus's own
//! decoder without conversion. The layout is described in the Prometheus TSDB
//! chunk format: a big-endian `u16` sample count, then the bit stream.

mod bits;
mod xor;

pub use xor::{XorAppender, XorIter, decode_all};

/// Samples per chunk at which the head starts a new one (Prometheus's default).
pub const TARGET_SAMPLES_PER_CHUNK: u16 = 120;
/// Size at which the head starts a new chunk regardless of sample count.
pub const MAX_BYTES_PER_CHUNK: usize = 1024;

/// One XOR chunk and the time range of its samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub min_t: i64,
    pub max_t: i64,
    pub data: bytes::Bytes,
}

/// A series' samples as a store holds them: XOR chunks in time order that
/// do not overlap one another, and samples kept outside any chunk (an
/// out-of-order buffer, or just the newest sample), sorted by time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesChunks {
    pub chunks: Vec<Chunk>,
    pub samples: Vec<crate::Sample>,
}

impl SeriesChunks {
    /// Decodes into `out` the samples in `[start, end]`, in time order; a
    /// loose sample wins over a chunk's at the same timestamp.
    pub fn decode_into(&self, start: i64, end: i64, out: &mut Vec<crate::Sample>) {
        out.clear();
        out.reserve(self.announced());
        for c in self.chunks.iter().filter(|c| c.min_t <= end && c.max_t >= start) {
            for s in XorIter::new(&c.data) {
                if s.t > end {
                    break;
                }
                if s.t >= start {
                    out.push(s);
                }
            }
        }
        if !self.samples.is_empty() {
            let lo = self.samples.partition_point(|s| s.t < start);
            let hi = self.samples.partition_point(|s| s.t <= end);
            let in_chunks = std::mem::take(out);
            crate::sample::merge_sorted(&self.samples[lo..hi], &in_chunks, out);
        }
    }

    /// Samples the chunks announce plus the loose ones: at least as many as
    /// any range decodes to.
    pub fn announced(&self) -> usize {
        let chunked: usize = self.chunks.iter().map(|c| usize::from(XorIter::new(&c.data).len_announced())).sum();
        chunked.saturating_add(self.samples.len())
    }

    /// Samples certainly in `[start, end]`: those of chunks entirely inside
    /// it and the loose ones within it. A limit checked against this never
    /// refuses a read that fits.
    pub fn surely_within(&self, start: i64, end: i64) -> usize {
        let chunked: usize = self
            .chunks
            .iter()
            .filter(|c| c.min_t >= start && c.max_t <= end)
            .map(|c| usize::from(XorIter::new(&c.data).len_announced()))
            .sum();
        chunked.saturating_add(self.samples.iter().filter(|s| s.t >= start && s.t <= end).count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Sample;

    fn chunk(samples: &[(i64, f64)]) -> Chunk {
        let mut app = XorAppender::new();
        for &(t, v) in samples {
            app.append(t, v);
        }
        Chunk { min_t: samples[0].0, max_t: samples[samples.len() - 1].0, data: bytes::Bytes::from(app.finish()) }
    }

    #[test]
    fn decodes_a_range_across_chunks_and_loose_samples() {
        let s = SeriesChunks {
            chunks: vec![chunk(&[(10, 1.0), (20, 2.0)]), chunk(&[(30, 3.0), (40, 4.0)])],
            samples: vec![Sample::new(15, 1.5), Sample::new(30, 30.0), Sample::new(50, 5.0)],
        };
        let mut out = Vec::new();
        s.decode_into(15, 40, &mut out);
        let got: Vec<(i64, f64)> = out.iter().map(|x| (x.t, x.v)).collect();
        assert_eq!(got, vec![(15, 1.5), (20, 2.0), (30, 30.0), (40, 4.0)]);
        assert_eq!(s.announced(), 7);
        assert_eq!(s.surely_within(15, 40), 2 + 2, "the second chunk and two loose samples");
        assert_eq!(s.surely_within(0, 100), 7);
    }
}
