//! Entry point for coverage-guided fuzzing of the PromQL front end and
//! engine (`tests/fuzz`); the corpus is replayed as an ordinary test.
//! Whatever the text, parsing and evaluation return: no panic, no stack
//! overflow, no unbounded memory or time.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn_common::memory::MemoryBudget;
use cairn_common::storage::Series;
use cairn_common::{Labels, Sample, TenantId};

use crate::promqltest::mem::MemStorage;
use crate::{Engine, EngineOptions, ExprLimits};

thread_local! {
    static RUNTIME: Option<tokio::runtime::Runtime> =
        tokio::runtime::Builder::new_current_thread().enable_all().build().ok();
}

/// A few series with samples at odd places, for queries to read.
fn storage() -> &'static Arc<MemStorage> {
    static STORE: OnceLock<Arc<MemStorage>> = OnceLock::new();
    STORE.get_or_init(|| {
        let s = MemStorage::default();
        for (i, name) in ["up", "http_requests_total", "x"].iter().enumerate() {
            for job in ["a", "b"] {
                let labels = Labels::from_pairs([("__name__", *name), ("job", job), ("le", "0.5")]);
                let samples =
                    (0..50).map(|k| Sample::new(k * 15_000 + i as i64, (k * (i as i64 + 1)) as f64)).collect();
                s.add(Series { labels, samples });
            }
        }
        Arc::new(s)
    })
}

/// The first eight bytes choose the evaluation time and step (any `i64`,
/// as an API request may give); the rest is the query text.
pub fn query(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (head, text) = data.split_at(8);
    let Ok(text) = std::str::from_utf8(text) else { return };
    let mut word = [0u8; 8];
    word.copy_from_slice(head);
    let t = i64::from_le_bytes(word);
    // Small limits keep each run short; the checks are what is fuzzed.
    let limits = ExprLimits { max_bytes: 4096, max_depth: 100 };
    let Ok(expr) = crate::parse_with(text, &limits) else { return };
    let _ = expr.prettify();
    let engine = Engine::new(EngineOptions {
        max_samples: 200_000,
        budget: Some(MemoryBudget::new(64 << 20, "--query.memory-limit-bytes")),
        timeout: Duration::from_secs(2),
        ..Default::default()
    });
    let tenant = TenantId::new("fuzz").unwrap_or_else(|_| unreachable!("valid tenant"));
    RUNTIME.with(|rt| {
        let Some(rt) = rt else { return };
        rt.block_on(async {
            let store = storage().as_ref();
            let _ = engine.instant(store, &tenant, expr.clone(), t).await;
            let step = (t % 1_000_000).unsigned_abs() as i64 + 1;
            let _ = engine.range(store, &tenant, expr, t, t.saturating_add(step.saturating_mul(20)), step).await;
        });
    });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// A duration promql-parser accepts, from nothing up to 4294967295y.
    fn duration() -> impl Strategy<Value = String> {
        prop_oneof![
            (1u32..u32::MAX).prop_map(|n| format!("{n}y")),
            (1u32..100_000).prop_map(|n| format!("{n}ms")),
            (1u64..9_000_000_000).prop_map(|n| n.to_string()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Any evaluation time in `i64`, any offset, range, step and `@`
        /// the parser takes: the engine answers or refuses, never panics.
        #[test]
        fn the_engine_survives_the_whole_i64_range(
            t in any::<i64>(),
            d in duration(),
            step in prop_oneof![Just("1ms".to_owned()), Just("1m".to_owned()), duration()],
            at in any::<i64>(),
            which in 0usize..9,
        ) {
            let at = format!("{:.3}", (at as f64 / 1000.0).clamp(-9.2e15, 9.2e15));
            let text = match which {
                0 => format!("rate(up[{d}])"),
                1 => format!("up offset {d}"),
                2 => format!("up offset -{d}"),
                3 => format!("max_over_time(up[{d}:{step}])"),
                4 => format!("up @ {at}"),
                5 => format!("timestamp(up offset -{d})"),
                6 => format!("count_over_time(vector(1)[{d}:{step}] offset -{d})"),
                7 => format!("sum_over_time(up[{d}] @ {at}) - time()"),
                _ => format!("rate(http_requests_total[{d}:{step}] offset {d}) + range()"),
            };
            let mut data = t.to_le_bytes().to_vec();
            data.extend_from_slice(text.as_bytes());
            super::query(&data);
        }
    }
}
