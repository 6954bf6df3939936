//! Deploy notifications: the receivers `[pipeline] notify` names are told when a deploy starts
//! and ends, when a canary aborts and when a deploy awaits approval. Delivery runs in the
//! background (a slow or broken receiver never holds up a deploy); a delivery that fails is
//! recorded as a `notify.failed` event. Everything sent passes through the deploy's redactor.

use std::sync::Arc;

use windlass_config::{Config, ReceiverKind};
use windlass_notify::{Message, Receiver, RetryPolicy, Slack, Webhook};
use windlass_store::{NewEvent, Store};

use crate::vars::Variables;

/// The receivers of `[pipeline] notify`, their URLs and signing secrets rendered; a receiver
/// that cannot be built is reported, not fatal.
pub fn receivers(config: &Config, variables: &Variables) -> (Vec<Arc<dyn Receiver>>, Vec<String>) {
    let builtins = Default::default();
    let mut built: Vec<Arc<dyn Receiver>> = Vec::new();
    let mut problems = Vec::new();
    for name in &config.pipeline.notify {
        let name = name.value.as_str();
        let Some(receiver) = config.alerts.receivers.get(name) else { continue };
        let made: Result<Arc<dyn Receiver>, String> = match &receiver.kind {
            ReceiverKind::Slack { webhook_url } => variables
                .render(webhook_url, &builtins)
                .and_then(|url| Slack::new(name, &url).map_err(|e| e.to_string()))
                .map(|r| Arc::new(r) as Arc<dyn Receiver>),
            ReceiverKind::Webhook { url, signing_secret } => {
                let secret = signing_secret.as_ref().map(|s| variables.render(s, &builtins)).transpose();
                match (variables.render(url, &builtins), secret) {
                    (Ok(url), Ok(secret)) => Webhook::new(name, &url, secret)
                        .map(|r| Arc::new(r) as Arc<dyn Receiver>)
                        .map_err(|e| e.to_string()),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            _ => continue,
        };
        match made {
            Ok(receiver) => built.push(receiver),
            Err(problem) => problems.push(variables.redact(&format!("receiver `{name}`: {problem}"))),
        }
    }
    (built, problems)
}

/// Sends `message` to the config's deploy receivers in the background.
pub fn send(store: Arc<dyn Store>, config: &Config, variables: &Variables, mut message: Message) {
    let (receivers, problems) = receivers(config, variables);
    message.title = variables.redact(&message.title);
    message.text = variables.redact(&message.text);
    for (_, value) in &mut message.fields {
        *value = variables.redact(value);
    }
    let redactor = variables.clone();
    tokio::spawn(async move {
        let mut failures = problems;
        for outcome in windlass_notify::broadcast(&receivers, &message, &RetryPolicy::default()).await {
            if let Err(err) = outcome {
                failures.push(redactor.redact(&err.to_string()));
            }
        }
        for failure in failures {
            tracing::warn!(%failure, event = message.event, "a notification was not delivered");
            let event = NewEvent {
                actor: "windlass".into(),
                environment: Some(message.environment.clone()),
                kind: "notify.failed".into(),
                subject: message.deploy_id.clone(),
                message: format!("{}: {failure}", message.event),
                data: "{}".into(),
            };
            let _ = store.record_event(&event).await;
        }
    });
}

/// A message about a deploy of `environment`.
pub fn message(
    config: &Config,
    event: &str,
    environment: &str,
    deploy_id: Option<&str>,
    headline: &str,
    text: String,
    fields: Vec<(String, String)>,
) -> Message {
    Message {
        event: event.to_owned(),
        environment: environment.to_owned(),
        title: format!("{} {environment}: {headline}", config.project.name),
        text,
        fields,
        deploy_id: deploy_id.map(str::to_owned),
        at: jiff::Timestamp::now().to_string(),
    }
}
