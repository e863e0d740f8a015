//! Malformed remote write requests get a 4xx with a message; the server
//! keeps serving.

use cairn_e2e::{Cairn, client, now_ms, push, query, series, snappy, vector, write_v1};
use cairn_proto::prometheus as pb;
use cairn_proto::write_v2 as v2;
use prost::Message;

fn good(t: i64) -> Vec<u8> {
    write_v1(vec![series(&[("__name__", "good_metric"), ("job", "e2e")], &[(t, 42.0)])])
}

/// Hand-encodes one series whose only label has raw (possibly invalid) bytes.
fn raw_label_request(name: &[u8], value: &[u8], t: i64) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, num: u8, bytes: &[u8]) {
        out.push((num << 3) | 2);
        let mut n = bytes.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(bytes);
    }
    let mut name_label = Vec::new();
    field(&mut name_label, 1, b"__name__");
    field(&mut name_label, 2, b"m");
    let mut label = Vec::new();
    field(&mut label, 1, name);
    field(&mut label, 2, value);
    let sample = pb::Sample { value: 1.0, timestamp: t }.encode_to_vec();
    let mut ts = Vec::new();
    field(&mut ts, 1, &name_label);
    field(&mut ts, 1, &label);
    field(&mut ts, 2, &sample);
    let mut req = Vec::new();
    field(&mut req, 1, &ts);
    snappy(&req)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_and_good_ones_still_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(&dir.path().join("data"), &["--distributor.max-recv-msg-size=1048576"]).expect("start");
    let c = client();
    let url = cairn.url("/api/v1/push");
    let t = now_ms();

    let valid = pb::WriteRequest {
        timeseries: vec![series(&[("__name__", "m"), ("job", "x")], &[(t, 1.0)])],
        metadata: vec![],
    }
    .encode_to_vec();
    let mut lying = vec![0xff, 0xff, 0xff, 0xff, 0x0f];
    lying.extend_from_slice(&[0u8; 16]);
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("empty body", vec![], 400, "empty request body"),
        ("not snappy", b"this is not snappy at all".to_vec(), 400, "snappy"),
        (
            "garbage protobuf",
            snappy(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            400,
            "decoding protobuf",
        ),
        ("truncated protobuf", snappy(&valid[..valid.len() - 3]), 400, "decoding protobuf"),
        (
            "truncated snappy",
            {
                let s = snappy(&valid);
                s[..s.len() - 2].to_vec()
            },
            400,
            "snappy",
        ),
        ("lying length header", lying, 413, "limit"),
        (
            "empty label name",
            write_v1(vec![series(&[("__name__", "m"), ("", "v")], &[(t, 1.0)])]),
            400,
            "empty label name",
        ),
        ("missing metric name", write_v1(vec![series(&[("job", "x")], &[(t, 1.0)])]), 400, "without a metric name"),
        (
            "duplicate label",
            write_v1(vec![series(&[("__name__", "m"), ("a", "1"), ("a", "2")], &[(t, 1.0)])]),
            400,
            "duplicate label name",
        ),
        ("invalid UTF-8 value", raw_label_request(b"job", &[0xc3, 0x28], t), 400, "not valid UTF-8"),
        ("invalid UTF-8 name", raw_label_request(&[0xff], b"v", t), 400, "not valid UTF-8"),
        ("oversized body", big, 413, "larger than the limit"),
    ];
    for (what, body, status, text) in cases {
        let (got, msg) = push(&c, &url, body, None).await.expect("request");
        assert_eq!(got, status, "{what}: {msg}");
        assert!(msg.contains(text), "{what}: message {msg:?} should mention {text:?}");
        let (ok, msg) = push(&c, &url, good(t), None).await.expect("good request");
        assert_eq!(ok, 204, "a good request after {what}: {msg}");
    }

    // Unsupported media types are refused before the body is read.
    for (ct, enc) in [
        ("application/json", "snappy"),
        ("application/x-protobuf", "gzip"),
        ("application/x-protobuf;proto=foo.Bar", "snappy"),
    ] {
        let r = c
            .post(&url)
            .header("Content-Type", ct)
            .header("Content-Encoding", enc)
            .body(good(t))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 415, "{ct} {enc}");
        assert!(!r.text().await.expect("body").is_empty());
    }

    // An invalid tenant id is bad data.
    let (got, msg) = push(&c, &url, good(t), Some("../etc")).await.expect("request");
    assert_eq!(got, 400, "{msg}");
    assert!(msg.contains("X-Scope-OrgID"), "{msg}");

    // Out-of-order samples: the rest of the request is kept, and the 400 says why.
    let ooo = write_v1(vec![
        series(&[("__name__", "good_metric"), ("job", "e2e")], &[(t - 60_000, 1.0)]),
        series(&[("__name__", "other_metric")], &[(t, 7.0)]),
    ]);
    let (got, msg) = push(&c, &url, ooo, None).await.expect("request");
    assert_eq!(got, 400, "{msg}");
    assert!(msg.contains("out of order sample"), "{msg}");
    let v = query(&c, &cairn.url(""), "other_metric", t, None).await.expect("query");
    assert_eq!(vector(&v).len(), 1, "the valid series of a partly rejected request was stored");

    // Nothing above disturbed the stored data.
    let v = query(&c, &cairn.url(""), "good_metric", t, None).await.expect("query");
    assert_eq!(vector(&v), vec![(r#"{"__name__":"good_metric","job":"e2e"}"#.to_owned(), 42.0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_2_reports_written_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(&dir.path().join("data"), &[]).expect("start");
    let c = client();
    let t = now_ms();
    let req = v2::Request {
        symbols: vec!["".into(), "__name__".into(), "v2_metric".into(), "job".into(), "a".into(), "help text".into()],
        timeseries: vec![
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 4],
                samples: vec![
                    v2::Sample { value: 1.0, timestamp: t - 2000, start_timestamp: 0 },
                    v2::Sample { value: 2.0, timestamp: t - 1000, start_timestamp: 0 },
                ],
                metadata: Some(v2::Metadata { r#type: 1, help_ref: 5, unit_ref: 0 }),
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![3, 4],
                samples: vec![v2::Sample { value: 1.0, timestamp: t, start_timestamp: 0 }],
                ..Default::default()
            },
            v2::TimeSeries {
                labels_refs: vec![1, 2, 3, 5],
                histograms: vec![v2::Histogram::default()],
                ..Default::default()
            },
        ],
    };
    let r = c
        .post(cairn.url("/api/v1/write"))
        .header("Content-Type", cairn_proto::RW2_CONTENT_TYPE)
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
        .body(snappy(&req.encode_to_vec()))
        .send()
        .await
        .expect("send");
    let h = |n: &str| r.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(h("X-Prometheus-Remote-Write-Samples-Written").as_deref(), Some("2"));
    assert_eq!(h("X-Prometheus-Remote-Write-Histograms-Written").as_deref(), Some("0"));
    assert_eq!(h("X-Prometheus-Remote-Write-Exemplars-Written").as_deref(), Some("0"));
    assert_eq!(r.status().as_u16(), 400, "the series without a metric name is reported");
    assert!(r.text().await.expect("body").contains("without a metric name"));
    let v = query(&c, &cairn.url(""), "v2_metric", t, None).await.expect("query");
    assert_eq!(vector(&v), vec![(r#"{"__name__":"v2_metric","job":"a"}"#.to_owned(), 2.0)]);
    let md: serde_json::Value =
        c.get(cairn.url("/api/v1/metadata?metric=v2_metric")).send().await.expect("send").json().await.expect("json");
    assert_eq!(md["data"]["v2_metric"][0]["type"], "counter");
    assert_eq!(md["data"]["v2_metric"][0]["help"], "help text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(&dir.path().join("data"), &[]).expect("start");
    let c = client();
    let t = now_ms();
    for (tenant, v) in [("team-a", 1.0), ("team-b", 2.0)] {
        let body = write_v1(vec![series(&[("__name__", "tenant_metric")], &[(t, v)])]);
        let (s, m) = push(&c, &cairn.url("/api/v1/push"), body, Some(tenant)).await.expect("push");
        assert_eq!(s, 204, "{m}");
    }
    for (tenant, v) in [("team-a", 1.0), ("team-b", 2.0)] {
        let r = query(&c, &cairn.url(""), "tenant_metric", t, Some(tenant)).await.expect("query");
        assert_eq!(vector(&r), vec![(r#"{"__name__":"tenant_metric"}"#.to_owned(), v)], "{tenant}");
    }
    let r = query(&c, &cairn.url(""), "tenant_metric", t, None).await.expect("query");
    assert!(vector(&r).is_empty(), "the anonymous tenant sees nothing of the others");
}
