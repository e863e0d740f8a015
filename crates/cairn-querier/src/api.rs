//! Handlers of the Prometheus query API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_common::status::{CodedError, ServiceError};
use cairn_common::storage::LabelsRequest;
use cairn_common::tenant::TENANT_HEADER;
use cairn_common::time::{MAX_TIME_MS, MIN_TIME_MS, now_ms};
use cairn_common::{ErrorCode, Matcher, TenantId};
use cairn_promql::{Engine, EngineOptions, EvalError, QueryResult, QueryValue};
use promql_parser::parser::Expr;

use crate::lookup::LookupContext;
use crate::params::{Params, invalid, limit_param, parse_duration, time_param};
use crate::{Querier, json};

/// Prometheus refuses range queries with more points than this per series.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;
const TRUNCATED: &str = "results truncated due to limit";

pub fn routes(q: Querier) -> Router {
    Router::new()
        .route("/api/v1/query", get(query).post(query))
        .route("/api/v1/query_range", get(query_range).post(query_range))
        .route("/api/v1/series", get(series).post(series))
        .route("/api/v1/labels", get(labels).post(labels))
        .route("/api/v1/label/{name}/values", get(label_values))
        .route("/api/v1/metadata", get(metadata))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/format_query", get(format_query).post(format_query))
        .route("/api/v1/parse_query", get(parse_query).post(parse_query))
        .route("/api/v1/query_exemplars", get(query_exemplars).post(query_exemplars))
        .with_state(q)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn api_error(code: ErrorCode, msg: impl AsRef<str>) -> Response {
    json_response(code.http_status(), json::error(code.prometheus_error_type(), msg.as_ref()))
}

fn bad_data(msg: impl AsRef<str>) -> Response {
    api_error(ErrorCode::BadData, msg)
}

fn eval_error(e: EvalError) -> Response {
    api_error(e.error_code(), e.to_string())
}

fn service_error(e: ServiceError) -> Response {
    api_error(e.code, e.message)
}

/// Everything a handler needs from the request.
struct Req {
    tenant: TenantId,
    params: Params,
}

fn request(method: &Method, headers: &HeaderMap, query: Option<String>, body: &Bytes) -> Result<Req, Response> {
    let tenant_header = headers.get(TENANT_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let tenant =
        TenantId::from_header(tenant_header).map_err(|e| bad_data(format!("invalid {TENANT_HEADER} header: {e}")))?;
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(q) = query {
        pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    if *method == Method::POST {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        if form {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
    }
    Ok(Req { tenant, params: Params(pairs) })
}

fn engine_for(q: &Querier, p: &Params) -> Result<Engine, Response> {
    let cfg = q.config();
    let mut timeout = cfg.timeout.as_std();
    if let Some(t) = p.get("timeout").filter(|t| !t.is_empty()) {
        let ms = parse_duration(t).map_err(|e| bad_data(invalid("timeout", &e)))?;
        if ms <= 0 {
            return Err(bad_data(invalid("timeout", "timeout must be positive")));
        }
        timeout = timeout.min(Duration::from_millis(ms as u64));
    }
    Ok(Engine::new(EngineOptions {
        lookback_delta_ms: cfg.lookback_delta.as_millis() as i64,
        default_subquery_step_ms: cfg.default_subquery_step.as_millis() as i64,
        max_samples: cfg.max_samples,
        budget: Some(q.inner.budget.clone()),
        max_series: cfg.max_series,
        timeout,
        delayed_name_removal: cfg.delayed_name_removal,
    }))
}

fn parse_expr(q: &Querier, p: &Params) -> Result<Expr, Response> {
    let text = p.get("query").unwrap_or("");
    if text.trim().is_empty() {
        return Err(bad_data(invalid("query", "no expression found in input")));
    }
    cairn_promql::parse_with(text, &q.config().expr_limits()).map_err(|e| bad_data(invalid("query", &e.to_string())))
}

/// A turn among the `--query.max-concurrency` queries and lookups.
async fn permit(q: &Querier) -> Result<tokio::sync::SemaphorePermit<'_>, Response> {
    q.inner.permits.acquire().await.map_err(|_| api_error(ErrorCode::Unavailable, "querier is shutting down"))
}

/// Keeps at most `limit` series of a result, with Prometheus's warning.
fn apply_limit(r: &mut QueryResult, limit: usize) {
    if limit == 0 {
        return;
    }
    let truncated = match &mut r.value {
        QueryValue::Vector(v) if v.len() > limit => {
            v.truncate(limit);
            true
        }
        QueryValue::Matrix(m) if m.len() > limit => {
            m.truncate(limit);
            true
        }
        _ => false,
    };
    if truncated {
        r.warnings.push(TRUNCATED.into());
    }
}

async fn query(
    State(q): State<Querier>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let req = match request(&method, &headers, raw, &body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let p = &req.params;
    let run = async {
        let t = time_param(p, "time", now_ms()).map_err(bad_data)?;
        let limit = limit_param(p).map_err(bad_data)?;
        let engine = engine_for(&q, p)?;
        let expr = parse_expr(&q, p)?;
        let _permit = permit(&q).await?;
        let mut r = engine.instant(q.inner.store.as_ref(), &req.tenant, expr, t).await.map_err(eval_error)?;
        apply_limit(&mut r, limit);
        Ok::<_, Response>(json_response(StatusCode::OK, json::query_response(&r)))
    };
    run.await.unwrap_or_else(|e| e)
}

async fn query_range(
    State(q): State<Querier>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let req = match request(&method, &headers, raw, &body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let p = &req.params;
    let run = async {
        let need = |name: &str| -> Result<&str, Response> {
            p.get(name).filter(|s| !s.is_empty()).ok_or_else(|| {
                bad_data(invalid(
                    name,
                    &format!("cannot parse \"\" to a valid {}", if name == "step" { "duration" } else { "timestamp" }),
                ))
            })
        };
        let start = crate::params::parse_time(need("start")?).map_err(|e| bad_data(invalid("start", &e)))?;
        let end = crate::params::parse_time(need("end")?).map_err(|e| bad_data(invalid("end", &e)))?;
        if end < start {
            return Err(bad_data(invalid("end", "end timestamp must not be before start time")));
        }
        let step = parse_duration(need("step")?).map_err(|e| bad_data(invalid("step", &e)))?;
        if step <= 0 {
            return Err(bad_data(invalid(
                "step",
                "zero or negative query resolution step widths are not accepted. Try a positive integer",
            )));
        }
        // In 128 bits: start and end may lie at opposite ends of i64.
        if (i128::from(end) - i128::from(start)) / i128::from(step) > i128::from(MAX_POINTS_PER_SERIES) {
            return Err(bad_data(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
            ));
        }
        let limit = limit_param(p).map_err(bad_data)?;
        let engine = engine_for(&q, p)?;
        let expr = parse_expr(&q, p)?;
        let _permit = permit(&q).await?;
        let mut r =
            engine.range(q.inner.store.as_ref(), &req.tenant, expr, start, end, step).await.map_err(eval_error)?;
        apply_limit(&mut r, limit);
        Ok(json_response(StatusCode::OK, json::query_response(&r)))
    };
    run.await.unwrap_or_else(|e| e)
}

/// `match[]` selectors as matcher sets (an `or` selector gives several).
fn match_sets(q: &Querier, p: &Params) -> Result<Vec<Vec<Matcher>>, Response> {
    let mut sets = Vec::new();
    for m in p.all("match[]") {
        let vs = match cairn_promql::parse_with(m, &q.config().expr_limits()) {
            Ok(Expr::VectorSelector(vs)) => vs,
            Ok(_) => return Err(bad_data(invalid("match[]", &format!("{m:?} is not a series selector")))),
            Err(e) => return Err(bad_data(invalid("match[]", &e.to_string()))),
        };
        sets.extend(cairn_promql::plan::matcher_sets(&vs).map_err(eval_error)?);
    }
    Ok(sets)
}

struct LabelsQuery {
    sets: Vec<Vec<Matcher>>,
    start: i64,
    end: i64,
    limit: usize,
}

fn labels_query(q: &Querier, p: &Params) -> Result<LabelsQuery, Response> {
    let start = time_param(p, "start", MIN_TIME_MS).map_err(bad_data)?;
    let end = time_param(p, "end", MAX_TIME_MS).map_err(bad_data)?;
    if end < start {
        return Err(bad_data(invalid("end", "end timestamp must not be before start time")));
    }
    Ok(LabelsQuery { sets: match_sets(q, p)?, start, end, limit: limit_param(p).map_err(bad_data)? })
}

/// Runs a labels-style lookup asking for one more than the limit, so that
/// truncation can be reported.
fn limited<T>(mut v: Vec<T>, limit: usize) -> (Vec<T>, Vec<String>) {
    if limit > 0 && v.len() > limit {
        v.truncate(limit);
        return (v, vec![TRUNCATED.into()]);
    }
    (v, Vec::new())
}

fn lr(lq: &LabelsQuery, ctx: Arc<LookupContext>) -> LabelsRequest<'_> {
    LabelsRequest {
        matcher_sets: &lq.sets,
        start: lq.start,
        end: lq.end,
        limit: if lq.limit == 0 { 0 } else { lq.limit + 1 },
        ctx: Some(ctx),
    }
}

/// The three label lookups share parsing, limits and encoding.
enum Lookup {
    Series,
    Names,
    Values(String),
}

async fn lookup(q: &Querier, req: Result<Req, Response>, what: Lookup) -> Response {
    let run = async {
        let req = req?;
        match &what {
            Lookup::Series if req.params.all("match[]").is_empty() => {
                return Err(bad_data("no match[] parameter provided"));
            }
            Lookup::Values(name) if name.is_empty() => return Err(bad_data(format!("invalid label name: {name:?}"))),
            _ => {}
        }
        let lq = labels_query(q, &req.params)?;
        // Lookups wait their turn with queries and answer within the query
        // timeout; a tier that cannot be read leaves a warning.
        let timeout = q.config().timeout.as_std();
        let deadline = Instant::now() + timeout;
        let ctx = LookupContext::new(Some(deadline), Some(q.inner.budget.clone()));
        let r = lr(&lq, ctx.clone());
        let store = &q.inner.store;
        let work = async {
            let _permit = permit(q).await?;
            Ok::<_, Response>(match &what {
                Lookup::Series => {
                    let (v, w) = limited(store.series(&req.tenant, &r).await.map_err(service_error)?, lq.limit);
                    (json::labels_array(&v), w)
                }
                Lookup::Names => {
                    let (v, w) = limited(store.label_names(&req.tenant, &r).await.map_err(service_error)?, lq.limit);
                    (json::string_array(&v), w)
                }
                Lookup::Values(name) => {
                    let v = store.label_values(&req.tenant, name, &r).await.map_err(service_error)?;
                    let (v, w) = limited(v, lq.limit);
                    (json::string_array(&v), w)
                }
            })
        };
        let (data, mut warnings) = tokio::time::timeout_at(deadline.into(), work).await.map_err(|_| {
            api_error(ErrorCode::Timeout, format!("query timed out in lookup after {timeout:?} (--query.timeout)"))
        })??;
        if let Some(refused) = ctx.take_refusal() {
            return Err(service_error(refused));
        }
        warnings.extend(ctx.take_warnings());
        Ok(json_response(StatusCode::OK, json::success(&data, &warnings)))
    };
    run.await.unwrap_or_else(|e| e)
}

async fn series(
    State(q): State<Querier>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    lookup(&q, request(&method, &headers, raw, &body), Lookup::Series).await
}

async fn labels(
    State(q): State<Querier>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    lookup(&q, request(&method, &headers, raw, &body), Lookup::Names).await
}

async fn label_values(
    State(q): State<Querier>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    lookup(&q, request(&method, &headers, raw, &Bytes::new()), Lookup::Values(name)).await
}

async fn metadata(State(q): State<Querier>, method: Method, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let req = match request(&method, &headers, raw, &Bytes::new()) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let p = &req.params;
    let parse_limit = |name: &str| -> Result<Option<usize>, Response> {
        match p.get(name) {
            None | Some("") => Ok(None),
            Some(s) => match s.parse::<i64>() {
                Ok(n) if n < 0 => Ok(None),
                Ok(n) => Ok(Some(n as usize)),
                Err(_) => Err(bad_data(invalid(name, &format!("cannot parse {s:?}")))),
            },
        }
    };
    let (limit, per_metric) = match (parse_limit("limit"), parse_limit("limit_per_metric")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let md = match q.inner.store.metadata(&req.tenant, p.get("metric").filter(|m| !m.is_empty())).await {
        Ok(m) => m,
        Err(e) => return service_error(e),
    };
    let mut out = String::from("{");
    for (i, (name, entries)) in md.iter().take(limit.unwrap_or(usize::MAX)).enumerate() {
        if i > 0 {
            out.push(',');
        }
        json::write_str(&mut out, name);
        out.push_str(":[");
        for (j, m) in entries.iter().take(per_metric.unwrap_or(usize::MAX)).enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str("{\"type\":");
            json::write_str(&mut out, m.kind.as_str());
            out.push_str(",\"help\":");
            json::write_str(&mut out, &m.help);
            out.push_str(",\"unit\":");
            json::write_str(&mut out, &m.unit);
            out.push('}');
        }
        out.push(']');
    }
    out.push('}');
    json_response(StatusCode::OK, json::success(&out, &[]))
}

async fn buildinfo(State(q): State<Querier>) -> Response {
    let b = &q.inner.build;
    let mut out = String::from("{\"application\":\"Cairn\",\"version\":");
    json::write_str(&mut out, &b.version);
    for (k, v) in [
        ("revision", &b.revision),
        ("branch", &b.branch),
        ("buildUser", &String::new()),
        ("buildDate", &b.build_date),
        ("goVersion", &b.toolchain),
    ] {
        out.push_str(&format!(",\"{k}\":"));
        json::write_str(&mut out, v);
    }
    out.push('}');
    json_response(StatusCode::OK, json::success(&out, &[]))
}

async fn format_query(
    State(q): State<Querier>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let req = match request(&method, &headers, raw, &body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match parse_expr(&q, &req.params) {
        Ok(e) => {
            let mut out = String::new();
            json::write_str(&mut out, &e.prettify());
            json_response(StatusCode::OK, json::success(&out, &[]))
        }
        Err(e) => e,
    }
}

async fn parse_query(
    State(q): State<Querier>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let req = match request(&method, &headers, raw, &body) {
        Ok(r) => r,
        Err(e) => return e,
    };
    match parse_expr(&q, &req.params) {
        Ok(e) => match serde_json::to_string(&e) {
            Ok(ast) => json_response(StatusCode::OK, json::success(&ast, &[])),
            Err(err) => api_error(ErrorCode::Internal, format!("encoding the syntax tree: {err}")),
        },
        Err(e) => e,
    }
}

/// Exemplars are not stored: the answer is always empty, as Prometheus's is
/// for series without exemplars.
async fn query_exemplars(method: Method, headers: HeaderMap, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    match request(&method, &headers, raw, &body) {
        Ok(_) => json_response(StatusCode::OK, json::success("[]", &[])),
        Err(e) => e,
    }
}
