//! The monitor's probes of an environment.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /environments/{env}/probes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProbeList {
    pub environment: String,
    pub probes: Vec<ProbeStatus>,
}

/// One probe's latest state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProbeStatus {
    pub name: String,
    pub kind: String,
    /// `unknown`, `up` or `down`.
    pub health: String,
    pub since: Option<String>,
    pub service: Option<String>,
    pub last_checked: Option<String>,
    pub last_ok: Option<bool>,
    pub last_reason: String,
    pub last_latency_ms: u64,
    pub cert_days_left: Option<i64>,
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    pub checks: u64,
}
