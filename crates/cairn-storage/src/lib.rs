//! Cairn's long-term tier: blocks of samples as Parquet files in object
//! storage (a local directory or S3).
//!
//! ```text
//!  ingester ── BlockWriter ──> data.parquet + meta.json ──> Bucket (object_store)
//!                                                             │
//!                                   bucket index (generations, create-if-absent)
//!                                                             │
//!  querier ── BlockStore: Queryable ── prune by time, labels ◄┘
//! ```
//!
//! This crate owns the block format ([`block`]), its metadata ([`meta`]),
//! the bucket layout ([`paths`]) and the per-tenant bucket index
//! ([`index`]). It knows nothing of heads, WALs or PromQL.

pub mod block;
pub mod config;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod index;
pub mod meta;
mod parquet_guard;
pub mod paths;
pub mod retention;
pub mod store;

pub use config::StorageConfig;
pub use error::{Error, Result};
pub use store::BlockStore;
