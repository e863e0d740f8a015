//! In-process ingest benchmark: snappy decompression, protobuf decoding,
//! validation, WAL write and head append, on one thread, with no HTTP.
//! Reports samples per CPU-second and head memory per series.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use cairn_benches::proc_stats;
use cairn_benches::workload::{Kind, Workload};
use cairn_common::TenantId;
use cairn_common::metrics::Registry;
use cairn_distributor::{Distributor, Protocol};
use cairn_ingester::{Ingester, IngesterConfig};
use clap::Parser;

/// The allocator the cairn binary uses, so that the figures match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 50)]
    targets: usize,
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// WAL sync mode: none, interval or always.
    #[arg(long, default_value = "none")]
    sync_mode: String,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread().max_blocking_threads(1).enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let mut registry = Registry::default();
    let mut cfg = IngesterConfig::default();
    cfg.wal.sync_mode = match a.sync_mode.as_str() {
        "always" => cairn_ingester::wal::SyncMode::Always,
        "interval" => cairn_ingester::wal::SyncMode::Interval,
        _ => cairn_ingester::wal::SyncMode::None,
    };
    let ingester = Ingester::new(cfg, dir.path(), &mut registry, None)?;
    ingester.replay_all()?;
    let d = Distributor::new(Default::default(), Default::default(), Arc::new(ingester), &mut registry);
    let now = cairn_common::time::now_ms();
    let w = Workload::new(Kind::Node, a.targets, a.rounds, 15_000, now - a.rounds as i64 * 15_000, 1);
    let targets: Vec<usize> = (0..w.targets).collect();
    let reqs = w.requests_v1(&targets, 2000);
    let tenant = TenantId::new("bench")?;
    let pid = std::process::id();
    let rss0 = proc_stats::rss(pid).map(|r| r.0).unwrap_or(0);
    let cpu0 = proc_stats::cpu_seconds(pid).unwrap_or(0.0);
    let t0 = Instant::now();
    let mut samples = 0usize;
    rt.block_on(async {
        for (body, n) in &reqs {
            let raw = snap::raw::Decoder::new().decompress_vec(body)?;
            let r = d.write(&tenant, Protocol::V1, &raw).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let o = r.pushed.map_err(|e| anyhow::anyhow!("{e}"))?;
            anyhow::ensure!(o.rejections.is_empty(), "rejections: {:?}", o.rejections);
            samples += n;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu = proc_stats::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    let rss = proc_stats::rss(pid).map(|r| r.0).unwrap_or(0);
    // The request bodies are still held; subtract them from the growth.
    let held: usize = reqs.iter().map(|r| r.0.capacity()).sum();
    println!(
        "{{\"series\":{},\"samples\":{samples},\"wall_seconds\":{wall:.3},\"cpu_seconds\":{cpu:.3},\"samples_per_cpu_second\":{:.0},\"rss_growth_bytes_per_series\":{:.0},\"request_bytes_held\":{held}}}",
        w.series(),
        samples as f64 / cpu.max(1e-9),
        (rss.saturating_sub(rss0)) as f64 / w.series() as f64,
    );
    Ok(())
}
