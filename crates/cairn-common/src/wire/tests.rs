use cairn_proto::prometheus as pb;
use cairn_proto::write_v2 as v2;
use proptest::prelude::*;
use prost::Message;

use super::*;

fn label() -> impl Strategy<Value = (String, String)> {
    ("[a-zA-Z_][a-zA-Z0-9_]{0,12}", "\\PC{0,20}")
}

type SeriesInput = (Vec<(String, String)>, Vec<(i64, f64)>);

fn series() -> impl Strategy<Value = SeriesInput> {
    (proptest::collection::vec(label(), 0..8), proptest::collection::vec((any::<i64>(), any::<f64>()), 0..5))
}

fn bits(s: &[Sample]) -> Vec<(i64, u64)> {
    s.iter().map(|s| (s.t, s.v.to_bits())).collect()
}

/// What survives a proto3 encoder: -0.0 equals the default 0 and is omitted.
fn wire_bits(ss: &[(i64, f64)]) -> Vec<(i64, u64)> {
    ss.iter().map(|&(t, v)| (t, if v == 0.0 { 0 } else { v.to_bits() })).collect()
}

proptest! {
    #[test]
    fn v1_matches_prost(input in proptest::collection::vec(series(), 0..6)) {
        let req = pb::WriteRequest {
            timeseries: input.iter().map(|(ls, ss)| pb::TimeSeries {
                labels: ls.iter().map(|(n, v)| pb::Label { name: n.clone(), value: v.clone() }).collect(),
                samples: ss.iter().map(|&(t, v)| pb::Sample { value: v, timestamp: t }).collect(),
                exemplars: vec![pb::Exemplar::default()],
                histograms: vec![],
            }).collect(),
            metadata: vec![pb::MetricMetadata { r#type: 1, metric_family_name: "m".into(), help: "h".into(), unit: "u".into() }],
        };
        let buf = req.encode_to_vec();
        let got = decode_v1(&buf).expect("decodes");
        prop_assert_eq!(got.series.len(), input.len());
        for ((ls, ss), g) in input.iter().zip(&got.series) {
            let want: Vec<(&[u8], &[u8])> = ls.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            prop_assert_eq!(&g.labels, &want);
            prop_assert_eq!(bits(&g.samples), wire_bits(ss));
            prop_assert_eq!(g.exemplars, 1);
        }
        prop_assert_eq!(got.metadata.len(), 1);
        prop_assert_eq!(got.metadata[0].family, b"m");
    }

    #[test]
    fn v2_matches_prost(input in proptest::collection::vec(series(), 0..6)) {
        let mut symbols = vec![String::new()];
        let mut idx = |s: &str| -> u32 {
            if let Some(i) = symbols.iter().position(|x| x == s) { return i as u32; }
            symbols.push(s.to_owned());
            (symbols.len() - 1) as u32
        };
        let timeseries: Vec<v2::TimeSeries> = input.iter().map(|(ls, ss)| v2::TimeSeries {
            labels_refs: ls.iter().flat_map(|(n, v)| [idx(n), idx(v)]).collect(),
            samples: ss.iter().map(|&(t, v)| v2::Sample { value: v, timestamp: t, start_timestamp: 0 }).collect(),
            histograms: vec![v2::Histogram::default()],
            exemplars: vec![],
            metadata: Some(v2::Metadata { r#type: 2, help_ref: idx("help"), unit_ref: 0 }),
        }).collect();
        let req = v2::Request { symbols: symbols.clone(), timeseries };
        let buf = req.encode_to_vec();
        let got = decode_v2(&buf).expect("decodes");
        for ((ls, ss), g) in input.iter().zip(&got.series) {
            let want: Vec<(&[u8], &[u8])> = ls.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())).collect();
            prop_assert_eq!(&g.labels, &want);
            prop_assert_eq!(bits(&g.samples), wire_bits(ss));
            prop_assert_eq!(g.histograms, 1);
            prop_assert_eq!(g.metadata, Some((2, &b"help"[..], &b""[..])));
        }
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_v1(&data);
        let _ = decode_v2(&data);
    }
}

#[test]
fn v2_rejects_bad_symbol_tables() {
    let req = v2::Request { symbols: vec!["x".into()], timeseries: vec![] };
    assert!(decode_v2(&req.encode_to_vec()).is_err(), "symbols[0] must be empty");
    let req = v2::Request {
        symbols: vec![String::new(), "a".into()],
        timeseries: vec![v2::TimeSeries { labels_refs: vec![1, 7], ..Default::default() }],
    };
    let e = decode_v2(&req.encode_to_vec()).expect_err("out of range");
    assert!(e.to_string().contains("symbol reference 7"), "{e}");
    let req = v2::Request {
        symbols: vec![String::new(), "a".into()],
        timeseries: vec![v2::TimeSeries { labels_refs: vec![1], ..Default::default() }],
    };
    assert!(decode_v2(&req.encode_to_vec()).is_err(), "odd refs");
}

#[test]
fn v1_keeps_invalid_utf8_for_validation_to_report() {
    // A label whose value is the single byte 0xff.
    let label = [0x0a, 0x01, b'a', 0x12, 0x01, 0xff];
    let mut series = vec![0x0a, label.len() as u8];
    series.extend_from_slice(&label);
    let mut req = vec![0x0a, series.len() as u8];
    req.extend_from_slice(&series);
    let got = decode_v1(&req).expect("decodes");
    assert_eq!(got.series[0].labels, vec![(&b"a"[..], &[0xff][..])]);
}

#[test]
fn truncated_bodies_fail() {
    let req = pb::WriteRequest {
        timeseries: vec![pb::TimeSeries {
            labels: vec![pb::Label { name: "__name__".into(), value: "up".into() }],
            samples: vec![pb::Sample { value: 1.0, timestamp: 5 }],
            ..Default::default()
        }],
        metadata: vec![],
    };
    let buf = req.encode_to_vec();
    for cut in 1..buf.len() {
        assert!(decode_v1(&buf[..cut]).is_err(), "cut at {cut}");
    }
}
