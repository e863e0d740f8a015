//! Before evaluation: find every selector, work out which time span it
//! reads, and fetch its series from storage.
//!
//! The spans follow evaluation exactly (offsets, `@`, lookback, ranges and
//! the step alignment of subqueries), so evaluation itself never does I/O.

use std::collections::HashMap;
use std::sync::Arc;

use cairn_common::storage::{Queryable, SelectRequest, Series};
use cairn_common::{MatchOp, Matcher, TenantId};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::{AtModifier, Expr, Offset, SubqueryExpr, VectorSelector};

use crate::error::{EvalError, Result};
use crate::meter::QueryMeter;
use crate::value::Grid;

/// Where a selector's data is kept: the node's address in the AST, which
/// is stable because the AST is behind an `Arc` for the whole query.
pub type SelectorKey = usize;

pub fn key(vs: &VectorSelector) -> SelectorKey {
    vs as *const VectorSelector as usize
}

/// Fetched series per selector.
pub type Fetched = HashMap<SelectorKey, Arc<Vec<Series>>>;

/// Settings planning shares with evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub query_start: i64,
    pub query_end: i64,
    /// The query's step (0 for an instant query), for `step()`.
    pub query_step: i64,
    pub lookback: i64,
    pub default_step: i64,
    /// Drop metric names at the end of evaluation instead of as soon as a
    /// function or operator applies (Prometheus's delayed name removal).
    pub delayed_name_removal: bool,
}

/// A selector and the inclusive time span it reads.
struct Need<'a> {
    vs: &'a VectorSelector,
    mint: i64,
    maxt: i64,
    /// An instant selector read at one time only needs each series' newest
    /// sample.
    latest_only: bool,
}

/// A duration in milliseconds, saturating at `i64::MAX`. Time arithmetic
/// in planning and evaluation saturates too: query times span nearly all
/// of `i64`, and no combination of times, offsets and ranges may overflow.
pub fn dur_ms(d: &std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => dur_ms(d),
        Some(Offset::Neg(d)) => -dur_ms(d),
    }
}

pub fn at_ms(at: &Option<AtModifier>, t: &Timing) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(t.query_start),
        Some(AtModifier::End) => Some(t.query_end),
        Some(AtModifier::At(st)) => Some(match st.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => dur_ms(&d),
            Err(e) => -dur_ms(&e.duration()),
        }),
    }
}

/// A subquery's step: its own, or the default.
pub fn subquery_step(sq: &SubqueryExpr, t: &Timing) -> i64 {
    sq.step.as_ref().map(dur_ms).filter(|s| *s > 0).unwrap_or(t.default_step)
}

/// The grid a subquery's inner expression is evaluated on, as Prometheus
/// aligns it: steps at multiples of the subquery step.
pub fn subquery_grid(outer: &Grid, range: i64, step: i64, offset: i64, at: Option<i64>) -> Grid {
    let (start, end) = match at {
        Some(a) => (a, a),
        None => (outer.start, outer.end),
    };
    let end = end.saturating_sub(offset);
    let lo = start.saturating_sub(offset).saturating_sub(range);
    let mut inner_start = step * (lo / step);
    if inner_start < lo {
        inner_start = inner_start.saturating_add(step);
    }
    Grid { start: inner_start, end, step }
}

fn collect<'a>(e: &'a Expr, g: Grid, t: &Timing, out: &mut Vec<Need<'a>>) {
    match e {
        Expr::VectorSelector(vs) => {
            let (lo, hi) = eval_span(vs, &g, t);
            out.push(Need { vs, mint: lo.saturating_sub(t.lookback), maxt: hi, latest_only: lo == hi });
        }
        Expr::MatrixSelector(ms) => {
            let (lo, hi) = eval_span(&ms.vs, &g, t);
            out.push(Need { vs: &ms.vs, mint: lo.saturating_sub(dur_ms(&ms.range)), maxt: hi, latest_only: false });
        }
        Expr::Subquery(sq) => {
            let inner =
                subquery_grid(&g, dur_ms(&sq.range), subquery_step(sq, t), offset_ms(&sq.offset), at_ms(&sq.at, t));
            collect(&sq.expr, inner, t, out);
        }
        Expr::Aggregate(a) => {
            collect(&a.expr, g, t, out);
            if let Some(p) = &a.param {
                collect(p, g, t, out);
            }
        }
        Expr::Unary(u) => collect(&u.expr, g, t, out),
        Expr::Binary(b) => {
            collect(&b.lhs, g, t, out);
            collect(&b.rhs, g, t, out);
        }
        Expr::Paren(p) => collect(&p.expr, g, t, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                collect(a, g, t, out);
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The first and last evaluation time of a selector on grid `g`.
fn eval_span(vs: &VectorSelector, g: &Grid, t: &Timing) -> (i64, i64) {
    let off = offset_ms(&vs.offset);
    match at_ms(&vs.at, t) {
        Some(a) => (a.saturating_sub(off), a.saturating_sub(off)),
        None => (g.start.saturating_sub(off), g.end.saturating_sub(off)),
    }
}

/// Converts a selector's matchers into storage matchers: one set per `or`
/// branch (one set when there is no `or`).
pub fn matcher_sets(vs: &VectorSelector) -> Result<Vec<Vec<Matcher>>> {
    let convert = |m: &promql_parser::label::Matcher| -> Result<Matcher> {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        Matcher::new(op, m.name.clone(), m.value.clone())
            .map_err(|e| EvalError::BadData(format!("invalid regular expression in {}: {e}", m.name)))
    };
    let name = vs.name.as_ref().map(|n| Matcher::equal(cairn_common::METRIC_NAME, n.clone()));
    let mut base: Vec<Matcher> = name.into_iter().collect();
    for m in &vs.matchers.matchers {
        base.push(convert(m)?);
    }
    if vs.matchers.or_matchers.is_empty() {
        return Ok(vec![base]);
    }
    vs.matchers
        .or_matchers
        .iter()
        .map(|branch| {
            let mut set = base.clone();
            for m in branch {
                set.push(convert(m)?);
            }
            Ok(set)
        })
        .collect()
}

/// Fetches every selector's series. Limits apply to the query as a whole.
pub async fn fetch(
    expr: &Expr,
    grid: Grid,
    timing: &Timing,
    store: &dyn Queryable,
    tenant: &TenantId,
    meter: &Arc<QueryMeter>,
    max_samples: usize,
    max_series: usize,
) -> Result<Fetched> {
    let mut needs = Vec::new();
    collect(expr, grid, timing, &mut needs);
    let mut out = Fetched::new();
    let (mut loaded, mut selected) = (0usize, 0usize);
    let samples_error = || {
        EvalError::Limit(format!(
            "query processing would load too many samples into memory in query execution: more than {max_samples} (raise --query.max-samples)"
        ))
    };
    let series_error =
        || EvalError::Limit(format!("the query selects more than {max_series} series (raise --query.max-series)"));
    // What is left of a limit (0 = none); the storage refuses to exceed it.
    let left = |limit: usize, used: usize| if limit == 0 { 0 } else { limit.saturating_sub(used).max(1) };
    for n in needs {
        let sets = matcher_sets(n.vs)?;
        let mut series: Vec<Series> = Vec::new();
        for set in &sets {
            let req = SelectRequest {
                matchers: set,
                start: n.mint,
                end: n.maxt,
                max_series: left(max_series, selected),
                max_samples: left(max_samples, loaded),
                latest_only: n.latest_only,
                ctx: Some(meter.clone()),
            };
            let got = store.select(tenant, &req).await.map_err(|e| {
                if let Some(tripped) = meter.take_error() {
                    return tripped;
                }
                match e.code {
                    cairn_common::ErrorCode::TooManyRequests if e.message.contains("series") => series_error(),
                    cairn_common::ErrorCode::TooManyRequests => samples_error(),
                    _ => EvalError::Storage(e),
                }
            })?;
            // A refused charge fails the query even where a tier passed over
            // it (a tier that cannot be read only leaves a warning).
            if let Some(tripped) = meter.take_error() {
                return Err(tripped);
            }
            // The storage charged the meter for what it read.
            loaded += got.iter().map(|s| s.samples.len()).sum::<usize>();
            selected += got.len();
            if max_samples > 0 && loaded > max_samples {
                return Err(samples_error());
            }
            if max_series > 0 && selected > max_series {
                return Err(series_error());
            }
            series.extend(got);
        }
        if sets.len() > 1 {
            series.sort_by(|a, b| a.labels.cmp(&b.labels));
            series.dedup_by(|a, b| a.labels == b.labels);
        }
        out.insert(key(n.vs), Arc::new(series));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Subquery grids from any outer grid, range, step, offset and `@`
        /// never overflow, and start on a multiple of the step (unless they
        /// saturated at the end of time).
        #[test]
        fn subquery_grids_never_overflow(
            start in proptest::prelude::any::<i64>(),
            len in 0i64..1_000_000,
            range in 0i64..i64::MAX,
            step in 1i64..i64::MAX,
            offset in proptest::prelude::any::<i64>(),
            at in proptest::prelude::any::<Option<i64>>(),
        ) {
            let outer = Grid { start, end: start.saturating_add(len), step: 1 };
            let g = subquery_grid(&outer, range, step, offset, at);
            proptest::prop_assert!(g.start % step == 0 || g.start == i64::MAX, "{:?}", g);
            let _ = g.len();
        }
    }

    #[test]
    fn subquery_steps_align_to_absolute_time() {
        let outer = Grid { start: 1_000_000, end: 1_000_000, step: 0 };
        let g = subquery_grid(&outer, 300_000, 60_000, 0, None);
        assert_eq!(g, Grid { start: 720_000, end: 1_000_000, step: 60_000 });
        let g = subquery_grid(&outer, 300_000, 60_000, 30_000, None);
        assert_eq!(g.start, 720_000);
        assert_eq!(g.end, 970_000);
        // Negative times truncate toward zero, then step forward.
        let outer = Grid::instant(10_000);
        let g = subquery_grid(&outer, 60_000, 7_000, 0, None);
        assert_eq!(g.start, -49_000);
    }
}
