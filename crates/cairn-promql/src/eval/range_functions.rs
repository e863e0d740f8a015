//! Functions over range vectors (`rate`, `*_over_time`, ...): each step's
//! window of samples in, at most one value out.

use cairn_common::Sample;

use super::Evaluator;
use crate::error::{Result, exec};
use crate::kahan::{KahanSum, Mean, Variance, sum_inc};
use crate::value::{Grid, Points, RangeVector, StepSeries};

/// A function of one window. `ctx` carries the window bounds and extra
/// scalar arguments for the step.
pub(super) type WindowFn = fn(&[Sample], &WindowCtx) -> Option<f64>;

pub(super) struct WindowCtx {
    /// Window bounds: `(range_start, range_end]` in milliseconds.
    pub range_start: i64,
    pub range_end: i64,
    /// The step's evaluation time (before offset).
    pub step_t: i64,
    /// A scalar argument at this step (quantile, duration, factors).
    pub arg: f64,
    pub arg2: f64,
    /// Whether the window holds a counter reset (a sample lower than the
    /// one before it); lets `rate` skip its correction pass.
    pub has_reset: bool,
}

/// Looks up a range function by name: its implementation and whether it
/// keeps the metric name.
pub(super) fn lookup(name: &str) -> Option<(WindowFn, bool)> {
    let f: (WindowFn, bool) = match name {
        "rate" => (|s, c| extrapolated_rate(s, c, true, true), false),
        "increase" => (|s, c| extrapolated_rate(s, c, true, false), false),
        "delta" => (|s, c| extrapolated_rate(s, c, false, false), false),
        "irate" => (|s, _| instant_value(s, true), false),
        "idelta" => (|s, _| instant_value(s, false), false),
        "deriv" => (deriv, false),
        "predict_linear" => (predict_linear, false),
        "changes" => (changes, false),
        "resets" => (resets, false),
        "avg_over_time" => (avg_over_time, false),
        "sum_over_time" => (sum_over_time, false),
        "count_over_time" => (|s, _| Some(s.len() as f64), false),
        "min_over_time" => (|s, _| fold_extreme(s, |cur, v| v < cur), false),
        "max_over_time" => (|s, _| fold_extreme(s, |cur, v| v > cur), false),
        "last_over_time" => (|s, _| s.last().map(|x| x.v), true),
        "first_over_time" => (|s, _| s.first().map(|x| x.v), true),
        "present_over_time" => (|_, _| Some(1.0), false),
        "stddev_over_time" => (|s, _| variance(s).map(|v| v.stddev()), false),
        "stdvar_over_time" => (|s, _| variance(s).map(|v| v.stdvar()), false),
        "quantile_over_time" => (|s, c| Some(quantile(c.arg, &mut s.iter().map(|x| x.v).collect::<Vec<_>>())), false),
        "mad_over_time" => (mad_over_time, false),
        "ts_of_min_over_time" => (|s, _| ts_of(s, |cur, v| v <= cur), false),
        "ts_of_max_over_time" => (|s, _| ts_of(s, |cur, v| v >= cur), false),
        "ts_of_last_over_time" => (|s, _| s.last().map(|x| x.t as f64 / 1000.0), false),
        "ts_of_first_over_time" => (|s, _| s.first().map(|x| x.t as f64 / 1000.0), false),
        // Handled by its caller (it looks at which windows are empty).
        "absent_over_time" => (|_, _| None, false),
        "double_exponential_smoothing" | "holt_winters" => (double_exponential_smoothing, false),
        _ => return None,
    };
    Some(f)
}

/// Applies `f` to every series' windows. `args` gives per-step scalar
/// arguments. Windows with no samples produce nothing.
pub(super) fn apply(
    ev: &mut Evaluator<'_>,
    rv: &RangeVector,
    g: &Grid,
    f: WindowFn,
    keep_name: bool,
    args: (&[f64], &[f64]),
) -> Result<Vec<StepSeries>> {
    let mut out = Vec::with_capacity(rv.series.len());
    let mut resets: Vec<u32> = Vec::new();
    for s in &rv.series {
        // resets[k]: decreases among samples 1..=k, so a window [lo, hi)
        // holds one when resets[hi - 1] > resets[lo].
        resets.clear();
        let mut n = 0u32;
        let mut prev = f64::NAN;
        for x in s.samples.iter() {
            if x.v < prev {
                n += 1;
            }
            prev = x.v;
            resets.push(n);
        }
        ev.charge_points(rv.times.len())?;
        let mut points = Points::new(rv.times.len());
        for (i, lo, hi) in rv.window_bounds(&s.samples) {
            if lo == hi {
                continue;
            }
            let w = &s.samples[lo..hi];
            let ctx = WindowCtx {
                range_start: rv.times[i].saturating_sub(rv.range),
                range_end: rv.times[i],
                step_t: g.t(i),
                arg: args.0.get(i).copied().unwrap_or(0.0),
                arg2: args.1.get(i).copied().unwrap_or(0.0),
                has_reset: resets[hi - 1] > resets[lo],
            };
            if let Some(v) = f(w, &ctx) {
                points.set(i, v);
            }
        }
        if !points.is_empty() {
            let mut out_series = StepSeries::new(s.labels.clone(), points);
            out_series.drop_name = s.drop_name;
            if !keep_name {
                ev.drop_name(&mut out_series);
            }
            out.push(out_series);
        }
    }
    ev.check_deadline()?;
    if !ev.timing.delayed_name_removal {
        // Prometheus refuses two outputs with one label set from range
        // functions, even when they never share a step.
        let mut seen: Vec<&StepSeries> = out.iter().collect();
        seen.sort_by(|a, b| a.labels.cmp(&b.labels));
        if seen.windows(2).any(|w| w[0].labels == w[1].labels) {
            return exec("vector cannot contain metrics with the same labelset");
        }
    }
    Ok(out)
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated
/// towards the window's edges (Prometheus 3 semantics).
fn extrapolated_rate(s: &[Sample], c: &WindowCtx, is_counter: bool, is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let first = s[0];
    let last = s[s.len() - 1];
    let mut result = last.v - first.v;
    // The first sample is compared with 0: a negative one adds nothing.
    if is_counter && c.has_reset {
        let mut prev = 0.0;
        for x in s {
            if x.v < prev {
                result += prev;
            }
            prev = x.v;
        }
    }
    let mut to_start = (first.t - c.range_start) as f64 / 1000.0;
    let mut to_end = (c.range_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg_step = sampled / (s.len() - 1) as f64;
    let threshold = avg_step * 1.1;
    if to_start >= threshold {
        to_start = avg_step / 2.0;
    }
    if is_counter {
        // A counter cannot go below zero: do not extrapolate past the point
        // where it would have been zero.
        let mut to_zero = to_start;
        if result > 0.0 && first.v >= 0.0 {
            to_zero = sampled * (first.v / result);
        }
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    if to_end >= threshold {
        to_end = avg_step / 2.0;
    }
    let mut factor = (sampled + to_start + to_end) / sampled;
    if is_rate {
        factor /= (c.range_end - c.range_start) as f64 / 1000.0;
    }
    Some(result * factor)
}

fn instant_value(s: &[Sample], is_rate: bool) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let last = s[s.len() - 1];
    let prev = s[s.len() - 2];
    let mut v = if is_rate && last.v < prev.v { last.v } else { last.v - prev.v };
    let interval = last.t - prev.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        v /= interval as f64 / 1000.0;
    }
    Some(v)
}

/// Least-squares slope and intercept of `s` with x measured in seconds from
/// `intercept_t`.
pub(super) fn linear_regression(s: &[Sample], intercept_t: i64) -> (f64, f64) {
    let init = s[0].v;
    let mut const_y = true;
    let (mut n, mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (i, p) in s.iter().enumerate() {
        if const_y && i > 0 && p.v != init {
            const_y = false;
        }
        n += 1.0;
        let x = (p.t - intercept_t) as f64 / 1e3;
        (sx, cx) = sum_inc(x, sx, cx);
        (sy, cy) = sum_inc(p.v, sy, cy);
        (sxy, cxy) = sum_inc(x * p.v, sxy, cxy);
        (sx2, cx2) = sum_inc(x * x, sx2, cx2);
    }
    if const_y {
        if init.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

fn deriv(s: &[Sample], _: &WindowCtx) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    Some(linear_regression(s, s[0].t).0)
}

fn predict_linear(s: &[Sample], c: &WindowCtx) -> Option<f64> {
    if s.len() < 2 {
        return None;
    }
    let (slope, intercept) = linear_regression(s, c.step_t);
    Some(slope * c.arg + intercept)
}

fn changes(s: &[Sample], _: &WindowCtx) -> Option<f64> {
    let mut n = 0.0;
    let mut prev = s[0].v;
    for x in &s[1..] {
        if !(x.v == prev || (x.v.is_nan() && prev.is_nan())) {
            n += 1.0;
        }
        prev = x.v;
    }
    Some(n)
}

fn resets(s: &[Sample], _: &WindowCtx) -> Option<f64> {
    let mut n = 0.0;
    let mut prev = s[0].v;
    for x in &s[1..] {
        if x.v < prev {
            n += 1.0;
        }
        prev = x.v;
    }
    Some(n)
}

fn avg_over_time(s: &[Sample], _: &WindowCtx) -> Option<f64> {
    let mut m = Mean::default();
    for x in s {
        m.add(x.v);
    }
    Some(m.value())
}

fn sum_over_time(s: &[Sample], _: &WindowCtx) -> Option<f64> {
    let mut k = KahanSum::default();
    for x in s {
        k.add(x.v);
    }
    Some(k.value())
}

/// min/max where NaN is replaced by any number.
fn fold_extreme(s: &[Sample], better: fn(f64, f64) -> bool) -> Option<f64> {
    let mut cur = s[0].v;
    for x in &s[1..] {
        if better(cur, x.v) || cur.is_nan() {
            cur = x.v;
        }
    }
    Some(cur)
}

fn ts_of(s: &[Sample], better: fn(f64, f64) -> bool) -> Option<f64> {
    let mut cur = s[0];
    for x in &s[1..] {
        if better(cur.v, x.v) || cur.v.is_nan() {
            cur = *x;
        }
    }
    Some(cur.t as f64 / 1000.0)
}

fn variance(s: &[Sample]) -> Option<Variance> {
    let mut v = Variance::default();
    for x in s {
        v.add(x.v);
    }
    Some(v)
}

fn mad_over_time(s: &[Sample], _: &WindowCtx) -> Option<f64> {
    if s.iter().any(|x| x.v.is_nan()) {
        return Some(f64::NAN);
    }
    let mut vals: Vec<f64> = s.iter().map(|x| x.v).collect();
    let median = quantile(0.5, &mut vals);
    let mut dev: Vec<f64> = s.iter().map(|x| (x.v - median).abs()).collect();
    Some(quantile(0.5, &mut dev))
}

fn double_exponential_smoothing(s: &[Sample], c: &WindowCtx) -> Option<f64> {
    let (sf, tf) = (c.arg, c.arg2);
    if s.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut b) = (0.0, s[0].v, s[1].v - s[0].v);
    for (i, x) in s.iter().enumerate().skip(1) {
        let scaled = sf * x.v;
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let trend = (1.0 - sf) * (s1 + b);
        s0 = s1;
        s1 = scaled + trend;
    }
    Some(s1)
}

/// Prometheus's quantile: linear interpolation between closest ranks.
/// `q < 0` gives -Inf, `q > 1` gives +Inf, NaN gives NaN.
pub(super) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go's order: NaN before every number.
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap_or_else(|| b.is_nan().cmp(&a.is_nan())));
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = rank.ceil().min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(v: &[(i64, f64)]) -> Vec<Sample> {
        v.iter().map(|&(t, v)| Sample::new(t, v)).collect()
    }

    fn ctx(start: i64, end: i64) -> WindowCtx {
        WindowCtx { range_start: start, range_end: end, step_t: end, arg: 0.0, arg2: 0.0, has_reset: true }
    }

    #[test]
    fn rate_of_a_regular_counter() {
        // 0..=10 every 10s over a 100s window ending at 100s: 0.1/s.
        let s: Vec<Sample> = (1..=10).map(|i| Sample::new(i * 10_000, i as f64)).collect();
        let r = extrapolated_rate(&s, &ctx(0, 100_000), true, true).expect("rate");
        assert!((r - 0.1).abs() < 1e-12, "{r}");
        let inc = extrapolated_rate(&s, &ctx(0, 100_000), true, false).expect("increase");
        assert!((inc - 10.0).abs() < 1e-9, "{inc}");
    }

    #[test]
    fn counter_resets_are_added_back() {
        let s = samples(&[(10_000, 5.0), (20_000, 10.0), (30_000, 2.0), (40_000, 4.0)]);
        let d = extrapolated_rate(&s, &ctx(10_000, 40_000), true, false).expect("increase");
        assert_eq!(d, 9.0);
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(0.5, &mut [1.0, 3.0, 2.0, 4.0]), 2.5);
        assert_eq!(quantile(-1.0, &mut [1.0]), f64::NEG_INFINITY);
        assert!(quantile(f64::NAN, &mut [1.0]).is_nan());
    }

    #[test]
    fn regression_of_a_line() {
        let s = samples(&[(0, 1.0), (1000, 3.0), (2000, 5.0)]);
        assert_eq!(linear_regression(&s, 0), (2.0, 1.0));
    }
}
