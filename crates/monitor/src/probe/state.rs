//! From results to states: a probe turns Down after `failure_threshold` failures in a row and Up
//! after `success_threshold` successes in a row. Pure: the caller says when each result came.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use windlass_config::AlertSeverity;

use super::{Outcome, ProbeSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not yet enough results either way.
    Unknown,
    Up,
    Down,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// A change of a probe's state, with the result that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub probe: String,
    pub from: Health,
    pub to: Health,
    pub at: Timestamp,
    /// The reason of the result that made the change.
    pub reason: String,
    /// The results in a row that made it (the threshold).
    pub after: u32,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub severity: AlertSeverity,
}

/// The latest state of one probe (what `windlass status` shows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeStatus {
    pub name: String,
    pub kind: &'static str,
    pub health: Health,
    /// When the probe entered its current state.
    pub since: Option<Timestamp>,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_checked: Option<Timestamp>,
    pub last_ok: Option<bool>,
    pub last_reason: String,
    pub last_latency_ms: u64,
    pub cert_days_left: Option<i64>,
    pub checks: u64,
    /// How many of the checks failed (with `checks`, what an idle service's SLO counts).
    pub failures: u64,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub severity: AlertSeverity,
}

impl ProbeStatus {
    pub fn new(spec: &ProbeSpec) -> Self {
        ProbeStatus {
            name: spec.name.clone(),
            kind: spec.kind(),
            health: Health::Unknown,
            since: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_checked: None,
            last_ok: None,
            last_reason: String::new(),
            last_latency_ms: 0,
            cert_days_left: None,
            checks: 0,
            failures: 0,
            failure_threshold: spec.failure_threshold.max(1),
            success_threshold: spec.success_threshold.max(1),
            service: spec.service.clone(),
            environment: spec.environment.clone(),
            severity: spec.severity,
        }
    }

    /// Records one result taken at `at`; returns the change it caused, if any.
    pub fn observe(&mut self, outcome: &Outcome, at: Timestamp) -> Option<Transition> {
        self.checks += 1;
        if !outcome.ok {
            self.failures += 1;
        }
        self.last_checked = Some(at);
        self.last_ok = Some(outcome.ok);
        self.last_reason = outcome.reason.clone();
        self.last_latency_ms = u64::try_from(outcome.latency.as_millis()).unwrap_or(u64::MAX);
        self.cert_days_left = outcome.cert_days_left;
        let (to, after) = if outcome.ok {
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
            (Health::Up, self.success_threshold)
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
            (Health::Down, self.failure_threshold)
        };
        let in_a_row = if outcome.ok { self.consecutive_successes } else { self.consecutive_failures };
        if self.health == to || in_a_row < after {
            return None;
        }
        let from = std::mem::replace(&mut self.health, to);
        self.since = Some(at);
        Some(Transition {
            probe: self.name.clone(),
            from,
            to,
            at,
            reason: outcome.reason.clone(),
            after,
            service: self.service.clone(),
            environment: self.environment.clone(),
            severity: self.severity,
        })
    }

    /// How long the probe has been in its state, as of `now`.
    pub fn for_how_long(&self, now: Timestamp) -> Option<Duration> {
        self.since.and_then(|since| Duration::try_from(now.duration_since(since)).ok())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::probe::{ProbeSpec, Target};
    use windlass_store::{Clock, ManualClock};

    fn result(ok: bool, reason: &str) -> Outcome {
        if ok {
            Outcome::pass(reason, Duration::from_millis(3))
        } else {
            Outcome::fail(reason, Duration::from_millis(3))
        }
    }

    #[test]
    fn down_after_exactly_n_failures_and_up_after_exactly_m_successes() {
        let clock = ManualClock::new("2026-11-29T10:00:00Z".parse().unwrap());
        let mut spec = ProbeSpec::new("api", Target::Tcp { address: "127.0.0.1:1".into() });
        (spec.failure_threshold, spec.success_threshold) = (3, 2);
        spec.service = Some("api".into());
        let mut status = ProbeStatus::new(&spec);
        let mut step = |ok: bool, reason: &str| {
            clock.advance(Duration::from_secs(30));
            status.observe(&result(ok, reason), clock.now())
        };
        assert_eq!(step(true, "ok").map(|t| (t.from, t.to)), None, "one success is not two");
        let up = step(true, "ok").unwrap();
        assert_eq!((up.from, up.to, up.after), (Health::Unknown, Health::Up, 2));
        assert_eq!(step(false, "status 503, expected 2xx"), None);
        assert_eq!(step(true, "ok"), None, "a success in between starts the count again");
        assert_eq!(step(false, "status 503, expected 2xx"), None);
        assert_eq!(step(false, "status 503, expected 2xx"), None);
        let down = step(false, "connect: connection refused").unwrap();
        assert_eq!((down.from, down.to, down.after), (Health::Up, Health::Down, 3));
        assert_eq!(down.reason, "connect: connection refused");
        assert_eq!(down.at.to_string(), "2026-11-29T10:03:30Z");
        assert_eq!(down.service.as_deref(), Some("api"));
        assert_eq!(step(false, "still"), None, "Down stays Down without another change");
        assert_eq!(step(true, "ok"), None);
        let up = step(true, "ok").unwrap();
        assert_eq!((up.from, up.to), (Health::Down, Health::Up));
        assert_eq!(status.since.map(|s| s.to_string()).as_deref(), Some("2026-11-29T10:05:00Z"));
        assert_eq!((status.checks, status.consecutive_successes), (10, 2));
        assert_eq!(status.for_how_long(clock.now()), Some(Duration::ZERO));
    }

    #[test]
    fn a_probe_failing_from_the_start_goes_down_from_unknown() {
        let spec = ProbeSpec::new("db", Target::Tcp { address: "127.0.0.1:1".into() });
        let mut status = ProbeStatus::new(&spec);
        let at: Timestamp = "2026-11-29T10:00:00Z".parse().unwrap();
        assert_eq!(status.observe(&result(false, "x"), at), None);
        assert_eq!(status.observe(&result(false, "x"), at), None);
        let down = status.observe(&result(false, "x"), at).unwrap();
        assert_eq!((down.from, down.to, down.severity), (Health::Unknown, Health::Down, AlertSeverity::Critical));
    }
}
