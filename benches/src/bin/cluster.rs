//! Cluster benchmark: the same remote write load and query set against
//! `cairn all` (one process, one copy) and against a cluster on this
//! machine (3 ingesters with replication factor 3, a distributor and a
//! querier), one after the other, none pinned.
//!
//! Reports ingest samples per second, request latency, the CPU seconds all
//! Cairn processes spent per million samples, and query latency (the
//! cluster's queries fan out to every ingester and merge the replicas).
#![allow(clippy::disallowed_methods, reason = "the driver starts and polls processes from its main thread")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_benches::load::{SendOptions, run};
use cairn_benches::proc_stats;
use cairn_benches::query::{QueryStats, Span, run_set};
use cairn_benches::workload::{Kind, Workload};
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    /// The cairn binary.
    #[arg(long)]
    cairn: PathBuf,
    /// Where data, logs and results.json go.
    #[arg(long)]
    out: PathBuf,
    /// Ingest phase: node targets x rounds (15 s apart).
    #[arg(long, default_value_t = 100)]
    targets: usize,
    #[arg(long, default_value_t = 60)]
    rounds: usize,
    /// Query phase: node targets x rounds, in the heads.
    #[arg(long, default_value_t = 9)]
    query_targets: usize,
    #[arg(long, default_value_t = 240)]
    query_rounds: usize,
    /// Timed runs of each query.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value = "unknown")]
    commit: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

struct Proc {
    child: Child,
    http: u16,
    role: String,
}

impl Proc {
    fn start(cairn: &Path, role: &str, dir: &Path, grpc: u16, extra: &[String]) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let http = free_port();
        let log = std::fs::File::create(dir.with_extension("log"))?;
        let child = Command::new(cairn)
            .arg(role)
            .arg(format!("--data.dir={}", dir.display()))
            .arg(format!("--http.listen-address=127.0.0.1:{http}"))
            .arg(format!("--grpc.listen-address=127.0.0.1:{grpc}"))
            .arg("--log.level=warn")
            .args(extra)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting cairn {role}"))?;
        Ok(Proc { child, http, role: role.to_owned() })
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait()? {
                bail!("cairn exited with {s}");
            }
            let ok = std::net::TcpStream::connect(("127.0.0.1", self.http)).ok().and_then(|mut s| {
                use std::io::{Read, Write};
                write!(s, "GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").ok()?;
                let mut buf = String::new();
                s.read_to_string(&mut buf).ok()?;
                Some(buf.starts_with("HTTP/1.1 200"))
            });
            if ok == Some(true) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("cairn not ready after 60s")
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A deployment: where to write, where to query, and every process.
struct Deployment {
    name: &'static str,
    procs: Vec<Proc>,
    write: usize,
    read: usize,
}

impl Deployment {
    fn all(cairn: &Path, dir: &Path) -> Result<Self> {
        let mut p = Proc::start(cairn, "all", &dir.join("all"), free_port(), &[])?;
        p.wait_ready()?;
        Ok(Deployment { name: "cairn all (RF=1)", procs: vec![p], write: 0, read: 0 })
    }

    fn cluster(cairn: &Path, dir: &Path) -> Result<Self> {
        let bucket = format!("--storage.filesystem.dir={}", dir.join("bucket").display());
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let join =
            format!("--ring.join={}", ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(","));
        let mut procs = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let extra = vec![
                format!("--ring.instance-id=ingester-{i}"),
                format!("--ring.advertise-address=127.0.0.1:{port}"),
                join.clone(),
                bucket.clone(),
            ];
            procs.push(Proc::start(cairn, "ingester", &dir.join(format!("ingester-{i}")), *port, &extra)?);
        }
        for p in &mut procs {
            p.wait_ready()?;
        }
        let mut d =
            Proc::start(cairn, "distributor", &dir.join("distributor"), free_port(), std::slice::from_ref(&join))?;
        d.wait_ready()?;
        let mut q = Proc::start(cairn, "querier", &dir.join("querier"), free_port(), &[join, bucket])?;
        q.wait_ready()?;
        procs.push(d);
        procs.push(q);
        // Let every ingester become ACTIVE in the distributor's view.
        std::thread::sleep(Duration::from_secs(2));
        Ok(Deployment { name: "cluster: 3 ingesters RF=3 + distributor + querier", procs, write: 3, read: 4 })
    }

    fn cpu_seconds(&self) -> Vec<f64> {
        self.procs.iter().map(|p| proc_stats::cpu_seconds(p.child.id()).unwrap_or(0.0)).collect()
    }

    fn rss_bytes(&self) -> u64 {
        self.procs.iter().filter_map(|p| proc_stats::rss(p.child.id()).map(|r| r.0)).sum()
    }
}

async fn measure(d: &Deployment, a: &Args) -> Result<(serde_json::Value, Vec<QueryStats>)> {
    let now = cairn_common::time::now_ms();
    let opts = |tenant: &str| SendOptions {
        url: format!("{}/api/v1/push", d.procs[d.write].base()),
        concurrency: 4,
        batch: 2000,
        protocol: 1,
        tenant: Some(tenant.to_owned()),
        pid: None,
    };
    eprintln!("== {}: ingest {} node targets x {} rounds", d.name, a.targets, a.rounds);
    let w = Workload::new(Kind::Node, a.targets, a.rounds, 15_000, now - a.rounds as i64 * 15_000, 1);
    let cpu0 = d.cpu_seconds();
    let ingest = run(Arc::new(w), &opts("ingest")).await?;
    let by_process: Vec<(String, f64)> =
        d.procs.iter().zip(d.cpu_seconds().iter().zip(&cpu0)).map(|(p, (b, a))| (p.role.clone(), b - a)).collect();
    let cpu: f64 = by_process.iter().map(|p| p.1).sum();
    anyhow::ensure!(ingest.failed_requests == 0, "{} failed requests: {:?}", d.name, ingest.first_error);

    eprintln!("== {}: queries over {} node targets x {} rounds in the heads", d.name, a.query_targets, a.query_rounds);
    let data_start = (now - 120_000 - a.query_rounds as i64 * 15_000) / 60_000 * 60_000 + 7_500;
    let span = Span {
        start_ms: data_start - 7_500 + 600_000 + 15_000,
        end_ms: data_start - 7_500 + (a.query_rounds as i64 - 1) * 15_000,
        step_s: 30,
    };
    let w = Workload::new(Kind::Node, a.query_targets, a.query_rounds, 15_000, data_start, 3);
    let mut o = opts("anonymous");
    o.tenant = None;
    let load = run(Arc::new(w), &o).await?;
    anyhow::ensure!(load.failed_requests == 0, "{} refused query data: {:?}", d.name, load.first_error);
    let queries: Vec<QueryStats> = run_set(&d.procs[d.read].base(), None, span, a.runs).await?;
    for q in &queries {
        if let Some(e) = &q.error {
            bail!("{}: query {} failed: {e}", d.name, q.id);
        }
    }
    let json = serde_json::json!({
        "deployment": d.name,
        "ingest": ingest.to_json(d.name),
        "cpu_seconds_all_processes": cpu,
        "cpu_seconds_by_process": by_process,
        "cpu_seconds_per_million_samples": cpu / (ingest.samples_acked.max(1) as f64 / 1e6),
        "rss_bytes_all_processes": d.rss_bytes(),
        "queries": queries.iter().map(QueryStats::to_json).collect::<Vec<_>>(),
    });
    Ok((json, queries))
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.out)?;
    let data = a.out.join("data");
    let _ = std::fs::remove_dir_all(&data);

    let all = Deployment::all(&a.cairn, &data.join("single"))?;
    let (single, single_q) = measure(&all, &a).await?;
    drop(all);
    let cluster = Deployment::cluster(&a.cairn, &data.join("cluster"))?;
    let (replicated, cluster_q) = measure(&cluster, &a).await?;
    drop(cluster);

    let rate = |v: &serde_json::Value| v["ingest"]["samples_per_sec"].as_f64().unwrap_or(0.0);
    println!("| | cairn all (RF=1) | cluster (3 ingesters, RF=3) |");
    println!("|---|---|---|");
    println!("| ingest samples/s | {:.0} | {:.0} |", rate(&single), rate(&replicated));
    for (label, key) in [("push p50 ms", "p50"), ("push p99 ms", "p99")] {
        println!(
            "| {label} | {:.1} | {:.1} |",
            single["ingest"]["latency_ms"][key].as_f64().unwrap_or(0.0),
            replicated["ingest"]["latency_ms"][key].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "| CPU s per million samples (all processes) | {:.2} | {:.2} |",
        single["cpu_seconds_per_million_samples"].as_f64().unwrap_or(0.0),
        replicated["cpu_seconds_per_million_samples"].as_f64().unwrap_or(0.0)
    );
    for (s, r) in single_q.iter().zip(&cluster_q) {
        println!(
            "| query `{}` median ms | {:.1} | {:.1}{} |",
            s.id,
            s.median_ms,
            r.median_ms,
            if s.agrees(r) { "" } else { " (answers differ!)" }
        );
    }
    let differ: Vec<&str> =
        single_q.iter().zip(&cluster_q).filter(|(s, r)| !s.agrees(r)).map(|(s, _)| s.id.as_str()).collect();
    let results = serde_json::json!({"commit": a.commit, "single": single, "cluster": replicated});
    std::fs::write(a.out.join("cluster-results.json"), serde_json::to_vec_pretty(&results)?)?;
    let _ = std::fs::remove_dir_all(&data);
    anyhow::ensure!(differ.is_empty(), "the cluster answered differently from cairn all: {differ:?}");
    Ok(())
}
