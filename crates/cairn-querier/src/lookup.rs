//! The context a series or label lookup reads under.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use cairn_common::ErrorCode;
use cairn_common::memory::{MemoryBudget, Reservation, ReserveError};
use cairn_common::status::ServiceError;
use cairn_common::storage::ReadContext;
use parking_lot::Mutex;

/// A [`ReadContext`] for lookups of series and labels: a deadline, a
/// warnings list, and what the lookup copies charged to the memory budget
/// all queries share (returned when the lookup ends).
#[derive(Debug, Default)]
pub struct LookupContext {
    pub deadline: Option<Instant>,
    reservation: Option<Reservation>,
    warnings: Mutex<BTreeSet<String>>,
    /// The first charge refused, which fails the lookup even where a tier
    /// turned it into a warning.
    refused: Mutex<Option<ServiceError>>,
}

impl LookupContext {
    pub fn new(deadline: Option<Instant>, budget: Option<Arc<MemoryBudget>>) -> Arc<Self> {
        Arc::new(Self {
            deadline,
            reservation: budget.map(Reservation::new),
            warnings: Default::default(),
            refused: Default::default(),
        })
    }

    /// The error of a refused charge, if one was refused.
    pub fn take_refusal(&self) -> Option<ServiceError> {
        self.refused.lock().take()
    }

    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock()).into_iter().collect()
    }
}

impl ReadContext for LookupContext {
    fn charge(&self, bytes: usize) -> Result<(), ServiceError> {
        let Some(r) = &self.reservation else { return Ok(()) };
        r.grow(bytes, 0).map_err(|e| {
            let code = match &e {
                ReserveError::Budget(b) if b.transient() => ErrorCode::Unavailable,
                _ => ErrorCode::Execution,
            };
            let e = ServiceError::new(code, e.to_string());
            self.refused.lock().get_or_insert_with(|| e.clone());
            e
        })
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn warn(&self, message: String) {
        self.warnings.lock().insert(message);
    }
}
