use bytes::Bytes;
use cairn_common::chunk::{Chunk, SeriesChunks};
use cairn_common::{Label, Labels, Sample};
use cairn_proto::ingester::PushRequest;
use proptest::prelude::*;

use super::*;

fn label() -> impl Strategy<Value = (String, String)> {
    ("[a-zA-Z_][a-zA-Z0-9_]{0,12}", "\\PC{1,20}")
}

fn series() -> impl Strategy<Value = PushSeries> {
    (proptest::collection::vec(label(), 0..8), proptest::collection::vec((any::<i64>(), any::<f64>()), 0..5)).prop_map(
        |(labels, samples)| PushSeries {
            labels: Labels::new(labels.into_iter().map(|(n, v)| Label::new(n, v)).collect()),
            samples: samples.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
        },
    )
}

fn metadata() -> impl Strategy<Value = MetricMetadata> {
    ("[a-z_]{1,10}", 0..8i32, "\\PC{0,20}", "[a-z]{0,5}").prop_map(|(family, kind, help, unit)| MetricMetadata {
        metric_family: family,
        kind: MetricType::from_proto(kind),
        help,
        unit,
    })
}

fn bits(s: &[Sample]) -> Vec<(i64, u64)> {
    s.iter().map(|s| (s.t, s.v.to_bits())).collect()
}

fn encode(tenant: &TenantId, batch: &PushBatch, pick: impl Fn(usize) -> bool) -> EncodedPush {
    let mut buf = SeriesBuffer::for_series(&batch.series);
    let idx: Vec<usize> = batch.series.iter().map(|s| buf.push(s)).collect();
    let mut p = EncodedPush::new(encode_head(tenant, &batch.metadata), buf.finish());
    for i in idx.into_iter().filter(|&i| pick(i)) {
        p.add(i);
    }
    p
}

proptest! {
    /// What the distributor encodes, the ingester decodes bit for bit:
    /// every series or any subset of them, values and timestamps exact
    /// (NaN payloads, -0.0, negative and zero timestamps included).
    #[test]
    fn pushes_round_trip(
        series in proptest::collection::vec(series(), 0..6),
        metadata in proptest::collection::vec(metadata(), 0..3),
        mask in any::<u8>(),
    ) {
        let tenant = TenantId::new("team-a").expect("tenant");
        let batch = PushBatch { series, metadata };
        let pick = |i: usize| mask & (1 << (i % 8)) != 0;
        let p = encode(&tenant, &batch, pick);
        let bytes = p.to_bytes();
        prop_assert_eq!(bytes.len(), p.len());
        let (t, got) = decode_push(&bytes).expect("decodes");
        prop_assert_eq!(push_tenant(&bytes), Some(tenant.as_str()));
        prop_assert_eq!(t, tenant);
        prop_assert_eq!(&got.metadata, &batch.metadata);
        let want: Vec<&PushSeries> = batch.series.iter().enumerate().filter(|(i, _)| pick(*i)).map(|(_, s)| s).collect();
        prop_assert_eq!(got.series.len(), want.len());
        for (g, w) in got.series.iter().zip(want) {
            prop_assert_eq!(&g.labels, &w.labels);
            prop_assert_eq!(bits(&g.samples), bits(&w.samples));
        }
        // prost reads the same message.
        let req = PushRequest::decode(bytes).expect("prost decodes");
        prop_assert_eq!(req.timeseries.len(), got.series.len());
        prop_assert_eq!(req.metadata.len(), got.metadata.len());
    }

    /// A message prost encodes, the push decoder reads the same.
    #[test]
    fn prost_messages_decode_alike(series in proptest::collection::vec(series(), 0..6)) {
        let req = PushRequest {
            tenant: "t".into(),
            timeseries: series.iter().map(|s| cairn_proto::prometheus::TimeSeries {
                labels: s.labels.iter().map(|l| cairn_proto::prometheus::Label { name: l.name.clone(), value: l.value.clone() }).collect(),
                samples: s.samples.iter().map(|x| cairn_proto::prometheus::Sample { value: x.v, timestamp: x.t }).collect(),
                ..Default::default()
            }).collect(),
            metadata: vec![],
        };
        let (_, got) = decode_push(&req.encode_to_vec()).expect("decodes");
        for (g, w) in got.series.iter().zip(&series) {
            prop_assert_eq!(&g.labels, &w.labels);
            // proto3 omits -0.0 as the default value.
            let norm = |s: &[Sample]| s.iter().map(|x| (x.t, if x.v == 0.0 { 0 } else { x.v.to_bits() })).collect::<Vec<_>>();
            prop_assert_eq!(norm(&g.samples), norm(&w.samples));
        }
    }
}

proptest! {
    /// The distributor sizes its buffer once, from these lengths.
    #[test]
    fn encoded_sizes_are_exact(series in proptest::collection::vec(series(), 0..6)) {
        let mut buf = SeriesBuffer::for_series(&series);
        let capacity = buf.buf.capacity();
        for s in &series {
            buf.push(s);
        }
        prop_assert_eq!(buf.buf.capacity(), capacity, "no reallocation");
        let encoded = buf.finish();
        for (i, s) in series.iter().enumerate() {
            prop_assert_eq!(encoded.len_of(i), encoded_series_len(s));
        }
    }
}

fn chunked() -> impl Strategy<Value = (Labels, SeriesChunks)> {
    let chunk = (any::<i64>(), any::<i64>(), proptest::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(min_t, max_t, data)| Chunk { min_t, max_t, data: Bytes::from(data) });
    (
        proptest::collection::vec(label(), 0..6),
        proptest::collection::vec(chunk, 0..4),
        proptest::collection::btree_map(any::<i64>(), any::<f64>(), 0..4),
    )
        .prop_map(|(labels, chunks, samples)| {
            let labels = Labels::new(labels.into_iter().map(|(n, v)| Label::new(n, v)).collect());
            let samples = samples.into_iter().map(|(t, v)| Sample::new(t, v)).collect();
            (labels, SeriesChunks { chunks, samples })
        })
}

proptest! {
    /// What the ingester writes by hand for a select, prost reads back:
    /// labels, chunks and loose samples exact (-0.0 and NaN payloads
    /// included).
    #[test]
    fn chunked_series_encode_as_the_generated_message(series in proptest::collection::vec(chunked(), 0..5)) {
        let mut out = Vec::new();
        for (labels, chunks) in &series {
            let pairs = labels.iter().map(|l| (l.name.as_bytes(), l.value.as_bytes()));
            encode_chunked_series(pairs, chunks, &mut out);
        }
        let resp = cairn_proto::ingester::SelectResponse::decode(&out[..]).expect("prost decodes");
        prop_assert!(resp.series.is_empty());
        prop_assert_eq!(resp.chunked.len(), series.len());
        for (got, (labels, chunks)) in resp.chunked.into_iter().zip(&series) {
            let (l, c) = crate::convert::chunked_series_from_proto(got).expect("converts");
            prop_assert_eq!(&l, labels);
            prop_assert_eq!(&c.chunks, &chunks.chunks);
            prop_assert_eq!(bits(&c.samples), bits(&chunks.samples));
        }
    }
}

#[test]
fn adjacent_series_share_one_range() {
    let tenant = TenantId::new("t").expect("tenant");
    let s = |v: &str| PushSeries { labels: Labels::from_pairs([("__name__", v)]), samples: vec![Sample::new(1, 1.0)] };
    let batch = PushBatch { series: vec![s("a"), s("b"), s("c"), s("d")], metadata: vec![] };
    let p = encode(&tenant, &batch, |i| i != 2);
    assert_eq!(p.ranges.len(), 2, "a and b together, then d");
    let (_, got) = decode_push(&p.to_bytes()).expect("decodes");
    let names: Vec<&str> = got.series.iter().filter_map(|s| s.labels.metric_name()).collect();
    assert_eq!(names, vec!["a", "b", "d"]);
}

#[test]
fn unsorted_or_invalid_input_is_handled() {
    let req = PushRequest {
        tenant: "t".into(),
        timeseries: vec![cairn_proto::prometheus::TimeSeries {
            labels: vec![
                cairn_proto::prometheus::Label { name: "z".into(), value: "1".into() },
                cairn_proto::prometheus::Label { name: "a".into(), value: "2".into() },
            ],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let bytes = req.encode_to_vec();
    let (_, got) = decode_push(&bytes).expect("decodes");
    assert_eq!(got.series[0].labels, Labels::from_pairs([("a", "2"), ("z", "1")]), "sorted on the way in");
    // The borrowed form, which the ingester uses, is the same set, with
    // the hash an owned set has.
    let borrowed = decode_push_borrowed(&bytes).expect("decodes");
    let first = borrowed.series().next().expect("a series");
    let pairs: Vec<(&[u8], &[u8])> = first.label_pairs().collect();
    assert_eq!(pairs, vec![(&b"a"[..], &b"2"[..]), (&b"z"[..], &b"1"[..])]);
    assert_eq!(first.labels_hash(), got.series[0].labels.hash64());
    let e = decode_push(&[0x0a, 0x02, 0xff, 0xfe]).expect_err("bad tenant");
    assert_eq!(e.code, cairn_common::ErrorCode::BadData);
    assert!(e.message.contains("UTF-8"), "{}", e.message);
    let e = decode_push(&[0x12, 0x05, 0x0a]).expect_err("truncated");
    assert_eq!(e.code, cairn_common::ErrorCode::BadData);
    let e = decode_push(&[0x0a, 0x00]).expect_err("empty tenant");
    assert_eq!(e.code, cairn_common::ErrorCode::BadData);
}

#[test]
fn the_tenant_is_found_wherever_it_stands() {
    let series = vec![cairn_proto::prometheus::TimeSeries::default(); 3];
    let mut buf = PushRequest { tenant: String::new(), timeseries: series, metadata: Vec::new() }.encode_to_vec();
    // A tenant field after the series (prost writes it first).
    PushRequest { tenant: "team-b".into(), ..Default::default() }.encode(&mut buf).expect("encode");
    assert_eq!(push_tenant(&buf), Some("team-b"));
    assert_eq!(push_tenant(&[]), None);
    assert_eq!(push_tenant(&[0x0a, 0x05, b'a']), None, "a truncated tenant");
    assert_eq!(push_tenant(&[0x0a, 0x01, 0xff]), None, "not UTF-8");
}
