//! Deploy notifications: the receivers `[pipeline] notify` names are told when a deploy starts
//! and ends, when a canary aborts and when a deploy awaits approval. Slack, webhook and email
//! receivers get the message; a PagerDuty receiver gets it as a Change Event (on the service's
//! timeline, paging nobody). Delivery runs in the background (a slow or broken receiver never
//! holds up a deploy); a delivery that fails is recorded as a `notify.failed` event. Everything
//! sent passes through the deploy's redactor.

use std::sync::Arc;

use windlass_config::{Config, ReceiverKind};
use windlass_notify::{Email, Message, NotifyError, PagerDuty, Receiver, RetryPolicy, Slack, Webhook};
use windlass_store::{NewEvent, Store};

use crate::vars::{RenderError, Variables};

/// The receivers of `[pipeline] notify`, their URLs, keys and secrets rendered; a receiver that
/// cannot be built is reported, not fatal.
pub fn receivers(config: &Config, variables: &Variables) -> (Vec<Arc<dyn Receiver>>, Vec<String>) {
    let mut built: Vec<Arc<dyn Receiver>> = Vec::new();
    let mut problems = Vec::new();
    for name in &config.pipeline.notify {
        let name = name.value.as_str();
        let Some(receiver) = config.alerts.receivers.get(name) else { continue };
        match build(name, &receiver.kind, variables) {
            Ok(receiver) => built.push(receiver),
            Err(problem) => problems.push(problem.into()),
        }
    }
    (built, problems)
}

/// A receiver of `[alerts.receivers]` that cannot be built. It keeps only the redacted text:
/// what went wrong (a rendered URL or routing key that does not parse) may hold a secret, so the
/// underlying error is not carried along as a source, where a chain printer would show it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReceiverError {
    message: String,
}

impl From<ReceiverError> for String {
    fn from(error: ReceiverError) -> Self {
        error.message
    }
}

/// What went wrong building a receiver, before it is redacted into a [`ReceiverError`].
#[derive(Debug, thiserror::Error)]
enum Problem {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// One receiver of `[alerts.receivers]`, its settings rendered with `variables`. The error names
/// the receiver and never shows a secret.
pub fn build(name: &str, kind: &ReceiverKind, variables: &Variables) -> Result<Arc<dyn Receiver>, ReceiverError> {
    unredacted(name, kind, variables)
        .map_err(|problem| ReceiverError { message: variables.redact(&format!("receiver `{name}`: {problem}")) })
}

fn unredacted(name: &str, kind: &ReceiverKind, variables: &Variables) -> Result<Arc<dyn Receiver>, Problem> {
    let builtins = Default::default();
    Ok(match kind {
        ReceiverKind::Slack { webhook_url } => Arc::new(Slack::new(name, &variables.render(webhook_url, &builtins)?)?),
        ReceiverKind::Webhook { url, signing_secret } => {
            // The URL is rendered first: its problem is the one reported when both have one.
            let url = variables.render(url, &builtins);
            let secret = signing_secret.as_ref().map(|s| variables.render(s, &builtins)).transpose();
            Arc::new(Webhook::new(name, &url?, secret?)?)
        }
        ReceiverKind::PagerDuty { routing_key, url } => {
            let base = url.as_ref().map(|u| variables.render(u, &builtins)).transpose();
            let receiver = PagerDuty::new(name, &variables.render(routing_key, &builtins)?)?;
            match base? {
                Some(base) => Arc::new(receiver.with_base_url(&base)?),
                None => Arc::new(receiver),
            }
        }
        ReceiverKind::Email { to, from, smtp_url } => {
            let url = smtp_url.as_ref().map(|url| variables.render(url, &builtins)).transpose()?;
            Arc::new(Email::new(name, to, from.as_deref(), url.as_deref())?)
        }
    })
}

/// Sends `message` to the config's deploy receivers in the background, as a task of the
/// deployer's supervisor (a notification still goes out while the server stops, within its grace).
pub fn notify(deployer: &crate::Deployer, config: &Config, variables: &Variables, mut message: Message) {
    message.at = deployer.clock.now().to_string();
    let tasks = deployer.tasks.clone();
    let delivery = delivery(deployer.store.clone(), config, variables, message);
    tasks.spawn(delivery);
}

fn delivery(
    store: Arc<dyn Store>,
    config: &Config,
    variables: &Variables,
    mut message: Message,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (receivers, problems) = receivers(config, variables);
    message.title = variables.redact(&message.title);
    message.text = variables.redact(&message.text);
    for (_, value) in &mut message.fields {
        *value = variables.redact(value);
    }
    let redactor = variables.clone();
    async move {
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
    }
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
        // Stamped by [`notify`] from the deployer's clock.
        at: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(receivers: &str) -> Config {
        let text = format!(
            "[project]\nname = \"maily\"\n\n[environments.production]\n\n[pipeline]\nphases = []\nnotify = [\"slack\", \"pagerduty\", \"email\"]\n\n{receivers}"
        );
        let parsed = windlass_config::parse(&windlass_config::Source::new("windlass.toml", text));
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>());
        parsed.config
    }

    #[test]
    fn pagerduty_and_email_receivers_take_deploy_notifications() {
        let config = config(
            r#"
[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/services/T0/B0/X"

[alerts.receivers.pagerduty]
type = "pagerduty"
routing_key = "R0ut1ngKeyF0rTests0123456789abcd"

[alerts.receivers.email]
type = "email"
to = ["devops@maily.example"]
from = "alerts@maily.example"
smtp_url = "smtps://mail.maily.example"
"#,
        );
        let (receivers, problems) = receivers(&config, &Variables::default());
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = receivers.iter().map(|r| r.name()).collect();
        assert_eq!(names, ["slack", "pagerduty", "email"]);
    }

    #[test]
    fn a_receiver_that_cannot_be_built_is_reported_without_its_secret() {
        let config = config(
            r#"
[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/services/T0/B0/X"

[alerts.receivers.pagerduty]
type = "pagerduty"
routing_key = "too-short-key"

[alerts.receivers.email]
type = "email"
to = ["devops@maily.example"]
smtp_url = "smtp://ops:hunter22@mail.maily.example?tls=none"
"#,
        );
        let (receivers, problems) = receivers(&config, &Variables::default());
        assert_eq!(receivers.len(), 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("receiver `pagerduty`") && !problems[0].contains("too-short-key"), "{problems:?}");
        assert!(problems[1].contains("loopback") && !problems[1].contains("hunter22"), "{problems:?}");
    }
}
