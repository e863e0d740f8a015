//! Cairn's PromQL engine.
//!
//! ```text
//!   query text ──promql-parser──> AST ──plan::fetch──> Queryable::select (async)
//!                                   │                        │ series per selector
//!                                   └──────── Evaluator ◄────┘ (blocking thread)
//!                                                 │ step-vectorised values
//!                                                 ▼
//!                                  QueryValue: scalar | string | vector | matrix
//! ```
//!
//! The engine owns PromQL semantics and nothing else: it reads through the
//! [`Queryable`] trait, never knows where data lives, and does no I/O while
//! evaluating. Every selector's data is fetched before evaluation starts,
//! over exactly the span evaluation will read.

pub mod error;
mod eval;
#[doc(hidden)]
pub mod fuzz;
mod kahan;
pub mod limits;
pub mod meter;
pub mod plan;
pub mod promqltest;
pub mod value;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_common::memory::MemoryBudget;
use cairn_common::storage::{Queryable, Series};
use cairn_common::{Labels, TenantId};
use promql_parser::parser::Expr;

pub use error::{EvalError, Result};
use eval::Evaluator;
pub use limits::ExprLimits;
use meter::QueryMeter;
use plan::Timing;
pub use value::format_value;
use value::{Grid, Value};

/// Queries that loaded at most this many samples, over at most this many
/// steps, are evaluated without a thread hand-off.
const INLINE_EVAL_SAMPLES: usize = 20_000;
const INLINE_EVAL_STEPS: usize = 1_000;

/// Engine settings.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (default 5m).
    pub lookback_delta_ms: i64,
    /// Step of subqueries that give none (default 1m).
    pub default_subquery_step_ms: i64,
    /// Most samples a query may load or hold at once (0 = no limit); step
    /// values and other state count by their bytes, 16 to a sample.
    pub max_samples: usize,
    /// The memory all queries of the process share (none = no limit).
    pub budget: Option<Arc<MemoryBudget>>,
    /// Most series a query may select from storage (0 = no limit).
    pub max_series: usize,
    /// Time a query may run (0 = no limit).
    pub timeout: Duration,
    /// Keep `__name__` through evaluation and drop it from the result only
    /// (Prometheus's `promql-delayed-name-removal` feature; off by default
    /// there too).
    pub delayed_name_removal: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback_delta_ms: 5 * 60_000,
            default_subquery_step_ms: 60_000,
            max_samples: 50_000_000,
            budget: None,
            max_series: 0,
            timeout: Duration::from_secs(120),
            delayed_name_removal: false,
        }
    }
}

/// One sample of an instant vector result.
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
}

/// A query's result, in the shape the Prometheus API returns.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryValue {
    Scalar { t: i64, v: f64 },
    String { t: i64, s: String },
    Vector(Vec<InstantSample>),
    Matrix(Vec<Series>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    pub value: QueryValue,
    pub warnings: Vec<String>,
    pub infos: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Engine {
    opts: EngineOptions,
}

/// Parses a PromQL expression within the default [`ExprLimits`], mapping
/// errors to `bad_data`.
pub fn parse(query: &str) -> Result<Expr> {
    parse_with(query, &ExprLimits::default())
}

/// Parses a PromQL expression: the text is checked against `limits` before
/// anything recursive runs, and a panic of the parser on odd input becomes
/// a `bad_data` error rather than a dead connection.
pub fn parse_with(query: &str, limits: &ExprLimits) -> Result<Expr> {
    let scan = limits.check(query)?;
    let expr = cairn_common::task::catch_panic(|| promql_parser::parser::parse(query))
        .map_err(|p| EvalError::BadData(format!("the query could not be parsed: {p}")))?
        .map_err(EvalError::BadData)?;
    if !scan.invalid_utf8.is_empty() {
        check_label_names(&expr, &scan.invalid_utf8)?;
    }
    Ok(expr)
}

/// Refuses `label_replace` and `label_join` destinations that Prometheus
/// reads as bytes that are not UTF-8 (`"\xff"`): they are not label names.
/// Walks the tree with a stack of its own, not by recursion.
fn check_label_names(e: &Expr, invalid: &std::collections::BTreeSet<String>) -> Result<()> {
    let mut stack = vec![e];
    while let Some(e) = stack.pop() {
        match e {
            Expr::Call(c) => {
                if matches!(c.func.name, "label_replace" | "label_join")
                    && let Some(Expr::StringLiteral(dst)) = c.args.args.get(1).map(|a| a.as_ref())
                    && invalid.contains(&dst.val)
                {
                    return Err(EvalError::BadData(format!(
                        "invalid destination label name in {}(): {:?} is not valid UTF-8",
                        c.func.name, dst.val
                    )));
                }
                stack.extend(c.args.args.iter().map(|a| a.as_ref()));
            }
            Expr::Aggregate(a) => {
                stack.push(&a.expr);
                stack.extend(a.param.as_deref());
            }
            Expr::Unary(u) => stack.push(&u.expr),
            Expr::Binary(b) => stack.extend([b.lhs.as_ref(), b.rhs.as_ref()]),
            Expr::Paren(p) => stack.push(&p.expr),
            Expr::Subquery(s) => stack.push(&s.expr),
            _ => {}
        }
    }
    Ok(())
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Self { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Evaluates `expr` at one instant.
    pub async fn instant(&self, store: &dyn Queryable, tenant: &TenantId, expr: Expr, t: i64) -> Result<QueryResult> {
        self.exec(store, tenant, expr, Grid::instant(t), false).await
    }

    /// Evaluates `expr` at `start, start+step, ..., end`.
    pub async fn range(
        &self,
        store: &dyn Queryable,
        tenant: &TenantId,
        expr: Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<QueryResult> {
        if step <= 0 {
            return Err(EvalError::BadData(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(EvalError::BadData("end timestamp must not be before start time".into()));
        }
        self.exec(store, tenant, expr, Grid { start, end, step }, true).await
    }

    async fn exec(
        &self,
        store: &dyn Queryable,
        tenant: &TenantId,
        expr: Expr,
        grid: Grid,
        is_range: bool,
    ) -> Result<QueryResult> {
        let started = Instant::now();
        let deadline = (!self.opts.timeout.is_zero()).then(|| started + self.opts.timeout);
        let meter = Arc::new(QueryMeter::new(self.opts.max_samples, self.opts.budget.clone(), deadline));
        // If this future is dropped (the client went away, or a timeout
        // around it fired), evaluation on another thread stops at its next
        // check.
        let _cancel_on_drop = CancelOnDrop(meter.cancel_flag());
        let expr = Arc::new(expr);
        if is_range {
            match &*expr {
                Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                    return Err(EvalError::BadData(
                        "invalid expression type \"range vector\" for range query, must be Scalar or instant Vector"
                            .into(),
                    ));
                }
                Expr::StringLiteral(_) => {
                    return Err(EvalError::BadData(
                        "invalid expression type \"string\" for range query, must be Scalar or instant Vector".into(),
                    ));
                }
                _ => {}
            }
        }
        let timing = Timing {
            query_start: grid.start,
            query_end: grid.end,
            query_step: grid.step,
            lookback: self.opts.lookback_delta_ms,
            default_step: self.opts.default_subquery_step_ms,
            delayed_name_removal: self.opts.delayed_name_removal,
        };
        let fetch =
            plan::fetch(&expr, grid, &timing, store, tenant, &meter, self.opts.max_samples, self.opts.max_series);
        let fetched: plan::Fetched = match deadline {
            Some(d) => tokio::time::timeout(d.saturating_duration_since(Instant::now()), fetch)
                .await
                .map_err(|_| EvalError::Timeout("query queue or storage"))??,
            None => fetch.await?,
        };
        let loaded_samples: usize = fetched.values().flat_map(|v| v.iter()).map(|s| s.samples.len()).sum();
        let evaluated = meter.clone();
        let evaluate = move || {
            let mut ev = Evaluator::new(timing, &fetched, &meter);
            let value = ev.eval(&expr, &grid)?;
            let result = to_result(value, &grid, is_range)?;
            ev.annotations.warnings.extend(meter.take_warnings());
            Ok(QueryResult {
                value: result,
                warnings: ev.annotations.warnings.into_iter().collect(),
                infos: ev.annotations.infos.into_iter().collect(),
            })
        };
        // Small queries evaluate on the calling task; large ones on a
        // blocking thread, so that no runtime thread is held for long.
        if loaded_samples <= INLINE_EVAL_SAMPLES && grid.len() <= INLINE_EVAL_STEPS {
            return evaluate();
        }
        tokio::task::spawn_blocking(move || {
            let result = evaluate();
            // A query that held much freed it on this thread, which may
            // now sit idle: hand it back. (Not after every query: the next
            // would pay for taking the memory back, about 5-10% of a
            // day-long aggregation.)
            if evaluated.held_much() {
                cairn_common::memory::release_freed();
            }
            result
        })
        .await
        .map_err(|e| EvalError::Execution(format!("query evaluation failed: {e}")))?
    }
}

/// Sets a query's cancel flag when dropped.
struct CancelOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Drops the names marked for dropping (delayed name removal); series that
/// then share labels merge, and fail if they share a step.
fn drop_marked_names(v: Value) -> Result<Value> {
    Ok(match v {
        Value::Vector(mut v) if v.iter().any(|s| s.drop_name) => {
            for s in &mut v {
                if s.drop_name {
                    eval::remove_name(&mut s.labels);
                    s.drop_name = false;
                }
            }
            Value::Vector(eval::merge_same_labels(v)?)
        }
        Value::Matrix(mut rv) if rv.series.iter().any(|s| s.drop_name) => {
            for s in &mut rv.series {
                if s.drop_name {
                    eval::remove_name(&mut s.labels);
                    s.drop_name = false;
                }
            }
            let mut labels: Vec<&Labels> = rv.series.iter().map(|s| &s.labels).collect();
            labels.sort();
            if labels.windows(2).any(|w| w[0] == w[1]) {
                return Err(EvalError::Execution("vector cannot contain metrics with the same labelset".into()));
            }
            Value::Matrix(rv)
        }
        other => other,
    })
}

fn to_result(v: Value, g: &Grid, is_range: bool) -> Result<QueryValue> {
    Ok(match drop_marked_names(v)? {
        Value::String(s) => QueryValue::String { t: g.start, s },
        Value::Scalar(vals) if !is_range => QueryValue::Scalar { t: g.start, v: vals[0] },
        Value::Scalar(vals) => QueryValue::Matrix(vec![Series {
            labels: Labels::default(),
            samples: vals.iter().enumerate().map(|(i, &v)| cairn_common::Sample::new(g.t(i), v)).collect(),
        }]),
        Value::Vector(v) if !is_range => QueryValue::Vector(
            v.into_iter()
                .filter_map(|s| s.points.get(0).map(|x| InstantSample { labels: s.labels, t: g.start, v: x }))
                .collect(),
        ),
        Value::Vector(v) => {
            let mut m: Vec<Series> = v
                .into_iter()
                .map(|s| Series {
                    samples: s.points.iter().map(|(i, x)| cairn_common::Sample::new(g.t(i), x)).collect(),
                    labels: s.labels,
                })
                .collect();
            m.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryValue::Matrix(m)
        }
        Value::Matrix(rv) => {
            // An instant query of a range vector: the samples in the window.
            let mut m: Vec<Series> = rv
                .series
                .iter()
                .filter_map(|s| {
                    let (_, w) = rv.windows(&s.samples).next()?;
                    (!w.is_empty()).then(|| Series { labels: s.labels.clone(), samples: w.to_vec() })
                })
                .collect();
            m.sort_by(|a, b| a.labels.cmp(&b.labels));
            QueryValue::Matrix(m)
        }
    })
}
