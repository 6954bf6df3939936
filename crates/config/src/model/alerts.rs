//! `[alerts]`: receivers (webhook, Slack, email, ...), routes by severity and escalation.
//!
//! It must not send a notification; `windlass-notify` and the monitor do.

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, named_entries, one_of};
use crate::template::Setting;
use crate::units::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertSeverity {
    Critical,
    Warning,
    Info,
    Business,
}

#[derive(Debug, Clone)]
pub enum ReceiverKind {
    Slack {
        webhook_url: Setting,
    },
    /// `url`: the Events API's base (EU accounts: `https://events.eu.pagerduty.com`).
    PagerDuty {
        routing_key: Setting,
        url: Option<Setting>,
    },
    Email {
        to: Vec<String>,
        from: Option<String>,
        smtp_url: Option<Setting>,
    },
    Webhook {
        url: Setting,
        signing_secret: Option<Setting>,
    },
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: Spanned<String>,
    pub kind: ReceiverKind,
}

impl Receiver {
    pub(super) fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let kind = t.get(cx, "type").and_then(|v| {
            one_of(cx, v, &at.key("type"), &[("slack", 0), ("pagerduty", 1), ("email", 2), ("webhook", 3)])
        });
        // Every receiver key is asked for, so that a key of another receiver type reads as
        // unknown for this one only when it is truly nobody's.
        let webhook_url = t.optional(cx, "webhook_url");
        let routing_key = t.optional(cx, "routing_key");
        let to: Option<Vec<Spanned<String>>> = t.optional(cx, "to");
        let from = t.optional(cx, "from");
        let smtp_url = t.optional(cx, "smtp_url");
        let url = t.optional(cx, "url");
        let signing_secret = t.optional(cx, "signing_secret");
        if t.get(cx, "type").is_none() {
            cx.error(t.span(), format!("missing key `type` in {}", at.table_name())).expected =
                Some("type = \"slack\", \"pagerduty\", \"email\" or \"webhook\"".into());
        }
        let span = t.span();
        t.finish(cx);
        let need = |cx: &mut Cx, key: &str, present: bool| {
            if !present {
                cx.error(span.clone(), format!("missing key `{key}` in {}", at.table_name()));
            }
            present
        };
        // A receiver's URL is its secret (a Slack webhook's path, a token in a query): one written
        // out that cannot work is reported by key, never quoted, and its line is not shown.
        for (key, setting) in [("webhook_url", &webhook_url), ("url", &url)] {
            if let Some(Setting::Text(template)) = setting
                && template.vars().next().is_none()
                && let Some(wrong) = http_url_problem(&template.raw)
            {
                cx.error(
                    span.clone(),
                    format!("`{}.{key}` {wrong} (the URL is not shown: it holds the receiver's secret)", at.path),
                )
                .hide_line = true;
            }
        }
        let kind = match kind? {
            0 => {
                need(cx, "webhook_url", webhook_url.is_some());
                ReceiverKind::Slack { webhook_url: webhook_url? }
            }
            1 => {
                need(cx, "routing_key", routing_key.is_some());
                ReceiverKind::PagerDuty { routing_key: routing_key?, url }
            }
            2 => {
                need(cx, "to", to.is_some());
                let to = to?;
                for address in &to {
                    if !crate::formats::is_email(&address.value) {
                        cx.error(address.span.clone(), format!("`{}` is not an email address", address.value));
                    }
                }
                ReceiverKind::Email { to: to.into_iter().map(|a| a.value).collect(), from, smtp_url }
            }
            _ => {
                need(cx, "url", url.is_some());
                ReceiverKind::Webhook { url: url?, signing_secret }
            }
        };
        Some(Receiver { name, kind })
    }
}

/// What is wrong with a receiver's http(s) URL, in words that quote none of it.
fn http_url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return Some("is not an http:// or https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        Some("has no host")
    } else if authority.contains('@') {
        Some("has credentials before its host, which are not supported")
    } else if authority.chars().any(char::is_whitespace) {
        Some("has a space in its host")
    } else {
        None
    }
}

#[derive(Debug, Clone)]
pub struct AlertRoute {
    pub severity: Option<AlertSeverity>,
    pub service: Option<Spanned<String>>,
    pub environment: Option<Spanned<String>>,
    /// Only in business hours or only off-hours (`[oncall] business_hours`).
    pub hours: Option<crate::oncall::Hours>,
    /// Receivers, people or schedules.
    pub to: Vec<Spanned<String>>,
    /// Matching goes on with the next routes after this one.
    pub continue_: bool,
    /// The `[oncall.policies.<policy>]` unacknowledged alerts of this route climb.
    pub escalation: Option<Spanned<String>>,
    pub span: std::ops::Range<usize>,
}

pub(crate) fn decode_severity(cx: &mut Cx, value: &Value, at: &At) -> Option<AlertSeverity> {
    use AlertSeverity::*;
    one_of(cx, value, at, &[("critical", Critical), ("warning", Warning), ("info", Info), ("business", Business)])
}

impl Decode for AlertRoute {
    fn expected() -> String {
        "{ severity = \"critical\", to = [\"pagerduty\"] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let severity = t.get(cx, "severity").and_then(|v| decode_severity(cx, v, &at.key("severity")));
        let service = t.optional(cx, "service");
        let environment = t.optional(cx, "environment");
        let hours = t.optional(cx, "hours");
        let to = t.required(cx, "to");
        let continue_ = t.or(cx, "continue", false);
        let escalation = t.optional(cx, "escalation");
        t.finish(cx);
        Some(AlertRoute { severity, service, environment, hours, to: to?, continue_, escalation, span: value.span() })
    }
}

/// One rung of the escalation ladder: who is notified once an alert is unacknowledged this long.
#[derive(Debug, Clone)]
pub struct EscalationLevel {
    pub after: Spanned<Duration>,
    pub notify: Vec<Spanned<String>>,
}

impl Decode for EscalationLevel {
    fn expected() -> String {
        "{ after = \"5m\", notify = [\"oncall\"] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let after = t.required(cx, "after");
        let notify = t.required(cx, "notify");
        t.finish(cx);
        Some(EscalationLevel { after: after?, notify: notify? })
    }
}

#[derive(Debug, Clone)]
pub struct Alerts {
    pub receivers: IndexMap<String, Receiver>,
    pub routes: Vec<AlertRoute>,
    pub escalation: Vec<EscalationLevel>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// The secret of PagerDuty's v3 webhook subscription: its acknowledgements stop escalation.
    pub pagerduty_webhook_secret: Option<Setting>,
    /// Where people reach the server, for acknowledgement links in notifications.
    pub public_url: Option<String>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            receivers: IndexMap::new(),
            routes: Vec::new(),
            escalation: Vec::new(),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            pagerduty_webhook_secret: None,
            public_url: None,
        }
    }
}

impl Decode for Alerts {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let defaults = Alerts::default();
        let receivers = t
            .get(cx, "receivers")
            .map(|v| named_entries(cx, v, &at.key("receivers"), "<receiver>", Receiver::decode))
            .unwrap_or_default();
        let alerts = Alerts {
            receivers,
            routes: t.or(cx, "routes", Vec::new()),
            escalation: t.or(cx, "escalation", Vec::new()),
            group_wait: t.or(cx, "group_wait", defaults.group_wait),
            group_interval: t.or(cx, "group_interval", defaults.group_interval),
            repeat_interval: t.or(cx, "repeat_interval", defaults.repeat_interval),
            pagerduty_webhook_secret: t.optional(cx, "pagerduty_webhook_secret"),
            public_url: t.optional(cx, "public_url"),
        };
        t.finish(cx);
        Some(alerts)
    }
}
