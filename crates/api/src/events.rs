//! The audit trail.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /events` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
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
}
