//! Query latency benchmark: runs a fixed set of PromQL range queries
//! against any Prometheus-compatible endpoint and reports, per query, the
//! median and worst latency of N runs plus a fingerprint of the answer
//! (series count and value sum) so that systems can be checked to agree.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:9009
    #[arg(long)]
    url: String,
    /// Range start and end in ms, and step in seconds.
    #[arg(long)]
    start_ms: i64,
    #[arg(long)]
    end_ms: i64,
    #[arg(long, default_value_t = 30)]
    step: u64,
    /// Timed runs per query (after one warm-up).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long, default_value = "server")]
    name: String,
}

/// The query set: aggregations, a histogram quantile, topk, a join, a
/// subquery, a selective lookup, over the node_exporter-like workload.
pub const QUERIES: &[(&str, &str)] = &[
    ("sum_rate_by_instance", "sum by (instance) (rate(node_cpu_seconds_total[5m]))"),
    ("sum_rate_by_mode", "sum by (mode) (rate(node_cpu_seconds_total[5m]))"),
    (
        "histogram_quantile",
        "histogram_quantile(0.9, sum by (le) (rate(promhttp_metric_handler_duration_seconds_bucket[5m])))",
    ),
    ("topk", "topk(5, rate(node_network_receive_bytes_total[5m]))"),
    (
        "join_group_left",
        "rate(node_network_receive_bytes_total[5m]) / on(instance, device) group_left node_network_mtu_bytes",
    ),
    ("subquery", "max_over_time(rate(node_cpu_seconds_total{mode=\"user\"}[1m])[10m:1m])"),
    ("count", "count(node_cpu_seconds_total)"),
    ("selective", "node_memory_field00_bytes{instance=\"host-00001.example.com:9100\"}"),
];

fn fingerprint(v: &serde_json::Value) -> (usize, usize, f64) {
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    let mut points = 0;
    let mut sum = 0.0;
    for s in &result {
        for p in s["values"].as_array().into_iter().flatten() {
            points += 1;
            if let Some(x) = p[1].as_str().and_then(|x| x.parse::<f64>().ok())
                && x.is_finite()
            {
                sum += x;
            }
        }
    }
    (result.len(), points, sum)
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build()?;
    let mut rows = Vec::new();
    for (id, q) in QUERIES {
        let send = || {
            let mut r = client.post(format!("{}/api/v1/query_range", a.url)).form(&[
                ("query", q.to_string()),
                ("start", format!("{:.3}", a.start_ms as f64 / 1000.0)),
                ("end", format!("{:.3}", a.end_ms as f64 / 1000.0)),
                ("step", a.step.to_string()),
            ]);
            if let Some(t) = &a.tenant {
                r = r.header("X-Scope-OrgID", t);
            }
            r.send()
        };
        let warm: serde_json::Value = send().await?.json().await.context("warm-up")?;
        anyhow::ensure!(warm["status"] == "success", "{id} failed on {}: {warm}", a.name);
        let (series, points, sum) = fingerprint(&warm);
        let mut times = Vec::new();
        for _ in 0..a.runs {
            let t0 = Instant::now();
            let body = send().await?.bytes().await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(!body.is_empty(), "empty answer");
        }
        times.sort_by(|x, y| x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal));
        let median = times[times.len() / 2];
        let max = times[times.len() - 1];
        rows.push(format!(
            "{{\"query\":\"{id}\",\"median_ms\":{median:.2},\"max_ms\":{max:.2},\"series\":{series},\"points\":{points},\"value_sum\":{sum}}}"
        ));
    }
    println!("{{\"system\":\"{}\",\"queries\":[{}]}}", a.name, rows.join(","));
    Ok(())
}
