//! Cairn's querier: the Prometheus HTTP query API.
//!
//! ```text
//!  GET|POST /api/v1/query, /query_range ── params ──> Engine ──> Queryable
//!           /api/v1/series, /labels, /label/<n>/values ─────────> Queryable
//!           /api/v1/metadata, /status/buildinfo, /format_query, /parse_query
//!                       │
//!                       └──> Prometheus-exact JSON (json.rs)
//! ```
//!
//! The querier holds no data. It reads through [`Queryable`], which is the
//! ingester in `cairn all` and, in a cluster, a fan-out over ingesters and
//! the long-term tier.

pub mod api;
pub mod config;
#[doc(hidden)]
pub mod fuzz;
pub mod ingesters;
pub mod json;
pub mod lookup;
pub mod params;
pub mod tiers;

use std::sync::Arc;

use cairn_common::memory::MemoryBudget;
use cairn_common::storage::Queryable;
use tokio::sync::Semaphore;

pub use config::QuerierConfig;

/// Build facts reported by `/api/v1/status/buildinfo`.
#[derive(Clone, Debug, Default)]
pub struct BuildInfo {
    pub version: String,
    pub revision: String,
    pub branch: String,
    pub build_date: String,
    pub toolchain: String,
}

struct Inner {
    cfg: QuerierConfig,
    store: Arc<dyn Queryable>,
    permits: Semaphore,
    build: BuildInfo,
    budget: Arc<MemoryBudget>,
}

/// A cheap-to-clone handle to the querier of this process.
#[derive(Clone)]
pub struct Querier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Querier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Querier").finish()
    }
}

impl Querier {
    pub fn new(cfg: QuerierConfig, store: Arc<dyn Queryable>, build: BuildInfo) -> Self {
        let permits = Semaphore::new(cfg.max_concurrency.max(1));
        let budget = MemoryBudget::new(cfg.memory_limit_bytes, "--query.memory-limit-bytes");
        Self { inner: Arc::new(Inner { cfg, store, permits, build, budget }) }
    }

    /// The memory budget of this process's queries, to share with other
    /// query engines (SQL).
    pub fn memory_budget(&self) -> Arc<MemoryBudget> {
        self.inner.budget.clone()
    }

    pub fn config(&self) -> &QuerierConfig {
        &self.inner.cfg
    }
}

#[async_trait::async_trait]
impl cairn_common::service::Service for Querier {
    fn name(&self) -> &'static str {
        "querier"
    }

    fn http(&self) -> axum::Router {
        api::routes(self.clone())
    }
}
