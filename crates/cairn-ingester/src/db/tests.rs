use std::sync::Arc;

use cairn_common::metrics::Registry;
use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushSeries, RejectReason};
use cairn_common::sample::stale_nan;
use cairn_common::time::MAX_SAMPLE_TIME_MS;
use cairn_common::{Labels, MatchOp, Matcher, Sample, TenantId};

use super::{DbOptions, TenantDb};
use crate::metrics::IngesterMetrics;
use crate::wal::SyncMode;

fn opts(ooo: i64) -> DbOptions {
    DbOptions { ooo_window_ms: ooo, max_series: 0, sync_mode: SyncMode::None, segment_size: 1 << 20 }
}

fn open(dir: &std::path::Path, o: DbOptions) -> TenantDb {
    let metrics = Arc::new(IngesterMetrics::new(&mut Registry::default()));
    TenantDb::open(TenantId::new("t").expect("tenant"), dir, o, metrics).expect("open")
}

fn series(name: &str, samples: &[(i64, f64)]) -> PushSeries {
    PushSeries {
        labels: Labels::from_pairs([("__name__", name), ("job", "test")]),
        samples: samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    }
}

fn batch(s: Vec<PushSeries>) -> PushBatch {
    PushBatch { series: s, metadata: Vec::new() }
}

fn read(db: &TenantDb, name: &str) -> Vec<(i64, u64)> {
    let m = [Matcher::new(MatchOp::Equal, "__name__", name).expect("matcher")];
    let got = db.head().select(&m, i64::MIN, i64::MAX, 0, 0).expect("select");
    got.into_iter().flat_map(|s| s.samples).map(|s| (s.t, s.v.to_bits())).collect()
}

fn bits(samples: &[(i64, f64)]) -> Vec<(i64, u64)> {
    samples.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

#[test]
fn rejects_out_of_order_and_conflicting_duplicates_but_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), opts(0));
    let out = db.push(&batch(vec![series("a", &[(10, 1.0), (20, 2.0)])])).expect("push");
    assert_eq!(out.samples_appended, 2);
    assert_eq!(out.series_created, 1);
    let out = db.push(&batch(vec![series("a", &[(15, 9.0), (20, 2.0), (20, 3.0), (30, 4.0)])])).expect("push");
    assert_eq!(out.samples_appended, 1, "only t=30 is new");
    let reasons: Vec<_> = out.rejections.iter().map(|r| (r.reason, r.samples)).collect();
    assert_eq!(reasons, vec![(RejectReason::OutOfOrder, 1), (RejectReason::DuplicateTimestamp, 1)]);
    assert!(out.rejections[0].message.contains("out of order sample"), "{}", out.rejections[0].message);
    assert!(out.rejections[0].message.contains(r#"a{job="test"}"#), "names the series");
    assert_eq!(read(&db, "a"), bits(&[(10, 1.0), (20, 2.0), (30, 4.0)]));
}

#[test]
fn repeated_series_in_one_batch_are_ordered_across_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), opts(0));
    let out = db.push(&batch(vec![series("a", &[(10, 1.0)]), series("a", &[(5, 0.5), (20, 2.0)])])).expect("push");
    assert_eq!(out.samples_appended, 2);
    assert_eq!(out.samples_rejected(), 1);
    assert_eq!(read(&db, "a"), bits(&[(10, 1.0), (20, 2.0)]));
}

#[test]
fn out_of_order_window_accepts_older_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), opts(100));
    db.push(&batch(vec![series("a", &[(1000, 1.0)])])).expect("push");
    let out = db.push(&batch(vec![series("a", &[(950, 0.5), (800, 0.1), (950, 0.5)])])).expect("push");
    assert_eq!(out.samples_appended, 1);
    assert_eq!(out.rejections[0].reason, RejectReason::TooOld);
    drop(db);
    let db = open(dir.path(), opts(100));
    assert_eq!(read(&db, "a"), bits(&[(950, 0.5), (1000, 1.0)]), "ooo samples survive replay");
}

#[test]
fn everything_acknowledged_survives_reopen_with_and_without_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected = Vec::new();
    {
        let db = open(dir.path(), opts(0));
        for i in 0..500i64 {
            let v = if i % 97 == 0 { stale_nan() } else { i as f64 * 1.5 };
            db.push(&batch(vec![series("a", &[(i * 1000, v)]), series("b", &[(i * 1000, -(i as f64))])]))
                .expect("push");
            expected.push((i * 1000, v));
            if i == 200 {
                db.checkpoint().expect("checkpoint").expect("written");
            }
        }
        let md =
            MetricMetadata { metric_family: "a".into(), kind: MetricType::Counter, help: "h".into(), unit: "".into() };
        db.push(&PushBatch { series: vec![], metadata: vec![md] }).expect("metadata");
    }
    let db = open(dir.path(), opts(0));
    assert_eq!(read(&db, "a"), bits(&expected));
    assert_eq!(read(&db, "b").len(), 500);
    assert_eq!(db.metadata(Some("a"))["a"][0].kind, MetricType::Counter);
    // Checkpoint again, after replay, and reopen: still identical, and the
    // superseded segments are gone.
    db.checkpoint().expect("checkpoint").expect("written");
    assert!(db.checkpoint().expect("checkpoint").is_none(), "idle checkpoint skipped");
    let segs = crate::wal::list_segments(dir.path()).expect("list");
    assert_eq!(segs.len(), 1, "only the live segment remains: {segs:?}");
    drop(db);
    let db = open(dir.path(), opts(0));
    assert_eq!(read(&db, "a"), bits(&expected));
    assert_eq!(db.metadata(None).len(), 1);
    // New writes after all of that get fresh refs and replay too.
    db.push(&batch(vec![series("c", &[(1, 1.0)])])).expect("push");
    drop(db);
    let db = open(dir.path(), opts(0));
    assert_eq!(read(&db, "c"), bits(&[(1, 1.0)]));
    assert_eq!(read(&db, "b").len(), 500);
}

#[test]
fn concurrent_writers_and_a_checkpoint_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(open(dir.path(), opts(0)));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let db = db.clone();
            std::thread::spawn(move || {
                for i in 0..300i64 {
                    db.push(&batch(vec![series(&format!("w{w}"), &[(i, i as f64)])])).expect("push");
                }
            })
        })
        .collect();
    for _ in 0..5 {
        db.checkpoint().expect("checkpoint");
    }
    for w in writers {
        w.join().expect("writer");
    }
    drop(db);
    let db = open(dir.path(), opts(0));
    for w in 0..4 {
        assert_eq!(read(&db, &format!("w{w}")).len(), 300, "writer {w}");
    }
}

#[test]
fn series_limit_rejects_new_series_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), DbOptions { max_series: 1, ..opts(0) });
    db.push(&batch(vec![series("a", &[(1, 1.0)])])).expect("push");
    let out = db.push(&batch(vec![series("a", &[(2, 1.0)]), series("b", &[(2, 1.0)])])).expect("push");
    assert_eq!(out.samples_appended, 1);
    assert_eq!(out.rejections[0].reason, RejectReason::SeriesLimit);
}

#[test]
fn a_failed_wal_write_acknowledges_nothing_and_loses_nothing_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), opts(0));
    db.push(&batch(vec![series("a", &[(10, 1.0)])])).expect("push");
    // The disk fills mid-write: the batch creating series b fails.
    crate::wal::faults::short_write(7);
    assert!(db.push(&batch(vec![series("b", &[(10, 1.0)]), series("a", &[(20, 2.0)])])).is_err());
    assert_eq!(read(&db, "b"), vec![], "nothing of a failed write is applied");
    // The retry, and later writes, are acknowledged and must all replay:
    // b's series record is logged again although b is already in the head.
    db.push(&batch(vec![series("b", &[(10, 1.0)]), series("a", &[(20, 2.0)])])).expect("retry");
    db.push(&batch(vec![series("b", &[(30, 3.0)])])).expect("push");
    drop(db);
    let db = open(dir.path(), opts(0));
    assert_eq!(read(&db, "a"), bits(&[(10, 1.0), (20, 2.0)]));
    assert_eq!(read(&db, "b"), bits(&[(10, 1.0), (30, 3.0)]));
}

#[test]
fn samples_outside_the_storable_range_are_refused_and_dropped_at_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), opts(0));
    let out = db.push(&batch(vec![series("a", &[(i64::MIN, 1.0), (-1, 1.0), (10, 1.0)])])).expect("push");
    assert_eq!(out.samples_appended, 1);
    assert_eq!(out.rejections[0].reason, RejectReason::OutOfBounds);
    assert_eq!(out.rejections[0].samples, 2);
    drop(db);
    // A WAL written by a version that did not check: a poison pill at
    // i64::MIN is dropped at replay rather than kept forever.
    let wal = crate::wal::Wal::open(dir.path(), 1 << 20).expect("wal");
    let mut body = Vec::new();
    crate::wal::record::encode_samples(&mut body, &[(0, i64::MIN, 5.0), (0, 40, 4.0)]);
    let mut framed = Vec::new();
    crate::wal::frame::put_record(&mut framed, &body);
    wal.log(&framed).expect("log");
    drop(wal);
    let db = open(dir.path(), opts(0));
    assert_eq!(read(&db, "a"), bits(&[(10, 1.0), (40, 4.0)]));
    assert_eq!(db.head().time_bounds(), Some((10, 40)));
}

#[test]
fn a_checkpoint_with_samples_past_the_storable_range_keeps_the_rest_of_the_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = open(dir.path(), opts(0));
        db.push(&batch(vec![series("a", &[(10, 1.0), (20, 2.0)])])).expect("push");
        // What a version that did not check could have stored.
        let s = db.head().all_series().pop().expect("series");
        s.data.lock().append(MAX_SAMPLE_TIME_MS + 1, 3.0);
        db.checkpoint().expect("checkpoint").expect("written");
    }
    let db = open(dir.path(), opts(0));
    assert_eq!(read(&db, "a"), bits(&[(10, 1.0), (20, 2.0)]), "the acknowledged samples stay");
    assert_eq!(db.head().time_bounds(), Some((10, 20)));
}

/// A push as a distributor sends it over gRPC, with every `é` in a label
/// value turned into bytes that are not UTF-8.
fn request_bytes(series: &[PushSeries], break_utf8: bool) -> Vec<u8> {
    let batch = batch(series.to_vec());
    let mut buf = cairn_rpc::SeriesBuffer::for_series(&batch.series);
    for s in &batch.series {
        buf.push(s);
    }
    let head = cairn_rpc::codec::encode_head(&TenantId::new("t").expect("tenant"), &[]);
    let mut bytes = cairn_rpc::EncodedPush::all(head, buf.finish()).to_bytes().to_vec();
    if break_utf8 {
        for w in 0..bytes.len() - 1 {
            if bytes[w..w + 2] == *"é".as_bytes() {
                bytes[w..w + 2].copy_from_slice(&[0xff, 0xfe]);
            }
        }
    }
    bytes
}

#[test]
fn borrowed_pushes_find_series_without_copying_and_refuse_new_labels_that_are_not_utf8() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), opts(0));
    db.push(&batch(vec![series("a", &[(10, 1.0)])])).expect("push");

    // An existing series, found by its borrowed labels.
    let bytes = request_bytes(&[series("a", &[(20, 2.0)])], false);
    let push = cairn_rpc::codec::decode_push_borrowed(&bytes).expect("decodes");
    let out = db.push_series(push.series(), &push.metadata).expect("push");
    assert_eq!((out.samples_appended, out.series_created), (1, 0));

    // A new series whose value is not UTF-8 refuses the whole request.
    let bad = PushSeries {
        labels: Labels::from_pairs([("__name__", "b"), ("v", "é")]),
        samples: vec![Sample::new(30, 3.0)],
    };
    let bytes = request_bytes(&[series("a", &[(30, 3.0)]), bad], true);
    let push = cairn_rpc::codec::decode_push_borrowed(&bytes).expect("decodes: UTF-8 is checked on creation");
    let e = db.push_series(push.series(), &push.metadata).expect_err("not UTF-8");
    assert_eq!(e.code, cairn_common::ErrorCode::BadData);
    assert!(e.message.contains("not valid UTF-8") && e.message.contains("b{v="), "{}", e.message);
    assert_eq!(read(&db, "a"), bits(&[(10, 1.0), (20, 2.0)]), "nothing of the refused request is kept");
    assert!(read(&db, "b").is_empty());
    // The owned decoder refuses it too.
    assert!(cairn_rpc::codec::decode_push(&bytes).is_err());
}
