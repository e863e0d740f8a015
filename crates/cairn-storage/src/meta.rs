//! `meta.json` of a block, and deletion marks.

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// The block format version this Cairn writes.
pub const FORMAT_VERSION: u32 = 1;

/// What a block holds, written beside its data as `meta.json` (and kept in
/// the bucket index).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockMeta {
    pub id: Ulid,
    pub tenant: String,
    /// Inclusive lower and exclusive upper time bound, milliseconds.
    pub min_time: i64,
    pub max_time: i64,
    pub series: u64,
    pub samples: u64,
    /// Size of `data.parquet` in bytes.
    pub bytes: u64,
    pub format_version: u32,
    /// The ingester that cut it (or the compactor that merged it).
    pub source: String,
    /// 1 for a block cut from a head; higher once compacted.
    pub compaction_level: u32,
}

impl BlockMeta {
    pub fn overlaps(&self, start: i64, end: i64) -> bool {
        self.min_time <= end && self.max_time > start
    }
}

/// Marks a block for deletion; it is deleted once no query can still be
/// reading it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionMark {
    pub id: Ulid,
    /// When the mark was written, milliseconds.
    pub deletion_time: i64,
    pub reason: String,
}

/// A block entry for tests of the index and of retention.
#[cfg(test)]
pub(crate) fn test_meta(id: u128, max_time: i64) -> BlockMeta {
    BlockMeta {
        id: Ulid(id),
        tenant: "t".into(),
        min_time: max_time - 10,
        max_time,
        series: 1,
        samples: 1,
        bytes: 1,
        format_version: FORMAT_VERSION,
        source: "test".into(),
        compaction_level: 1,
    }
}
