//! A dedicated executor: a small Tokio runtime of its own threads for
//! CPU-heavy async work (decoding Parquet pages, matching regular
//! expressions over label columns), so that such work never stalls the
//! runtime that answers requests and heartbeats.
//!
//! It differs from the blocking pool in two ways that matter for memory:
//! its threads are few and fixed (the blocking pool grows to hundreds,
//! and each thread that allocates keeps an allocator heap of its own), and
//! work waits for one of a bounded number of slots before it starts, so
//! the decoded data held at once is bounded too.
//!
//! Work is async, so it may await I/O between the CPU-heavy steps; that
//! I/O is driven by this runtime as well. Dropping the future returned by
//! [`DedicatedExecutor::run`] cancels the work (a query that timed out
//! stops decoding).

use std::sync::Arc;
use std::thread;

use prometheus_client::metrics::gauge::Gauge;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, oneshot};

/// Why work did not produce an answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecutorError {
    #[error("the work panicked: {0}")]
    Panicked(String),
    #[error("the executor shut down before the work finished")]
    ShutDown,
}

/// Gauges of an executor's slots.
#[derive(Clone, Debug, Default)]
pub struct ExecutorGauges {
    /// Work holding a slot.
    pub running: Gauge,
    /// Work waiting for a slot.
    pub waiting: Gauge,
}

struct Shared {
    handle: Handle,
    slots: Arc<Semaphore>,
    gauges: ExecutorGauges,
    /// Dropped with the last clone of the executor: its runtime's thread
    /// then shuts the runtime down.
    _stop: oneshot::Sender<()>,
}

/// A runtime of `threads` threads that runs at most `slots` pieces of
/// work at once. Cheap to clone; the runtime stops when the last clone is
/// dropped.
#[derive(Clone)]
pub struct DedicatedExecutor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DedicatedExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedicatedExecutor").field("free_slots", &self.shared.slots.available_permits()).finish()
    }
}

/// Threads of a dedicated executor's blocking pool (file reads of the
/// local object store run there), per worker thread.
const BLOCKING_THREADS_PER_WORKER: usize = 4;

impl DedicatedExecutor {
    /// Starts a runtime whose threads are named `name-N`. `threads` 0
    /// means one per core.
    pub fn new(name: &str, threads: usize, slots: usize, gauges: ExecutorGauges) -> std::io::Result<Self> {
        let threads = if threads == 0 { thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let runtime = {
            let name = name.to_owned();
            let counter = std::sync::atomic::AtomicUsize::new(0);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .max_blocking_threads(threads * BLOCKING_THREADS_PER_WORKER)
                .thread_name_fn(move || {
                    format!("{name}-{}", counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                })
                .enable_all()
                .build()?
        };
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        // A runtime must not be dropped on a thread that runs async code,
        // and the last clone of the executor may well be dropped on one:
        // a thread of its own owns it and drops it when told.
        thread::Builder::new().name(format!("{name}-owner")).spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
            runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        })?;
        Ok(Self {
            shared: Arc::new(Shared { handle, slots: Arc::new(Semaphore::new(slots.max(1))), gauges, _stop: stop }),
        })
    }

    /// Runs `work` on the executor once a slot is free and returns its
    /// output. Dropping the returned future cancels the work, waiting or
    /// running.
    pub async fn run<F>(&self, work: F) -> Result<F::Output, ExecutorError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let gauges = &self.shared.gauges;
        let permit = {
            let _waiting = Counted::new(&gauges.waiting);
            self.shared.slots.clone().acquire_owned().await.map_err(|_| ExecutorError::ShutDown)?
        };
        let slot = (permit, Counted::new(&gauges.running));
        let mut task = AbortOnDrop(self.shared.handle.spawn(async move {
            let out = work.await;
            drop(slot);
            out
        }));
        (&mut task.0).await.map_err(|e| {
            if e.is_panic() {
                ExecutorError::Panicked(crate::task::panic_message(e.into_panic().as_ref()))
            } else {
                ExecutorError::ShutDown
            }
        })
    }
}

/// One unit of a gauge, given back when dropped.
struct Counted(Gauge);

impl Counted {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Aborts the task when dropped unfinished.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    fn executor(slots: usize) -> (DedicatedExecutor, ExecutorGauges) {
        let gauges = ExecutorGauges::default();
        (DedicatedExecutor::new("test-read", 1, slots, gauges.clone()).expect("runtime"), gauges)
    }

    /// Waits up to five seconds for `cond`.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn work_runs_on_the_executors_threads() {
        let (ex, _) = executor(4);
        let name = ex.run(async { thread::current().name().map(str::to_owned) }).await.expect("ran");
        assert_eq!(name.as_deref(), Some("test-read-0"));
        // Async work may await timers and I/O: the runtime drives them.
        let slept = ex.run(async { tokio::time::sleep(Duration::from_millis(1)).await }).await;
        assert_eq!(slept, Ok(()));
    }

    #[tokio::test]
    async fn work_waits_for_a_free_slot() {
        let (ex, gauges) = executor(1);
        let release = Arc::new(Notify::new());
        let first = {
            let (ex, release) = (ex.clone(), release.clone());
            tokio::spawn(async move { ex.run(async move { release.notified().await }).await })
        };
        until("the first to run", || gauges.running.get() == 1).await;
        let started = Arc::new(AtomicBool::new(false));
        let second = {
            let (ex, started) = (ex.clone(), started.clone());
            tokio::spawn(async move { ex.run(async move { started.store(true, Ordering::SeqCst) }).await })
        };
        until("the second to wait", || gauges.waiting.get() == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!started.load(Ordering::SeqCst), "the second started while the only slot was taken");
        release.notify_one();
        assert_eq!(first.await.expect("join"), Ok(()));
        assert_eq!(second.await.expect("join"), Ok(()));
        assert!(started.load(Ordering::SeqCst));
        assert_eq!((gauges.running.get(), gauges.waiting.get()), (0, 0));
    }

    #[tokio::test]
    async fn dropping_the_answer_cancels_the_work() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (ex, gauges) = executor(1);
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let answer = ex.run(async move {
            let _flag = flag;
            std::future::pending::<()>().await
        });
        assert!(tokio::time::timeout(Duration::from_millis(50), answer).await.is_err(), "pending work answered");
        until("the work to be dropped", || dropped.load(Ordering::SeqCst)).await;
        until("its slot to be free", || gauges.running.get() == 0).await;
        // The slot is free again.
        assert_eq!(ex.run(async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_panic_becomes_an_error() {
        let (ex, _) = executor(1);
        let out = ex.run(async { panic!("bad page {}", 3) }).await;
        assert_eq!(out, Err::<(), _>(ExecutorError::Panicked("bad page 3".into())));
        assert_eq!(ex.run(async { 1 }).await, Ok(1), "the executor survives the panic");
    }

    #[tokio::test]
    async fn the_runtime_stops_with_its_last_clone() {
        let (ex, _) = executor(1);
        let handle = ex.shared.handle.clone();
        let clone = ex.clone();
        drop(ex);
        assert_eq!(clone.run(async { 2 }).await, Ok(2));
        drop(clone);
        // Dropped inside async code without a panic; once shut down, the
        // runtime cancels new tasks.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while handle.spawn(async {}).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "the runtime still runs tasks");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
