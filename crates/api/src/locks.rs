//! An environment's deploy lock: shown, and broken (with a recorded reason).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /environments/{env}/lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockShown {
    pub environment: String,
    /// None when the environment is not locked.
    pub lock: Option<Lock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Lock {
    pub name: String,
    pub holder: String,
    pub purpose: String,
    pub since: String,
    pub heartbeat: String,
    /// The holder stopped renewing it (has probably died).
    pub stale: bool,
    pub token: i64,
}

/// The lock as the status view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockSummary {
    pub holder: String,
    pub purpose: String,
    pub since: String,
    pub stale: bool,
}

/// `DELETE /environments/{env}/lock` body: the reason is required (it is recorded).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakLockRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The lock that was broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LockBroken {
    pub broken: BrokenLock,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BrokenLock {
    pub holder: String,
    pub purpose: String,
    pub since: String,
}
