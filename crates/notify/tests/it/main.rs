//! Deliveries to real servers on loopback that check what the service they stand for checks:
//! Slack's payload shape, our webhook signature and its freshness, PagerDuty's Events API v2 field
//! rules and incidents, a real SMTP server (aiosmtpd) with STARTTLS. Retries are driven by the
//! answers the servers give (5xx, 429 with Retry-After, 400, 4xx/5xx SMTP replies, no answer).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod email;
mod pagerduty;
mod webhook;

use std::time::Duration;

use windlass_notify::{AlertAction, AlertEvent, Link, Message, RetryPolicy, Severity};

pub fn message() -> Message {
    Message {
        event: "deploy.failed".into(),
        environment: "production".into(),
        title: "shop production: deploy production-20261123-101500 failed".into(),
        text: "smoke check `api answers` failed: 503; every service it changed was rolled back".into(),
        fields: vec![("actor".into(), "alice".into()), ("reason".into(), "weekly release".into())],
        deploy_id: Some("production-20261123-101500".into()),
        at: "2026-11-23T10:15:00Z".into(),
    }
}

pub fn alert(action: AlertAction, dedup_key: &str) -> AlertEvent {
    AlertEvent {
        action,
        dedup_key: dedup_key.into(),
        summary: "api production: availability 97.1% < 99.9% over 1h".into(),
        source: "edge.production".into(),
        severity: Severity::Critical,
        service: Some("api".into()),
        environment: Some("production".into()),
        class: Some("slo.burn_rate".into()),
        details: serde_json::json!({ "burn_rate": 14.6, "window": "1h" }),
        links: vec![Link { href: "https://grafana.example/d/api".into(), text: "dashboard".into() }],
        at: "2026-11-23T10:15:00Z".into(),
    }
}

pub fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        first_delay: Duration::from_millis(50),
        max_delay: Duration::from_secs(2),
        timeout: Duration::from_millis(500),
    }
}

/// For SMTP: a TLS handshake with a Python server on two busy cores gets more room per attempt.
pub fn patient(attempts: u32) -> RetryPolicy {
    RetryPolicy { timeout: Duration::from_secs(20), ..quick(attempts) }
}
