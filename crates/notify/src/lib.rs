//! Notifications that leave Windlass: deploy started/succeeded/failed, rollbacks, canary aborts,
//! approval requests (and, later, the monitor's alerts).
//!
//! One trait, [`Receiver`], with two kinds:
//! - [`Slack`]: an incoming webhook, `text` (the fallback shown in notifications) plus `blocks`;
//! - [`Webhook`]: JSON to any URL, signed when a secret is set: `X-Windlass-Timestamp` (Unix
//!   seconds) and `X-Windlass-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, so
//!   the receiver can check both the sender and the freshness (see [`verify_signature`]).
//!
//! Delivery retries with doubling back-off on 5xx, timeouts, connection errors **and 429**
//! (waiting what `Retry-After` asks), and never on another 4xx: a 400 or 404 will not heal by
//! repetition, it needs a person to fix the URL or payload.

use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use windlass_http::{HttpError, Url, UrlRequest};

/// What happened, in a form every receiver can render.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// `deploy.started`, `deploy.succeeded`, `deploy.failed`, `deploy.rolled_back`,
    /// `canary.aborted`, `deploy.approval_requested`, ...
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
    /// A 4xx other than 429: not retried.
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
    pub status: u16,
}

#[async_trait::async_trait]
pub trait Receiver: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &str;
    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError>;
}

/// A Slack incoming webhook.
#[derive(Debug, Clone)]
pub struct Slack {
    name: String,
    url: Url,
}

impl Slack {
    pub fn new(name: &str, url: &str) -> Result<Self, NotifyError> {
        Ok(Slack { name: name.to_owned(), url: parse(name, url)? })
    }

    /// The payload Slack's incoming webhooks take: `text` and Block Kit `blocks`.
    pub fn payload(message: &Message) -> Value {
        let mut blocks = vec![
            json!({ "type": "header", "text": { "type": "plain_text", "text": truncate(&message.title, 150) } }),
            json!({ "type": "section", "text": { "type": "mrkdwn", "text": truncate(&message.text, 3000) } }),
        ];
        if !message.fields.is_empty() {
            let fields: Vec<Value> = message
                .fields
                .iter()
                .take(10)
                .map(|(name, value)| json!({ "type": "mrkdwn", "text": truncate(&format!("*{name}*\n{value}"), 2000) }))
                .collect();
            blocks.push(json!({ "type": "section", "fields": fields }));
        }
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": format!("{} · {} · {}", message.event, message.environment, message.at) }],
        }));
        json!({ "text": format!("{}\n{}", message.title, message.text), "blocks": blocks })
    }
}

#[async_trait::async_trait]
impl Receiver for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let body = Slack::payload(message).to_string();
        post(&self.name, &self.url, None, retry, |_| (body.clone(), Vec::new())).await
    }
}

/// JSON to any URL, signed with HMAC-SHA256 when a secret is set.
#[derive(Clone)]
pub struct Webhook {
    name: String,
    url: Url,
    secret: Option<String>,
    ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("name", &self.name).field("url", &self.url.authority).finish_non_exhaustive()
    }
}

pub const TIMESTAMP_HEADER: &str = "x-windlass-timestamp";
pub const SIGNATURE_HEADER: &str = "x-windlass-signature";

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1={}", hex::encode(ring::hmac::sign(&key, &signed).as_ref()))
}

/// What a receiver of our webhooks does: checks the signature in constant time and that the
/// timestamp is within `tolerance` of `now` (a replayed old request fails).
pub fn verify_signature(
    secret: &str,
    timestamp: &str,
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance: Duration,
) -> Result<(), String> {
    let timestamp: i64 = timestamp.parse().map_err(|_| format!("`{timestamp}` is not a Unix time"))?;
    if (now - timestamp).unsigned_abs() > tolerance.as_secs() {
        return Err(format!("timestamp {timestamp} is more than {}s from now ({now}): a replay?", tolerance.as_secs()));
    }
    let given = signature_header.strip_prefix("v1=").ok_or("the signature does not start with `v1=`")?;
    let given = hex::decode(given).map_err(|_| "the signature is not hex")?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &given).map_err(|_| "the signature does not match".to_owned())
}

impl Webhook {
    pub fn new(name: &str, url: &str, secret: Option<String>) -> Result<Self, NotifyError> {
        Ok(Webhook { name: name.to_owned(), url: parse(name, url)?, secret, ca_file: None })
    }

    /// Trusts the CA certificates in `path` instead of the system's (a private CA).
    pub fn with_ca_file(mut self, path: std::path::PathBuf) -> Self {
        self.ca_file = Some(path);
        self
    }
}

#[async_trait::async_trait]
impl Receiver for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let body = serde_json::to_string(message).unwrap_or_default();
        let secret = self.secret.clone();
        post(&self.name, &self.url, self.ca_file.as_deref(), retry, move |now| {
            let headers = match &secret {
                Some(secret) => vec![
                    (TIMESTAMP_HEADER, now.to_string()),
                    (SIGNATURE_HEADER, signature(secret, now, body.as_bytes())),
                ],
                None => Vec::new(),
            };
            (body.clone(), headers)
        })
        .await
    }
}

fn parse(receiver: &str, url: &str) -> Result<Url, NotifyError> {
    Url::parse(url).map_err(|message| NotifyError::BadUrl { receiver: receiver.to_owned(), message })
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// How long a 429 asks us to wait: `Retry-After` in seconds or as an HTTP date.
fn retry_after(reply: &windlass_http::Reply, now: jiff::Timestamp) -> Option<Duration> {
    let value = reply.headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(Duration::from_millis(u64::try_from(at.duration_since(now).as_millis()).unwrap_or(0)))
}

/// POSTs the body `build` makes for each attempt (given the attempt's Unix time, so signatures
/// are fresh), retrying as [`RetryPolicy`] says.
async fn post(
    receiver: &str,
    url: &Url,
    ca_file: Option<&std::path::Path>,
    retry: &RetryPolicy,
    build: impl Fn(i64) -> (String, Vec<(&'static str, String)>) + Send + Sync,
) -> Result<Delivered, NotifyError> {
    let mut delay = retry.first_delay;
    let mut last = String::new();
    let attempts = retry.attempts.max(1);
    for attempt in 1..=attempts {
        let now = jiff::Timestamp::now();
        let (body, extra) = build(now.as_second());
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json"), ("user-agent", "windlass")];
        headers.extend(extra.iter().map(|(name, value)| (*name, value.as_str())));
        let sent = windlass_http::send_url(UrlRequest {
            method: "POST",
            url,
            headers: &headers,
            body: Some(body.into_bytes()),
            timeout: retry.timeout,
            ca_file,
        })
        .await;
        let mut wait = delay;
        match sent {
            Ok(reply) if (200..300).contains(&reply.status) => {
                return Ok(Delivered { receiver: receiver.to_owned(), attempts: attempt, status: reply.status });
            }
            Ok(reply) if reply.status == 429 => {
                last = format!("429 Too Many Requests: {}", reply.text().trim());
                if let Some(asked) = retry_after(&reply, now) {
                    wait = asked;
                }
            }
            Ok(reply) if reply.status >= 500 => last = format!("{}: {}", reply.status, reply.text().trim()),
            Ok(reply) => {
                return Err(NotifyError::Refused {
                    receiver: receiver.to_owned(),
                    status: reply.status,
                    body: truncate(reply.text().trim(), 500),
                });
            }
            Err(err @ HttpError::Tls { .. }) | Err(err @ HttpError::BadUrl(_)) => {
                // A certificate that does not verify will not verify on the next try either.
                return Err(NotifyError::GaveUp {
                    receiver: receiver.to_owned(),
                    attempts: attempt,
                    last: err.to_string(),
                });
            }
            Err(err) => last = err.to_string(),
        }
        if attempt < attempts {
            tracing::warn!(receiver, attempt, %last, "notification not delivered; retrying in {wait:?}");
            tokio::time::sleep(wait.min(retry.max_delay)).await;
            delay = (delay * 2).min(retry.max_delay);
        }
    }
    Err(NotifyError::GaveUp { receiver: receiver.to_owned(), attempts, last })
}

/// Sends one message to every receiver at once; each outcome is returned (none is fatal).
pub async fn broadcast(
    receivers: &[std::sync::Arc<dyn Receiver>],
    message: &Message,
    retry: &RetryPolicy,
) -> Vec<Result<Delivered, NotifyError>> {
    let mut tasks = Vec::new();
    for receiver in receivers {
        let (receiver, message, retry) = (receiver.clone(), message.clone(), *retry);
        tasks.push(tokio::spawn(async move { receiver.deliver(&message, &retry).await }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            Err(err) => tracing::error!(%err, "a notification task failed"),
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_old_or_forged_ones_do_not() {
        let body = br#"{"event":"deploy.failed"}"#;
        let signed = signature("s3cret-signing-key", 1_700_000_000, body);
        let tolerance = Duration::from_secs(300);
        assert_eq!(
            verify_signature("s3cret-signing-key", "1700000000", body, &signed, 1_700_000_100, tolerance),
            Ok(())
        );
        let replay = verify_signature("s3cret-signing-key", "1700000000", body, &signed, 1_700_001_000, tolerance);
        assert!(replay.unwrap_err().contains("replay"));
        let forged = verify_signature("another-key", "1700000000", body, &signed, 1_700_000_100, tolerance);
        assert!(forged.unwrap_err().contains("does not match"));
        let tampered = verify_signature("s3cret-signing-key", "1700000000", b"{}", &signed, 1_700_000_100, tolerance);
        assert!(tampered.is_err());
    }

    #[test]
    fn slack_payload_keeps_within_block_kit_limits() {
        let message = Message {
            event: "deploy.failed".into(),
            environment: "production".into(),
            title: "t".repeat(400),
            text: "x".repeat(5000),
            fields: (0..12).map(|i| (format!("f{i}"), "v".into())).collect(),
            deploy_id: None,
            at: "2026-11-23T10:00:00Z".into(),
        };
        let payload = Slack::payload(&message);
        let blocks = payload["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["text"]["text"].as_str().unwrap().chars().count(), 150);
        assert_eq!(blocks[1]["text"]["text"].as_str().unwrap().chars().count(), 3000);
        assert_eq!(blocks[2]["fields"].as_array().unwrap().len(), 10);
    }
}
