//! Block cutting and shipping against a filesystem bucket: periods become
//! blocks, the head keeps only what is not uploaded, a restart does not
//! bring uploaded samples back, and head plus blocks answer like the data.

use std::sync::Arc;

use cairn_common::metrics::Registry;
use cairn_common::push::{PushBatch, PushSeries, Pusher, RejectReason};
use cairn_common::storage::{Queryable, ReadContext, SelectRequest, Series, merge_series};
use cairn_common::{Labels, MatchOp, Matcher, Sample, TenantId};
use cairn_ingester::shipper::BlockSink;
use cairn_ingester::{Ingester, IngesterConfig};
use cairn_storage::BlockStore;
use cairn_storage::config::StorageConfig;
use object_store::ObjectStore;

const SERIES: usize = 5;

fn tenant() -> TenantId {
    TenantId::new("team-a").expect("tenant")
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([("__name__", "m"), ("i", &i.to_string()), ("job", "test")])
}

/// One sample per second per series, `v = t/1000 + i/10`.
fn batch(from_s: i64, to_s: i64) -> PushBatch {
    let series = (0..SERIES)
        .map(|i| PushSeries {
            labels: labels(i),
            samples: (from_s..to_s).map(|s| Sample::new(s * 1000, s as f64 + i as f64 / 10.0)).collect(),
        })
        .collect();
    PushBatch { series, metadata: Vec::new() }
}

struct Node {
    ingester: Ingester,
    blocks: BlockStore,
}

fn start(dir: &std::path::Path) -> Node {
    let bucket: Arc<dyn ObjectStore> = StorageConfig::default().open(dir).expect("bucket");
    let mut registry = Registry::default();
    let cfg = StorageConfig {
        bucket_index_refresh_interval: cairn_common::PromDuration::from_secs(3600),
        metadata_cache_bytes: 1 << 20,
        ..Default::default()
    };
    let blocks = BlockStore::new(bucket.clone(), &cfg, &mut registry).expect("block store");
    let b = blocks.clone();
    let sink = BlockSink { bucket, notify: Arc::new(move |t, idx| b.notify(t, idx)), source: "test".into() };
    let cfg = IngesterConfig { block_duration: cairn_common::PromDuration::from_secs(10), ..Default::default() };
    let ingester = Ingester::new(cfg, dir, &mut registry, Some(sink)).expect("ingester");
    ingester.replay_all().expect("replay");
    Node { ingester, blocks }
}

/// Every sample of metric `m`, from one tier or merged from both.
async fn select(q: &dyn Queryable) -> Vec<Series> {
    select_merged(&[q]).await
}

async fn both(n: &Node) -> Vec<Series> {
    select_merged(&[&n.ingester, &n.blocks]).await
}

async fn select_merged(tiers: &[&dyn Queryable]) -> Vec<Series> {
    let m = [Matcher::new(MatchOp::Equal, "__name__", "m").expect("matcher")];
    let req = SelectRequest::whole(&m);
    let mut parts = Vec::new();
    for q in tiers {
        parts.push(q.select(&tenant(), &req).await.expect("select"));
    }
    merge_series(parts, &req).expect("merge")
}

fn count(s: &[Series]) -> usize {
    s.iter().map(|s| s.samples.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_periods_become_blocks_and_leave_the_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.ingester.push(&tenant(), batch(0, 60)).await.expect("push");
    let want = both(&n).await;
    assert_eq!(count(&want), SERIES * 60);

    // Newest sample at 59s, grace 5s: periods ending at 10..50s are final.
    n.ingester.ship_blocks(false).await.expect("ship");
    let index = n.blocks.index(&tenant()).await.expect("index");
    let periods: Vec<(i64, i64)> = index.blocks.iter().map(|b| (b.min_time, b.max_time)).collect();
    assert_eq!(periods, vec![(0, 9_000), (10_000, 19_000), (20_000, 29_000), (30_000, 39_000), (40_000, 49_000)]);
    assert!(index.blocks.iter().all(|b| b.series == SERIES as u64 && b.samples == SERIES as u64 * 10));
    let head = select(&n.ingester).await;
    assert_eq!(count(&head), SERIES * 10, "the head keeps only the last, open period");
    assert!(head.iter().all(|s| s.samples[0].t == 50_000));
    assert_eq!(both(&n).await, want, "head and blocks answer like the data");
    assert!(!dir.path().join("blocks/team-a").read_dir().expect("staging").any(|_| true), "local copies removed");

    // Samples in an uploaded period are refused, and say why.
    let out = n.ingester.push(&tenant(), batch(45, 46)).await.expect("push");
    assert_eq!(out.samples_appended, 0);
    assert_eq!(out.rejections[0].reason, RejectReason::TooOld);

    // Shipping again changes nothing: no period is final.
    n.ingester.ship_blocks(false).await.expect("ship");
    assert_eq!(n.blocks.index(&tenant()).await.expect("index").blocks.len(), 5);

    // A restart does not bring uploaded samples back into the head.
    drop(n);
    let n = start(dir.path());
    assert_eq!(count(&select(&n.ingester).await), SERIES * 10);
    let out = n.ingester.push(&tenant(), batch(49, 50)).await.expect("push");
    assert_eq!(out.samples_appended, 0, "the minimum valid time survives restarts");
    assert_eq!(both(&n).await, want);

    // Time moves on: the open period is cut once later data arrives.
    n.ingester.push(&tenant(), batch(60, 66)).await.expect("push");
    n.ingester.ship_blocks(false).await.expect("ship");
    assert_eq!(n.blocks.index(&tenant()).await.expect("index").blocks.len(), 6);
    assert_eq!(count(&both(&n).await), SERIES * 66);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_left_locally_is_uploaded_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.ingester.push(&tenant(), batch(0, 20)).await.expect("push");
    n.ingester.flush().await.expect("flush");
    // Point the bucket at a file, so that the upload fails.
    let bucket = dir.path().join("bucket");
    std::fs::remove_dir_all(&bucket).expect("rm");
    std::fs::write(&bucket, b"not a directory").expect("block the bucket");
    assert!(n.ingester.ship_blocks(false).await.is_err(), "the upload fails");
    let staged: Vec<_> = dir.path().join("blocks/team-a").read_dir().expect("staging").collect();
    assert_eq!(staged.len(), 1, "the block waits on the local disk");
    assert_eq!(count(&select(&n.ingester).await), SERIES * 20, "and the head keeps its samples");
    drop(n);

    std::fs::remove_file(&bucket).expect("unblock");
    let n = start(dir.path());
    assert_eq!(count(&select(&n.ingester).await), SERIES * 20, "replayed from the WAL");
    n.ingester.ship_blocks(false).await.expect("ship");
    let index = n.blocks.index(&tenant()).await.expect("index");
    assert_eq!(index.blocks.len(), 1);
    assert_eq!(count(&select(&n.ingester).await), SERIES * 10);
    assert_eq!(count(&select(&n.blocks).await), SERIES * 10);
    assert_eq!(count(&both(&n).await), SERIES * 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_head_can_be_cut_and_writes_go_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.ingester.push(&tenant(), batch(0, 57)).await.expect("push");
    n.ingester.ship_blocks(true).await.expect("ship");
    let index = n.blocks.index(&tenant()).await.expect("index");
    assert_eq!(index.blocks.len(), 6);
    assert_eq!(index.blocks[5].max_time, 56_000, "the open period is cut at its newest sample");
    assert!(select(&n.ingester).await.is_empty(), "nothing is left in the head");
    assert_eq!(count(&select(&n.blocks).await), SERIES * 57);

    // Newer samples, even in the period cut short, are still accepted...
    let out = n.ingester.push(&tenant(), batch(57, 66)).await.expect("push");
    assert_eq!(out.samples_appended, SERIES as u64 * 9);
    // ...and the rest of that period becomes a block of its own.
    n.ingester.ship_blocks(false).await.expect("ship");
    assert_eq!(
        n.blocks.index(&tenant()).await.expect("index").blocks.len(),
        7,
        "the rest of [50s, 60s) is final, [60s, 70s) is not"
    );
    n.ingester.ship_blocks(true).await.expect("ship");
    let index = n.blocks.index(&tenant()).await.expect("index");
    let tail: Vec<(i64, i64)> = index.blocks[6..].iter().map(|b| (b.min_time, b.max_time)).collect();
    assert_eq!(tail, vec![(57_000, 59_000), (60_000, 65_000)]);
    assert_eq!(count(&both(&n).await), SERIES * 66);
}

/// Notes the thread of every charge a storage makes while reading.
#[derive(Debug, Default)]
struct ThreadRecorder(parking_lot::Mutex<Vec<String>>);

impl ReadContext for ThreadRecorder {
    fn charge(&self, _bytes: usize) -> Result<(), cairn_common::status::ServiceError> {
        let name = std::thread::current().name().unwrap_or("unnamed").to_owned();
        self.0.lock().push(name);
        Ok(())
    }
}

/// Decoding a block is CPU work: it runs on the block store's read
/// threads, never on the runtime that asked.
#[tokio::test(flavor = "current_thread")]
async fn blocks_are_decoded_on_the_read_threads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = start(dir.path());
    n.ingester.push(&tenant(), batch(0, 30)).await.expect("push");
    n.ingester.ship_blocks(true).await.expect("ship");
    let recorder = Arc::new(ThreadRecorder::default());
    let m = [Matcher::new(MatchOp::Regex, "__name__", "m|other").expect("matcher")];
    let req = SelectRequest { ctx: Some(recorder.clone()), ..SelectRequest::whole(&m) };
    let got = n.blocks.select(&tenant(), &req).await.expect("select");
    assert_eq!(count(&got), SERIES * 30);
    let threads = recorder.0.lock().clone();
    assert_eq!(threads.len(), SERIES * 3, "a charge per series per block");
    assert!(threads.iter().all(|t| t.starts_with("cairn-block-read-")), "read on {threads:?}");
}
