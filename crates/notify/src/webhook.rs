//! Generic webhooks: JSON to any URL, signed with HMAC-SHA256 when a secret is set.

use std::time::Duration;

use windlass_http::Url;

use crate::http::{Target, parse, post};
use crate::{AlertEvent, Delivered, Message, NotifyError, Receiver, RetryPolicy};

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
) -> Result<(), SignatureError> {
    let timestamp: i64 =
        timestamp.parse().map_err(|_| SignatureError::NotUnixTime { timestamp: timestamp.to_owned() })?;
    if (now - timestamp).unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::Stale { timestamp, now, tolerance_secs: tolerance.as_secs() });
    }
    let given = signature_header.strip_prefix("v1=").ok_or(SignatureError::NoVersion)?;
    let given = hex::decode(given).map_err(|_| SignatureError::NotHex)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    ring::hmac::verify(&key, &signed, &given).map_err(|_| SignatureError::Mismatch)
}

/// Why [`verify_signature`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("`{timestamp}` is not a Unix time")]
    NotUnixTime { timestamp: String },
    #[error("timestamp {timestamp} is more than {tolerance_secs}s from now ({now}): a replay?")]
    Stale { timestamp: i64, now: i64, tolerance_secs: u64 },
    #[error("the signature does not start with `v1=`")]
    NoVersion,
    #[error("the signature is not hex")]
    NotHex,
    #[error("the signature does not match")]
    Mismatch,
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

    async fn send(&self, body: String, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let secret = self.secret.clone();
        let target = Target { receiver: &self.name, url: &self.url, ca_file: self.ca_file.as_deref(), secrets: &[] };
        let (attempts, reply) = post(target, retry, move |now| {
            let headers = match &secret {
                Some(secret) => vec![
                    (TIMESTAMP_HEADER, now.to_string()),
                    (SIGNATURE_HEADER, signature(secret, now, body.as_bytes())),
                ],
                None => Vec::new(),
            };
            (body.clone(), headers)
        })
        .await?;
        Ok(Delivered { receiver: self.name.clone(), attempts, status: reply.status, dedup_key: None })
    }
}

#[async_trait::async_trait]
impl Receiver for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        self.send(serde_json::to_string(message).unwrap_or_default(), retry).await
    }

    /// The message form (so a consumer of deploy messages reads alerts too) plus the whole alert
    /// under `alert`, with its `action` and `dedup_key`.
    async fn alert(&self, alert: &AlertEvent, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let mut body = serde_json::to_value(alert.to_message()).unwrap_or_default();
        if let Some(object) = body.as_object_mut() {
            object.insert("alert".into(), serde_json::to_value(alert).unwrap_or_default());
        }
        let mut delivered = self.send(body.to_string(), retry).await?;
        delivered.dedup_key = Some(alert.dedup_key.clone());
        Ok(delivered)
    }
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
        assert!(replay.unwrap_err().to_string().contains("replay"));
        let forged = verify_signature("another-key", "1700000000", body, &signed, 1_700_000_100, tolerance);
        assert_eq!(forged, Err(SignatureError::Mismatch));
        let tampered = verify_signature("s3cret-signing-key", "1700000000", b"{}", &signed, 1_700_000_100, tolerance);
        assert!(tampered.is_err());
    }
}
