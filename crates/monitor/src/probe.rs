//! Probes: HTTP(S), TCP, PostgreSQL, Redis, command and metrics scrapes, on a schedule.
//!
//! A [`ProbeSpec`] is a probe with every setting resolved (from `[probes.<probe>]` or made from a
//! service's `health`, see [`probes_for`]). A [`Probe`] runs it: each run gives an [`Outcome`]
//! (success or failure, a short reason, the latency). The [`Prober`] runs thousands of them from
//! one timer loop, spreads their start times by a hash of their names, and turns consecutive
//! results into [`Transition`]s (`Up → Down`, `Down → Up`) by each probe's thresholds
//! ([`ProbeStatus::observe`], pure and clock-driven).
//!
//! Probes are for alerting and for objectives of services without traffic; the edge stays the one
//! health source for failover.

mod auto;
mod cert;
mod check;
pub mod exposition;
pub mod rules;
mod scheduler;
mod state;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use auto::{ProbeList, probes_for, spec_from_config};
pub use cert::{CertError, days_left, not_after};
pub use check::Probe;
pub use scheduler::{Prober, ServiceResults, start_offset};
pub use state::{Health, ProbeStatus, Transition};
pub use windlass_config::AlertSeverity;
pub use windlass_config::probes::{MetricRule, ProbeExpect, ProbeJson};

/// Why a probe cannot be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("two probes are named `{0}`")]
    DuplicateName(String),
    #[error("probe `{probe}`: invalid body_regex: {message}")]
    BadRegex { probe: String, message: String },
    #[error("probe `{probe}`: {message}")]
    Unresolved { probe: String, message: String },
}

/// Text that must never be shown: a URL with a password, a token.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(text: impl Into<String>) -> Self {
        SecretText(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(…)")
    }
}

/// What a probe reaches and how it judges the answer.
#[derive(Debug, Clone)]
pub enum Target {
    Http(HttpTarget),
    /// `host:port`; names under `.localhost` are loopback.
    Tcp {
        address: String,
    },
    /// A PostgreSQL URL (it may hold a password).
    Postgres {
        url: SecretText,
    },
    /// `redis://[user:password@]host[:port]` (AUTH first when it has a password).
    Redis {
        url: SecretText,
    },
    /// A shell command (`sh -c`); exit code 0 within the timeout passes. The variables it
    /// references are in `env`, for `sh` to expand: never rendered into the command's text.
    Command {
        command: String,
        env: std::collections::BTreeMap<String, SecretText>,
    },
    Metrics(MetricsTarget),
}

#[derive(Clone)]
pub struct HttpTarget {
    pub url: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub expect: ProbeExpect,
    /// CA certificates trusted instead of the system's.
    pub ca_file: Option<PathBuf>,
}

#[derive(Clone)]
pub struct MetricsTarget {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub ca_file: Option<PathBuf>,
    pub rules: Vec<MetricRule>,
}

/// A URL as Debug output may show it: without its query (tokens) or credentials.
fn shown_url(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    match (without_query.find("://"), without_query.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &without_query[..scheme], &without_query[at..]),
        _ => without_query.to_owned(),
    }
}

/// Header names only: values may be tokens.
fn shown_headers(headers: &[(String, String)]) -> Vec<&str> {
    headers.iter().map(|(name, _)| name.as_str()).collect()
}

impl fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTarget")
            .field("url", &shown_url(&self.url))
            .field("method", &self.method)
            .field("headers", &shown_headers(&self.headers))
            .field("expect", &self.expect)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for MetricsTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsTarget")
            .field("url", &shown_url(&self.url))
            .field("headers", &shown_headers(&self.headers))
            .field("ca_file", &self.ca_file)
            .field("rules", &self.rules)
            .finish()
    }
}

/// A probe with everything resolved.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub name: String,
    pub target: Target,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub service: Option<String>,
    pub environment: Option<String>,
    pub severity: AlertSeverity,
}

impl ProbeSpec {
    /// A probe with the defaults of `[probes]` (30 s, 10 s, 3 failures, 1 success, critical).
    pub fn new(name: impl Into<String>, target: Target) -> Self {
        use windlass_config::probes::*;
        ProbeSpec {
            name: name.into(),
            target,
            interval: DEFAULT_PROBE_INTERVAL.as_std(),
            timeout: DEFAULT_PROBE_TIMEOUT.as_std(),
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
            service: None,
            environment: None,
            severity: AlertSeverity::Critical,
        }
    }

    /// An HTTP probe of `url` expecting a 2xx answer.
    pub fn http(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self::new(
            name,
            Target::Http(HttpTarget {
                url: url.into(),
                method: "GET".into(),
                headers: Vec::new(),
                expect: ProbeExpect { cert_days: windlass_config::probes::DEFAULT_CERT_DAYS, ..ProbeExpect::default() },
                ca_file: None,
            }),
        )
    }

    /// The kind of probe, for listings.
    pub fn kind(&self) -> &'static str {
        match self.target {
            Target::Http(_) => "http",
            Target::Tcp { .. } => "tcp",
            Target::Postgres { .. } => "postgres",
            Target::Redis { .. } => "redis",
            Target::Command { .. } => "command",
            Target::Metrics(_) => "metrics",
        }
    }
}

/// One run of a probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    /// Short and human: "status 503, expected 200", "connect: connection refused".
    pub reason: String,
    /// How long the check took.
    pub latency: Duration,
    /// For HTTPS: whole days until the server's certificate expires.
    pub cert_days_left: Option<i64>,
    /// For HTTPS: when it expires.
    pub cert_not_after: Option<jiff::Timestamp>,
}

impl Outcome {
    pub fn pass(reason: impl Into<String>, latency: Duration) -> Self {
        Outcome { ok: true, reason: reason.into(), latency, cert_days_left: None, cert_not_after: None }
    }

    pub fn fail(reason: impl Into<String>, latency: Duration) -> Self {
        Outcome { ok: false, reason: reason.into(), latency, cert_days_left: None, cert_not_after: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_tokens_in_urls_and_headers() {
        let mut spec = ProbeSpec::http("hook", "https://user:pw@api.example/health?token=s3cret");
        if let Target::Http(http) = &mut spec.target {
            http.headers.push(("Authorization".into(), "Bearer s3cret".into()));
        }
        let shown = format!("{spec:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("pw@"), "{shown}");
        assert!(shown.contains("https://…@api.example/health") && shown.contains("Authorization"), "{shown}");
    }
}
