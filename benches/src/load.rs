//! Sending a workload over remote write and measuring what comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::proc_stats;
use crate::workload::{Workload, v1_to_v2};

/// How to send.
#[derive(Clone, Debug)]
pub struct SendOptions {
    pub url: String,
    /// Parallel senders; each owns a share of the targets, like
    /// Prometheus's remote write shards, so a series is always sent in order.
    pub concurrency: usize,
    /// Samples per request.
    pub batch: usize,
    /// Remote write protocol, 1 or 2.
    pub protocol: u8,
    pub tenant: Option<String>,
    /// The server's pid, for its CPU time and memory.
    pub pid: Option<u32>,
}

/// What a load run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub series: usize,
    pub samples_sent: usize,
    pub samples_acked: usize,
    pub samples_rejected: usize,
    pub failed_requests: usize,
    pub first_error: Option<String>,
    pub seconds: f64,
    /// Request latencies in milliseconds: p50, p90, p99, max.
    pub latency_ms: [f64; 4],
    pub server_cpu_seconds: Option<f64>,
    pub server_rss_bytes: Option<u64>,
}

impl LoadReport {
    pub fn samples_per_sec(&self) -> f64 {
        self.samples_acked as f64 / self.seconds.max(1e-9)
    }

    pub fn cpu_seconds_per_million(&self) -> Option<f64> {
        self.server_cpu_seconds.map(|c| c / (self.samples_acked.max(1) as f64 / 1e6))
    }

    pub fn to_json(&self, name: &str) -> serde_json::Value {
        json!({
            "system": name,
            "series": self.series,
            "samples_sent": self.samples_sent,
            "samples_acked": self.samples_acked,
            "samples_rejected": self.samples_rejected,
            "failed_requests": self.failed_requests,
            "first_error": self.first_error,
            "seconds": self.seconds,
            "samples_per_sec": self.samples_per_sec(),
            "latency_ms": {"p50": self.latency_ms[0], "p90": self.latency_ms[1], "p99": self.latency_ms[2], "max": self.latency_ms[3]},
            "server_cpu_seconds": self.server_cpu_seconds,
            "cpu_seconds_per_million_samples": self.cpu_seconds_per_million(),
            "server_rss_bytes": self.server_rss_bytes,
        })
    }
}

/// Generates the workload's requests (one thread per shard), then sends
/// them as fast as the server acknowledges them.
pub async fn run(w: Arc<Workload>, o: &SendOptions) -> Result<LoadReport> {
    let mut gens = Vec::new();
    for s in 0..o.concurrency {
        let w = w.clone();
        let (batch, protocol, conc) = (o.batch, o.protocol, o.concurrency);
        gens.push(std::thread::spawn(move || {
            let targets: Vec<usize> = (s..w.targets).step_by(conc).collect();
            let reqs = w.requests_v1(&targets, batch);
            if protocol == 2 { reqs.into_iter().map(|(b, n)| (v1_to_v2(&b), n)).collect() } else { reqs }
        }));
    }
    let mut shards: Vec<Vec<(Vec<u8>, usize)>> = Vec::new();
    for g in gens {
        shards.push(g.join().map_err(|_| anyhow::anyhow!("generator thread failed"))?);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(o.concurrency * 2).build()?;
    let cpu0 = o.pid.and_then(proc_stats::cpu_seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in shards {
        let (client, url, tenant, protocol) = (client.clone(), o.url.clone(), o.tenant.clone(), o.protocol);
        tasks.push(tokio::spawn(async move {
            let mut r = LoadReport::default();
            let mut latencies = Vec::with_capacity(shard.len());
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
                r.samples_sent += n;
                match req.send().await {
                    Ok(resp) if resp.status().is_success() => r.samples_acked += n,
                    Ok(resp) => {
                        let code = resp.status();
                        let text = resp.text().await.unwrap_or_default();
                        r.samples_rejected += n;
                        r.first_error.get_or_insert(format!("{code}: {}", text.chars().take(300).collect::<String>()));
                    }
                    Err(e) => {
                        r.failed_requests += 1;
                        r.first_error.get_or_insert(e.to_string());
                    }
                }
                latencies.push(t0.elapsed());
            }
            (r, latencies)
        }));
    }
    let mut all = LoadReport { series: w.series(), ..Default::default() };
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        let (r, l) = t.await.context("sender task")?;
        all.samples_sent += r.samples_sent;
        all.samples_acked += r.samples_acked;
        all.samples_rejected += r.samples_rejected;
        all.failed_requests += r.failed_requests;
        if all.first_error.is_none() {
            all.first_error = r.first_error;
        }
        latencies.extend(l);
    }
    all.seconds = started.elapsed().as_secs_f64();
    all.server_cpu_seconds = match (cpu0, o.pid.and_then(proc_stats::cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    all.server_rss_bytes = o.pid.and_then(proc_stats::rss).map(|r| r.0);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    all.latency_ms = [pct(0.5), pct(0.9), pct(0.99), pct(1.0)];
    Ok(all)
}
