//! Executing scripts and checking results as Prometheus's runner does.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use cairn_common::storage::Series;
use cairn_common::{Labels, TenantId, is_stale_nan};
use promql_parser::parser::{AtModifier, Expr};

use super::mem::MemStorage;
use super::script::{Annot, Command, EvalCmd, EvalKind, Expected, Slot};
use crate::{Engine, EngineOptions, QueryResult, QueryValue};

/// Where a script's data goes and its queries run.
#[async_trait]
pub trait Backend: Send {
    async fn load(&mut self, series: Vec<Series>) -> Result<(), String>;
    async fn clear(&mut self) -> Result<(), String>;
    /// Runs a query, given as the script wrote it and as parsed; `Err`
    /// carries the error message.
    async fn query(&mut self, text: &str, expr: Expr, kind: &EvalKind) -> Result<QueryResult, String>;
}

/// The engine over in-memory storage, with the settings the scripts assume.
pub struct EngineBackend {
    pub engine: Engine,
    pub store: Arc<MemStorage>,
    tenant: TenantId,
}

impl Default for EngineBackend {
    fn default() -> Self {
        // The settings Prometheus's own test engine uses.
        Self::with_options(EngineOptions { max_samples: 10_000, delayed_name_removal: true, ..Default::default() })
    }
}

impl EngineBackend {
    pub fn with_options(opts: EngineOptions) -> Self {
        Self {
            engine: Engine::new(opts),
            store: Arc::new(MemStorage::default()),
            tenant: TenantId::new("test").unwrap_or_else(|_| unreachable!("valid tenant")),
        }
    }
}

#[async_trait]
impl Backend for EngineBackend {
    async fn load(&mut self, series: Vec<Series>) -> Result<(), String> {
        for s in series {
            self.store.add(s);
        }
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), String> {
        self.store.clear();
        Ok(())
    }

    async fn query(&mut self, _text: &str, expr: Expr, kind: &EvalKind) -> Result<QueryResult, String> {
        let r = match *kind {
            EvalKind::Instant { t } => self.engine.instant(self.store.as_ref(), &self.tenant, expr, t).await,
            EvalKind::Range { start, end, step } => {
                self.engine.range(self.store.as_ref(), &self.tenant, expr, start, end, step).await
            }
        };
        r.map_err(|e| e.to_string())
    }
}

/// Totals of one script.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// `line: what went wrong`.
    pub failures: Vec<String>,
    /// `line: why it was skipped`.
    pub skips: Vec<String>,
}

/// Decides whether an eval is outside what the engine supports; returns
/// the reason. `hist_metrics` are metric names loaded with native
/// histograms since the last `clear`.
pub type SkipFn<'a> = &'a (dyn Fn(&EvalCmd, &HashSet<String>) -> Option<String> + Sync);

/// Runs a whole script.
pub async fn run_script(text: &str, backend: &mut dyn Backend, skip: SkipFn<'_>) -> Result<Outcome, String> {
    let cmds = super::script::parse(text).map_err(|e| e.to_string())?;
    let mut out = Outcome::default();
    let mut hist_metrics: HashSet<String> = HashSet::new();
    for c in cmds {
        match c {
            Command::Clear => {
                hist_metrics.clear();
                backend.clear().await?;
            }
            Command::Load { series, histograms, .. } => {
                for h in histograms {
                    hist_metrics.insert(h.metric_name().unwrap_or("").to_owned());
                }
                backend.load(series).await?;
            }
            Command::Eval(e) => {
                if let Some(reason) = skip(&e, &hist_metrics) {
                    out.skipped += 1;
                    out.skips.push(format!("{}: {reason}", e.line));
                    continue;
                }
                match check_eval(&e, backend).await {
                    Ok(()) => out.passed += 1,
                    Err(msg) => {
                        out.failed += 1;
                        out.failures.push(format!("{}: {} -- {msg}", e.line, e.expr));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn check_annotations(kind: &str, a: &Annot, got: &[String]) -> Result<(), String> {
    if !a.checked {
        return Ok(());
    }
    if a.none {
        if !got.is_empty() {
            return Err(format!("expected no {kind} annotations, got {got:?}"));
        }
        return Ok(());
    }
    if got.is_empty() {
        return Err(format!("expected {kind} annotations, got none"));
    }
    for m in &a.expect {
        if !got.iter().any(|g| m.matches(g)) {
            return Err(format!("expected {kind} annotation {m:?} not in {got:?}"));
        }
    }
    for g in got {
        if !a.expect.iter().any(|m| m.matches(g)) {
            return Err(format!("unexpected {kind} annotation {g:?}"));
        }
    }
    Ok(())
}

/// Prometheus's test tolerance: relative 1e-6, NaN equals NaN, a staleness
/// marker only equals a staleness marker.
pub fn almost_equal(a: f64, b: f64) -> bool {
    if is_stale_nan(a) || is_stale_nan(b) {
        return is_stale_nan(a) && is_stale_nan(b);
    }
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let abs_sum = a.abs() + b.abs();
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || abs_sum < f64::MIN_POSITIVE {
        return diff < 1e-6 * f64::MIN_POSITIVE;
    }
    diff / abs_sum.min(f64::MAX) < 1e-6
}

async fn check_eval(e: &EvalCmd, backend: &mut dyn Backend) -> Result<(), String> {
    let expr = crate::parse(&e.expr).map_err(|e| e.to_string());
    let res = match expr.clone() {
        Ok(x) => backend.query(&e.expr, x, &e.kind).await,
        Err(err) => Err(err),
    };
    if let Some(m) = &e.fail {
        return match res {
            Ok(_) => Err("expected the query to fail, it succeeded".into()),
            Err(msg) if m.matches(&msg) => Ok(()),
            Err(msg) => Err(format!("failed with {msg:?}, expected {m:?}")),
        };
    }
    let res = res.map_err(|m| format!("query failed: {m}"))?;
    check_annotations("warn", &e.warn, &res.warnings)?;
    check_annotations("info", &e.info, &res.infos)?;
    compare(&res.value, e)?;
    let EvalKind::Instant { t } = e.kind else { return Ok(()) };
    let Ok(expr) = expr else { return Ok(()) };
    let text = e.expr.as_str();
    let time_dependent = ["start()", "end()", "range()", "step()"].iter().any(|f| text.contains(f));
    // Range mode: the point at t of a range query over [t-1m, t+1m].
    if !e.ordered && !time_dependent && matches!(e.expected, Expected::Series(_) | Expected::Scalar(_)) {
        let kind = EvalKind::Range { start: t - 60_000, end: t + 60_000, step: 60_000 };
        let r = backend.query(&e.expr, expr.clone(), &kind).await.map_err(|m| format!("range mode failed: {m}"))?;
        let QueryValue::Matrix(m) = r.value else { return Err("range mode did not return a matrix".into()) };
        let at_t = match &e.expected {
            Expected::Scalar(_) => QueryValue::Scalar {
                t,
                v: m.first().and_then(|s| s.samples.iter().find(|x| x.t == t)).map(|x| x.v).unwrap_or(f64::NAN),
            },
            _ => QueryValue::Vector(
                m.iter()
                    .filter_map(|s| {
                        s.samples.iter().find(|x| x.t == t).map(|x| crate::InstantSample {
                            labels: s.labels.clone(),
                            t,
                            v: x.v,
                        })
                    })
                    .collect(),
            ),
        };
        compare(&at_t, e).map_err(|m| format!("range mode: {m}"))?;
    }
    // @ modifier: pin every selector to t and evaluate at other times.
    const UNSAFE: [&str; 15] = [
        "days_in_month",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "end",
        "hour",
        "minute",
        "month",
        "year",
        "predict_linear",
        "range",
        "start",
        "step",
        "time",
        "timestamp",
    ];
    if !UNSAFE.iter().any(|f| text.contains(&format!("{f}(")))
        && matches!(e.expected, Expected::Series(_) | Expected::Scalar(_))
    {
        let mut pinned = expr;
        if pin_at(&mut pinned, t) {
            let pinned_text = pinned.to_string();
            let times = if t == 0 { vec![-1000, 0, 1000] } else { vec![-10 * t, 0, t / 5, t, 10 * t] };
            for at in times {
                let r = backend
                    .query(&pinned_text, pinned.clone(), &EvalKind::Instant { t: at })
                    .await
                    .map_err(|m| format!("@ check at {at} failed: {m}"))?;
                compare(&r.value, e).map_err(|m| format!("@ check at {at}: {m}"))?;
            }
        }
    }
    Ok(())
}

fn at_time(t: i64) -> AtModifier {
    let d = std::time::Duration::from_millis(t.unsigned_abs());
    AtModifier::At(if t >= 0 { std::time::UNIX_EPOCH + d } else { std::time::UNIX_EPOCH - d })
}

/// Sets `@ t` on every selector and subquery that has none, not descending
/// into subqueries that are pinned. Returns whether anything was pinned.
fn pin_at(e: &mut Expr, t: i64) -> bool {
    match e {
        Expr::VectorSelector(vs) => {
            if vs.at.is_none() {
                vs.at = Some(at_time(t));
            }
            true
        }
        Expr::MatrixSelector(ms) => {
            if ms.vs.at.is_none() {
                ms.vs.at = Some(at_time(t));
            }
            true
        }
        Expr::Subquery(sq) => {
            if sq.at.is_none() {
                sq.at = Some(at_time(t));
            }
            true
        }
        Expr::Aggregate(a) => {
            let mut any = pin_at(&mut a.expr, t);
            if let Some(p) = &mut a.param {
                any |= pin_at(p, t);
            }
            any
        }
        Expr::Unary(u) => pin_at(&mut u.expr, t),
        Expr::Binary(b) => pin_at(&mut b.lhs, t) | pin_at(&mut b.rhs, t),
        Expr::Paren(p) => pin_at(&mut p.expr, t),
        Expr::Call(c) => c.args.args.iter_mut().fold(false, |any, a| pin_at(a, t) | any),
        _ => false,
    }
}

fn fmt_labels(l: &Labels) -> String {
    l.to_string()
}

fn compare_series(
    got: &[(Labels, Vec<(i64, f64)>)],
    want: &[(Labels, Vec<Slot>)],
    times: &dyn Fn(usize) -> i64,
    ordered: bool,
) -> Result<(), String> {
    if got.len() != want.len() {
        let g: Vec<String> = got.iter().map(|s| fmt_labels(&s.0)).collect();
        let w: Vec<String> = want.iter().map(|s| fmt_labels(&s.0)).collect();
        return Err(format!("expected {} series {w:?}, got {} {g:?}", want.len(), got.len()));
    }
    for (wi, (wl, wv)) in want.iter().enumerate() {
        let Some(gi) = got.iter().position(|g| g.0 == *wl) else {
            return Err(format!(
                "expected series {} not in result {:?}",
                fmt_labels(wl),
                got.iter().map(|g| fmt_labels(&g.0)).collect::<Vec<_>>()
            ));
        };
        if ordered && gi != wi {
            return Err(format!("series {} at position {gi}, expected {wi}", fmt_labels(wl)));
        }
        let want_points: Vec<(i64, f64)> =
            wv.iter().enumerate().filter_map(|(k, v)| v.map(|v| (times(k), v))).collect();
        let gp = &got[gi].1;
        if gp.len() != want_points.len()
            || gp.iter().zip(&want_points).any(|(a, b)| a.0 != b.0 || !almost_equal(a.1, b.1))
        {
            return Err(format!("series {}: expected {want_points:?}, got {gp:?}", fmt_labels(wl)));
        }
    }
    Ok(())
}

fn compare(v: &QueryValue, e: &EvalCmd) -> Result<(), String> {
    match (&e.expected, v, &e.kind) {
        (Expected::String(want), QueryValue::String { s, .. }, _) => {
            if s == want {
                Ok(())
            } else {
                Err(format!("expected string {want:?}, got {s:?}"))
            }
        }
        (Expected::Scalar(want), QueryValue::Scalar { v, .. }, _) => {
            if almost_equal(*v, *want) {
                Ok(())
            } else {
                Err(format!("expected scalar {want}, got {v}"))
            }
        }
        (Expected::Series(want), QueryValue::Vector(got), EvalKind::Instant { t }) => {
            for w in want {
                if w.1.len() != 1 {
                    return Err(format!("expected one value for {}", fmt_labels(&w.0)));
                }
            }
            let got: Vec<(Labels, Vec<(i64, f64)>)> = got.iter().map(|s| (s.labels.clone(), vec![(*t, s.v)])).collect();
            let t = *t;
            compare_series(&got, want, &|_| t, e.ordered)
        }
        (Expected::Series(want), QueryValue::Matrix(got), EvalKind::Range { start, step, .. }) => {
            if got.windows(2).any(|w| w[0].labels >= w[1].labels) {
                return Err("matrix result is not sorted by labels".into());
            }
            let got: Vec<(Labels, Vec<(i64, f64)>)> =
                got.iter().map(|s| (s.labels.clone(), s.samples.iter().map(|x| (x.t, x.v)).collect())).collect();
            let (start, step) = (*start, *step);
            compare_series(&got, want, &|k| start + k as i64 * step, false)
        }
        (Expected::RangeVector { start, step, series }, QueryValue::Matrix(got), _) => {
            let got: Vec<(Labels, Vec<(i64, f64)>)> =
                got.iter().map(|s| (s.labels.clone(), s.samples.iter().map(|x| (x.t, x.v)).collect())).collect();
            let (start, step) = (*start, *step);
            compare_series(&got, series, &|k| start + k as i64 * step, false)
        }
        (Expected::Series(want), QueryValue::Matrix(got), EvalKind::Instant { .. })
            if want.is_empty() && got.is_empty() =>
        {
            Ok(())
        }
        (Expected::Series(want), QueryValue::Scalar { v, .. }, _) if want.is_empty() => {
            Err(format!("expected no result, got scalar {v}"))
        }
        (want, got, _) => Err(format!("expected {want:?}, got {got:?}")),
    }
}
