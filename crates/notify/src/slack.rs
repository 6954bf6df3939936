//! Slack incoming webhooks: `text` (the fallback shown in notifications) plus Block Kit blocks,
//! each within Slack's limits.

use serde_json::{Value, json};
use windlass_http::Url;

use crate::http::{Target, parse, post};
use crate::{Delivered, Message, NotifyError, Receiver, RetryPolicy, truncate};

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
}
