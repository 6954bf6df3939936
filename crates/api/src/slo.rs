//! `GET /slo/{env}`: every objective's figures now.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The SLO report of an environment. Each service's figures are the monitor's
/// `ServiceReport` (objective, SLI, window counts, budget, burn rates, latency, firing alerts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SloReport {
    pub environment: String,
    pub at: String,
    #[schema(value_type = Vec<Object>)]
    pub services: Vec<serde_json::Value>,
}
