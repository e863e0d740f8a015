//! Nothing acknowledged is lost: kill -9 and restart, and SIGTERM.

use cairn_e2e::{Cairn, client, now_ms, push, query, series, vector, write_v1};

const SERIES: usize = 20;
const BATCHES: usize = 50;
const PER_BATCH: usize = 10;

/// Writes SERIES x BATCHES x PER_BATCH samples, each request acknowledged.
async fn write_all(cairn: &Cairn, base_t: i64) -> usize {
    let c = client();
    let mut acked = 0;
    for b in 0..BATCHES {
        let mut ts = Vec::new();
        for s in 0..SERIES {
            let inst = format!("i{s}");
            let samples: Vec<(i64, f64)> = (0..PER_BATCH)
                .map(|k| {
                    let i = (b * PER_BATCH + k) as i64;
                    (base_t + i * 1000, i as f64 * 0.5)
                })
                .collect();
            ts.push(series(&[("__name__", "crash_test"), ("instance", &inst)], &samples));
        }
        let (status, body) = push(&c, &cairn.url("/api/v1/push"), write_v1(ts), Some("crash")).await.expect("push");
        assert_eq!(status, 204, "{body}");
        acked += SERIES * PER_BATCH;
    }
    acked
}

async fn count_samples(cairn: &Cairn, at: i64) -> f64 {
    let v = query(&client(), &cairn.url(""), "sum(count_over_time(crash_test[1h]))", at, Some("crash"))
        .await
        .expect("query");
    vector(&v).first().map(|x| x.1).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cairn = Cairn::start(&dir.path().join("data"), &[]).expect("start");
    let base = now_ms() - 30 * 60_000;
    let acked = write_all(&cairn, base).await;
    let at = base + 29 * 60_000;
    assert_eq!(count_samples(&cairn, at).await, acked as f64);

    cairn.kill9().expect("kill -9");
    cairn.restart().expect("restart");
    assert_eq!(count_samples(&cairn, at).await, acked as f64, "after kill -9 and WAL replay");
    // The values, not just the count, came back.
    let v = query(&client(), &cairn.url(""), "sum(crash_test)", base + 499_000, Some("crash")).await.expect("query");
    assert_eq!(vector(&v)[0].1, SERIES as f64 * 499.0 * 0.5);

    // Writes after the restart continue the same series, and a second crash
    // still loses nothing.
    let c = client();
    let t = base + 600_000;
    let (status, body) = push(
        &c,
        &cairn.url("/api/v1/push"),
        write_v1(vec![series(&[("__name__", "crash_test"), ("instance", "i0")], &[(t, 1.0)])]),
        Some("crash"),
    )
    .await
    .expect("push");
    assert_eq!(status, 204, "{body}");
    cairn.kill9().expect("kill -9");
    cairn.restart().expect("restart");
    assert_eq!(count_samples(&cairn, at).await, acked as f64 + 1.0);

    // A flush writes a checkpoint now; replay then starts from it.
    let r = client().post(cairn.url("/ingester/flush")).send().await.expect("flush");
    assert_eq!(r.status().as_u16(), 204);
    let wal = cairn.data_dir.join("wal").join("crash");
    let checkpoints = std::fs::read_dir(&wal)
        .expect("wal dir")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("checkpoint.")))
        .count();
    assert_eq!(checkpoints, 1, "one checkpoint in {}", wal.display());
    cairn.kill9().expect("kill -9");
    cairn.restart().expect("restart");
    assert!(cairn.log_text().contains("loaded checkpoint"));
    assert_eq!(count_samples(&cairn, at).await, acked as f64 + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cairn = Cairn::start(&dir.path().join("data"), &["--ingester.wal.sync-mode=none"]).expect("start");
    let base = now_ms() - 30 * 60_000;
    let acked = write_all(&cairn, base).await;
    let status = cairn.terminate().expect("terminate");
    assert!(status.success(), "exit status {status}; log:\n{}", cairn.log_text());
    assert!(cairn.log_text().contains("write-ahead logs synced"), "{}", cairn.log_text());
    cairn.restart().expect("restart");
    assert_eq!(count_samples(&cairn, base + 29 * 60_000).await, acked as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_then_crash_replays_checkpoint_and_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Checkpoint every second, so that writes straddle checkpoints.
    let mut cairn = Cairn::start(&dir.path().join("data"), &["--ingester.wal.checkpoint-interval=1s"]).expect("start");
    let base = now_ms() - 30 * 60_000;
    let c = client();
    let mut acked = 0;
    for b in 0..40i64 {
        let ts: Vec<_> = (0..SERIES)
            .map(|s| {
                series(&[("__name__", "crash_test"), ("instance", &format!("i{s}"))], &[(base + b * 1000, b as f64)])
            })
            .collect();
        let (status, body) = push(&c, &cairn.url("/api/v1/push"), write_v1(ts), Some("crash")).await.expect("push");
        assert_eq!(status, 204, "{body}");
        acked += SERIES;
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    }
    assert!(cairn.log_text().contains("wrote checkpoint"), "a checkpoint was taken:\n{}", cairn.log_text());
    cairn.kill9().expect("kill -9");
    cairn.restart().expect("restart");
    assert!(cairn.log_text().contains("loaded checkpoint"), "{}", cairn.log_text());
    assert_eq!(count_samples(&cairn, base + 29 * 60_000).await, acked as f64);
}
