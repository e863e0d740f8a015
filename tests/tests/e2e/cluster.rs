//! Cluster mode: ingesters in a Raft ring, a distributor writing every
//! series to three of them, a querier reading them all; processes killed
//! with SIGKILL, restarted, added and drained while remote writes go on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_e2e::{Cairn, client, now_ms, push, query, series, vector, write_v1};
use parking_lot::Mutex;

const SERIES: usize = 20;

/// Ring settings short enough for a test: a member silent for 10s is
/// unhealthy (a leader election, which pauses recorded heartbeats, takes a
/// few seconds on a loaded machine).
const RING_FLAGS: [&str; 2] = ["--ring.heartbeat-period=500ms", "--ring.heartbeat-timeout=10s"];

struct Cluster {
    root: PathBuf,
    bucket: PathBuf,
    ingesters: Vec<Cairn>,
    distributor: Cairn,
    querier: Cairn,
}

impl Cluster {
    /// `n` ingesters (the first starts the ring), a distributor and a querier.
    fn start(root: &Path, n: usize) -> Self {
        let bucket = root.join("bucket");
        let mut ingesters: Vec<Cairn> = (0..n).map(|i| Self::ingester(root, &bucket, i)).collect();
        let join: Vec<String> = ingesters.iter().map(Cairn::grpc_addr).collect();
        for ing in &mut ingesters {
            ing.extra.push(format!("--ring.join={}", join.join(",")));
        }
        // The first starts the ring once every other seed answers.
        for ing in &mut ingesters {
            ing.spawn_background().expect("start ingester");
        }
        for ing in &mut ingesters {
            ing.wait_until_ready().expect("ingester ready");
        }
        let seeds = format!("--ring.join={}", join.join(","));
        let mut distributor = Cairn::prepare("distributor", &root.join("distributor"), &[&seeds]);
        distributor.extra.extend(RING_FLAGS.iter().map(|s| s.to_string()));
        distributor.spawn().expect("start distributor");
        let bucket_flag = format!("--storage.filesystem.dir={}", bucket.display());
        let mut querier = Cairn::prepare("querier", &root.join("querier"), &[&seeds, &bucket_flag]);
        querier.extra.extend(RING_FLAGS.iter().map(|s| s.to_string()));
        querier.spawn().expect("start querier");
        Cluster { root: root.to_owned(), bucket, ingesters, distributor, querier }
    }

    /// Ingester `i`, prepared but not started (no `--ring.join` yet).
    fn ingester(root: &Path, bucket: &Path, i: usize) -> Cairn {
        let mut c = Cairn::prepare("ingester", &root.join(format!("ingester-{i}")), &[]);
        c.extra = vec![
            format!("--ring.instance-id=ingester-{i}"),
            format!("--ring.advertise-address={}", c.grpc_addr()),
            format!("--storage.filesystem.dir={}", bucket.display()),
        ];
        c.extra.extend(RING_FLAGS.iter().map(|s| s.to_string()));
        c
    }

    /// Adds ingester `i`, joining through every current ingester.
    fn add_ingester(&mut self, i: usize) {
        let mut c = Self::ingester(&self.root, &self.bucket, i);
        let join: Vec<String> = self.ingesters.iter().map(Cairn::grpc_addr).collect();
        c.extra.push(format!("--ring.join={}", join.join(",")));
        c.spawn().expect("start added ingester");
        self.ingesters.push(c);
    }
}

/// Remote writes in rounds: each round one sample per series at a new
/// timestamp, resent (as Prometheus does) until the distributor
/// acknowledges it.
#[derive(Default)]
struct Log {
    /// Rounds acknowledged: (timestamp, value).
    acked: Vec<(i64, f64)>,
    /// When a request was refused, and with what.
    failures: Vec<(Instant, u16, String)>,
}

struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(url: String) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let (s, l) = (stop.clone(), log.clone());
        let task = tokio::spawn(async move {
            let c = client();
            let start = now_ms();
            let mut round = 0i64;
            while !s.load(Ordering::SeqCst) {
                let t = start + round * 10;
                let v = round as f64;
                let batch: Vec<_> = (0..SERIES)
                    .map(|k| series(&[("__name__", "cluster_test"), ("series", &k.to_string())], &[(t, v)]))
                    .collect();
                let body = write_v1(batch);
                loop {
                    match push(&c, &url, body.clone(), None).await {
                        Ok((204, _)) => break,
                        Ok((code, text)) => l.lock().failures.push((Instant::now(), code, text)),
                        Err(e) => l.lock().failures.push((Instant::now(), 0, e.to_string())),
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                l.lock().acked.push((t, v));
                round += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Writer { stop, log, task }
    }

    fn acked(&self) -> usize {
        self.log.lock().acked.len()
    }

    /// Waits until `n` more rounds are acknowledged.
    async fn wait_rounds(&self, n: usize) {
        let target = self.acked() + n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acked() < target {
            assert!(
                Instant::now() < deadline,
                "writes stalled: {} failures, last: {:?}",
                self.failures(),
                self.last_failure()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn failures(&self) -> usize {
        self.log.lock().failures.len()
    }

    fn last_failure(&self) -> Option<(u16, String)> {
        self.log.lock().failures.last().map(|(_, c, t)| (*c, t.clone()))
    }

    async fn finish(self) -> Log {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        Arc::try_unwrap(self.log).map(Mutex::into_inner).unwrap_or_default()
    }
}

/// Every acknowledged sample of every series is answered exactly once.
async fn assert_all_acked_samples_answered(querier: &Cairn, acked: &[(i64, f64)]) {
    let c = client();
    let last = acked.last().map_or(now_ms(), |a| a.0) + 1;
    let want = acked.len() as f64;
    let sum: f64 = acked.iter().map(|a| a.1).sum();
    for (q, expect) in [("count_over_time(cluster_test[1h])", want), ("sum_over_time(cluster_test[1h])", sum)] {
        let got = vector(&query(&c, &querier.url(""), q, last, None).await.expect("query"));
        assert_eq!(got.len(), SERIES, "{q}: every series answered: {got:?}");
        for (labels, v) in got {
            assert_eq!(v, expect, "{q} for {labels}: acknowledged {want} samples");
        }
    }
}

/// Series, label names and label values fan out to the ingesters too.
async fn assert_series_and_label_apis(querier: &Cairn) {
    let c = client();
    let get = |path: String| {
        let c = c.clone();
        async move {
            let v: serde_json::Value = c.get(path).send().await.expect("get").json().await.expect("json");
            assert_eq!(v["status"], "success", "{v}");
            v["data"].as_array().cloned().unwrap_or_default()
        }
    };
    let series = get(querier.url("/api/v1/series?match[]=cluster_test")).await;
    assert_eq!(series.len(), SERIES, "{series:?}");
    let names = get(querier.url("/api/v1/labels")).await;
    assert!(names.iter().any(|n| n == "series"), "{names:?}");
    let values = get(querier.url("/api/v1/label/series/values")).await;
    assert_eq!(values.len(), SERIES, "{values:?}");
}

async fn ring_json(c: &reqwest::Client, base: &str) -> anyhow::Result<serde_json::Value> {
    Ok(c.get(format!("{base}/ring")).header("Accept", "application/json").send().await?.json().await?)
}

/// The ring's members as (id, state, tokens), and the leader.
fn ring_summary(v: &serde_json::Value) -> (BTreeMap<String, (String, u64)>, String) {
    let members = v["members"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let id = m["id"].as_str().unwrap_or_default().to_owned();
                    (id, (m["state"].as_str().unwrap_or_default().to_owned(), m["tokens"].as_u64().unwrap_or(0)))
                })
                .collect()
        })
        .unwrap_or_default();
    (members, v["leader"].as_str().unwrap_or_default().to_owned())
}

/// Waits until every listed process reports the same ring, satisfying `ok`.
async fn wait_ring(procs: &[&Cairn], what: &str, ok: impl Fn(&BTreeMap<String, (String, u64)>, &str) -> bool) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    loop {
        last.clear();
        for p in procs {
            last.push(ring_json(&c, &p.url("")).await.map(|v| ring_summary(&v)).ok());
        }
        let first = last[0].clone();
        if let Some((members, leader)) = &first
            && last.iter().all(|r| r.as_ref() == first.as_ref())
            && !leader.is_empty()
            && ok(members, leader)
        {
            return;
        }
        assert!(Instant::now() < deadline, "ring never became {what}: {last:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every listed process sees member `id` as unhealthy (its
/// heartbeat older than the timeout).
async fn wait_unhealthy(procs: &[&Cairn], id: &str) {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for p in procs {
            let v = ring_json(&c, &p.url("")).await.ok();
            let healthy = v
                .as_ref()
                .and_then(|v| v["members"].as_array())
                .and_then(|ms| ms.iter().find(|m| m["id"] == id))
                .and_then(|m| m["healthy"].as_bool());
            all &= healthy == Some(false);
        }
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never turned unhealthy");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn states(members: &BTreeMap<String, (String, u64)>) -> Vec<(&str, &str)> {
    members.iter().map(|(id, (state, _))| (id.as_str(), state.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_and_reads_survive_kill9_restart_and_leader_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cl = Cluster::start(dir.path(), 3);
    let c = client();
    wait_ring(&[&cl.ingesters[0], &cl.ingesters[1], &cl.ingesters[2], &cl.querier], "three ACTIVE members", |m, _| {
        states(m) == vec![("ingester-0", "ACTIVE"), ("ingester-1", "ACTIVE"), ("ingester-2", "ACTIVE")]
            && m.values().all(|(_, tokens)| *tokens == 128)
    })
    .await;

    // A backfill 20 hours old is answered as soon as it is acknowledged:
    // queriers ask the ingesters for any range their heads hold.
    let old = now_ms() - 20 * 3_600_000;
    let body = write_v1(vec![series(&[("__name__", "cluster_backfill")], &[(old, 5.0)])]);
    let (code, text) = push(&c, &cl.distributor.url("/api/v1/push"), body, None).await.expect("push");
    assert_eq!(code, 204, "{text}");
    let v = query(&c, &cl.querier.url(""), "cluster_backfill", old, None).await.expect("query");
    assert_eq!(vector(&v), vec![(r#"{"__name__":"cluster_backfill"}"#.to_owned(), 5.0)], "backfill: {v}");

    let writer = Writer::start(cl.distributor.url("/api/v1/push"));
    writer.wait_rounds(20).await;
    assert_eq!(writer.failures(), 0, "no failures with every ingester up: {:?}", writer.last_failure());

    // SIGKILL one ingester (not the leader) in the middle of the writes.
    let leader = ring_summary(&ring_json(&c, &cl.querier.url("")).await.expect("ring")).1;
    let victim = (0..3).find(|&i| format!("ingester-{i}") != leader).expect("a follower");
    cl.ingesters[victim].kill9().expect("kill -9");
    writer.wait_rounds(30).await;
    // Reads go on with one replica down.
    let up = vector(&query(&c, &cl.querier.url(""), "count(cluster_test)", now_ms(), None).await.expect("query"));
    assert_eq!(up, vec![("{}".to_owned(), SERIES as f64)]);
    // Past the heartbeat timeout the dead member is passed over.
    wait_unhealthy(&[&cl.distributor, &cl.querier], &format!("ingester-{victim}")).await;
    writer.wait_rounds(20).await;
    let snapshot: Vec<(i64, f64)> = writer.log.lock().acked.clone();
    assert_all_acked_samples_answered(&cl.querier, &snapshot).await;
    assert_series_and_label_apis(&cl.querier).await;

    // Restart it: it replays its WAL and rejoins with the same tokens.
    cl.ingesters[victim].spawn().expect("restart");
    wait_ring(&[&cl.ingesters[0], &cl.ingesters[1], &cl.ingesters[2]], "whole again", |m, _| {
        m.values().all(|(s, t)| s == "ACTIVE" && *t == 128) && m.len() == 3
    })
    .await;
    writer.wait_rounds(20).await;

    // SIGKILL the leader: another is elected, and a fourth ingester joins.
    let leader = ring_summary(&ring_json(&c, &cl.querier.url("")).await.expect("ring")).1;
    let li: usize = leader.trim_start_matches("ingester-").parse().expect("leader id");
    cl.ingesters[li].kill9().expect("kill -9 leader");
    let live: Vec<usize> = (0..3).filter(|&i| i != li).collect();
    wait_ring(&[&cl.ingesters[live[0]], &cl.ingesters[live[1]]], "led by a new leader", |_, l| l != leader).await;
    writer.wait_rounds(20).await;
    cl.add_ingester(3);
    let procs = [&cl.ingesters[live[0]], &cl.ingesters[live[1]], &cl.ingesters[3], &cl.querier];
    wait_ring(&procs, "joined by ingester-3", |m, l| {
        m.get("ingester-3").is_some_and(|(s, _)| s == "ACTIVE") && m.len() == 4 && l != leader
    })
    .await;
    writer.wait_rounds(20).await;

    let log = writer.finish().await;
    assert_all_acked_samples_answered(&cl.querier, &log.acked).await;

    // With one live ingester of four no write can reach its quorum and no
    // read can be complete: both answer 503, which Prometheus retries.
    cl.ingesters[live[0]].kill9().expect("kill -9");
    cl.ingesters[live[1]].kill9().expect("kill -9");
    let body = write_v1(vec![series(&[("__name__", "cluster_test"), ("series", "0")], &[(now_ms(), 1.0)])]);
    let (code, text) = push(&c, &cl.distributor.url("/api/v1/push"), body, None).await.expect("push");
    assert_eq!(code, 503, "write without quorum: {text}");
    let resp =
        c.get(cl.querier.url("/api/v1/query")).query(&[("query", "count(cluster_test)")]).send().await.expect("query");
    assert_eq!(resp.status(), 503, "read without enough replicas: {:?}", resp.text().await);
    for p in cl.ingesters.iter().chain([&cl.distributor, &cl.querier]) {
        assert!(!p.log_text().contains("panicked"), "{} panicked:\n{}", p.role, p.log_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_out_and_draining_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cl = Cluster::start(dir.path(), 3);
    let c = client();
    wait_ring(&[&cl.distributor, &cl.querier], "three ACTIVE members", |m, _| {
        m.len() == 3 && m.values().all(|(s, _)| s == "ACTIVE")
    })
    .await;
    let writer = Writer::start(cl.distributor.url("/api/v1/push"));
    writer.wait_rounds(20).await;

    // 3 -> 5 under load.
    let before = Instant::now();
    cl.add_ingester(3);
    cl.add_ingester(4);
    wait_ring(&[&cl.distributor, &cl.querier, &cl.ingesters[4]], "five ACTIVE members", |m, _| {
        m.len() == 5 && m.values().all(|(s, _)| s == "ACTIVE")
    })
    .await;
    writer.wait_rounds(40).await;
    {
        let log = writer.log.lock();
        let during: Vec<_> = log.failures.iter().filter(|f| f.0 >= before).collect();
        assert!(during.is_empty(), "no write errors while scaling out: {during:?}");
    }
    // Reads of older data still come from the first three.
    let snapshot: Vec<(i64, f64)> = writer.log.lock().acked.clone();
    assert_all_acked_samples_answered(&cl.querier, &snapshot).await;

    // SIGTERM one ingester: LEAVING, its head goes to object storage, LEFT.
    let status = cl.ingesters[1].terminate().expect("terminate");
    assert!(status.success(), "clean exit: {status}\n{}", cl.ingesters[1].log_text());
    let log1 = cl.ingesters[1].log_text();
    assert!(log1.contains("head flushed to object storage"), "flush on shutdown:\n{log1}");
    wait_ring(&[&cl.querier, &cl.ingesters[0]], "without ingester-1", |m, _| {
        m.get("ingester-1").is_some_and(|(s, _)| s == "LEFT")
    })
    .await;
    // Its blocks hold every sample it had; they count once in answers.
    let samples: u64 = std::fs::read_dir(cl.bucket.join("anonymous/blocks"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read(e.path().join("meta.json")).ok())
                .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter(|m| m["source"] == "ingester-1")
                .map(|m| m["samples"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0);
    assert!(samples >= 20 * SERIES as u64, "the leaving ingester uploaded its head: {samples} samples");
    writer.wait_rounds(20).await;

    // Forget the departed member through the ring page.
    let resp = c
        .post(cl.querier.url("/ring"))
        .header("Accept", "application/json")
        .form(&[("forget", "ingester-1")])
        .send()
        .await
        .expect("forget");
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    wait_ring(&[&cl.querier, &cl.ingesters[0]], "with ingester-1 forgotten", |m, _| {
        !m.contains_key("ingester-1") && m.len() == 4
    })
    .await;
    let html = c.get(cl.querier.url("/ring")).send().await.expect("page").text().await.expect("text");
    assert!(html.contains("<table") && html.contains("ingester-0") && html.contains("ACTIVE"), "{html}");

    // An ingester loses its disk (the one that started the ring, a voter)
    // and comes back under the same id: it rejoins with new tokens; its
    // data is still answered from the other replicas.
    cl.ingesters[0].kill9().expect("kill -9");
    std::fs::remove_dir_all(&cl.ingesters[0].data_dir).expect("lose the disk");
    writer.wait_rounds(10).await;
    cl.ingesters[0].spawn().expect("restart with an empty disk");
    wait_ring(&[&cl.querier, &cl.ingesters[0], &cl.ingesters[2]], "whole again after a lost disk", |m, _| {
        m.len() == 4 && m.values().all(|(s, _)| s == "ACTIVE")
    })
    .await;
    writer.wait_rounds(20).await;
    assert!(
        cl.ingesters.iter().any(|i| i.log_text().contains("rejoins without its Raft state")),
        "the leader demoted the voter that lost its Raft log"
    );

    let log = writer.finish().await;
    assert_all_acked_samples_answered(&cl.querier, &log.acked).await;
}

/// Three ingesters started on one host as a new user would, without
/// `--ring.instance-id` or `--ring.advertise-address`: each takes its own
/// id (host name and gRPC port), all three join, and a restart keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingesters_on_one_host_take_distinct_default_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ingesters: Vec<Cairn> = (0..3)
        .map(|i| {
            let mut c = Cairn::prepare("ingester", &dir.path().join(format!("ingester-{i}")), &[]);
            c.extra.extend(RING_FLAGS.iter().map(|s| s.to_string()));
            c
        })
        .collect();
    let join: Vec<String> = ingesters.iter().map(Cairn::grpc_addr).collect();
    for ing in &mut ingesters {
        ing.extra.push(format!("--ring.join={}", join.join(",")));
        ing.spawn_background().expect("start ingester");
    }
    for ing in &mut ingesters {
        ing.wait_until_ready().expect("every ingester joins");
    }
    let refs: Vec<&Cairn> = ingesters.iter().collect();
    wait_ring(&refs, "three ACTIVE members", |m, _| m.len() == 3 && m.values().all(|(s, _)| s == "ACTIVE")).await;
    let c = client();
    let (members, _) = ring_summary(&ring_json(&c, &ingesters[0].url("")).await.expect("ring"));
    for ing in &ingesters {
        let port = ing.grpc_addr().rsplit(':').next().unwrap_or_default().to_owned();
        assert!(members.keys().any(|id| id.ends_with(&format!("-{port}"))), "an id per gRPC port: {members:?}");
    }
    // The id is recorded: a restart comes back as the same member.
    ingesters[2].kill9().expect("kill -9");
    ingesters[2].spawn().expect("restart");
    let refs: Vec<&Cairn> = ingesters.iter().collect();
    wait_ring(&refs, "the same three members", |m, _| m.len() == 3 && m.values().all(|(s, _)| s == "ACTIVE")).await;
}
