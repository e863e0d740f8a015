//! Request parameters of the query API, parsed the way Prometheus parses
//! them (and failing with its messages).

pub use cairn_common::time::parse_time;

/// Parameters from the URL and, for POST, the form body.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
    }
}

/// Float seconds or a Prometheus duration, into milliseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    if let Ok(f) = s.parse::<f64>() {
        let ms = f * 1000.0;
        if !ms.is_finite() || ms.abs() > i64::MAX as f64 / 1000.0 {
            return Err(format!("cannot parse {s:?} to a valid duration. It overflows int64"));
        }
        return Ok(ms.round() as i64);
    }
    s.parse::<cairn_common::PromDuration>()
        .map(|d| d.as_millis() as i64)
        .map_err(|_| format!("cannot parse {s:?} to a valid duration"))
}

/// `invalid parameter "name": reason`.
pub fn invalid(name: &str, reason: &str) -> String {
    format!("invalid parameter {name:?}: {reason}")
}

pub fn time_param(p: &Params, name: &str, default: i64) -> Result<i64, String> {
    match p.get(name) {
        None | Some("") => Ok(default),
        Some(s) => parse_time(s).map_err(|e| invalid(name, &e)),
    }
}

pub fn limit_param(p: &Params) -> Result<usize, String> {
    match p.get("limit") {
        None | Some("") => Ok(0),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(n as usize),
            _ => Err(invalid("limit", &format!("cannot parse {s:?}: must be a non-negative integer"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use cairn_common::time::MIN_TIME_MS;

    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1435781451.781"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("1"), Ok(1000));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Ok(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T22:10:51.781+02:00"), Ok(1_435_781_451_781));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_time("-292273086-05-16T16:47:06Z"), Ok(MIN_TIME_MS));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15"), Ok(15_000));
        assert_eq!(parse_duration("0.5"), Ok(500));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert!(parse_duration("1e300").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
