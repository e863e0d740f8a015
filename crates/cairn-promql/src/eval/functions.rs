//! Function calls.

use cairn_common::{Labels, METRIC_NAME};
use chrono::{DateTime, Datelike, Timelike};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{Call, Expr};

use super::range_functions;
use super::{Evaluator, merge_same_labels};
use crate::error::{EvalError, Result, exec};
use crate::value::{Grid, Points, StepSeries, Value};

fn arg(c: &Call, i: usize) -> Result<&Expr> {
    c.args
        .args
        .get(i)
        .map(|b| &**b)
        .ok_or_else(|| EvalError::BadData(format!("missing argument {} of {}()", i + 1, c.func.name)))
}

fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

pub(super) fn call(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Value> {
    let name = c.func.name;
    if let Some((f, keep_name)) = range_functions::lookup(name) {
        return range_call(ev, c, g, name, f, keep_name);
    }
    let n = g.len();
    // Several functions make a column of the grid's length from nothing
    // (`time()`, `vector(1)`, `pi()`): on a subquery's grid that can be
    // anything, so it is charged before any of them allocates.
    ev.charge_points(n)?;
    let v = match name {
        "time" => Value::Scalar(g.times().map(|t| t as f64 / 1000.0).collect()),
        "pi" => Value::Scalar(vec![std::f64::consts::PI; n]),
        "vector" => {
            let s = ev.eval_scalar(arg(c, 0)?, g)?;
            let mut points = Points::new(n);
            for (i, v) in s.into_iter().enumerate() {
                points.set(i, v);
            }
            Value::Vector(vec![StepSeries::new(Labels::default(), points)])
        }
        "scalar" => {
            let v = ev.eval_vector(arg(c, 0)?, g)?;
            let mut out = vec![f64::NAN; n];
            let mut count = vec![0u32; n];
            for s in &v {
                for (i, x) in s.points.iter() {
                    count[i] += 1;
                    out[i] = x;
                }
            }
            for i in 0..n {
                if count[i] != 1 {
                    out[i] = f64::NAN;
                }
            }
            Value::Scalar(out)
        }
        "timestamp" => Value::Vector(timestamp(ev, c, g)?),
        "absent" => Value::Vector(absent(ev, c, g)?),
        "sort" | "sort_desc" => {
            warn_sort_in_range_query(ev);
            let mut v = ev.eval_vector(arg(c, 0)?, g)?;
            if n == 1 {
                sort_by_value(&mut v, name == "sort_desc");
            }
            Value::Vector(v)
        }
        "sort_by_label" | "sort_by_label_desc" => {
            warn_sort_in_range_query(ev);
            let mut v = ev.eval_vector(arg(c, 0)?, g)?;
            let mut names = Vec::new();
            for a in &c.args.args[1..] {
                names.push(string_arg(ev, a, g)?);
            }
            sort_by_labels(&mut v, &names, name == "sort_by_label_desc");
            Value::Vector(v)
        }
        "label_replace" => Value::Vector(label_replace(ev, c, g)?),
        "label_join" => Value::Vector(label_join(ev, c, g)?),
        "histogram_quantile" => Value::Vector(super::aggregate::histogram_quantile(ev, c, g)?),
        "histogram_quantiles" => Value::Vector(super::aggregate::histogram_quantiles(ev, c, g)?),
        "histogram_fraction" => Value::Vector(super::aggregate::histogram_fraction(ev, c, g)?),
        "step" => Value::Scalar(vec![ev.timing.query_step as f64 / 1000.0; n]),
        "range" => Value::Scalar(vec![(ev.timing.query_end as f64 - ev.timing.query_start as f64) / 1000.0; n]),
        "start" => Value::Scalar(vec![ev.timing.query_start as f64 / 1000.0; n]),
        "end" => Value::Scalar(vec![ev.timing.query_end as f64 / 1000.0; n]),
        "min_of" | "max_of" => {
            let a = ev.eval_scalar(arg(c, 0)?, g)?;
            let b = ev.eval_scalar(arg(c, 1)?, g)?;
            let pick = if name == "min_of" { go_min } else { go_max };
            Value::Scalar(a.iter().zip(&b).map(|(x, y)| pick(*x, *y)).collect())
        }
        "round" => {
            let mut v = ev.eval_vector(arg(c, 0)?, g)?;
            let to = match c.args.args.get(1) {
                Some(e) => ev.eval_scalar(e, g)?,
                None => vec![1.0; n],
            };
            map_steps(&mut v, |i, x| {
                let inv = 1.0 / to[i];
                // Round half up, as Prometheus does: floor(x*inv + 0.5) / inv.
                (x * inv + 0.5).floor() / inv
            });
            Value::Vector(drop_names(ev, v)?)
        }
        "clamp" | "clamp_min" | "clamp_max" => {
            let mut v = ev.eval_vector(arg(c, 0)?, g)?;
            let a = ev.eval_scalar(arg(c, 1)?, g)?;
            let b = if name == "clamp" { ev.eval_scalar(arg(c, 2)?, g)? } else { Vec::new() };
            if name == "clamp" {
                // An empty range (min > max) yields nothing at that step.
                for s in &mut v {
                    for i in 0..n {
                        if a[i] > b[i] {
                            s.points.clear(i);
                        }
                    }
                }
            }
            map_steps(&mut v, |i, x| match name {
                "clamp" => x.max(a[i]).min(b[i]),
                "clamp_min" => x.max(a[i]),
                _ => x.min(a[i]),
            });
            v.retain(|s| !s.points.is_empty());
            Value::Vector(drop_names(ev, v)?)
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute" | "month" | "year" => {
            let mut v = match c.args.args.first() {
                Some(e) => ev.eval_vector(e, g)?,
                None => {
                    let mut points = Points::new(n);
                    for (i, t) in g.times().enumerate() {
                        points.set(i, t as f64 / 1000.0);
                    }
                    vec![StepSeries::new(Labels::default(), points)]
                }
            };
            map_steps(&mut v, |_, x| date_part(name, x));
            Value::Vector(drop_names(ev, v)?)
        }
        _ => match math_fn(name) {
            Some(f) => {
                let mut v = ev.eval_vector(arg(c, 0)?, g)?;
                map_steps(&mut v, |_, x| f(x));
                Value::Vector(drop_names(ev, v)?)
            }
            None => return exec(format!("function {name}() is not supported")),
        },
    };
    Ok(v)
}

fn range_call(
    ev: &mut Evaluator<'_>,
    c: &Call,
    g: &Grid,
    name: &str,
    f: range_functions::WindowFn,
    keep_name: bool,
) -> Result<Value> {
    let n = g.len();
    let (range_arg, scalars): (&Expr, Vec<&Expr>) = match name {
        "quantile_over_time" => (arg(c, 1)?, vec![arg(c, 0)?]),
        _ => (arg(c, 0)?, c.args.args[1..].iter().map(|b| &**b).collect()),
    };
    ev.meter.charge_items(2 * n, 8)?;
    let mut args: Vec<Vec<f64>> = Vec::new();
    for e in scalars {
        args.push(ev.eval_scalar(e, g)?);
    }
    let a0 = args.first().cloned().unwrap_or_else(|| vec![0.0; n]);
    let a1 = args.get(1).cloned().unwrap_or_else(|| vec![0.0; n]);
    if name == "quantile_over_time"
        && let Some(q) = a0.iter().find(|q| !(0.0..=1.0).contains(*q))
    {
        ev.annotations.warnings.insert(format!("PromQL warning: quantile value should be between 0 and 1, got {q}"));
    }
    if name == "double_exponential_smoothing" || name == "holt_winters" {
        for (label, v) in [("smoothing", &a0), ("trend", &a1)] {
            if let Some(bad) = v.iter().find(|x| !(**x > 0.0 && **x < 1.0)) {
                return exec(format!("invalid {label} factor. Expected: 0 < sf < 1, got: {bad:.6}"));
            }
        }
    }
    if name == "absent_over_time" {
        let rv = ev.eval_range(range_arg, g)?;
        ev.meter.charge(rv.series.len().saturating_mul(super::points_bytes(n)))?;
        return Ok(Value::Vector(absent_steps(
            n,
            &rv.series
                .iter()
                .map(|s| {
                    let mut p = Points::new(n);
                    for (i, w) in rv.windows(&s.samples) {
                        if !w.is_empty() {
                            p.set(i, 1.0);
                        }
                    }
                    p
                })
                .collect::<Vec<_>>(),
            absent_labels(range_arg),
        )));
    }
    let rv = ev.eval_range(range_arg, g)?;
    let out = range_functions::apply(ev, &rv, g, f, keep_name, (&a0, &a1))?;
    Ok(Value::Vector(out))
}

fn warn_sort_in_range_query(ev: &mut Evaluator<'_>) {
    if ev.timing.query_step > 0 {
        ev.annotations.warnings.insert(
            "PromQL warning: sort is ineffective for range queries since results are always ordered by labels".into(),
        );
    }
}

/// Go's `math.Min`: NaN wins, and -0 is less than +0.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_negative() { a } else { b }
    } else {
        a.min(b)
    }
}

/// Go's `math.Max`: NaN wins, and +0 is greater than -0.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a == 0.0 && b == 0.0 {
        if a.is_sign_positive() { a } else { b }
    } else {
        a.max(b)
    }
}

fn math_fn(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |x: f64| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => |x: f64| x * 180.0 / std::f64::consts::PI,
        "rad" => |x: f64| x * std::f64::consts::PI / 180.0,
        _ => return None,
    })
}

fn map_steps(v: &mut [StepSeries], mut f: impl FnMut(usize, f64) -> f64) {
    for s in v {
        let updates: Vec<(usize, f64)> = s.points.iter().map(|(i, x)| (i, f(i, x))).collect();
        for (i, x) in updates {
            s.points.set(i, x);
        }
    }
}

/// Drops `__name__` from every series (now, or at the end with delayed
/// name removal); series that then collide merge.
pub(crate) fn drop_names(ev: &Evaluator<'_>, mut v: Vec<StepSeries>) -> Result<Vec<StepSeries>> {
    for s in &mut v {
        ev.drop_name(s);
    }
    ev.settle_names(v)
}

fn string_arg(ev: &mut Evaluator<'_>, e: &Expr, g: &Grid) -> Result<String> {
    match ev.eval(e, g)? {
        Value::String(s) => Ok(s),
        other => Err(EvalError::BadData(format!("expected string argument, got {}", other.type_name()))),
    }
}

fn date_part(name: &str, x: f64) -> f64 {
    let secs = if x.is_finite() { x as i64 } else { i64::MIN };
    let Some(dt) = DateTime::from_timestamp(secs, 0) else { return f64::NAN };
    match name {
        "day_of_month" => dt.day() as f64,
        "day_of_week" => dt.weekday().num_days_from_sunday() as f64,
        "day_of_year" => dt.ordinal() as f64,
        "days_in_month" => {
            let (y, m) = (dt.year(), dt.month());
            let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let first_next = chrono::NaiveDate::from_ymd_opt(next.0, next.1, 1);
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
            match (first, first_next) {
                (Some(a), Some(b)) => (b - a).num_days() as f64,
                _ => f64::NAN,
            }
        }
        "hour" => dt.hour() as f64,
        "minute" => dt.minute() as f64,
        "month" => dt.month() as f64,
        _ => dt.year() as f64,
    }
}

fn timestamp(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Vec<StepSeries>> {
    let a = arg(c, 0)?;
    if let Expr::VectorSelector(vs) = unwrap_parens(a) {
        // The timestamp of the sample the selector picked, not the step.
        let out = ev.select_instant_with(vs, g, true)?;
        return drop_names(ev, out);
    }
    let mut v = ev.eval_vector(a, g)?;
    map_steps(&mut v, |i, _| g.t(i) as f64 / 1000.0);
    drop_names(ev, v)
}

/// Labels `absent()` gives its result: the equality matchers of a plain
/// selector argument, minus names matched more than once.
fn absent_labels(e: &Expr) -> Labels {
    let vs = match e {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut labels = Labels::default();
    let mut seen = std::collections::HashSet::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, PMatchOp::Equal) && !seen.contains(&m.name) {
            labels.set(&m.name, &m.value);
            seen.insert(m.name.clone());
        } else {
            labels.remove(&m.name);
            seen.insert(m.name.clone());
        }
    }
    labels
}

fn absent_steps(n: usize, inputs: &[Points], labels: Labels) -> Vec<StepSeries> {
    let mut points = Points::new(n);
    for i in 0..n {
        if !inputs.iter().any(|p| p.has(i)) {
            points.set(i, 1.0);
        }
    }
    if points.is_empty() { Vec::new() } else { vec![StepSeries::new(labels, points)] }
}

fn absent(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Vec<StepSeries>> {
    let a = arg(c, 0)?;
    let v = ev.eval_vector(a, g)?;
    let points: Vec<Points> = v.into_iter().map(|s| s.points).collect();
    Ok(absent_steps(g.len(), &points, absent_labels(a)))
}

fn sort_by_value(v: &mut [StepSeries], desc: bool) {
    v.sort_by(|a, b| {
        let (x, y) = (a.points.get(0).unwrap_or(f64::NAN), b.points.get(0).unwrap_or(f64::NAN));
        match (x.is_nan(), y.is_nan()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
            _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        }
    });
}

fn sort_by_labels(v: &mut [StepSeries], names: &[String], desc: bool) {
    v.sort_by(|a, b| {
        let mut ord = std::cmp::Ordering::Equal;
        for n in names {
            ord = natural_cmp(a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
            if ord != std::cmp::Ordering::Equal {
                break;
            }
        }
        if ord == std::cmp::Ordering::Equal {
            ord = a.labels.cmp(&b.labels);
        }
        if desc { ord.reverse() } else { ord }
    });
}

/// Natural order: digit runs compare as numbers ("a2" < "a10").
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let lx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ly = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (nx, ny) = (&x[..lx], &y[..ly]);
                let tx = nx.iter().skip_while(|c| **c == b'0').collect::<Vec<_>>();
                let ty = ny.iter().skip_while(|c| **c == b'0').collect::<Vec<_>>();
                let ord = tx.len().cmp(&ty.len()).then_with(|| tx.cmp(&ty));
                if ord != std::cmp::Ordering::Equal {
                    return ord;
                }
                x = &x[lx..];
                y = &y[ly..];
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

fn label_replace(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Vec<StepSeries>> {
    let v = ev.eval_vector(arg(c, 0)?, g)?;
    let dst = string_arg(ev, arg(c, 1)?, g)?;
    let repl = string_arg(ev, arg(c, 2)?, g)?;
    let src = string_arg(ev, arg(c, 3)?, g)?;
    let re_src = string_arg(ev, arg(c, 4)?, g)?;
    let re = regex::Regex::new(&format!("^(?s:{re_src})$"))
        .map_err(|e| EvalError::Execution(format!("invalid regular expression in label_replace(): {re_src}: {e}")))?;
    if dst.is_empty() || !valid_label_name(&dst) {
        return exec(format!("invalid destination label name in label_replace(): {dst}"));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let val = s.labels.get(&src).unwrap_or("").to_owned();
        if let Some(caps) = re.captures(&val) {
            let mut res = String::new();
            caps.expand(&repl, &mut res);
            s.labels.set(&dst, &res);
            if dst == METRIC_NAME {
                // A name written explicitly is kept.
                s.drop_name = false;
            }
        }
        out.push(s);
    }
    merge_same_labels(out)
}

fn label_join(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Vec<StepSeries>> {
    let v = ev.eval_vector(arg(c, 0)?, g)?;
    let dst = string_arg(ev, arg(c, 1)?, g)?;
    let sep = string_arg(ev, arg(c, 2)?, g)?;
    let mut srcs = Vec::new();
    for a in c.args.args.iter().skip(3) {
        srcs.push(string_arg(ev, a, g)?);
    }
    if !valid_label_name(&dst) {
        return exec(format!("invalid destination label name in label_join(): {dst}"));
    }
    let mut out = Vec::with_capacity(v.len());
    for mut s in v {
        let joined = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect::<Vec<_>>().join(&sep);
        s.labels.set(&dst, &joined);
        if dst == METRIC_NAME {
            s.drop_name = false;
        }
        out.push(s);
    }
    merge_same_labels(out)
}

/// Any non-empty valid UTF-8 string is a label name in Prometheus 3.
fn valid_label_name(s: &str) -> bool {
    !s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        assert_eq!(natural_cmp("a2", "a10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("a10", "a10"), std::cmp::Ordering::Equal);
        assert_eq!(natural_cmp("b", "a10"), std::cmp::Ordering::Greater);
    }

    #[test]
    fn date_parts() {
        // 2024-02-29T13:45:00Z
        let t = 1_709_214_300.0;
        assert_eq!(date_part("days_in_month", t), 29.0);
        assert_eq!(date_part("day_of_week", t), 4.0);
        assert_eq!(date_part("hour", t), 13.0);
        assert_eq!(date_part("minute", t), 45.0);
        assert_eq!(date_part("day_of_year", t), 60.0);
    }
}
