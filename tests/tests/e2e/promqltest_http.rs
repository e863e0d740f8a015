//! Prometheus's PromQL test scripts over HTTP: each script section's data is
//! remote-written into a fresh tenant of a real `cairn all`, and every eval
//! is asked through `/api/v1/query` and `/api/v1/query_range` with that
//! tenant, with Cairn's default flags. The results must be those the
//! in-process run gets, except for the evals that need delayed name
//! removal (on in Prometheus's test engine, off by default in Cairn as in
//! Prometheus): those fail as they fail in process without it.

use std::collections::HashSet;
use std::path::PathBuf;

use async_trait::async_trait;
use cairn_common::storage::Series;
use cairn_common::{Labels, Sample};
use cairn_e2e::{Cairn, client, push, series as ts, write_v1};
use cairn_promql::EngineOptions;
use cairn_promql::promqltest::run::{Backend, EngineBackend, run_script};
use cairn_promql::promqltest::script::{EvalCmd, EvalKind};
use cairn_promql::{InstantSample, QueryResult, QueryValue};
use promql_parser::parser::Expr;

struct HttpBackend {
    base: String,
    client: reqwest::Client,
    file: String,
    section: usize,
}

impl HttpBackend {
    fn tenant(&self) -> String {
        format!("promqltest-{}-{}", self.file.trim_end_matches(".test").replace('_', "-"), self.section)
    }
}

fn parse_value(v: &serde_json::Value) -> Result<f64, String> {
    match v.as_str() {
        Some("NaN") => Ok(f64::NAN),
        Some("+Inf") => Ok(f64::INFINITY),
        Some("-Inf") => Ok(f64::NEG_INFINITY),
        Some(s) => s.parse().map_err(|e| format!("bad value {s}: {e}")),
        None => Err(format!("value {v} is not a string")),
    }
}

fn parse_time(v: &serde_json::Value) -> Result<i64, String> {
    v.as_f64().map(|t| (t * 1000.0).round() as i64).ok_or_else(|| format!("bad timestamp {v}"))
}

fn parse_labels(v: &serde_json::Value) -> Result<Labels, String> {
    let m = v.as_object().ok_or_else(|| format!("bad metric {v}"))?;
    Ok(Labels::from_pairs(m.iter().map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn decode(body: &serde_json::Value) -> Result<QueryResult, String> {
    if body["status"] != "success" {
        return Err(body["error"].as_str().unwrap_or("unknown error").to_owned());
    }
    let data = &body["data"];
    let result = &data["result"];
    let value = match data["resultType"].as_str() {
        Some("scalar") => QueryValue::Scalar { t: parse_time(&result[0])?, v: parse_value(&result[1])? },
        Some("string") => {
            QueryValue::String { t: parse_time(&result[0])?, s: result[1].as_str().unwrap_or("").to_owned() }
        }
        Some("vector") => QueryValue::Vector(
            result
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    Ok(InstantSample {
                        labels: parse_labels(&s["metric"])?,
                        t: parse_time(&s["value"][0])?,
                        v: parse_value(&s["value"][1])?,
                    })
                })
                .collect::<Result<_, String>>()?,
        ),
        Some("matrix") => QueryValue::Matrix(
            result
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let samples = s["values"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| Ok(Sample::new(parse_time(&p[0])?, parse_value(&p[1])?)))
                        .collect::<Result<_, String>>()?;
                    Ok(Series { labels: parse_labels(&s["metric"])?, samples })
                })
                .collect::<Result<_, String>>()?,
        ),
        other => return Err(format!("unknown result type {other:?}")),
    };
    Ok(QueryResult { value, warnings: strings(&body["warnings"]), infos: strings(&body["infos"]) })
}

fn secs(ms: i64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

#[async_trait]
impl Backend for HttpBackend {
    async fn load(&mut self, series: Vec<Series>) -> Result<(), String> {
        // A script may give one series twice in a load; its meaning is the
        // last value per timestamp, which is what is sent (Cairn, like
        // Prometheus's receiver, refuses two values for one timestamp).
        let mut merged: std::collections::BTreeMap<Labels, std::collections::BTreeMap<i64, f64>> = Default::default();
        for s in series {
            let e = merged.entry(s.labels).or_default();
            for x in s.samples {
                e.insert(x.t, x.v);
            }
        }
        let series = merged
            .into_iter()
            .map(|(labels, m)| Series { labels, samples: m.into_iter().map(|(t, v)| Sample::new(t, v)).collect() });
        // Requests of at most 5,000 samples, each series' samples in order.
        let mut batch = Vec::new();
        let mut n = 0;
        for s in series {
            for chunk in s.samples.chunks(5000) {
                let labels: Vec<(&str, &str)> = s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())).collect();
                let samples: Vec<(i64, f64)> = chunk.iter().map(|x| (x.t, x.v)).collect();
                n += samples.len();
                batch.push(ts(&labels, &samples));
                if n >= 5000 {
                    self.send(std::mem::take(&mut batch)).await?;
                    n = 0;
                }
            }
        }
        if !batch.is_empty() {
            self.send(batch).await?;
        }
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), String> {
        self.section += 1;
        Ok(())
    }

    async fn query(&mut self, text: &str, _expr: Expr, kind: &EvalKind) -> Result<QueryResult, String> {
        let q = text.to_owned();
        let req = match *kind {
            EvalKind::Instant { t } => self
                .client
                .post(format!("{}/api/v1/query", self.base))
                .form(&[("query", q.as_str()), ("time", &secs(t))]),
            EvalKind::Range { start, end, step } => self
                .client
                .post(format!("{}/api/v1/query_range", self.base))
                .form(&[("query", q.as_str()), ("start", &secs(start)), ("end", &secs(end)), ("step", &secs(step))]),
        };
        let resp = req.header("X-Scope-OrgID", self.tenant()).send().await.map_err(|e| e.to_string())?;
        let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
        decode(&body)
    }
}

impl HttpBackend {
    async fn send(&self, batch: Vec<cairn_proto::prometheus::TimeSeries>) -> Result<(), String> {
        let tenant = self.tenant();
        let (status, body) = push(&self.client, &format!("{}/api/v1/push", self.base), write_v1(batch), Some(&tenant))
            .await
            .map_err(|e| e.to_string())?;
        if status != 204 {
            return Err(format!("loading data failed with {status}: {body}"));
        }
        Ok(())
    }
}

/// The same reviewed skips as the in-process run (they share the list).
#[path = "../../../crates/cairn-promql/tests/support/skips.rs"]
mod skips;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_scripts_over_http() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/promqltest");
    if !dir.is_dir() {
        eprintln!("SKIPPED: ../shared/promqltest not found; upstream PromQL scripts not run over HTTP");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    // Default flags: the samples lie in 1970, and acknowledged data must be
    // queryable however old it is.
    let cairn = Cairn::start(&data.path().join("data"), &[]).expect("start cairn");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let (mut p, mut f, mut s, mut delayed) = (0, 0, 0, 0);
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        let text = std::fs::read_to_string(&file).expect("read");
        let skip_here =
            |e: &EvalCmd, h: &HashSet<String>| skips::skip(&name, e, h).or_else(|| skips::http_only(&name, e));
        // The evals that need delayed name removal (Prometheus's test engine
        // turns it on; Cairn and Prometheus default to off): those that
        // fail in process without it. In process with it, all pass.
        let mut plain = EngineBackend::with_options(EngineOptions { max_samples: 10_000, ..Default::default() });
        let need_delayed: HashSet<usize> = match run_script(&text, &mut plain, &skip_here).await {
            Ok(o) => o.failures.iter().filter_map(|fl| fl.split(':').next()?.parse().ok()).collect(),
            Err(e) => panic!("{name}: the in-process run could not run: {e}"),
        };
        let mut backend = HttpBackend { base: cairn.url(""), client: client(), file: name.clone(), section: 0 };
        match run_script(&text, &mut backend, &skip_here).await {
            Ok(o) => {
                println!("{name}: passed {} failed {} skipped {}", o.passed, o.failed, o.skipped);
                for fl in &o.failures {
                    let line: Option<usize> = fl.split(':').next().and_then(|l| l.parse().ok());
                    if line.is_some_and(|l| need_delayed.contains(&l)) {
                        delayed += 1;
                    } else {
                        println!("  FAIL {name}:{fl}");
                        f += 1;
                    }
                }
                p += o.passed;
                s += o.skipped;
            }
            Err(e) => {
                println!("{name}: could not run: {e}");
                f += 1;
            }
        }
    }
    println!(
        "TOTAL over HTTP with default flags: passed {p} failed {f} skipped {s}; failed as without delayed name removal: {delayed}"
    );
    assert_eq!(f, 0, "upstream PromQL evals failed over HTTP (see FAIL lines above)");
}
