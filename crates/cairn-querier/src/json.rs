//! Prometheus's JSON encoding, byte for byte: timestamps as seconds with
//! up to three decimals, values as strings in Go's float formatting.

use std::fmt::Write;

use cairn_common::Labels;
use cairn_common::storage::Series;
use cairn_promql::{QueryResult, QueryValue};

/// A timestamp in milliseconds as Prometheus writes it: `1435781451.781`,
/// `1`, `1.010` (the fraction always has three digits when present).
pub fn write_timestamp(out: &mut String, t: i64) {
    let (neg, t) = if t < 0 { (true, t.unsigned_abs()) } else { (false, t as u64) };
    if neg {
        out.push('-');
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// A sample value as Prometheus writes it: Go's shortest formatting, in
/// exponent form below 1e-6 and from 1e21 (`1e-07`, `1e+21`), `NaN`,
/// `+Inf`, `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        // Rust writes `1.5e-7`; Go writes `1.5e-07`: a sign and two digits.
        let s = format!("{v:e}");
        if let Some((mant, exp)) = s.split_once('e') {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            return format!("{mant}e{sign}{digits:0>2}");
        }
        return s;
    }
    v.to_string()
}

pub fn write_str(out: &mut String, s: &str) {
    // serde_json escapes exactly what JSON requires.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

pub fn write_labels(out: &mut String, l: &Labels) {
    out.push('{');
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &x.name);
        out.push(':');
        write_str(out, &x.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, t: i64, v: f64) {
    out.push('[');
    write_timestamp(out, t);
    out.push_str(",\"");
    out.push_str(&format_value(v));
    out.push_str("\"]");
}

fn write_matrix(out: &mut String, m: &[Series]) {
    out.push('[');
    for (i, s) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        write_labels(out, &s.labels);
        out.push_str(",\"values\":[");
        for (j, p) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_point(out, p.t, p.v);
        }
        out.push_str("]}");
    }
    out.push(']');
}

fn write_string_list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(out, ",\"{key}\":[");
    for (i, w) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, w);
    }
    out.push(']');
}

/// `{"status":"success","data":{"resultType":...,"result":...}, "warnings":[...], "infos":[...]}`
pub fn query_response(r: &QueryResult) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":");
    match &r.value {
        QueryValue::Scalar { t, v } => {
            out.push_str("\"scalar\",\"result\":");
            write_point(&mut out, *t, *v);
        }
        QueryValue::String { t, s } => {
            out.push_str("\"string\",\"result\":[");
            write_timestamp(&mut out, *t);
            out.push(',');
            write_str(&mut out, s);
            out.push(']');
        }
        QueryValue::Vector(v) => {
            out.push_str("\"vector\",\"result\":[");
            for (i, s) in v.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"metric\":");
                write_labels(&mut out, &s.labels);
                out.push_str(",\"value\":");
                write_point(&mut out, s.t, s.v);
                out.push('}');
            }
            out.push(']');
        }
        QueryValue::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":");
            write_matrix(&mut out, m);
        }
    }
    out.push('}');
    write_string_list(&mut out, "warnings", &r.warnings);
    write_string_list(&mut out, "infos", &r.infos);
    out.push('}');
    out
}

/// `{"status":"success","data":<data>}` with optional warnings.
pub fn success(data: &str, warnings: &[String]) -> String {
    let mut out = String::with_capacity(data.len() + 32);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    write_string_list(&mut out, "warnings", warnings);
    out.push('}');
    out
}

pub fn error(error_type: &str, msg: &str) -> String {
    let mut out = String::new();
    out.push_str("{\"status\":\"error\",\"errorType\":");
    write_str(&mut out, error_type);
    out.push_str(",\"error\":");
    write_str(&mut out, msg);
    out.push('}');
    out
}

pub fn string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(&mut out, s);
    }
    out.push(']');
    out
}

pub fn labels_array(items: &[Labels]) -> String {
    let mut out = String::from("[");
    for (i, l) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_labels(&mut out, l);
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_promql::InstantSample;

    #[test]
    fn timestamps_like_prometheus() {
        let f = |t| {
            let mut s = String::new();
            write_timestamp(&mut s, t);
            s
        };
        assert_eq!(f(1_435_781_451_781), "1435781451.781");
        assert_eq!(f(1000), "1");
        assert_eq!(f(1010), "1.010");
        assert_eq!(f(1500), "1.500");
        assert_eq!(f(0), "0");
        assert_eq!(f(-1500), "-1.500");
    }

    #[test]
    fn values_like_go() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(-2.5), "-2.5");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(1.5e-7), "1.5e-07");
        assert_eq!(format_value(123456789.0), "123456789");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(0.000001), "0.000001");
        assert_eq!(format_value(1e-300), "1e-300");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(-0.0), "-0");
    }

    #[test]
    fn vector_response_shape() {
        let r = QueryResult {
            value: QueryValue::Vector(vec![InstantSample {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "a\"b")]),
                t: 1_700_000_000_123,
                v: 1.0,
            }]),
            warnings: vec![],
            infos: vec!["PromQL info: x".into()],
        };
        assert_eq!(
            query_response(&r),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a\"b"},"value":[1700000000.123,"1"]}]},"infos":["PromQL info: x"]}"#
        );
    }
}
