//! The [`Prober`]: every probe on one timer loop. Due times sit in a heap; a due probe's check is
//! a short task (at most [`MAX_CONCURRENT_CHECKS`] at once), and a probe whose last check is still
//! running skips its turn rather than piling up. Each probe's first run is offset into its
//! interval by a hash of its name, so thousands of probes with one interval do not fire together,
//! and the offsets stay the same across restarts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use windlass_secrets::Redactor;
use windlass_store::Clock;

use super::{Outcome, Probe, ProbeError, ProbeSpec, ProbeStatus, Transition};

/// Checks running at the same time, across all probes.
pub const MAX_CONCURRENT_CHECKS: usize = 256;

/// The timer loop's granularity: a probe runs at most this late (or a tenth of the shortest
/// interval, if less).
const TICK: Duration = Duration::from_millis(50);

/// Where in its interval a probe first runs: a hash of its name, the same on every start.
pub fn start_offset(name: &str, interval: Duration) -> Duration {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let millis = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
    Duration::from_millis(hash % millis)
}

struct Inner {
    probes: Vec<Arc<Probe>>,
    by_name: HashMap<String, usize>,
    states: Mutex<Vec<ProbeStatus>>,
    /// Results by service not yet taken by [`Prober::take_service_results`].
    untaken: Mutex<HashMap<String, ServiceResults>>,
    clock: Arc<dyn Clock>,
    events: mpsc::UnboundedSender<Transition>,
    /// Hides the environment's secrets from every reason before it is kept or sent on.
    redactor: Redactor,
}

impl Inner {
    async fn check(&self, index: usize) -> Option<(Outcome, Option<Transition>)> {
        let probe = self.probes.get(index)?;
        let outcome = probe.run_redacted(self.clock.now(), &self.redactor).await;
        let at = self.clock.now();
        let transition = {
            let mut states = self.states.lock().ok()?;
            states.get_mut(index)?.observe(&outcome, at)
        };
        if let Some(service) = &probe.spec().service
            && let Ok(mut untaken) = self.untaken.lock()
        {
            // Keyed by the service's name: allocated once per service, not per check.
            match untaken.get_mut(service.as_str()) {
                Some(results) => results.add(outcome.ok),
                None => untaken.entry(service.clone()).or_default().add(outcome.ok),
            }
        }
        if let Some(change) = &transition {
            let (probe, from, to) = (&change.probe, change.from.as_str(), change.to.as_str());
            if change.to == super::Health::Down {
                tracing::warn!(probe, from, to, reason = %change.reason, "probe is down");
            } else {
                tracing::info!(probe, from, to, reason = %change.reason, "probe is up");
            }
            // Nobody listening is fine: the state stays queryable.
            let _ = self.events.send(change.clone());
        }
        Some((outcome, transition))
    }
}

/// How many of a service's checks passed and failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceResults {
    pub successes: u64,
    pub failures: u64,
}

impl std::ops::AddAssign for ServiceResults {
    fn add_assign(&mut self, other: ServiceResults) {
        self.successes += other.successes;
        self.failures += other.failures;
    }
}

impl ServiceResults {
    fn add(&mut self, ok: bool) {
        if ok {
            self.successes += 1;
        } else {
            self.failures += 1;
        }
    }
}

/// Runs probes and keeps their latest state.
#[derive(Clone)]
pub struct Prober {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").field("probes", &self.inner.probes.len()).finish()
    }
}

impl Prober {
    /// A prober for `specs` (names must be unique) dating results by `clock`; state changes
    /// arrive on the returned channel.
    pub fn new(
        specs: Vec<ProbeSpec>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Prober, mpsc::UnboundedReceiver<Transition>), ProbeError> {
        Self::redacting(specs, clock, Redactor::default())
    }

    /// [`Prober::new`], every result's reason redacted with `redactor` (the environment's
    /// secrets) before it is kept, logged or sent as a transition.
    pub fn redacting(
        specs: Vec<ProbeSpec>,
        clock: Arc<dyn Clock>,
        redactor: Redactor,
    ) -> Result<(Prober, mpsc::UnboundedReceiver<Transition>), ProbeError> {
        let mut probes = Vec::with_capacity(specs.len());
        let mut by_name = HashMap::new();
        let mut states = Vec::with_capacity(specs.len());
        for spec in specs {
            if by_name.insert(spec.name.clone(), probes.len()).is_some() {
                return Err(ProbeError::DuplicateName(spec.name));
            }
            states.push(ProbeStatus::new(&spec));
            probes.push(Arc::new(Probe::new(spec)?));
        }
        let (events, receiver) = mpsc::unbounded_channel();
        let untaken = Mutex::new(HashMap::new());
        let inner = Inner { probes, by_name, states: Mutex::new(states), untaken, clock, events, redactor };
        Ok((Prober { inner: Arc::new(inner) }, receiver))
    }

    /// Starts each probe from the state a probe of the same name and kind had in `previous` (an
    /// earlier prober of the same probes, rebuilt because something else changed), so its
    /// thresholds keep counting instead of starting over. Call before [`Prober::run`].
    pub fn carry_over(&self, previous: &[ProbeStatus]) {
        let Ok(mut states) = self.inner.states.lock() else { return };
        for state in states.iter_mut() {
            if let Some(old) = previous.iter().find(|p| p.name == state.name && p.kind == state.kind) {
                // The counts, the verdict and the last result carry on; what the spec says
                // (thresholds, service, severity) is the new spec's.
                let fresh = std::mem::replace(state, old.clone());
                state.failure_threshold = fresh.failure_threshold;
                state.success_threshold = fresh.success_threshold;
                state.service = fresh.service;
                state.environment = fresh.environment;
                state.severity = fresh.severity;
            }
        }
    }

    /// The results of each service's probes since the last call, by service (what an idle
    /// service's SLO counts). Cheap however many probes there are: the counts are kept per
    /// service as checks finish.
    pub fn take_service_results(&self) -> HashMap<String, ServiceResults> {
        self.inner.untaken.lock().map(|mut untaken| std::mem::take(&mut *untaken)).unwrap_or_default()
    }

    /// Gives back results taken by [`Prober::take_service_results`] (from this prober or one it
    /// replaces) that could not be recorded: the next take returns them too.
    pub fn put_back_service_results(&self, results: HashMap<String, ServiceResults>) {
        let Ok(mut untaken) = self.inner.untaken.lock() else { return };
        for (service, results) in results {
            *untaken.entry(service).or_default() += results;
        }
    }

    /// Runs one probe now, outside its schedule, and records the result like a scheduled run.
    /// `None` for an unknown name.
    pub async fn check_now(&self, name: &str) -> Option<(Outcome, Option<Transition>)> {
        let index = *self.inner.by_name.get(name)?;
        self.inner.check(index).await
    }

    /// The latest state of one probe.
    pub fn status(&self, name: &str) -> Option<ProbeStatus> {
        let index = *self.inner.by_name.get(name)?;
        self.inner.states.lock().ok()?.get(index).cloned()
    }

    /// The latest state of every probe, in the order they were given.
    pub fn statuses(&self) -> Vec<ProbeStatus> {
        self.inner.states.lock().map(|states| states.clone()).unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.inner.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.probes.is_empty()
    }

    /// The timer loop: runs every probe at its interval until `stop` turns true (or its sender
    /// is dropped). Checks still running then are abandoned (commands are killed).
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let start = Instant::now();
        let mut due: BinaryHeap<Reverse<(Instant, usize)>> = self
            .inner
            .probes
            .iter()
            .enumerate()
            .map(|(i, p)| Reverse((start + start_offset(&p.spec().name, p.spec().interval), i)))
            .collect();
        // Wake-ups are rounded up to ticks, so a wake-up starts every probe due in its tick at
        // once and their sockets' events share the thread's next wake-ups: thousands of probes
        // spread over an interval would otherwise wake the thread several times per check.
        let shortest = self.inner.probes.iter().map(|p| p.spec().interval).min().unwrap_or(TICK);
        let tick = TICK.min(shortest / 10).max(Duration::from_millis(1));
        let mut busy = vec![false; self.inner.probes.len()];
        let mut tasks = tokio::task::JoinSet::new();
        let mut task_probe = HashMap::new();
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS));
        loop {
            if *stop.borrow() {
                break;
            }
            let next = due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                changed = stop.changed() => if changed.is_err() { break },
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match done {
                        Ok((id, ())) => id,
                        Err(err) => {
                            tracing::error!(error = %err, "a probe check failed to finish");
                            err.id()
                        }
                    };
                    if let Some(index) = task_probe.remove(&id) {
                        busy[index] = false;
                    }
                }
                () = tokio::time::sleep_until(round_up(next.unwrap_or(start), start, tick)), if next.is_some() => {
                    let now = Instant::now();
                    while let Some(&Reverse((at, index))) = due.peek() && at <= now {
                        due.pop();
                        if !busy[index] {
                            busy[index] = true;
                            let (inner, permits) = (self.inner.clone(), permits.clone());
                            let handle = tasks.spawn(async move {
                                let Ok(_permit) = permits.acquire_owned().await else { return };
                                inner.check(index).await;
                            });
                            task_probe.insert(handle.id(), index);
                        }
                        let interval = self.inner.probes[index].spec().interval.max(Duration::from_millis(1));
                        due.push(Reverse((next_due(at, now, interval), index)));
                    }
                }
            }
        }
        tasks.abort_all();
    }
}

/// The first multiple of `tick` after `start` at or after `at`.
fn round_up(at: Instant, start: Instant, tick: Duration) -> Instant {
    let since = at.saturating_duration_since(start).as_nanos();
    let tick_nanos = tick.as_nanos().max(1);
    let ticks = u32::try_from(since.div_ceil(tick_nanos)).unwrap_or(u32::MAX);
    start + tick.saturating_mul(ticks)
}

/// The first multiple of `interval` after `previous` that is later than `now` (missed turns are
/// skipped, not caught up).
fn next_due(previous: Instant, now: Instant, interval: Duration) -> Instant {
    let next = previous + interval;
    if next > now {
        return next;
    }
    let behind = now.duration_since(next).as_nanos();
    let skipped = u32::try_from(behind / interval.as_nanos().max(1) + 1).unwrap_or(u32::MAX);
    next + interval.saturating_mul(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_offsets_spread_probes_across_the_interval_and_stay_put() {
        let interval = Duration::from_secs(30);
        let offsets: Vec<Duration> = (0..3000).map(|i| start_offset(&format!("probe-{i}"), interval)).collect();
        assert!(offsets.iter().all(|o| *o < interval));
        assert_eq!(start_offset("probe-7", interval), offsets[7], "the same name, the same offset");
        // Each 3-second tenth of the interval gets a fair share (300 ± 100) of the 3000 probes.
        for tenth in 0..10 {
            let count = offsets.iter().filter(|o| o.as_secs() / 3 == tenth).count();
            assert!((200..=400).contains(&count), "tenth {tenth} has {count} probes");
        }
    }

    #[test]
    fn wake_ups_round_up_to_ticks() {
        let start = Instant::now();
        let tick = Duration::from_millis(50);
        assert_eq!(round_up(start, start, tick), start);
        assert_eq!(round_up(start + Duration::from_millis(1), start, tick), start + tick);
        assert_eq!(round_up(start + tick, start, tick), start + tick);
        assert_eq!(round_up(start + Duration::from_millis(149), start, tick), start + 3 * tick);
    }

    #[test]
    fn missed_turns_are_skipped() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        assert_eq!(next_due(start, start, second), start + second);
        assert_eq!(next_due(start, start + Duration::from_millis(3500), second), start + 4 * second);
        assert_eq!(next_due(start, start + 2 * second, second), start + 3 * second);
    }
}
