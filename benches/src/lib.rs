//! Benchmark tools for Cairn's hot paths: a deterministic node_exporter-like
//! workload, a remote write load generator, and process measurements.

pub mod proc_stats;
pub mod workload;
