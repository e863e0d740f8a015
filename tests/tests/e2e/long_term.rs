//! The long-term tier end to end: blocks cut by `cairn all`, uploaded to a
//! filesystem bucket or a real S3-compatible server (s3s-fs), read back by
//! queries after the ingester's local disk is gone, across a storage
//! outage, and by an independent Parquet reader (pyarrow).

use std::path::Path;
use std::time::{Duration, Instant};

use cairn_e2e::{
    Cairn, S3Server, client, metric, now_ms, peers_required, push, query, query_range, series, vector, write_v1,
};
use cairn_proto::prometheus as pb;

const SERIES: usize = 12;
const STEP_MS: i64 = 15_000;
const BLOCK_FLAGS: [&str; 1] = ["--ingester.block-duration=1m"];

/// Label pairs of test series `i`.
fn labels(i: usize) -> [(&'static str, String); 4] {
    [
        ("__name__", "node_cpu_seconds_total".to_owned()),
        ("instance", format!("host-{i}")),
        ("job", if i.is_multiple_of(2) { "node" } else { "edge" }.to_owned()),
        ("mode", "idle".to_owned()),
    ]
}

/// Counter-like values with fractional increments, as node_exporter's.
fn value(i: usize, k: i64) -> f64 {
    (k * (100 + i as i64 * 7)) as f64 / 100.0
}

/// Samples of every series at steps `k` in `ks`, from `t0`.
fn body(t0: i64, ks: std::ops::Range<i64>) -> Vec<u8> {
    let s: Vec<pb::TimeSeries> = (0..SERIES)
        .map(|i| {
            let l = labels(i);
            let pairs: Vec<(&str, &str)> = l.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let samples: Vec<(i64, f64)> = ks.clone().map(|k| (t0 + k * STEP_MS, value(i, k))).collect();
            series(&pairs, &samples)
        })
        .collect();
    write_v1(s)
}

/// One sample of a separate series at `t`: it moves the head's newest
/// time forward, which is what makes older block periods final.
fn clock(t: i64) -> Vec<u8> {
    write_v1(vec![series(&[("__name__", "clock")], &[(t, 1.0)])])
}

/// A real S3 server with bucket `cairn`, or `None` (the test skips, or
/// fails under `CAIRN_REQUIRE_PEERS=1`) when s3s-fs is not installed.
fn s3_server(dir: &Path) -> Option<S3Server> {
    let s3 = S3Server::start(&dir.join("s3"), "cairn").expect("s3s-fs");
    if s3.is_none() {
        assert!(!peers_required(), "s3s-fs is not installed but CAIRN_REQUIRE_PEERS=1");
        eprintln!("SKIPPED: s3s-fs not found on PATH (cargo install s3s-fs@0.14.1 --features binary --locked)");
    }
    s3
}

async fn push_ok(c: &reqwest::Client, cairn: &Cairn, body: Vec<u8>) {
    let (status, text) = push(c, &cairn.url("/api/v1/push"), body, None).await.expect("push");
    assert_eq!(status, 204, "push refused: {text}");
}

/// `POST /ingester/flush`: cuts final periods and uploads pending blocks;
/// its status says whether every upload succeeded.
async fn flush(c: &reqwest::Client, cairn: &Cairn) -> u16 {
    c.post(cairn.url("/ingester/flush")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Answers that must not change when the data moves between tiers.
async fn answers(c: &reqwest::Client, cairn: &Cairn, t0: i64, steps: i64) -> Vec<String> {
    let base = cairn.url("");
    let end = t0 + (steps - 1) * STEP_MS;
    let mut out = Vec::new();
    for q in [
        "node_cpu_seconds_total{instance=\"host-3\"}",
        "sum by (job) (rate(node_cpu_seconds_total[1m]))",
        "count_over_time(node_cpu_seconds_total[2m])",
    ] {
        let v = query_range(c, &base, q, t0, end, STEP_MS).await.expect("query_range");
        out.push(format!("{q} => {}", v["data"]));
    }
    let total = query(c, &base, &format!("sum(count_over_time(node_cpu_seconds_total[{}s]))", steps * 15), end, None)
        .await
        .expect("query");
    out.push(format!("total => {:?}", vector(&total)));
    let secs = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
    for path in ["/api/v1/series", "/api/v1/label/instance/values", "/api/v1/labels"] {
        let v: serde_json::Value = c
            .get(cairn.url(path))
            .query(&[("match[]", "node_cpu_seconds_total"), ("start", &secs(t0)), ("end", &secs(end))])
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        out.push(format!("{path} => {}", v["data"]));
    }
    out
}

/// Samples in the tier(s) as `sum(count_over_time(...))` at `t`.
async fn total_samples(c: &reqwest::Client, cairn: &Cairn, t: i64) -> f64 {
    let v = query(c, &cairn.url(""), "sum(count_over_time(node_cpu_seconds_total[1h]))", t, None).await.expect("query");
    vector(&v).first().map(|x| x.1).unwrap_or(0.0)
}

/// Ingests 8 minutes of history, cuts it into blocks, then loses the
/// ingester's whole data directory: the answers stay the same.
async fn answers_survive_losing_the_local_disk(dir: &Path, storage: &[String]) {
    let c = client();
    let data = dir.join("data");
    let mut flags: Vec<&str> = BLOCK_FLAGS.to_vec();
    flags.extend(storage.iter().map(String::as_str));
    let mut cairn = Cairn::start(&data, &flags).expect("start cairn");

    let t0 = (now_ms() - 11 * 60_000) / 60_000 * 60_000;
    let steps = 32; // 8 minutes at 15s: eight 1m block periods
    push_ok(&c, &cairn, body(t0, 0..steps)).await;
    push_ok(&c, &cairn, clock(now_ms())).await;
    let from_head = answers(&c, &cairn, t0, steps).await;
    assert!(from_head[3].contains(&format!("{}", SERIES as i64 * steps)), "all samples counted: {}", from_head[3]);

    assert_eq!(flush(&c, &cairn).await, 204, "blocks uploaded; log:\n{}", cairn.log_text());
    let uploaded = metric(&c, &cairn.url(""), "cairn_ingester_blocks_uploaded_total").await.expect("metrics");
    assert_eq!(uploaded, 8.0, "one block per period");
    assert_eq!(answers(&c, &cairn, t0, steps).await, from_head, "answered from blocks as from the head");
    assert!(metric(&c, &cairn.url(""), "cairn_storage_metadata_cache_bytes").await.expect("metrics") > 0.0);

    cairn.kill9().expect("kill");
    std::fs::remove_dir_all(&data).expect("lose the local disk");
    cairn.restart().expect("restart");
    assert_eq!(answers(&c, &cairn, t0, steps).await, from_head, "answered from the long-term tier alone");

    // SQL over the same blocks.
    let sql = "SELECT job, count(*) AS samples, max(value) AS top FROM samples \
               WHERE metric = 'node_cpu_seconds_total' GROUP BY job ORDER BY job";
    let resp = c.post(cairn.url("/api/v1/sql")).form(&[("query", sql)]).send().await.expect("sql");
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().await.expect("json");
    let half = (SERIES / 2) as i64 * steps;
    // The largest value is the odd (edge) or even (node) series with the
    // highest index, at the last step.
    let top = |i: usize| value(i, steps - 1);
    assert_eq!(
        v["data"]["rows"],
        serde_json::json!([["edge", half, top(SERIES - 1)], ["node", half, top(SERIES - 2)]]),
        "{v}"
    );
    let bad = c.post(cairn.url("/api/v1/sql")).body("SELECT * FROM nowhere").send().await.expect("sql");
    assert_eq!(bad.status().as_u16(), 400, "a wrong query is the client's error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_bucket_keeps_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = dir.path().join("bucket");
    let storage = vec![format!("--storage.filesystem.dir={}", bucket.display())];
    answers_survive_losing_the_local_disk(dir.path(), &storage).await;
    read_with_pyarrow(&bucket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_bucket_keeps_the_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(s3) = s3_server(dir.path()) else { return };
    answers_survive_losing_the_local_disk(dir.path(), &s3.cairn_flags("cairn")).await;
    let objects = walk(&dir.path().join("s3/cairn"));
    assert!(objects.iter().any(|p| p.ends_with("data.parquet")), "blocks are in the S3 server: {objects:?}");
}

/// Storage goes away mid-upload; writes keep being acknowledged, the
/// ingester is even killed and restarted meanwhile; once storage is back,
/// every acknowledged sample reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut s3) = s3_server(dir.path()) else { return };
    let c = client();
    let data = dir.path().join("data");
    let mut flags: Vec<String> = BLOCK_FLAGS.iter().map(|s| s.to_string()).collect();
    flags.extend(s3.cairn_flags("cairn"));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cairn = Cairn::start(&data, &flags).expect("start cairn");

    let t0 = (now_ms() - 14 * 60_000) / 60_000 * 60_000;
    push_ok(&c, &cairn, body(t0, 0..20)).await;
    s3.stop().expect("storage outage");
    push_ok(&c, &cairn, clock(now_ms())).await;
    assert_ne!(flush(&c, &cairn).await, 204, "uploads fail while storage is down");
    // Writes are still acknowledged, also across a crash.
    push_ok(&c, &cairn, body(t0, 20..30)).await;
    cairn.kill9().expect("kill");
    cairn.restart().expect("restart during the outage");
    push_ok(&c, &cairn, body(t0, 30..40)).await;
    push_ok(&c, &cairn, clock(now_ms())).await;

    s3.resume().expect("storage back");
    let deadline = Instant::now() + Duration::from_secs(90);
    while flush(&c, &cairn).await != 204 {
        assert!(Instant::now() < deadline, "uploads did not resume; log:\n{}", cairn.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let acknowledged = (SERIES * 40) as f64;
    assert_eq!(total_samples(&c, &cairn, now_ms()).await, acknowledged, "every acknowledged sample is there");
    assert_eq!(metric(&c, &cairn.url(""), "cairn_ingester_blocks_pending_upload").await.expect("metrics"), 0.0);

    // All of it is in the bucket: lose the local disk and count again.
    cairn.kill9().expect("kill");
    std::fs::remove_dir_all(&data).expect("lose the local disk");
    cairn.restart().expect("restart");
    assert_eq!(total_samples(&c, &cairn, now_ms()).await, acknowledged, "and all of it is in object storage");
}

/// Object storage stopped, then frozen: queries still answer from the
/// heads within the query timeout, with a warning that blocks could not be
/// read; when storage is back, answers are whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_answer_from_the_heads_while_storage_is_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(mut s3) = s3_server(dir.path()) else { return };
    let c = client();
    let mut flags: Vec<String> = BLOCK_FLAGS.iter().map(|s| s.to_string()).collect();
    flags.extend(s3.cairn_flags("cairn"));
    flags.extend(["--query.timeout=10s".to_owned(), "--storage.bucket-index-refresh-interval=1s".to_owned()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cairn = Cairn::start(&dir.path().join("data"), &flags).expect("start cairn");
    // Old samples in blocks, recent ones in the head.
    let t0 = (now_ms() - 14 * 60_000) / 60_000 * 60_000;
    push_ok(&c, &cairn, body(t0, 0..20)).await;
    push_ok(&c, &cairn, clock(now_ms())).await;
    assert_eq!(flush(&c, &cairn).await, 204);
    let recent = now_ms() - 5_000;
    push_ok(&c, &cairn, write_v1(vec![series(&[("__name__", "fresh")], &[(recent, 1.0)])])).await;
    let whole = total_samples(&c, &cairn, now_ms()).await;
    assert_eq!(whole, (SERIES * 20) as f64, "from the blocks");

    // What a query over both tiers answers with storage down: the head's
    // data, a warning, in time.
    let ask = |what: &'static str| {
        let (c, base) = (c.clone(), cairn.url(""));
        async move {
            let started = Instant::now();
            let q = "{__name__=~\"fresh|node_cpu_seconds_total\"}";
            let now = now_ms() / 1000;
            let v: serde_json::Value = c
                .get(format!("{base}/api/v1/query_range"))
                .query(&[("query", q), ("start", &(now - 1200).to_string()), ("end", &now.to_string()), ("step", "15")])
                .send()
                .await
                .expect("answer")
                .json()
                .await
                .expect("json");
            let took = started.elapsed();
            assert_eq!(v["status"], "success", "{what}: {v}");
            let names: Vec<String> = v["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| s["metric"]["__name__"].as_str().unwrap_or("").to_owned())
                .collect();
            assert_eq!(names, vec!["fresh".to_owned()], "{what}: the head answers: {v}");
            assert!(took < Duration::from_secs(10), "{what}: within --query.timeout: {took:?}");
            let warnings = v["warnings"].to_string();
            (warnings, took)
        }
    };
    s3.stop().expect("storage down");
    let (warnings, _) = ask("stopped").await;
    assert!(warnings.contains("blocks in object storage could not be read"), "stopped: {warnings}");
    // Series and label lookups answer too.
    let labels: serde_json::Value =
        c.get(cairn.url("/api/v1/label/__name__/values")).send().await.expect("labels").json().await.expect("json");
    assert_eq!(labels["status"], "success", "{labels}");
    assert!(labels["data"].to_string().contains("fresh"), "{labels}");

    s3.resume().expect("storage back");
    // Whole answers again once the back-off after the outage ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_samples(&c, &cairn, now_ms()).await != whole {
        assert!(Instant::now() < deadline, "answers stayed partial after storage came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A client's own short timeout says nothing about storage: it does not
    // turn storage off for the queries after it.
    for _ in 0..3 {
        let short = c
            .get(cairn.url("/api/v1/query"))
            .query(&[("query", "sum(count_over_time(node_cpu_seconds_total[1h]))"), ("timeout", "1ms")])
            .send()
            .await
            .expect("answer");
        // Partial (the blocks ran out of time), timed out, or whole.
        assert!([200, 503].contains(&short.status().as_u16()), "{short:?}");
    }
    assert_eq!(total_samples(&c, &cairn, now_ms()).await, whole, "whole answers after short timeouts");
    s3.freeze().expect("storage hangs");
    let (warnings, took) = ask("frozen").await;
    assert!(warnings.contains("could not be read"), "frozen: {warnings}");
    println!("a query with storage frozen answered in {took:?}");
    let (_, took) = ask("frozen, again").await;
    assert!(took < Duration::from_secs(2), "later queries skip storage at once: {took:?}");
    s3.thaw().expect("storage back");

    // Back: whole answers without warnings, once the back-off ends.
    let deadline = Instant::now() + Duration::from_secs(60);
    while total_samples(&c, &cairn, now_ms()).await != whole {
        assert!(Instant::now() < deadline, "answers stayed partial after storage came back");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Python with pyarrow: the test command installs it in a virtualenv.
fn python_with_pyarrow() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var("CAIRN_PYTHON").ok().map(Into::into),
        std::env::var("HOME").ok().map(|h| Path::new(&h).join(".cache/cairn/venv/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p: &std::path::PathBuf| {
        std::process::Command::new(p).args(["-c", "import pyarrow"]).output().is_ok_and(|o| o.status.success())
    })
}

/// Reads the bucket's blocks with pyarrow, following only the schema in
/// docs/design/block-format.md, and compares with what was pushed.
fn read_with_pyarrow(bucket: &Path) {
    let Some(python) = python_with_pyarrow() else {
        assert!(!peers_required(), "pyarrow is not installed but CAIRN_REQUIRE_PEERS=1");
        eprintln!("SKIPPED: no python with pyarrow (set CAIRN_PYTHON, or run scripts/test which installs it)");
        return;
    };
    let script = r#"
import glob, json, sys
import pyarrow.parquet as pq
rows = {}
for f in sorted(glob.glob(sys.argv[1] + "/**/data.parquet", recursive=True)):
    for r in pq.read_table(f).to_pylist():
        labels = {k[2:]: v for k, v in r.items() if k.startswith("l_") and v is not None}
        if r["values_float"] is not None:
            values = r["values_float"]
        else:
            values = [n / 10 ** r["value_scale"] for n in r["values_int"]]
        key = json.dumps(labels, sort_keys=True)
        rows.setdefault(key, []).extend(zip(r["timestamps"], values))
for key in sorted(rows):
    print(key + "\t" + json.dumps(sorted(rows[key])))
"#;
    let out = std::process::Command::new(&python).args(["-c", script]).arg(bucket).output().expect("run python");
    assert!(out.status.success(), "pyarrow failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf8");
    let mut seen = 0;
    for line in text.lines() {
        let (key, samples) = line.split_once('\t').expect("tab");
        let labels: serde_json::Value = serde_json::from_str(key).expect("labels");
        if labels["__name__"] != "node_cpu_seconds_total" {
            continue;
        }
        let i: usize =
            labels["instance"].as_str().and_then(|s| s.strip_prefix("host-")).expect("instance").parse().expect("i");
        let samples: Vec<(i64, f64)> = serde_json::from_str(samples).expect("samples");
        assert_eq!(samples.len(), 32, "{key}");
        let t0 = samples[0].0;
        for (k, (t, v)) in samples.iter().enumerate() {
            assert_eq!(*t, t0 + k as i64 * STEP_MS, "{key}");
            assert_eq!(v.to_bits(), value(i, k as i64).to_bits(), "{key} at {t}: {v} != {}", value(i, k as i64));
        }
        seen += 1;
    }
    assert_eq!(seen, SERIES, "pyarrow sees every series:\n{text}");
}

/// Blocks past `--storage.retention` are marked, then deleted; newer ones
/// and the head keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_expired_blocks_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bucket = dir.path().join("bucket");
    let c = client();
    let cairn = Cairn::start(
        &dir.path().join("data"),
        &[
            "--ingester.block-duration=1m",
            "--storage.retention=10m",
            "--storage.deletion-delay=1s",
            "--storage.bucket-index-refresh-interval=1s",
            &format!("--storage.filesystem.dir={}", bucket.display()),
        ],
    )
    .expect("start cairn");
    // Two periods from 30 minutes ago expire; six periods from 8 minutes
    // ago do not.
    let t0 = (now_ms() - 30 * 60_000) / 60_000 * 60_000;
    push_ok(&c, &cairn, body(t0, 0..8)).await;
    push_ok(&c, &cairn, body(t0, 88..112)).await;
    push_ok(&c, &cairn, clock(now_ms())).await;
    assert_eq!(flush(&c, &cairn).await, 204);
    let blocks = || walk(&bucket).into_iter().filter(|p| p.ends_with("data.parquet")).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while blocks() != 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(blocks(), 6, "only the two expired blocks are deleted; log:\n{}", cairn.log_text());
    // Queries stop reading the deleted blocks once the bucket index that
    // no longer lists them is read.
    let expired_end = t0 + 2 * 60_000 - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let old = query(&c, &cairn.url(""), "count(node_cpu_seconds_total)", expired_end, None).await.expect("query");
        // The lookback reaches back 5 minutes: still nothing, since older blocks are gone.
        if vector(&old).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "expired data is gone: {old}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = total_samples(&c, &cairn, now_ms()).await;
    assert_eq!(kept, (SERIES * 24) as f64, "the six newer periods are kept");
}
