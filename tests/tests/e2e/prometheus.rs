//! Real Prometheus scrapes itself every second and remote-writes into
//! Cairn; the same instant and range queries, answered by both for times
//! both have, must match series for series. Cairn cuts 20s blocks and asks
//! its head only for the last 40s, so queries over the last minute span
//! both tiers.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cairn_e2e::{Cairn, client, free_port, metric, now_ms, peers_required, query, query_range, vector, which};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn close(a: f64, b: f64) -> bool {
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    (a - b).abs() / a.abs().max(b.abs()) < 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_and_cairn_agree() {
    let Some(prom_bin) = which("prometheus") else {
        assert!(!peers_required(), "prometheus is not installed but CAIRN_REQUIRE_PEERS=1");
        eprintln!("SKIPPED: prometheus not found on PATH (install Debian's `prometheus` package)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let cairn = Cairn::start(&dir.path().join("cairn"), &["--ingester.block-duration=20s"]).expect("start cairn");
    let port = free_port();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: {}\n    queue_config:\n      batch_send_deadline: 1s\n    metadata_config:\n      send_interval: 2s\n",
            cairn.url("/api/v1/push")
        ),
    )
    .expect("write config");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let _prom = Prometheus(
        Command::new(prom_bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("prom-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn prometheus"),
    );
    let c = client();
    let prom = format!("http://127.0.0.1:{port}");

    // Wait for the first sample to reach Cairn, then let ~72s accumulate.
    let mut started = None;
    for _ in 0..600 {
        if let Ok(v) = query(&c, &cairn.url(""), "up", now_ms(), None).await
            && !vector(&v).is_empty()
        {
            started = Some(now_ms());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.is_some(),
        "no data reached cairn; prometheus log:\n{}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(72)).await;
    // Older periods are in blocks by now.
    for _ in 0..300 {
        if metric(&c, &cairn.url(""), "cairn_ingester_blocks_uploaded_total").await.expect("metrics") >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric(&c, &cairn.url(""), "cairn_ingester_blocks_uploaded_total").await.expect("metrics") >= 1.0,
        "no block uploaded; log:\n{}",
        cairn.log_text()
    );

    // A time both have, whose millisecond fraction sits half a second away
    // from the scrape times, so that no range boundary lands on a sample
    // (Prometheus 2 closes range windows on the left, Prometheus 3 and
    // Cairn do not).
    let ts = query(&c, &prom, "timestamp(up)", now_ms(), None).await.expect("timestamp");
    let scrape_ms = (vector(&ts)[0].1 * 1000.0).round() as i64 % 1000;
    let t = ((now_ms() - 8000) / 1000) * 1000 + (scrape_ms + 500) % 1000;

    let queries = [
        "up",
        "prometheus_tsdb_head_series",
        "prometheus_build_info",
        "prometheus_http_requests_total{handler=\"/metrics\"}",
        "rate(prometheus_http_requests_total{handler=\"/metrics\"}[20s])",
        "sum by (job) (rate(prometheus_tsdb_head_samples_appended_total[20s]))",
        "increase(prometheus_tsdb_head_samples_appended_total[20s])",
        "prometheus_tsdb_head_series - prometheus_tsdb_head_series offset 10s",
        "count by (__name__) ({__name__=~\"prometheus_tsdb_head_.*\"})",
        "max_over_time(prometheus_tsdb_head_series[15s])",
    ];
    for q in queries {
        let want = vector(&query(&c, &prom, q, t, None).await.expect("prometheus query"));
        let got = vector(&query(&c, &cairn.url(""), q, t, None).await.expect("cairn query"));
        assert!(!want.is_empty(), "{q}: prometheus has no result at {t}");
        let wl: Vec<&String> = want.iter().map(|x| &x.0).collect();
        let gl: Vec<&String> = got.iter().map(|x| &x.0).collect();
        assert_eq!(gl, wl, "{q}: series differ");
        for (w, g) in want.iter().zip(&got) {
            assert!(close(w.1, g.1), "{q}: {} prometheus {} cairn {}", w.0, w.1, g.1);
        }
    }
    // Raw samples of the last minute, from both tiers, are the same.
    let raw = "prometheus_http_requests_total{handler=\"/metrics\"}[60s]";
    let want = matrix(&query(&c, &prom, raw, t, None).await.expect("prometheus raw"));
    let got = matrix(&query(&c, &cairn.url(""), raw, t, None).await.expect("cairn raw"));
    assert_eq!(got, want, "raw samples differ");

    // Range queries over the last 55s: the older part from blocks, the
    // newer from the head.
    for q in [
        "prometheus_tsdb_head_series",
        "rate(prometheus_http_requests_total{handler=\"/metrics\"}[5s])",
        "sum by (job) (increase(prometheus_tsdb_head_samples_appended_total[5s]))",
    ] {
        let want = query_range(&c, &prom, q, t - 55_000, t, 1_000).await.expect("prometheus query_range");
        let got = query_range(&c, &cairn.url(""), q, t - 55_000, t, 1_000).await.expect("cairn query_range");
        let (want, got) = (matrix(&want), matrix(&got));
        assert!(!want.is_empty(), "{q}: prometheus has no result");
        assert_eq!(got.len(), want.len(), "{q}: series differ\nprometheus {want:?}\ncairn {got:?}");
        for ((wl, wv), (gl, gv)) in want.iter().zip(&got) {
            assert_eq!(gl, wl, "{q}");
            assert_eq!(gv.len(), wv.len(), "{q} {wl}: points differ\nprometheus {wv:?}\ncairn {gv:?}");
            for (w, g) in wv.iter().zip(gv) {
                assert!(w.0 == g.0 && close(w.1, g.1), "{q} {wl}: prometheus {w:?} cairn {g:?}");
            }
        }
    }

    // Metadata sent by Prometheus is served back.
    let md: serde_json::Value = c
        .get(cairn.url("/api/v1/metadata?metric=prometheus_tsdb_head_series"))
        .send()
        .await
        .expect("metadata")
        .json()
        .await
        .expect("json");
    assert_eq!(md["data"]["prometheus_tsdb_head_series"][0]["type"], "gauge", "{md}");
}

/// A matrix response as (labels JSON, [(t, value)]) sorted by labels.
fn matrix(v: &serde_json::Value) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = v["data"]["result"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let points = s["values"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .map(|p| {
                                    (
                                        p[0].as_f64().unwrap_or(f64::NAN),
                                        p[1].as_str().unwrap_or("NaN").parse().unwrap_or(f64::NAN),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    (s["metric"].to_string(), points)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
