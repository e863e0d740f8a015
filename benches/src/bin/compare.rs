//! The side-by-side comparison: the same workloads and queries against
//! Cairn, Prometheus and VictoriaMetrics, one system at a time, each pinned
//! to CPU 0 while this process (load generator and query client) runs on
//! CPU 1. Run it through `benches/compare.sh`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cairn_benches::chart::{Panel, render};
use cairn_benches::load::{LoadReport, SendOptions, run};
use cairn_benches::query::{QUERIES, QueryStats, Span, run_set};
use cairn_benches::systems::{Running, System, package_version, version};
use cairn_benches::workload::{Kind, Workload};
use clap::Parser;
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Preset {
    /// A few minutes: checks the harness end to end, figures not meaningful.
    Ci,
    /// Tens of minutes: the figures in docs/benchmarks.md.
    Full,
}

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, value_enum, default_value = "full")]
    preset: Preset,
    /// Where results.json, results.md and chart.svg go.
    #[arg(long)]
    out: PathBuf,
    /// The cairn binary.
    #[arg(long)]
    cairn: PathBuf,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "cairn,prometheus,victoriametrics")]
    systems: Vec<System>,
    /// Remote write protocol for the ingest phase (1 or 2; Prometheus 2.42
    /// and VictoriaMetrics 1.79 accept 1 only).
    #[arg(long, default_value_t = 1)]
    protocol: u8,
    /// Recorded in results.json.
    #[arg(long, default_value = "unknown")]
    commit: String,
}

struct Phases {
    /// Sustained ingest: node targets × rounds, sent as fast as accepted.
    ingest: (usize, usize),
    /// Memory: node targets × 2 rounds into a fresh instance.
    memory_targets: usize,
    /// Queries and storage: node targets × rounds (15 s apart); the full
    /// preset holds a day, so that Cairn answers from 2-hour blocks.
    query: (usize, usize),
    runs: usize,
}

impl Preset {
    fn phases(self) -> Phases {
        match self {
            Preset::Ci => Phases { ingest: (4, 10), memory_targets: 8, query: (2, 240), runs: 2 },
            Preset::Full => Phases { ingest: (100, 60), memory_targets: 834, query: (9, 5760), runs: 5 },
        }
    }
}

/// Everything measured for one system.
#[derive(Default)]
struct Measured {
    ingest: LoadReport,
    memory: LoadReport,
    memory_rss: u64,
    storage: (u64, &'static str),
    stored_samples: usize,
    queries: Vec<QueryStats>,
    /// Cairn: block bytes fetched by one run of the `selective` query (one
    /// series over all of the data), footers cached.
    selective_read_bytes: Option<f64>,
}

/// A counter from Cairn's /metrics.
async fn cairn_counter(base: &str, name: &str) -> Result<f64> {
    let text = reqwest::get(format!("{base}/metrics")).await?.text().await?;
    Ok(text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum())
}

/// Bytes of blocks Cairn reads for one run of the `selective` query.
async fn selective_read_bytes(base: &str, span: Span) -> Result<f64> {
    let (_, window, q) = QUERIES.iter().find(|(id, _, _)| *id == "selective").context("selective query")?;
    let mut form = span.params(*window);
    form.push(("query", q.to_string()));
    let before = cairn_counter(base, "cairn_storage_read_bytes_total").await?;
    reqwest::Client::new().post(format!("{base}/api/v1/query_range")).form(&form).send().await?.bytes().await?;
    Ok(cairn_counter(base, "cairn_storage_read_bytes_total").await? - before)
}

fn dir_for(out: &std::path::Path, sys: System, phase: &str) -> PathBuf {
    out.join("data").join(format!("{}-{phase}", sys.name()))
}

async fn measure(sys: System, a: &Args, p: &Phases) -> Result<Measured> {
    let mut m = Measured::default();
    let now = cairn_common::time::now_ms();
    let opts = |r: &Running| SendOptions {
        url: r.write_url(),
        concurrency: 4,
        batch: 2000,
        protocol: if sys == System::Cairn { a.protocol } else { 1 },
        tenant: None,
        pid: Some(r.pid()),
    };

    eprintln!("== {}: ingest {} node targets x {} rounds", sys.name(), p.ingest.0, p.ingest.1);
    let r = Running::start(sys, &dir_for(&a.out, sys, "ingest"), 0, &a.cairn)?;
    let w = Workload::new(Kind::Node, p.ingest.0, p.ingest.1, 15_000, now - p.ingest.1 as i64 * 15_000, 1);
    m.ingest = run(Arc::new(w), &opts(&r)).await?;
    r.stop();

    eprintln!("== {}: memory, {} node targets x 2 rounds", sys.name(), p.memory_targets);
    let r = Running::start(sys, &dir_for(&a.out, sys, "memory"), 0, &a.cairn)?;
    let w = Workload::new(Kind::Node, p.memory_targets, 2, 15_000, now - 30_000, 2);
    m.memory = run(Arc::new(w), &opts(&r)).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    m.memory_rss = cairn_benches::proc_stats::rss(r.pid()).map(|x| x.0).unwrap_or(0);
    r.stop();

    let (targets, rounds) = p.query;
    eprintln!("== {}: queries and storage, {targets} node targets x {rounds} rounds", sys.name());
    // Samples half a step off the 15 s grid, query times on it (and off the
    // minute grid of the subquery by 15 s), so that no range window ends
    // exactly on a sample: Prometheus 2 closes windows on the left, Cairn
    // and Prometheus 3 do not. The data ends two minutes ago, out of
    // VictoriaMetrics' 30 s search latency offset.
    let data_start = (now - 120_000 - rounds as i64 * 15_000) / 60_000 * 60_000 + 7_500;
    let span = Span {
        start_ms: data_start - 7_500 + 600_000 + 15_000,
        end_ms: data_start - 7_500 + (rounds as i64 - 1) * 15_000,
        step_s: 30,
    };
    let r = Running::start(sys, &dir_for(&a.out, sys, "query"), 0, &a.cairn)?;
    let w = Workload::new(Kind::Node, targets, rounds, 15_000, data_start, 3);
    m.stored_samples = w.samples();
    let load = run(Arc::new(w), &opts(&r)).await?;
    anyhow::ensure!(
        load.samples_rejected == 0 && load.failed_requests == 0,
        "{} refused data: {:?}",
        sys.name(),
        load.first_error
    );
    r.flush().await?;
    if sys == System::Victoriametrics {
        // Its caches of recent data expire after a short while.
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    m.storage = r.storage_bytes().await?;
    m.queries = run_set(&r.base(), None, span, p.runs).await?;
    if sys == System::Cairn {
        m.selective_read_bytes = Some(selective_read_bytes(&r.base(), span).await?);
    }
    r.stop();
    Ok(m)
}

fn machine() -> serde_json::Value {
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0) * 1024)
    });
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    json!({
        // This process is pinned to one CPU; count the machine's.
        "cores": std::fs::read_to_string("/proc/cpuinfo").map(|s| s.lines().filter(|l| l.starts_with("processor")).count()).unwrap_or(0),
        "memory_bytes": mem,
        "cpu": cpu,
        "kernel": version("uname", "-r"),
        "date": version("date", "-Iseconds"),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.out)?;
    let p = a.preset.phases();
    let mut results: BTreeMap<System, Measured> = BTreeMap::new();
    for &sys in &a.systems {
        let m = measure(sys, &a, &p).await.with_context(|| format!("measuring {}", sys.name()))?;
        results.insert(sys, m);
    }

    // The correctness guard: Cairn and Prometheus must give the same
    // answers; VictoriaMetrics' differences are listed.
    let mut disagreements = Vec::new();
    let mut differences = Vec::new();
    if let (Some(c), Some(pr)) = (results.get(&System::Cairn), results.get(&System::Prometheus)) {
        for (q, pq) in c.queries.iter().zip(&pr.queries) {
            if !q.agrees(pq) {
                disagreements.push(q.id.clone());
            }
        }
    }
    if let (Some(v), Some(pr)) = (results.get(&System::Victoriametrics), results.get(&System::Prometheus)) {
        for (q, pq) in v.queries.iter().zip(&pr.queries) {
            if !q.agrees(pq) {
                differences.push(json!({"query": q.id, "victoriametrics": q.to_json(), "prometheus": pq.to_json()}));
            }
        }
    }

    let mut doc = serde_json::Map::new();
    for (sys, m) in &results {
        let latency: serde_json::Map<String, serde_json::Value> =
            m.queries.iter().map(|q| (q.id.clone(), json!(q.median_ms))).collect();
        let p99: serde_json::Map<String, serde_json::Value> =
            m.queries.iter().map(|q| (q.id.clone(), json!(q.p99_ms))).collect();
        doc.insert(
            sys.name().into(),
            json!({
                "ingest_samples_per_sec": m.ingest.samples_per_sec(),
                "cpu_seconds_per_million_samples": m.ingest.cpu_seconds_per_million(),
                "rss_bytes_per_active_series": m.memory_rss as f64 / m.memory.series.max(1) as f64,
                "bytes_per_sample": m.storage.0 as f64 / m.stored_samples.max(1) as f64,
                "storage_counted": m.storage.1,
                "selective_query_read_bytes": m.selective_read_bytes,
                "query_latency_ms": latency,
                "query_latency_p99_ms": p99,
                "ingest": m.ingest.to_json(sys.name()),
                "memory": m.memory.to_json(sys.name()),
                "queries": m.queries.iter().map(|q| q.to_json()).collect::<Vec<_>>(),
            }),
        );
    }
    doc.insert(
        "run".into(),
        json!({
            "preset": format!("{:?}", a.preset).to_lowercase(),
            "commit": a.commit,
            "machine": machine(),
            "versions": {
                "cairn": version(&a.cairn.display().to_string(), "--version"),
                "prometheus": package_version("prometheus").unwrap_or_else(|| version("prometheus", "--version")),
                "victoriametrics": package_version("victoria-metrics").unwrap_or_else(|| version("victoria-metrics", "-version")),
            },
            "queries": QUERIES.iter().map(|(id, _, q)| json!({"id": id, "query": q})).collect::<Vec<_>>(),
            "cairn_prometheus_disagree": disagreements,
            "victoriametrics_differences": differences,
        }),
    );
    std::fs::write(a.out.join("results.json"), serde_json::to_string_pretty(&doc)?)?;

    // The table, with Cairn's ratio to each peer.
    let names: Vec<&str> = results.keys().map(|s| s.name()).collect();
    let mut md = String::new();
    md.push_str(&format!("| figure | {} |", names.join(" | ")));
    for peer in results.keys().filter(|s| **s != System::Cairn) {
        md.push_str(&format!(" Cairn / {} |", peer.name()));
    }
    md.push('\n');
    md.push_str(&format!("|---|{}", "---|".repeat(names.len() + results.len().saturating_sub(1))));
    md.push('\n');
    let row = |label: &str, f: &dyn Fn(&Measured) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
        let mut line = format!("| {label} |");
        for m in results.values() {
            line.push_str(&format!(" {} |", f(m).map(fmt).unwrap_or("n/a".into())));
        }
        if let Some(c) = results.get(&System::Cairn).and_then(f) {
            for (s, m) in &results {
                if *s != System::Cairn {
                    line.push_str(&format!(" {} |", f(m).map(|x| format!("{:.2}", c / x)).unwrap_or("n/a".into())));
                }
            }
        }
        line.push('\n');
        line
    };
    let int = |x: f64| format!("{x:.0}");
    let two = |x: f64| format!("{x:.2}");
    md.push_str(&row("ingest samples/s (1 core)", &|m| Some(m.ingest.samples_per_sec()), &int));
    md.push_str(&row("CPU s per 1M samples", &|m| m.ingest.cpu_seconds_per_million(), &two));
    md.push_str(&row(
        "RSS bytes per active series",
        &|m| Some(m.memory_rss as f64 / m.memory.series.max(1) as f64),
        &int,
    ));
    md.push_str(&row("bytes per sample on disk", &|m| Some(m.storage.0 as f64 / m.stored_samples.max(1) as f64), &two));
    for (i, (id, _, _)) in QUERIES.iter().enumerate() {
        md.push_str(&row(&format!("query `{id}` median ms"), &|m| m.queries.get(i).map(|q| q.median_ms), &two));
    }
    if let Some(b) = results.get(&System::Cairn).and_then(|m| m.selective_read_bytes) {
        md.push_str(&format!(
            "\nCairn read {:.0} bytes of blocks for one run of `selective` (one series over all of the data; \
             {} bytes of blocks in all).\n",
            b,
            results.get(&System::Cairn).map_or(0, |m| m.storage.0)
        ));
    }
    md.push_str(&format!(
        "\nAnswers: Cairn and Prometheus {}; VictoriaMetrics differs from Prometheus on {} of {} queries.\n",
        if disagreements.is_empty() {
            "agree on every query".to_owned()
        } else {
            format!("DISAGREE on {disagreements:?}")
        },
        differences.len(),
        QUERIES.len()
    ));
    std::fs::write(a.out.join("results.md"), &md)?;
    println!("{md}");

    let panels = vec![
        Panel {
            title: "ingest samples/s (1 core)".into(),
            values: results.values().map(|m| Some(m.ingest.samples_per_sec())).collect(),
            unit: "higher is better".into(),
        },
        Panel {
            title: "CPU s per 1M samples".into(),
            values: results.values().map(|m| m.ingest.cpu_seconds_per_million()).collect(),
            unit: "lower is better".into(),
        },
        Panel {
            title: "RSS bytes per series".into(),
            values: results.values().map(|m| Some(m.memory_rss as f64 / m.memory.series.max(1) as f64)).collect(),
            unit: "lower is better".into(),
        },
        Panel {
            title: "bytes per sample on disk".into(),
            values: results.values().map(|m| Some(m.storage.0 as f64 / m.stored_samples.max(1) as f64)).collect(),
            unit: "lower is better".into(),
        },
        Panel {
            title: "sum of query medians (ms)".into(),
            values: results.values().map(|m| Some(m.queries.iter().map(|q| q.median_ms).sum())).collect(),
            unit: "lower is better".into(),
        },
    ];
    std::fs::write(a.out.join("chart.svg"), render("Cairn vs Prometheus vs VictoriaMetrics", &names, &panels))?;
    eprintln!("results: {}", a.out.display());
    anyhow::ensure!(disagreements.is_empty(), "Cairn and Prometheus disagree on {disagreements:?}");
    Ok(())
}
