//! The remote write HTTP endpoints.

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cairn_common::TenantId;
use cairn_common::tenant::TENANT_HEADER;
use tracing::debug;

use crate::{Distributor, Protocol, WriteResult};

pub const SAMPLES_WRITTEN: &str = "X-Prometheus-Remote-Write-Samples-Written";
pub const HISTOGRAMS_WRITTEN: &str = "X-Prometheus-Remote-Write-Histograms-Written";
pub const EXEMPLARS_WRITTEN: &str = "X-Prometheus-Remote-Write-Exemplars-Written";

/// `POST /api/v1/push` (Cortex and Mimir's path) and `POST /api/v1/write`
/// (Prometheus's path).
pub fn routes(d: Distributor) -> Router {
    Router::new().route("/api/v1/push", post(push)).route("/api/v1/write", post(push)).with_state(d)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], msg).into_response()
}

/// Picks the protocol from the headers, before the body is read.
pub fn negotiate(headers: &HeaderMap) -> Result<Protocol, Response> {
    let encoding = headers.get(header::CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?"));
    match encoding.map(|e| e.trim().to_ascii_lowercase()) {
        // Prometheus treats a missing encoding as snappy too.
        None => {}
        Some(e) if e == "snappy" => {}
        Some(e) => {
            return Err(text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported Content-Encoding {e:?}: remote write bodies must be snappy block-compressed"),
            ));
        }
    }
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Protocol::V1);
    };
    let ct = ct.to_str().unwrap_or("?");
    let mut parts = ct.split(';').map(str::trim);
    let media = parts.next().unwrap_or("").to_ascii_lowercase();
    if media != "application/x-protobuf" {
        return Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Type {ct:?}: expected application/x-protobuf"),
        ));
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
        Some(other) => Err(text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported remote write message {other:?}: expected prometheus.WriteRequest or io.prometheus.write.v2.Request"
            ),
        )),
    }
}

/// Decompresses a snappy block body, refusing to allocate more than `limit`.
pub fn decompress(body: &[u8], limit: usize) -> Result<Vec<u8>, Response> {
    if body.is_empty() {
        return Err(text(StatusCode::BAD_REQUEST, "empty request body: expected a snappy-compressed protobuf message"));
    }
    let len = snap::raw::decompress_len(body)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("body is not snappy block-compressed: {e}")))?;
    if len > limit {
        return Err(text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "decompressed body would be {len} bytes, more than the limit of {limit} (raise --distributor.max-recv-msg-size)"
            ),
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("body is not valid snappy block data: {e}")))
}

async fn push(State(d): State<Distributor>, headers: HeaderMap, body: Body) -> Response {
    let protocol = match negotiate(&headers) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let tenant_header = headers.get(TENANT_HEADER).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let tenant = match TenantId::from_header(tenant_header) {
        Ok(t) => t,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid {TENANT_HEADER} header: {e}")),
    };
    let limit = d.config().max_recv_msg_size;
    let compressed = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
            return if too_large {
                let mut r = text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body is larger than the limit of {limit} bytes (raise --distributor.max-recv-msg-size)"
                    ),
                );
                // The rest of the body is unread, so this connection cannot
                // carry another request: tell the client not to reuse it.
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else if timed_out(&e) {
                // The server's body deadline passed: the client was too slow.
                let mut r = text(StatusCode::REQUEST_TIMEOUT, format!("reading request body: {e}"));
                r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                r
            } else {
                text(StatusCode::BAD_REQUEST, format!("reading request body: {e}"))
            };
        }
    };
    let body = match decompress(&compressed, limit) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let result = d.write(&tenant, protocol, &body).await;
    let mut response = match &result {
        Err(e) => text(e.code.http_status(), e.message.clone()),
        Ok(r) => respond(r),
    };
    if protocol == Protocol::V2 {
        let written = result.as_ref().map(WriteResult::samples_written).unwrap_or(0);
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
        Err(e) => return text(e.code.http_status(), e.message.clone()),
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
    text(StatusCode::BAD_REQUEST, problems.join("\n"))
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
            let r = negotiate(&headers(bad)).expect_err("unsupported");
            assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
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
        assert_eq!(decompress(&lying, 1 << 20).expect_err("too large").status(), StatusCode::PAYLOAD_TOO_LARGE);
        // One claiming 4 GiB exactly is beyond snappy's format: malformed.
        let lying = [0x80, 0x80, 0x80, 0x80, 0x10];
        assert_eq!(decompress(&lying, 1 << 20).expect_err("malformed").status(), StatusCode::BAD_REQUEST);
        assert_eq!(decompress(&[], 1 << 20).expect_err("empty").status(), StatusCode::BAD_REQUEST);
        let short = snap::raw::Encoder::new().compress_vec(b"hello world hello world").expect("compress");
        assert_eq!(
            decompress(&short[..short.len() - 2], 1 << 20).expect_err("truncated").status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(decompress(&short, 1 << 20).expect("ok"), b"hello world hello world");
    }
}
