#![allow(clippy::disallowed_methods, reason = "benchmark drivers poll processes from plain threads")]
//! Benchmark tools: deterministic workloads (node_exporter-like, TSBS
//! cpu-only, avalanche), a remote write load generator, a PromQL query set,
//! the systems under comparison (Cairn, Prometheus, VictoriaMetrics) and
//! the chart of the side-by-side comparison.

pub mod chart;
pub mod load;
pub mod proc_stats;
pub mod query;
pub mod systems;
pub mod workload;
