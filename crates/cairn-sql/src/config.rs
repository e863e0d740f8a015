//! SQL configuration (YAML section `sql`, flags `--sql.*`).

use serde::{Deserialize, Serialize};

use crate::limits;

#[derive(Clone, Debug, PartialEq, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// Most rows one SQL query returns; more are cut off and the answer
    /// says so.
    #[arg(
        long = "sql.max-rows",
        id = "sql.max_rows",
        env = "CAIRN_SQL_MAX_ROWS",
        value_name = "N",
        default_value_t = 100_000
    )]
    pub max_rows: usize,

    /// Longest SQL query accepted, in bytes (0 = no limit).
    #[arg(
        long = "sql.max-query-bytes",
        id = "sql.max_query_bytes",
        env = "CAIRN_SQL_MAX_QUERY_BYTES",
        value_name = "BYTES",
        default_value_t = limits::DEFAULT_MAX_BYTES
    )]
    pub max_query_bytes: usize,

    /// Deepest SQL expression accepted: parentheses and chained operators
    /// (`a OR b OR ...`) each count a level. Checked before parsing (0 = no
    /// limit, which lets such a query abort the process).
    #[arg(
        long = "sql.max-expression-depth",
        id = "sql.max_expression_depth",
        env = "CAIRN_SQL_MAX_EXPRESSION_DEPTH",
        value_name = "N",
        default_value_t = limits::DEFAULT_MAX_DEPTH
    )]
    pub max_expression_depth: usize,

    /// Memory one SQL query's joins, sorts and aggregations may hold, in
    /// bytes (0 = only the limit all queries share,
    /// `--query.memory-limit-bytes`). Nothing spills to disk: a query over
    /// it fails with an error naming this flag.
    #[arg(
        long = "sql.max-memory-bytes",
        id = "sql.max_memory_bytes",
        env = "CAIRN_SQL_MAX_MEMORY_BYTES",
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_MEMORY_BYTES
    )]
    pub max_memory_bytes: usize,

    /// SQL queries run at once; more wait their turn (within the query
    /// timeout). They run on threads of their own, apart from ingestion.
    #[arg(
        long = "sql.max-concurrency",
        id = "sql.max_concurrency",
        env = "CAIRN_SQL_MAX_CONCURRENCY",
        value_name = "N",
        default_value_t = 4
    )]
    pub max_concurrency: usize,
}

/// The default of `--sql.max-memory-bytes`: 1 GiB.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 1 << 30;

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            max_rows: 100_000,
            max_query_bytes: limits::DEFAULT_MAX_BYTES,
            max_expression_depth: limits::DEFAULT_MAX_DEPTH,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
            max_concurrency: 4,
        }
    }
}

impl SqlConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrency == 0 {
            return Err("sql.max_concurrency must be at least 1".into());
        }
        Ok(())
    }
}
