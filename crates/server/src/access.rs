//! Who may do what: the caller of an API route ([`Actor`]), the permissions routes declare
//! ([`Permission`]), the roles that grant them ([`Role`]) and the check every route passes
//! ([`require`]).
//!
//! INTERFACE IN PROGRESS (issue #19): the types below are what the API handlers and the
//! pipeline code build on; `require` is completed by the roles work (people and groups from
//! `[access]` in `windlass.toml`, roles per environment and service pattern, default deny,
//! denials answered 403 and audited).

use axum::response::Response;

use crate::api::AppState;

/// The caller of an API route, set by the token check.
#[derive(Clone, Debug)]
pub struct Actor {
    /// The person or robot the token belongs to: what deploy records, approvals and audit
    /// records name. Approvals compare this, never token names.
    pub name: String,
    /// The name of the token presented (a person may hold several).
    pub token: String,
    /// A named robot (CI): robots can never approve.
    pub robot: bool,
}

/// A role granted to a person or group on environments and services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything in scope.
    Viewer,
    /// Deploys, rolls back, drives canaries and scales, within deploy windows.
    Deployer,
    /// Approves or rejects deploys that need approval.
    Approver,
    /// Maintenance, failover, silences, incidents, breaking locks.
    Operator,
    /// Tokens and roles.
    Admin,
}

/// What a route needs. Every API route declares exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    Read,
    Deploy,
    Rollback,
    /// Roll back with `--restore-database`.
    RestoreDatabase,
    Canary,
    Scale,
    Approve,
    /// Deploy or roll back outside the environment's deploy windows.
    OverrideWindow,
    /// Roll back without approval (`--emergency --reason`).
    Emergency,
    Maintenance,
    Failover,
    Silence,
    Acknowledge,
    Incident,
    BreakLock,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Deploy => "deploy",
            Permission::Rollback => "rollback",
            Permission::RestoreDatabase => "restore-database",
            Permission::Canary => "canary",
            Permission::Scale => "scale",
            Permission::Approve => "approve",
            Permission::OverrideWindow => "override-window",
            Permission::Emergency => "emergency",
            Permission::Maintenance => "maintenance",
            Permission::Failover => "failover",
            Permission::Silence => "silence",
            Permission::Acknowledge => "acknowledge",
            Permission::Incident => "incident",
            Permission::BreakLock => "break-lock",
            Permission::Admin => "admin",
        }
    }
}

/// Where a permission is asked for: an environment (none for global routes) and a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scope<'a> {
    pub environment: Option<&'a str>,
    pub service: Option<&'a str>,
}

/// `actor` holds `permission` on `scope`, or the answer to send (403 naming the missing
/// permission; the denial is audited). INTERFACE IN PROGRESS: allows everything until the
/// roles work lands.
#[allow(dead_code, clippy::unused_async, clippy::result_large_err)]
pub(crate) async fn require(
    _state: &AppState,
    _actor: &Actor,
    _permission: Permission,
    _scope: Scope<'_>,
) -> Result<(), Response> {
    Ok(())
}
