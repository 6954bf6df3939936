//! Deploys: starting one (or its dry run), rolling back, promoting, and reading the records
//! and their steps (also streamed as server-sent events).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /environments/{env}/deploys`: how the user narrowed a deploy. Every field is optional;
/// an empty body deploys everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DeployRequest {
    /// Phases to leave out.
    pub skip: Vec<String>,
    /// The only phases to run.
    pub only: Vec<String>,
    /// Answer with the plan instead of deploying.
    pub dry_run: bool,
    pub reason: Option<String>,
    /// Deploy outside the environment's deploy window (needs a reason, which is recorded).
    pub override_window: bool,
    /// The requester approves their own deploy (only where `approval = "anyone"`).
    pub approve: bool,
    /// `--version api=v2`: the version each named service rolls out at.
    pub versions: BTreeMap<String, String>,
}

/// The answer to a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DryRun {
    /// Always true.
    pub dry_run: bool,
    pub plan: Plan,
}

/// What a deploy would run, phase by phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub environment: String,
    pub phases: Vec<PhasePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PhasePlan {
    pub name: String,
    /// Why this phase does not run (`--skip`, `--only`); absent when it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub steps: Vec<StepPlan>,
}

/// One step of a plan, by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepPlan {
    /// The config and the environment's variables, checked again at deploy time.
    Validate,
    /// A service rolled out with its strategy.
    Rollout { service: String, strategy: String, instances: u32 },
    /// A custom step from `[[phases.<phase>.steps]]`, by its index there.
    Command { name: String, index: u64 },
    /// A smoke check from `[[smoke]]`, by its index there.
    Smoke { name: String, index: u64 },
    /// The database's pending migrations, after a backup when `backup` is true.
    Migrate { backup: bool },
}

/// `POST /environments/{env}/rollback`. A rollback passes the environment's deploy window, and,
/// where the environment has approvals, needs one when the target's config and builds never
/// passed approval there; `emergency` skips both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The deploy whose builds to go back to; the previous successful one when absent.
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// Also restore the database backup taken before that deploy's migrations (permission
    /// `restore-database`).
    #[serde(default)]
    pub restore_database: bool,
    /// Roll back outside the environment's deploy window (needs a reason; permission
    /// `override-window`).
    #[serde(default)]
    pub override_window: bool,
    /// The requester approves their own rollback (only where the environment's approval is
    /// "anyone").
    #[serde(default)]
    pub approve: bool,
    /// An operator's emergency rollback: no approval, no deploy window; needs a reason, is
    /// audited and announced (permission `emergency`).
    #[serde(default)]
    pub emergency: bool,
}

/// `POST /environments/{env}/promote`: deploy the builds that run in `from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    pub from: String,
    /// Only these services (all when empty).
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub override_window: bool,
    #[serde(default)]
    pub approve: bool,
}

/// A deploy record. `artifacts` is the builds it rolled out, as recorded (commands passed
/// through the environment's redactor, or left out when its secrets cannot be read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deploy {
    pub id: String,
    pub environment: String,
    /// `running`, `succeeded`, `failed`, `rolled_back`, `interrupted`, ...
    pub status: String,
    pub actor: String,
    pub reason: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The step running now, or the one that was running when the deploy ended.
    pub current_step: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub artifacts: serde_json::Value,
}

/// One step of a deploy record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub seq: i64,
    pub phase: String,
    pub name: String,
    /// `running`, `succeeded`, `failed`, `skipped`, ...
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub output: String,
    pub error: Option<String>,
}

/// `GET /environments/{env}/deploys`: newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeployList {
    pub deploys: Vec<Deploy>,
}

/// `GET /deploys/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeployDetail {
    pub deploy: Deploy,
    pub steps: Vec<Step>,
}

/// The `step` event of `GET /deploys/{id}/events` when a step starts (its end is sent as a
/// whole [`Step`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepStarted {
    pub seq: i64,
    pub phase: String,
    pub name: String,
    /// Always `running`.
    pub status: String,
}

/// The `output` event: new text of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StepOutput {
    pub seq: i64,
    pub text: String,
}
