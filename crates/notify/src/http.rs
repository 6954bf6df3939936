//! POSTing JSON with the retry rules every HTTP receiver shares.

use std::time::Duration;

use windlass_http::{HttpError, Reply, Url, UrlRequest};

use crate::{NotifyError, RetryPolicy, truncate};

/// Where and how to POST.
pub(crate) struct Target<'a> {
    pub receiver: &'a str,
    pub url: &'a Url,
    pub ca_file: Option<&'a std::path::Path>,
    /// Texts that must never appear in an error (a routing key): replaced by `[redacted]` in
    /// the answers quoted.
    pub secrets: &'a [&'a str],
}

/// How long a 429 asks us to wait: `Retry-After` in seconds or as an HTTP date.
fn retry_after(reply: &Reply, now: jiff::Timestamp) -> Option<Duration> {
    let value = reply.headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(Duration::from_millis(u64::try_from(at.duration_since(now).as_millis()).unwrap_or(0)))
}

pub(crate) fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    text
}

/// POSTs the body `build` makes for each attempt (given the attempt's Unix time, so signatures
/// are fresh), retrying as [`RetryPolicy`] says. Returns the attempts made and the 2xx reply.
pub(crate) async fn post(
    target: Target<'_>,
    retry: &RetryPolicy,
    build: impl Fn(i64) -> (String, Vec<(&'static str, String)>) + Send + Sync,
) -> Result<(u32, Reply), NotifyError> {
    let receiver = target.receiver;
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
            url: target.url,
            headers: &headers,
            body: Some(body.into_bytes()),
            timeout: retry.timeout,
            ca_file: target.ca_file,
        })
        .await;
        let mut wait = delay;
        let quoted = |reply: &Reply| truncate(&scrub(reply.text().trim(), target.secrets), 500);
        match sent {
            Ok(reply) if (200..300).contains(&reply.status) => return Ok((attempt, reply)),
            Ok(reply) if reply.status == 429 => {
                last = format!("429 Too Many Requests: {}", quoted(&reply));
                if let Some(asked) = retry_after(&reply, now) {
                    wait = asked;
                }
            }
            Ok(reply) if reply.status >= 500 => last = format!("{}: {}", reply.status, quoted(&reply)),
            Ok(reply) => {
                return Err(NotifyError::Refused {
                    receiver: receiver.to_owned(),
                    status: reply.status,
                    body: quoted(&reply),
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

/// A URL given in the configuration, parsed. The error says what is wrong and never quotes the
/// URL: a webhook URL's path, query or credentials are its secret.
pub(crate) fn parse(receiver: &str, url: &str) -> Result<Url, NotifyError> {
    Url::parse(url).map_err(|_| NotifyError::BadUrl {
        receiver: receiver.to_owned(),
        message: format!("its URL {} (the URL is not shown: it holds the receiver's secret)", what_is_wrong(url)),
    })
}

/// What is wrong with a URL `windlass_http::Url` refused, in words that quote none of it.
fn what_is_wrong(url: &str) -> &'static str {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return "is not an http:// or https:// URL";
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        "has credentials before its host, which are not supported"
    } else if authority.is_empty() {
        "has no host"
    } else if authority.starts_with('[') && !authority.contains(']') {
        "has an unclosed `[`"
    } else if authority.rsplit_once(':').is_some_and(|(_, port)| !port.ends_with(']') && port.parse::<u16>().is_err()) {
        "has a bad port"
    } else {
        "is not a valid URL"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_described_without_its_path_query_or_credentials() {
        let secret = "T0AAAA/B0BBBB/xoxSECRETpath";
        for url in [
            format!("htps://hooks.slack.com/services/{secret}"),
            format!("https://user:{secret}@hooks.slack.com/x"),
            format!("https://hooks.slack.com:notaport/services/{secret}?token={secret}"),
            format!("https:///services/{secret}"),
            format!("https://[::1/services/{secret}"),
            format!("hooks.slack.com/services/{secret}"),
        ] {
            let message = parse("slack", &url).unwrap_err().to_string();
            assert!(!message.contains("xoxSECRETpath") && !message.contains("services"), "{message}");
            assert!(message.starts_with("receiver `slack`: its URL "), "{message}");
        }
    }
}
