//! Aggregation operators and `histogram_quantile`.

use std::collections::HashMap;

use cairn_common::Labels;
use promql_parser::parser::token::{
    T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_GROUP, T_LIMIT_RATIO, T_LIMITK, T_MAX, T_MIN, T_QUANTILE, T_STDDEV,
    T_STDVAR, T_SUM, T_TOPK,
};
use promql_parser::parser::{AggregateExpr, Call, LabelModifier};

use super::range_functions::quantile;
use super::{Evaluator, is_name_label, remove_name};
use crate::error::{EvalError, Result, exec};
use crate::kahan::{KahanSum, Mean, Variance};
use crate::value::{Grid, Points, StepSeries, Value, format_value, go_g};

/// Whether label `name` belongs to the group key.
fn in_group(name: &str, modifier: &Option<LabelModifier>) -> bool {
    match modifier {
        None => false,
        Some(LabelModifier::Include(by)) => by.labels.iter().any(|n| n == name),
        Some(LabelModifier::Exclude(without)) => !is_name_label(name) && !without.labels.iter().any(|n| n == name),
    }
}

/// The labels of the group a series belongs to.
fn group_labels(labels: &Labels, modifier: &Option<LabelModifier>) -> Labels {
    Labels::from_sorted(labels.iter().filter(|l| in_group(&l.name, modifier)).cloned().collect())
}

/// Hash of the group key of `labels`, computed without building it.
fn group_hash(labels: &Labels, modifier: &Option<LabelModifier>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in labels.iter().filter(|l| in_group(&l.name, modifier)) {
        l.name.hash(&mut h);
        l.value.hash(&mut h);
    }
    h.finish()
}

/// Whether `labels` fall in the group with key `key`.
fn same_group(labels: &Labels, key: &Labels, modifier: &Option<LabelModifier>) -> bool {
    labels.iter().filter(|l| in_group(&l.name, modifier)).eq(key.iter())
}

/// Assigns each series a group; groups are numbered in first-seen order.
/// A group's labels are built once, when the group is first seen.
fn grouping(v: &[StepSeries], modifier: &Option<LabelModifier>) -> (Vec<Labels>, Vec<usize>) {
    let mut groups: Vec<Labels> = Vec::new();
    let mut index: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut of = Vec::with_capacity(v.len());
    for s in v {
        let bucket = index.entry(group_hash(&s.labels, modifier)).or_default();
        let gi = match bucket.iter().copied().find(|&gi| same_group(&s.labels, &groups[gi], modifier)) {
            Some(gi) => gi,
            None => {
                groups.push(group_labels(&s.labels, modifier));
                bucket.push(groups.len() - 1);
                groups.len() - 1
            }
        };
        of.push(gi);
    }
    (groups, of)
}

pub(super) fn eval(ev: &mut Evaluator<'_>, a: &AggregateExpr, g: &Grid) -> Result<Value> {
    let op = a.op.id();
    let n = g.len();
    // The parameter is evaluated first, as Prometheus does.
    let param_scalar = match (op, &a.param) {
        (T_TOPK | T_BOTTOMK | T_QUANTILE | T_LIMITK | T_LIMIT_RATIO, Some(p)) => Some(ev.eval_scalar(p, g)?),
        _ => None,
    };
    let param_string = match (op, &a.param) {
        (T_COUNT_VALUES, Some(p)) => match ev.eval(p, g)? {
            Value::String(s) => Some(s),
            other => return exec(format!("expected string parameter, got {}", other.type_name())),
        },
        _ => None,
    };
    let v = ev.eval_vector(&a.expr, g)?;
    let out = match op {
        T_TOPK | T_BOTTOMK | T_LIMITK | T_LIMIT_RATIO => {
            let k = param_scalar.unwrap_or_default();
            select_k(ev, op, &k, v, &a.modifier, n)?
        }
        T_COUNT_VALUES => {
            let label = param_string.unwrap_or_default();
            count_values(ev, &label, &v, &a.modifier, n)?
        }
        T_QUANTILE => {
            let q = param_scalar.unwrap_or_default();
            if let Some(bad) = q.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                ev.annotations
                    .warnings
                    .insert(format!("PromQL warning: quantile value should be between 0 and 1, got {bad}"));
            }
            let (groups, of) = grouping(&v, &a.modifier);
            let values: usize = v.iter().map(|s| s.points.count()).sum();
            ev.meter.charge(groups.len().saturating_mul(n).saturating_mul(24).saturating_add(values * 8))?;
            let mut vals: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); n]; groups.len()];
            for (s, &gi) in v.iter().zip(&of) {
                for (i, x) in s.points.iter() {
                    vals[gi][i].push(x);
                }
            }
            let flags = group_flags(&v, &of, groups.len());
            groups
                .into_iter()
                .zip(vals)
                .zip(flags)
                .filter_map(|((labels, mut steps), drop_name)| {
                    let mut points = Points::new(n);
                    for (i, xs) in steps.iter_mut().enumerate() {
                        if !xs.is_empty() {
                            points.set(i, quantile(q[i], xs));
                        }
                    }
                    (!points.is_empty()).then_some(StepSeries { labels, points, drop_name })
                })
                .collect()
        }
        _ => simple(ev, op, &v, &a.modifier, n)?,
    };
    Ok(Value::Vector(out))
}

/// Aggregations with one accumulator per group and step.
fn simple(
    ev: &Evaluator<'_>,
    op: u16,
    v: &[StepSeries],
    modifier: &Option<LabelModifier>,
    n: usize,
) -> Result<Vec<StepSeries>> {
    #[derive(Clone, Copy)]
    enum Acc {
        None,
        Sum(KahanSum),
        Mean(Mean),
        Var(Variance),
        Val(f64),
    }
    let (groups, of) = grouping(v, modifier);
    // One accumulator per group and step, then a column per group.
    ev.meter.charge(groups.len().saturating_mul(n).saturating_mul(size_of::<Acc>() + 9))?;
    let mut acc = vec![Acc::None; groups.len() * n];
    for (si, (s, &gi)) in v.iter().zip(&of).enumerate() {
        if si % 1024 == 0 {
            ev.check_deadline()?;
        }
        for (i, x) in s.points.iter() {
            let a = &mut acc[gi * n + i];
            *a = match (op, *a) {
                (T_SUM, Acc::None) => {
                    let mut k = KahanSum::default();
                    k.add(x);
                    Acc::Sum(k)
                }
                (T_SUM, Acc::Sum(mut k)) => {
                    k.add(x);
                    Acc::Sum(k)
                }
                (T_AVG, Acc::None) => {
                    let mut m = Mean::default();
                    m.add(x);
                    Acc::Mean(m)
                }
                (T_AVG, Acc::Mean(mut m)) => {
                    m.add(x);
                    Acc::Mean(m)
                }
                (T_STDDEV | T_STDVAR, Acc::None) => {
                    let mut var = Variance::default();
                    var.add(x);
                    Acc::Var(var)
                }
                (T_STDDEV | T_STDVAR, Acc::Var(mut var)) => {
                    var.add(x);
                    Acc::Var(var)
                }
                (T_COUNT, Acc::None) => Acc::Val(1.0),
                (T_COUNT, Acc::Val(c)) => Acc::Val(c + 1.0),
                (T_GROUP, _) => Acc::Val(1.0),
                (T_MAX | T_MIN, Acc::None) => Acc::Val(x),
                (T_MAX, Acc::Val(cur)) => Acc::Val(if cur < x || cur.is_nan() { x } else { cur }),
                (T_MIN, Acc::Val(cur)) => Acc::Val(if cur > x || cur.is_nan() { x } else { cur }),
                _ => return exec(format!("unsupported aggregation operator {op}")),
            };
        }
    }
    let flags = group_flags(v, &of, groups.len());
    let mut out = Vec::with_capacity(groups.len());
    for (gi, labels) in groups.into_iter().enumerate() {
        let mut points = Points::new(n);
        for i in 0..n {
            let val = match acc[gi * n + i] {
                Acc::None => continue,
                Acc::Sum(k) => k.value(),
                Acc::Mean(m) => m.value(),
                Acc::Var(var) if op == T_STDDEV => var.stddev(),
                Acc::Var(var) => var.stdvar(),
                Acc::Val(x) => x,
            };
            points.set(i, val);
        }
        if !points.is_empty() {
            out.push(StepSeries { labels, points, drop_name: flags[gi] });
        }
    }
    Ok(out)
}

/// Whether each group's output name is to be dropped: when any of its
/// inputs' is (delayed name removal).
fn group_flags(v: &[StepSeries], of: &[usize], groups: usize) -> Vec<bool> {
    let mut flags = vec![false; groups];
    for (s, &gi) in v.iter().zip(of) {
        flags[gi] |= s.drop_name;
    }
    flags
}

/// `topk`, `bottomk`, `limitk` and `limit_ratio`: the chosen input series,
/// unchanged, at the steps where they were chosen.
fn select_k(
    ev: &mut Evaluator<'_>,
    op: u16,
    k: &[f64],
    v: Vec<StepSeries>,
    modifier: &Option<LabelModifier>,
    n: usize,
) -> Result<Vec<StepSeries>> {
    if op != T_LIMIT_RATIO {
        if k.iter().any(|x| x.is_nan()) {
            return exec("Parameter value is NaN");
        }
        if let Some(bad) = k.iter().find(|x| **x >= i64::MAX as f64 || **x < i64::MIN as f64) {
            return exec(format!("Scalar value {} overflows int64", go_g(*bad)));
        }
    } else if k.iter().any(|x| x.is_nan()) {
        return exec("Ratio value is NaN");
    } else if let Some(bad) = k.iter().find(|x| !(-1.0..=1.0).contains(*x)) {
        ev.annotations.warnings.insert(format!(
            "PromQL warning: ratio value should be between -1 and 1, got {}, capping to {}",
            go_g(*bad),
            go_g(bad.clamp(-1.0, 1.0))
        ));
    }
    let (groups, of) = grouping(&v, modifier);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups.len()];
    for (si, &gi) in of.iter().enumerate() {
        members[gi].push(si);
    }
    ev.meter.charge(v.len().saturating_mul(super::points_bytes(n)))?;
    let mut keep: Vec<Points> = v.iter().map(|_| Points::new(n)).collect();
    // The order of the chosen series at each step, for instant results.
    let mut order: Vec<usize> = Vec::new();
    for m in &members {
        ev.check_deadline()?;
        for i in 0..n {
            let present: Vec<usize> = m.iter().copied().filter(|&si| v[si].points.has(i)).collect();
            if present.is_empty() {
                continue;
            }
            let chosen: Vec<usize> = match op {
                T_LIMIT_RATIO => {
                    let r = k[i].clamp(-1.0, 1.0);
                    present
                        .into_iter()
                        .filter(|&si| {
                            let offset = v[si].labels.prometheus_hash() as f64 / u64::MAX as f64;
                            (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
                        })
                        .collect()
                }
                _ => {
                    let kk = k[i] as i64;
                    if kk < 1 {
                        continue;
                    }
                    let kk = (kk as usize).min(present.len());
                    if op == T_LIMITK {
                        present.into_iter().take(kk).collect()
                    } else {
                        let mut p = present;
                        let val = |si: usize| v[si].points.get(i).unwrap_or(f64::NAN);
                        p.sort_by(|&x, &y| {
                            let (a, b) = (val(x), val(y));
                            match (a.is_nan(), b.is_nan()) {
                                (true, true) => std::cmp::Ordering::Equal,
                                (true, false) => std::cmp::Ordering::Greater,
                                (false, true) => std::cmp::Ordering::Less,
                                _ if op == T_TOPK => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
                                _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
                            }
                        });
                        p.truncate(kk);
                        p
                    }
                }
            };
            for si in chosen {
                if let Some(x) = v[si].points.get(i) {
                    keep[si].set(i, x);
                }
                if n == 1 {
                    order.push(si);
                }
            }
        }
    }
    let mut series: Vec<Option<StepSeries>> = v
        .into_iter()
        .zip(keep)
        .map(|(s, p)| (!p.is_empty()).then_some(StepSeries { labels: s.labels, points: p, drop_name: s.drop_name }))
        .collect();
    if n == 1 {
        return Ok(order.into_iter().filter_map(|si| series[si].take()).collect());
    }
    Ok(series.into_iter().flatten().collect())
}

fn count_values(
    ev: &Evaluator<'_>,
    label: &str,
    v: &[StepSeries],
    modifier: &Option<LabelModifier>,
    n: usize,
) -> Result<Vec<StepSeries>> {
    if label.is_empty() {
        return exec(format!("invalid label name {label:?}"));
    }
    let mut out: Vec<StepSeries> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for s in v {
        let base = group_labels(&s.labels, modifier);
        for (i, x) in s.points.iter() {
            let mut labels = base.clone();
            labels.set(label, &format_value(x));
            // Each distinct value is a new series with a column of its own:
            // far more than the input can hold.
            let oi = match index.get(&labels) {
                Some(&oi) => oi,
                None => {
                    ev.charge_points(n)?;
                    index.insert(labels.clone(), out.len());
                    out.push(StepSeries::new(labels, Points::new(n)));
                    out.len() - 1
                }
            };
            let cur = out[oi].points.get(i).unwrap_or(0.0);
            out[oi].points.set(i, cur + 1.0);
        }
    }
    Ok(out)
}

/// `histogram_quantile(φ, buckets)` over classic `le` buckets.
pub(super) fn histogram_quantile(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Vec<StepSeries>> {
    let args = &c.args.args;
    if args.len() != 2 {
        return Err(EvalError::BadData("histogram_quantile() takes two arguments".into()));
    }
    let q = ev.eval_scalar(&args[0], g)?;
    warn_quantiles(ev, &q);
    let v = ev.eval_vector(&args[1], g)?;
    Ok(bucket_quantiles(ev, &q, &v, g.len()))
}

/// `histogram_quantiles(buckets, "label", φ1, φ2, ...)`: one result series
/// per quantile, told apart by `label`.
pub(super) fn histogram_quantiles(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Vec<StepSeries>> {
    let args = &c.args.args;
    if args.len() < 3 {
        return Err(EvalError::BadData("histogram_quantiles() takes a vector, a label name and quantiles".into()));
    }
    let v = ev.eval_vector(&args[0], g)?;
    let label = match ev.eval(&args[1], g)? {
        Value::String(s) => s,
        other => return exec(format!("expected a label name, got {}", other.type_name())),
    };
    let mut out = Vec::new();
    for a in &args[2..] {
        let q = ev.eval_scalar(a, g)?;
        warn_quantiles(ev, &q);
        let name = quantile_label(q.first().copied().unwrap_or(f64::NAN));
        for mut s in bucket_quantiles(ev, &q, &v, g.len()) {
            s.labels.set(&label, &name);
            out.push(s);
        }
    }
    super::merge_same_labels(out)
}

/// A quantile as a label value: shortest form, always with a decimal point.
fn quantile_label(q: f64) -> String {
    let s = format_value(q);
    if s.contains(['.', 'e', 'N', 'I']) { s } else { format!("{s}.0") }
}

fn warn_quantiles(ev: &mut Evaluator<'_>, q: &[f64]) {
    if let Some(bad) = q.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        ev.annotations
            .warnings
            .insert(format!("PromQL warning: quantile value should be between 0 and 1, got {}", go_g(*bad)));
    }
}

/// `histogram_fraction(lower, upper, buckets)` over classic `le` buckets:
/// the share of observations between the two values.
pub(super) fn histogram_fraction(ev: &mut Evaluator<'_>, c: &Call, g: &Grid) -> Result<Vec<StepSeries>> {
    let args = &c.args.args;
    if args.len() != 3 {
        return Err(EvalError::BadData("histogram_fraction() takes three arguments".into()));
    }
    let lower = ev.eval_scalar(&args[0], g)?;
    let upper = ev.eval_scalar(&args[1], g)?;
    let v = ev.eval_vector(&args[2], g)?;
    Ok(per_bucket_group(ev, &v, g.len(), |i, b| (bucket_fraction(lower[i], upper[i], b), false)))
}

/// The per-step quantiles `q` of each group of classic buckets in `v`.
fn bucket_quantiles(ev: &mut Evaluator<'_>, q: &[f64], v: &[StepSeries], n: usize) -> Vec<StepSeries> {
    per_bucket_group(ev, v, n, |i, b| bucket_quantile(q[i], b))
}

/// Groups classic bucket series (by their labels without `le`) and computes
/// `f(step, buckets)` for each group and step; `f` also says whether it had
/// to force the counts monotonic.
fn per_bucket_group(
    ev: &mut Evaluator<'_>,
    v: &[StepSeries],
    n: usize,
    mut f: impl FnMut(usize, &mut [(f64, f64)]) -> (f64, bool),
) -> Vec<StepSeries> {
    // Per group: output labels, the bucket series' metric name, and the
    // (upper bound, series index) of its buckets.
    type Group = (Labels, String, Vec<(f64, usize)>);
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (si, s) in v.iter().enumerate() {
        let le = s.labels.get("le").unwrap_or("");
        let Some(upper) = parse_le(le) else {
            ev.annotations.warnings.insert(format!(
                "PromQL warning: bucket label \"le\" is missing or has a malformed value of {le:?} for metric name {:?}",
                s.labels.metric_name().unwrap_or("")
            ));
            continue;
        };
        let mut gl = s.labels.clone();
        gl.remove("le");
        if !ev.timing.delayed_name_removal {
            remove_name(&mut gl);
        }
        let gi = *index.entry(gl.clone()).or_insert_with(|| {
            groups.push((gl, s.labels.metric_name().unwrap_or("").to_owned(), Vec::new()));
            groups.len() - 1
        });
        groups[gi].2.push((upper, si));
    }
    let mut out = Vec::new();
    for (labels, metric, buckets) in groups {
        let mut points = Points::new(n);
        let mut forced = false;
        for i in 0..n {
            let mut b: Vec<(f64, f64)> =
                buckets.iter().filter_map(|&(ub, si)| v[si].points.get(i).map(|c| (ub, c))).collect();
            if b.is_empty() {
                continue;
            }
            let (val, fixed) = f(i, &mut b);
            forced |= fixed;
            points.set(i, val);
        }
        if forced {
            ev.annotations.infos.insert(format!(
                "PromQL info: input to histogram_quantile needed to be fixed for monotonicity (see https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile) for metric name {metric:?}"
            ));
        }
        if !points.is_empty() {
            out.push(StepSeries { labels, points, drop_name: ev.timing.delayed_name_removal });
        }
    }
    out
}

fn parse_le(s: &str) -> Option<f64> {
    match s.trim() {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        t => t.parse().ok(),
    }
}

/// The share of observations in `[lower, upper]`. Within a bucket,
/// observations are spread evenly; the lowest bucket starts at 0 when its
/// upper bound is positive; the infinite buckets hold their observations at
/// infinity, so no value inside them cuts them.
fn bucket_fraction(lower: f64, upper: f64, b: &mut [(f64, f64)]) -> f64 {
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(ub, c) in b.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let count = merged[merged.len() - 1].1;
    if count == 0.0 || lower.is_nan() || upper.is_nan() {
        return f64::NAN;
    }
    if lower >= upper {
        return 0.0;
    }
    // Observations at or below v.
    let rank = |v: f64| -> f64 {
        if v == f64::NEG_INFINITY {
            return 0.0;
        }
        let mut before = 0.0;
        for (i, &(ub, cum)) in merged.iter().enumerate() {
            let lb = if i > 0 {
                merged[i - 1].0
            } else if ub > 0.0 {
                0.0
            } else {
                f64::NEG_INFINITY
            };
            if v >= ub {
                before = cum;
                continue;
            }
            if v <= lb {
                return before;
            }
            return if lb == f64::NEG_INFINITY {
                cum
            } else if ub == f64::INFINITY {
                before
            } else {
                before + (cum - before) * (v - lb) / (ub - lb)
            };
        }
        count
    };
    ((rank(upper) - rank(lower)) / count).clamp(0.0, 1.0)
}

fn almost_equal(a: f64, b: f64, eps: f64) -> bool {
    const MIN_NORMAL: f64 = f64::MIN_POSITIVE;
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < MIN_NORMAL {
        return diff < eps * MIN_NORMAL;
    }
    diff / abs_sum.min(f64::MAX) < eps
}

/// The quantile of classic buckets `(upper bound, cumulative count)`, and
/// whether the counts had to be forced monotonic.
fn bucket_quantile(q: f64, b: &mut [(f64, f64)]) -> (f64, bool) {
    if q.is_nan() {
        return (f64::NAN, false);
    }
    if q < 0.0 {
        return (f64::NEG_INFINITY, false);
    }
    if q > 1.0 {
        return (f64::INFINITY, false);
    }
    b.sort_by(|x, y| x.0.partial_cmp(&y.0).unwrap_or(std::cmp::Ordering::Equal));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return (f64::NAN, false);
    }
    // Coalesce buckets with the same bound.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for &(ub, c) in b.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == ub => last.1 += c,
            _ => merged.push((ub, c)),
        }
    }
    let mut forced = false;
    let mut prev = merged[0].1;
    for item in merged.iter_mut().skip(1) {
        let cur = item.1;
        if cur == prev {
            continue;
        }
        if almost_equal(prev, cur, 1e-12) {
            item.1 = prev;
            continue;
        }
        if cur < prev {
            item.1 = prev;
            forced = true;
            continue;
        }
        prev = cur;
    }
    if merged.len() < 2 {
        return (f64::NAN, forced);
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return (f64::NAN, forced);
    }
    let mut rank = q * observations;
    let search = &merged[..merged.len() - 1];
    let bi = search.partition_point(|x| x.1 < rank);
    if bi == merged.len() - 1 {
        return (merged[merged.len() - 2].0, forced);
    }
    if bi == 0 && merged[0].0 <= 0.0 {
        return (merged[0].0, forced);
    }
    let (mut start, end, mut count) = (0.0, merged[bi].0, merged[bi].1);
    if bi > 0 {
        start = merged[bi - 1].0;
        count -= merged[bi - 1].1;
        rank -= merged[bi - 1].1;
    }
    (start + (end - start) * (rank / count), forced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_quantiles() {
        let mut b = vec![(0.1, 10.0), (0.5, 50.0), (1.0, 100.0), (f64::INFINITY, 100.0)];
        assert_eq!(bucket_quantile(0.5, &mut b).0, 0.5);
        let mut b = vec![(1.0, 10.0), (f64::INFINITY, 5.0)];
        let (v, forced) = bucket_quantile(0.5, &mut b);
        assert!(forced);
        assert_eq!(v, 0.5);
        let mut no_inf = vec![(1.0, 10.0)];
        assert!(bucket_quantile(0.5, &mut no_inf).0.is_nan());
    }
}
