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
