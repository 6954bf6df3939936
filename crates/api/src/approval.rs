//! Approvals: a deploy or promotion into an environment with `approval = "required"` (or
//! `"anyone"` without `approve`) is first a request, approved or rejected by a person (never a
//! robot); so is a rollback to a deploy that never passed approval there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::deploys::DeployRequest;

/// An approval request, open or decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Approval {
    pub id: String,
    pub environment: String,
    pub requested_by: String,
    pub requested_at: String,
    pub options: DeployRequest,
    pub fingerprint: Fingerprint,
    /// A promotion from this environment (its live builds), not a deploy of the config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// A rollback to an earlier deploy whose config and builds never passed approval here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackAsked>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// What an approved rollback request runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RollbackAsked {
    /// The deploy returned to.
    pub to: String,
    pub restore_database: bool,
}

/// Where a request stands, by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Decision {
    Pending,
    Approved { by: String, deploy_id: String },
    Rejected { by: String, reason: Option<String> },
}

/// What the request would run: the config text and each rolled-out build, by hash. An approval
/// is refused when either changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Fingerprint {
    pub config_sha256: String,
    pub artifacts: BTreeMap<String, String>,
    #[serde(default)]
    pub migrations_sha256: Option<String>,
}

/// `202` to a deploy or promotion that needs approval: the request recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalPending {
    pub approval: Approval,
    pub message: String,
}

/// `GET /environments/{env}/approval` and the answer to a rejection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalShown {
    pub approval: Approval,
}

/// `202` to an approval: the deploy it started, and the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Approved {
    pub id: String,
    pub approval: Approval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
}

/// `POST /environments/{env}/approval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub decision: Verdict,
    #[serde(default)]
    pub reason: Option<String>,
}
