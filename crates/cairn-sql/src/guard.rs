//! What keeps one SQL query within its limits while DataFusion runs it.
//!
//! ```text
//!   every plan node ── wrapped in Guarded ──> each batch it yields checks
//!                                             the deadline and the cancel
//!                                             flag (the client went away)
//!   joins, sorts, aggregations ── MemoryPool ──> BudgetPool: the query's
//!                                             own limit, and the process's
//!                                             budget shared with PromQL
//! ```
//!
//! DataFusion stops work only when a future is dropped, and a join can
//! compute for minutes inside one poll; the check between batches bounds
//! what runs after a timeout or a disconnect to one batch of work.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cairn_common::memory::{MemoryBudget, Reservation, ReserveError};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryPool, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

/// Why a query was stopped from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stopped {
    #[error("query timed out")]
    Timeout,
    #[error("query was canceled")]
    Canceled,
}

/// The deadline and cancel flag of one query.
#[derive(Debug)]
pub(crate) struct Stop {
    pub deadline: Instant,
    pub cancelled: AtomicBool,
}

impl Stop {
    pub(crate) fn new(deadline: Instant) -> Arc<Self> {
        Arc::new(Self { deadline, cancelled: AtomicBool::new(false) })
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn check(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(DataFusionError::External(Box::new(Stopped::Canceled)));
        }
        if Instant::now() > self.deadline {
            return Err(DataFusionError::External(Box::new(Stopped::Timeout)));
        }
        Ok(())
    }
}

/// Whether `e` is a stop, and which.
pub(crate) fn stopped(e: &DataFusionError) -> Option<Stopped> {
    match e.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<Stopped>().copied(),
        _ => None,
    }
}

/// A plan node that passes its input's batches through, checking [`Stop`]
/// at each.
#[derive(Debug)]
struct Guarded {
    input: Arc<dyn ExecutionPlan>,
    stop: Arc<Stop>,
}

impl DisplayAs for Guarded {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guarded")
    }
}

impl ExecutionPlan for Guarded {
    fn name(&self) -> &str {
        "Guarded"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("Guarded takes one child".into()));
        }
        Ok(Arc::new(Guarded { input: children.swap_remove(0), stop: self.stop.clone() }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.stop.check()?;
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let stop = self.stop.clone();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            input.map(move |batch| {
                stop.check()?;
                batch
            }),
        )))
    }
}

/// The last physical optimizer rule: wraps every node of the plan in
/// [`Guarded`]. It runs after every other rule, so none of them sees it.
#[derive(Debug)]
pub(crate) struct GuardRule(pub Arc<Stop>);

impl PhysicalOptimizerRule for GuardRule {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            Ok(Transformed::yes(Arc::new(Guarded { input: node, stop: self.0.clone() }) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "cairn_guard"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// One query's memory pool: its own limit, drawn from the process budget.
#[derive(Debug)]
pub(crate) struct BudgetPool {
    reservation: Reservation,
    limit: usize,
}

impl BudgetPool {
    pub(crate) fn new(budget: Arc<MemoryBudget>, limit: usize) -> Self {
        Self { reservation: Reservation::new(budget), limit }
    }
}

impl fmt::Display for BudgetPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cairn query memory ({} of {} bytes)", self.reservation.reserved(), self.limit)
    }
}

impl MemoryPool for BudgetPool {
    fn name(&self) -> &str {
        "cairn"
    }

    /// Memory already taken by code that cannot fail: counted, so that the
    /// next fallible request sees it.
    fn grow(&self, _r: &MemoryReservation, additional: usize) {
        self.reservation.force_grow(additional);
    }

    fn shrink(&self, _r: &MemoryReservation, shrink: usize) {
        self.reservation.shrink(shrink);
    }

    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> Result<()> {
        self.reservation.grow(additional, self.limit).map_err(|e| match e {
            ReserveError::OverCap { held, .. } => DataFusionError::ResourcesExhausted(format!(
                "{} needs {additional} more bytes with {held} held, more than the {} bytes one SQL query may hold (raise --sql.max-memory-bytes)",
                r.consumer().name(),
                self.limit
            )),
            // Kept whole, so that the answer can tell a query too big for
            // the budget from one that waits on others.
            ReserveError::Budget(e) => DataFusionError::External(Box::new(e)),
        })
    }

    fn reserved(&self) -> usize {
        self.reservation.reserved()
    }
}
