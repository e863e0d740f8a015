//! Pushes of one tenant applied in the order they arrived.
//!
//! A distributor answers once a quorum of replicas stored a push, so the
//! slowest replica may still be decoding one push of a series when the
//! next push of that series arrives. Decoded in parallel, the two could
//! reach the tenant's append lock in either order, and the replica would
//! refuse the older sample as out of order: its copy of the series would
//! then differ from the others', and every query would decode both.
//!
//! So each push takes a ticket when its handler starts (on the async
//! runtime, mostly in the order the connection delivered the pushes: the
//! runtime may start the handlers of pushes that arrived together in
//! another order), is decoded in parallel with the others, and waits for
//! the pushes with earlier tickets to be applied before it appends. The
//! wait is bounded by [`MAX_WAIT`], after which a push goes on as it
//! would without tickets, so no push ever waits on one that cannot run.
//! A leaving ingester waits for the pushes it admitted, waiting ones
//! included, before it cuts its head (`Ingester::stop_accepting_writes`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// The longest a push waits for the ones that arrived before it.
pub(crate) const MAX_WAIT: Duration = Duration::from_millis(20);

/// The tickets of every tenant.
#[derive(Debug, Default)]
pub(crate) struct Arrivals {
    tenants: Mutex<HashMap<Box<str>, Arc<Line>>>,
}

impl Arrivals {
    /// A ticket in `tenant`'s line (a valid tenant id, as the request
    /// names it).
    pub(crate) fn ticket(&self, tenant: &str) -> Ticket {
        let line = {
            let mut tenants = self.tenants.lock();
            match tenants.get(tenant) {
                Some(l) => l.clone(),
                None => tenants.entry(tenant.into()).or_default().clone(),
            }
        };
        let n = {
            let mut s = line.state.lock();
            let n = s.issued;
            s.issued += 1;
            n
        };
        Ticket { line, n }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Line {
    state: Mutex<Served>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct Served {
    issued: u64,
    /// Every ticket below this one is done.
    below: u64,
    /// Tickets at or above `below` that are done.
    above: BTreeSet<u64>,
}

/// A push's place in its tenant's line. Dropping it marks the push done,
/// however it ended.
#[derive(Debug)]
pub(crate) struct Ticket {
    line: Arc<Line>,
    n: u64,
}

impl Ticket {
    /// Waits until every push that arrived before this one is done, or
    /// `max` passed. Blocking: call it off the async runtime.
    pub(crate) fn wait_turn(&self, max: Duration) {
        let deadline = Instant::now() + max;
        let mut s = self.line.state.lock();
        while s.below < self.n {
            if self.line.turn.wait_until(&mut s, deadline).timed_out() {
                return;
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.line.state.lock();
        if self.n == s.below {
            s.below += 1;
            loop {
                let next = s.below;
                if !s.above.remove(&next) {
                    break;
                }
                s.below += 1;
            }
        } else {
            s.above.insert(self.n);
        }
        drop(s);
        self.line.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn pushes_append_in_the_order_they_arrived() {
        let arrivals = Arrivals::default();
        let tickets: Vec<Ticket> = (0..8).map(|_| arrivals.ticket("team-a")).collect();
        let applied = Arc::new(Mutex::new(Vec::new()));
        // The latest arrival gets a thread first, the earliest last.
        let threads: Vec<_> = tickets
            .into_iter()
            .enumerate()
            .rev()
            .map(|(i, t)| {
                let applied = applied.clone();
                let th = std::thread::spawn(move || {
                    t.wait_turn(Duration::from_secs(10));
                    applied.lock().push(i);
                });
                std::thread::yield_now();
                th
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(*applied.lock(), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn tenants_wait_in_lines_of_their_own() {
        let arrivals = Arrivals::default();
        let _first_of_a = arrivals.ticket("a");
        let first_of_b = arrivals.ticket("b");
        let started = Instant::now();
        first_of_b.wait_turn(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5), "b waited on a");
    }

    #[test]
    fn a_push_does_not_wait_for_ever_on_one_that_cannot_run() {
        let arrivals = Arrivals::default();
        let stuck = arrivals.ticket("a");
        let next = arrivals.ticket("a");
        let started = Instant::now();
        next.wait_turn(Duration::from_millis(30));
        assert!(started.elapsed() >= Duration::from_millis(30));
        drop(next);
        // The one that went on counts as done once the stuck one is.
        let third = arrivals.ticket("a");
        drop(stuck);
        let started = Instant::now();
        third.wait_turn(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_ticket_dropped_unused_lets_the_next_go() {
        let arrivals = Arrivals::default();
        let done = Arc::new(AtomicUsize::new(0));
        let first = arrivals.ticket("a");
        let second = arrivals.ticket("a");
        let waiter = {
            let done = done.clone();
            std::thread::spawn(move || {
                second.wait_turn(Duration::from_secs(10));
                done.store(1, Ordering::SeqCst);
            })
        };
        drop(first);
        waiter.join().expect("thread");
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }
}
