//! Notifications that leave Windlass: deploy started/succeeded/failed, rollbacks, canary aborts,
//! approval requests, and the monitor's alerts (triggered, acknowledged, resolved).
//!
//! One trait, [`Receiver`], with four kinds, one module each:
//! - [`Slack`]: an incoming webhook, `text` (the fallback shown in notifications) plus `blocks`;
//! - [`Webhook`]: JSON to any URL, signed when a secret is set: `X-Windlass-Timestamp` (Unix
//!   seconds) and `X-Windlass-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, so
//!   the receiver can check both the sender and the freshness (see [`verify_signature`]);
//! - [`PagerDuty`]: alerts through the Events API v2 (`trigger`, `acknowledge`, `resolve` under
//!   one `dedup_key`), deploy messages as Change Events; [`verify_pagerduty_webhook`] checks and
//!   reads PagerDuty's v3 webhooks, so an acknowledgement made in PagerDuty reaches Windlass;
//! - [`Email`]: SMTP with STARTTLS (or implicit TLS), a plain-text body.
//!
//! Deploy notifications are [`Message`]s ([`Receiver::deliver`]); alerts are [`AlertEvent`]s
//! ([`Receiver::alert`]), which every receiver but PagerDuty renders as a message.
//!
//! HTTP delivery retries with doubling back-off on 5xx, timeouts, connection errors **and 429**
//! (waiting what `Retry-After` asks), and never on another 4xx: a 400 or 404 will not heal by
//! repetition, it needs a person to fix the URL or payload. SMTP retries on 4xx replies and
//! connection failures, never on 5xx replies. A TLS failure is never retried.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

mod email;
mod http;
mod pagerduty;
mod slack;
mod webhook;

pub use email::{Email, SmtpSecurity};
pub use pagerduty::{
    PAGERDUTY_EU_URL, PAGERDUTY_SIGNATURE_HEADER, PAGERDUTY_URL, PAGERDUTY_WEBHOOK_WINDOW, PagerDuty,
    PagerDutyWebhookError, PagerDutyWebhookEvent, pagerduty_dedup_key, pagerduty_severity, parse_pagerduty_webhook,
    verify_pagerduty_webhook,
};
pub use slack::Slack;
pub use webhook::{SIGNATURE_HEADER, SignatureError, TIMESTAMP_HEADER, Webhook, signature, verify_signature};

/// What happened, in a form every receiver can render.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// `deploy.started`, `deploy.succeeded`, `deploy.failed`, `deploy.rolled_back`,
    /// `canary.aborted`, `deploy.approval_requested`, `alert.triggered`, ...
    pub event: String,
    pub environment: String,
    /// One line: "maily production: deploy production-20261123-101500 failed".
    pub title: String,
    /// The details, a few lines.
    pub text: String,
    /// Short facts shown side by side (actor, reason, services).
    pub fields: Vec<(String, String)>,
    pub deploy_id: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// What an alert notification asks of the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertAction {
    /// A problem was detected (again): open the alert, or add to the open one.
    Trigger,
    /// Someone is working on it: stop escalating.
    Acknowledge,
    /// The problem is gone.
    Resolve,
}

impl AlertAction {
    /// `trigger`, `acknowledge`, `resolve`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertAction::Trigger => "trigger",
            AlertAction::Acknowledge => "acknowledge",
            AlertAction::Resolve => "resolve",
        }
    }

    /// The past tense used in message events: `triggered`, `acknowledged`, `resolved`.
    pub fn past(self) -> &'static str {
        match self {
            AlertAction::Trigger => "triggered",
            AlertAction::Acknowledge => "acknowledged",
            AlertAction::Resolve => "resolved",
        }
    }
}

/// Windlass's alert severities (`[alerts]` routes by these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
    /// A business metric out of its range (sign-ups, conversions): someone should look, but it is
    /// not an outage. PagerDuty has no such level; see [`pagerduty_severity`].
    Business,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
            Severity::Business => "business",
        }
    }
}

/// A link shown with an alert (a dashboard, a runbook, the deploy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub href: String,
    pub text: String,
}

/// One alert notification: the same `dedup_key` ties a trigger to its acknowledgement and
/// resolution (and to the incident a receiver like PagerDuty opens for it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    pub action: AlertAction,
    /// Stable for one alert: the same key on every trigger, ack and resolve of it.
    pub dedup_key: String,
    /// One line: "api production: availability 97.1% < 99.9% over 1h".
    pub summary: String,
    /// Where the problem is: a host, an instance, a probe target.
    pub source: String,
    pub severity: Severity,
    pub service: Option<String>,
    pub environment: Option<String>,
    /// The rule that fired (`slo.burn_rate`, `probe.http`), PagerDuty's `class`.
    pub class: Option<String>,
    /// Anything else worth seeing (a JSON object is shown field by field).
    pub details: Value,
    pub links: Vec<Link>,
    /// RFC 3339.
    pub at: String,
}

impl AlertEvent {
    /// The alert as a deploy-style message, for receivers without a native alert form.
    pub fn to_message(&self) -> Message {
        let label = match self.action {
            AlertAction::Trigger => self.severity.as_str().to_uppercase(),
            AlertAction::Acknowledge => "ACKNOWLEDGED".to_owned(),
            AlertAction::Resolve => "RESOLVED".to_owned(),
        };
        let mut fields = vec![("severity".to_owned(), self.severity.as_str().to_owned())];
        if let Some(service) = &self.service {
            fields.push(("service".into(), service.clone()));
        }
        fields.push(("source".into(), self.source.clone()));
        if let Some(class) = &self.class {
            fields.push(("rule".into(), class.clone()));
        }
        fields.push(("alert".into(), self.dedup_key.clone()));
        let mut text = String::new();
        if let Value::Object(details) = &self.details {
            for (name, value) in details {
                let value = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                text.push_str(&format!("{name}: {value}\n"));
            }
        } else if !self.details.is_null() {
            text.push_str(&format!("{}\n", self.details));
        }
        for link in &self.links {
            text.push_str(&format!("{}: {}\n", if link.text.is_empty() { "link" } else { &link.text }, link.href));
        }
        if text.is_empty() {
            text = self.summary.clone();
        }
        Message {
            event: format!("alert.{}", self.action.past()),
            environment: self.environment.clone().unwrap_or_default(),
            title: format!("[{label}] {}", self.summary),
            text: text.trim_end().to_owned(),
            fields,
            deploy_id: None,
            at: self.at.clone(),
        }
    }
}

/// How deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Per attempt.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("receiver `{receiver}`: {message}")]
    BadUrl { receiver: String, message: String },
    /// A refusal that repeating will not change (an HTTP 4xx other than 429, an SMTP 5xx reply).
    #[error("receiver `{receiver}` refused the notification with {status}: {body}")]
    Refused { receiver: String, status: u16, body: String },
    #[error("receiver `{receiver}` did not take the notification after {attempts} attempts: {last}")]
    GaveUp { receiver: String, attempts: u32, last: String },
}

/// A delivery that went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub receiver: String,
    pub attempts: u32,
    /// The HTTP status, or the SMTP reply code of the accepted message.
    pub status: u16,
    /// The key the receiver files the alert under, when it has one (PagerDuty's `dedup_key`,
    /// which is the alert's own key or, past 255 characters, [`pagerduty_dedup_key`] of it).
    pub dedup_key: Option<String>,
}

#[async_trait::async_trait]
pub trait Receiver: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;

    /// Sends a deploy notification.
    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError>;

    /// Sends an alert notification; by default rendered as a [`Message`] by
    /// [`AlertEvent::to_message`].
    async fn alert(&self, alert: &AlertEvent, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        self.deliver(&alert.to_message(), retry).await
    }
}

/// Sends one message to every receiver at once; each outcome is returned (none is fatal). The
/// deliveries run inside the caller's task (no task of their own), so a caller that is dropped
/// stops them with it.
pub async fn broadcast(
    receivers: &[std::sync::Arc<dyn Receiver>],
    message: &Message,
    retry: &RetryPolicy,
) -> Vec<Result<Delivered, NotifyError>> {
    futures_util::future::join_all(receivers.iter().map(|receiver| receiver.deliver(message, retry))).await
}

/// Sends one alert to every receiver at once; each outcome is returned (none is fatal). Like
/// [`broadcast`], inside the caller's task.
pub async fn broadcast_alert(
    receivers: &[std::sync::Arc<dyn Receiver>],
    alert: &AlertEvent,
    retry: &RetryPolicy,
) -> Vec<Result<Delivered, NotifyError>> {
    futures_util::future::join_all(receivers.iter().map(|receiver| receiver.alert(alert, retry))).await
}

/// At most `max` characters, the last one `…` when cut (always on a character boundary).
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(action: AlertAction) -> AlertEvent {
        AlertEvent {
            action,
            dedup_key: "slo/api/production/availability".into(),
            summary: "api production: availability 97.1% < 99.9%".into(),
            source: "edge".into(),
            severity: Severity::Critical,
            service: Some("api".into()),
            environment: Some("production".into()),
            class: Some("slo.burn_rate".into()),
            details: serde_json::json!({ "burn_rate": 14.6, "window": "1h" }),
            links: vec![Link { href: "https://grafana.example/d/api".into(), text: "dashboard".into() }],
            at: "2026-11-23T10:15:00Z".into(),
        }
    }

    #[test]
    fn an_alert_renders_as_a_message_naming_its_action_and_key() {
        let triggered = alert(AlertAction::Trigger).to_message();
        assert_eq!(triggered.event, "alert.triggered");
        assert_eq!(triggered.title, "[CRITICAL] api production: availability 97.1% < 99.9%");
        assert!(triggered.text.contains("burn_rate: 14.6"), "{}", triggered.text);
        assert!(triggered.text.contains("dashboard: https://grafana.example/d/api"));
        assert!(triggered.fields.contains(&("alert".into(), "slo/api/production/availability".into())));
        let resolved = alert(AlertAction::Resolve).to_message();
        assert_eq!((resolved.event.as_str(), resolved.title.starts_with("[RESOLVED]")), ("alert.resolved", true));
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
