//! Bounds on the requests a process holds at once: how many, and how many
//! bytes. The distributor bounds push requests (as received and
//! decompressed) before it decompresses them; the ingester bounds the
//! pushes waiting for its append threads. Each maps a refusal to its own
//! error, naming its flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::metrics::gauge::Gauge;

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// `limit` requests are held already.
    Requests { limit: usize },
    /// `held` bytes are held already and the request needs `wanted` more.
    Bytes { held: usize, wanted: usize, limit: usize },
}

#[derive(Debug, Default)]
pub struct InFlight {
    requests: AtomicUsize,
    bytes: AtomicUsize,
    /// 0 = no limit.
    max_requests: usize,
    max_bytes: usize,
    /// The same figures, exported.
    requests_gauge: Gauge,
    bytes_gauge: Gauge,
}

impl InFlight {
    pub fn new(max_requests: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(Self { max_requests, max_bytes, ..Default::default() })
    }

    /// Exports the figures through these gauges.
    pub fn with_gauges(max_requests: usize, max_bytes: usize, requests: Gauge, bytes: Gauge) -> Arc<Self> {
        Arc::new(Self { max_requests, max_bytes, requests_gauge: requests, bytes_gauge: bytes, ..Default::default() })
    }

    /// Admits one more request, or refuses it.
    pub fn enter(self: &Arc<Self>) -> Result<Held, Refused> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        self.requests_gauge.inc();
        let held = Held { of: self.clone(), bytes: 0 };
        if self.max_requests > 0 && n > self.max_requests {
            return Err(Refused::Requests { limit: self.max_requests });
        }
        Ok(held)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

/// One admitted request; releases what it holds when dropped.
#[derive(Debug)]
pub struct Held {
    of: Arc<InFlight>,
    bytes: usize,
}

impl Held {
    /// Counts `n` more bytes against the limit, or refuses them (nothing is
    /// counted then).
    pub fn hold(&mut self, n: usize) -> Result<(), Refused> {
        let limit = self.of.max_bytes;
        let before = self.of.bytes.fetch_add(n, Ordering::AcqRel);
        if limit > 0 && before.saturating_add(n) > limit {
            self.of.bytes.fetch_sub(n, Ordering::AcqRel);
            return Err(Refused::Bytes { held: before, wanted: n, limit });
        }
        self.bytes += n;
        self.of.bytes_gauge.inc_by(n as i64);
        Ok(())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.of.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.of.requests.fetch_sub(1, Ordering::AcqRel);
        self.of.bytes_gauge.dec_by(self.bytes as i64);
        self.of.requests_gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_bytes_are_bounded_and_released() {
        let f = InFlight::new(2, 100);
        let mut a = f.enter().expect("first");
        let b = f.enter().expect("second");
        assert!(matches!(f.enter(), Err(Refused::Requests { limit: 2 })));
        assert_eq!(f.requests(), 2, "a refused request holds nothing");
        a.hold(60).expect("fits");
        let mut b = b;
        assert!(matches!(b.hold(50), Err(Refused::Bytes { held: 60, wanted: 50, limit: 100 })));
        assert_eq!(f.bytes(), 60);
        b.hold(40).expect("fits exactly");
        drop(a);
        assert_eq!((f.requests(), f.bytes()), (1, 40));
        drop(b);
        assert_eq!((f.requests(), f.bytes()), (0, 0));
        let unlimited = InFlight::new(0, 0);
        let mut h = unlimited.enter().expect("no limit");
        h.hold(usize::MAX / 2).expect("no limit");
    }
}
