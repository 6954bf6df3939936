//! Deploys: a plan from the config's phases ([`plan`]), executed step by step and recorded in the
//! store ([`deploy`]); services roll out with their strategy and move their own traffic through
//! the edge ([`rollout`]); rollback ([`rollback`]) and recovery after a crash ([`recover`]).
//!
//! The pipeline reaches the edge and the instances only through two small traits,
//! [`edge::EdgeControl`] and [`windlass_runtime::Runtime`], so a new runtime is one new module.

pub mod approval;
pub mod artifacts;
pub mod canary;
pub mod checks;
pub mod command;
pub mod database;
pub mod deploy;
pub mod edge;
pub mod guard;
/// The HTTP client, re-exported for the crates that reach the pipeline's peers the same way.
pub use windlass_http as http;
pub mod notifications;
pub mod plan;
pub mod promote;
pub mod recover;
pub mod rollback;
pub mod rollout;
pub mod schedules;
pub mod shared_edge;
pub mod state;
pub mod supervisor;
pub mod vars;
pub mod view;

pub use deploy::{Deployer, Prepared, StartRequest};
pub use plan::{DeployOptions, Plan, PlanError};

/// Why a deploy could not start or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("the config has problems:\n{0}")]
    Config(String),
    #[error(
        "environment `{environment}` is being deployed by {holder} since {since} (deploy lock `{lease}`); wait, or break it with `windlass lock break {environment}`"
    )]
    Locked { environment: String, lease: String, holder: String, since: String },
    #[error("no deploy `{0}`")]
    UnknownDeploy(String),
    #[error("{0}")]
    Rejected(String),
    /// The request conflicts with the state it found (an open approval, a stale one).
    #[error("{0}")]
    Conflict(String),
    /// The caller may not do this (approving their own deploy where that is not allowed).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error(transparent)]
    Runtime(#[from] windlass_runtime::RuntimeError),
    #[error(transparent)]
    Edge(#[from] edge::EdgeError),
    #[error(transparent)]
    Artifact(#[from] artifacts::ArtifactError),
    #[error("{0}")]
    Corrupt(String),
    #[error("{0}")]
    Failed(String),
}

impl DeployError {
    /// Whether the caller asked for something impossible (4xx), as opposed to a failure here.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            DeployError::Plan(_) | DeployError::Config(_) | DeployError::Rejected(_) | DeployError::Artifact(_)
        )
    }
}
