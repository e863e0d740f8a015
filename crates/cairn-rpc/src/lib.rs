//! Cairn's internal RPC: the ingester protocol (`cairn.ingester.v1`), in one place.
//!
//! - [`client`]: one ingester as a `Pusher` and a `Queryable`, for the
//!   distributor's writes and the querier's reads;
//! - [`codec`]: push requests encoded once for every replica, and decoded
//!   by the ingester without an intermediate message;
//! - [`convert`]: Cairn's types to messages and back, for both ends.
//!
//! Selects are answered with XOR chunks when the caller accepts them (this
//! build always does), and with plain samples otherwise.

pub mod client;
pub mod codec;
pub mod convert;

pub use client::{Clients, IngesterClient};
pub use codec::{EncodedPush, EncodedSeries, SeriesBuffer};

/// The largest push request an ingester accepts, and a distributor sends.
pub const MAX_REQUEST_BYTES: usize = 64 << 20;
