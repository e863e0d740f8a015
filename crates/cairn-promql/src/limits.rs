//! Limits on query text, checked before anything recursive runs.
//!
//! The parser, the planner, the evaluator, the formatter and even dropping
//! the syntax tree recurse once per level of the tree, so a short query
//! such as `1+1+...+1` or `((((...))))` could overflow a thread's stack and
//! abort the whole process. [`scan`] walks the text once, without
//! recursion, mirroring promql-parser's lexer, and bounds the depth of the
//! tree the parser would build; [`ExprLimits::check`] refuses a query over
//! the limits with an error that names them.
//!
//! The bound: every node with children is created by a token of its own
//! (a binary operator, a unary sign, an opening parenthesis of a group,
//! call or aggregation, the `[` of a subquery), and a node's children lie
//! inside the parentheses that enclose that token. So the depth is at most
//! one plus, along the deepest chain of nested parentheses, the number of
//! parenthesis levels and of such tokens directly inside each level. The
//! scan counts exactly that; tokens that create no node (a unary `+`,
//! `by (...)`, `[5m]`) only make the bound larger, never smaller.

use std::collections::BTreeSet;

use crate::error::EvalError;

/// Limits on one PromQL expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExprLimits {
    /// Longest query text in bytes (0 = no limit).
    pub max_bytes: usize,
    /// Deepest syntax tree (0 = no limit; the thread's stack is then the
    /// limit, and exceeding it aborts the process).
    pub max_depth: usize,
}

/// The default depth limit. A level of the tree costs at most about 12 KiB
/// of stack in the deepest recursion (evaluating nested calls in a debug
/// build, less in a release build): 500 levels take 6 MiB of the 32 MiB
/// every runtime thread of Cairn has, and lie far above what real queries
/// use (dashboards rarely pass 20).
pub const DEFAULT_MAX_DEPTH: usize = 500;
/// The default length limit: 256 KiB, room for label regexes listing
/// thousands of values.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024;

impl Default for ExprLimits {
    fn default() -> Self {
        Self { max_bytes: DEFAULT_MAX_BYTES, max_depth: DEFAULT_MAX_DEPTH }
    }
}

impl ExprLimits {
    /// Checks `q` against the limits and returns what the scan found.
    pub fn check(&self, q: &str) -> Result<Scan, EvalError> {
        if self.max_bytes > 0 && q.len() > self.max_bytes {
            return Err(EvalError::BadData(format!(
                "the query is {} bytes long, more than the limit of {} (raise --query.max-expression-bytes)",
                q.len(),
                self.max_bytes
            )));
        }
        let found = scan(q);
        if let Some(bad) = &found.bad_string {
            return Err(EvalError::BadData(format!("invalid escape sequence {bad:?} in a string")));
        }
        if let Some(bad) = &found.bad_duration {
            return Err(EvalError::BadData(format!(
                "duration {bad:?} out of range: at most {MAX_DURATION_SECS} seconds (292 years)"
            )));
        }
        if self.max_depth > 0 && found.depth > self.max_depth {
            return Err(EvalError::BadData(format!(
                "the query nests up to {} levels deep (operators, parentheses, calls), more than the limit of {} (raise --query.max-expression-depth)",
                found.depth, self.max_depth
            )));
        }
        Ok(found)
    }
}

/// What one pass over the query text found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// An upper bound on the depth of the syntax tree.
    pub depth: usize,
    /// String literals that Prometheus decodes to bytes that are not UTF-8
    /// (`"\xff"`), as promql-parser decodes them instead (to valid UTF-8,
    /// `"ÿ"`). A label name among them is invalid, as in Prometheus.
    pub invalid_utf8: BTreeSet<String>,
    /// A duration written as a plain number of seconds (`x[1e30]`, `offset
    /// 1e30`) that does not fit Prometheus's durations, which the parser
    /// would not survive.
    pub bad_duration: Option<String>,
    /// An escape sequence the parser would not survive.
    pub bad_string: Option<String>,
}

/// The longest duration Prometheus represents: an `i64` of nanoseconds.
pub const MAX_DURATION_SECS: f64 = 9_223_372_036.0;

/// A plain number of seconds out of range, if `tok` is one.
fn out_of_range(tok: &str) -> Option<String> {
    let tok = tok.trim();
    let v = match tok.parse::<f64>() {
        Ok(v) => v,
        Err(_) => match tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16).map(|v| v as f64).unwrap_or(f64::INFINITY),
            None => return None,
        },
    };
    (!(0.0..=MAX_DURATION_SECS).contains(&v)).then(|| tok.to_owned())
}

/// Counts of one parenthesis level: node-creating tokens directly in it,
/// and the deepest bound among the levels nested in it.
#[derive(Default)]
struct Level {
    tokens: usize,
    deepest_child: usize,
}

/// One pass over `q`, mirroring the modes of promql-parser's lexer: the
/// top level, inside `{...}`, inside `[...]`, strings and comments.
pub fn scan(q: &str) -> Scan {
    let b = q.as_bytes();
    let mut levels: Vec<Level> = vec![Level::default()];
    let mut invalid_utf8 = BTreeSet::new();
    let mut bad_duration = None;
    let mut bad_string = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => i = skip_comment(b, i),
            b'"' | b'\'' | b'`' => {
                let end = skip_string(b, i);
                if c != b'`' {
                    if let Some(bad) = bad_escape(&b[i..end]) {
                        bad_string.get_or_insert(bad);
                    } else if let Some(decoded) = q.get(i..end).and_then(invalid_literal) {
                        invalid_utf8.insert(decoded);
                    }
                }
                i = end;
            }
            b'{' => {
                // Label matchers: strings may hold `}`; no expressions.
                i += 1;
                while i < b.len() && b[i] != b'}' {
                    match b[i] {
                        q @ (b'"' | b'\'' | b'`') => {
                            let end = skip_string(b, i);
                            if q != b'`'
                                && let Some(bad) = bad_escape(&b[i..end])
                            {
                                bad_string.get_or_insert(bad);
                            }
                            i = end;
                        }
                        b'#' => i = skip_comment(b, i),
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            b'[' => {
                // A range or subquery: durations only, but a subquery is
                // a node of its own.
                top(&mut levels).tokens += 1;
                let start = i + 1;
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
                for part in q.get(start..i).unwrap_or("").split(':') {
                    bad_duration = bad_duration.or_else(|| out_of_range(part));
                }
                i += 1;
            }
            b'(' => {
                levels.push(Level::default());
                i += 1;
            }
            b')' => {
                if levels.len() > 1 {
                    let done = levels.pop().unwrap_or_default();
                    let parent = top(&mut levels);
                    parent.deepest_child = parent.deepest_child.max(1 + done.tokens + done.deepest_child);
                }
                i += 1;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' => {
                top(&mut levels).tokens += 1;
                i += 1;
            }
            b'=' | b'!' | b'<' | b'>' => {
                top(&mut levels).tokens += 1;
                i += if b.get(i + 1) == Some(&b'=') { 2 } else { 1 };
            }
            _ if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) => {
                i = number_end(b, i);
            }
            _ if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let word = &q[start..i];
                if ["and", "or", "unless", "atan2"].iter().any(|k| word.eq_ignore_ascii_case(k)) {
                    top(&mut levels).tokens += 1;
                }
                if word.eq_ignore_ascii_case("offset") {
                    // `offset [+-] duration`, comments allowed between.
                    let mut j = i;
                    while j < b.len() {
                        match b[j] {
                            b'#' => j = skip_comment(b, j),
                            c if c.is_ascii_whitespace() || c == b'+' || c == b'-' => j += 1,
                            _ => break,
                        }
                    }
                    let end = if j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.') { number_end(b, j) } else { j };
                    bad_duration = bad_duration.or_else(|| out_of_range(&q[j..end]));
                }
            }
            _ => i += 1,
        }
    }
    // Unclosed parentheses (a syntax error) still count.
    while levels.len() > 1 {
        let done = levels.pop().unwrap_or_default();
        let parent = top(&mut levels);
        parent.deepest_child = parent.deepest_child.max(1 + done.tokens + done.deepest_child);
    }
    let root = top(&mut levels);
    Scan { depth: 1 + root.tokens + root.deepest_child, invalid_utf8, bad_duration, bad_string }
}

fn top(levels: &mut Vec<Level>) -> &mut Level {
    if levels.is_empty() {
        levels.push(Level::default());
    }
    let last = levels.len() - 1;
    &mut levels[last]
}

/// The index after the number or duration starting at `i` (a digit or a
/// `.`); an exponent's sign belongs to it, as in the lexer.
fn number_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        let d = b[i];
        let sign = (d == b'+' || d == b'-') && matches!(b[i - 1], b'e' | b'E') && !is_hex_number(&b[..i]);
        if !(d.is_ascii_alphanumeric() || d == b'.' || d == b'_' || sign) {
            break;
        }
        i += 1;
    }
    i
}

fn is_hex_number(before: &[u8]) -> bool {
    let start =
        before.iter().rposition(|c| !(c.is_ascii_alphanumeric() || *c == b'.' || *c == b'_')).map_or(0, |p| p + 1);
    let n = &before[start..];
    n.len() > 1 && n[0] == b'0' && (n[1] == b'x' || n[1] == b'X')
}

/// The index after a `#` comment (which ends at a line break).
fn skip_comment(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
        i += 1;
    }
    i
}

/// The index after the string starting at `i`; a backslash escapes one
/// character, in every kind of quote (as the lexer reads them). The escaped
/// character may take several bytes: the index stays on a character
/// boundary (found by fuzzing).
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j = (j + 1 + utf8_width(b.get(j + 1).copied())).min(b.len()),
            c if c == quote => return j + 1,
            _ => j += 1,
        }
    }
    b.len()
}

/// Bytes of the UTF-8 character starting with `lead`.
fn utf8_width(lead: Option<u8>) -> usize {
    match lead {
        None => 0,
        Some(b) if b < 0x80 => 1,
        Some(b) if b >= 0xf0 => 4,
        Some(b) if b >= 0xe0 => 3,
        Some(_) => 2,
    }
}

/// An escape in a quoted literal (with its quotes) whose digits are not
/// ASCII (`"\x\u{323}"`): promql-parser slices such an escape in the
/// middle of a character and panics (found by fuzzing), so it is refused
/// first.
fn bad_escape(lit: &[u8]) -> Option<String> {
    let body = lit.get(1..lit.len().saturating_sub(1))?;
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            i += 1;
            continue;
        }
        let digits = match body.get(i + 1) {
            Some(b'x') => 2,
            Some(b'0'..=b'7') => 2,
            Some(b'u') => 4,
            Some(b'U') => 8,
            Some(c) if c.is_ascii() => 0,
            _ => return Some(String::from_utf8_lossy(&body[i..(i + 4).min(body.len())]).into_owned()),
        };
        let end = (i + 2 + digits).min(body.len());
        if !body[i + 2..end].is_ascii() {
            return Some(String::from_utf8_lossy(&body[i..end]).into_owned());
        }
        i += 2 + digits;
    }
    None
}

/// For a quoted literal (with its quotes) whose Go decoding is not UTF-8:
/// how promql-parser decodes it. `None` for every other literal.
fn invalid_literal(lit: &str) -> Option<String> {
    if lit.len() < 2 || !lit.contains('\\') {
        return None;
    }
    let bytes = go_unquote(&lit.as_bytes()[1..lit.len() - 1])?;
    if std::str::from_utf8(&bytes).is_ok() {
        return None;
    }
    promql_parser::util::unquote_string(lit).ok()
}

/// Decodes escapes as Go's `strconv.Unquote` does: `\xHH` and octal
/// `\OOO` are single bytes, which may not form UTF-8. `None` when an
/// escape is malformed (the parser reports it).
fn go_unquote(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    let hex = |d: &[u8]| -> Option<u32> { u32::from_str_radix(std::str::from_utf8(d).ok()?, 16).ok() };
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let e = *s.get(i + 1)?;
        i += 2;
        match e {
            b'x' => {
                out.push(u8::try_from(hex(s.get(i..i + 2)?)?).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let o = u32::from_str_radix(std::str::from_utf8(s.get(i - 1..i + 2)?).ok()?, 8).ok()?;
                out.push(u8::try_from(o).ok()?);
                i += 2;
            }
            b'u' | b'U' => {
                let n = if e == b'u' { 4 } else { 8 };
                let ch = char::from_u32(hex(s.get(i..i + n)?)?)?;
                out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                i += n;
            }
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            other => out.push(other),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use promql_parser::parser::Expr;

    use super::*;

    /// The real depth of a parsed tree, iteratively.
    fn depth(e: &Expr) -> usize {
        let mut max = 0;
        let mut stack = vec![(e, 1usize)];
        while let Some((e, d)) = stack.pop() {
            max = max.max(d);
            match e {
                Expr::Aggregate(a) => {
                    stack.push((&a.expr, d + 1));
                    if let Some(p) = &a.param {
                        stack.push((p, d + 1));
                    }
                }
                Expr::Unary(u) => stack.push((&u.expr, d + 1)),
                Expr::Binary(b) => {
                    stack.push((&b.lhs, d + 1));
                    stack.push((&b.rhs, d + 1));
                }
                Expr::Paren(p) => stack.push((&p.expr, d + 1)),
                Expr::Subquery(s) => stack.push((&s.expr, d + 1)),
                Expr::Call(c) => stack.extend(c.args.args.iter().map(|a| (a.as_ref(), d + 1))),
                _ => {}
            }
        }
        max
    }

    #[test]
    fn bounds_the_depth_of_real_queries() {
        for q in [
            "up",
            "1",
            "-1",
            "1 + 2 * 3",
            "sum by (job) (rate(http_requests_total{code=~\"5..\"}[5m])) / on (job) group_left sum(x)",
            "max_over_time(deriv(rate(x[1m])[5m:1m])[10m:])",
            "-(-(-x))",
            "a and b or c unless d",
            "a atan2 b ATAN2 c",
            "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
            "x offset -5m @ 100 + y",
            "1e+3 + 0x1f - .5",
            "label_replace(up, \"a\", \"$1\", \"b\", \"(.*)\")",
            "up{a=\"(((\", b='}}}'} # a comment with ((( and +++\n + 1",
            "count_values(\"v\", x) > bool 2",
            "sum(x) by (a) - topk(3, y)",
        ] {
            let e = promql_parser::parser::parse(q).unwrap_or_else(|err| panic!("{q}: {err}"));
            let bound = scan(q).depth;
            assert!(bound >= depth(&e), "{q}: bound {bound} below real depth {}", depth(&e));
            assert!(bound <= depth(&e) + 8, "{q}: bound {bound} far above real depth {}", depth(&e));
        }
    }

    #[test]
    fn long_chains_and_nesting_are_counted() {
        let chain = vec!["1"; 300].join("+");
        assert!(scan(&chain).depth >= 300);
        let nested = format!("{}1{}", "(".repeat(300), ")".repeat(300));
        assert!(scan(&nested).depth >= 300);
        let calls = format!("{}x{}", "abs(".repeat(100), ")".repeat(100));
        assert!(scan(&calls).depth >= 100);
        let limits = ExprLimits { max_bytes: 0, max_depth: 200 };
        let err = limits.check(&chain).expect_err("too deep");
        assert!(err.to_string().contains("--query.max-expression-depth"), "{err}");
        let err = ExprLimits { max_bytes: 10, max_depth: 0 }.check(&chain).expect_err("too long");
        assert!(err.to_string().contains("--query.max-expression-bytes"), "{err}");
        assert!(limits.check("sum(rate(x[5m]))").is_ok());
    }

    #[test]
    fn durations_the_parser_would_not_survive_are_refused() {
        let limits = ExprLimits::default();
        for q in [
            "rate(x[7555555555555555555555555])",
            "x[1m:1e30]",
            "x offset 1e30",
            "x offset 1e+30",
            "x offset # a comment\n 1e30",
            "x offset -0xffffffffffffffff",
        ] {
            let e = limits.check(q).expect_err(q);
            assert!(e.to_string().contains("out of range"), "{q}: {e}");
        }
        for q in ["rate(x[300])", "x[5m:30]", "x offset 1.5", "x offset -5m", "x[9223372036]"] {
            assert!(limits.check(q).is_ok(), "{q}");
            promql_parser::parser::parse(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        }
    }

    #[test]
    fn escaped_multibyte_characters_keep_the_scan_on_char_boundaries() {
        for q in ["f(\"\\\u{323}\")", "f('\\\u{1f600}')", "\"\\\u{e9}", "{a=\"\\\u{e9}\"}"] {
            let _ = scan(q);
        }
        // Escapes whose digits are not ASCII are refused, not parsed.
        let limits = ExprLimits::default();
        for q in [
            "label_replace(up, \"\\x\u{323}\u{323}\", \"\", \"a\", \"b\")",
            "\"\\u\u{e9}\u{e9}\"",
            "'\\\u{323}'",
            "x{a=\"\\x\u{323}\u{323}\"}",
        ] {
            let e = limits.check(q).expect_err(q);
            assert!(e.to_string().contains("invalid escape"), "{q}: {e}");
        }
        assert!(limits.check("\"\\x41\\u00e9 \\n é\"").is_ok());
    }

    #[test]
    fn finds_literals_that_are_not_utf8_in_go() {
        let s = scan(r#"label_replace(up, "\xff", "", "src", "(.*)")"#);
        assert_eq!(s.invalid_utf8.into_iter().collect::<Vec<_>>(), vec!["\u{ff}".to_owned()]);
        let s = scan(r#"label_join(x, "\377", "\u00ff", '\xc3\xbf', `\xff`)"#);
        assert_eq!(s.invalid_utf8.len(), 1, "only \\377 is a lone byte: {:?}", s.invalid_utf8);
    }

    proptest::proptest! {
        /// Whatever the text, the scan terminates without panicking, and
        /// when it parses, the bound holds.
        #[test]
        fn never_panics_and_bounds_what_parses(q in "[-+*/%^()\\[\\]{}a-z0-9 :=!<>\"'`#\\\\.,@]{0,60}") {
            let s = scan(&q);
            if let Ok(Ok(e)) = std::panic::catch_unwind(|| promql_parser::parser::parse(&q)) {
                proptest::prop_assert!(s.depth >= depth(&e), "{}: {} < {}", q, s.depth, depth(&e));
            }
        }
    }
}
