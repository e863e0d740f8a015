//! What one query holds and how long it runs, checked as it goes.
//!
//! The evaluator charges the [`QueryMeter`] before every allocation that
//! grows with the data (a column of step values per series, the samples
//! of a subquery, aggregation state per group, the steps of a grid), so a
//! query over its limit fails before it allocates, not after. When a node
//! of the expression is done, its inputs are gone: the meter then holds
//! what the query holds at that moment, the live values, as Prometheus
//! counts its "current samples".
//!
//! Bytes charged are also reserved from the process's [`MemoryBudget`],
//! in steps of [`BUDGET_STEP`] bytes so that queries rarely touch the
//! shared counter. Every charge also checks the deadline and whether the
//! query was cancelled (its client went away), so long loops stop soon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use cairn_common::memory::{MemoryBudget, Reservation};
use cairn_common::status::{CodedError, ServiceError};
use cairn_common::storage::ReadContext;
use parking_lot::Mutex;

use crate::error::{EvalError, Result};

/// Bytes a sample takes (timestamp and value); `--query.max-samples` is
/// counted in these.
pub const SAMPLE_BYTES: usize = 16;
/// Reservations from the process budget are taken in steps this large.
pub const BUDGET_STEP: usize = 1 << 20;

/// One query's meter. Shared by reference between planning and
/// evaluation (atomics: the planning future must be `Send`).
#[derive(Debug)]
pub struct QueryMeter {
    held: AtomicUsize,
    /// The most `held` has been.
    peak: AtomicUsize,
    max_bytes: usize,
    max_samples: usize,
    reservation: Option<Reservation>,
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
    /// The error of a charge made by a storage, which could only pass it
    /// on as a [`ServiceError`].
    tripped: Mutex<Option<EvalError>>,
    warnings: Mutex<std::collections::BTreeSet<String>>,
}

impl QueryMeter {
    /// A meter allowing `max_samples` samples' worth of bytes (0 = no
    /// limit), drawing on `budget`, until `deadline`.
    pub fn new(max_samples: usize, budget: Option<Arc<MemoryBudget>>, deadline: Option<Instant>) -> Self {
        Self {
            held: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            max_bytes: max_samples.saturating_mul(SAMPLE_BYTES),
            max_samples,
            reservation: budget.map(Reservation::new),
            deadline,
            cancelled: Arc::new(AtomicBool::new(false)),
            tripped: Mutex::new(None),
            warnings: Mutex::new(Default::default()),
        }
    }

    /// The flag that cancels this query when set (by whoever notices the
    /// client went away).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancelled.clone()
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether the query held a large share of the memory all queries may
    /// hold (an eighth or more of the budget) at some point: after it, the
    /// thread that evaluated it should hand what it freed back to the
    /// operating system (see `cairn_common::memory::release_freed`).
    pub fn held_much(&self) -> bool {
        self.reservation.as_ref().is_some_and(|r| self.peak.load(Ordering::Relaxed) >= r.budget_limit() / 8)
    }

    /// Fails when the deadline passed or the query was cancelled.
    pub fn check_time(&self) -> Result<()> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(EvalError::Canceled);
        }
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(EvalError::Timeout("query execution"));
        }
        Ok(())
    }

    /// Charges `bytes` about to be allocated.
    pub fn charge(&self, bytes: usize) -> Result<()> {
        self.check_time()?;
        let held = self.held.fetch_add(bytes, Ordering::Relaxed).saturating_add(bytes);
        self.check(held).inspect_err(|_| {
            self.held.fetch_sub(bytes, Ordering::Relaxed);
        })
    }

    /// Charges `count` items of `size` bytes each.
    pub fn charge_items(&self, count: usize, size: usize) -> Result<()> {
        self.charge(count.saturating_mul(size))
    }

    /// After a node: its inputs are gone, and the query holds `base` (what
    /// it held before the node) plus the node's result.
    pub fn settle(&self, base: usize, result: usize) -> Result<()> {
        let held = base.saturating_add(result);
        self.held.store(held, Ordering::Relaxed);
        self.check(held)
    }

    fn check(&self, held: usize) -> Result<()> {
        self.peak.fetch_max(held, Ordering::Relaxed);
        if self.max_bytes > 0 && held > self.max_bytes {
            return Err(EvalError::Limit(format!(
                "query processing would load too many samples into memory in query execution: more than {} samples of {SAMPLE_BYTES} bytes (raise --query.max-samples)",
                self.max_samples
            )));
        }
        match &self.reservation {
            Some(r) => Ok(r.cover(held, BUDGET_STEP)?),
            None => Ok(()),
        }
    }
}

impl QueryMeter {
    /// The error of a refused storage charge, if one was refused.
    pub fn take_error(&self) -> Option<EvalError> {
        self.tripped.lock().take()
    }

    /// Warnings storage noted while reading (a tier could not be read).
    pub fn take_warnings(&self) -> std::collections::BTreeSet<String> {
        std::mem::take(&mut *self.warnings.lock())
    }
}

impl ReadContext for QueryMeter {
    fn charge(&self, bytes: usize) -> std::result::Result<(), ServiceError> {
        QueryMeter::charge(self, bytes).map_err(|e| {
            let err = e.to_service_error();
            *self.tripped.lock() = Some(e);
            err
        })
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn warn(&self, message: String) {
        self.warnings.lock().insert(message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_their_flags_and_budget_is_returned() {
        let m = QueryMeter::new(10, None, None);
        m.charge(10 * SAMPLE_BYTES).expect("at the limit");
        let e = m.charge(1).expect_err("over");
        assert!(e.to_string().contains("--query.max-samples"), "{e}");
        m.settle(0, 0).expect("released");

        let budget = MemoryBudget::new(3 * BUDGET_STEP, "--query.memory-limit-bytes");
        let a = QueryMeter::new(0, Some(budget.clone()), None);
        a.charge(2 * BUDGET_STEP).expect("fits");
        let b = QueryMeter::new(0, Some(budget.clone()), None);
        let e = b.charge(2 * BUDGET_STEP).expect_err("the budget is shared");
        assert!(e.to_string().contains("--query.memory-limit-bytes"), "{e}");
        assert!(matches!(e, EvalError::Busy(_)), "fits once the other query ends, so retryable (503): {e:?}");
        let e = b.charge(4 * BUDGET_STEP).expect_err("more than the whole budget");
        assert!(matches!(e, EvalError::Limit(_)), "never fits (422): {e:?}");
        drop(a);
        b.charge(2 * BUDGET_STEP).expect("fits once the other query ended");
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn cancellation_and_deadline_stop_charges() {
        let m = QueryMeter::new(0, None, None);
        m.cancel_flag().store(true, Ordering::Relaxed);
        assert_eq!(m.charge(1), Err(EvalError::Canceled));
        // A deadline already past (no waiting for one to pass).
        let past = Instant::now().checked_sub(std::time::Duration::from_millis(2)).unwrap_or_else(Instant::now);
        let m = QueryMeter::new(0, None, Some(past));
        assert!(matches!(m.charge(1), Err(EvalError::Timeout(_))));
    }

    #[test]
    fn a_query_holds_much_from_an_eighth_of_the_budget() {
        let budget = MemoryBudget::new(64 << 20, "--query.memory-limit-bytes");
        let m = QueryMeter::new(0, Some(budget.clone()), None);
        m.charge((8 << 20) - 1).expect("charge");
        assert!(!m.held_much());
        m.charge(1).expect("charge");
        m.settle(0, 0).expect("released");
        assert!(m.held_much(), "the peak counts, not what is held at the end");
        assert!(!QueryMeter::new(0, None, None).held_much(), "no budget, nothing to compare with");
    }
}
