//! Slack incoming webhooks: `text` (the fallback shown in notifications) plus Block Kit blocks,
//! each within Slack's limits.

use serde_json::{Value, json};
use windlass_http::Url;

use crate::http::{Target, parse, post};
use crate::{Delivered, Message, NotifyError, Receiver, RetryPolicy};

/// A Slack incoming webhook.
#[derive(Clone)]
pub struct Slack {
    name: String,
    url: Url,
}

impl std::fmt::Debug for Slack {
    // The webhook URL's path is its secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack").field("name", &self.name).field("url", &self.url.authority).finish_non_exhaustive()
    }
}

impl Slack {
    pub fn new(name: &str, url: &str) -> Result<Self, NotifyError> {
        Ok(Slack { name: name.to_owned(), url: parse(name, url)? })
    }

    /// The payload Slack's incoming webhooks take: `text` and Block Kit `blocks`. Every text is
    /// escaped as Slack asks (`&`, `<`, `>` as `&amp;`, `&lt;`, `&gt;`): a deploy reason or a
    /// probe's output saying `<!channel>` shows as text and pings nobody, and a URL stays a URL.
    pub fn payload(message: &Message) -> Value {
        let mut blocks = vec![
            json!({ "type": "header", "text": { "type": "plain_text", "text": escaped(&message.title, 150) } }),
            json!({ "type": "section", "text": { "type": "mrkdwn", "text": escaped(&message.text, 3000) } }),
        ];
        if !message.fields.is_empty() {
            let fields: Vec<Value> = message
                .fields
                .iter()
                .take(10)
                .map(|(name, value)| {
                    // The `*` around the name is Windlass's own markup; name and value are text.
                    let name = escape(name);
                    let value = escaped(value, 2000usize.saturating_sub(name.chars().count() + 3));
                    json!({ "type": "mrkdwn", "text": format!("*{name}*\n{value}") })
                })
                .collect();
            blocks.push(json!({ "type": "section", "fields": fields }));
        }
        let context = format!("{} · {} · {}", message.event, message.environment, message.at);
        blocks.push(json!({
            "type": "context",
            "elements": [{ "type": "mrkdwn", "text": escaped(&context, 2000) }],
        }));
        json!({ "text": escape(&format!("{}\n{}", message.title, message.text)), "blocks": blocks })
    }
}

/// `text` with Slack's three control characters escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// [`escape`]d, at most `max` characters once escaped (cut with `…`, never inside an entity).
fn escaped(text: &str, max: usize) -> String {
    let full = escape(text);
    if full.chars().count() <= max {
        return full;
    }
    let mut out = String::new();
    let mut count = 0;
    for c in text.chars() {
        let piece = escape(c.encode_utf8(&mut [0; 4]));
        let len = piece.chars().count();
        if count + len + 1 > max {
            break;
        }
        out.push_str(&piece);
        count += len;
    }
    out.push('…');
    out
}

#[async_trait::async_trait]
impl Receiver for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, message: &Message, retry: &RetryPolicy) -> Result<Delivered, NotifyError> {
        let body = Slack::payload(message).to_string();
        let target = Target { receiver: &self.name, url: &self.url, ca_file: None, secrets: &[] };
        let (attempts, reply) = post(target, retry, |_| (body.clone(), Vec::new())).await?;
        Ok(Delivered { receiver: self.name.clone(), attempts, status: reply.status, dedup_key: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn user_text_is_escaped_everywhere_and_cut_outside_entities() {
        let message = Message {
            event: "deploy.started".into(),
            environment: "prod<uction>".into(),
            title: "deploy <!channel> & co".into(),
            text: "reason: <!here> <https://evil.example|click>".into(),
            fields: vec![("reason".into(), "<@U123> & <!subteam^S1>".into())],
            deploy_id: None,
            at: "2026-11-23T10:00:00Z".into(),
        };
        let payload = Slack::payload(&message).to_string();
        assert!(payload.contains("&lt;!channel&gt; &amp; co"), "{payload}");
        assert!(payload.contains("&lt;https://evil.example|click&gt;"), "{payload}");
        for raw in ["<!channel>", "<!here>", "<@U123>", "<!subteam", "<https://", "<uction>"] {
            assert!(!payload.contains(raw), "{raw} in {payload}");
        }
        let cut = escaped(&"<".repeat(10), 11);
        assert_eq!(cut, "&lt;&lt;…");
    }
}
