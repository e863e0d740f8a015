//! `POST /api/v1/sql`: the SQL endpoint, answering in the envelope of the
//! Prometheus query API.
//!
//! The query comes as the `query` form field (or URL parameter), or as the
//! whole body when it is not a form. `start` and `end` (RFC 3339 or Unix
//! seconds) limit the blocks read; by default all of them are.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_common::ErrorCode;
use cairn_common::TenantId;
use cairn_common::status::CodedError;
use cairn_common::tenant::TENANT_HEADER;
use cairn_common::time::{MAX_TIME_MS, MIN_TIME_MS, parse_time};
use serde_json::json;

use crate::Sql;

pub fn routes(sql: Sql) -> Router {
    Router::new().route("/api/v1/sql", axum::routing::post(handle)).with_state(sql)
}

fn error(code: ErrorCode, msg: impl std::fmt::Display) -> Response {
    let body = json!({"status": "error", "errorType": code.prometheus_error_type(), "error": msg.to_string()});
    (code.http_status(), [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn handle(State(sql): State<Sql>, headers: HeaderMap, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let tenant = match TenantId::from_header(headers.get(TENANT_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}"))) {
        Ok(t) => t,
        Err(e) => return error(ErrorCode::BadData, format!("invalid {TENANT_HEADER} header: {e}")),
    };
    let mut params: Vec<(String, String)> =
        query.map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    } else if !body.is_empty() {
        match std::str::from_utf8(&body) {
            Ok(text) => params.push(("query".into(), text.to_owned())),
            Err(_) => return error(ErrorCode::BadData, "the SQL body is not UTF-8"),
        }
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let Some(text) = get("query").filter(|q| !q.trim().is_empty()) else {
        return error(ErrorCode::BadData, "missing SQL: send it as the `query` form field or as the body");
    };
    let time = |k: &str, default: i64| match get(k) {
        None | Some("") => Ok(default),
        Some(s) => parse_time(s).map_err(|e| format!("invalid parameter {k:?}: {e}")),
    };
    let (start, end) = match (time("start", MIN_TIME_MS), time("end", MAX_TIME_MS)) {
        (Ok(s), Ok(e)) if s <= e => (s, e),
        (Ok(_), Ok(_)) => return error(ErrorCode::BadData, "invalid parameter \"end\": end is before start"),
        (Err(e), _) | (_, Err(e)) => return error(ErrorCode::BadData, e),
    };
    match sql.query(&tenant, text, start, end).await {
        Ok(result) => {
            let body = json!({"status": "success", "data": result});
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
        }
        Err(e) => error(e.error_code(), e),
    }
}
