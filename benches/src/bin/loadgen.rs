//! Remote write load generator: sends a deterministic workload to any
//! remote write endpoint (Cairn, Prometheus, VictoriaMetrics) and reports
//! samples sent, acknowledged and rejected, request latency, and the
//! server's CPU time and memory when given its pid, as one JSON line.

use std::sync::Arc;

use anyhow::Result;
use cairn_benches::load::{SendOptions, run};
use cairn_benches::workload::{Kind, Workload};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Remote write URL.
    #[arg(long)]
    url: String,
    /// The workload's shape.
    #[arg(long, value_enum, default_value = "node")]
    workload: Kind,
    /// Targets (node: ~1,160 series each; tsbs: 10; avalanche: 1,000).
    #[arg(long, default_value_t = 10)]
    targets: usize,
    /// Scrape rounds to send (samples per series), as fast as accepted.
    #[arg(long, default_value_t = 10, conflicts_with = "duration")]
    rounds: usize,
    /// The span of data to send instead of a round count (e.g. `6h`):
    /// duration ÷ interval rounds.
    #[arg(long)]
    duration: Option<cairn_common::PromDuration>,
    /// Milliseconds between rounds in the data's timestamps.
    #[arg(long, default_value_t = 15_000)]
    interval_ms: i64,
    /// Churn: every this many rounds the churning targets are relabelled.
    #[arg(long, default_value_t = 0)]
    churn_every: usize,
    /// Share of the targets that churn.
    #[arg(long, default_value_t = 0.0)]
    churn_fraction: f64,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
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

#[tokio::main]
async fn main() -> Result<()> {
    let mut a = Args::parse();
    if let Some(d) = a.duration {
        a.rounds = (d.as_millis() as i64 / a.interval_ms.max(1)).max(1) as usize;
    }
    let now = cairn_common::time::now_ms();
    let start = a.start_ms.unwrap_or(now - a.rounds as i64 * a.interval_ms);
    let mut w = Workload::new(a.workload, a.targets, a.rounds, a.interval_ms, start, a.seed);
    w.churn_every = a.churn_every;
    w.churn_fraction = a.churn_fraction;
    eprintln!("loadgen: {} series x {} rounds = {} samples", w.series(), w.rounds, w.samples());
    let o = SendOptions {
        url: a.url,
        concurrency: a.concurrency,
        batch: a.batch,
        protocol: a.protocol,
        tenant: a.tenant,
        pid: a.pid,
    };
    let r = run(Arc::new(w), &o).await?;
    println!("{}", r.to_json(&a.name));
    if let Some(e) = &r.first_error {
        eprintln!("loadgen: first error: {e}");
    }
    Ok(())
}
