//! A node_exporter-like workload, deterministic from a seed.
//!
//! Each target exposes about 1,200 series with node_exporter's metric
//! names and label shapes (per-CPU, per-device, per-filesystem series,
//! plus go_/process_ metrics), counters that grow by fractional amounts,
//! and gauges that wander.

use cairn_proto::prometheus as pb;
use cairn_proto::write_v2 as v2;
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Labels of one series (without `instance`/`job`) and whether it counts up.
#[derive(Clone, Debug)]
pub struct SeriesShape {
    pub labels: Vec<(String, String)>,
    pub counter: bool,
    /// How the values move from one scrape to the next.
    pub model: Model,
}

/// How a series' value moves between scrapes, after what exporters expose:
/// many values are constant or integers; counted seconds have a few
/// decimals; some durations have full float precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Model {
    /// Never changes (sizes, flags, info series).
    Const,
    /// A counter of events or bytes: integer increments around `mean`,
    /// none at all with probability `idle`.
    CounterInt { mean: f64, idle: f64 },
    /// A counter of seconds with `decimals` decimals (CPU seconds).
    CounterDecimal { mean: f64, decimals: i32, idle: f64 },
    /// A counter of seconds from a nanosecond clock: nine decimals.
    CounterNanos { mean: f64 },
    /// An integer gauge moving in multiples of `step`, with probability
    /// `change` per scrape (free bytes, open fds).
    GaugeInt { step: f64, change: f64 },
    /// A duration measured in nanoseconds, in seconds: nine decimals,
    /// different every scrape.
    GaugeNanos,
}

/// The value model of a node_exporter series, from its name and labels.
fn node_model(name: &str, labels: &[(&str, String)], counter: bool) -> Model {
    let label = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str()).unwrap_or("");
    let idle_device = ["lo", "veth", "br-", "wlan", "loop", "docker"].iter().any(|p| label("device").starts_with(p));
    if !counter {
        return match name {
            n if n.ends_with("_duration_seconds") => Model::GaugeNanos,
            n if n.starts_with("node_memory_") || n.starts_with("go_memstats_") => {
                Model::GaugeInt { step: 4096.0, change: 0.5 }
            }
            "node_filesystem_avail_bytes" | "node_filesystem_free_bytes" => {
                Model::GaugeInt { step: 4096.0, change: 0.3 }
            }
            "node_disk_io_now" | "process_open_fds" => Model::GaugeInt { step: 1.0, change: 0.2 },
            _ => Model::Const,
        };
    }
    match name {
        "node_cpu_seconds_total" => match label("mode") {
            "idle" => Model::CounterDecimal { mean: 14.0, decimals: 2, idle: 0.0 },
            "user" | "system" => Model::CounterDecimal { mean: 0.6, decimals: 2, idle: 0.0 },
            _ => Model::CounterDecimal { mean: 0.02, decimals: 2, idle: 0.7 },
        },
        "node_cpu_guest_seconds_total" => Model::CounterDecimal { mean: 0.0, decimals: 2, idle: 1.0 },
        n if n.starts_with("node_schedstat_") && n.ends_with("seconds_total") => Model::CounterNanos { mean: 0.8 },
        n if n.starts_with("node_disk_") && n.ends_with("seconds_total") => {
            Model::CounterDecimal { mean: 0.05, decimals: 3, idle: if idle_device { 1.0 } else { 0.3 } }
        }
        n if n.ends_with("_seconds_total") => Model::CounterDecimal { mean: 0.02, decimals: 2, idle: 0.3 },
        n if n.ends_with("_seconds_sum") => Model::CounterNanos { mean: 0.003 },
        n if n.ends_with("_bytes_total") => {
            Model::CounterInt { mean: 60_000.0, idle: if idle_device { 0.9 } else { 0.05 } }
        }
        n if n.ends_with("_bucket") || n.ends_with("_count") => Model::CounterInt { mean: 1.0, idle: 0.0 },
        n if n.starts_with("node_network_") || n.starts_with("node_disk_") => {
            Model::CounterInt { mean: 40.0, idle: if idle_device { 0.95 } else { 0.2 } }
        }
        n if n.starts_with("node_interrupts") || n.starts_with("node_netstat") => {
            Model::CounterInt { mean: 8.0, idle: 0.5 }
        }
        _ => Model::CounterInt { mean: 100.0, idle: 0.1 },
    }
}

fn add(out: &mut Vec<SeriesShape>, name: &str, counter: bool, labels: &[(&str, String)]) {
    let mut l = vec![("__name__".to_owned(), name.to_owned())];
    l.extend(labels.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let model = node_model(name, labels, counter);
    out.push(SeriesShape { labels: l, counter, model });
}

/// The next value of a node_exporter series. `units` holds the value in
/// the model's own units (hundredths of a second, bytes, ...), so that
/// decimal values come out as the nearest double, as exporters print them.
fn next_value(model: Model, units: &mut f64, rng: &mut StdRng) -> f64 {
    match model {
        Model::Const => *units,
        Model::CounterInt { mean, idle } => {
            if rng.random_bool(1.0 - idle.clamp(0.0, 1.0)) {
                *units += (rng.random_range(0.0..2.0 * mean)).round();
            }
            *units
        }
        Model::CounterDecimal { mean, decimals, idle } => {
            let scale = 10f64.powi(decimals);
            if rng.random_bool(1.0 - idle.clamp(0.0, 1.0)) {
                *units += (rng.random_range(0.0..2.0 * mean) * scale).round();
            }
            *units / scale
        }
        Model::CounterNanos { mean } => {
            *units += (rng.random_range(0.0..2.0 * mean) * 1e9).round();
            *units / 1e9
        }
        Model::GaugeInt { step, change } => {
            if rng.random_bool(change.clamp(0.0, 1.0)) {
                *units = (*units + step * rng.random_range(-8.0..8.0f64).round()).max(0.0);
            }
            *units
        }
        Model::GaugeNanos => {
            *units = rng.random_range(100_000.0..50_000_000.0f64).round();
            *units / 1e9
        }
    }
}

/// The series one node_exporter target exposes (about 1,200).
pub fn node_exporter_shapes() -> Vec<SeriesShape> {
    let mut s = Vec::new();
    let cpus = 16;
    for cpu in 0..cpus {
        for mode in ["idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user"] {
            add(&mut s, "node_cpu_seconds_total", true, &[("cpu", cpu.to_string()), ("mode", mode.into())]);
        }
        for mode in ["nice", "user"] {
            add(&mut s, "node_cpu_guest_seconds_total", true, &[("cpu", cpu.to_string()), ("mode", mode.into())]);
        }
        for m in [
            "node_schedstat_running_seconds_total",
            "node_schedstat_waiting_seconds_total",
            "node_schedstat_timeslices_total",
            "node_softnet_processed_total",
            "node_softnet_dropped_total",
            "node_softnet_times_squeezed_total",
        ] {
            add(&mut s, m, true, &[("cpu", cpu.to_string())]);
        }
        add(&mut s, "node_cpu_scaling_frequency_hertz", false, &[("cpu", cpu.to_string())]);
    }
    let fss = [
        ("/dev/sda1", "ext4", "/"),
        ("/dev/sda2", "ext4", "/home"),
        ("/dev/sdb1", "xfs", "/var/lib/data"),
        ("tmpfs", "tmpfs", "/run"),
        ("tmpfs", "tmpfs", "/dev/shm"),
        ("tmpfs", "tmpfs", "/run/lock"),
        ("/dev/sda3", "vfat", "/boot/efi"),
        ("overlay", "overlay", "/var/lib/docker/overlay2"),
    ];
    for (dev, fstype, mp) in fss {
        for m in ["avail_bytes", "free_bytes", "size_bytes", "files", "files_free", "readonly", "device_error"] {
            add(
                &mut s,
                &format!("node_filesystem_{m}"),
                false,
                &[("device", dev.into()), ("fstype", fstype.into()), ("mountpoint", mp.into())],
            );
        }
    }
    for dev in ["eth0", "eth1", "lo", "docker0", "veth1a2b3c", "veth4d5e6f", "br-1234", "wlan0"] {
        for dir in ["receive", "transmit"] {
            for m in ["bytes", "packets", "errs", "drop", "fifo", "compressed", "multicast", "frame"] {
                add(&mut s, &format!("node_network_{dir}_{m}_total"), true, &[("device", dev.into())]);
            }
        }
        for m in ["up", "mtu_bytes", "speed_bytes", "carrier", "info"] {
            add(&mut s, &format!("node_network_{m}"), false, &[("device", dev.into())]);
        }
    }
    for dev in ["sda", "sdb", "sdc", "nvme0n1", "nvme1n1", "dm-0", "dm-1", "loop0"] {
        for m in [
            "reads_completed_total",
            "reads_merged_total",
            "read_bytes_total",
            "read_time_seconds_total",
            "writes_completed_total",
            "writes_merged_total",
            "written_bytes_total",
            "write_time_seconds_total",
            "io_time_seconds_total",
            "io_time_weighted_seconds_total",
            "discards_completed_total",
            "discarded_sectors_total",
            "flush_requests_total",
        ] {
            add(&mut s, &format!("node_disk_{m}"), true, &[("device", dev.into())]);
        }
        add(&mut s, "node_disk_io_now", false, &[("device", dev.into())]);
    }
    for i in 0..60 {
        add(&mut s, &format!("node_memory_field{i:02}_bytes"), false, &[]);
    }
    for i in 0..110 {
        add(&mut s, &format!("node_vmstat_counter{i:03}"), true, &[]);
    }
    for i in 0..90 {
        add(&mut s, &format!("node_netstat_Tcp_field{i:02}"), true, &[]);
    }
    for irq in 0..40 {
        for cpu in 0..4 {
            add(
                &mut s,
                "node_interrupts_total",
                true,
                &[("cpu", cpu.to_string()), ("devices", format!("dev{irq}")), ("type", format!("IR-PCI-MSI-{irq}"))],
            );
        }
    }
    for c in 0..36 {
        let collector = format!("collector{c:02}");
        add(&mut s, "node_scrape_collector_duration_seconds", false, &[("collector", collector.clone())]);
        add(&mut s, "node_scrape_collector_success", false, &[("collector", collector)]);
    }
    // A classic histogram, as exposed by the exporter's own HTTP handler.
    for le in ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"] {
        add(&mut s, "promhttp_metric_handler_duration_seconds_bucket", true, &[("le", le.into())]);
    }
    add(&mut s, "promhttp_metric_handler_duration_seconds_sum", true, &[]);
    add(&mut s, "promhttp_metric_handler_duration_seconds_count", true, &[]);
    for i in 0..40 {
        add(&mut s, &format!("go_memstats_field{i:02}"), false, &[]);
    }
    for m in [
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
    ] {
        add(&mut s, m, m.ends_with("_total"), &[]);
    }
    s
}

/// TSBS "cpu-only" hosts: ten `cpu_usage_*` gauges per host with the
/// benchmark's host tags.
pub fn tsbs_cpu_shapes() -> Vec<SeriesShape> {
    let mut s = Vec::new();
    for f in [
        "usage_user",
        "usage_system",
        "usage_idle",
        "usage_nice",
        "usage_iowait",
        "usage_irq",
        "usage_softirq",
        "usage_steal",
        "usage_guest",
        "usage_guest_nice",
    ] {
        add(&mut s, &format!("cpu_{f}"), false, &[]);
    }
    s
}

/// avalanche-style series: 10 metrics × 100 series of gauges, each with ten
/// constant labels, as the avalanche load tester exposes them.
pub fn avalanche_shapes() -> Vec<SeriesShape> {
    let mut s = Vec::new();
    let consts: Vec<(&str, String)> = (0..10).map(|k| (LABEL_KEYS[k], format!("label_val_{k}"))).collect();
    for m in 0..10 {
        for id in 0..100 {
            let mut l = consts.clone();
            l.push(("series_id", id.to_string()));
            add(&mut s, &format!("avalanche_metric_mmmmm_0_{m}"), false, &l);
        }
    }
    s
}

const LABEL_KEYS: [&str; 10] = [
    "label_key_0",
    "label_key_1",
    "label_key_2",
    "label_key_3",
    "label_key_4",
    "label_key_5",
    "label_key_6",
    "label_key_7",
    "label_key_8",
    "label_key_9",
];

/// One series' labels.
type LabelSet = Vec<(String, String)>;

/// Which workload to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// node_exporter-like targets, ~1,160 series each.
    Node,
    /// TSBS cpu-only hosts, 10 series each.
    Tsbs,
    /// avalanche-style targets, 1,000 gauges each.
    Avalanche,
}

impl Kind {
    pub fn shapes(self) -> Vec<SeriesShape> {
        match self {
            Kind::Node => node_exporter_shapes(),
            Kind::Tsbs => tsbs_cpu_shapes(),
            Kind::Avalanche => avalanche_shapes(),
        }
    }
}

/// A generated workload: targets × series shapes × scrape rounds.
pub struct Workload {
    pub kind: Kind,
    pub shapes: Vec<SeriesShape>,
    pub targets: usize,
    pub rounds: usize,
    pub interval_ms: i64,
    pub start_ms: i64,
    pub seed: u64,
    /// Every this many rounds, the churning targets get a new identity
    /// (as if relabelled), so their series are replaced. 0 = no churn.
    pub churn_every: usize,
    /// Share of the targets that churn.
    pub churn_fraction: f64,
}

impl Workload {
    pub fn new(kind: Kind, targets: usize, rounds: usize, interval_ms: i64, start_ms: i64, seed: u64) -> Self {
        Self {
            kind,
            shapes: kind.shapes(),
            targets,
            rounds,
            interval_ms,
            start_ms,
            seed,
            churn_every: 0,
            churn_fraction: 0.0,
        }
    }

    /// Series alive at any one time.
    pub fn series(&self) -> usize {
        self.shapes.len() * self.targets
    }

    pub fn samples(&self) -> usize {
        self.series() * self.rounds
    }

    fn generation(&self, target: usize, round: usize) -> usize {
        let churns = self.churn_every > 0 && (target as f64) < self.churn_fraction * self.targets as f64;
        if churns { round / self.churn_every } else { 0 }
    }

    /// Full label sets of one target in one generation, sorted by name.
    fn target_labels(&self, target: usize, generation: usize) -> Vec<LabelSet> {
        let suffix = if generation > 0 { format!("-g{generation}") } else { String::new() };
        let identity: Vec<(String, String)> = match self.kind {
            Kind::Node => vec![
                ("instance".into(), format!("host-{target:05}{suffix}.example.com:9100")),
                ("job".into(), "node".into()),
            ],
            Kind::Avalanche => vec![
                ("instance".into(), format!("avalanche-{target:05}{suffix}:9001")),
                ("job".into(), "avalanche".into()),
            ],
            Kind::Tsbs => {
                let pick = |opts: &[&str], salt: usize| opts[(target * 31 + salt * 7) % opts.len()].to_owned();
                vec![
                    ("hostname".into(), format!("host_{target}{suffix}")),
                    (
                        "region".into(),
                        pick(
                            &[
                                "us-east-1",
                                "us-west-1",
                                "us-west-2",
                                "eu-west-1",
                                "eu-central-1",
                                "ap-southeast-1",
                                "ap-southeast-2",
                                "ap-northeast-1",
                                "sa-east-1",
                            ],
                            1,
                        ),
                    ),
                    ("datacenter".into(), format!("dc-{}", target % 3)),
                    ("rack".into(), (target % 100).to_string()),
                    ("os".into(), pick(&["Ubuntu16.10", "Ubuntu16.04LTS", "Ubuntu15.10"], 2)),
                    ("arch".into(), pick(&["x64", "x86"], 3)),
                    ("team".into(), pick(&["SF", "NYC", "LON", "CHI"], 4)),
                    ("service".into(), (target % 20).to_string()),
                    ("service_version".into(), (target % 2).to_string()),
                    ("service_environment".into(), pick(&["production", "staging", "test"], 5)),
                    ("job".into(), "tsbs".into()),
                ]
            }
        };
        self.shapes
            .iter()
            .map(|sh| {
                let mut l = sh.labels.clone();
                l.extend(identity.iter().cloned());
                l.sort();
                l
            })
            .collect()
    }

    /// Remote write 1.0 bodies (snappy-compressed) with their sample
    /// counts, in the order one sender shard sends them: `targets` are the
    /// targets this shard owns; each round's samples of them are cut into
    /// requests of `batch` samples.
    pub fn requests_v1(&self, targets: &[usize], batch: usize) -> Vec<(Vec<u8>, usize)> {
        let mut rng = StdRng::seed_from_u64(self.seed ^ targets.first().copied().unwrap_or(0) as u64);
        // Per target: its current generation and its series' label sets.
        let mut labels: Vec<(usize, Vec<LabelSet>)> = targets.iter().map(|t| (0, self.target_labels(*t, 0))).collect();
        // Starting values in each model's units.
        let mut values: Vec<Vec<f64>> = targets
            .iter()
            .map(|_| {
                self.shapes
                    .iter()
                    .map(|sh| match sh.model {
                        Model::GaugeInt { step, .. } => rng.random_range(1.0..100_000.0f64).round() * step,
                        Model::GaugeNanos => 10_000_000.0,
                        _ => rng.random_range(1.0..1_000_000.0f64).round(),
                    })
                    .collect()
            })
            .collect();
        let mut out = Vec::new();
        let mut pending: Vec<pb::TimeSeries> = Vec::with_capacity(batch);
        for r in 0..self.rounds {
            let t = self.start_ms + r as i64 * self.interval_ms;
            for (ti, &target) in targets.iter().enumerate() {
                let generation = self.generation(target, r);
                if labels[ti].0 != generation {
                    labels[ti] = (generation, self.target_labels(target, generation));
                }
                for (si, l) in labels[ti].1.iter().enumerate() {
                    let units = &mut values[ti][si];
                    let v = match self.kind {
                        Kind::Node => next_value(self.shapes[si].model, units, &mut rng),
                        Kind::Tsbs => {
                            *units = (*units % 100.0 + rng.random_range(-5.0..5.0f64)).clamp(0.0, 100.0);
                            *units
                        }
                        Kind::Avalanche => rng.random_range(0.0..100.0f64).round(),
                    };
                    pending.push(pb::TimeSeries {
                        labels: l.iter().map(|(n, v)| pb::Label { name: n.clone(), value: v.clone() }).collect(),
                        samples: vec![pb::Sample { value: v, timestamp: t }],
                        ..Default::default()
                    });
                    if pending.len() == batch {
                        out.push(encode_v1(std::mem::take(&mut pending)));
                    }
                }
            }
        }
        if !pending.is_empty() {
            out.push(encode_v1(pending));
        }
        out
    }
}

fn encode_v1(ts: Vec<pb::TimeSeries>) -> (Vec<u8>, usize) {
    let n = ts.len();
    let body = pb::WriteRequest { timeseries: ts, metadata: vec![] }.encode_to_vec();
    (snap::raw::Encoder::new().compress_vec(&body).unwrap_or_default(), n)
}

/// Re-encodes a 1.0 request as 2.0 (symbol table), for protocol comparisons.
pub fn v1_to_v2(body: &[u8]) -> Vec<u8> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap_or_default();
    let req = pb::WriteRequest::decode(raw.as_slice()).unwrap_or_default();
    let mut symbols = vec![String::new()];
    let mut index = std::collections::HashMap::new();
    let mut sym = |s: &str| -> u32 {
        *index.entry(s.to_owned()).or_insert_with(|| {
            symbols.push(s.to_owned());
            (symbols.len() - 1) as u32
        })
    };
    let timeseries = req
        .timeseries
        .iter()
        .map(|ts| v2::TimeSeries {
            labels_refs: ts.labels.iter().flat_map(|l| [sym(&l.name), sym(&l.value)]).collect(),
            samples: ts
                .samples
                .iter()
                .map(|s| v2::Sample { value: s.value, timestamp: s.timestamp, start_timestamp: 0 })
                .collect(),
            ..Default::default()
        })
        .collect();
    let out = v2::Request { symbols, timeseries }.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_1200_series_per_target_and_deterministic() {
        let shapes = node_exporter_shapes();
        assert!((1100..1400).contains(&shapes.len()), "{}", shapes.len());
        assert_eq!(tsbs_cpu_shapes().len(), 10);
        assert_eq!(avalanche_shapes().len(), 1000);
        let w = Workload::new(Kind::Node, 2, 2, 15_000, 0, 7);
        let a = w.requests_v1(&[0, 1], 2000);
        let b = w.requests_v1(&[0, 1], 2000);
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|r| r.1).sum::<usize>(), w.samples());
    }

    #[test]
    fn churn_replaces_the_series_of_churning_targets() {
        let series_of = |w: &Workload| -> std::collections::BTreeSet<Vec<(String, String)>> {
            let mut out = std::collections::BTreeSet::new();
            for (body, _) in w.requests_v1(&(0..w.targets).collect::<Vec<_>>(), 100_000) {
                let raw = snap::raw::Decoder::new().decompress_vec(&body).expect("snappy");
                let req = pb::WriteRequest::decode(raw.as_slice()).expect("proto");
                for ts in req.timeseries {
                    out.insert(ts.labels.into_iter().map(|l| (l.name, l.value)).collect());
                }
            }
            out
        };
        let mut w = Workload::new(Kind::Tsbs, 4, 6, 15_000, 0, 1);
        assert_eq!(series_of(&w).len(), 40);
        w.churn_every = 2;
        w.churn_fraction = 0.5;
        // Two of four hosts get a new identity every two rounds: 3 generations.
        assert_eq!(series_of(&w).len(), 20 + 2 * 10 * 3);
    }
}
