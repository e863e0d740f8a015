//! SQL over the long-term tier.
//!
//! ```text
//!  POST /api/v1/sql  query=<SQL> [start=] [end=]   (X-Scope-OrgID: tenant)
//!    1. the tenant's bucket index -> live blocks overlapping [start, end]
//!    2. table `blocks`: those Parquet files as they are (one row per
//!       series), through object_store, schema = the union of their labels
//!    3. view `samples`: one row per sample
//!         metric, <one column per label>, timestamp, value
//!    4. the user's query (read-only: no DDL, DML or SET), at most
//!       --sql.max-rows rows, within --query.timeout
//! ```
//!
//! DataFusion plans and runs the query; label predicates are pushed into
//! the Parquet scan, so `WHERE metric = 'up'` reads only the row groups
//! and pages of `up`.
//!
//! Queries are bounded before and while they run: the text's length and
//! expression depth are checked before parsing (`limits`), at most
//! `--sql.max-concurrency` run at once, on a runtime of their own with
//! large stacks, each with a memory pool of `--sql.max-memory-bytes` drawn
//! from the budget all queries share and no spilling, and every plan node
//! checks the deadline and the client's presence between batches (`guard`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use cairn_common::memory::{BudgetExceeded, MemoryBudget};
use cairn_common::status::CodedError;
use cairn_common::storage::{LabelsRequest, Queryable};
use cairn_common::{ErrorCode, TenantId};
use cairn_storage::BlockStore;
use cairn_storage::block::{LABEL_PREFIX, schema};
use cairn_storage::paths;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use serde::Serialize;
use tokio::sync::Semaphore;

pub mod config;
mod guard;
pub mod http;
pub mod limits;

pub use config::SqlConfig;

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The query is wrong (parse, plan, types, forbidden statement).
    #[error("{0}")]
    BadQuery(String),
    /// Object storage could not be read.
    #[error("long-term storage: {0}")]
    Unavailable(String),
    /// A limit stopped the query; the message names the flag.
    #[error("{0}")]
    Limit(String),
    /// Other queries hold the memory this one needs; retrying later may
    /// succeed.
    #[error("{0}")]
    Busy(String),
    #[error("query timed out after {0:?}")]
    Timeout(Duration),
    #[error("query was canceled")]
    Canceled,
    #[error("{0}")]
    Internal(String),
}

impl CodedError for SqlError {
    fn error_code(&self) -> ErrorCode {
        match self {
            SqlError::BadQuery(_) => ErrorCode::BadData,
            SqlError::Unavailable(_) => ErrorCode::Unavailable,
            SqlError::Limit(_) => ErrorCode::Execution,
            SqlError::Busy(_) => ErrorCode::Unavailable,
            SqlError::Timeout(_) => ErrorCode::Timeout,
            SqlError::Canceled => ErrorCode::Canceled,
            SqlError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        let msg = e.to_string();
        let root = e.find_root();
        if let DataFusionError::External(b) = root
            && let Some(b) = b.downcast_ref::<BudgetExceeded>()
        {
            return if b.transient() { SqlError::Busy(b.to_string()) } else { SqlError::Limit(b.to_string()) };
        }
        match root {
            DataFusionError::ResourcesExhausted(m) => SqlError::Limit(m.clone()),
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => SqlError::BadQuery(msg),
            DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => SqlError::Unavailable(msg),
            _ => SqlError::Internal(msg),
        }
    }
}

/// A query's answer: column names and types, rows of JSON values.
#[derive(Debug, Serialize)]
pub struct SqlResult {
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// Rows beyond the row limit were cut off.
    pub truncated: bool,
}

#[derive(Debug, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Stack of the threads SQL runs on: deep enough for the deepest plan
/// `--sql.max-expression-depth` allows, with a wide margin.
pub const SQL_STACK_BYTES: usize = 64 << 20;

/// The threads SQL runs on, apart from ingestion and PromQL: a runaway
/// query occupies these, not the threads that acknowledge writes.
struct SqlRuntime(Option<tokio::runtime::Runtime>);

impl Drop for SqlRuntime {
    fn drop(&mut self) {
        // Dropping a runtime may not block inside another runtime.
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs SQL over one tenant's blocks. Cheap to clone.
#[derive(Clone)]
pub struct Sql {
    blocks: BlockStore,
    cfg: SqlConfig,
    timeout: Duration,
    budget: Arc<MemoryBudget>,
    permits: Arc<Semaphore>,
    runtime: Arc<SqlRuntime>,
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sql").field("cfg", &self.cfg).finish()
    }
}

/// Cancels a query's work on the SQL runtime when the caller goes away.
struct CancelOnDrop(Arc<guard::Stop>, tokio::task::AbortHandle);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
        self.1.abort();
    }
}

/// The URL under which the bucket is registered with DataFusion.
const BUCKET_URL: &str = "cairn://bucket";

/// The column a label becomes in `samples`: `__name__` is `metric`, other
/// labels keep their name unless it is taken by a fixed column.
fn column_for_label(name: &str) -> String {
    match name {
        "__name__" => "metric".to_owned(),
        "metric" | "timestamp" | "value" => format!("label_{name}"),
        _ => name.to_owned(),
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The `samples` view over the `blocks` table.
fn samples_view(label_names: &BTreeSet<String>) -> String {
    let labels: Vec<String> = label_names
        .iter()
        .map(|n| format!("{} AS {}", quote(&format!("{LABEL_PREFIX}{n}")), quote(&column_for_label(n))))
        .collect();
    let outer: Vec<String> = label_names.iter().map(|n| quote(&column_for_label(n))).collect();
    let mut inner = labels.clone();
    inner.extend([
        "value_scale".to_owned(),
        "unnest(timestamps) AS t".to_owned(),
        "unnest(values_int) AS vi".to_owned(),
        "unnest(values_float) AS vf".to_owned(),
    ]);
    // Powers of ten as literals: exact, so values come back bit for bit.
    let pow10: Vec<String> = (0..=9).map(|s| format!("WHEN {s} THEN 1e{s}")).collect();
    let mut select = outer;
    select.push("to_timestamp_millis(t) AS \"timestamp\"".to_owned());
    select.push(format!("COALESCE(vf, CAST(vi AS DOUBLE) / CASE value_scale {} END) AS \"value\"", pow10.join(" ")));
    format!("CREATE VIEW samples AS SELECT {} FROM (SELECT {} FROM blocks)", select.join(", "), inner.join(", "))
}

impl Sql {
    /// Answers are bounded by `cfg`, take at most `timeout`, and hold
    /// memory from `budget`, shared with the other queries of the process.
    pub fn new(blocks: BlockStore, cfg: SqlConfig, timeout: Duration, budget: Arc<MemoryBudget>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-sql")
            .thread_stack_size(SQL_STACK_BYTES)
            .enable_all()
            .build()
            .ok();
        let permits = Arc::new(Semaphore::new(cfg.max_concurrency.max(1)));
        Self { blocks, cfg, timeout, budget, permits, runtime: Arc::new(SqlRuntime(runtime)) }
    }

    /// Runs `sql` over the tenant's blocks overlapping `[start, end]`.
    /// Dropping the returned future (the client went away) stops the query.
    pub async fn query(&self, tenant: &TenantId, sql: &str, start: i64, end: i64) -> Result<SqlResult, SqlError> {
        limits::check(sql, self.cfg.max_query_bytes, self.cfg.max_expression_depth).map_err(SqlError::BadQuery)?;
        let deadline = std::time::Instant::now() + self.timeout;
        let _permit = tokio::time::timeout_at(deadline.into(), self.permits.clone().acquire_owned())
            .await
            .map_err(|_| SqlError::Timeout(self.timeout))?
            .map_err(|_| SqlError::Unavailable("the SQL engine is shutting down".into()))?;
        let stop = guard::Stop::new(deadline);
        let this = self.clone();
        let (tenant, sql) = (tenant.clone(), sql.to_owned());
        let work = {
            let stop = stop.clone();
            async move { this.run(&tenant, &sql, start, end, stop).await }
        };
        let Some(rt) = self.runtime.0.as_ref() else {
            return Err(SqlError::Internal("the SQL runtime could not be started".into()));
        };
        let task = rt.spawn(work);
        let _cancel = CancelOnDrop(stop, task.abort_handle());
        let result = match tokio::time::timeout_at(deadline.into(), task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_cancelled() => Err(SqlError::Canceled),
            Ok(Err(e)) => Err(SqlError::Internal(format!("the SQL query failed: {e}"))),
            Err(_) => Err(SqlError::Timeout(self.timeout)),
        };
        match result {
            Err(SqlError::Canceled) if std::time::Instant::now() > deadline => Err(SqlError::Timeout(self.timeout)),
            other => other,
        }
    }

    async fn run(
        &self,
        tenant: &TenantId,
        sql: &str,
        start: i64,
        end: i64,
        stop: Arc<guard::Stop>,
    ) -> Result<SqlResult, SqlError> {
        let ctx = self.context(tenant, start, end, stop).await?;
        let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let df = ctx.sql_with_options(sql, read_only).await.map_err(|e| self.stop_error(e))?;
        let batches = df
            .limit(0, Some(self.cfg.max_rows + 1))
            .map_err(|e| self.stop_error(e))?
            .collect()
            .await
            .map_err(|e| self.stop_error(e))?;
        to_result(&batches, self.cfg.max_rows)
    }

    fn stop_error(&self, e: DataFusionError) -> SqlError {
        match guard::stopped(&e) {
            Some(guard::Stopped::Timeout) => SqlError::Timeout(self.timeout),
            Some(guard::Stopped::Canceled) => SqlError::Canceled,
            None => e.into(),
        }
    }

    /// A session with the tenant's `blocks` table and `samples` view, its
    /// own memory pool and no spilling, every plan node guarded by `stop`.
    async fn context(
        &self,
        tenant: &TenantId,
        start: i64,
        end: i64,
        stop: Arc<guard::Stop>,
    ) -> Result<SessionContext, SqlError> {
        let index = self.blocks.index(tenant).await.map_err(|e| SqlError::Unavailable(e.to_string()))?;
        let metas: Vec<_> = index.live_overlapping(start, end).cloned().collect();
        let req = LabelsRequest { matcher_sets: &[], start, end, limit: 0, ctx: None };
        let names: BTreeSet<String> = self
            .blocks
            .label_names(tenant, &req)
            .await
            .map_err(|e| SqlError::Unavailable(e.message))?
            .into_iter()
            .collect();
        let names_vec: Vec<String> = names.iter().cloned().collect();
        let table_schema = schema(&names_vec);

        let pool = Arc::new(guard::BudgetPool::new(self.budget.clone(), self.cfg.max_memory_bytes));
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(pool)
            .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
            .build_arc()?;
        let config = SessionConfig::new()
            .with_information_schema(true)
            // Joins yield batches of bounded size, so the guard sees them.
            .set_bool("datafusion.execution.enforce_batch_size_in_joins", true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(guard::GuardRule(stop)))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let url = url::Url::parse(BUCKET_URL).map_err(|e| SqlError::Internal(e.to_string()))?;
        ctx.register_object_store(&url, self.blocks.bucket().clone());
        if metas.is_empty() {
            let empty = MemTable::try_new(table_schema, vec![vec![]])?;
            ctx.register_table("blocks", Arc::new(empty))?;
        } else {
            let urls = metas
                .iter()
                .map(|m| ListingTableUrl::parse(format!("{BUCKET_URL}/{}", paths::data(tenant, m.id))))
                .collect::<Result<Vec<_>, _>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config =
                ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(table_schema);
            ctx.register_table("blocks", Arc::new(ListingTable::try_new(config)?))?;
        }
        ctx.sql(&samples_view(&names)).await?.collect().await?;
        Ok(ctx)
    }
}

fn to_result(batches: &[RecordBatch], max_rows: usize) -> Result<SqlResult, SqlError> {
    let mut columns = Vec::new();
    if let Some(b) = batches.first() {
        columns = b
            .schema()
            .fields()
            .iter()
            .map(|f| Column { name: f.name().clone(), data_type: f.data_type().to_string() })
            .collect();
    }
    let mut rows = Vec::new();
    let mut truncated = false;
    let opts = FormatOptions::default();
    'batches: for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SqlError::Internal(e.to_string()))?;
        for row in 0..b.num_rows() {
            if rows.len() == max_rows {
                truncated = true;
                break 'batches;
            }
            let mut out = Vec::with_capacity(b.num_columns());
            for (c, f) in b.columns().iter().zip(&formatters) {
                out.push(cell(c.as_ref(), f, row));
            }
            rows.push(out);
        }
    }
    Ok(SqlResult { columns, rows, truncated })
}

/// A cell as JSON: numbers as numbers (non-finite ones as strings, as
/// Prometheus writes them), nulls as null, everything else as text.
fn cell(col: &dyn Array, f: &ArrayFormatter<'_>, row: usize) -> serde_json::Value {
    if col.is_null(row) {
        return serde_json::Value::Null;
    }
    let text = f.value(row).to_string();
    let numeric = matches!(
        col.data_type(),
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
    );
    if numeric && let Ok(n) = text.parse::<serde_json::Number>() {
        return serde_json::Value::Number(n);
    }
    if numeric {
        return serde_json::Value::String(match text.as_str() {
            "inf" => "+Inf".to_owned(),
            "-inf" => "-Inf".to_owned(),
            "NaN" | "nan" => "NaN".to_owned(),
            _ => text,
        });
    }
    serde_json::Value::String(text)
}

/// `POST /api/v1/sql` over the blocks, as a role of a process.
#[async_trait::async_trait]
impl cairn_common::service::Service for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn http(&self) -> axum::Router {
        http::routes(self.clone())
    }
}

#[cfg(test)]
mod tests;
