//! The audit trail.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /events` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
// As every body type denies unknown fields: a misspelt parameter (`?enviroment=`) is a 400
// naming it, not a listing that silently ignored it.
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    pub environment: Option<String>,
    /// Only kinds starting with this (`db.`, `deploy.approv`, `notify.failed`).
    pub kind: Option<String>,
    pub limit: Option<u32>,
}

/// `GET /events`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<Event>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub environment: Option<String>,
    pub kind: String,
    pub subject: Option<String>,
    pub message: String,
    /// Details by kind (null when there are none readable).
    #[schema(value_type = Option<Object>)]
    pub data: serde_json::Value,
    /// The audit record, for events API calls made (`data.audit`); none for the pipeline's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<Audit>,
}

/// How an audit record's caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The caller held the permission and the action was done.
    Allowed,
    /// The caller lacked the permission: nothing was done.
    Denied,
    /// The caller held the permission but the action failed (the answer was an error).
    Failed,
}

impl AuditOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// The one format of an audit record (`data.audit` of the events that API calls make, also in
/// [`Event::audit`]): who, how they authenticated, from where, which request, what, on what,
/// where, and how it ended. `before` / `after` are redacted: secrets never appear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Audit {
    /// The person or robot (or, for signed links and webhooks, who the link or hook names).
    pub actor: String,
    /// `person`, `robot`, `link` (a signed ack link) or `webhook` (PagerDuty).
    pub actor_kind: String,
    /// How they authenticated: `token <name>`, `bootstrap admin token <name>`, `signed ack link`,
    /// `pagerduty webhook`.
    pub authenticated_by: String,
    /// The client's address, when the listener knows it.
    pub source: Option<String>,
    /// The request's id, also answered in the `x-request-id` header.
    pub request_id: Option<String>,
    /// What was done or tried (`deploy`, `failover`, `alert.ack`, a route's permission).
    pub action: String,
    /// What it was done to (a service, a deploy id, an alert id, a route).
    pub resource: String,
    pub environment: Option<String>,
    pub outcome: AuditOutcome,
    /// The state before, redacted (null when not recorded).
    #[schema(value_type = Option<Object>)]
    pub before: Option<serde_json::Value>,
    /// The state after, redacted.
    #[schema(value_type = Option<Object>)]
    pub after: Option<serde_json::Value>,
}
