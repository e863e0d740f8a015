//! The fuzz corpora and regression cases of `tests/fuzz`, replayed as
//! ordinary tests: every input the fuzzers kept, and every input that once
//! crashed Cairn, must run through its target without a panic.
//!
//! `write_seeds` (ignored; run it by name) writes the seed corpora from
//! real encoders: remote write requests, a WAL segment and a checkpoint of
//! a real head, a real block, the PromQL of the upstream test scripts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_common::push::{PushBatch, PushSeries};
use cairn_common::{Labels, Sample, TenantId};
use cairn_e2e::{series, snappy, write_v1};
use cairn_proto::write_v2 as v2;
use prost::Message;

type Target = fn(&[u8]);

/// Every fuzz target, by the name of its corpus folder.
const TARGETS: &[(&str, Target)] = &[
    ("remote_write", cairn_distributor::fuzz::remote_write),
    ("remote_write_protobuf", cairn_distributor::fuzz::remote_write_protobuf),
    ("wal_segment", cairn_ingester::fuzz::wal_segment),
    ("ingester_push", cairn_ingester::fuzz::push_request),
    ("checkpoint", cairn_ingester::fuzz::checkpoint_file),
    ("block_file", cairn_storage::fuzz::block_file),
    ("promql", cairn_promql::fuzz::query),
    ("api_params", cairn_querier::fuzz::api_params),
];

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

#[test]
fn corpora_and_regressions_replay_without_a_panic() {
    let mut total = 0;
    for (name, target) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "the seed corpus of {name} is checked in");
        for dir in ["corpus", "regressions"] {
            for f in files(&fuzz_dir().join(dir).join(name)) {
                let data = std::fs::read(&f).expect("read");
                // A panic fails this test and names the file.
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panicked", f.display());
                total += 1;
            }
        }
    }
    println!("replayed {total} fuzz inputs");
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(name), data).expect("write seed");
}

fn v2_request(t: i64) -> Vec<u8> {
    v2::Request {
        symbols: vec!["".into(), "__name__".into(), "up".into(), "job".into(), "node".into(), "help".into()],
        timeseries: vec![v2::TimeSeries {
            labels_refs: vec![1, 2, 3, 4],
            samples: vec![v2::Sample { value: 1.0, timestamp: t, start_timestamp: 0 }],
            metadata: Some(v2::Metadata { r#type: 2, help_ref: 5, unit_ref: 0 }),
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Writes the seed corpora. Run: `cargo nextest run -p cairn-e2e
/// write_seeds --run-ignored only`.
#[test]
#[ignore = "writes the checked-in seed corpora"]
fn write_seeds() {
    let t = 1_700_000_000_000;
    // Remote write: both versions, compressed and not.
    let v1 = cairn_proto::prometheus::WriteRequest {
        timeseries: vec![
            series(&[("__name__", "up"), ("job", "node")], &[(t, 1.0), (t + 15_000, 0.0)]),
            series(&[("__name__", "http_requests_total"), ("code", "200")], &[(t, 1e9)]),
        ],
        metadata: vec![],
    }
    .encode_to_vec();
    for (name, version, body) in [("v1", 0u8, v1.clone()), ("v2", 1u8, v2_request(t))] {
        let mut framed = vec![version];
        framed.extend_from_slice(&snappy(&body));
        write("remote_write", name, &framed);
        let mut raw = vec![version];
        raw.extend_from_slice(&body);
        write("remote_write_protobuf", name, &raw);
    }
    let mut single = vec![0u8];
    single.extend_from_slice(&write_v1(vec![series(&[("__name__", "m")], &[(0, f64::NAN)])]));
    write("remote_write", "v1-nan", &single);

    // Push requests as a distributor encodes them: every series, and a
    // subset with metadata.
    let tenant = TenantId::new("team-a").expect("tenant");
    let push = PushBatch {
        series: vec![
            PushSeries {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "node"), ("instance", "a:9100")]),
                samples: vec![Sample::new(t, 1.0), Sample::new(t + 15_000, 0.0)],
            },
            PushSeries { labels: Labels::from_pairs([("__name__", "m")]), samples: vec![Sample::new(-5, f64::NAN)] },
        ],
        metadata: vec![cairn_common::push::MetricMetadata {
            metric_family: "up".into(),
            kind: cairn_common::push::MetricType::Gauge,
            help: "Whether the target answered.".into(),
            unit: String::new(),
        }],
    };
    let mut buf = cairn_rpc::SeriesBuffer::for_series(&push.series);
    for s in &push.series {
        buf.push(s);
    }
    let series = buf.finish();
    let head = cairn_rpc::codec::encode_head(&tenant, &push.metadata);
    write("ingester_push", "all", &cairn_rpc::EncodedPush::all(head.clone(), series.clone()).to_bytes());
    let mut one = cairn_rpc::EncodedPush::new(head, series);
    one.add(1);
    write("ingester_push", "second", &one.to_bytes());

    // A WAL segment and a checkpoint of a real head.
    let dir = tempfile::tempdir().expect("tempdir");
    let metrics = Arc::new(cairn_ingester::metrics::IngesterMetrics::new(&mut Default::default()));
    let opts = cairn_ingester::db::DbOptions {
        ooo_window_ms: 60_000,
        max_series: 0,
        sync_mode: cairn_ingester::wal::SyncMode::None,
        segment_size: 1 << 20,
    };
    let db = cairn_ingester::db::TenantDb::open(TenantId::new("t").expect("tenant"), dir.path(), opts, metrics)
        .expect("open");
    let batch = |k: i64| PushBatch {
        series: (0..5)
            .map(|i| PushSeries {
                labels: Labels::from_pairs([("__name__", "node_load1"), ("instance", &format!("h{i}"))]),
                samples: (0..130).map(|j| Sample::new(t + (k * 130 + j) * 15_000, (i * j) as f64 / 4.0)).collect(),
            })
            .collect(),
        metadata: vec![],
    };
    db.push(&batch(0)).expect("push");
    db.push(&batch(1)).expect("push");
    let segments = cairn_ingester::wal::list_segments(dir.path()).expect("segments");
    let seg = std::fs::read(cairn_ingester::wal::segment_path(dir.path(), segments[0])).expect("segment");
    write("wal_segment", "real", &seg[cairn_ingester::wal::SEGMENT_MAGIC.len()..]);
    db.checkpoint().expect("checkpoint");
    let cp = cairn_ingester::checkpoint::list(dir.path()).expect("checkpoints");
    write("checkpoint", "real", &std::fs::read(cairn_ingester::checkpoint::path(dir.path(), cp[0])).expect("read"));

    // A real block.
    let mut buf = Vec::new();
    let names = ["__name__", "job"].map(String::from);
    let mut w =
        cairn_storage::block::BlockWriter::new(&mut buf, "01J0000000000000000000000", names, &Default::default())
            .expect("writer");
    for (job, scale) in [("a", 1.0), ("b", 0.1)] {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", job)]);
        let samples: Vec<Sample> = (0..200).map(|k| Sample::new(k * 15_000, k as f64 * scale)).collect();
        w.append(&labels, &samples).expect("append");
    }
    w.finish().expect("finish");
    write("block_file", "real", &buf);

    // PromQL: the upstream scripts' expressions, at a few times.
    let scripts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/promqltest");
    let mut exprs: Vec<String> = Vec::new();
    for f in files(&scripts) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("eval ")
                && let Some((_, expr)) = rest.split_once(" at ").and_then(|(_, r)| r.split_once(' '))
            {
                exprs.push(expr.trim().to_owned());
            }
        }
    }
    exprs.sort();
    exprs.dedup();
    // A third of them is variety enough for a seed corpus.
    let mut k = 0;
    exprs.retain(|_| {
        k += 1;
        k % 3 == 0
    });
    exprs.extend(
        [
            "1+1",
            "((1))",
            "count_over_time(vector(1)[10y:1ms])",
            "sum by (job) (rate(http_requests_total[5m]))",
            "x offset 100y @ 1e10",
            "label_replace(up, \"\\xff\", \"\", \"job\", \"(.*)\")",
        ]
        .map(String::from),
    );
    for (i, e) in exprs.iter().enumerate() {
        let t: i64 = match i % 4 {
            0 => 0,
            1 => 3_600_000,
            2 => i64::MIN,
            _ => i64::MAX,
        };
        let mut data = t.to_le_bytes().to_vec();
        data.extend_from_slice(e.as_bytes());
        write("promql", &format!("{i:04}"), &data);
    }

    // Query API forms.
    let forms = [
        (0u8, "query=up&time=1700000000"),
        (1, "query=rate(x[5m])&start=0&end=3600&step=15"),
        (1, "query=up&start=-9.2e15&end=9.2e15&step=1e12"),
        (2, "match[]=up&start=2015-07-01T20:10:51.781Z"),
        (3, "limit=5"),
        (4, "match[]={job=~\".+\"}"),
        (5, "query=sum(x)by(job)"),
        (6, "query=a+b"),
        (0, "query=1&timeout=1e300"),
    ];
    for (i, (which, form)) in forms.iter().enumerate() {
        let mut data = vec![*which];
        data.extend_from_slice(form.as_bytes());
        write("api_params", &format!("{i:02}"), &data);
    }
}
