//! Connection-level limits of the data plane: timeouts from a connection's first byte, a cap on
//! open downstream connections (global and per client address) and the counters behind them.
//!
//! Per request the work is O(1) and allocation-free: a connection's phase and the moment it
//! entered it are one word ([`Tracked::state`]) written by its own worker thread (two clock reads
//! a request on HTTP/1 keep-alive), and no timer is armed per connection or request. Instead each
//! worker runs one coarse sweep ([`sweep`]) that walks its connections a few times per shortest
//! timeout and closes those past their time, so a timeout fires between its value and its value
//! plus two sweep periods (at most a second apart by default).
//!
//! Phases:
//! - *head*: from the accept (TLS handshake and hyper-util's protocol sniff included) or, on a
//!   kept-alive HTTP/1 connection, from the first byte of the next request, until the request head
//!   is complete. Longer than `header_read_timeout`: the connection is cut.
//! - *busy*: a request (or, on HTTP/2, any stream) is in flight, until its response body is done.
//! - *idle*: kept alive between requests. Longer than `keepalive_timeout`: closed gracefully
//!   (HTTP/2: GOAWAY), and cut if it has not closed within a short grace.
//! - *upgraded*: switched protocols (WebSocket): no connection timeout applies; the session
//!   ends when either side closes or the edge drains.
//!
//! At the cap, a new connection is admitted by closing the oldest idle connection (on any
//! worker); when none is idle, the new one is refused (closed at once) and counted.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The connection limits of `[edge]` (and `[edge.http2]`), part of [`crate::Settings`].
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// From the accept (or a kept-alive connection's next first byte) to a complete request head.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit with no request started.
    pub keepalive_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Open downstream connections at most; `None`: 90% of the file descriptor limit (see
    /// [`default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Open downstream connections per client address; `None`: no such cap.
    pub max_connections_per_ip: Option<usize>,
    pub http2: Http2Limits,
    /// The admin listener's own limits (not in the config: fixed defaults; see [`AdminLimits`]).
    pub admin: AdminLimits,
}

/// The admin listener's limits (`admin::guard`): its calls are short and its clients few.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminLimits {
    /// Connections at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Without a byte read or written for this long, a connection is closed.
    pub idle_timeout: Duration,
    /// A connection is closed after this long whatever it does.
    pub max_lifetime: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            max_connections: 256,
            idle_timeout: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(600),
        }
    }
}

/// The downstream HTTP/2 server's limits (hyper's HTTP/2 builder).
#[derive(Debug, Clone, PartialEq)]
pub struct Http2Limits {
    pub max_concurrent_streams: u32,
    /// Streams a client may reset before the edge accepted them (rapid reset, CVE-2023-44487);
    /// past it the connection gets GOAWAY (ENHANCE_YOUR_CALM).
    pub max_pending_accept_reset_streams: usize,
    /// Streams the edge may reset because of a client's protocol errors ("MadeYouReset",
    /// CVE-2025-8671); past it the connection gets GOAWAY.
    pub max_local_error_reset_streams: usize,
    /// PINGs on an HTTP/2 connection at this interval; an unanswered one within
    /// `keepalive_timeout` closes the connection. `None`: no pings.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub max_frame_size: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: None,
            max_connections_per_ip: None,
            http2: Http2Limits::default(),
            admin: AdminLimits::default(),
        }
    }
}

impl Default for Http2Limits {
    fn default() -> Self {
        Http2Limits {
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            max_frame_size: 16 * 1024,
        }
    }
}

/// The file descriptor limit (soft, then hard) of this process; `None` when unlimited.
pub fn fd_limits() -> io::Result<(Option<u64>, Option<u64>)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    #[allow(unsafe_code)]
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    let finite = |value: libc::rlim_t| (value != libc::RLIM_INFINITY).then_some(value);
    Ok((finite(limit.rlim_cur), finite(limit.rlim_max)))
}

/// Raises the soft file descriptor limit to the hard one (what `windlass edge` does first, as
/// nginx's `worker_rlimit_nofile` would); returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<Option<u64>> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write the struct they are given and nothing else.
    #[allow(unsafe_code)]
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Err(io::Error::last_os_error());
            }
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok((limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur))
}

/// Share of the file descriptor limit the default cap gives downstream connections; the rest is
/// headroom for the listeners, the admin API, health checks, the state file, logs, and upstream
/// connections (documented in docs/edge.md).
const DEFAULT_SHARE_PERCENT: u64 = 90;
/// The cap when the limit is unlimited or unreadable.
const UNLIMITED_CAP: usize = 1 << 20;

/// 90% of the soft `RLIMIT_NOFILE` (read now), at least 1.
pub fn default_max_connections() -> usize {
    match fd_limits() {
        Ok((Some(soft), _)) => usize::try_from(soft * DEFAULT_SHARE_PERCENT / 100).unwrap_or(UNLIMITED_CAP).max(1),
        _ => UNLIMITED_CAP,
    }
}

// A connection's phase: the low 3 bits of `Tracked::state`; the bits above are the nanoseconds
// since `Connections::base` when it entered the phase.
const HEAD: u64 = 0;
const BUSY: u64 = 1;
const IDLE: u64 = 2;
/// HTTP/2 with no stream open: bytes arriving (PING, SETTINGS) do not start a request head.
const IDLE_H2: u64 = 3;
const UPGRADED: u64 = 4;
/// Asked to close gracefully (idle timeout, evicted at the cap); cut after [`close_grace`].
const CLOSING: u64 = 5;
/// Closed and counted out: never evicted (an eviction candidate may outlive its connection).
const CLOSED: u64 = 6;
const PHASE_BITS: u64 = 3;
const PHASE_MASK: u64 = (1 << PHASE_BITS) - 1;

/// What a connection's task is asked to do, in `Tracked::close`.
const KEEP: u8 = 0;
const GRACEFUL: u8 = 1;
const CUT: u8 = 2;

/// One downstream connection as the limits see it. Written by its own worker thread; other
/// workers only read it, except to evict it (a compare-and-swap on an idle state).
#[derive(Debug)]
pub struct Tracked {
    state: AtomicU64,
    /// Requests (HTTP/2 streams) whose response is not done.
    active: AtomicU32,
    h2: AtomicBool,
    close: AtomicU8,
    /// The connection task's waker, registered on its first poll (a tokio task keeps its waker).
    waker: OnceLock<Waker>,
    base: Instant,
    client: IpAddr,
    slot: usize,
}

impl Tracked {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX >> PHASE_BITS)
    }

    /// Bytes arrived: on an idle HTTP/1 connection a request head starts (its timeout runs).
    #[inline]
    fn on_read(&self) {
        if self.state.load(Ordering::Relaxed) & PHASE_MASK == IDLE {
            self.state.store(self.now() << PHASE_BITS | HEAD, Ordering::Relaxed);
        }
    }

    /// The service was called: a request head is complete.
    #[inline]
    pub fn request_started(self: &Arc<Self>, h2: bool) -> Active {
        if h2 && !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
        // Only this connection's own thread writes `active` (hyper runs a connection's HTTP/2
        // streams as tasks of the same current-thread runtime), so no read-modify-write is needed.
        self.active.store(self.active.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if self.state.load(Ordering::Relaxed) & PHASE_MASK != UPGRADED {
            self.state.store(BUSY, Ordering::Relaxed);
        }
        Active(self.clone())
    }

    /// The response switched protocols: the connection leaves the connection timeouts' reach.
    pub fn upgraded(&self) {
        self.state.store(UPGRADED, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        let active = self.active.load(Ordering::Relaxed).saturating_sub(1);
        self.active.store(active, Ordering::Relaxed);
        if active == 0 && self.state.load(Ordering::Relaxed) & PHASE_MASK == BUSY {
            let phase = if self.h2.load(Ordering::Relaxed) { IDLE_H2 } else { IDLE };
            self.state.store(self.now() << PHASE_BITS | phase, Ordering::Relaxed);
        }
    }

    /// Asks the connection's task to close (gracefully or at once) and wakes it.
    /// Returns what it was asked before.
    fn ask_close(&self, how: u8) -> u8 {
        let before = self.close.fetch_max(how, Ordering::SeqCst);
        if let Some(waker) = self.waker.get() {
            waker.wake_by_ref();
        }
        before
    }

    /// For the connection's task: registers its waker (first call) and says what it is asked.
    #[inline]
    pub fn poll_close(&self, cx: &Context<'_>) -> u8 {
        if self.waker.get().is_none() {
            let _ = self.waker.set(cx.waker().clone());
        }
        self.close.load(Ordering::SeqCst)
    }
}

/// What [`Tracked::poll_close`] answers.
pub mod close {
    pub const KEEP: u8 = super::KEEP;
    pub const GRACEFUL: u8 = super::GRACEFUL;
    pub const CUT: u8 = super::CUT;
}

/// A request in flight on a connection, until dropped (with its response body).
#[derive(Debug)]
pub struct Active(Arc<Tracked>);

impl Active {
    /// The response switched protocols (WebSocket).
    pub fn upgraded(&self) {
        self.0.upgraded();
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// Why a connection was refused at the accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_connections` open, none of them idle.
    Cap,
    /// `max_connections_per_ip` open from the same address.
    PerIp,
}

/// Counters of one worker, merged when read.
#[derive(Debug, Default)]
struct Counters {
    rejected_cap: AtomicU64,
    rejected_per_ip: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
    evicted: AtomicU64,
    cut_after_grace: AtomicU64,
    restarts: AtomicU64,
}

/// One worker's connections: slots (a slab) walked by its sweep, and the oldest idle ones the
/// last sweep found, for eviction at the cap.
#[derive(Debug, Default)]
pub struct Worker {
    slots: Mutex<Slots>,
    /// Idle connections as of the last sweep, newest first (so `pop` gives the oldest).
    candidates: Mutex<Vec<(u64, Arc<Tracked>)>>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Option<Arc<Tracked>>>,
    free: Vec<usize>,
}

/// Idle connections a sweep keeps as eviction candidates per worker.
const CANDIDATES_KEPT: usize = 64;

/// Every worker's connections, the global count and the per-address counts.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    max: usize,
    base: Instant,
    open: AtomicUsize,
    per_ip: Option<Mutex<HashMap<IpAddr, usize>>>,
    workers: Mutex<Vec<Arc<Worker>>>,
}

impl Connections {
    pub fn new(limits: &Limits) -> Self {
        let max = limits.max_connections.unwrap_or_else(default_max_connections).max(1);
        Connections {
            limits: limits.clone(),
            max,
            base: Instant::now(),
            open: AtomicUsize::new(0),
            per_ip: limits.max_connections_per_ip.map(|_| Mutex::new(HashMap::new())),
            workers: Mutex::new(Vec::new()),
        }
    }

    /// The cap in force (the configured one, or 90% of the file descriptor limit at start).
    pub fn max(&self) -> usize {
        self.max
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A new worker's connection set (kept across the worker's restarts).
    pub fn worker(&self) -> Arc<Worker> {
        let worker = Arc::new(Worker::default());
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).push(worker.clone());
        worker
    }

    /// Counts a worker restarted after a panic.
    pub fn record_restart(&self, worker: &Worker) {
        worker.counters.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Admits a just-accepted connection from `client` on `worker`, closing the oldest idle
    /// connection when at the cap, or refuses it (counted).
    pub fn admit(self: &Arc<Self>, worker: &Arc<Worker>, client: IpAddr) -> Result<Admission, Refused> {
        if let (Some(per_ip), Some(cap)) = (&self.per_ip, self.limits.max_connections_per_ip) {
            let mut counts = per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let count = counts.entry(client).or_insert(0);
            if *count >= cap {
                drop(counts);
                worker.counters.rejected_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::PerIp);
            }
            *count += 1;
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max && !self.evict_oldest_idle(worker) {
            self.open.fetch_sub(1, Ordering::AcqRel);
            self.release_ip(client);
            worker.counters.rejected_cap.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::Cap);
        }
        let mut slots = worker.slots.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slots.free.pop().unwrap_or(slots.entries.len());
        let tracked = Arc::new(Tracked {
            state: AtomicU64::new(self.now() << PHASE_BITS | HEAD),
            active: AtomicU32::new(0),
            h2: AtomicBool::new(false),
            close: AtomicU8::new(KEEP),
            waker: OnceLock::new(),
            base: self.base,
            client,
            slot,
        });
        if slot == slots.entries.len() {
            slots.entries.push(Some(tracked.clone()));
        } else {
            slots.entries[slot] = Some(tracked.clone());
        }
        drop(slots);
        Ok(Admission { tracked, worker: worker.clone(), connections: self.clone() })
    }

    fn release_ip(&self, client: IpAddr) {
        if let Some(per_ip) = &self.per_ip {
            let mut counts = per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = counts.get_mut(&client) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    counts.remove(&client);
                }
            }
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX >> PHASE_BITS)
    }

    /// Closes (gracefully) the connection that has been idle longest, on any worker: first among
    /// the candidates the sweeps found, else by walking every connection.
    fn evict_oldest_idle(&self, asking: &Worker) -> bool {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        loop {
            // The oldest candidate over all workers.
            let mut oldest: Option<(u64, &Arc<Worker>)> = None;
            for worker in &workers {
                let candidates = worker.candidates.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((state, _)) = candidates.last()
                    && oldest.is_none_or(|(since, _)| state >> PHASE_BITS < since)
                {
                    oldest = Some((state >> PHASE_BITS, worker));
                }
            }
            let Some((_, worker)) = oldest else { break };
            let candidate = worker.candidates.lock().unwrap_or_else(|e| e.into_inner()).pop();
            if let Some((state, tracked)) = candidate
                && self.try_evict(&tracked, state, asking)
            {
                return true;
            }
        }
        // No candidate left (or none still idle): those that went idle since the last sweep.
        let mut oldest: Option<(u64, Arc<Tracked>)> = None;
        for worker in &workers {
            let slots = worker.slots.lock().unwrap_or_else(|e| e.into_inner());
            for tracked in slots.entries.iter().flatten() {
                let state = tracked.state.load(Ordering::Relaxed);
                let phase = state & PHASE_MASK;
                if (phase == IDLE || phase == IDLE_H2)
                    && oldest.as_ref().is_none_or(|(s, _)| state >> PHASE_BITS < s >> PHASE_BITS)
                {
                    oldest = Some((state, tracked.clone()));
                }
            }
        }
        oldest.is_some_and(|(state, tracked)| self.try_evict(&tracked, state, asking))
    }

    /// Evicts `tracked` if it is still in the idle `state` it was seen in.
    fn try_evict(&self, tracked: &Tracked, state: u64, asking: &Worker) -> bool {
        let closing = self.now() << PHASE_BITS | CLOSING;
        if tracked.state.compare_exchange(state, closing, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return false;
        }
        let _ = tracked.ask_close(GRACEFUL);
        asking.counters.evicted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// How often each worker sweeps: an eighth of the shortest timeout, from 10 ms to 1 s.
    pub fn sweep_period(&self) -> Duration {
        let shortest = self.limits.header_read_timeout.min(self.limits.keepalive_timeout).min(self.close_grace());
        (shortest / 8).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// How long a connection asked to close gracefully may take before it is cut.
    fn close_grace(&self) -> Duration {
        self.limits.header_read_timeout.min(Duration::from_secs(5))
    }

    /// Closes `worker`'s connections that are past their time, and notes its oldest idle ones.
    ///
    /// While the edge drains (`draining`), idle connections are closed at once and a request
    /// head gets at most the close grace (≤ 5 s) to complete, so that silent or idle clients
    /// do not hold a stopping edge for the whole drain timeout; requests in flight still finish.
    pub fn sweep(&self, worker: &Worker, draining: bool) {
        let now = self.now();
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let grace = nanos(self.close_grace());
        let (head, idle) = if draining {
            (nanos(self.limits.header_read_timeout).min(grace), 0)
        } else {
            (nanos(self.limits.header_read_timeout), nanos(self.limits.keepalive_timeout))
        };
        let mut candidates = Vec::new();
        let slots = worker.slots.lock().unwrap_or_else(|e| e.into_inner());
        for tracked in slots.entries.iter().flatten() {
            let state = tracked.state.load(Ordering::Relaxed);
            let age = now.saturating_sub(state >> PHASE_BITS);
            match state & PHASE_MASK {
                // Counted once, however many sweeps pass before the task closes it.
                HEAD if age > head && tracked.ask_close(CUT) != CUT => {
                    worker.counters.header_timeouts.fetch_add(1, Ordering::Relaxed);
                }
                IDLE | IDLE_H2 if age > idle => {
                    let closing = now << PHASE_BITS | CLOSING;
                    if tracked.state.compare_exchange(state, closing, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                        worker.counters.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        let _ = tracked.ask_close(GRACEFUL);
                    }
                }
                IDLE | IDLE_H2 => candidates.push((state, tracked.clone())),
                CLOSING if age > grace && tracked.ask_close(CUT) != CUT => {
                    worker.counters.cut_after_grace.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        drop(slots);
        // Newest first, so that eviction pops the oldest.
        candidates.sort_unstable_by_key(|(state, _)| std::cmp::Reverse(state >> PHASE_BITS));
        let keep = candidates.len().saturating_sub(CANDIDATES_KEPT);
        candidates.drain(..keep);
        *worker.candidates.lock().unwrap_or_else(|e| e.into_inner()) = candidates;
    }

    /// Prometheus text: open connections, the cap, refusals and closes by reason, restarts.
    pub fn render(&self, out: &mut String) {
        let workers = self.workers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sum = |field: fn(&Counters) -> &AtomicU64| -> u64 {
            workers.iter().map(|w| field(&w.counters).load(Ordering::Relaxed)).sum()
        };
        let _ = writeln!(out, "# HELP windlass_edge_connections_open Open downstream connections.");
        let _ = writeln!(out, "# TYPE windlass_edge_connections_open gauge");
        let _ = writeln!(out, "windlass_edge_connections_open {}", self.open());
        let _ = writeln!(out, "# TYPE windlass_edge_connections_max gauge");
        let _ = writeln!(out, "windlass_edge_connections_max {}", self.max);
        let _ = writeln!(out, "# HELP windlass_edge_connections_rejected_total Connections refused at the accept.");
        let _ = writeln!(out, "# TYPE windlass_edge_connections_rejected_total counter");
        let _ = writeln!(
            out,
            "windlass_edge_connections_rejected_total{{reason=\"max_connections\"}} {}",
            sum(|c| &c.rejected_cap)
        );
        let _ = writeln!(
            out,
            "windlass_edge_connections_rejected_total{{reason=\"max_connections_per_ip\"}} {}",
            sum(|c| &c.rejected_per_ip)
        );
        let _ =
            writeln!(out, "# HELP windlass_edge_connections_closed_total Connections the edge closed by its limits.");
        let _ = writeln!(out, "# TYPE windlass_edge_connections_closed_total counter");
        for (reason, field) in [
            ("header_read_timeout", (|c| &c.header_timeouts) as fn(&Counters) -> &AtomicU64),
            ("keepalive_timeout", |c| &c.idle_timeouts),
            ("evicted_at_cap", |c| &c.evicted),
            ("cut_after_grace", |c| &c.cut_after_grace),
        ] {
            let _ = writeln!(out, "windlass_edge_connections_closed_total{{reason=\"{reason}\"}} {}", sum(field));
        }
        let _ = writeln!(out, "# TYPE windlass_edge_worker_restarts_total counter");
        let _ = writeln!(out, "windlass_edge_worker_restarts_total {}", sum(|c| &c.restarts));
    }
}

/// A connection admitted and counted, until dropped: held by its [`TrackedIo`], which an
/// upgraded (WebSocket) session keeps after the HTTP connection task has ended.
#[derive(Debug)]
pub struct Admission {
    tracked: Arc<Tracked>,
    worker: Arc<Worker>,
    connections: Arc<Connections>,
}

impl Admission {
    pub fn tracked(&self) -> &Arc<Tracked> {
        &self.tracked
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.tracked.state.store(CLOSED, Ordering::Release);
        {
            let mut slots = self.worker.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = self.tracked.slot;
            if slots.entries.get(slot).is_some_and(|e| e.as_ref().is_some_and(|t| Arc::ptr_eq(t, &self.tracked))) {
                slots.entries[slot] = None;
                slots.free.push(slot);
            }
        }
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
        self.connections.release_ip(self.tracked.client);
    }
}

/// A downstream stream that tells its connection's [`Tracked`] when bytes arrive, and keeps the
/// connection counted (its [`Admission`]) for as long as the stream lives.
#[derive(Debug)]
pub struct TrackedIo<S> {
    io: S,
    admission: Admission,
}

impl<S> TrackedIo<S> {
    pub fn new(io: S, admission: Admission) -> Self {
        TrackedIo { io, admission }
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.admission.tracked.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A response body that ends its request's [`Active`] when it is done (or dropped), so that the
/// connection counts as idle only once the whole response has been written.
#[derive(Debug)]
pub struct Finishing<B> {
    inner: B,
    active: Option<Active>,
}

impl<B> Finishing<B> {
    pub fn new(inner: B, active: Active) -> Self {
        Finishing { inner, active: Some(active) }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Finishing<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.active = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Each worker's sweep, every [`Connections::sweep_period`]. Once `stop` is set it goes on (for
/// as long as the worker drains) with the draining rules of [`Connections::sweep`].
pub async fn sweep(connections: Arc<Connections>, worker: Arc<Worker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(connections.sweep_period());
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = *stop.borrow();
    loop {
        if draining {
            interval.tick().await;
            connections.sweep(&worker, true);
            continue;
        }
        tokio::select! {
            _ = interval.tick() => connections.sweep(&worker, false),
            _ = stop.changed() => {
                draining = true;
                connections.sweep(&worker, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_connections: Some(2), ..Limits::default() }
    }

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let connections = Arc::new(Connections::new(&limits()));
        let worker = connections.worker();
        let ip: IpAddr = "127.0.0.1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1]));
        let first = connections.admit(&worker, ip).expect("room");
        let second = connections.admit(&worker, ip).expect("room");
        // Both busy: no room.
        let (a, b) = (first.tracked().request_started(false), second.tracked().request_started(false));
        assert_eq!(connections.admit(&worker, ip).err(), Some(Refused::Cap));
        drop(b);
        drop(a); // the first is now the most recently idle
        let third = connections.admit(&worker, ip).expect("the oldest idle one makes room");
        assert_eq!(second.tracked().close.load(Ordering::Relaxed), GRACEFUL, "the second went idle first");
        assert_eq!(first.tracked().close.load(Ordering::Relaxed), KEEP);
        drop((second, third));
        assert_eq!(connections.open(), 1);
    }

    #[test]
    fn the_per_address_cap_counts_each_address() {
        let limits = Limits { max_connections_per_ip: Some(1), ..Limits::default() };
        let connections = Arc::new(Connections::new(&limits));
        let worker = connections.worker();
        let (one, two) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        let first = connections.admit(&worker, one).expect("room");
        assert_eq!(connections.admit(&worker, one).err(), Some(Refused::PerIp));
        let _other = connections.admit(&worker, two).expect("another address has its own count");
        drop(first);
        assert!(connections.admit(&worker, one).is_ok(), "a closed connection frees its address's place");
    }
}
