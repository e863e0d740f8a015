//! Query latency benchmark: runs the fixed PromQL set of
//! `cairn_benches::query` against any Prometheus-compatible endpoint and
//! prints, per query, median and p99 latency and a fingerprint of the answer.

use anyhow::Result;
use cairn_benches::query::{Span, run_set};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// Base URL, e.g. http://127.0.0.1:9009
    #[arg(long)]
    url: String,
    /// First and last evaluation time in ms, and the step in seconds.
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

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let span = Span { start_ms: a.start_ms, end_ms: a.end_ms, step_s: a.step };
    let stats = run_set(&a.url, a.tenant.as_deref(), span, a.runs).await?;
    let queries: Vec<serde_json::Value> = stats.iter().map(|s| s.to_json()).collect();
    println!("{}", serde_json::json!({"system": a.name, "queries": queries}));
    Ok(())
}
