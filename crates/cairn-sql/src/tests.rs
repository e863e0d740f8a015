//! SQL over real blocks in a filesystem bucket.

use std::sync::Arc;
use std::time::Duration;

use cairn_common::metrics::Registry;
use cairn_common::status::CodedError;
use cairn_common::{Labels, Sample, TenantId};
use cairn_storage::block::{BlockWriter, WriteOptions, row_order};
use cairn_storage::config::StorageConfig;
use cairn_storage::meta::{BlockMeta, FORMAT_VERSION};
use cairn_storage::{BlockStore, index, paths};
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{Value, json};
use ulid::Ulid;

use super::*;

type Data = Vec<(Labels, Vec<Sample>)>;

fn tenant() -> TenantId {
    TenantId::new("t").expect("tenant")
}

async fn put_block(bucket: &Arc<dyn ObjectStore>, id: u128, mut data: Data) {
    data.sort_by(|a, b| row_order(&a.0, &b.0));
    let names: BTreeSet<String> = data.iter().flat_map(|(l, _)| l.iter().map(|l| l.name.clone())).collect();
    let mut buf = Vec::new();
    let id = Ulid(id);
    let mut w = BlockWriter::new(&mut buf, &id.to_string(), names, &WriteOptions::default()).expect("writer");
    for (l, s) in &data {
        w.append(l, s).expect("append");
    }
    let stats = w.finish().expect("finish");
    let meta = BlockMeta {
        id,
        tenant: "t".into(),
        min_time: stats.min_time,
        max_time: stats.max_time,
        series: stats.series,
        samples: stats.samples,
        bytes: buf.len() as u64,
        format_version: FORMAT_VERSION,
        source: "test".into(),
        compaction_level: 1,
    };
    bucket.put(&paths::data(&tenant(), id), buf.into()).await.expect("put");
    index::update(bucket, &tenant(), 0, |idx| idx.blocks.push(meta.clone())).await.expect("index");
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

struct Fixture {
    _dir: tempfile::TempDir,
    sql: Sql,
}

async fn fixture(max_rows: usize) -> Fixture {
    fixture_with(SqlConfig { max_rows, ..Default::default() }, Duration::from_secs(30)).await
}

async fn fixture_with(cfg: SqlConfig, timeout: Duration) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket: Arc<dyn ObjectStore> = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).expect("fs"));
    put_block(
        &bucket,
        1,
        vec![
            (
                labels(&[("__name__", "node_cpu_seconds_total"), ("instance", "a"), ("job", "node")]),
                (0..4).map(|k| Sample::new(k * 15_000, k as f64 * 1.25)).collect(),
            ),
            (
                labels(&[("__name__", "node_load1"), ("instance", "b"), ("job", "node")]),
                vec![Sample::new(0, 0.1 + 0.2), Sample::new(15_000, f64::INFINITY)],
            ),
        ],
    )
    .await;
    put_block(
        &bucket,
        2,
        vec![(
            labels(&[("__name__", "up"), ("instance", "c"), ("job", "edge"), ("zone", "eu")]),
            vec![Sample::new(60_000, 1.0), Sample::new(75_000, 0.0)],
        )],
    )
    .await;
    let storage = StorageConfig {
        bucket_index_refresh_interval: cairn_common::PromDuration::from_secs(60),
        metadata_cache_bytes: 1 << 20,
        ..Default::default()
    };
    let blocks = BlockStore::new(bucket, &storage, &mut Registry::default()).expect("block store");
    let budget = cairn_common::memory::MemoryBudget::new(1 << 30, "--query.memory-limit-bytes");
    Fixture { _dir: dir, sql: Sql::new(blocks, cfg, timeout, budget) }
}

async fn rows(f: &Fixture, q: &str) -> Vec<Vec<Value>> {
    f.sql.query(&tenant(), q, i64::MIN, i64::MAX).await.unwrap_or_else(|e| panic!("{q}: {e}")).rows
}

#[tokio::test]
async fn samples_come_back_bit_for_bit() {
    let f = fixture(1000).await;
    let got = rows(
        &f,
        "SELECT metric, instance, zone, CAST(timestamp AS BIGINT) AS ms, value FROM samples ORDER BY metric, ms",
    )
    .await;
    let want = vec![
        json!(["node_cpu_seconds_total", "a", null, 0, 0.0]),
        json!(["node_cpu_seconds_total", "a", null, 15000, 1.25]),
        json!(["node_cpu_seconds_total", "a", null, 30000, 2.5]),
        json!(["node_cpu_seconds_total", "a", null, 45000, 3.75]),
        json!(["node_load1", "b", null, 0, 0.30000000000000004]),
        json!(["node_load1", "b", null, 15000, "+Inf"]),
        json!(["up", "c", "eu", 60000, 1.0]),
        json!(["up", "c", "eu", 75000, 0.0]),
    ];
    let got: Vec<Value> = got.into_iter().map(Value::Array).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn aggregates_and_time_functions_work() {
    let f = fixture(1000).await;
    let got = rows(
        &f,
        "SELECT job, count(*) AS n, max(value) FROM samples WHERE metric <> 'node_load1' GROUP BY job ORDER BY job",
    )
    .await;
    assert_eq!(got, vec![vec![json!("edge"), json!(2), json!(1.0)], vec![json!("node"), json!(4), json!(3.75)]]);
    let got = rows(&f, "SELECT date_bin(INTERVAL '30 seconds', timestamp) AS b, avg(value) FROM samples WHERE metric = 'node_cpu_seconds_total' GROUP BY b ORDER BY b").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0][1], json!(0.625));
}

#[tokio::test]
async fn the_time_range_selects_blocks() {
    let f = fixture(1000).await;
    let r = f.sql.query(&tenant(), "SELECT count(*) FROM samples", 50_000, 100_000).await.expect("query");
    assert_eq!(r.rows, vec![vec![json!(2)]], "only the second block overlaps");
    let r = f.sql.query(&tenant(), "SELECT count(*) FROM samples", 200_000, 300_000).await.expect("query");
    assert_eq!(r.rows, vec![vec![json!(0)]], "no block: an empty table, not an error");
    let other = TenantId::new("nobody").expect("tenant");
    let r = f.sql.query(&other, "SELECT * FROM samples", i64::MIN, i64::MAX).await.expect("query");
    assert!(r.rows.is_empty());
}

#[tokio::test]
async fn rows_beyond_the_limit_are_cut_and_said_so() {
    let f = fixture(3).await;
    let r = f.sql.query(&tenant(), "SELECT * FROM samples", i64::MIN, i64::MAX).await.expect("query");
    assert_eq!(r.rows.len(), 3);
    assert!(r.truncated);
    let r = f.sql.query(&tenant(), "SELECT count(*) FROM samples", i64::MIN, i64::MAX).await.expect("query");
    assert!(!r.truncated);
}

#[tokio::test]
async fn bad_or_writing_statements_are_refused() {
    let f = fixture(1000).await;
    for q in [
        "SELEC 1",
        "SELECT nope FROM samples",
        "CREATE TABLE x AS SELECT 1",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "DROP VIEW samples",
        "INSERT INTO blocks SELECT * FROM blocks",
        "SET datafusion.execution.batch_size = 1",
    ] {
        match f.sql.query(&tenant(), q, i64::MIN, i64::MAX).await {
            Err(SqlError::BadQuery(msg)) => assert!(!msg.is_empty()),
            other => panic!("{q}: expected a bad query error, got {other:?}"),
        }
    }
}

/// A join of eight rows nine times over: 134 million rows of work.
const HEAVY: &str = "SELECT count(*) FROM samples a, samples b, samples c, samples d, samples e, samples f, \
     samples g, samples h, samples i WHERE a.value + b.value + c.value + d.value + e.value + f.value + g.value \
     + h.value + i.value > 1e9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_stops_a_query_mid_join() {
    let f = fixture_with(SqlConfig::default(), Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let e = f.sql.query(&tenant(), HEAVY, i64::MIN, i64::MAX).await.expect_err("times out");
    assert!(matches!(e, SqlError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "stopped near its timeout: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_query_cancels_it() {
    let f = fixture_with(SqlConfig::default(), Duration::from_secs(60)).await;
    let t = tenant();
    let q = f.sql.query(&t, HEAVY, i64::MIN, i64::MAX);
    assert!(tokio::time::timeout(Duration::from_millis(300), q).await.is_err(), "still running");
    // The runtime's workers go idle: a short query gets both at once.
    let started = std::time::Instant::now();
    assert_eq!(rows(&f, "SELECT count(*) FROM samples").await, vec![vec![json!(8)]]);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn memory_and_depth_limits_name_their_flags() {
    let cfg = SqlConfig { max_memory_bytes: 4096, ..Default::default() };
    let f = fixture_with(cfg, Duration::from_secs(30)).await;
    let e = f
        .sql
        .query(&tenant(), "SELECT a.metric, b.metric FROM samples a, samples b ORDER BY 1, 2", i64::MIN, i64::MAX)
        .await
        .expect_err("over the memory limit");
    assert!(matches!(e, SqlError::Limit(_)), "{e}");
    assert!(e.to_string().contains("--sql.max-memory-bytes"), "{e}");
    assert_eq!(e.error_code(), ErrorCode::Execution);
    let deep = format!("SELECT count(*) FROM samples WHERE {}", vec!["value = 1"; 2000].join(" OR "));
    let e = f.sql.query(&tenant(), &deep, i64::MIN, i64::MAX).await.expect_err("too deep");
    assert!(e.to_string().contains("--sql.max-expression-depth"), "{e}");
    assert_eq!(e.error_code(), ErrorCode::BadData);
}
