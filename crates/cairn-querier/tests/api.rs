//! The query API over in-memory data, checked against Prometheus's JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cairn_common::storage::Series;
use cairn_common::{Labels, Sample};
use cairn_promql::promqltest::mem::MemStorage;
use cairn_querier::{BuildInfo, Querier, QuerierConfig, api};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn app() -> axum::Router {
    app_with(QuerierConfig::default())
}

fn app_with(cfg: QuerierConfig) -> axum::Router {
    let store = Arc::new(MemStorage::default());
    for (job, v) in [("api", 1.0), ("db", 2.0)] {
        store.add(Series {
            labels: Labels::from_pairs([("__name__", "up"), ("job", job)]),
            samples: (0..10).map(|i| Sample::new(i * 15_000, v)).collect(),
        });
    }
    store.add(Series {
        labels: Labels::from_pairs([("__name__", "requests_total"), ("job", "api")]),
        samples: (0..41).map(|i| Sample::new(i * 15_000, i as f64 * 10.0)).collect(),
    });
    api::routes(Querier::new(cfg, store, BuildInfo { version: "0.1.0".into(), ..Default::default() }))
}

async fn call(req: Request<Body>) -> (StatusCode, String) {
    let resp = app().oneshot(req).await.expect("response");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8(body.to_vec()).expect("utf8"))
}

async fn get(uri: &str) -> (StatusCode, String) {
    call(Request::get(uri).body(Body::empty()).expect("request")).await
}

#[tokio::test]
async fn instant_query_matches_prometheus_json() {
    let (s, body) = get("/api/v1/query?query=up&time=60").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"api"},"value":[60,"1"]},{"metric":{"__name__":"up","job":"db"},"value":[60,"2"]}]}}"#
    );
    let (_, body) = get("/api/v1/query?query=sum%20by%20(job)%20(rate(requests_total%5B1m%5D))&time=600.5").await;
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"api"},"value":[600.500,"0.6666666666666666"]}]}}"#
    );
    let (_, body) = get("/api/v1/query?query=1%2B1&time=1").await;
    assert_eq!(body, r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#);
}

#[tokio::test]
async fn post_form_and_range_query() {
    let req = Request::post("/api/v1/query_range")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("query=up%7Bjob%3D%22api%22%7D&start=0&end=30&step=15"))
        .expect("request");
    let (s, body) = call(req).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"api"},"values":[[0,"1"],[15,"1"],[30,"1"]]}]}}"#
    );
}

#[tokio::test]
async fn errors_carry_prometheus_types_and_statuses() {
    for (uri, status, typ, text) in [
        ("/api/v1/query?query=up(", StatusCode::BAD_REQUEST, "bad_data", "invalid parameter \\\"query\\\""),
        (
            "/api/v1/query?query=up&time=yesterday",
            StatusCode::BAD_REQUEST,
            "bad_data",
            "cannot parse \\\"yesterday\\\" to a valid timestamp",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=100000&step=1",
            StatusCode::BAD_REQUEST,
            "bad_data",
            "11,000 points",
        ),
        (
            "/api/v1/query_range?query=up&start=10&end=0&step=1",
            StatusCode::BAD_REQUEST,
            "bad_data",
            "end timestamp must not be before start time",
        ),
        (
            "/api/v1/query_range?query=up&start=0&end=10&step=0",
            StatusCode::BAD_REQUEST,
            "bad_data",
            "zero or negative query resolution step",
        ),
        (
            "/api/v1/query_range?query=up%5B5m%5D&start=0&end=10&step=1",
            StatusCode::BAD_REQUEST,
            "bad_data",
            "range vector",
        ),
        ("/api/v1/series", StatusCode::BAD_REQUEST, "bad_data", "no match[] parameter provided"),
        ("/api/v1/query?query=up&timeout=-1", StatusCode::BAD_REQUEST, "bad_data", "timeout"),
    ] {
        let (s, body) = get(uri).await;
        assert_eq!(s, status, "{uri}: {body}");
        assert!(body.starts_with(&format!(r#"{{"status":"error","errorType":"{typ}","error":""#)), "{uri}: {body}");
        assert!(body.contains(text), "{uri}: {body}");
    }
    let (s, body) = get("/api/v1/query?query=label_replace(up,%22a-b%22,%22%22,%22job%22,%22(%22)").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains(r#""errorType":"execution""#), "{body}");
}

#[tokio::test]
async fn series_labels_and_values_with_limits() {
    let (_, body) = get("/api/v1/series?match[]=up").await;
    assert_eq!(body, r#"{"status":"success","data":[{"__name__":"up","job":"api"},{"__name__":"up","job":"db"}]}"#);
    let (_, body) = get("/api/v1/labels").await;
    assert_eq!(body, r#"{"status":"success","data":["__name__","job"]}"#);
    let (_, body) = get("/api/v1/label/job/values?match[]=up").await;
    assert_eq!(body, r#"{"status":"success","data":["api","db"]}"#);
    let (_, body) = get("/api/v1/label/__name__/values?limit=1").await;
    assert_eq!(body, r#"{"status":"success","data":["requests_total"],"warnings":["results truncated due to limit"]}"#);
    let (_, body) = get("/api/v1/query?query=up&time=60&limit=1").await;
    assert!(body.ends_with(r#""warnings":["results truncated due to limit"]}"#), "{body}");
}

#[tokio::test]
async fn buildinfo_and_format_query() {
    let (_, body) = get("/api/v1/status/buildinfo").await;
    assert!(body.starts_with(r#"{"status":"success","data":{"application":"Cairn","version":"0.1.0""#), "{body}");
    let (_, body) = get("/api/v1/format_query?query=sum(rate(x%5B5m%5D))by(job)").await;
    assert_eq!(body, r#"{"status":"success","data":"sum by (job) (rate(x[5m]))"}"#);
}

#[tokio::test]
async fn limits_fail_the_query_and_name_their_flag() {
    for (cfg, query, flag) in [
        (QuerierConfig { max_samples: 20, ..Default::default() }, "count(up)", "--query.max-samples"),
        (
            QuerierConfig { max_samples: 20, ..Default::default() },
            "count_over_time(requests_total[10m])",
            "--query.max-samples",
        ),
        (QuerierConfig { max_series: 1, ..Default::default() }, "count({__name__=~\".+\"})", "--query.max-series"),
    ] {
        let req = Request::get(format!("/api/v1/query_range?query={}&start=0&end=600&step=15", urlencode(query)))
            .body(Body::empty())
            .expect("request");
        let resp = app_with(cfg).oneshot(req).await.expect("response");
        let status = resp.status();
        let body =
            String::from_utf8(resp.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf8");
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
        assert!(body.contains(r#""errorType":"execution""#), "{body}");
        assert!(body.contains(flag), "{query}: {body}");
    }
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
