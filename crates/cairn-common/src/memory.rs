//! The memory all queries of a process may hold together.
//!
//! Each query reserves the bytes it materialises (samples, step values,
//! aggregation state, SQL operator state) from one [`MemoryBudget`] and
//! returns them when it ends. A reservation that would take the budget
//! past its limit fails, and the query fails with an error naming the
//! flag: with any number of queries running at once, their memory stays
//! under the limit instead of growing until the kernel kills the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A process-wide byte budget. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// The flag that sets `limit`, for messages.
    flag: &'static str,
}

/// Why a reservation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "queries running now hold {used} bytes of the {limit} bytes all queries may hold together; this one needed {wanted} more (retry later, or raise {flag})"
)]
pub struct BudgetExceeded {
    pub wanted: usize,
    pub used: usize,
    pub limit: usize,
    pub flag: &'static str,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (0 = no limit), set by `flag`.
    pub fn new(limit: usize, flag: &'static str) -> Arc<Self> {
        Arc::new(Self { limit, used: AtomicUsize::new(0), flag })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn flag(&self) -> &'static str {
        self.flag
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `n` more bytes, or refuses if that would pass the limit.
    pub fn try_reserve(&self, n: usize) -> Result<(), BudgetExceeded> {
        if self.limit == 0 {
            self.used.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        }
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let next = cur.saturating_add(n);
            if next > self.limit {
                return Err(BudgetExceeded { wanted: n, used: cur, limit: self.limit, flag: self.flag });
            }
            match self.used.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Reserves `n` bytes whatever the limit (memory already allocated by
    /// code that cannot fail), so that later reservations see it.
    pub fn force_reserve(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// Returns `n` reserved bytes.
    pub fn release(&self, n: usize) {
        let _ = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(n)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_under_the_limit() {
        let b = MemoryBudget::new(100, "--query.memory-limit-bytes");
        b.try_reserve(60).expect("fits");
        let e = b.try_reserve(50).expect_err("over");
        assert_eq!((e.used, e.wanted, e.limit), (60, 50, 100));
        assert!(e.to_string().contains("--query.memory-limit-bytes"), "{e}");
        b.release(60);
        b.try_reserve(100).expect("fits again");
        b.release(1000);
        assert_eq!(b.used(), 0, "never below zero");
        let unlimited = MemoryBudget::new(0, "x");
        unlimited.try_reserve(usize::MAX / 2).expect("no limit");
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let b = MemoryBudget::new(1000, "x");
        let granted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        if b.try_reserve(7).is_ok() {
                            granted.fetch_add(7, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(granted.load(Ordering::Relaxed) <= 1000);
        assert_eq!(b.used(), granted.load(Ordering::Relaxed));
    }
}
