//! The shared vocabulary of Cairn.
//!
//! Every other crate speaks in these types, so that components never have to
//! depend on each other:
//!
//! ```text
//!   remote write ──> distributor ──PushBatch──> ingester ──chunk::Xor──> head
//!                                                  │
//!   PromQL ──> engine ──Queryable::select──────────┘ (Series of Samples)
//! ```
//!
//! What lives here: label sets and matchers, samples and the staleness marker,
//! tenant ids, Prometheus durations and timestamps, the XOR chunk codec, the
//! error codes that map to HTTP and gRPC statuses, the storage read trait and
//! the push trait that connect the roles, the [`service::Service`] trait every
//! role implements, a dedicated executor for CPU-heavy async work, shared
//! gRPC channels, a zero-copy reader of Prometheus's
//! protobuf messages, and the shutdown signal.
//!
//! What must not: servers, or any knowledge of a particular component.

pub mod chunk;
pub mod duration;
pub mod executor;
pub mod grpc;
pub mod inflight;
pub mod labels;
pub mod matcher;
pub mod memory;
pub mod metrics;
pub mod push;
pub mod sample;
pub mod service;
pub mod status;
pub mod storage;
pub mod task;
pub mod tenant;
pub mod time;
pub mod wire;

pub use duration::PromDuration;
pub use labels::{Label, Labels, METRIC_NAME};
pub use matcher::{MatchOp, Matcher};
pub use sample::{STALE_NAN_BITS, Sample, is_stale_nan};
pub use status::ErrorCode;
pub use tenant::TenantId;

/// Cooperative shutdown signal shared by every role of a process.
pub type Shutdown = tokio_util::sync::CancellationToken;
