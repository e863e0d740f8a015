//! Querier configuration (YAML section `querier`, flags `--query.*`).

use cairn_common::PromDuration;
use serde::{Deserialize, Serialize};

/// The default of `--query.memory-limit-bytes`: 4 GiB.
pub const DEFAULT_MEMORY_LIMIT_BYTES: usize = 4 << 30;

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuerierConfig {
    /// How far back an instant selector looks for the latest sample.
    #[arg(
        long = "query.lookback-delta",
        id = "querier.lookback_delta",
        env = "CAIRN_QUERY_LOOKBACK_DELTA",
        value_name = "DURATION",
        default_value = "5m"
    )]
    pub lookback_delta: PromDuration,

    /// Longest a query may run before it is aborted (requests may ask for
    /// less with `timeout=`).
    #[arg(
        long = "query.timeout",
        id = "querier.timeout",
        env = "CAIRN_QUERY_TIMEOUT",
        value_name = "DURATION",
        default_value = "2m"
    )]
    pub timeout: PromDuration,

    /// Most samples one query may load or hold in memory at once (0 = no
    /// limit). A query over it fails with an error naming this flag.
    #[arg(
        long = "query.max-samples",
        id = "querier.max_samples",
        env = "CAIRN_QUERY_MAX_SAMPLES",
        value_name = "N",
        default_value_t = 50_000_000
    )]
    pub max_samples: usize,

    /// Memory all queries of this process may hold together, PromQL and
    /// SQL, in bytes (0 = no limit). A query that would take more fails
    /// with an error naming this flag; the others go on.
    #[arg(
        long = "query.memory-limit-bytes",
        id = "querier.memory_limit_bytes",
        env = "CAIRN_QUERY_MEMORY_LIMIT_BYTES",
        value_name = "BYTES",
        default_value_t = DEFAULT_MEMORY_LIMIT_BYTES
    )]
    pub memory_limit_bytes: usize,

    /// Most series one query may select (0 = no limit). A query over it
    /// fails with an error naming this flag.
    #[arg(
        long = "query.max-series",
        id = "querier.max_series",
        env = "CAIRN_QUERY_MAX_SERIES",
        value_name = "N",
        default_value_t = 0
    )]
    pub max_series: usize,

    /// Queries evaluated at once; more wait their turn.
    #[arg(
        long = "query.max-concurrency",
        id = "querier.max_concurrency",
        env = "CAIRN_QUERY_MAX_CONCURRENCY",
        value_name = "N",
        default_value_t = 20
    )]
    pub max_concurrency: usize,

    /// Longest PromQL expression accepted, in bytes (0 = no limit).
    #[arg(
        long = "query.max-expression-bytes",
        id = "querier.max_expression_bytes",
        env = "CAIRN_QUERY_MAX_EXPRESSION_BYTES",
        value_name = "BYTES",
        default_value_t = cairn_promql::limits::DEFAULT_MAX_BYTES
    )]
    pub max_expression_bytes: usize,

    /// Deepest PromQL expression accepted: nested parentheses, calls and
    /// chained operators (`1+1+...`) each count a level. Checked before
    /// parsing, so that no query can overflow a thread's stack (0 = no
    /// limit, which lets such a query abort the process).
    #[arg(
        long = "query.max-expression-depth",
        id = "querier.max_expression_depth",
        env = "CAIRN_QUERY_MAX_EXPRESSION_DEPTH",
        value_name = "N",
        default_value_t = cairn_promql::limits::DEFAULT_MAX_DEPTH
    )]
    pub max_expression_depth: usize,

    /// Step of subqueries written without one (`x[5m:]`).
    #[arg(
        long = "query.default-subquery-step",
        id = "querier.default_subquery_step",
        env = "CAIRN_QUERY_DEFAULT_SUBQUERY_STEP",
        value_name = "DURATION",
        default_value = "1m"
    )]
    pub default_subquery_step: PromDuration,

    /// Keep `__name__` through evaluation and drop it only from results, as
    /// Prometheus does with its `promql-delayed-name-removal` feature (and
    /// as its own PromQL tests assume). Off by default, like Prometheus.
    #[arg(
        long = "query.delayed-name-removal",
        id = "querier.delayed_name_removal",
        env = "CAIRN_QUERY_DELAYED_NAME_REMOVAL",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub delayed_name_removal: bool,

    /// Deprecated, no effect: ingesters are asked for every range, and a
    /// head that holds nothing in it answers at once. Accepted so that
    /// existing configurations still load.
    #[arg(
        long = "querier.query-ingesters-within",
        id = "querier.query_ingesters_within",
        env = "CAIRN_QUERIER_QUERY_INGESTERS_WITHIN",
        value_name = "DURATION",
        default_value = "13h"
    )]
    pub query_ingesters_within: PromDuration,

    /// In a cluster, a read asks only as many ingesters as a complete
    /// answer needs. When one of them is still answering after the first
    /// answer came in and as long again (at least this long), the ingesters
    /// left out are asked too and the first complete set of answers wins.
    #[arg(
        long = "querier.ingester-hedge-delay",
        id = "querier.ingester_hedge_delay",
        env = "CAIRN_QUERIER_INGESTER_HEDGE_DELAY",
        value_name = "DURATION",
        default_value = "50ms"
    )]
    pub ingester_hedge_delay: PromDuration,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        Self {
            lookback_delta: PromDuration::from_secs(300),
            timeout: PromDuration::from_secs(120),
            max_samples: 50_000_000,
            memory_limit_bytes: DEFAULT_MEMORY_LIMIT_BYTES,
            max_series: 0,
            max_concurrency: 20,
            max_expression_bytes: cairn_promql::limits::DEFAULT_MAX_BYTES,
            max_expression_depth: cairn_promql::limits::DEFAULT_MAX_DEPTH,
            default_subquery_step: PromDuration::from_secs(60),
            delayed_name_removal: false,
            query_ingesters_within: PromDuration::from_secs(13 * 3600),
            ingester_hedge_delay: PromDuration::from_millis(50),
        }
    }
}

impl QuerierConfig {
    pub fn expr_limits(&self) -> cairn_promql::ExprLimits {
        cairn_promql::ExprLimits { max_bytes: self.max_expression_bytes, max_depth: self.max_expression_depth }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.lookback_delta.is_zero() {
            return Err("querier.lookback_delta must be positive".into());
        }
        if self.timeout.is_zero() {
            return Err("querier.timeout must be positive".into());
        }
        if self.max_concurrency == 0 {
            return Err("querier.max_concurrency must be at least 1".into());
        }
        if self.default_subquery_step.is_zero() {
            return Err("querier.default_subquery_step must be positive".into());
        }
        Ok(())
    }
}
