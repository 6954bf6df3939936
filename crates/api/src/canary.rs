//! Canaries: where each service's canary stands, and the manual promote/abort.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /environments/{env}/canary`: running canaries, or how the last one of each service
/// ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CanaryList {
    pub environment: String,
    pub canaries: Vec<CanaryProgress>,
}

/// Where a canary stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CanaryProgress {
    pub deploy_id: String,
    pub service: String,
    /// The canary's pool (color).
    pub canary: String,
    pub stable: String,
    pub step: u64,
    pub steps: u64,
    /// The canary's share of traffic, percent.
    pub weight: u8,
    pub passed: u32,
    pub failed: u32,
    /// Inconclusive intervals in a row.
    pub inconclusive: u32,
    pub last: Option<Figures>,
    pub last_verdict: Option<IntervalVerdict>,
    /// `running`, `promoted` or `aborted`.
    pub outcome: String,
    pub reason: Option<String>,
    /// When the interval verdict that aborted the canary was computed (RFC 3339).
    #[serde(default)]
    pub failed_at: Option<String>,
}

/// One interval's figures, as judged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub stable_error_rate: Option<f64>,
    pub stable_p95_ms: Option<f64>,
}

/// An interval's verdict, by `verdict`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum IntervalVerdict {
    Passed,
    /// What exceeded its threshold, with both numbers.
    Failed {
        reasons: Vec<String>,
    },
    Inconclusive {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CanaryAction {
    Promote,
    Abort,
}

/// `POST /environments/{env}/services/{service}/canary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    pub action: CanaryAction,
}

/// The decision was left for the deploy running the canary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CanaryDecided {
    pub service: String,
    /// The deploy running the canary.
    pub deploy: String,
    pub message: String,
}
