//! Runs Prometheus's PromQL test scripts against the engine.
//!
//! The scripts live in `../shared/promqltest/` beside the repository; when
//! that folder is absent the test says so and passes nothing off as run.

use std::collections::HashSet;
use std::path::PathBuf;

use cairn_promql::promqltest::run::{EngineBackend, run_script};
use cairn_promql::promqltest::script::{EvalCmd, Expected};

fn scripts_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/promqltest");
    dir.is_dir().then_some(dir)
}

/// Evals outside Cairn's float engine: native histograms.
fn skip(e: &EvalCmd, hist: &HashSet<String>) -> Option<String> {
    if e.expects_histograms {
        return Some("expects native histograms".into());
    }
    let uses_hist = hist.iter().any(|m| {
        e.expr.match_indices(m.as_str()).any(|(i, _)| {
            let after = e.expr[i + m.len()..].chars().next();
            let before = e.expr[..i].chars().last();
            !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    });
    if uses_hist {
        return Some("reads native histograms".into());
    }
    if matches!(e.expected, Expected::Series(_))
        && e.expr.contains("histogram_")
        && !e.expr.contains("histogram_quantile")
    {
        return Some("native histogram function".into());
    }
    None
}

/// Files every eval of which (outside the skips above) must pass. The
/// others are reported with their failures; they join this list as the
/// engine completes.
const MUST_PASS: &[&str] = &[
    "at_modifier.test",
    "collision.test",
    "literals.test",
    "selectors.test",
    "staleness.test",
    "subquery.test",
    "trig_functions.test",
];

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
    let mut broken = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let mut backend = EngineBackend::default();
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        match run_script(&text, &mut backend, &skip).await {
            Ok(o) => {
                println!("{name}: passed {} failed {} skipped {}", o.passed, o.failed, o.skipped);
                for fl in &o.failures {
                    println!("  FAIL {name}:{fl}");
                }
                if MUST_PASS.contains(&name.as_str()) && o.failed > 0 {
                    broken.push(name.clone());
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
    assert!(broken.is_empty(), "files that must pass have failures: {broken:?}");
}
