//! Canary releases with automatic analysis.
//!
//! The new color takes the configured weight steps through the edge. Every `analysis.interval`
//! the edge's counters of the canary pool (and, with `compare_to_stable`, of the stable pool) are
//! read twice and subtracted, so each interval is judged on exactly the answers it saw:
//!
//! - fewer than `min_requests` answers: **inconclusive**, never a pass; `inconclusive_limit`
//!   inconclusive intervals in a row abort, so a canary without traffic neither waits forever
//!   nor passes on a timeout;
//! - error rate or p95/p99 over their thresholds: **failed**; `failure_limit` failed intervals
//!   abort;
//! - otherwise **passed**. A step is left only after its pause *and* at least one passed interval
//!   at its weight.
//!
//! An abort sets the canary's weight to 0 at once (the edge releases its sticky clients with it),
//! drains and stops it, and fails the deploy with the numbers that failed. `windlass canary
//! promote|abort` reach a running canary through the store (see [`Control`]); its progress is
//! published there too, for `windlass canary status`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use windlass_config::{Analysis, CanaryStep};
use windlass_edge::metrics::Snapshot;

use crate::deploy::{Run, StepLog};

/// How often a running canary looks for a manual promote or abort.
const CONTROL_POLL: Duration = Duration::from_millis(200);

/// One interval's answers, as judged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The stable pool's error rate and p95 over the same interval (with `compare_to_stable`).
    pub stable_error_rate: Option<f64>,
    pub stable_p95_ms: Option<f64>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} requests, {} errors ({:.2}%)", self.requests, self.errors, self.error_rate * 100.0)?;
        if let Some(p95) = self.p95_ms {
            write!(f, ", p95 {p95:.1} ms")?;
        }
        if let Some(p99) = self.p99_ms {
            write!(f, ", p99 {p99:.1} ms")?;
        }
        if let Some(stable) = self.stable_error_rate {
            write!(f, "; stable {:.2}% errors", stable * 100.0)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    /// What exceeded its threshold, with both numbers.
    Failed {
        reasons: Vec<String>,
    },
    Inconclusive {
        reason: String,
    },
}

/// A stable pool's p95 may be exceeded by this factor before a compared canary fails on latency.
const STABLE_LATENCY_FACTOR: f64 = 1.5;

fn micros_to_ms(micros: Option<u64>) -> Option<f64> {
    micros.map(|m| m as f64 / 1000.0)
}

/// Judges one interval of the canary pool (`canary`) against the thresholds; `stable` is the
/// stable pool over the same interval when the analysis compares with it.
pub fn judge(analysis: &Analysis, canary: &Snapshot, stable: Option<&Snapshot>) -> (Verdict, Figures) {
    let requests = canary.requests();
    let errors = canary.errors();
    let rate = |s: &Snapshot| if s.requests() == 0 { 0.0 } else { s.errors() as f64 / s.requests() as f64 };
    let stable = stable.filter(|s| s.requests() >= u64::from(analysis.min_requests));
    let figures = Figures {
        requests,
        errors,
        error_rate: rate(canary),
        p95_ms: micros_to_ms(canary.quantile_micros(0.95)),
        p99_ms: micros_to_ms(canary.quantile_micros(0.99)),
        stable_error_rate: stable.map(rate),
        stable_p95_ms: stable.and_then(|s| micros_to_ms(s.quantile_micros(0.95))),
    };
    if requests < u64::from(analysis.min_requests) {
        let reason =
            format!("{requests} requests in the interval, fewer than min_requests = {}", analysis.min_requests);
        return (Verdict::Inconclusive { reason }, figures);
    }
    let mut reasons = Vec::new();
    if let Some(max) = analysis.max_error_rate {
        let allowed = max.fraction() + figures.stable_error_rate.unwrap_or(0.0);
        if figures.error_rate > allowed {
            let against = match figures.stable_error_rate {
                Some(stable) => format!("the stable pool's {:.2}% + {max}", stable * 100.0),
                None => format!("max_error_rate {max}"),
            };
            reasons.push(format!(
                "error rate {:.2}% ({errors} of {requests}) is over {against}",
                figures.error_rate * 100.0
            ));
        }
    }
    for (name, limit, measured) in
        [("p95", analysis.max_p95, figures.p95_ms), ("p99", analysis.max_p99, figures.p99_ms)]
    {
        let (Some(limit), Some(measured)) = (limit, measured) else { continue };
        let limit_ms = limit.as_std().as_secs_f64() * 1000.0;
        if measured > limit_ms {
            reasons.push(format!("{name} {measured:.1} ms is over max_{name} {limit_ms:.0} ms"));
        }
    }
    if let (Some(measured), Some(stable)) = (figures.p95_ms, figures.stable_p95_ms) {
        let bound = stable * STABLE_LATENCY_FACTOR;
        // Small absolute differences are noise; only compare above the configured bound or 5 ms.
        let floor = analysis.max_p95.map_or(5.0, |l| l.as_std().as_secs_f64() * 1000.0);
        if measured > bound && measured > floor {
            reasons.push(format!(
                "p95 {measured:.1} ms is over {STABLE_LATENCY_FACTOR}× the stable pool's {stable:.1} ms"
            ));
        }
    }
    if reasons.is_empty() { (Verdict::Passed, figures) } else { (Verdict::Failed { reasons }, figures) }
}

/// A manual decision for a running canary, left in the store by the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Promote,
    Abort,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    pub command: Command,
    pub actor: String,
    pub deploy_id: String,
}

/// Where a running canary stands, published after each change for `windlass canary status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub deploy_id: String,
    pub service: String,
    pub canary: String,
    pub stable: String,
    pub step: usize,
    pub steps: usize,
    pub weight: u8,
    pub passed: u32,
    pub failed: u32,
    /// Inconclusive intervals in a row.
    pub inconclusive: u32,
    pub last: Option<Figures>,
    pub last_verdict: Option<Verdict>,
    /// `running`, `promoted` or `aborted`.
    pub outcome: String,
    pub reason: Option<String>,
    /// When the interval verdict that aborted the canary was computed (RFC 3339, milliseconds);
    /// `None` unless the analysis aborted it (not on a manual abort).
    #[serde(default)]
    pub failed_at: Option<String>,
}

pub fn control_key(environment: &str, service: &str) -> String {
    format!("canary-control/{environment}/{service}")
}

pub fn progress_key(environment: &str, service: &str) -> String {
    format!("canary/{environment}/{service}")
}

/// Why a canary did not finish.
#[derive(Debug, Clone)]
pub struct Aborted {
    pub reason: String,
}

/// Walks the steps below 100%. Returns when the canary may take all traffic (every step passed,
/// or a manual promote); an `Err` means abort, and the caller takes the canary out.
pub async fn run_steps(
    run: &Run,
    log: &StepLog,
    service: &str,
    canary: &str,
    stable: &str,
    steps: &[CanaryStep],
    analysis: Option<&Analysis>,
) -> Result<(), Aborted> {
    let store = run.deployer.store.clone();
    let edge = run.deployer.edge.clone();
    let control = control_key(&run.environment, service);
    // A decision left over from an earlier canary of this service is not for this one.
    let _ = store.set_setting(&control, "").await;
    let partial: Vec<&CanaryStep> = steps.iter().filter(|s| s.weight < 100).collect();
    let mut progress = Progress {
        deploy_id: run.id.to_string(),
        service: service.to_owned(),
        canary: canary.to_owned(),
        stable: stable.to_owned(),
        steps: partial.len(),
        outcome: "running".into(),
        ..Progress::default()
    };
    let publish = |progress: &Progress| {
        let store = store.clone();
        let key = progress_key(&run.environment, service);
        let text = serde_json::to_string(progress).unwrap_or_default();
        async move {
            let _ = store.set_setting(&key, &text).await;
        }
    };
    let outcome = async {
        for (index, step) in partial.iter().enumerate() {
            let weights = BTreeMap::from([(canary.to_owned(), step.weight), (stable.to_owned(), 100 - step.weight)]);
            edge.set_weights(service, &weights)
                .await
                .map_err(|e| Aborted { reason: format!("cannot set the canary's weight: {e}") })?;
            progress.step = index + 1;
            progress.weight = step.weight;
            publish(&progress).await;
            windlass_failpoint::hit("pipeline.canary.step_set");
            log.line(format!(
                "{service}: step {}/{}: {}% of traffic on {canary}; holding {:?}",
                index + 1,
                partial.len(),
                step.weight,
                step.pause.as_std()
            ));
            let step_started = tokio::time::Instant::now();
            let mut passed_here = 0;
            let interval = analysis.map(|a| a.interval.as_std().max(Duration::from_millis(100)));
            let mut window = match interval {
                Some(_) => Some(Window::open(run, service, canary, stable, analysis).await?),
                None => None,
            };
            loop {
                if run.lock_lost() {
                    return Err(Aborted { reason: "the deploy lock was broken while the canary ran".into() });
                }
                if let Some(decision) = read_control(run, &control).await {
                    match decision.command {
                        Command::Promote => {
                            log.line(format!("{service}: promoted by {}", decision.actor));
                            return Ok(());
                        }
                        Command::Abort => {
                            return Err(Aborted { reason: format!("aborted by {}", decision.actor) });
                        }
                    }
                }
                let pause_over = step_started.elapsed() >= step.pause.as_std();
                if pause_over && (analysis.is_none() || passed_here > 0) {
                    break;
                }
                let (Some(interval), Some(analysis), Some(open)) = (interval, analysis, window.as_mut()) else {
                    tokio::time::sleep(CONTROL_POLL.min(step.pause.as_std().saturating_sub(step_started.elapsed())))
                        .await;
                    continue;
                };
                if open.started.elapsed() < interval {
                    tokio::time::sleep(CONTROL_POLL.min(interval.saturating_sub(open.started.elapsed()))).await;
                    continue;
                }
                let (verdict, figures) = open.close(run, service, canary, stable, analysis).await?;
                let judged_at = run.deployer.clock.now();
                progress.last = Some(figures.clone());
                progress.last_verdict = Some(verdict.clone());
                match &verdict {
                    Verdict::Passed => {
                        progress.passed += 1;
                        progress.inconclusive = 0;
                        passed_here += 1;
                        log.line(format!("{service}: analysis passed: {figures}"));
                    }
                    Verdict::Failed { reasons } => {
                        progress.failed += 1;
                        progress.inconclusive = 0;
                        log.line(format!(
                            "{service}: analysis failed ({}/{}): {}",
                            progress.failed,
                            analysis.failure_limit,
                            reasons.join("; ")
                        ));
                        if progress.failed >= analysis.failure_limit {
                            progress.failed_at = Some(format!("{judged_at:.3}"));
                            return Err(Aborted {
                                reason: format!(
                                    "canary analysis failed {} time{} (failure_limit {}): {} [{figures}]",
                                    progress.failed,
                                    if progress.failed == 1 { "" } else { "s" },
                                    analysis.failure_limit,
                                    reasons.join("; ")
                                ),
                            });
                        }
                    }
                    Verdict::Inconclusive { reason } => {
                        progress.inconclusive += 1;
                        log.line(format!(
                            "{service}: analysis inconclusive ({}/{} in a row): {reason}",
                            progress.inconclusive, analysis.inconclusive_limit
                        ));
                        if progress.inconclusive >= analysis.inconclusive_limit {
                            progress.failed_at = Some(format!("{judged_at:.3}"));
                            return Err(Aborted {
                                reason: format!(
                                    "canary analysis inconclusive {} times in a row (inconclusive_limit {}): {reason}",
                                    progress.inconclusive, analysis.inconclusive_limit
                                ),
                            });
                        }
                    }
                }
                *open = Window::open(run, service, canary, stable, Some(analysis)).await?;
                publish(&progress).await;
            }
        }
        Ok(())
    }
    .await;
    if outcome.is_err() {
        // Weight 0 first, before anything is written: every millisecond here is traffic on a
        // canary already judged bad. The caller sets it again and retires the canary.
        let weights = BTreeMap::from([(stable.to_owned(), 100), (canary.to_owned(), 0)]);
        // The edge keeps its last table: a canary left with a share keeps it until someone acts,
        // so a transient admin error is retried before giving up.
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=6 {
            match edge.set_weights(service, &weights).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::error!(%err, service, attempt, "cannot take the aborted canary's weight to 0");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
    match &outcome {
        Ok(()) => progress.outcome = "promoted".into(),
        Err(aborted) => {
            progress.outcome = "aborted".into();
            progress.reason = Some(aborted.reason.clone());
        }
    }
    publish(&progress).await;
    let _ = store.set_setting(&control, "").await;
    outcome
}

async fn read_control(run: &Run, key: &str) -> Option<Control> {
    let text = run.deployer.store.setting(key).await.ok().flatten()?;
    let control: Control = serde_json::from_str(&text).ok()?;
    (control.deploy_id == run.id.as_str()).then_some(control)
}

/// The counters at the start of an analysis interval.
struct Window {
    started: tokio::time::Instant,
    canary: Snapshot,
    stable: Option<Snapshot>,
}

impl Window {
    async fn open(
        run: &Run,
        service: &str,
        canary: &str,
        stable: &str,
        analysis: Option<&Analysis>,
    ) -> Result<Self, Aborted> {
        let compare = analysis.is_some_and(|a| a.compare_to_stable);
        let (canary, stable) = read_pools(run, service, canary, stable, compare).await?;
        Ok(Window { started: tokio::time::Instant::now(), canary, stable })
    }

    async fn close(
        &self,
        run: &Run,
        service: &str,
        canary: &str,
        stable: &str,
        analysis: &Analysis,
    ) -> Result<(Verdict, Figures), Aborted> {
        let (canary_now, stable_now) = read_pools(run, service, canary, stable, analysis.compare_to_stable).await?;
        let canary_interval = canary_now.since(&self.canary);
        let stable_interval = match (&stable_now, &self.stable) {
            (Some(now), Some(then)) => Some(now.since(then)),
            _ => None,
        };
        Ok(judge(analysis, &canary_interval, stable_interval.as_ref()))
    }
}

/// Both pools' counters from one read of the edge's typed counters, so that the canary and the
/// stable pool are compared over the same moments.
async fn read_pools(
    run: &Run,
    service: &str,
    canary: &str,
    stable: &str,
    compare: bool,
) -> Result<(Snapshot, Option<Snapshot>), Aborted> {
    let unreadable = |reason: String| Aborted { reason: format!("cannot read the canary's metrics: {reason}") };
    let mut counters = run.deployer.edge.counters().await.map_err(|e| unreadable(e.to_string()))?;
    let mut pools = counters
        .services
        .remove(service)
        .ok_or_else(|| unreadable(format!("the edge routes no service `{service}`")))?
        .pools;
    let mut take = |pool: &str| {
        pools.remove(pool).ok_or_else(|| unreadable(format!("service `{service}` has no pool `{pool}` at the edge")))
    };
    let canary = take(canary)?;
    let stable = if compare { Some(take(stable)?) } else { None };
    Ok((canary, stable))
}

#[cfg(test)]
mod tests {
    use windlass_config::units::{Duration as ConfigDuration, Percent};
    use windlass_edge::metrics::{PoolMetrics, Snapshot};

    use super::*;

    fn analysis() -> Analysis {
        Analysis {
            interval: ConfigDuration::from_secs(10),
            max_error_rate: Some(Percent::parse("1%").unwrap()),
            max_p95: Some(ConfigDuration::parse("200ms").unwrap()),
            max_p99: None,
            min_requests: 50,
            failure_limit: 2,
            inconclusive_limit: 3,
            compare_to_stable: false,
        }
    }

    fn answers(ok: u64, errors: u64, micros: u64) -> Snapshot {
        let metrics = PoolMetrics::default();
        for _ in 0..ok {
            metrics.record(200, micros);
        }
        for _ in 0..errors {
            metrics.record(503, micros);
        }
        metrics.snapshot()
    }

    #[test]
    fn too_few_requests_are_inconclusive_even_when_all_succeed() {
        let (verdict, figures) = judge(&analysis(), &answers(49, 0, 1_000), None);
        assert!(matches!(verdict, Verdict::Inconclusive { ref reason } if reason.contains("49 requests")));
        assert_eq!(figures.requests, 49);
    }

    #[test]
    fn errors_and_latency_over_thresholds_fail_with_the_numbers() {
        assert_eq!(judge(&analysis(), &answers(100, 1, 1_000), None).0, Verdict::Passed);
        let (verdict, _) = judge(&analysis(), &answers(90, 10, 1_000), None);
        let Verdict::Failed { reasons } = verdict else { panic!("{verdict:?}") };
        assert_eq!(reasons, ["error rate 10.00% (10 of 100) is over max_error_rate 1%"]);
        let (verdict, figures) = judge(&analysis(), &answers(100, 0, 400_000), None);
        let Verdict::Failed { reasons } = verdict else { panic!("{verdict:?}") };
        assert!(reasons[0].starts_with("p95 ") && reasons[0].ends_with("is over max_p95 200 ms"), "{reasons:?}");
        assert!(figures.p95_ms.unwrap() >= 400.0);
    }

    #[test]
    fn compared_with_stable_the_stable_error_rate_is_allowed() {
        let mut compared = analysis();
        compared.compare_to_stable = true;
        // Both pools fail 5% (a bad dependency, not the canary): the canary is not blamed.
        let stable = answers(95, 5, 1_000);
        assert_eq!(judge(&compared, &answers(95, 5, 1_000), Some(&stable)).0, Verdict::Passed);
        let (verdict, _) = judge(&compared, &answers(80, 20, 1_000), Some(&stable));
        assert!(matches!(verdict, Verdict::Failed { ref reasons } if reasons[0].contains("stable pool's 5.00%")));
    }
}
