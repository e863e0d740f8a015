//! Values flowing through evaluation.
//!
//! Evaluation is step-vectorised: an instant vector is evaluated for every
//! step of the query's time grid at once, so an expression node produces,
//! per output series, one optional value per step ([`Points`]). Operators
//! work series by series over whole columns instead of building a map per
//! step.

use std::sync::Arc;

use cairn_common::storage::Series;
use cairn_common::{Labels, Sample};

/// The evaluation time grid: `start, start+step, ..., end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub start: i64,
    pub end: i64,
    /// Milliseconds between steps; 0 for a single instant.
    pub step: i64,
}

impl Grid {
    pub fn instant(t: i64) -> Self {
        Self { start: t, end: t, step: 0 }
    }

    /// Steps in the grid. Computed in 128 bits: a grid may span nearly all
    /// of `i64`; whoever allocates per step checks this against the
    /// query's limits first.
    pub fn len(&self) -> usize {
        if self.step <= 0 || self.end < self.start {
            1
        } else {
            let n = (i128::from(self.end) - i128::from(self.start)) / i128::from(self.step) + 1;
            usize::try_from(n).unwrap_or(usize::MAX)
        }
    }

    /// The time of step `i < len()`. Wrapping arithmetic is exact here: the
    /// result lies in `[start, end]`, even where `i * step` alone would not
    /// fit in an `i64`.
    #[inline]
    pub fn t(&self, i: usize) -> i64 {
        self.start.wrapping_add((i as i64).wrapping_mul(self.step))
    }

    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.t(i))
    }
}

/// One optional float per step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Points {
    vals: Vec<f64>,
    present: Vec<u64>,
}

impl Points {
    pub fn new(n: usize) -> Self {
        Self { vals: vec![0.0; n], present: vec![0; n.div_ceil(64)] }
    }

    pub fn len(&self) -> usize {
        self.vals.len()
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<f64> {
        if self.present[i / 64] & (1 << (i % 64)) != 0 { Some(self.vals[i]) } else { None }
    }

    #[inline]
    pub fn has(&self, i: usize) -> bool {
        self.present[i / 64] & (1 << (i % 64)) != 0
    }

    #[inline]
    pub fn set(&mut self, i: usize, v: f64) {
        self.vals[i] = v;
        self.present[i / 64] |= 1 << (i % 64);
    }

    #[inline]
    pub fn clear(&mut self, i: usize) {
        self.present[i / 64] &= !(1 << (i % 64));
    }

    pub fn is_empty(&self) -> bool {
        self.present.iter().all(|w| *w == 0)
    }

    pub fn count(&self) -> usize {
        self.present.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Present steps and their values, in order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.present.iter().enumerate().flat_map(move |(wi, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let b = w.trailing_zeros() as usize;
                w &= w - 1;
                let i = wi * 64 + b;
                Some((i, self.vals[i]))
            })
        })
    }

    /// Applies `f` to every present value.
    pub fn map_in_place(&mut self, mut f: impl FnMut(f64) -> f64) {
        for wi in 0..self.present.len() {
            let mut w = self.present[wi];
            while w != 0 {
                let i = wi * 64 + w.trailing_zeros() as usize;
                self.vals[i] = f(self.vals[i]);
                w &= w - 1;
            }
        }
    }

    /// Whether both have a value at some step.
    pub fn overlaps(&self, other: &Points) -> bool {
        self.present.iter().zip(&other.present).any(|(a, b)| a & b != 0)
    }
}

/// An instant vector over the grid: one label set and its value per step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepSeries {
    pub labels: Labels,
    pub points: Points,
    /// With delayed name removal: `__name__` is still in `labels` but goes
    /// when the query's result is produced.
    pub drop_name: bool,
}

impl StepSeries {
    pub fn new(labels: Labels, points: Points) -> Self {
        Self { labels, points, drop_name: false }
    }
}

/// A series of a range vector: its samples, and whether its name is to be
/// dropped (see [`StepSeries::drop_name`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    pub samples: Samples,
    pub drop_name: bool,
}

/// Samples of a range-vector series: shared with the data fetched from
/// storage when they can be used as they are (no copy on the hot path),
/// owned when something had to be removed or they were computed.
#[derive(Clone, Debug)]
pub enum Samples {
    Shared(Arc<Vec<Series>>, usize),
    Owned(Vec<Sample>),
}

impl std::ops::Deref for Samples {
    type Target = [Sample];
    fn deref(&self) -> &[Sample] {
        match self {
            Samples::Shared(all, i) => all.get(*i).map(|s| s.samples.as_slice()).unwrap_or(&[]),
            Samples::Owned(v) => v,
        }
    }
}

impl PartialEq for Samples {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

/// A range vector: per series, the samples inside each step's window are
/// looked up by the consumer. `times[i]` is where step i's window ends.
#[derive(Clone, Debug)]
pub struct RangeVector {
    pub series: Vec<RangeSeries>,
    /// Window length in milliseconds; windows are left-open: `(end - range, end]`.
    pub range: i64,
    pub times: Vec<i64>,
}

impl RangeVector {
    /// For each step, the index range of the samples of `samples` in that
    /// step's window. Window ends must be non-decreasing (they are: the grid
    /// is increasing, and `@` makes them constant).
    pub fn window_bounds<'a>(&'a self, samples: &'a [Sample]) -> impl Iterator<Item = (usize, usize, usize)> + 'a {
        let (mut lo, mut hi) = (0usize, 0usize);
        self.times.iter().enumerate().map(move |(i, &end)| {
            let start = end.saturating_sub(self.range);
            while hi < samples.len() && samples[hi].t <= end {
                hi += 1;
            }
            if lo > hi {
                lo = hi;
            }
            while lo < hi && samples[lo].t <= start {
                lo += 1;
            }
            (i, lo, hi)
        })
    }

    /// For each step, the samples of `samples` in that step's window.
    pub fn windows<'a>(&'a self, samples: &'a [Sample]) -> impl Iterator<Item = (usize, &'a [Sample])> + 'a {
        self.window_bounds(samples).map(move |(i, lo, hi)| (i, &samples[lo..hi]))
    }
}

/// The value of an expression over the grid.
#[derive(Clone, Debug)]
pub enum Value {
    /// One value per step.
    Scalar(Vec<f64>),
    Vector(Vec<StepSeries>),
    /// A range vector; only a query's top level returns one.
    Matrix(RangeVector),
    String(String),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
            Value::String(_) => "string",
        }
    }
}

/// A float as Prometheus prints it in labels and JSON: shortest
/// round-tripping decimal, `NaN`, `+Inf`, `-Inf`.
pub fn format_value(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == f64::INFINITY {
        "+Inf".into()
    } else if x == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        x.to_string()
    }
}

/// A float as Go's `%g` writes it, as Prometheus's messages do: shortest
/// digits, exponent form when the exponent is below -4 or at least 6
/// (`1e+06`, `1.5e-05`), `NaN`, `+Inf`, `-Inf`.
pub fn go_g(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e = format!("{x:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((e.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        x.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_g_like_go() {
        assert_eq!(go_g(1.5), "1.5");
        assert_eq!(go_g(-0.1), "-0.1");
        assert_eq!(go_g(1e6), "1e+06");
        assert_eq!(go_g(123456.0), "123456");
        assert_eq!(go_g(1234567.0), "1.234567e+06");
        assert_eq!(go_g(0.0001), "0.0001");
        assert_eq!(go_g(0.00001), "1e-05");
        assert_eq!(go_g(f64::NAN), "NaN");
    }

    #[test]
    fn values_format_like_go() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(1e-7), "0.0000001");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn points_track_presence() {
        let mut p = Points::new(130);
        p.set(0, 1.0);
        p.set(64, 2.0);
        p.set(129, f64::NAN);
        assert_eq!(p.count(), 3);
        assert_eq!(p.get(1), None);
        let got: Vec<usize> = p.iter().map(|(i, _)| i).collect();
        assert_eq!(got, vec![0, 64, 129]);
        p.map_in_place(|v| v * 2.0);
        assert_eq!(p.get(64), Some(4.0));
        p.clear(0);
        assert!(!p.has(0));
    }

    proptest::proptest! {
        /// Grids anywhere in `i64`: the length never overflows, and every
        /// step lies in `[start, end]`.
        #[test]
        fn grids_span_all_of_i64(start in proptest::prelude::any::<i64>(), end in proptest::prelude::any::<i64>(), step in 1i64..i64::MAX) {
            let g = Grid { start, end, step };
            let n = g.len();
            if end >= start {
                proptest::prop_assert_eq!(g.t(0), start);
                let last = g.t(n - 1);
                proptest::prop_assert!(last >= start && last <= end);
                proptest::prop_assert!(i128::from(last) + i128::from(step) > i128::from(end));
            }
        }
    }

    #[test]
    fn windows_are_left_open() {
        let rv = RangeVector { series: vec![], range: 10, times: vec![10, 20, 20, 35] };
        let samples: Vec<Sample> = [0, 10, 15, 20, 30].iter().map(|&t| Sample::new(t, 0.0)).collect();
        let got: Vec<Vec<i64>> = rv.windows(&samples).map(|(_, w)| w.iter().map(|s| s.t).collect()).collect();
        assert_eq!(got, vec![vec![10], vec![15, 20], vec![15, 20], vec![30]]);
    }
}
