//! A fixed PromQL set timed against any Prometheus-compatible endpoint.

use std::time::Instant;

use anyhow::Result;
use serde_json::json;

/// When a query reads, relative to the loaded data.
#[derive(Clone, Copy, Debug)]
pub enum Window {
    /// A range query over all of the data.
    All,
    /// A range query over the newest 15 minutes.
    Fresh,
    /// A range query over the oldest hour (after the first 10 minutes).
    Older,
    /// An instant query at the newest data.
    InstantNow,
}

/// The query set: aggregating and selective, range and instant, over fresh
/// and older data, on the node_exporter-like workload.
pub const QUERIES: &[(&str, Window, &str)] = &[
    ("sum_rate_by_instance", Window::All, "sum by (instance) (rate(node_cpu_seconds_total[5m]))"),
    ("sum_rate_by_mode", Window::All, "sum by (mode) (rate(node_cpu_seconds_total[5m]))"),
    ("sum_rate_by_job", Window::All, "sum by (job) (rate(node_cpu_seconds_total[5m]))"),
    (
        "histogram_quantile",
        Window::All,
        "histogram_quantile(0.9, sum by (le) (rate(promhttp_metric_handler_duration_seconds_bucket[5m])))",
    ),
    ("topk", Window::All, "topk(5, rate(node_network_receive_bytes_total[5m]))"),
    (
        "join_group_left",
        Window::All,
        "rate(node_network_receive_bytes_total[5m]) / on(instance, device) group_left node_network_mtu_bytes",
    ),
    ("subquery", Window::All, "max_over_time(rate(node_cpu_seconds_total{mode=\"user\"}[1m])[10m:1m])"),
    ("count", Window::All, "count(node_cpu_seconds_total)"),
    ("selective", Window::All, "node_memory_field00_bytes{instance=\"host-00001.example.com:9100\"}"),
    ("fresh_sum_rate", Window::Fresh, "sum by (instance) (rate(node_disk_read_bytes_total[5m]))"),
    ("older_sum_rate", Window::Older, "sum by (instance) (rate(node_disk_read_bytes_total[5m]))"),
    ("instant_count_by_mode", Window::InstantNow, "count by (mode) (node_cpu_seconds_total)"),
    ("instant_selective", Window::InstantNow, "node_memory_field01_bytes{instance=\"host-00000.example.com:9100\"}"),
];

/// The span of the loaded data and the query grid.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    /// First and last evaluation time a query may use, in ms.
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_s: u64,
}

impl Span {
    pub fn params(&self, w: Window) -> Vec<(&'static str, String)> {
        let s = |ms: i64| format!("{:.3}", ms as f64 / 1000.0);
        let (from, to) = match w {
            Window::All => (self.start_ms, self.end_ms),
            Window::Fresh => ((self.end_ms - 15 * 60_000).max(self.start_ms), self.end_ms),
            Window::Older => (self.start_ms, (self.start_ms + 3_600_000).min(self.end_ms)),
            Window::InstantNow => return vec![("time", s(self.end_ms))],
        };
        vec![("start", s(from)), ("end", s(to)), ("step", self.step_s.to_string())]
    }
}

/// What one query measured, and a fingerprint of its answer.
#[derive(Clone, Debug, Default)]
pub struct QueryStats {
    pub id: String,
    pub median_ms: f64,
    pub p99_ms: f64,
    pub series: usize,
    pub points: usize,
    pub value_sum: f64,
    pub error: Option<String>,
}

impl QueryStats {
    pub fn to_json(&self) -> serde_json::Value {
        json!({"query": self.id, "median_ms": self.median_ms, "p99_ms": self.p99_ms, "series": self.series,
               "points": self.points, "value_sum": self.value_sum, "error": self.error})
    }

    /// Whether two systems gave the same answer (series, points, and the
    /// sum of all finite values within 1e-6 relative).
    pub fn agrees(&self, o: &QueryStats) -> bool {
        let tol = 1e-6 * self.value_sum.abs().max(o.value_sum.abs()).max(1.0);
        self.error.is_none()
            && o.error.is_none()
            && self.series == o.series
            && self.points == o.points
            && (self.value_sum - o.value_sum).abs() <= tol
    }
}

fn fingerprint(v: &serde_json::Value) -> (usize, usize, f64) {
    let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
    let mut points = 0;
    let mut sum = 0.0;
    let mut add = |p: &serde_json::Value| {
        points += 1;
        if let Some(x) = p[1].as_str().and_then(|x| x.parse::<f64>().ok()).filter(|x| x.is_finite()) {
            sum += x;
        }
    };
    for s in &result {
        if let Some(values) = s["values"].as_array() {
            values.iter().for_each(&mut add);
        } else if s["value"].is_array() {
            add(&s["value"]);
        }
    }
    (result.len(), points, sum)
}

/// Runs every query once to warm up and `runs` times timed.
pub async fn run_set(base: &str, tenant: Option<&str>, span: Span, runs: usize) -> Result<Vec<QueryStats>> {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(300)).build()?;
    let mut out = Vec::new();
    for (id, window, q) in QUERIES {
        let path = if matches!(window, Window::InstantNow) { "query" } else { "query_range" };
        let mut form = span.params(*window);
        form.push(("query", q.to_string()));
        let send = || {
            let mut r = client.post(format!("{base}/api/v1/{path}")).form(&form);
            if let Some(t) = tenant {
                r = r.header("X-Scope-OrgID", t);
            }
            r.send()
        };
        let mut stats = QueryStats { id: id.to_string(), ..Default::default() };
        let warm: serde_json::Value = send().await?.json().await?;
        if warm["status"] != "success" {
            stats.error = Some(warm["error"].as_str().unwrap_or("failed").to_owned());
            out.push(stats);
            continue;
        }
        (stats.series, stats.points, stats.value_sum) = fingerprint(&warm);
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs.max(1) {
            let t0 = Instant::now();
            let _ = send().await?.bytes().await?;
            times.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        stats.median_ms = times[times.len() / 2];
        stats.p99_ms = times[((times.len() as f64 - 1.0) * 0.99).round() as usize];
        out.push(stats);
    }
    Ok(out)
}
