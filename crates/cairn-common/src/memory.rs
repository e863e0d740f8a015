//! The memory all queries of a process may hold together.
//!
//! Each query reserves the bytes it materialises (samples, step values,
//! aggregation state, SQL operator state) from one [`MemoryBudget`] and
//! returns them when it ends. A reservation that would take the budget
//! past its limit fails, and the query fails with an error naming the
//! flag: with any number of queries running at once, their memory stays
//! under the limit instead of growing until the kernel kills the process.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// A process-wide byte budget. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
    /// The flag that sets `limit`, for messages.
    flag: &'static str,
}

/// Why a reservation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetExceeded {
    pub wanted: usize,
    /// Bytes all queries held.
    pub used: usize,
    /// Bytes the asking query held already (through a [`Reservation`]).
    pub held: usize,
    pub limit: usize,
    pub flag: &'static str,
}

impl BudgetExceeded {
    /// Whether the query would fit once other queries end: it is refused
    /// for what they hold, not for its own size.
    pub fn transient(&self) -> bool {
        self.held.saturating_add(self.wanted) <= self.limit
    }
}

impl std::fmt::Display for BudgetExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { wanted, used, held, limit, flag } = self;
        if self.transient() {
            write!(
                f,
                "queries running now hold {used} bytes of the {limit} bytes all queries may hold together; this one needed {wanted} more (retry later, or raise {flag})"
            )
        } else {
            write!(
                f,
                "the query needs more than {} bytes, more than the {limit} bytes all queries may hold together (raise {flag})",
                held.saturating_add(*wanted)
            )
        }
    }
}

impl std::error::Error for BudgetExceeded {}

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
                return Err(BudgetExceeded { wanted: n, used: cur, held: 0, limit: self.limit, flag: self.flag });
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

/// Why a [`Reservation`] could not grow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReserveError {
    /// The reservation would pass its own cap.
    #[error("{wanted} more bytes with {held} held would pass the cap of {cap} bytes")]
    OverCap { wanted: usize, held: usize, cap: usize },
    /// The process budget is spent.
    #[error(transparent)]
    Budget(#[from] BudgetExceeded),
}

/// What one query holds reserved from a [`MemoryBudget`]: grown and shrunk
/// under a lock (parts of a query charge concurrently), and returned to
/// the budget when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    reserved: Mutex<usize>,
}

impl Reservation {
    pub fn new(budget: Arc<MemoryBudget>) -> Self {
        Self { budget, reserved: Mutex::new(0) }
    }

    /// Bytes reserved now.
    pub fn reserved(&self) -> usize {
        *self.reserved.lock()
    }

    /// The limit of the budget this reserves from.
    pub fn budget_limit(&self) -> usize {
        self.budget.limit()
    }

    /// Reserves `n` more bytes, refused past `cap` bytes in all (0 = no
    /// cap) or past the budget's limit.
    pub fn grow(&self, n: usize, cap: usize) -> Result<(), ReserveError> {
        let mut held = self.reserved.lock();
        if cap > 0 && held.saturating_add(n) > cap {
            return Err(ReserveError::OverCap { wanted: n, held: *held, cap });
        }
        self.budget.try_reserve(n).map_err(|e| BudgetExceeded { held: *held, ..e })?;
        *held = held.saturating_add(n);
        Ok(())
    }

    /// Reserves `n` bytes whatever the limits (memory that code which
    /// cannot fail already allocated), so that later requests see it.
    pub fn force_grow(&self, n: usize) {
        let mut held = self.reserved.lock();
        self.budget.force_reserve(n);
        *held = held.saturating_add(n);
    }

    /// Returns up to `n` reserved bytes.
    pub fn shrink(&self, n: usize) {
        let mut held = self.reserved.lock();
        let n = n.min(*held);
        self.budget.release(n);
        *held -= n;
    }

    /// Makes the reservation cover `bytes` in whole steps of `step`:
    /// grows when short, and gives back what is more than four steps
    /// above, so that small changes rarely touch the shared budget.
    pub fn cover(&self, bytes: usize, step: usize) -> Result<(), BudgetExceeded> {
        let step = step.max(1);
        let mut held = self.reserved.lock();
        if bytes > *held {
            let want = (bytes - *held).div_ceil(step).saturating_mul(step);
            self.budget.try_reserve(want).map_err(|e| BudgetExceeded { held: *held, ..e })?;
            *held = held.saturating_add(want);
        } else if *held - bytes > 4 * step {
            let give = (*held - bytes - step) / step * step;
            self.budget.release(give);
            *held -= give;
        }
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(*self.reserved.get_mut());
    }
}

/// How this process hands memory its threads freed back to the operating
/// system; set once by the binary, which chose the allocator.
static RELEASE_FREED: OnceLock<fn()> = OnceLock::new();

/// Registers how freed memory is handed back (see [`release_freed`]).
/// Only the first call counts.
pub fn set_release_freed(f: fn()) {
    let _ = RELEASE_FREED.set(f);
}

/// Hands back to the operating system what the calling thread freed, if
/// the process registered how. A thread that finished a large piece of
/// work and may then sit idle calls it (the blocking-pool thread that
/// evaluated a PromQL query): an allocator that keeps freed pages per
/// thread, to reuse them, would otherwise keep each idle thread's peak
/// resident.
pub fn release_freed() {
    if let Some(f) = RELEASE_FREED.get() {
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_return_what_they_hold() {
        let b = MemoryBudget::new(100, "x");
        let r = Reservation::new(b.clone());
        r.grow(40, 50).expect("fits");
        assert_eq!(r.grow(20, 50), Err(ReserveError::OverCap { wanted: 20, held: 40, cap: 50 }));
        let other = Reservation::new(b.clone());
        match other.grow(70, 0) {
            Err(ReserveError::Budget(e)) => assert!(e.transient(), "fits once the first query ends: {e}"),
            other => panic!("{other:?}"),
        }
        match r.grow(70, 0) {
            Err(ReserveError::Budget(e)) => {
                assert!(!e.transient(), "40 held and 70 more never fit in 100");
                assert!(e.to_string().contains("needs more than 110 bytes"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        r.shrink(1000);
        assert_eq!((r.reserved(), b.used()), (0, 0), "never shrinks below zero");
        r.cover(10, 8).expect("fits");
        assert_eq!(r.reserved(), 16, "whole steps");
        r.cover(0, 8).expect("shrinks");
        assert_eq!(r.reserved(), 16, "keeps up to four steps");
        r.force_grow(200);
        r.cover(0, 8).expect("shrinks");
        assert_eq!(r.reserved(), 8);
        drop(r);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn concurrent_covers_never_leak() {
        let b = MemoryBudget::new(0, "x");
        let r = Reservation::new(b.clone());
        std::thread::scope(|s| {
            for t in 0..4 {
                let r = &r;
                s.spawn(move || {
                    for i in 0..10_000usize {
                        r.cover((i * 7 + t * 13) % 1000, 16).expect("no limit");
                    }
                });
            }
        });
        assert_eq!(b.used(), r.reserved());
        drop(r);
        assert_eq!(b.used(), 0);
    }

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

    #[test]
    fn release_freed_calls_the_registered_hook() {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn hook() {
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        set_release_freed(hook);
        release_freed();
        release_freed();
        assert_eq!(CALLS.load(Ordering::Relaxed), 2);
    }
}
