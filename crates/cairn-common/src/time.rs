//! Timestamps: milliseconds since the Unix epoch, as Prometheus counts them.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::DateTime;

/// The earliest time the query API accepts (Prometheus's `minTime`).
pub const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
/// The latest time the query API accepts (Prometheus's `maxTime`).
pub const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;

/// Now, in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Float seconds (`1435781451.781`) or RFC 3339, into milliseconds.
pub fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>()
        && f.is_finite()
    {
        let secs = f.trunc();
        let frac = ((f - secs) * 1000.0).round();
        let ms = secs * 1000.0 + frac;
        if ms >= MIN_TIME_MS as f64 && ms <= MAX_TIME_MS as f64 {
            return Ok(ms as i64);
        }
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    // The formatted bounds Prometheus clients send for "all time".
    match s {
        "-292273086-05-16T16:47:06Z" => Ok(MIN_TIME_MS),
        "292277025-08-18T07:12:54.999999999Z" => Ok(MAX_TIME_MS),
        _ => Err(format!("cannot parse {s:?} to a valid timestamp")),
    }
}
