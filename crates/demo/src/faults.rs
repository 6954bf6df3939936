//! The faults a test can switch on and off: at start through environment variables, at run time
//! through the admin port (which is never affected by the faults themselves).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use windlass_config::units::Duration;

/// The current faults. Shares are 0.0..=1.0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Added before every application answer.
    pub latency_ms: u64,
    /// Share of application requests answered with 500.
    pub error_rate: f64,
    /// `/health` and `/ready` answer 503.
    pub health_failing: bool,
    /// The main port refuses connections (the listening socket is shut, not just ignored).
    pub refuse_connections: bool,
    /// Share of `POST /payments` that fail (a business metric for alert rules).
    pub payment_failure_rate: f64,
}

/// A change to the faults: absent fields keep their value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub latency_ms: Option<u64>,
    pub error_rate: Option<f64>,
    pub health_failing: Option<bool>,
    pub refuse_connections: Option<bool>,
    pub payment_failure_rate: Option<f64>,
}

impl Faults {
    /// Reads `FAULT_LATENCY` ("100ms"), `FAULT_ERROR_RATE` ("0.1" or "10%"), `FAULT_HEALTH`
    /// ("fail"), `FAULT_REFUSE` ("1") and `FAULT_PAYMENT_FAILURE_RATE`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut faults = Faults::default();
        if let Some(latency) = get("FAULT_LATENCY") {
            let parsed = Duration::parse(&latency).map_err(|e| format!("FAULT_LATENCY: {e}"))?;
            faults.latency_ms = u64::try_from(parsed.as_std().as_millis()).unwrap_or(u64::MAX);
        }
        if let Some(rate) = get("FAULT_ERROR_RATE") {
            faults.error_rate = parse_share(&rate).map_err(|e| format!("FAULT_ERROR_RATE: {e}"))?;
        }
        if let Some(rate) = get("FAULT_PAYMENT_FAILURE_RATE") {
            faults.payment_failure_rate = parse_share(&rate).map_err(|e| format!("FAULT_PAYMENT_FAILURE_RATE: {e}"))?;
        }
        if let Some(health) = get("FAULT_HEALTH") {
            faults.health_failing = match health.as_str() {
                "fail" | "failing" | "1" | "true" => true,
                "ok" | "0" | "false" | "" => false,
                other => return Err(format!("FAULT_HEALTH: `{other}` is neither `fail` nor `ok`")),
            };
        }
        if let Some(refuse) = get("FAULT_REFUSE") {
            faults.refuse_connections = matches!(refuse.as_str(), "1" | "true" | "yes");
        }
        faults.check()?;
        Ok(faults)
    }

    pub fn apply(&self, patch: FaultsPatch) -> Result<Faults, String> {
        let next = Faults {
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            error_rate: patch.error_rate.unwrap_or(self.error_rate),
            health_failing: patch.health_failing.unwrap_or(self.health_failing),
            refuse_connections: patch.refuse_connections.unwrap_or(self.refuse_connections),
            payment_failure_rate: patch.payment_failure_rate.unwrap_or(self.payment_failure_rate),
        };
        next.check()?;
        Ok(next)
    }

    fn check(&self) -> Result<(), String> {
        for (name, share) in [("error_rate", self.error_rate), ("payment_failure_rate", self.payment_failure_rate)] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{name} must be between 0 and 1, not {share}"));
            }
        }
        if self.latency_ms > 60_000 {
            return Err(format!("latency_ms must be at most 60000, not {}", self.latency_ms));
        }
        Ok(())
    }
}

fn parse_share(text: &str) -> Result<f64, String> {
    let share = match text.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.trim().parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a share such as 0.1 or 10%"))?;
    if (0.0..=1.0).contains(&share) { Ok(share) } else { Err(format!("`{text}` is not between 0 and 100%")) }
}

/// Decides which requests fail so that the share is exact over any run of requests, not just on
/// average: request n fails when ⌊(n+1)·rate⌋ > ⌊n·rate⌋.
#[derive(Debug, Default)]
pub struct ShareCounter {
    seen: AtomicU64,
}

impl ShareCounter {
    pub fn next_fails(&self, rate: f64) -> bool {
        if rate <= 0.0 {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    }
}

/// The faults, shared between the main and admin servers.
#[derive(Debug, Default)]
pub struct FaultState {
    pub current: Mutex<Faults>,
}

impl FaultState {
    pub fn get(&self) -> Faults {
        self.current.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_exact() {
        let counter = ShareCounter::default();
        let failures = (0..1000).filter(|_| counter.next_fails(0.1)).count();
        assert_eq!(failures, 100);
        let counter = ShareCounter::default();
        assert_eq!((0..10).filter(|_| counter.next_fails(0.0)).count(), 0);
        assert_eq!((0..10).filter(|_| counter.next_fails(1.0)).count(), 10);
    }

    #[test]
    fn env_and_patches() {
        let env = |k: &str| match k {
            "FAULT_LATENCY" => Some("250ms".to_owned()),
            "FAULT_ERROR_RATE" => Some("5%".to_owned()),
            "FAULT_HEALTH" => Some("fail".to_owned()),
            _ => None,
        };
        let faults = Faults::from_env(env).unwrap();
        assert_eq!(faults.latency_ms, 250);
        assert!((faults.error_rate - 0.05).abs() < 1e-9);
        assert!(faults.health_failing);
        let patched = faults.apply(FaultsPatch { health_failing: Some(false), ..FaultsPatch::default() }).unwrap();
        assert!(!patched.health_failing);
        assert_eq!(patched.latency_ms, 250);
        assert!(faults.apply(FaultsPatch { error_rate: Some(1.5), ..FaultsPatch::default() }).is_err());
        assert!(Faults::from_env(|k| (k == "FAULT_ERROR_RATE").then(|| "lots".to_owned())).is_err());
    }
}
