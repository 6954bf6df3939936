//! Alerts, silences, incidents and reliability figures. The alert, silence and incident items
//! mirror the monitor's serde shapes field for field (the server converts into them); timestamps
//! are RFC 3339 text, as the monitor's `jiff` timestamps serialize.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /alerts`, `/silences`, `/incidents` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
// As every body type denies unknown fields: a misspelt parameter (`?enviroment=`) is a 400
// naming it, not a listing that silently ignored it.
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    pub environment: Option<String>,
    /// Alerts: `firing` (the default), `resolved` or `all`.
    pub status: Option<String>,
    pub limit: Option<u32>,
}

/// An alert's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
    Business,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
            Severity::Business => "business",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// How an acknowledgement arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AckVia {
    Cli,
    Api,
    /// A signed link from a notification.
    Link,
    /// Another system (`pagerduty`, ...).
    External(String),
}

/// An alert's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Ack {
    pub by: String,
    pub via: AckVia,
    pub at: String,
    pub note: Option<String>,
}

/// Which escalation ladder an alert climbs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ladder {
    /// `[alerts] escalation`.
    Default,
    /// `[oncall.policies.<policy>]`.
    Policy(String),
}

/// Someone an alert was sent to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Recipient {
    /// A receiver of `[alerts.receivers]`; `person` when reached through a person or a schedule.
    Receiver { name: String, person: Option<String> },
    /// A person's `email`.
    Email { person: String, address: String },
}

/// An alert as the engine keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// 16 hex digits, stable across firings.
    pub id: String,
    /// What raised it: `probe`, `slo`, `backup`, ...
    pub source: String,
    pub name: String,
    pub service: String,
    pub environment: String,
    pub severity: Severity,
    pub summary: String,
    pub status: AlertStatus,
    /// How many times it fired (this is the `occurrence`-th).
    pub occurrence: u32,
    pub fired_at: String,
    pub resolved_at: Option<String>,
    /// The routes it matched when it fired (indexes into `[alerts] routes`).
    pub routes: Vec<u64>,
    pub ladder: Option<Ladder>,
    /// When it was first notified.
    pub notified_at: Option<String>,
    /// The escalation levels already notified.
    pub level: u64,
    pub ack: Option<Ack>,
    /// Everyone told it fired this time.
    pub told: Vec<Recipient>,
    /// The incident it joined, if critical.
    pub incident: Option<u64>,
    /// The silence that held it back at the last look.
    pub silenced_by: Option<String>,
}

/// `GET /alerts`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
}

/// `POST /alerts/{id}/ack`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub note: Option<String>,
    /// `cli` when the CLI asks; `api` otherwise.
    pub via: Option<String>,
}

/// An alert acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Acknowledged {
    pub alert: String,
    pub acknowledged_by: String,
    pub message: String,
}

/// An alert acknowledged by a signed link (`POST /ack/{token}`, outside `/api/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LinkAcknowledged {
    pub alert: String,
    pub acknowledged_by: String,
}

/// PagerDuty's webhook for an alert Windlass had already seen acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AlreadyAcknowledged {
    pub alert: String,
    /// Always true.
    pub already_acknowledged: bool,
}

/// PagerDuty's webhook for an event Windlass does not act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HookIgnored {
    pub ignored: String,
}

/// What a silence matches: every given field must be equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Matchers {
    pub name: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    #[serde(default)]
    pub severity: Option<Severity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SilenceKind {
    Manual,
    /// Opened while the edge keeps a service in maintenance.
    Maintenance,
}

/// A silence (`POST /silences`, `DELETE /silences/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Silence {
    pub id: String,
    pub kind: SilenceKind,
    pub matchers: Matchers,
    pub starts_at: String,
    /// None: until closed (maintenance).
    pub ends_at: Option<String>,
    pub author: String,
    pub reason: String,
}

/// A silence in a listing: the silence and whether it holds alerts back now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ListedSilence {
    #[serde(flatten)]
    pub silence: Silence,
    pub active: bool,
}

/// `GET /silences`: each silence with `active`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SilenceList {
    pub silences: Vec<ListedSilence>,
}

/// `POST /silences`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SilenceRequest {
    pub environment: Option<String>,
    pub service: Option<String>,
    pub name: Option<String>,
    /// `critical`, `warning`, `info` or `business`.
    pub severity: Option<String>,
    /// How long, such as `2h`.
    #[serde(rename = "for")]
    pub duration: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

/// One line of an incident's timeline. `kind` is `alert.fired`, `alert.resolved`,
/// `alert.acknowledged`, `note`, `incident.opened`, `incident.resolved`, `deploy.started`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub at: String,
    pub kind: String,
    /// Who did it (a person, `windlass`, a token name).
    pub actor: Option<String>,
    pub message: String,
    /// The alert it is about, if any.
    pub alert: Option<String>,
}

/// An incident (`GET /incidents/{id}`; listings leave `timeline` empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Incident {
    pub id: u64,
    pub environment: String,
    pub service: String,
    pub title: String,
    pub status: IncidentStatus,
    pub opened_at: String,
    /// The first acknowledgement of one of its alerts.
    pub acknowledged_at: Option<String>,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
    /// The alerts that joined it, in order.
    pub alerts: Vec<String>,
    /// In the order things happened.
    pub timeline: Vec<TimelineEntry>,
}

/// `GET /incidents`: newest first, without timelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncidentList {
    pub incidents: Vec<Incident>,
}

/// `GET /incidents/{id}/postmortem`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Postmortem {
    pub incident: u64,
    pub markdown: String,
}

/// `POST /incidents/{id}/notes` and `/resolve` (`text` and `note` are the same).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    pub text: Option<String>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Noted {
    pub incident: u64,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct IncidentResolved {
    pub incident: u64,
    /// Always `resolved`.
    pub status: String,
}

/// `GET /reliability` query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
// As every body type denies unknown fields: a misspelt parameter (`?enviroment=`) is a 400
// naming it, not a listing that silently ignored it.
#[serde(deny_unknown_fields)]
pub struct ReliabilityQuery {
    pub environment: String,
    pub service: String,
    /// The period: the last this many days (default 30).
    pub days: Option<u32>,
}

/// MTTR and MTBF of a service over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reliability {
    pub environment: String,
    pub service: String,
    pub from: String,
    pub to: String,
    pub incidents: u64,
    pub mttr_seconds: Option<u64>,
    pub mtbf_seconds: Option<u64>,
    pub downtime_seconds: u64,
    /// `mttr_seconds` for people (`1h 5m`).
    pub mttr: Option<String>,
    pub mtbf: Option<String>,
}
