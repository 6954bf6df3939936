//! PagerDuty: alerts through the Events API v2 (`/v2/enqueue`), deploy messages as Change Events
//! (`/v2/change/enqueue`), and the check of PagerDuty's v3 webhooks (`X-PagerDuty-Signature`),
//! which tell Windlass that someone acknowledged or resolved an incident in PagerDuty.
//!
//! The field rules are PagerDuty's ("Send an Alert Event", "Send a Change Event"): a 32-character
//! routing key; `dedup_key` at most 255 characters (a longer key is hashed, stably, by
//! [`pagerduty_dedup_key`]); `payload.summary` required, at most 1024 characters (cut on a
//! character boundary); `payload.source` required; `payload.severity` one of `critical`, `error`,
//! `warning`, `info`. Retries follow PagerDuty's table: 429, 5xx and network errors are retried,
//! a 400 never is (its `errors` are quoted in the error).

use serde_json::{Map, Value, json};
use windlass_http::Url;

use crate::http::{Target, parse, post};
use crate::{AlertAction, AlertEvent, Delivered, Message, NotifyError, Receiver, RetryPolicy, Severity, truncate};

/// The Events API's US service region.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com";
/// The Events API's EU service region.
pub const PAGERDUTY_EU_URL: &str = "https://events.eu.pagerduty.com";
/// The header of PagerDuty's v3 webhooks: `v1=<hex HMAC-SHA256>`, comma-separated when several.
pub const PAGERDUTY_SIGNATURE_HEADER: &str = "x-pagerduty-signature";

/// How far a v3 webhook event's `occurred_at` may be from the receiver's clock, either way, by
/// default. A captured body stays genuine for ever (its signature covers only the body): past
/// this window it is refused as stale, and within it the event id is remembered so it acts once.
pub const PAGERDUTY_WEBHOOK_WINDOW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

const MAX_DEDUP_KEY: usize = 255;
const MAX_SUMMARY: usize = 1024;

/// PagerDuty's severity for a Windlass severity. PagerDuty knows `critical`, `error`, `warning`
/// and `info`; Windlass's `business` (a business metric out of range: not an outage, but more
/// than information) becomes `error`.
pub fn pagerduty_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::Business => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

/// The `dedup_key` PagerDuty is sent for an alert key: the key itself when it has at most 255
/// characters, else its first 190 characters, `~` and the hex SHA-256 of the whole key (255
/// characters, the same for the same key, so trigger, acknowledge and resolve still meet).
pub fn pagerduty_dedup_key(key: &str) -> String {
    if key.chars().count() <= MAX_DEDUP_KEY {
        return key.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let prefix: String = key.chars().take(MAX_DEDUP_KEY - 1 - 64).collect();
    format!("{prefix}~{}", hex::encode(digest.as_ref()))
}

/// A PagerDuty service's Events API v2 integration.
#[derive(Clone)]
pub struct PagerDuty {
    name: String,
    routing_key: String,
    events: Url,
    changes: Url,
    ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for PagerDuty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDuty")
            .field("name", &self.name)
            .field("events", &self.events.authority)
            .finish_non_exhaustive()
    }
}

impl PagerDuty {
    /// A receiver sending to PagerDuty's US region with the integration's routing key (32
    /// characters; anything else is refused here, as PagerDuty would refuse every event).
    pub fn new(name: &str, routing_key: &str) -> Result<Self, NotifyError> {
        let routing_key = routing_key.trim();
        let length = routing_key.chars().count();
        if length != 32 {
            return Err(NotifyError::BadUrl {
                receiver: name.to_owned(),
                message: format!(
                    "the PagerDuty routing key has {length} characters; an Events API v2 integration key has 32"
                ),
            });
        }
        Ok(PagerDuty {
            name: name.to_owned(),
            routing_key: routing_key.to_owned(),
            events: parse(name, &format!("{PAGERDUTY_URL}/v2/enqueue"))?,
            changes: parse(name, &format!("{PAGERDUTY_URL}/v2/change/enqueue"))?,
            ca_file: None,
        })
    }

    /// Sends to another Events API base URL: [`PAGERDUTY_EU_URL`] for EU accounts, or a test
    /// server. Events go to `<base>/v2/enqueue`, change events to `<base>/v2/change/enqueue`.
    pub fn with_base_url(mut self, base: &str) -> Result<Self, NotifyError> {
        let base = base.trim_end_matches('/');
        self.events = parse(&self.name, &format!("{base}/v2/enqueue"))?;
        self.changes = parse(&self.name, &format!("{base}/v2/change/enqueue"))?;
        Ok(self)
    }

    /// Trusts the CA certificates in `path` instead of the system's (a private CA).
    pub fn with_ca_file(mut self, path: std::path::PathBuf) -> Self {
        self.ca_file = Some(path);
        self
    }

    /// The Events API v2 body for `alert`. Acknowledge and resolve carry only the key, as
    /// PagerDuty documents them; a trigger carries the whole payload.
    pub fn event_body(&self, alert: &AlertEvent) -> Value {
        let mut body = json!({
            "routing_key": self.routing_key,
            "event_action": alert.action.as_str(),
            "dedup_key": pagerduty_dedup_key(&alert.dedup_key),
        });
        if alert.action != AlertAction::Trigger {
            return body;
        }
        let source = if alert.source.trim().is_empty() { "windlass" } else { alert.source.trim() };
        let summary = if alert.summary.trim().is_empty() { alert.dedup_key.as_str() } else { alert.summary.as_str() };
        let mut payload = json!({
            "summary": truncate(summary, MAX_SUMMARY),
            "source": source,
            "severity": pagerduty_severity(alert.severity),
        });
        let mut details = match &alert.details {
            Value::Object(details) => details.clone(),
            Value::Null => Map::new(),
            other => Map::from_iter([("details".to_owned(), other.clone())]),
        };
        details.insert("windlass_severity".into(), alert.severity.as_str().into());
        if let Some(environment) = &alert.environment {
            details.entry("environment").or_insert_with(|| environment.clone().into());
        }
        if let Some(payload) = payload.as_object_mut() {
            if valid_timestamp(&alert.at) {
                payload.insert("timestamp".into(), alert.at.clone().into());
            }
            if let Some(service) = &alert.service {
                payload.insert("component".into(), service.clone().into());
            }
            if let Some(environment) = &alert.environment {
                payload.insert("group".into(), environment.clone().into());
            }
            if let Some(class) = &alert.class {
                payload.insert("class".into(), class.clone().into());
            }
            payload.insert("custom_details".into(), Value::Object(details));
        }
        if let Some(body) = body.as_object_mut() {
            body.insert("payload".into(), payload);
            body.insert("client".into(), "Windlass".into());
            let links: Vec<Value> = alert
                .links
                .iter()
                .filter(|link| !link.href.is_empty())
                .map(|link| json!({ "href": link.href, "text": link.text }))
                .collect();
            if !links.is_empty() {
                body.insert("links".into(), links.into());
            }
        }
        body
    }

    /// The Change Events body for a deploy message.
    pub fn change_body(&self, message: &Message) -> Value {
        let mut details = Map::new();
        details.insert("event".into(), message.event.clone().into());
        details.insert("environment".into(), message.environment.clone().into());
        if let Some(deploy_id) = &message.deploy_id {
            details.insert("deploy_id".into(), deploy_id.clone().into());
        }
        if !message.text.is_empty() {
            details.insert("text".into(), message.text.clone().into());
        }
        for (name, value) in &message.fields {
            details.entry(name.clone()).or_insert_with(|| value.clone().into());
        }
        let source = if message.environment.is_empty() {
            "windlass".to_owned()
        } else {
            format!("windlass {}", message.environment)
        };
        let summary = if message.title.trim().is_empty() { &message.event } else { &message.title };
        let mut payload = json!({
            "summary": truncate(summary, MAX_SUMMARY),
            "source": source,
            "custom_details": details,
        });
        if valid_timestamp(&message.at)
            && let Some(payload) = payload.as_object_mut()
        {
            payload.insert("timestamp".into(), message.at.clone().into());
        }
        json!({ "routing_key": self.routing_key, "payload": payload })
    }
}

fn valid_timestamp(at: &str) -> bool {
    at.parse::<jiff::Timestamp>().is_ok()
}

#[async_trait::async_trait]
impl Receiver for PagerDuty {
    fn name(&self) -> &str {
        &self.name
    }

    /// A deploy message goes to PagerDuty as a Change Event: shown on the service's timeline
    /// next to incidents, never paging anyone.
    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let body = self.change_body(message).to_string();
        let secrets = [self.routing_key.as_str()];
        let target =
            Target { receiver: &self.name, url: &self.changes, ca_file: self.ca_file.as_deref(), secrets: &secrets };
        let (attempts, reply) = post(target, retry, |_| (body.clone(), Vec::new())).await?;
        Ok(Delivered { receiver: self.name.clone(), attempts, status: reply.status, dedup_key: None })
    }

    async fn alert(&self, alert: &AlertEvent, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let body = self.event_body(alert).to_string();
        let secrets = [self.routing_key.as_str()];
        let target =
            Target { receiver: &self.name, url: &self.events, ca_file: self.ca_file.as_deref(), secrets: &secrets };
        let (attempts, reply) = post(target, retry, |_| (body.clone(), Vec::new())).await?;
        let answered = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|answer| answer["dedup_key"].as_str().map(str::to_owned));
        let dedup_key = answered.unwrap_or_else(|| pagerduty_dedup_key(&alert.dedup_key));
        Ok(Delivered { receiver: self.name.clone(), attempts, status: reply.status, dedup_key: Some(dedup_key) })
    }
}

/// Why a PagerDuty webhook was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagerDutyWebhookError {
    #[error("the PagerDuty webhook has no `X-PagerDuty-Signature` with a `v1=` signature")]
    MissingSignature,
    #[error("no signature in `X-PagerDuty-Signature` matches the body: a forged or altered webhook, or another secret")]
    BadSignature,
    #[error("the PagerDuty webhook body is not a v3 event: {0}")]
    Malformed(String),
    #[error(
        "the PagerDuty webhook event {id} occurred at {occurred_at}, {off_by_secs} s from this server's clock: \
         outside the freshness window of {window_secs} s (a replayed body, or a clock out of sync)"
    )]
    Stale { id: String, occurred_at: String, off_by_secs: i64, window_secs: u64 },
}

/// A PagerDuty v3 webhook event, the parts Windlass acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagerDutyWebhookEvent {
    /// The event's own id (PagerDuty may deliver an event more than once).
    pub id: String,
    /// `incident.triggered`, `incident.acknowledged`, `incident.unacknowledged`,
    /// `incident.resolved`, `incident.reopened`, `incident.escalated`, ...
    pub event_type: String,
    /// `incident`, ...
    pub resource_type: String,
    pub occurred_at: Option<String>,
    /// The incident's id (`PGR0VU2`).
    pub incident_id: Option<String>,
    /// The incident's `incident_key`. For an incident opened by an Events API v2 trigger this is
    /// the trigger's `dedup_key` — what [`pagerduty_dedup_key`] made of the alert's key — so it
    /// maps the incident back to the Windlass alert. (With PagerDuty's alert grouping, an
    /// incident holding several alerts carries the key of the alert that opened it.)
    pub incident_key: Option<String>,
    pub status: Option<String>,
    pub title: Option<String>,
    pub html_url: Option<String>,
    /// Who did it (`agent.summary`, a person's name), when a person did.
    pub agent: Option<String>,
    /// The agent's id (`PXPGF42`) and type (`user_reference`, `service_reference`).
    pub agent_id: Option<String>,
    pub agent_type: Option<String>,
}

impl PagerDutyWebhookEvent {
    /// What the event means for the Windlass alert: acknowledged or resolved in PagerDuty
    /// (stop escalating), or (re)opened.
    pub fn action(&self) -> Option<AlertAction> {
        match self.event_type.as_str() {
            "incident.acknowledged" => Some(AlertAction::Acknowledge),
            "incident.resolved" => Some(AlertAction::Resolve),
            "incident.triggered" | "incident.reopened" | "incident.unacknowledged" => Some(AlertAction::Trigger),
            _ => None,
        }
    }

    /// Whether the event is fresh at `now`: its `occurred_at` no further than `window` from
    /// `now`, either way (PagerDuty's clock may run ahead of ours). An event without a readable
    /// `occurred_at` is malformed: every v3 event has one.
    pub fn check_fresh(&self, now: jiff::Timestamp, window: std::time::Duration) -> Result<(), PagerDutyWebhookError> {
        let text = self
            .occurred_at
            .as_deref()
            .ok_or_else(|| PagerDutyWebhookError::Malformed("no `event.occurred_at`".into()))?;
        let occurred: jiff::Timestamp = text.parse().map_err(|_| {
            PagerDutyWebhookError::Malformed(format!("`event.occurred_at` is not an RFC 3339 time: {text:?}"))
        })?;
        let off_by = now.as_millisecond().saturating_sub(occurred.as_millisecond());
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        if off_by.unsigned_abs() > window_ms.unsigned_abs() {
            return Err(PagerDutyWebhookError::Stale {
                id: self.id.clone(),
                occurred_at: text.to_owned(),
                off_by_secs: off_by / 1000,
                window_secs: window.as_secs(),
            });
        }
        Ok(())
    }
}

/// Checks a PagerDuty v3 webhook and reads it. `signature_header` is the `X-PagerDuty-Signature`
/// value: `v1=<hex HMAC-SHA256(secret, raw body)>`, possibly several separated by commas while
/// PagerDuty rotates the subscription's secret; the webhook is genuine when any one of them
/// matches. Each comparison is constant-time. `body` must be the raw bytes received.
pub fn verify_pagerduty_webhook(
    secret: &str,
    signature_header: &str,
    body: &[u8],
) -> Result<PagerDutyWebhookEvent, PagerDutyWebhookError> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signatures: Vec<Vec<u8>> = signature_header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("v1="))
        .filter_map(|hex_signature| hex::decode(hex_signature.trim()).ok())
        .collect();
    if signatures.is_empty() {
        return Err(PagerDutyWebhookError::MissingSignature);
    }
    let mut genuine = false;
    for signature in &signatures {
        genuine |= ring::hmac::verify(&key, body, signature).is_ok();
    }
    if !genuine {
        return Err(PagerDutyWebhookError::BadSignature);
    }
    parse_pagerduty_webhook(body)
}

/// Reads a v3 webhook body (`{"event": {...}}`) without checking its signature.
pub fn parse_pagerduty_webhook(body: &[u8]) -> Result<PagerDutyWebhookEvent, PagerDutyWebhookError> {
    let malformed = |why: &str| PagerDutyWebhookError::Malformed(why.to_owned());
    let root: Value = serde_json::from_slice(body).map_err(|err| malformed(&format!("not JSON ({err})")))?;
    let event = root.get("event").filter(|e| e.is_object()).ok_or_else(|| malformed("no `event` object"))?;
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let event_type = text(event, "event_type").ok_or_else(|| malformed("no `event.event_type`"))?;
    let id = text(event, "id").ok_or_else(|| malformed("no `event.id`"))?;
    let resource_type = text(event, "resource_type").unwrap_or_default();
    let data = event.get("data").cloned().unwrap_or(Value::Null);
    let (incident_id, incident_key) = if data.get("type").and_then(Value::as_str) == Some("incident") {
        (text(&data, "id"), text(&data, "incident_key"))
    } else {
        // Events about an incident's parts (notes, alerts) name it under `data.incident`.
        let incident = data.get("incident").cloned().unwrap_or(Value::Null);
        (text(&incident, "id"), text(&data, "alert_key").or_else(|| text(&incident, "incident_key")))
    };
    let agent = event.get("agent").cloned().unwrap_or(Value::Null);
    Ok(PagerDutyWebhookEvent {
        id,
        event_type,
        resource_type,
        occurred_at: text(event, "occurred_at"),
        incident_id,
        incident_key,
        status: text(&data, "status"),
        title: text(&data, "title"),
        html_url: text(&data, "html_url"),
        agent: text(&agent, "summary"),
        agent_id: text(&agent, "id"),
        agent_type: text(&agent, "type"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_dedup_keys_are_hashed_stably_within_255_characters() {
        let short = "slo/api/production";
        assert_eq!(pagerduty_dedup_key(short), short);
        let long = format!("probe/{}", "é".repeat(400));
        let hashed = pagerduty_dedup_key(&long);
        assert_eq!(hashed.chars().count(), 255);
        assert_eq!(hashed, pagerduty_dedup_key(&long));
        assert_ne!(hashed, pagerduty_dedup_key(&format!("{long}x")));
        assert!(hashed.starts_with("probe/é"));
    }

    #[test]
    fn business_is_sent_as_error() {
        assert_eq!(pagerduty_severity(Severity::Business), "error");
        assert_eq!(pagerduty_severity(Severity::Critical), "critical");
    }

    fn event_at(occurred_at: Option<&str>) -> PagerDutyWebhookEvent {
        let mut event = serde_json::json!({ "event": {
            "id": "01DEN1HNLBC1VITK192ETJ1MPJ", "event_type": "incident.acknowledged", "resource_type": "incident",
            "data": { "id": "PGR0VU2", "type": "incident", "incident_key": "abc" }
        }});
        if let Some(at) = occurred_at {
            event["event"]["occurred_at"] = at.into();
        }
        parse_pagerduty_webhook(event.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn an_event_is_fresh_within_the_window_either_way_and_stale_past_it() {
        let now: jiff::Timestamp = "2026-12-03T12:00:00Z".parse().unwrap();
        let window = PAGERDUTY_WEBHOOK_WINDOW;
        for fresh in ["2026-12-03T12:00:00Z", "2026-12-03T11:55:00Z", "2026-12-03T12:05:00Z", "2026-12-03T11:57:13.5Z"]
        {
            assert_eq!(event_at(Some(fresh)).check_fresh(now, window), Ok(()), "{fresh}");
        }
        for stale in ["2026-12-03T11:54:59.999Z", "2026-12-03T12:05:00.001Z", "2026-11-29T10:17:00.000Z"] {
            let err = event_at(Some(stale)).check_fresh(now, window).unwrap_err();
            assert!(matches!(err, PagerDutyWebhookError::Stale { .. }), "{stale}: {err}");
            assert!(err.to_string().contains(stale) && err.to_string().contains("300 s"), "{err}");
        }
        let err = event_at(None).check_fresh(now, window).unwrap_err();
        assert!(err.to_string().contains("no `event.occurred_at`"), "{err}");
        let err = event_at(Some("yesterday")).check_fresh(now, window).unwrap_err();
        assert!(err.to_string().contains("\"yesterday\""), "{err}");
    }

    #[test]
    fn a_short_routing_key_is_refused_without_showing_it() {
        let err = PagerDuty::new("pd", "abc-secret-key").unwrap_err().to_string();
        assert!(err.contains("14 characters") && !err.contains("abc-secret-key"), "{err}");
    }
}
