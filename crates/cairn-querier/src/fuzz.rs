//! Entry point for coverage-guided fuzzing of the query API's parameter
//! parsing (`tests/fuzz`), replayed as an ordinary test: any form body on
//! any query endpoint gets an answer, never a panic.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use cairn_promql::promqltest::mem::MemStorage;
use tower::ServiceExt;

use crate::{BuildInfo, Querier, QuerierConfig, api};

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
}

const PATHS: [&str; 8] = [
    "/api/v1/query",
    "/api/v1/query_range",
    "/api/v1/series",
    "/api/v1/labels",
    "/api/v1/label/job/values",
    "/api/v1/format_query",
    "/api/v1/parse_query",
    "/api/v1/metadata",
];

/// The first byte picks the endpoint; the rest is the form body.
pub fn api_params(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let path = PATHS[usize::from(which) % PATHS.len()];
    let cfg = QuerierConfig {
        timeout: cairn_common::PromDuration::from_millis(2000),
        max_samples: 200_000,
        memory_limit_bytes: 64 << 20,
        ..Default::default()
    };
    let app = api::routes(Querier::new(cfg, Arc::new(MemStorage::default()), BuildInfo::default()));
    let Ok(req) = Request::post(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Scope-OrgID", "fuzz")
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    RUNTIME.with(|rt| {
        let Some(rt) = rt else { return };
        rt.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), app.oneshot(req)).await;
        });
    });
}
