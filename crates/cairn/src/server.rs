//! The HTTP server's own routes (readiness, health, metrics) and the
//! request-duration middleware every route goes through.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_common::metrics::{Registry, duration_buckets};
use parking_lot::Mutex;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use cairn_common::service::Service;

type RouteLabels = Vec<(&'static str, String)>;

/// State shared by the ops routes.
#[derive(Clone)]
pub struct Ops {
    pub roles: Arc<Vec<Box<dyn Service>>>,
    pub registry: Arc<Mutex<Registry>>,
    pub durations: Family<RouteLabels, Histogram>,
    pub process: Arc<ProcessMetrics>,
}

/// Process metrics refreshed on each scrape.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    rss: Gauge,
    cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    open_fds: Gauge,
    start_time: Gauge,
}

impl ProcessMetrics {
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let m = Arc::new(Self::default());
        registry.register("process_resident_memory_bytes", "Resident memory size in bytes", m.rss.clone());
        registry.register(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds",
            m.cpu_seconds.clone(),
        );
        registry.register("process_open_fds", "Number of open file descriptors", m.open_fds.clone());
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            m.start_time.clone(),
        );
        m.start_time.set(cairn_common::time::now_ms() / 1000);
        m
    }

    fn refresh(&self) {
        if let Ok(status) = std::fs::read_to_string("/proc/self/status")
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        {
            self.rss.set(kb * 1024);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the command name: utime is 14th, stime 15th overall.
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
                // Clock ticks; USER_HZ is 100 on every Linux platform Cairn targets.
                self.cpu_seconds.set((ticks(11) + ticks(12)) as f64 / 100.0);
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(d.count() as i64);
        }
    }
}

pub fn request_durations(registry: &mut Registry) -> Family<RouteLabels, Histogram> {
    let f = Family::<RouteLabels, Histogram>::new_with_constructor(|| Histogram::new(duration_buckets()));
    registry.register(
        "cairn_request_duration_seconds",
        "Time to serve HTTP requests, by method, route and status code",
        f.clone(),
    );
    f
}

pub fn ops_routes(ops: Ops) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/-/ready", get(ready))
        .route("/-/healthy", get(|| async { "Healthy\n" }))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

async fn ready(State(ops): State<Ops>) -> Response {
    let waiting: Vec<&str> = ops.roles.iter().filter(|r| !r.is_ready()).map(|r| r.name()).collect();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: waiting for {}\n", waiting.join(", "))).into_response()
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    ops.process.refresh();
    let mut out = String::with_capacity(16 * 1024);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &ops.registry.lock()) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n")).into_response();
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}

/// Observes every request's duration by method, matched route and status.
pub async fn track(State(f): State<Family<RouteLabels, Histogram>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "other".into());
    let resp = next.run(req).await;
    let labels = vec![("method", method), ("route", route), ("status_code", resp.status().as_u16().to_string())];
    f.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
    resp
}
