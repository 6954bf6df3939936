//! Operations on running services: maintenance, failover, scale and logs.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `PUT /environments/{env}/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    pub enabled: bool,
    /// One service; every service when absent.
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MaintenanceDone {
    pub maintenance: bool,
    pub service: Option<String>,
    pub message: String,
}

/// `PUT /environments/{env}/services/{service}/failover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// `secondary` or `primary`.
    pub to: String,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FailoverDone {
    pub service: String,
    pub to: String,
    /// What happened, with a warning line when the secondary drifts from the live build.
    pub message: String,
}

/// `PUT /environments/{env}/services/{service}/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub instances: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScaleDone {
    pub service: String,
    pub instances: u64,
    /// The scale's progress lines.
    pub output: Vec<String>,
    pub message: String,
}

/// `GET /environments/{env}/services/{service}/logs` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
// As every body type denies unknown fields: a misspelt parameter (`?enviroment=`) is a 400
// naming it, not a listing that silently ignored it.
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Lines per instance (default 100, at most 10000).
    pub tail: Option<u64>,
}

/// The last lines of each instance, the environment's secrets hidden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Logs {
    pub service: String,
    pub instances: Vec<InstanceLogs>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceLogs {
    pub id: String,
    pub color: String,
    pub live: bool,
    pub lines: Vec<String>,
}
