//! Alerts, silences, incidents, reliability figures and the SLO report. The alert, silence,
//! incident and SLO bodies are the monitor's own serde types, carried here as JSON objects.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /alerts`, `/silences`, `/incidents` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AlertQuery {
    pub environment: Option<String>,
    /// Alerts: `firing` (the default), `resolved` or `all`.
    pub status: Option<String>,
    pub limit: Option<u32>,
}

/// `GET /alerts`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    #[schema(value_type = Vec<Object>)]
    pub alerts: Vec<serde_json::Value>,
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

/// `GET /silences`: each silence with `active`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SilenceList {
    #[schema(value_type = Vec<Object>)]
    pub silences: Vec<serde_json::Value>,
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

/// `GET /incidents`: newest first, without timelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IncidentList {
    #[schema(value_type = Vec<Object>)]
    pub incidents: Vec<serde_json::Value>,
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
