//! Golden data directories: the WAL (segments and a checkpoint) as a
//! format version wrote it, which every later build must replay to the
//! same samples and metadata. `testdata/wal-v1` is segments `CAIRNW01`
//! and checkpoints `CAIRNC01`.

use cairn_common::metrics::Registry;
use cairn_common::push::{MetricMetadata, MetricType, PushBatch, PushSeries, Pusher};
use cairn_common::storage::{Queryable, SelectRequest, Series};
use cairn_common::{Labels, MatchOp, Matcher, Sample, TenantId};
use cairn_ingester::{Ingester, IngesterConfig};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/wal-v1");

fn tenant() -> TenantId {
    TenantId::new("team-a").expect("tenant")
}

/// Two series over a fixed hour of 2023; the second half arrives after the
/// checkpoint, so it is replayed from segments on top of the checkpoint.
fn batch(half: i64) -> PushBatch {
    let base = 1_700_000_000_000i64;
    let series = (0..2)
        .map(|i| PushSeries {
            labels: Labels::from_pairs([("__name__", "golden"), ("i", &i.to_string())]),
            samples: (half * 100..(half + 1) * 100)
                .map(|k| Sample::new(base + k * 15_000, if k == 150 { f64::NAN } else { k as f64 * 0.5 + i as f64 }))
                .collect(),
        })
        .collect();
    let metadata = vec![MetricMetadata {
        metric_family: "golden".into(),
        kind: MetricType::Gauge,
        help: "A golden gauge.".into(),
        unit: String::new(),
    }];
    PushBatch { series, metadata }
}

fn open(dir: &std::path::Path) -> Ingester {
    let mut registry = Registry::default();
    // No block cutting: what the golden directory holds stays in the head.
    let ingester = Ingester::new(IngesterConfig::default(), dir, &mut registry, None).expect("ingester");
    ingester.replay_all().expect("replay");
    ingester
}

async fn select(ing: &Ingester) -> Vec<Series> {
    let m = [Matcher::new(MatchOp::Equal, "__name__", "golden").expect("matcher")];
    let req = SelectRequest::whole(&m);
    ing.select(&tenant(), &req).await.expect("select")
}

fn bits(s: &[Sample]) -> Vec<(i64, u64)> {
    s.iter().map(|x| (x.t, x.v.to_bits())).collect()
}

#[tokio::test]
#[ignore = "writes testdata; run once per WAL or checkpoint format version"]
async fn write_golden_wal() {
    let _ = std::fs::remove_dir_all(GOLDEN);
    let ing = open(std::path::Path::new(GOLDEN));
    ing.push(&tenant(), batch(0)).await.expect("push");
    ing.flush().await.expect("checkpoint");
    ing.push(&tenant(), batch(1)).await.expect("push");
    ing.sync_all();
}

#[tokio::test]
async fn the_golden_wal_replays_to_the_same_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(std::path::Path::new(GOLDEN), dir.path());
    let ing = open(dir.path());
    let got = select(&ing).await;
    assert_eq!(got.len(), 2);
    for (i, s) in got.iter().enumerate() {
        let mut want: Vec<Sample> = batch(0).series[i].samples.clone();
        want.extend(batch(1).series[i].samples.clone());
        assert_eq!(s.labels, batch(0).series[i].labels);
        assert_eq!(bits(&s.samples), bits(&want), "series {i}: every sample, bit for bit");
    }
    let md = ing.metadata(&tenant(), Some("golden")).await.expect("metadata");
    assert_eq!(md.get("golden").map(|l| l[0].help.as_str()), Some("A golden gauge."));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("golden WAL is checked in") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
