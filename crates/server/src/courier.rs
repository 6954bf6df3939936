//! Where the alert engine's decisions leave the server. The engine decides (`Dispatch`: who, what
//! action, which alerts); the courier renders each dispatch for its receiver and sends it with
//! `windlass-notify`, in the background, so a slow receiver never holds the engine up.
//!
//! - PagerDuty gets one Events API v2 event per alert, under the alert's id as `dedup_key`, so
//!   trigger, acknowledge and resolve land on one PagerDuty incident (and PagerDuty's own
//!   acknowledgement webhook names it back).
//! - Slack, webhooks and email get one notification per dispatch: a group's alerts together.
//! - A person's own email address goes through the config's email receiver's SMTP settings.
//! - A receiver that fails raises its own alert (`receiver <name> failing`), which the engine
//!   routes like any other, so the other receivers hear of it; it resolves at its next success.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::json;
use windlass_config::{AlertSeverity, Config, ReceiverKind};
use windlass_monitor::alert::persist::Alerting;
use windlass_monitor::alert::{Action, AlertView, Dispatch, Signal};
use windlass_monitor::oncall::{Recipient, email_receiver};
use windlass_notify::{AlertAction, AlertEvent, Link, Receiver, RetryPolicy, Severity};
use windlass_pipeline::Deployer;
use windlass_pipeline::vars::Variables;
use windlass_secrets::SecretValue;
use windlass_store::Store;

use crate::ack_key::AckKey;

/// How long an acknowledgement link in a notification stays valid.
const LINK_VALID: Duration = Duration::from_secs(24 * 3600);
/// How often PagerDuty's webhook secret is resolved again with the config unchanged, so that a
/// secret rotated in the secrets backend is picked up without a restart.
const HOOK_SECRETS_REFRESH: Duration = Duration::from_secs(10 * 60);
/// How soon a resolution of the webhook secret that failed (backend unreachable) is tried again.
const HOOK_SECRETS_RETRY: Duration = Duration::from_secs(30);

pub(crate) struct Courier {
    pub deployer: Arc<Deployer>,
    pub store: Arc<dyn Store>,
    pub alerting: Arc<Alerting>,
    /// The environments this server manages: their variables resolve the webhook's secret.
    pub managed: Vec<String>,
    /// The key that signs acknowledgement links, read once at start (`crate::ack_key`).
    pub ack_key: AckKey,
    /// PagerDuty's webhook signing secrets, resolved by a loop of the server (never by a request).
    pub hook_secrets: HookSecrets,
}

/// PagerDuty's webhook signing secrets (`alerts.pagerduty_webhook_secret` as each managed
/// environment resolves it), kept in memory. They are resolved at start, when the config file
/// changes, and every [`HOOK_SECRETS_REFRESH`], always by the server's own loop: a webhook
/// request, signed or not, never reaches the secrets backend, so an unauthenticated caller
/// cannot make the server decrypt anything.
#[derive(Default)]
pub(crate) struct HookSecrets {
    state: Mutex<HookState>,
}

#[derive(Default)]
struct HookState {
    /// The config they were resolved from (`shared_config` hands out one `Arc` per file text).
    config: Option<Arc<Config>>,
    secrets: Vec<SecretValue>,
    /// When to resolve them again.
    due: Option<tokio::time::Instant>,
}

impl HookSecrets {
    /// The secrets as last resolved; empty until the first resolution succeeds.
    pub(crate) fn current(&self) -> Vec<SecretValue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).secrets.clone()
    }
}

impl Courier {
    pub(crate) fn new(
        deployer: Arc<Deployer>,
        store: Arc<dyn Store>,
        alerting: Arc<Alerting>,
        managed: Vec<String>,
        ack_key: AckKey,
    ) -> Self {
        Courier { deployer, store, alerting, managed, ack_key, hook_secrets: HookSecrets::default() }
    }

    /// Resolves PagerDuty's webhook secrets again if the config changed or they are due; called
    /// by [`resolve_hook_secrets`] once a second.
    pub(crate) async fn refresh_hook_secrets(&self) {
        let Ok(config) = self.deployer.shared_config() else { return };
        let now = tokio::time::Instant::now();
        {
            let mut state = self.hook_secrets.state.lock().unwrap_or_else(PoisonError::into_inner);
            let unchanged = state.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, &config));
            if unchanged && state.due.is_none_or(|due| now < due) {
                return;
            }
            if config.alerts.pagerduty_webhook_secret.is_none() {
                *state = HookState { config: Some(config), secrets: Vec::new(), due: None };
                return;
            }
        }
        let Some(setting) = config.alerts.pagerduty_webhook_secret.as_ref() else { return };
        let mut secrets: Vec<SecretValue> = Vec::new();
        let mut problems = Vec::new();
        for environment in &self.managed {
            match self.deployer.variables(&config, environment).await {
                Ok(variables) => match variables.render(setting, &Default::default()) {
                    Ok(secret) if !secret.is_empty() => {
                        let secret = SecretValue::new(secret);
                        if !secrets.contains(&secret) {
                            secrets.push(secret);
                        }
                    }
                    Ok(_) => problems.push(format!("`{environment}`: it is empty")),
                    Err(err) => problems.push(variables.redact(&format!("`{environment}`: {err}"))),
                },
                // The variables' errors name variables, never their values.
                Err(err) => problems.push(format!("`{environment}`: {err}")),
            }
        }
        let mut state = self.hook_secrets.state.lock().unwrap_or_else(PoisonError::into_inner);
        if secrets.is_empty() {
            tracing::warn!(
                problems = %problems.join("; "),
                "cannot resolve alerts.pagerduty_webhook_secret; PagerDuty's webhooks are refused until it resolves"
            );
            // The secrets of the former config stay until these resolve: PagerDuty's subscription
            // has not changed because a file did.
            state.config = Some(config);
            state.due = Some(now + HOOK_SECRETS_RETRY);
            return;
        }
        if !problems.is_empty() {
            tracing::warn!(problems = %problems.join("; "), "alerts.pagerduty_webhook_secret does not resolve everywhere");
        }
        *state = HookState { config: Some(config), secrets, due: Some(now + HOOK_SECRETS_REFRESH) };
    }

    /// Sends `dispatches` in the background.
    pub(crate) fn deliver(self: &Arc<Self>, dispatches: Vec<Dispatch>) {
        if dispatches.is_empty() {
            return;
        }
        let courier = self.clone();
        self.deployer.tasks.spawn(async move { courier.send_all(dispatches).await });
    }

    async fn send_all(self: Arc<Self>, dispatches: Vec<Dispatch>) {
        let config = match self.deployer.shared_config() {
            Ok(config) => config,
            Err(err) => {
                tracing::error!(%err, "alert notifications not sent: the config cannot be read");
                return;
            }
        };
        let mut variables: BTreeMap<String, Variables> = BTreeMap::new();
        for dispatch in dispatches {
            if !variables.contains_key(&dispatch.environment) {
                match self.deployer.variables(&config, &dispatch.environment).await {
                    Ok(found) => {
                        variables.insert(dispatch.environment.clone(), found);
                    }
                    Err(err) => {
                        let problem = format!("the variables of `{}`: {err}", dispatch.environment);
                        self.failed(&dispatch.to.to_string(), &dispatch.environment, problem).await;
                        continue;
                    }
                }
            }
            let Some(vars) = variables.get(&dispatch.environment) else { continue };
            self.send(&config, vars, &dispatch).await;
        }
    }

    async fn send(self: &Arc<Self>, config: &Config, variables: &Variables, dispatch: &Dispatch) {
        let (name, receiver, per_alert) = match receiver_for(config, variables, &dispatch.to) {
            Ok(found) => found,
            Err(problem) => return self.failed(&dispatch.to.to_string(), &dispatch.environment, problem).await,
        };
        let link_base = config.alerts.public_url.as_deref().map(|u| u.trim_end_matches('/').to_owned());
        let mut events = Vec::new();
        if per_alert {
            for alert in &dispatch.alerts {
                events.push(self.event(dispatch, std::slice::from_ref(alert), link_base.as_deref()).await);
            }
        } else {
            events.push(self.event(dispatch, &dispatch.alerts, link_base.as_deref()).await);
        }
        for mut event in events {
            // Whatever an alert quotes (a probe's output, a receiver's answer) leaves redacted.
            redact_event(&mut event, variables);
            if let Err(err) = receiver.alert(&event, &RetryPolicy::default()).await {
                let problem = variables.redact(&err.to_string());
                return self.failed(&name, &dispatch.environment, problem).await;
            }
        }
        self.receiver_ok(&name, &dispatch.environment).await;
    }

    /// One notification for `alerts` (one alert, or a group's).
    async fn event(&self, dispatch: &Dispatch, alerts: &[AlertView], link_base: Option<&str>) -> AlertEvent {
        let action = match dispatch.action {
            Action::Trigger | Action::Repeat | Action::Escalate => AlertAction::Trigger,
            Action::Acknowledge => AlertAction::Acknowledge,
            Action::Resolve => AlertAction::Resolve,
        };
        let prefix = match (dispatch.action, dispatch.level) {
            (Action::Repeat, _) => "still firing: ".to_owned(),
            (Action::Escalate, Some(level)) => format!("escalated to level {level}: "),
            _ => String::new(),
        };
        let summary = match alerts {
            [one] => format!("{prefix}{}", one.summary),
            many => format!(
                "{prefix}{} alerts for {} in {}: {}",
                many.len(),
                dispatch.service,
                dispatch.environment,
                many.iter().map(|a| a.summary.as_str()).collect::<Vec<_>>().join("; ")
            ),
        };
        let worst = alerts.iter().map(|a| a.severity).min().unwrap_or(AlertSeverity::Warning);
        let first = alerts.first();
        let mut links = Vec::new();
        if let (Some(base), AlertAction::Trigger) = (link_base, action) {
            for alert in alerts.iter().filter(|a| a.ack.is_none()) {
                let expires = self.deployer.clock.now() + LINK_VALID;
                let path = crate::alerts::ack_link_for(&self.ack_key, &alert.id, alert.fired_at, expires);
                links.push(Link { href: format!("{base}{path}"), text: format!("Acknowledge {}", alert.name) });
            }
        }
        AlertEvent {
            action,
            dedup_key: match alerts {
                [one] => one.dedup_key.clone(),
                _ => dispatch.group.clone(),
            },
            summary,
            source: first.map_or_else(|| "windlass".to_owned(), |a| format!("{}/{}", a.source, a.name)),
            severity: severity(worst),
            service: Some(dispatch.service.clone()),
            environment: Some(dispatch.environment.clone()),
            class: first.map(|a| a.source.clone()),
            details: json!({
                "alerts": alerts.iter().map(|a| json!({
                    "id": a.id,
                    "name": a.name,
                    "summary": a.summary,
                    "fired_at": a.fired_at.to_string(),
                    "status": a.status,
                })).collect::<Vec<_>>(),
                "group": dispatch.group,
                "level": dispatch.level,
                "to": dispatch.to.to_string(),
            }),
            links,
            at: self.deployer.clock.now().to_string(),
        }
    }

    /// A receiver that could not be reached: recorded, and alerted on through the others.
    async fn failed(self: &Arc<Self>, receiver: &str, environment: &str, problem: String) {
        tracing::warn!(receiver, environment, %problem, "an alert notification was not delivered");
        let message = format!("alert notification to {receiver} not delivered: {problem}");
        crate::api::audit(&*self.store, "windlass", environment, "notify.failed", receiver, message).await;
        let signal = receiver_signal(receiver, environment, &problem);
        match self.alerting.with(|engine, now| engine.fire(&signal, now)).await {
            Ok(dispatches) => self.deliver(dispatches),
            Err(err) => tracing::warn!(%err, "alerting: cannot save the engine's state"),
        }
    }

    async fn receiver_ok(self: &Arc<Self>, receiver: &str, environment: &str) {
        let id = receiver_signal(receiver, environment, "").fingerprint();
        // Most deliveries find no such alert: then the engine is not stepped at all.
        let resolved = self
            .alerting
            .with(|engine, now| {
                let firing = engine.alert(&id).is_some_and(|a| a.is_firing());
                if firing { engine.resolve_id(&id, now) } else { Vec::new() }
            })
            .await;
        match resolved {
            Ok(dispatches) => self.deliver(dispatches),
            Err(err) => tracing::warn!(%err, "alerting: cannot save the engine's state"),
        }
    }
}

/// PagerDuty's webhook secrets, resolved at start and then whenever the config changes or they
/// are due; a loop of its own, so a slow secrets backend never holds up the alert engine's tick.
pub(crate) async fn resolve_hook_secrets(courier: Arc<Courier>) {
    loop {
        courier.refresh_hook_secrets().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Every text of `event` that could quote a secret, redacted with the environment's secrets.
fn redact_event(event: &mut AlertEvent, variables: &Variables) {
    fn redact_json(value: &mut serde_json::Value, variables: &Variables) {
        match value {
            serde_json::Value::String(text) => *text = variables.redact(text),
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact_json(v, variables)),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(|v| redact_json(v, variables)),
            _ => {}
        }
    }
    event.summary = variables.redact(&event.summary);
    event.source = variables.redact(&event.source);
    redact_json(&mut event.details, variables);
    for link in &mut event.links {
        link.text = variables.redact(&link.text);
    }
}

fn receiver_signal(receiver: &str, environment: &str, problem: &str) -> Signal {
    Signal {
        source: "notify".into(),
        name: format!("receiver {receiver} failing"),
        service: "windlass".into(),
        environment: environment.to_owned(),
        severity: AlertSeverity::Warning,
        summary: format!("notifications to {receiver} fail: {problem}"),
    }
}

fn severity(severity: AlertSeverity) -> Severity {
    match severity {
        AlertSeverity::Critical => Severity::Critical,
        AlertSeverity::Warning => Severity::Warning,
        AlertSeverity::Info => Severity::Info,
        AlertSeverity::Business => Severity::Business,
    }
}

/// The receiver a recipient names, its name for messages, and whether it takes one event per
/// alert (PagerDuty) rather than one per dispatch.
fn receiver_for(
    config: &Config,
    variables: &Variables,
    to: &Recipient,
) -> Result<(String, Arc<dyn Receiver>, bool), String> {
    match to {
        Recipient::Receiver { name, .. } => {
            let receiver = config
                .alerts
                .receivers
                .get(name)
                .ok_or_else(|| format!("no receiver `{name}` in [alerts.receivers]"))?;
            let per_alert = matches!(receiver.kind, ReceiverKind::PagerDuty { .. });
            Ok((name.clone(), windlass_pipeline::notifications::build(name, &receiver.kind, variables)?, per_alert))
        }
        Recipient::Email { person, address } => {
            let via = email_receiver(&config.alerts)
                .ok_or_else(|| format!("{person} is reached by email, but no receiver has type = \"email\""))?;
            let ReceiverKind::Email { from, smtp_url, .. } = &config.alerts.receivers[via].kind else {
                return Err(format!("receiver `{via}` is not an email receiver"));
            };
            let kind =
                ReceiverKind::Email { to: vec![address.clone()], from: from.clone(), smtp_url: smtp_url.clone() };
            Ok((format!("{via} ({person})"), windlass_pipeline::notifications::build(via, &kind, variables)?, false))
        }
    }
}
