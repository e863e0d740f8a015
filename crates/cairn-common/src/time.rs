//! Timestamps: milliseconds since the Unix epoch, as Prometheus counts them.

use std::time::{SystemTime, UNIX_EPOCH};

/// The earliest time the query API accepts (Prometheus's `minTime`).
pub const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
/// The latest time the query API accepts (Prometheus's `maxTime`).
pub const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
