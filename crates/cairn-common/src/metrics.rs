//! Helpers for Cairn's own metrics (`cairn_<component>_<what>_<unit>`).

pub use prometheus_client::registry::Registry;

/// Latency buckets for request and operation durations, in seconds:
/// 0.5 ms to ~33 s.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 17)
}
