//! The evaluator: walks the AST over a time grid, all data already fetched.

mod aggregate;
mod binary;
mod functions;
mod range_functions;

use std::collections::BTreeSet;

use cairn_common::storage::{Series, labels_bytes};
use cairn_common::{Labels, METRIC_NAME, is_stale_nan};
use promql_parser::parser::{Expr, SubqueryExpr, VectorSelector};

use crate::error::{Result, exec};
use crate::meter::{QueryMeter, SAMPLE_BYTES};
use crate::plan::{Fetched, Timing, at_ms, dur_ms, key, offset_ms, subquery_grid, subquery_step};
use crate::value::{Grid, Points, RangeSeries, RangeVector, Samples, StepSeries, Value};

/// Warnings and informational notes attached to a result, as Prometheus's
/// annotations (`PromQL warning: ...`, `PromQL info: ...`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Annotations {
    pub warnings: BTreeSet<String>,
    pub infos: BTreeSet<String>,
}

pub(crate) struct Evaluator<'a> {
    pub timing: Timing,
    fetched: &'a Fetched,
    pub annotations: Annotations,
    /// Memory, time and cancellation of the query.
    pub(crate) meter: &'a QueryMeter,
}

/// Bytes of a column of `n` step values (values and presence bits).
pub(crate) fn points_bytes(n: usize) -> usize {
    n.saturating_mul(8).saturating_add(n.div_ceil(64) * 8)
}

/// What a value holds, for the meter: step columns, owned samples,
/// labels. Samples shared with the fetched data are charged at fetch.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Scalar(s) => s.len() * 8,
        Value::String(s) => s.len(),
        Value::Vector(v) => v.iter().map(|s| 64 + labels_bytes(&s.labels) + points_bytes(s.points.len())).sum(),
        Value::Matrix(m) => {
            let samples: usize = m
                .series
                .iter()
                .map(|s| {
                    64 + labels_bytes(&s.labels)
                        + match &s.samples {
                            Samples::Owned(x) => x.len() * SAMPLE_BYTES,
                            Samples::Shared(..) => 0,
                        }
                })
                .sum();
            samples + m.times.len() * 8
        }
    }
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(timing: Timing, fetched: &'a Fetched, meter: &'a QueryMeter) -> Self {
        Self { timing, fetched, annotations: Annotations::default(), meter }
    }

    /// Charges a column of `n` step values about to be allocated (and
    /// checks the deadline).
    pub(crate) fn charge_points(&self, n: usize) -> Result<()> {
        self.meter.charge(points_bytes(n))
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

    /// Fails once the deadline passed or the query was cancelled.
    pub(crate) fn check_deadline(&self) -> Result<()> {
        self.meter.check_time()
    }

    pub(crate) fn eval(&mut self, e: &Expr, g: &Grid) -> Result<Value> {
        self.check_deadline()?;
        // When this node is done its inputs are gone: the query then holds
        // what it held before plus this node's value.
        let base = self.meter.held();
        let v = self.eval_node(e, g)?;
        self.meter.settle(base, value_bytes(&v))?;
        Ok(v)
    }

    fn eval_node(&mut self, e: &Expr, g: &Grid) -> Result<Value> {
        Ok(match e {
            Expr::NumberLiteral(n) => {
                self.meter.charge_items(g.len(), 8)?;
                Value::Scalar(vec![n.val; g.len()])
            }
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
            Expr::VectorSelector(vs) => Value::Vector(self.select_instant(vs, g)?),
            Expr::MatrixSelector(ms) => Value::Matrix(self.select_range(&ms.vs, dur_ms(&ms.range), g)?),
            Expr::Subquery(sq) => Value::Matrix(self.subquery(sq, g)?),
            Expr::Call(c) => functions::call(self, c, g)?,
            Expr::Aggregate(a) => aggregate::eval(self, a, g)?,
            Expr::Binary(b) => binary::eval(self, b, g)?,
            Expr::Extension(_) => return exec("extension expressions are not supported"),
        })
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
    fn selector_times(&self, vs: &VectorSelector, g: &Grid) -> Result<Vec<i64>> {
        self.meter.charge_items(g.len(), 8)?;
        let off = offset_ms(&vs.offset);
        Ok(match at_ms(&vs.at, &self.timing) {
            Some(a) => vec![a.saturating_sub(off); g.len()],
            None => g.times().map(|t| t.saturating_sub(off)).collect(),
        })
    }

    /// An instant vector selector: per step, the newest sample within the
    /// lookback window `(t - lookback, t]`, unless it is a staleness marker.
    /// With `timestamps`, the value is the sample's time rather than its
    /// value (`timestamp(selector)`).
    pub(crate) fn select_instant_with(
        &self,
        vs: &VectorSelector,
        g: &Grid,
        timestamps: bool,
    ) -> Result<Vec<StepSeries>> {
        let times = self.selector_times(vs, g)?;
        let lookback = self.timing.lookback;
        let mut out = Vec::new();
        for s in self.fetched(vs) {
            self.charge_points(times.len())?;
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
                if last.t > t.saturating_sub(lookback) && !is_stale_nan(last.v) {
                    points.set(i, if timestamps { last.t as f64 / 1000.0 } else { last.v });
                }
            }
            if !points.is_empty() {
                out.push(StepSeries::new(s.labels.clone(), points));
            }
        }
        Ok(out)
    }

    fn select_instant(&self, vs: &VectorSelector, g: &Grid) -> Result<Vec<StepSeries>> {
        self.select_instant_with(vs, g, false)
    }

    /// A range selector: the fetched samples without staleness markers,
    /// windowed per step by the consumer.
    fn select_range(&self, vs: &VectorSelector, range: i64, g: &Grid) -> Result<RangeVector> {
        let mut series = Vec::new();
        if let Some(all) = self.fetched_shared(vs) {
            for (i, s) in all.iter().enumerate() {
                let samples = if s.samples.iter().any(|x| is_stale_nan(x.v)) {
                    self.meter.charge_items(s.samples.len(), SAMPLE_BYTES)?;
                    Samples::Owned(s.samples.iter().filter(|x| !is_stale_nan(x.v)).copied().collect())
                } else {
                    Samples::Shared(all.clone(), i)
                };
                if !samples.is_empty() {
                    series.push(RangeSeries { labels: s.labels.clone(), samples, drop_name: false });
                }
            }
        }
        Ok(RangeVector { series, range, times: self.selector_times(vs, g)? })
    }

    fn subquery(&mut self, sq: &SubqueryExpr, g: &Grid) -> Result<RangeVector> {
        let step = subquery_step(sq, &self.timing);
        let range = dur_ms(&sq.range);
        let off = offset_ms(&sq.offset);
        let at = at_ms(&sq.at, &self.timing);
        let inner = subquery_grid(g, range, step, off, at);
        let v = self.eval_vector(&sq.expr, &inner)?;
        let mut series = Vec::with_capacity(v.len());
        for s in v {
            self.meter.charge_items(s.points.count(), SAMPLE_BYTES)?;
            series.push(RangeSeries {
                samples: Samples::Owned(
                    s.points.iter().map(|(i, v)| cairn_common::Sample::new(inner.t(i), v)).collect(),
                ),
                labels: s.labels,
                drop_name: s.drop_name,
            });
        }
        self.meter.charge_items(g.len(), 8)?;
        let times = match at {
            Some(a) => vec![a.saturating_sub(off); g.len()],
            None => g.times().map(|t| t.saturating_sub(off)).collect(),
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
