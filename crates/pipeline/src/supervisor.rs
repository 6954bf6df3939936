//! The owner of every long-lived task of the control plane: the server's loops, the deploys,
//! rollbacks and scales it runs in the background, and the notifications they send.
//!
//! One [`tokio::task::JoinSet`] holds them all and one cancellation token tells them the server
//! is stopping. [`Supervisor::shutdown`] is the only way they end together:
//! - loops ([`Supervisor::spawn_loop`]) end at once when the token is cancelled;
//! - work ([`Supervisor::spawn`], [`Supervisor::run`]) is left to finish; a deploy reaches its
//!   next safe point (the start of its next step, [`Supervisor::park`]) and waits there;
//! - when every remaining task is parked, or the grace period is over, what is left is dropped.
//!   A deploy dropped this way keeps its record (running, its lock held by this server) exactly
//!   as `kill -9` would leave it, so recovery on the next start finds and handles it.
//!
//! This module must not decide what work is: it never records anything in the store.
//!
//! Nothing else in the control plane calls `tokio::spawn` (a clippy `disallowed-methods` entry
//! keeps it so); tasks scoped to one operation (a step's output writer, a lease's heartbeat) are
//! owned by that operation and say so where they are spawned.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// See the module docs. Clones share the same tasks.
#[derive(Debug, Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tasks: Mutex<JoinSet<()>>,
    stop: CancellationToken,
    stopping: AtomicBool,
    /// Set when the shutdown drops what is left: work offered after that is not started.
    closed: AtomicBool,
    /// Tasks waiting at a safe point for the end ([`Supervisor::park`]).
    parked: AtomicUsize,
    /// Woken when a task ends or parks, so that a shutdown re-counts. Its own `Arc`: the tasks
    /// hold it, and holding `Inner` would make the set own itself.
    changed: Arc<Notify>,
}

/// Why [`Supervisor::run`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    /// The server is stopping: the work was dropped at the end of the grace period, or offered
    /// after it. Worth retrying once the server is back.
    #[error("the server is stopping; try again when it is back")]
    ShuttingDown,
    /// The work panicked (a bug): retrying would panic again.
    #[error("the work stopped: it panicked: {0}")]
    Panicked(String),
}

/// What [`Supervisor::shutdown`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Shutdown {
    /// Tasks that finished, or stopped at a safe point, within the grace period.
    pub settled: bool,
    /// Tasks dropped at the end: parked deploys, and any still running when the grace ended.
    pub dropped: usize,
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

impl Supervisor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether [`Supervisor::shutdown`] began: new work is refused from then on.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    /// Completes when the server begins to stop.
    pub async fn stopping(&self) {
        self.inner.stop.cancelled().await
    }

    /// Every task goes through here: a panic is logged (never silently reaped) and every end
    /// wakes a waiting shutdown.
    fn add<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::SeqCst) {
            tracing::debug!("work offered after the shutdown dropped the rest: not started");
            return;
        }
        let changed = self.inner.changed.clone();
        let task = async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                tracing::error!(panic = %panic_message(panic.as_ref()), "a supervised task panicked");
            }
            changed.notify_one();
        };
        let mut tasks = self.inner.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Reap what already ended, so that a server running for months does not keep one entry
        // per deploy it ever ran.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// A loop that runs for the server's life: it is stopped (dropped at its next await) as soon
    /// as the server begins to stop. `name` says which in the log. A loop whose iterations change
    /// state hands each iteration to [`Supervisor::run`], so that only its wait is cut short.
    pub fn spawn_loop<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.inner.stop.clone();
        self.add(async move {
            tokio::select! {
                () = stop.cancelled() => tracing::debug!(task = name, "stopped"),
                () = task => tracing::debug!(task = name, "ended"),
            }
        });
    }

    /// Work that should finish even when the server begins to stop (a deploy, a notification):
    /// it runs until it ends, parks ([`Supervisor::park`]) or the grace period is over; work
    /// offered during the grace period is waited for like the rest.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.add(task);
    }

    /// Like [`Supervisor::spawn`], and hands the result back: a caller that goes away (an HTTP
    /// request whose client disconnected) does not stop the work half-way.
    pub async fn run<F, T>(&self, task: F) -> Result<T, Stopped>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        self.add(async move {
            let outcome = AssertUnwindSafe(task).catch_unwind().await;
            let outcome = outcome.map_err(|panic| {
                let message = panic_message(panic.as_ref());
                tracing::error!(panic = %message, "a supervised task panicked");
                Stopped::Panicked(message)
            });
            let _ = sender.send(outcome);
        });
        receiver.await.unwrap_or(Err(Stopped::ShuttingDown))
    }

    /// Called by work at a safe point (between two steps of a deploy) once the server is
    /// stopping: it never returns, and the task is dropped at the end of the shutdown as a
    /// crash would drop it.
    pub async fn park(&self) -> ! {
        self.inner.parked.fetch_add(1, Ordering::SeqCst);
        self.inner.changed.notify_one();
        std::future::pending::<()>().await;
        unreachable!("a pending future never completes")
    }

    /// The first half of [`Supervisor::shutdown`], at once: new work is refused from now on and
    /// the loops stop. Idempotent.
    pub fn begin_stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.cancel();
    }

    /// Stops the loops at once, waits up to `grace` for the work (including work started while
    /// it waits, such as the notification of a deploy that just ended) to finish or park, then
    /// drops whatever is left. Safe to call more than once.
    pub async fn shutdown(&self, grace: Duration) -> Shutdown {
        self.begin_stop();
        let deadline = tokio::time::Instant::now() + grace;
        let settled = loop {
            let live = {
                let mut tasks = self.inner.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                while tasks.try_join_next().is_some() {}
                tasks.len()
            };
            // A parked task never ends, so it is counted once, as parked and as live.
            if live <= self.inner.parked.load(Ordering::SeqCst) {
                break true;
            }
            tokio::select! {
                () = self.inner.changed.notified() => {}
                () = tokio::time::sleep_until(deadline) => break false,
            }
        };
        self.inner.closed.store(true, Ordering::SeqCst);
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let dropped = tasks.len();
        tasks.shutdown().await;
        Shutdown { settled, dropped }
    }
}

#[cfg(test)]
// The test drives a shutdown from a task of its own, beside the supervisor under test.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loops_stop_work_finishes_and_parked_work_is_dropped() {
        let supervisor = Supervisor::new();
        let (loop_ended, mut loop_ended_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        supervisor.spawn_loop("forever", async move {
            let _guard = DropSignal(loop_ended);
            std::future::pending::<()>().await
        });
        let (release, released) = oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let done = finished.clone();
        supervisor.spawn(async move {
            let _ = released.await;
            done.store(true, Ordering::SeqCst);
        });
        let parker = supervisor.clone();
        let (parked_dropped, mut parked_dropped_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        supervisor.spawn(async move {
            let _guard = DropSignal(parked_dropped);
            parker.stopping().await;
            parker.park().await
        });
        let stopper = supervisor.clone();
        let shutdown = tokio::spawn(async move { stopper.shutdown(Duration::from_secs(3600)).await });
        // The loop stops at once; the work still runs until released.
        assert!(loop_ended_rx.recv().await.is_none());
        assert!(supervisor.is_stopping());
        assert!(!finished.load(Ordering::SeqCst));
        release.send(()).unwrap();
        let outcome = shutdown.await.unwrap();
        assert!(finished.load(Ordering::SeqCst));
        assert_eq!(outcome, Shutdown { settled: true, dropped: 1 });
        assert!(parked_dropped_rx.recv().await.is_none(), "the parked task was dropped");
    }

    #[tokio::test]
    async fn work_still_running_at_the_end_of_the_grace_is_dropped() {
        let supervisor = Supervisor::new();
        supervisor.spawn(std::future::pending::<()>());
        let outcome = supervisor.shutdown(Duration::from_millis(10)).await;
        assert_eq!(outcome, Shutdown { settled: false, dropped: 1 });
    }

    #[tokio::test]
    async fn run_hands_the_result_back() {
        let supervisor = Supervisor::new();
        assert_eq!(supervisor.run(async { 42 }).await.unwrap(), 42);
    }

    #[tokio::test]
    async fn work_started_during_the_grace_is_waited_for() {
        let supervisor = Supervisor::new();
        let (release, released) = oneshot::channel::<()>();
        let late_done = Arc::new(AtomicBool::new(false));
        let (spawner, done) = (supervisor.clone(), late_done.clone());
        // Like a deploy that ends during the grace and then sends its notification.
        supervisor.spawn(async move {
            let _ = released.await;
            spawner.spawn(async move {
                tokio::task::yield_now().await;
                done.store(true, Ordering::SeqCst);
            });
        });
        let stopper = supervisor.clone();
        let shutdown = tokio::spawn(async move { stopper.shutdown(Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        release.send(()).unwrap();
        let outcome = shutdown.await.unwrap();
        assert!(late_done.load(Ordering::SeqCst), "the notification started during the grace ran");
        assert_eq!(outcome, Shutdown { settled: true, dropped: 0 });
    }

    #[tokio::test]
    async fn a_panic_is_reported_as_a_panic_not_as_a_stop() {
        let supervisor = Supervisor::new();
        let outcome = supervisor.run(async { panic!("boom") }).await;
        assert!(matches!(&outcome, Err(Stopped::Panicked(message)) if message == "boom"), "{outcome:?}");
        // The supervisor goes on.
        assert_eq!(supervisor.run(async { 7 }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn work_offered_after_the_shutdown_is_refused() {
        let supervisor = Supervisor::new();
        supervisor.shutdown(Duration::from_millis(10)).await;
        assert!(matches!(supervisor.run(async { 1 }).await, Err(Stopped::ShuttingDown)));
    }

    /// Closes its channel when dropped.
    struct DropSignal(#[allow(dead_code)] tokio::sync::mpsc::UnboundedSender<()>);
}
