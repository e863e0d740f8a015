//! The evaluator: walks the AST over a time grid, all data already fetched.

mod aggregate;
mod binary;
mod functions;
mod range_functions;

use std::collections::BTreeSet;
use std::time::Instant;

use cairn_common::storage::Series;
use cairn_common::{Labels, METRIC_NAME, is_stale_nan};
use promql_parser::parser::{Expr, SubqueryExpr, VectorSelector};

use crate::error::{EvalError, Result, exec};
use crate::plan::{Fetched, Timing, at_ms, key, offset_ms, subquery_grid};
use crate::value::{Grid, Points, RangeSeries, RangeVector, Samples, StepSeries, Value};

/// Warnings and informational notes attached to a result, as Prometheus's
/// annotations (`PromQL warning: ...`, `PromQL info: ...`).
#[derive(Debug, Default, Clone)]
pub struct Annotations {
    pub warnings: BTreeSet<String>,
    pub infos: BTreeSet<String>,
}

pub struct Evaluator<'a> {
    pub timing: Timing,
    fetched: &'a Fetched,
    pub annotations: Annotations,
    deadline: Option<Instant>,
    /// Samples held by the values being evaluated, against `max_samples`.
    max_samples: usize,
}

impl<'a> Evaluator<'a> {
    pub fn new(timing: Timing, fetched: &'a Fetched, deadline: Option<Instant>, max_samples: usize) -> Self {
        Self { timing, fetched, annotations: Annotations::default(), deadline, max_samples }
    }

    /// Drops a series' metric name now, or marks it to be dropped at the end
    /// with delayed name removal.
    pub(crate) fn drop_name(&self, s: &mut StepSeries) {
        if self.timing.delayed_name_removal {
            s.drop_name = true;
        } else {
            remove_name(&mut s.labels);
        }
    }

    /// After names were dropped: series that now share labels merge (they
    /// must not both have a value at one step). With delayed name removal
    /// nothing was removed yet, so nothing can collide.
    pub(crate) fn settle_names(&self, v: Vec<StepSeries>) -> Result<Vec<StepSeries>> {
        if self.timing.delayed_name_removal { Ok(v) } else { merge_same_labels(v) }
    }

    fn check_deadline(&self) -> Result<()> {
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(EvalError::Timeout("query execution"));
        }
        Ok(())
    }

    fn check_points(&self, v: &[StepSeries]) -> Result<()> {
        if self.max_samples > 0 {
            let n: usize = v.iter().map(|s| s.points.count()).sum();
            if n > self.max_samples {
                return Err(EvalError::Limit(format!(
                    "query processing would load too many samples into memory in query execution: {n} points, more than {} (raise --query.max-samples)",
                    self.max_samples
                )));
            }
        }
        Ok(())
    }

    pub fn eval(&mut self, e: &Expr, g: &Grid) -> Result<Value> {
        self.check_deadline()?;
        let v = match e {
            Expr::NumberLiteral(n) => Value::Scalar(vec![n.val; g.len()]),
            Expr::StringLiteral(s) => Value::String(s.val.clone()),
            Expr::Paren(p) => self.eval(&p.expr, g)?,
            Expr::Unary(u) => match self.eval(&u.expr, g)? {
                Value::Scalar(mut v) => {
                    v.iter_mut().for_each(|x| *x = -*x);
                    Value::Scalar(v)
                }
                Value::Vector(mut v) => {
                    for s in &mut v {
                        self.drop_name(s);
                        s.points.map_in_place(|x| -x);
                    }
                    Value::Vector(self.settle_names(v)?)
                }
                other => return exec(format!("unary minus is not defined on a {}", other.type_name())),
            },
            Expr::VectorSelector(vs) => Value::Vector(self.select_instant(vs, g)),
            Expr::MatrixSelector(ms) => Value::Matrix(self.select_range(&ms.vs, ms.range.as_millis() as i64, g)),
            Expr::Subquery(sq) => Value::Matrix(self.subquery(sq, g)?),
            Expr::Call(c) => functions::call(self, c, g)?,
            Expr::Aggregate(a) => aggregate::eval(self, a, g)?,
            Expr::Binary(b) => binary::eval(self, b, g)?,
            Expr::Extension(_) => return exec("extension expressions are not supported"),
        };
        if let Value::Vector(v) = &v {
            self.check_points(v)?;
        }
        Ok(v)
    }

    /// Evaluates an argument that must be an instant vector.
    fn eval_vector(&mut self, e: &Expr, g: &Grid) -> Result<Vec<StepSeries>> {
        match self.eval(e, g)? {
            Value::Vector(v) => Ok(v),
            other => exec(format!("expected instant vector, got {}", other.type_name())),
        }
    }

    /// Evaluates an argument that must be a scalar.
    fn eval_scalar(&mut self, e: &Expr, g: &Grid) -> Result<Vec<f64>> {
        match self.eval(e, g)? {
            Value::Scalar(v) => Ok(v),
            other => exec(format!("expected scalar, got {}", other.type_name())),
        }
    }

    /// Evaluates an argument that must be a range vector.
    fn eval_range(&mut self, e: &Expr, g: &Grid) -> Result<RangeVector> {
        match self.eval(e, g)? {
            Value::Matrix(m) => Ok(m),
            other => exec(format!("expected range vector, got {}", other.type_name())),
        }
    }

    fn fetched(&self, vs: &VectorSelector) -> &'a [Series] {
        self.fetched.get(&key(vs)).map(|s| s.as_slice()).unwrap_or(&[])
    }

    fn fetched_shared(&self, vs: &VectorSelector) -> Option<std::sync::Arc<Vec<Series>>> {
        self.fetched.get(&key(vs)).cloned()
    }

    /// When step `i`'s selector reads: the step time or the `@` time, minus
    /// the offset.
    fn selector_times(&self, vs: &VectorSelector, g: &Grid) -> Vec<i64> {
        let off = offset_ms(&vs.offset);
        match at_ms(&vs.at, &self.timing) {
            Some(a) => vec![a - off; g.len()],
            None => g.times().map(|t| t - off).collect(),
        }
    }

    /// An instant vector selector: per step, the newest sample within the
    /// lookback window `(t - lookback, t]`, unless it is a staleness marker.
    fn select_instant(&self, vs: &VectorSelector, g: &Grid) -> Vec<StepSeries> {
        let times = self.selector_times(vs, g);
        let lookback = self.timing.lookback;
        let mut out = Vec::new();
        for s in self.fetched(vs) {
            let mut points = Points::new(times.len());
            let mut j = 0usize;
            for (i, &t) in times.iter().enumerate() {
                while j < s.samples.len() && s.samples[j].t <= t {
                    j += 1;
                }
                if j == 0 {
                    continue;
                }
                let last = s.samples[j - 1];
                if last.t > t - lookback && !is_stale_nan(last.v) {
                    points.set(i, last.v);
                }
            }
            if !points.is_empty() {
                out.push(StepSeries::new(s.labels.clone(), points));
            }
        }
        out
    }

    /// A range selector: the fetched samples without staleness markers,
    /// windowed per step by the consumer.
    fn select_range(&self, vs: &VectorSelector, range: i64, g: &Grid) -> RangeVector {
        let mut series = Vec::new();
        if let Some(all) = self.fetched_shared(vs) {
            for (i, s) in all.iter().enumerate() {
                let samples = if s.samples.iter().any(|x| is_stale_nan(x.v)) {
                    Samples::Owned(s.samples.iter().filter(|x| !is_stale_nan(x.v)).copied().collect())
                } else {
                    Samples::Shared(all.clone(), i)
                };
                if !samples.is_empty() {
                    series.push(RangeSeries { labels: s.labels.clone(), samples, drop_name: false });
                }
            }
        }
        RangeVector { series, range, times: self.selector_times(vs, g) }
    }

    fn subquery(&mut self, sq: &SubqueryExpr, g: &Grid) -> Result<RangeVector> {
        let step = sq.step.map(|d| d.as_millis() as i64).filter(|s| *s > 0).unwrap_or(self.timing.default_step);
        let range = sq.range.as_millis() as i64;
        let off = offset_ms(&sq.offset);
        let at = at_ms(&sq.at, &self.timing);
        let inner = subquery_grid(g, range, step, off, at);
        let v = self.eval_vector(&sq.expr, &inner)?;
        let series = v
            .into_iter()
            .map(|s| RangeSeries {
                samples: Samples::Owned(
                    s.points.iter().map(|(i, v)| cairn_common::Sample::new(inner.t(i), v)).collect(),
                ),
                labels: s.labels,
                drop_name: s.drop_name,
            })
            .collect();
        let times = match at {
            Some(a) => vec![a - off; g.len()],
            None => g.times().map(|t| t - off).collect(),
        };
        Ok(RangeVector { series, range, times })
    }
}

/// The labels that go with the metric name when it is dropped: the name,
/// and the type and unit Prometheus attaches beside it.
pub(crate) const NAME_LABELS: [&str; 3] = [METRIC_NAME, "__type__", "__unit__"];

pub(crate) fn is_name_label(n: &str) -> bool {
    NAME_LABELS.contains(&n)
}

/// Drops the metric name (and its type and unit labels).
pub(crate) fn remove_name(l: &mut Labels) {
    if l.iter().any(|x| is_name_label(&x.name)) {
        l.retain(|x| !is_name_label(&x.name));
    }
}

/// Merges series with equal labels whose steps do not overlap (the result
/// of dropping a name from series that never coexist in time).
pub(crate) fn merge_same_labels(v: Vec<StepSeries>) -> Result<Vec<StepSeries>> {
    if v.len() < 2 {
        return Ok(v);
    }
    let mut v = v;
    let mut out: Vec<StepSeries> = Vec::with_capacity(v.len());
    let mut by_labels: std::collections::HashMap<Labels, usize> = std::collections::HashMap::with_capacity(v.len());
    for s in v.drain(..) {
        match by_labels.get(&s.labels) {
            Some(&i) => {
                if out[i].points.overlaps(&s.points) {
                    return exec("vector cannot contain metrics with the same labelset");
                }
                for (step, val) in s.points.iter() {
                    out[i].points.set(step, val);
                }
            }
            None => {
                by_labels.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}
