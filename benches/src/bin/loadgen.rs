//! Remote write load generator: sends a node_exporter-like workload to any
//! remote write endpoint (Cairn, Prometheus, VictoriaMetrics) and reports
//! acknowledged samples per second, latency, and the server's CPU and
//! memory when given its pid.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_benches::proc_stats;
use cairn_benches::workload::{Workload, node_exporter_shapes, v1_to_v2};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Remote write URL.
    #[arg(long)]
    url: String,
    /// node_exporter targets (about 1,200 series each).
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// Scrape rounds to send (samples per series).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Milliseconds between rounds.
    #[arg(long, default_value_t = 15_000)]
    interval_ms: i64,
    /// Parallel senders; each owns a share of the targets, like Prometheus's shards.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Samples per request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Remote write protocol: 1 or 2.
    #[arg(long, default_value_t = 1)]
    protocol: u8,
    #[arg(long)]
    tenant: Option<String>,
    /// Pid of the server, to report its CPU time and memory.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Timestamp of the first round in ms (default: rounds × interval ago).
    #[arg(long)]
    start_ms: Option<i64>,
    /// Name in the JSON summary.
    #[arg(long, default_value = "server")]
    name: String,
}

#[derive(Default)]
struct Stats {
    acked: usize,
    rejected: usize,
    failed_requests: usize,
    first_error: Option<String>,
    latencies: Vec<Duration>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let now = cairn_common::time::now_ms();
    let w = Arc::new(Workload {
        shapes: node_exporter_shapes(),
        targets: a.targets,
        rounds: a.rounds,
        interval_ms: a.interval_ms,
        start_ms: a.start_ms.unwrap_or(now - a.rounds as i64 * a.interval_ms),
        seed: a.seed,
    });
    eprintln!("loadgen: generating {} series x {} rounds = {} samples", w.series(), w.rounds, w.samples());
    let mut shards = Vec::new();
    let mut gens = Vec::new();
    for s in 0..a.concurrency {
        let w = w.clone();
        let (batch, protocol, conc) = (a.batch, a.protocol, a.concurrency);
        gens.push(std::thread::spawn(move || {
            let targets: Vec<usize> = (s..w.targets).step_by(conc).collect();
            let reqs = w.requests_v1(&targets, batch);
            if protocol == 2 { reqs.into_iter().map(|(b, n)| (v1_to_v2(&b), n)).collect() } else { reqs }
        }));
    }
    for g in gens {
        shards.push(g.join().map_err(|_| anyhow::anyhow!("generator thread failed"))?);
    }
    let bytes: usize = shards.iter().flatten().map(|r| r.0.len()).sum();
    let requests: usize = shards.iter().map(Vec::len).sum();
    eprintln!("loadgen: {requests} requests, {:.1} MB compressed", bytes as f64 / 1e6);

    let client = reqwest::Client::builder().pool_max_idle_per_host(a.concurrency * 2).build()?;
    let cpu0 = a.pid.and_then(proc_stats::cpu_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in shards {
        let client = client.clone();
        let url = a.url.clone();
        let tenant = a.tenant.clone();
        let protocol = a.protocol;
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            for (body, n) in shard {
                let mut req = client
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("User-Agent", "cairn-loadgen")
                    .body(body);
                req = if protocol == 2 {
                    req.header("Content-Type", cairn_proto::RW2_CONTENT_TYPE)
                        .header("X-Prometheus-Remote-Write-Version", "2.0.0")
                } else {
                    req.header("Content-Type", "application/x-protobuf")
                        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                };
                if let Some(t) = &tenant {
                    req = req.header("X-Scope-OrgID", t);
                }
                let t0 = Instant::now();
                match req.send().await {
                    Ok(r) if r.status().is_success() => st.acked += n,
                    Ok(r) => {
                        let code = r.status();
                        let text = r.text().await.unwrap_or_default();
                        st.rejected += n;
                        st.first_error.get_or_insert(format!("{code}: {}", text.chars().take(300).collect::<String>()));
                    }
                    Err(e) => {
                        st.failed_requests += 1;
                        st.first_error.get_or_insert(e.to_string());
                    }
                }
                st.latencies.push(t0.elapsed());
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        let st = t.await.context("sender task")?;
        all.acked += st.acked;
        all.rejected += st.rejected;
        all.failed_requests += st.failed_requests;
        all.latencies.extend(st.latencies);
        if all.first_error.is_none() {
            all.first_error = st.first_error;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, a.pid.and_then(proc_stats::cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    all.latencies.sort();
    let pct = |p: f64| {
        all.latencies
            .get(((all.latencies.len() as f64 - 1.0) * p) as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let rss = a.pid.and_then(proc_stats::rss);
    let rate = all.acked as f64 / elapsed;
    println!(
        "{{\"system\":\"{}\",\"series\":{},\"samples_sent\":{},\"samples_acked\":{},\"samples_rejected\":{},\"failed_requests\":{},\"seconds\":{:.3},\"samples_per_sec\":{:.0},\"latency_ms_p50\":{:.2},\"latency_ms_p99\":{:.2},\"server_cpu_seconds\":{},\"cpu_seconds_per_million_samples\":{},\"server_rss_bytes\":{},\"server_peak_rss_bytes\":{},\"rss_bytes_per_series\":{}}}",
        a.name,
        w.series(),
        w.samples(),
        all.acked,
        all.rejected,
        all.failed_requests,
        elapsed,
        rate,
        pct(0.5),
        pct(0.99),
        cpu.map(|c| format!("{c:.2}")).unwrap_or("null".into()),
        cpu.map(|c| format!("{:.3}", c / (all.acked.max(1) as f64 / 1e6))).unwrap_or("null".into()),
        rss.map(|r| r.0.to_string()).unwrap_or("null".into()),
        rss.map(|r| r.1.to_string()).unwrap_or("null".into()),
        rss.map(|r| format!("{:.0}", r.0 as f64 / w.series() as f64)).unwrap_or("null".into()),
    );
    if let Some(e) = all.first_error {
        eprintln!("loadgen: first error: {e}");
    }
    Ok(())
}
