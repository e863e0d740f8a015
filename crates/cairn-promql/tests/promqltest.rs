//! Runs Prometheus's PromQL test scripts against the engine.
//!
//! The scripts live in `../shared/promqltest/` beside the repository; when
//! that folder is absent the test says so and passes nothing off as run.

use std::collections::HashSet;
use std::path::PathBuf;

use cairn_promql::promqltest::run::{EngineBackend, run_script};
use cairn_promql::promqltest::script::EvalCmd;

fn scripts_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promqltest");
    dir.is_dir().then_some(dir)
}

// Shared with the HTTP run of the same scripts; `http_only` is its part.
#[allow(dead_code)]
#[path = "support/skips.rs"]
mod skips;

use skips::skip;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_scripts() {
    let Some(dir) = scripts_dir() else {
        eprintln!("SKIPPED: ../shared/promqltest not found; upstream PromQL scripts not run");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    let (mut p, mut f, mut s) = (0, 0, 0);
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let mut backend = EngineBackend::default();
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        let skip_here = |e: &EvalCmd, h: &HashSet<String>| skip(&name, e, h);
        match run_script(&text, &mut backend, &skip_here).await {
            Ok(o) => {
                println!("{name}: passed {} failed {} skipped {}", o.passed, o.failed, o.skipped);
                for fl in &o.failures {
                    println!("  FAIL {name}:{fl}");
                }
                for sk in &o.skips {
                    let why = sk.split_once(": ").map(|x| x.1).unwrap_or(sk);
                    *reasons.entry(why.to_owned()).or_default() += 1;
                }
                p += o.passed;
                f += o.failed;
                s += o.skipped;
            }
            Err(e) => {
                println!("{name}: could not run: {e}");
                f += 1;
            }
        }
    }
    println!("TOTAL: passed {p} failed {f} skipped {s}");
    for (why, n) in &reasons {
        println!("  skipped {n:4}: {why}");
    }
    assert_eq!(f, 0, "upstream PromQL evals failed (see FAIL lines above)");
}
