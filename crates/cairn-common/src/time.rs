//! Timestamps: milliseconds since the Unix epoch, as Prometheus counts them.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::DateTime;

/// The earliest time the query API accepts (Prometheus's `minTime`).
pub const MIN_TIME_MS: i64 = (i64::MIN / 1000 + 62_135_596_801) * 1000;
/// The latest time the query API accepts (Prometheus's `maxTime`).
pub const MAX_TIME_MS: i64 = (i64::MAX / 1000 - 62_135_596_801) * 1000 + 999;

/// The earliest sample timestamp Cairn stores: 1970-01-01T00:00:00Z.
/// Older samples are refused at the door, never acknowledged.
pub const MIN_SAMPLE_TIME_MS: i64 = 0;
/// The latest sample timestamp Cairn stores whatever the grace period:
/// 9999-12-31T23:59:59.999Z. Together with [`MIN_SAMPLE_TIME_MS`] this
/// keeps every stored timestamp far enough from `i64`'s ends that block
/// periods, windows and offsets computed from it cannot overflow.
pub const MAX_SAMPLE_TIME_MS: i64 = 253_402_300_799_999;

/// Whether `t` is a timestamp Cairn stores (see [`MIN_SAMPLE_TIME_MS`]).
pub fn is_storable(t: i64) -> bool {
    (MIN_SAMPLE_TIME_MS..=MAX_SAMPLE_TIME_MS).contains(&t)
}

/// `t` written as RFC 3339 when it is a representable date, as a plain
/// millisecond count otherwise (for messages).
pub fn format_ms(t: i64) -> String {
    match DateTime::from_timestamp_millis(t) {
        Some(d) => d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => format!("{t}ms"),
    }
}

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
