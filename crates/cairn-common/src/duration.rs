//! Prometheus durations: `1h30m`, `5m`, `250ms`, `1y`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration in milliseconds, written the way Prometheus writes
/// durations in flags, configuration and PromQL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PromDuration(u64);

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3_600_000),
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1000),
    ("ms", 1),
];

impl PromDuration {
    pub const fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    pub const fn from_secs(s: u64) -> Self {
        Self(s * 1000)
    }

    pub const fn as_millis(&self) -> u64 {
        self.0
    }

    pub fn as_std(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid duration string: {0:?}")]
pub struct ParseDurationError(pub String);

impl FromStr for PromDuration {
    type Err = ParseDurationError;

    /// Parses integer+unit groups in descending unit order, as Prometheus's
    /// `model.ParseDuration` does; `0` alone is allowed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseDurationError(s.to_owned());
        if s == "0" {
            return Ok(Self(0));
        }
        if s.is_empty() {
            return Err(err());
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        let mut last_unit = usize::MAX;
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if start == i {
                return Err(err());
            }
            let n: u64 = s[start..i].parse().map_err(|_| err())?;
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[unit_start..i];
            let idx = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(err)?;
            // Units must strictly descend: "1m1h" and "1m1m" are invalid.
            if last_unit != usize::MAX && idx <= last_unit {
                return Err(err());
            }
            last_unit = idx;
            total = n
                .checked_mul(UNITS[idx].1)
                .and_then(|v| total.checked_add(v))
                .filter(|v| *v <= i64::MAX as u64)
                .ok_or_else(err)?;
        }
        Ok(Self(total))
    }
}

impl fmt::Display for PromDuration {
    /// Formats like Prometheus: the largest units first, `0s` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let mut rest = self.0;
        for (unit, ms) in UNITS {
            if rest >= ms {
                write!(f, "{}{}", rest / ms, unit)?;
                rest %= ms;
            }
        }
        Ok(())
    }
}

impl Serialize for PromDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        for (s, ms) in [
            ("0", 0),
            ("1ms", 1),
            ("15s", 15_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1d", 86_400_000),
            ("2w", 1_209_600_000),
            ("1y", 31_536_000_000),
        ] {
            let d: PromDuration = s.parse().expect(s);
            assert_eq!(d.as_millis(), ms, "{s}");
        }
        assert_eq!(PromDuration::from_millis(5_400_000).to_string(), "1h30m");
        assert_eq!(PromDuration::from_millis(0).to_string(), "0s");
        assert_eq!(PromDuration::from_millis(1500).to_string(), "1s500ms");
    }

    #[test]
    fn rejects_malformed() {
        for s in ["", "m", "5", "1.5m", "1m1h", "1m1m", "-1m", "5x", "99999999999999999999y"] {
            assert!(s.parse::<PromDuration>().is_err(), "{s} should fail");
        }
    }
}
