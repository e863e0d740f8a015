use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use cairn_common::sample::{NORMAL_NAN_BITS, stale_nan};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use proptest::prelude::*;

use super::*;

type Data = Vec<(Labels, Vec<Sample>)>;

fn write_bytes(data: &Data, opts: &WriteOptions) -> (Vec<u8>, BlockStats) {
    let mut sorted: Vec<_> = data.iter().collect();
    sorted.sort_by(|a, b| row_order(&a.0, &b.0));
    let names = sorted.iter().flat_map(|(l, _)| l.iter().map(|x| x.name.clone()));
    let mut buf = Vec::new();
    let mut w = BlockWriter::new(&mut buf, "test", names.collect::<Vec<_>>(), opts).expect("writer");
    for (l, s) in sorted {
        w.append(l, s).expect("append");
    }
    let stats = w.finish().expect("finish");
    (buf, stats)
}

struct Opened {
    reader: BlockReader,
    read: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

async fn open(bytes: Vec<u8>) -> Opened {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
    let path = object_store::path::Path::from("b/data.parquet");
    let size = bytes.len() as u64;
    store.put(&path, PutPayload::from(bytes)).await.expect("put");
    let read = Arc::new(AtomicU64::new(0));
    let r = read.clone();
    let reader = BlockReader::open(
        store,
        path,
        size,
        Arc::new(move |n| {
            r.fetch_add(n, AtomicOrdering::Relaxed);
        }),
    )
    .await
    .expect("open");
    Opened { reader, read, _dir: dir }
}

fn all() -> Vec<Matcher> {
    vec![Matcher::new(MatchOp::Regex, "__name__", ".+").expect("re")]
}

fn same(a: &[Sample], b: &[Sample]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
}

use cairn_common::MatchOp;

#[test]
fn decimal_scale_is_exact_or_none() {
    assert_eq!(decimal_scale([1.0, 2.0, 3e15].into_iter()), Some(0));
    assert_eq!(decimal_scale([0.25, 1.5].into_iter()), Some(2));
    assert_eq!(decimal_scale([1.000000001].into_iter()), Some(9));
    assert_eq!(decimal_scale([0.1 + 0.2].into_iter()), None, "0.30000000000000004 has 17 decimals");
    assert_eq!(decimal_scale([f64::NAN].into_iter()), None);
    assert_eq!(decimal_scale([f64::INFINITY].into_iter()), None);
    assert_eq!(decimal_scale([-0.0].into_iter()), None, "-0 would come back as +0");
    assert_eq!(decimal_scale([1e300].into_iter()), None, "beyond 2^53");
    assert_eq!(decimal_scale(std::iter::empty()), Some(0));
}

#[tokio::test]
async fn round_trip_keeps_every_bit() {
    let labels = |m: &str, i: &str| Labels::from_pairs([("__name__", m), ("instance", i), ("job", "node")]);
    let data: Data = vec![
        (labels("up", "a"), vec![Sample::new(1_000, 1.0), Sample::new(16_000, 0.0), Sample::new(31_000, stale_nan())]),
        (labels("cpu_seconds_total", "a"), (0..100).map(|i| Sample::new(i * 15_000, i as f64 * 0.01 + 10.0)).collect()),
        (
            labels("weird", "b"),
            vec![
                Sample::new(5, -0.0),
                Sample::new(6, f64::from_bits(NORMAL_NAN_BITS)),
                Sample::new(7, f64::INFINITY),
                Sample::new(8, 0.1 + 0.2),
                Sample::new(9, f64::MIN_POSITIVE),
            ],
        ),
        (Labels::from_pairs([("__name__", "no_job"), ("zone", "z")]), vec![Sample::new(-5, 3.0)]),
    ];
    let (bytes, stats) = write_bytes(&data, &WriteOptions::default());
    assert_eq!(stats, BlockStats { series: 4, samples: 109, min_time: -5, max_time: 99 * 15_000 });
    let o = open(bytes).await;
    assert_eq!(o.reader.key_value(KV_FORMAT_VERSION).as_deref(), Some("1"));
    let got = o.reader.select(&all(), i64::MIN, i64::MAX, false, None).await.expect("select");
    let mut want: Vec<_> = data.clone();
    want.sort_by(|a, b| row_order(&a.0, &b.0));
    assert_eq!(got.len(), want.len());
    for (g, (l, s)) in got.iter().zip(&want) {
        assert_eq!(&g.labels, l);
        assert!(same(&g.samples, s), "{l:?}: {:?} != {s:?}", g.samples);
    }
}

#[tokio::test]
async fn time_ranges_trim_and_latest_only_keeps_the_newest() {
    let l = Labels::from_pairs([("__name__", "m")]);
    let data: Data = vec![(l.clone(), (0..10).map(|i| Sample::new(i * 10, i as f64)).collect())];
    let o = open(write_bytes(&data, &WriteOptions::default()).0).await;
    let got = o.reader.select(&all(), 15, 50, false, None).await.expect("select");
    assert_eq!(got[0].samples.iter().map(|s| s.t).collect::<Vec<_>>(), vec![20, 30, 40, 50]);
    let got = o.reader.select(&all(), 15, 55, true, None).await.expect("select");
    assert_eq!(got[0].samples, vec![Sample::new(50, 5.0)]);
    assert!(o.reader.select(&all(), 91, 200, false, None).await.expect("select").is_empty());
    assert!(o.reader.series(&all(), 91, 200).await.expect("series").is_empty());
    assert_eq!(o.reader.series(&all(), 90, 200).await.expect("series"), vec![l]);
}

#[tokio::test]
async fn empty_matchers_match_nothing_and_absent_labels_read_as_empty() {
    let data: Data = vec![
        (Labels::from_pairs([("__name__", "m"), ("a", "1")]), vec![Sample::new(1, 1.0)]),
        (Labels::from_pairs([("__name__", "m")]), vec![Sample::new(1, 2.0)]),
    ];
    let o = open(write_bytes(&data, &WriteOptions::default()).0).await;
    assert!(o.reader.select(&[], 0, 10, false, None).await.expect("select").is_empty());
    let q = |ms: Vec<Matcher>| {
        let r = o.reader.clone();
        async move { r.series(&ms, 0, 10).await.expect("series") }
    };
    assert_eq!(q(vec![Matcher::equal("a", "")]).await, vec![Labels::from_pairs([("__name__", "m")])]);
    assert_eq!(q(vec![Matcher::equal("nope", "")]).await.len(), 2);
    assert!(q(vec![Matcher::equal("nope", "x")]).await.is_empty());
    assert_eq!(q(vec![Matcher::new(MatchOp::NotEqual, "nope", "x").expect("m")]).await.len(), 2);
}

#[tokio::test]
async fn newer_versions_are_refused_with_a_clear_error() {
    let schema = schema(&["__name__".to_owned()]);
    let props = WriterProperties::builder()
        .set_key_value_metadata(Some(vec![KeyValue::new(KV_FORMAT_VERSION.into(), "99".to_owned())]))
        .build();
    let mut buf = Vec::new();
    let w = ArrowWriter::try_new(&mut buf, schema, Some(props)).expect("writer");
    w.close().expect("close");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
    let path = object_store::path::Path::from("x.parquet");
    let size = buf.len() as u64;
    store.put(&path, PutPayload::from(buf)).await.expect("put");
    let err = BlockReader::open(store, path, size, Arc::new(|_| {})).await.expect_err("newer version");
    assert!(err.to_string().contains("format version 99"), "{err}");
}

#[test]
fn out_of_order_input_is_refused() {
    let mut buf = Vec::new();
    let names = vec!["__name__".to_owned()];
    let mut w = BlockWriter::new(&mut buf, "t", names, &WriteOptions::default()).expect("writer");
    let (a, b) = (Labels::from_pairs([("__name__", "a")]), Labels::from_pairs([("__name__", "b")]));
    w.append(&b, &[Sample::new(1, 1.0)]).expect("append");
    assert!(w.append(&a, &[Sample::new(1, 1.0)]).is_err(), "series out of order");
    assert!(w.append(&Labels::from_pairs([("__name__", "c"), ("x", "1")]), &[Sample::new(1, 1.0)]).is_err());
    assert!(w.append(&Labels::from_pairs([("__name__", "d")]), &[Sample::new(2, 1.0), Sample::new(2, 1.0)]).is_err());
}

/// A selective query reads a small part of a big block: the row groups
/// outside the metric are pruned by statistics, and only the pages of the
/// matching rows are fetched.
#[tokio::test]
async fn one_series_reads_a_small_part_of_the_block() {
    let mut data: Data = Vec::new();
    for metric in 0..40 {
        for inst in 0..250 {
            let l = Labels::from_pairs([
                ("__name__", format!("metric_{metric:02}").as_str()),
                ("instance", format!("host-{inst:03}:9100").as_str()),
                ("job", "node"),
            ]);
            let samples = (0..480).map(|i| Sample::new(i * 15_000, (i * (inst + 1)) as f64 * 0.25)).collect();
            data.push((l, samples));
        }
    }
    let (bytes, _) = write_bytes(&data, &WriteOptions { row_group_series: 1_000, ..Default::default() });
    let size = bytes.len() as u64;
    let o = open(bytes).await;
    let footer = o.read.swap(0, AtomicOrdering::Relaxed);
    let ms = vec![Matcher::equal("__name__", "metric_17"), Matcher::equal("instance", "host-042:9100")];
    let got = o.reader.select(&ms, 0, i64::MAX, false, None).await.expect("select");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples.len(), 480);
    assert_eq!(got[0].samples[479].v, (479 * 43) as f64 * 0.25);
    let read = o.read.load(AtomicOrdering::Relaxed);
    assert!(read * 20 < size, "one series read {read} of {size} bytes (footer {footer})");
}

fn arb_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0i64..1_000_000).prop_map(|n| n as f64),
        (0i64..1_000_000).prop_map(|n| n as f64 / 100.0),
        (0i64..1_000_000_000).prop_map(|n| n as f64 * 1e-9),
        any::<f64>(),
        Just(stale_nan()),
        Just(-0.0),
    ]
}

fn arb_data() -> impl Strategy<Value = Data> {
    let series = (0u8..4, 0u8..3, prop::option::of(0u8..2), prop::collection::vec((1i64..1_000, arb_value()), 1..40));
    prop::collection::vec(series, 1..30).prop_map(|rows| {
        let mut by: std::collections::BTreeMap<Labels, Vec<Sample>> = Default::default();
        for (m, a, b, samples) in rows {
            let (m, a) = (format!("m{m}"), format!("a{a}"));
            let b = b.map(|b| format!("b{b}"));
            let mut pairs = vec![("__name__", m.as_str()), ("a", a.as_str())];
            if let Some(b) = &b {
                pairs.push(("b", b.as_str()));
            }
            let mut t = 0;
            let samples = samples
                .into_iter()
                .map(|(dt, v)| {
                    t += dt;
                    Sample::new(t, v)
                })
                .collect();
            by.insert(Labels::from_pairs(pairs), samples);
        }
        by.into_iter().collect()
    })
}

fn arb_matcher() -> impl Strategy<Value = Matcher> {
    let names = prop_oneof![Just("__name__"), Just("a"), Just("b"), Just("c")];
    let values = prop_oneof![Just(""), Just("m1"), Just("a0"), Just("b1"), Just("m1|m2"), Just("a.*"), Just(".+")];
    let ops = prop_oneof![Just(MatchOp::Equal), Just(MatchOp::NotEqual), Just(MatchOp::Regex), Just(MatchOp::NotRegex)];
    (ops, names, values).prop_map(|(op, n, v)| Matcher::new(op, n, v).expect("matcher"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any data, any matchers, any range: the block answers like a scan of
    /// the data it was written from.
    #[test]
    fn answers_like_a_scan(
        data in arb_data(),
        matchers in prop::collection::vec(arb_matcher(), 1..3),
        start in 0i64..20_000,
        len in 0i64..30_000,
        rg in 1usize..8,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let end = start + len;
        let opts = WriteOptions { row_group_series: rg, page_bytes: 1024, ..Default::default() };
        let (bytes, _) = write_bytes(&data, &opts);
        let o = rt.block_on(open(bytes));
        let got = rt.block_on(o.reader.select(&matchers, start, end, false, None)).expect("select");
        let mut want: Vec<(Labels, Vec<Sample>)> = data
            .iter()
            .filter(|(l, _)| matchers.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
            .map(|(l, s)| (l.clone(), s.iter().copied().filter(|s| s.t >= start && s.t <= end).collect::<Vec<_>>()))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        want.sort_by(|a, b| row_order(&a.0, &b.0));
        prop_assert_eq!(got.len(), want.len());
        for (g, (l, s)) in got.iter().zip(&want) {
            prop_assert_eq!(&g.labels, l);
            prop_assert!(same(&g.samples, s), "{:?}: {:?} != {:?}", l, g.samples, s);
        }
        // Like the head, the series API counts a series whose time span
        // overlaps the range, even when no sample falls inside it.
        let series = rt.block_on(o.reader.series(&matchers, start, end)).expect("series");
        let mut want_series: Vec<Labels> = data
            .iter()
            .filter(|(l, _)| matchers.iter().all(|m| m.matches(l.get(&m.name).unwrap_or(""))))
            .filter(|(_, s)| s[0].t <= end && s[s.len() - 1].t >= start)
            .map(|(l, _)| l.clone())
            .collect();
        want_series.sort_by(row_order);
        prop_assert_eq!(series, want_series);
    }
}

/// The data of `testdata/format-v1.parquet`.
fn golden_data() -> Data {
    let l = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
    vec![
        (
            l(&[("__name__", "node_cpu_seconds_total"), ("cpu", "0"), ("mode", "idle")]),
            (0..20).map(|k| Sample::new(1_700_000_000_000 + k * 15_000, k as f64 * 14.93)).collect(),
        ),
        (
            l(&[("__name__", "node_load1"), ("instance", "a")]),
            vec![
                Sample::new(1_700_000_000_000, 0.1 + 0.2),
                Sample::new(1_700_000_015_000, stale_nan()),
                Sample::new(1_700_000_030_000, f64::NEG_INFINITY),
            ],
        ),
        (l(&[("__name__", "up"), ("job", "node")]), vec![Sample::new(1_700_000_000_000, 1.0)]),
    ]
}

const GOLDEN_V1: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/format-v1.parquet");

/// Writes the golden file of the current format version; run by hand when
/// the version changes (`cargo test -p cairn-storage -- --ignored`), and
/// keep the older versions' files.
#[test]
#[ignore = "writes testdata; run once per format version"]
fn write_golden_file() {
    let (bytes, _) = write_bytes(&golden_data(), &WriteOptions::default());
    std::fs::write(GOLDEN_V1, bytes).expect("write golden file");
}

/// Files written by format version 1 stay readable, sample for sample.
#[tokio::test]
async fn reads_format_v1_files() {
    let bytes = std::fs::read(GOLDEN_V1).expect("testdata/format-v1.parquet is checked in");
    let o = open(bytes).await;
    assert_eq!(o.reader.key_value(KV_FORMAT_VERSION).as_deref(), Some("1"));
    let got = o.reader.select(&all(), i64::MIN, i64::MAX, false, None).await.expect("select");
    let mut want = golden_data();
    want.sort_by(|a, b| row_order(&a.0, &b.0));
    assert_eq!(got.len(), want.len());
    for (g, (l, s)) in got.iter().zip(&want) {
        assert_eq!(&g.labels, l);
        assert!(same(&g.samples, s), "{l:?}: {:?} != {s:?}", g.samples);
    }
}

/// Every page header of a block Cairn writes passes the check the reader
/// runs before decoding: whole column chunks, and each page the offset
/// index lists.
#[tokio::test]
async fn the_page_header_check_passes_every_page_cairn_writes() {
    let data: Data = (0..300)
        .map(|i| {
            let l = Labels::from_pairs([("__name__", "m"), ("i", format!("{i:04}").as_str())]);
            (l, (0..200).map(|t| Sample::new(t * 15_000, (t * i) as f64 / 7.0)).collect())
        })
        .collect();
    let (bytes, _) =
        write_bytes(&data, &WriteOptions { row_group_series: 100, page_bytes: 1024, ..Default::default() });
    let o = open(bytes.clone()).await;
    let md = o.reader.meta.metadata();
    let offsets = md.offset_index().expect("offset index");
    let schema = md.file_metadata().schema_descr();
    let mut pages = 0;
    let mut repeated_pages = 0;
    for (rg, columns) in offsets.iter().enumerate() {
        for (c, index) in columns.iter().enumerate() {
            let (start, len) = md.row_group(rg).column(c).byte_range();
            let chunk = &bytes[start as usize..(start + len) as usize];
            let starts: Vec<usize> =
                index.page_locations().iter().map(|p| (p.offset as u64 - start) as usize).collect();
            pages += starts.len();
            // Sample columns are lists: their repetition levels are checked too.
            let repeated =
                (schema.column(c).max_rep_level() > 0).then_some(parquet_guard::Repeated { bit_width: 1, zstd: true });
            repeated_pages += if repeated.is_some() { starts.len() } else { 0 };
            assert_eq!(
                parquet_guard::check_pages(chunk, starts.iter().copied(), repeated, &|_| false).map(|c| c.len()),
                Ok(if repeated.is_some() { starts.len() } else { 0 }),
                "row group {rg} column {c}"
            );
            for p in index.page_locations() {
                let at = p.offset as usize;
                let page = &bytes[at..at + p.compressed_page_size as usize];
                assert!(parquet_guard::check_pages(page, [], repeated, &|_| false).is_ok());
            }
        }
    }
    assert!(repeated_pages > 50, "the block has many pages of sample columns ({repeated_pages})");
    assert!(pages > 100, "the block has many pages ({pages})");
    let got = o.reader.select(&all(), 0, i64::MAX, false, None).await.expect("select");
    assert_eq!(got.len(), 300);
}

/// Opens a `block_file` fuzz regression input.
async fn open_regression(name: &str) -> Opened {
    let path = format!("{}/../../tests/fuzz/regressions/block_file/{name}", env!("CARGO_MANIFEST_DIR"));
    open(std::fs::read(path).expect("the fuzz regression input")).await
}

/// A block whose page header declares a list of billions of booleans in a
/// field the decoder skips (found by fuzzing): the read is refused at once,
/// before the decoder would spin on it.
#[tokio::test]
async fn a_page_header_declaring_billions_of_values_is_refused() {
    let o = open_regression("page-header-with-a-huge-bool-list").await;
    let mut refused = 0;
    for latest in [false, true] {
        match o.reader.select(&all(), i64::MIN, i64::MAX, latest, None).await {
            Err(e) => {
                assert!(e.to_string().contains("declares more values"), "{e}");
                refused += 1;
            }
            Ok(got) => panic!("read {} series from a forged block", got.len()),
        }
    }
    assert_eq!(refused, 2);
}

/// `file` with `fields` put first in its footer (fields are delta-encoded,
/// so what follows them is shifted; the decoder would fail later, after
/// the work the forged fields cost).
fn with_footer_prefix(file: &[u8], fields: &[u8]) -> Vec<u8> {
    let n = file.len();
    let len = u32::from_le_bytes(file[n - 8..n - 4].try_into().expect("4 bytes")) as usize;
    let footer = n - 8 - len;
    let mut out = file[..footer].to_vec();
    out.extend_from_slice(fields);
    out.extend_from_slice(&file[footer..n - 8]);
    out.extend_from_slice(&((len + fields.len()) as u32).to_le_bytes());
    out.extend_from_slice(b"PAR1");
    out
}

/// Footers forged to make the decoder spin or reserve gigabytes are
/// refused when the block is opened, before the decoder parses them.
#[tokio::test]
async fn forged_footers_are_refused_at_open() {
    let golden = std::fs::read(GOLDEN_V1).expect("golden file");
    let cases: [(&[u8], &str); 4] = [
        // Field 100, unknown: a list of 2^31-1 booleans.
        (&[0x09, 0xc8, 0x01, 0xf1, 0xff, 0xff, 0xff, 0xff, 0x07], "an unknown field 100"),
        // Row groups (field 4): a list of 2^31-1 structs in a few kilobytes.
        (&[0x49, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07], "a list of 2147483647 values"),
        // Version (field 1) declared as a list.
        (&[0x19, 0x15], "field 1 declared with type 9"),
        // A string longer than the footer.
        (&[0x68, 0xff, 0xff, 0x03], "byte string with"),
    ];
    for (fields, want) in cases {
        let bytes = with_footer_prefix(&golden, fields);
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
        let path = object_store::path::Path::from("b/data.parquet");
        let size = bytes.len() as u64;
        store.put(&path, PutPayload::from(bytes)).await.expect("put");
        match BlockReader::open(store, path, size, Arc::new(|_| {})).await {
            Err(Error::Corrupt { msg, .. }) => assert!(msg.contains(want), "{msg}"),
            other => panic!("{want}: {other:?}"),
        }
    }
}

/// A block with a page of a sample column holding fewer repetition levels
/// than it declares values (found by fuzzing): skipping rows inside it,
/// the decoder would loop forever; the read is refused instead.
#[tokio::test]
async fn a_page_short_of_repetition_levels_is_refused() {
    let o = open_regression("page-with-fewer-repetition-levels-than-values").await;
    let job = [Matcher::new(MatchOp::NotEqual, "job", "").expect("matcher")];
    let err = o.reader.select(&job, 0, 1_000_000, true, None).await.expect_err("refused");
    assert!(err.to_string().contains("repetition levels for"), "{err}");
}

/// A read that skips rows inside row groups has the repetition levels of
/// the pages it fetches checked once: the block remembers them.
#[tokio::test]
async fn repetition_levels_are_checked_once_per_page() {
    let data: Data = (0..300)
        .map(|i| {
            let l = Labels::from_pairs([("__name__", "m"), ("i", format!("{i:04}").as_str())]);
            (l, (0..200).map(|t| Sample::new(t * 15_000, t as f64)).collect())
        })
        .collect();
    let (bytes, _) =
        write_bytes(&data, &WriteOptions { row_group_series: 100, page_bytes: 1024, ..Default::default() });
    let o = open(bytes).await;
    let checked =
        || o.reader.pages.levels_checked.iter().map(|w| w.load(AtomicOrdering::Relaxed).count_ones()).sum::<u32>();
    assert_eq!(checked(), 0);
    // Every row: whole row groups, nothing skipped, nothing to check.
    assert_eq!(o.reader.select(&all(), 0, i64::MAX, false, None).await.expect("select").len(), 300);
    assert_eq!(checked(), 0);
    let one = [Matcher::equal("i", "0150")];
    let got = o.reader.select(&one, 0, i64::MAX, false, None).await.expect("select");
    assert_eq!(got.len(), 1);
    let after_first = checked();
    assert!(after_first > 0, "the pages of one series were checked");
    assert_eq!(o.reader.select(&one, 0, i64::MAX, false, None).await.expect("select"), got);
    assert_eq!(checked(), after_first);
}
