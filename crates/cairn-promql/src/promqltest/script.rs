//! Parsing of promqltest scripts.

use cairn_common::storage::Series;
use cairn_common::{Labels, Sample, sample::stale_nan};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::Expr;

/// One value slot of a series line: a float, or nothing at this step.
pub type Slot = Option<f64>;

#[derive(Debug, Clone)]
pub enum Command {
    Load { line: usize, series: Vec<Series>, histograms: Vec<Labels> },
    Clear,
    Eval(Box<EvalCmd>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum EvalKind {
    Instant { t: i64 },
    Range { start: i64, end: i64, step: i64 },
}

#[derive(Debug, Clone, Default)]
pub struct Annot {
    /// Whether any `expect warn|info` / `no_*` line was given.
    pub checked: bool,
    pub none: bool,
    /// Each expected annotation: exact message, regex, or anything.
    pub expect: Vec<Matcher>,
}

#[derive(Debug, Clone)]
pub enum Matcher {
    Any,
    Msg(String),
    Regex(String),
}

impl Matcher {
    pub fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Any => true,
            Matcher::Msg(m) => m == s,
            Matcher::Regex(r) => regex::Regex::new(r).map(|re| re.is_match(s)).unwrap_or(false),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Expected {
    /// Series and their values (one for instant queries).
    Series(Vec<(Labels, Vec<Slot>)>),
    Scalar(f64),
    String(String),
    /// An instant query that returns a range vector on this grid.
    RangeVector {
        start: i64,
        step: i64,
        series: Vec<(Labels, Vec<Slot>)>,
    },
}

#[derive(Debug, Clone)]
pub struct EvalCmd {
    pub line: usize,
    pub expr: String,
    pub kind: EvalKind,
    pub fail: Option<Matcher>,
    pub warn: Annot,
    pub info: Annot,
    pub ordered: bool,
    pub expected: Expected,
    /// Expected output contains native histograms.
    pub expects_histograms: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

fn perr<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { line, msg: msg.into() })
}

/// Parses a duration like `5m`, `1h30m`, `0`, `-1m`, or a plain number of
/// seconds, into milliseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let ms = match body.parse::<cairn_common::PromDuration>() {
        Ok(d) => d.as_millis() as i64,
        Err(_) => (body.parse::<f64>().ok()? * 1000.0).round() as i64,
    };
    Some(if neg { -ms } else { ms })
}

fn parse_float(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    let (sign, body) = match lower.strip_prefix('-') {
        Some(b) => (-1.0, b.to_owned()),
        None => (1.0, lower.strip_prefix('+').unwrap_or(&lower).to_owned()),
    };
    let v = match body.as_str() {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        b if b.starts_with("0x") => i64::from_str_radix(&b[2..], 16).ok()? as f64,
        b => match b.parse::<f64>() {
            Ok(v) => v,
            // A duration in value position counts as its seconds.
            Err(_) => parse_duration(b)? as f64 / 1000.0,
        },
    };
    Some(sign * v)
}

/// Expands a value sequence (`1 2 _ 3+2x4 stale _x3`).
pub fn parse_values(s: &str) -> Option<Vec<Slot>> {
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        if tok == "_" {
            out.push(None);
            continue;
        }
        if tok == "stale" {
            out.push(Some(stale_nan()));
            continue;
        }
        if let Some(n) = tok.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(None, n.parse().ok()?));
            continue;
        }
        // In series values `0x10` is "0 eleven times", never hexadecimal.
        match tok.rfind('x') {
            Some(xi) if tok[xi + 1..].bytes().all(|b| b.is_ascii_digit()) && xi + 1 < tok.len() => {
                let times: usize = tok[xi + 1..].parse().ok()?;
                let left = &tok[..xi];
                // Split `a+b` / `a-b` at a sign that is not leading or an exponent's.
                let bytes = left.as_bytes();
                let split = (1..bytes.len())
                    .find(|&i| (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E'));
                let (a, b) = match split {
                    Some(i) => (parse_float(&left[..i])?, parse_float(&left[i..])?),
                    None => (parse_float(left)?, 0.0),
                };
                for k in 0..=times {
                    out.push(Some(a + b * k as f64));
                }
            }
            _ => out.push(Some(parse_float(tok)?)),
        }
    }
    Some(out)
}

/// Splits `metric{a="b"} 1 2 3` into the series part and the values part.
fn split_series(line: &str) -> (&str, &str) {
    if let Some(open) = line.find('{') {
        if line[..open].trim().contains(char::is_whitespace) {
            // `name 1 2 {...}` cannot happen; fall through to whitespace split.
        } else {
            let mut in_str = false;
            let mut esc = false;
            for (i, c) in line[open..].char_indices() {
                match c {
                    '\\' if in_str => esc = !esc,
                    '"' if !esc => in_str = !in_str,
                    '}' if !in_str => {
                        let end = open + i + 1;
                        return (&line[..end], &line[end..]);
                    }
                    _ => esc = false,
                }
                if c != '\\' {
                    esc = false;
                }
            }
        }
    }
    match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    }
}

/// Parses a series descriptor into labels.
pub fn parse_labels(s: &str) -> Option<Labels> {
    let s = s.trim();
    if s == "{}" {
        return Some(Labels::default());
    }
    let Ok(Expr::VectorSelector(vs)) = promql_parser::parser::parse(s) else {
        return None;
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(n) = vs.name {
        pairs.push(("__name__".into(), n));
    }
    for m in vs.matchers.matchers {
        if !matches!(m.op, PMatchOp::Equal) {
            return None;
        }
        pairs.push((m.name, m.value));
    }
    Some(Labels::new(pairs.into_iter().map(|(n, v)| cairn_common::Label::new(n, v)).collect()))
}

fn parse_series_line(line: &str, n: usize) -> Result<(Labels, Vec<Slot>, bool), ParseError> {
    let (series, values) = match line.find("{{") {
        // `name {{...}}`: the histogram's braces are not the series'.
        Some(h) if !line[..h].contains('{') => {
            let end = line.find(char::is_whitespace).unwrap_or(line.len());
            (&line[..end], &line[end..])
        }
        _ => split_series(line),
    };
    let labels = parse_labels(series).ok_or_else(|| ParseError { line: n, msg: format!("bad series {series:?}") })?;
    if values.contains("{{") {
        return Ok((labels, Vec::new(), true));
    }
    let vals = parse_values(values).ok_or_else(|| ParseError { line: n, msg: format!("bad values {values:?}") })?;
    Ok((labels, vals, false))
}

fn annot_line(rest: &str) -> Matcher {
    let rest = rest.trim();
    if let Some(m) = rest.strip_prefix("msg:") {
        Matcher::Msg(m.trim().to_owned())
    } else if let Some(r) = rest.strip_prefix("regex:") {
        Matcher::Regex(r.trim().to_owned())
    } else {
        Matcher::Any
    }
}

/// Parses a whole script.
pub fn parse(text: &str) -> Result<Vec<Command>, ParseError> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let t = l.trim();
            (i + 1, if t.starts_with('#') { "" } else { t })
        })
        .collect();
    let mut cmds = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (ln, line) = lines[i];
        i += 1;
        if line.is_empty() {
            continue;
        }
        let word = line.split_whitespace().next().unwrap_or("").to_ascii_lowercase();
        if word == "clear" {
            // `clear` has no body: the next line starts a new command.
            cmds.push(Command::Clear);
            continue;
        }
        let mut block = Vec::new();
        while i < lines.len() && !lines[i].1.is_empty() {
            block.push(lines[i]);
            i += 1;
        }
        if word.starts_with("load") {
            let step = line
                .split_whitespace()
                .nth(1)
                .and_then(parse_duration)
                .ok_or_else(|| ParseError { line: ln, msg: "bad load step".into() })?;
            let mut series = Vec::new();
            let mut histograms = Vec::new();
            let mut k = 0;
            while k < block.len() {
                let (bn, bl) = block[k];
                k += 1;
                let (series_part, values_part) = split_series(bl);
                if series_part.ends_with("@st") || values_part.starts_with("@st") {
                    // Start timestamps apply to the next line; Cairn ignores them.
                    continue;
                }
                let (labels, vals, hist) = parse_series_line(bl, bn)?;
                if hist {
                    histograms.push(labels);
                    continue;
                }
                let samples =
                    vals.iter().enumerate().filter_map(|(j, v)| v.map(|v| Sample::new(j as i64 * step, v))).collect();
                series.push(Series { labels, samples });
            }
            if word == "load_with_nhcb" {
                // Classic histograms are also loaded as custom-bucket native
                // histograms under their base name.
                for s in &series {
                    if let Some(base) = s.labels.metric_name().and_then(|n| n.strip_suffix("_bucket")) {
                        let mut l = s.labels.clone();
                        l.remove("le");
                        l.set("__name__", base);
                        histograms.push(l);
                    }
                }
            }
            cmds.push(Command::Load { line: ln, series, histograms });
        } else if word.starts_with("eval") {
            cmds.push(Command::Eval(Box::new(parse_eval(ln, line, &word, &block)?)));
        } else {
            return perr(ln, format!("unknown command {word:?}"));
        }
    }
    Ok(cmds)
}

fn parse_eval(ln: usize, line: &str, word: &str, block: &[(usize, &str)]) -> Result<EvalCmd, ParseError> {
    let rest = line[word.len()..].trim_start();
    let (kind, expr) = if let Some(r) = rest.strip_prefix("instant at ") {
        let r = r.trim_start();
        let (t, e) = r.split_once(char::is_whitespace).ok_or_else(|| ParseError { line: ln, msg: "no expr".into() })?;
        (EvalKind::Instant { t: parse_duration(t).ok_or_else(|| ParseError { line: ln, msg: "bad time".into() })? }, e)
    } else if let Some(r) = rest.strip_prefix("range from ") {
        let mut it = r.splitn(6, char::is_whitespace);
        let (start, to, end, stepw, step, e) = (it.next(), it.next(), it.next(), it.next(), it.next(), it.next());
        if to != Some("to") || stepw != Some("step") {
            return perr(ln, "bad range eval");
        }
        let d = |x: Option<&str>| {
            x.and_then(parse_duration).ok_or_else(|| ParseError { line: ln, msg: "bad duration".into() })
        };
        let (start, end, step) = (d(start)?, d(end)?, d(step)?);
        if end < start {
            return perr(ln, "end before start");
        }
        (EvalKind::Range { start, end, step }, e.unwrap_or(""))
    } else {
        return perr(ln, format!("bad eval line {line:?}"));
    };
    let mut cmd = EvalCmd {
        line: ln,
        expr: expr.trim().to_owned(),
        kind,
        fail: None,
        warn: Annot::default(),
        info: Annot::default(),
        ordered: word == "eval_ordered",
        expected: Expected::Series(Vec::new()),
        expects_histograms: false,
    };
    match word {
        "eval_fail" => cmd.fail = Some(Matcher::Any),
        "eval_warn" => {
            cmd.warn.checked = true;
            cmd.warn.expect.push(Matcher::Any);
        }
        "eval_info" => {
            cmd.info.checked = true;
            cmd.info.expect.push(Matcher::Any);
        }
        _ => {}
    }
    let mut series = Vec::new();
    for &(bn, bl) in block {
        if let Some(r) = bl.strip_prefix("expect ") {
            let r = r.trim();
            let (kw, tail) = r.split_once(char::is_whitespace).unwrap_or((r, ""));
            match kw {
                "fail" => cmd.fail = Some(annot_line(tail)),
                "warn" => {
                    cmd.warn.checked = true;
                    cmd.warn.expect.push(annot_line(tail));
                }
                "info" => {
                    cmd.info.checked = true;
                    cmd.info.expect.push(annot_line(tail));
                }
                "no_warn" => {
                    cmd.warn.checked = true;
                    cmd.warn.none = true;
                }
                "no_info" => {
                    cmd.info.checked = true;
                    cmd.info.none = true;
                }
                "ordered" => cmd.ordered = true,
                "string" => {
                    let t = tail.trim();
                    let s = t.trim_matches(|c| c == '"' || c == '`');
                    cmd.expected = Expected::String(unescape(s));
                }
                "range" => {
                    // expect range vector from A to B step C
                    let w: Vec<&str> = tail.split_whitespace().collect();
                    if w.len() != 7 || w[0] != "vector" {
                        return perr(bn, "bad expect range vector");
                    }
                    let (Some(start), Some(step)) = (parse_duration(w[2]), parse_duration(w[6])) else {
                        return perr(bn, "bad expect range vector grid");
                    };
                    cmd.expected = Expected::RangeVector { start, step, series: Vec::new() };
                }
                _ => return perr(bn, format!("unknown expectation {kw:?}")),
            }
            continue;
        }
        if let Some(m) = bl.strip_prefix("expected_fail_message ") {
            cmd.fail = Some(Matcher::Msg(m.trim().to_owned()));
            continue;
        }
        if let Some(m) = bl.strip_prefix("expected_fail_regexp ") {
            cmd.fail = Some(Matcher::Regex(m.trim().to_owned()));
            continue;
        }
        // A bare number is a scalar result.
        if !bl.contains(['{', ' '])
            && let Some(v) = parse_float(bl)
        {
            cmd.expected = Expected::Scalar(v);
            continue;
        }
        let (labels, vals, hist) = parse_series_line(bl, bn)?;
        if hist {
            cmd.expects_histograms = true;
        }
        series.push((labels, vals));
    }
    match &mut cmd.expected {
        Expected::Series(s) => *s = series,
        Expected::RangeVector { series: s, .. } => *s = series,
        _ => {}
    }
    Ok(cmd)
}

fn unescape(s: &str) -> String {
    s.replace("\\\"", "\"").replace("\\\\", "\\").replace("\\n", "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_expand() {
        let v = parse_values("1 _ 0+10x2 5-1x2 stale _x2 1x1 0x1 -Inf 1m 1e-3+1e-3x1").expect("parses");
        let f = |s: Slot| s.map(|x| if cairn_common::is_stale_nan(x) { -999.0 } else { x });
        let got: Vec<Option<f64>> = v.into_iter().map(f).collect();
        assert_eq!(
            got,
            vec![
                Some(1.0),
                None,
                Some(0.0),
                Some(10.0),
                Some(20.0),
                Some(5.0),
                Some(4.0),
                Some(3.0),
                Some(-999.0),
                None,
                None,
                Some(1.0),
                Some(1.0),
                Some(0.0),
                Some(0.0),
                Some(f64::NEG_INFINITY),
                Some(60.0),
                Some(0.001),
                Some(0.002),
            ]
        );
    }

    #[test]
    fn scripts_parse() {
        let text = "load 5m\n  http{job=\"a b\"} 1 2\n\neval instant at 5m http\n  http{job=\"a b\"} 2\n\neval range from 0 to 5m step 5m sum(http)\n  {} 1 2\n\neval instant at 0 1\n  1\n\nclear\n";
        let cmds = parse(text).expect("parses");
        assert_eq!(cmds.len(), 5);
        let Command::Eval(e) = &cmds[2] else { panic!("eval") };
        assert_eq!(e.kind, EvalKind::Range { start: 0, end: 300_000, step: 300_000 });
        let Command::Eval(e) = &cmds[3] else { panic!("eval") };
        assert!(matches!(e.expected, Expected::Scalar(v) if v == 1.0));
    }
}
