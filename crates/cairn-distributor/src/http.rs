//! The remote write HTTP endpoints.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cairn_common::TenantId;
use cairn_common::status::{CodedError, ServiceError};
use cairn_common::tenant::TENANT_HEADER;
use tracing::debug;

use crate::error::PushError;
use crate::{Distributor, Protocol, WriteResult};

pub const SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
pub const HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
pub const EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

/// `POST /api/v1/push` (Cortex and Mimir's path) and `POST /api/v1/write`
/// (Prometheus's path).
pub fn routes(d: Distributor) -> Router {
    Router::new().route("/api/v1/push", post(push)).route("/api/v1/write", post(push)).with_state(d)
}

/// Bodies whose declared decompressed size is at most this are decoded on
/// the request's task; larger ones on the blocking pool.
const INLINE_PREPARE_BYTES: usize = 1 << 20;

/// The answer to a refused request, through the common error table.
fn refuse(e: PushError) -> Response {
    let close = e.closes_connection();
    let mut r = e.to_service_error().into_response();
    if close {
        // The rest of the body is unread, so this connection cannot
        // carry another request: tell the client not to reuse it.
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Picks the protocol from the headers, before the body is read.
pub fn negotiate(headers: &HeaderMap) -> Result<Protocol, PushError> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?"));
    match encoding.map(|e| e.trim().to_ascii_lowercase()) {
        // Prometheus treats a missing encoding as snappy too.
        None => {}
        Some(e) if e == "snappy" => {}
        Some(e) => return Err(PushError::UnsupportedEncoding(e)),
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Protocol::V1);
    };
    let ct = ct.to_str().unwrap_or("?");
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    if media != "application/x-protobuf" {
        return Err(PushError::UnsupportedContentType(ct.to_owned()));
    }
    let mut proto = None;
    for p in parts {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("proto")
        {
            proto = Some(v.trim().trim_matches('"').to_owned());
        }
    }
    match proto.as_deref() {
        None | Some("prometheus.WriteRequest") => Ok(Protocol::V1),
        Some("io.prometheus.write.v2.Request") => Ok(Protocol::V2),
        Some(other) => Err(PushError::UnsupportedMessage(other.to_owned())),
    }
}

/// The size a snappy block body declares it decompresses to, refused over
/// `limit` before anything is allocated.
pub fn decompressed_len(body: &[u8], limit: usize) -> Result<usize, PushError> {
    if body.is_empty() {
        return Err(PushError::EmptyBody);
    }
    let len = snap::raw::decompress_len(body).map_err(|e| PushError::NotSnappy(e.to_string()))?;
    if len > limit {
        return Err(PushError::DecompressedTooLarge { len, limit });
    }
    Ok(len)
}

/// Decompresses a snappy block body, refusing to allocate more than `limit`.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, PushError> {
    decompressed_len(body, limit)?;
    snap::raw::Decoder::new().decompress_vec(body).map_err(|e| PushError::BadSnappy(e.to_string()))
}

async fn push(State(d): State<Distributor>, headers: HeaderMap, body: Body) -> Response {
    let protocol = match negotiate(&headers) {
        Ok(p) => p,
        Err(e) => return refuse(e),
    };
    let tenant_header = headers.get(TENANT_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let tenant = match TenantId::from_header(tenant_header) {
        Ok(t) => t,
        Err(e) => return refuse(PushError::BadTenant(e.to_string())),
    };
    // Admitted before the body is read, so that a burst is refused cheaply.
    let mut held = match d.in_flight().enter() {
        Ok(h) => h,
        Err(e) => return refuse(e.into()),
    };
    let limit = d.config().max_recv_msg_size;
    let compressed = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
            return refuse(if too_large {
                PushError::BodyTooLarge { limit }
            } else if timed_out(&e) {
                PushError::BodyTimeout(e.to_string())
            } else {
                PushError::BodyRead(e.to_string())
            });
        }
    };
    // Decompressing, decoding and validating take CPU in proportion to the
    // body (up to --distributor.max-recv-msg-size): a large body goes to the
    // blocking pool; a typical one (Prometheus sends a few hundred KiB)
    // costs less than the hand-off and stays here.
    // The size the body declares (read from its first bytes; checked
    // against the limits inside `prepare`).
    let inline = snap::raw::decompress_len(&compressed).is_ok_and(|n| n <= INLINE_PREPARE_BYTES);
    let prepare = {
        let d = d.clone();
        let tenant = tenant.clone();
        move || {
            held.hold(compressed.len())?;
            let len = decompressed_len(&compressed, limit)?;
            held.hold(len)?;
            let body = decompress(&compressed, limit)?;
            drop(compressed);
            Ok::<_, PushError>((d.prepare(&tenant, protocol, &body)?, held))
        }
    };
    let prepared = if inline { Ok(prepare()) } else { tokio::task::spawn_blocking(prepare).await };
    let (mut response, written) = match prepared {
        Ok(Ok((validated, held))) => {
            let result = d.push_validated(&tenant, validated).await;
            drop(held);
            (respond(&result), result.samples_written())
        }
        Ok(Err(e)) => (refuse(e), 0),
        Err(e) => (ServiceError::internal(format!("preparing the request failed: {e}")).into_response(), 0),
    };
    if protocol == Protocol::V2 {
        let h = response.headers_mut();
        h.insert(SAMPLES_WRITTEN, HeaderValue::from(written));
        h.insert(HISTOGRAMS_WRITTEN, HeaderValue::from(0u64));
        h.insert(EXEMPLARS_WRITTEN, HeaderValue::from(0u64));
    }
    response
}

/// Whether a body error is (caused by) a timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        cur = err.source();
    }
    false
}

fn respond(r: &WriteResult) -> Response {
    let outcome = match &r.pushed {
        Err(e) => return e.clone().into_response(),
        Ok(o) => o,
    };
    let v = &r.validated;
    let mut problems: Vec<String> = Vec::new();
    if let Some(first) = &v.first_error {
        problems.push(format!("{} samples dropped by validation; first: {first}", v.samples_discarded()));
    }
    for rej in &outcome.rejections {
        problems.push(format!("{} samples rejected ({}); first: {}", rej.samples, rej.reason.as_str(), rej.message));
    }
    if problems.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    debug!(problems = ?problems, "remote write partially rejected");
    ServiceError::bad_data(problems.join("\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn negotiates_like_prometheus() {
        let ok = |pairs: &[(&str, &str)]| negotiate(&headers(pairs)).ok();
        assert_eq!(ok(&[]), Some(Protocol::V1));
        assert_eq!(ok(&[("content-type", "application/x-protobuf")]), Some(Protocol::V1));
        assert_eq!(ok(&[("content-type", "application/x-protobuf;proto=prometheus.WriteRequest")]), Some(Protocol::V1));
        assert_eq!(ok(&[("content-type", cairn_proto_ct())]), Some(Protocol::V2));
        assert_eq!(
            ok(&[
                ("content-type", "application/x-protobuf; proto=io.prometheus.write.v2.Request"),
                ("content-encoding", "snappy")
            ]),
            Some(Protocol::V2)
        );
        for bad in [
            &[("content-type", "application/json")][..],
            &[("content-type", "application/x-protobuf;proto=foo.Bar")][..],
            &[("content-encoding", "gzip")][..],
        ] {
            let e = negotiate(&headers(bad)).expect_err("unsupported");
            assert_eq!(refuse(e).status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        }
    }

    fn cairn_proto_ct() -> &'static str {
        "application/x-protobuf;proto=io.prometheus.write.v2.Request"
    }

    proptest::proptest! {
        #[test]
        fn snappy_bodies_round_trip(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..5000)) {
            let c = snap::raw::Encoder::new().compress_vec(&data).expect("compress");
            proptest::prop_assert_eq!(decompress(&c, 1 << 20).ok(), Some(data));
        }

        #[test]
        fn snappy_garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = decompress(&data, 1 << 20);
        }
    }

    #[test]
    fn decompress_checks_the_declared_size_before_allocating() {
        // A varint header claiming 4 GiB - 1 bytes followed by nothing.
        let lying = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let status = |e: PushError| refuse(e).status();
        assert_eq!(status(decompress(&lying, 1 << 20).expect_err("too large")), StatusCode::PAYLOAD_TOO_LARGE);
        // One claiming 4 GiB exactly is beyond snappy's format: malformed.
        let lying = [0x80, 0x80, 0x80, 0x80, 0x10];
        assert_eq!(status(decompress(&lying, 1 << 20).expect_err("malformed")), StatusCode::BAD_REQUEST);
        assert_eq!(status(decompress(&[], 1 << 20).expect_err("empty")), StatusCode::BAD_REQUEST);
        let short = snap::raw::Encoder::new().compress_vec(b"hello world hello world").expect("compress");
        assert_eq!(
            status(decompress(&short[..short.len() - 2], 1 << 20).expect_err("truncated")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(decompress(&short, 1 << 20).expect("ok"), b"hello world hello world");
    }

    /// A pusher that holds every push until told to let go.
    struct Held(tokio::sync::Semaphore);

    #[async_trait::async_trait]
    impl cairn_common::push::Pusher for Held {
        async fn push(
            &self,
            _tenant: &TenantId,
            _batch: cairn_common::push::PushBatch,
        ) -> Result<cairn_common::push::PushOutcome, ServiceError> {
            let _permit = self.0.acquire().await.map_err(|e| ServiceError::internal(e.to_string()))?;
            Ok(Default::default())
        }
    }

    fn write_request() -> axum::http::Request<Body> {
        let one = cairn_proto::prometheus::WriteRequest {
            timeseries: vec![cairn_proto::prometheus::TimeSeries {
                labels: vec![cairn_proto::prometheus::Label { name: "__name__".into(), value: "up".into() }],
                samples: vec![cairn_proto::prometheus::Sample { value: 1.0, timestamp: cairn_common::time::now_ms() }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let body = snap::raw::Encoder::new().compress_vec(&prost::Message::encode_to_vec(&one)).expect("compress");
        axum::http::Request::post("/api/v1/push").body(Body::from(body)).expect("request")
    }

    #[tokio::test]
    async fn requests_over_the_in_flight_limit_get_503_with_retry_after() {
        use tower::ServiceExt;
        let pusher = std::sync::Arc::new(Held(tokio::sync::Semaphore::new(0)));
        let cfg = crate::DistributorConfig { max_inflight_push_requests: 1, ..Default::default() };
        let mut registry = cairn_common::metrics::Registry::default();
        let d = Distributor::new(cfg, Default::default(), pusher.clone(), &mut registry);
        let app = routes(d.clone());
        let first = tokio::spawn(app.clone().oneshot(write_request()));
        while d.in_flight().requests() == 0 {
            tokio::task::yield_now().await;
        }
        let refused = app.clone().oneshot(write_request()).await.expect("response");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16).await.expect("body");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("--distributor.instance-limits.max-inflight-push-requests"), "{text}");
        pusher.0.add_permits(10);
        assert_eq!(first.await.expect("join").expect("response").status(), StatusCode::NO_CONTENT);
        assert_eq!((d.in_flight().requests(), d.in_flight().bytes()), (0, 0), "everything released");
        assert_eq!(app.oneshot(write_request()).await.expect("response").status(), StatusCode::NO_CONTENT);
    }
}
