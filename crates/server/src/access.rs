//! Who may do what: the caller of an API route ([`Actor`]), the permissions routes declare
//! ([`Permission`]), the roles that grant them ([`Role`]) and the check every route passes
//! ([`require`]).
//!
//! Roles are granted in `windlass.toml` (`[access]`): people (directly or through groups) and
//! robots hold a role on environments and service patterns. Nothing is granted by default. How
//! roles combine ([`Role::permissions`]): every role can read; `deployer` deploys, rolls back,
//! drives canaries and scales; `approver` approves; `operator` runs maintenance, failover,
//! silences, acknowledgements, incidents, lock breaks, emergency rollbacks, window overrides and
//! database restores; `admin` holds every permission. Roles add up: a person granted `deployer`
//! and `operator` on an environment holds both sets there. A robot never approves, whatever
//! the config says (the config check refuses it too). A bootstrap admin token (`windlass token
//! create --admin`, made on the server's machine) holds every permission everywhere.
//!
//! Scope: a route names its environment and service in its path; a grant covers a route when it
//! covers that environment (or `"*"`) and, for a route of one service, a pattern matching it. A
//! route of a whole environment (no service) needs a grant on every service (`"*"`) except to
//! read, which any grant on the environment allows. A route of no environment (`/status`,
//! `/alerts`, `/silences`, `/incidents`) is allowed by the permission held on any environment;
//! a handler that learns the environment later (a silence's body) asks again with it.

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use windlass_api::access::Denied;
use windlass_api::events::AuditOutcome;
use windlass_config::{Access, AccessRole};

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
    /// A bootstrap admin token: every permission everywhere.
    pub admin: bool,
}

impl Actor {
    /// How the actor authenticated, as audit records say it.
    pub fn authenticated_by(&self) -> String {
        if self.admin { format!("bootstrap admin token {}", self.token) } else { format!("token {}", self.token) }
    }

    pub fn kind(&self) -> &'static str {
        if self.robot { "robot" } else { "person" }
    }
}

/// What is known of the request being served, for audit records: set by the API's middleware
/// for the whole of one request (a task-local, so that handlers' `audit` calls find it without
/// passing it along).
#[derive(Clone, Debug)]
pub struct CallContext {
    pub request_id: String,
    pub source: Option<SocketAddr>,
    pub actor: Option<Actor>,
    /// How a caller outside the token check authenticated (`signed ack link`, `pagerduty webhook`).
    pub via: Option<&'static str>,
}

tokio::task_local! {
    pub(crate) static CALL: CallContext;
}

/// The context of the request being served, if any.
pub(crate) fn current_call() -> Option<CallContext> {
    CALL.try_with(Clone::clone).ok()
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

impl Role {
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Deployer, Role::Approver, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        self.config().as_str()
    }

    fn config(self) -> AccessRole {
        match self {
            Role::Viewer => AccessRole::Viewer,
            Role::Deployer => AccessRole::Deployer,
            Role::Approver => AccessRole::Approver,
            Role::Operator => AccessRole::Operator,
            Role::Admin => AccessRole::Admin,
        }
    }

    fn from_config(role: AccessRole) -> Role {
        match role {
            AccessRole::Viewer => Role::Viewer,
            AccessRole::Deployer => Role::Deployer,
            AccessRole::Approver => Role::Approver,
            AccessRole::Operator => Role::Operator,
            AccessRole::Admin => Role::Admin,
        }
    }

    /// What the role permits: the one table `require` and `docs/access.md` follow.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission::*;
        match self {
            Role::Viewer => &[Read],
            Role::Deployer => &[Read, Deploy, Rollback, Canary, Scale],
            Role::Approver => &[Read, Approve],
            Role::Operator => &[
                Read,
                Maintenance,
                Failover,
                Silence,
                Acknowledge,
                Incident,
                BreakLock,
                Emergency,
                OverrideWindow,
                RestoreDatabase,
            ],
            Role::Admin => &Permission::ALL,
        }
    }

    pub fn grants(self, permission: Permission) -> bool {
        self.permissions().contains(&permission)
    }
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
    pub const ALL: [Permission; 16] = [
        Permission::Read,
        Permission::Deploy,
        Permission::Rollback,
        Permission::RestoreDatabase,
        Permission::Canary,
        Permission::Scale,
        Permission::Approve,
        Permission::OverrideWindow,
        Permission::Emergency,
        Permission::Maintenance,
        Permission::Failover,
        Permission::Silence,
        Permission::Acknowledge,
        Permission::Incident,
        Permission::BreakLock,
        Permission::Admin,
    ];

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

    /// The least role that grants the permission (what a denial tells the caller to ask for).
    pub fn least_role(self) -> Role {
        Role::ALL.into_iter().find(|role| role.grants(self)).unwrap_or(Role::Admin)
    }
}

/// Where a permission is asked for: an environment (none for global routes) and a service.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scope<'a> {
    pub environment: Option<&'a str>,
    pub service: Option<&'a str>,
}

impl Scope<'_> {
    fn describe(&self) -> String {
        match (self.environment, self.service) {
            (Some(environment), Some(service)) => format!("service `{service}` of environment `{environment}`"),
            (Some(environment), None) => format!("environment `{environment}`"),
            (None, _) => "any environment".to_owned(),
        }
    }
}

/// Why `actor` may not: the permission, the least role granting it, and the scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub permission: Permission,
    pub role: Role,
    pub message: String,
}

/// Does `actor` hold `permission` on `scope` under `access`? Pure: the role matrix is tested on
/// it directly.
pub fn decide(access: &Access, actor: &Actor, permission: Permission, scope: Scope<'_>) -> Result<(), Denial> {
    let deny = |why: String| {
        Err(Denial {
            permission,
            role: permission.least_role(),
            message: format!(
                "{} `{}` may not {} on {}: {why}",
                actor.kind(),
                actor.name,
                permission.as_str(),
                scope.describe()
            ),
        })
    };
    if actor.robot && permission == Permission::Approve {
        return deny("robots never approve".to_owned());
    }
    if actor.admin && !actor.robot {
        return Ok(());
    }
    let member_of =
        |group: &str| access.groups.get(group).is_some_and(|g| g.members.iter().any(|m| m.value == actor.name));
    let applies = |grant: &&windlass_config::Grant| {
        if actor.robot {
            access.robots.contains_key(&actor.name) && grant.robots.iter().any(|r| r.value == actor.name)
        } else {
            access.people.contains_key(&actor.name)
                && (grant.people.iter().any(|p| p.value == actor.name) || grant.groups.iter().any(|g| member_of(g)))
        }
    };
    let covers = |grant: &&windlass_config::Grant| match scope.environment {
        None => true,
        Some(environment) => {
            grant.covers_environment(environment)
                && match scope.service {
                    Some(service) => grant.covers_service(service),
                    None => permission == Permission::Read || grant.covers_every_service(),
                }
        }
    };
    let held = access
        .grants
        .iter()
        .filter(applies)
        .filter(|grant| Role::from_config(grant.role.value).grants(permission))
        .any(|grant| covers(&grant));
    if held {
        return Ok(());
    }
    let role = permission.least_role().as_str();
    deny(format!("it needs the `{}` permission, which role `{role}` (or `admin`) grants", permission.as_str()))
}

/// `actor` holds `permission` on `scope`, or the answer to send: 403 naming the missing
/// permission, the role that grants it and the scope. The denial is audited.
#[allow(clippy::result_large_err)]
pub(crate) async fn require(
    state: &AppState,
    actor: &Actor,
    permission: Permission,
    scope: Scope<'_>,
) -> Result<(), Response> {
    let config = match state.deployer.shared_config() {
        Ok(config) => config,
        // Without a readable config nothing is granted: fail closed, saying why.
        Err(err) => {
            return Err(crate::api::error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check permissions: the config does not load: {err}"),
            ));
        }
    };
    match decide(&config.access, actor, permission, scope) {
        Ok(()) => Ok(()),
        Err(denial) => Err(deny(state, actor, &denial, scope).await),
    }
}

/// Records a denial and makes its 403.
async fn deny(state: &AppState, actor: &Actor, denial: &Denial, scope: Scope<'_>) -> Response {
    let call = current_call();
    let request_id = call.as_ref().map(|c| c.request_id.clone()).unwrap_or_default();
    tracing::info!(actor = actor.name, permission = denial.permission.as_str(), request_id, "access denied");
    crate::api::audit_record(
        &*state.store,
        crate::api::AuditEntry {
            actor: Some(actor),
            action: denial.permission.as_str(),
            resource: scope.service.unwrap_or_else(|| scope.environment.unwrap_or("-")),
            environment: scope.environment,
            outcome: AuditOutcome::Denied,
            message: denial.message.clone(),
            before: None,
            after: None,
        },
    )
    .await;
    let body = Denied {
        error: denial.message.clone(),
        permission: denial.permission.as_str().to_owned(),
        role: denial.role.as_str().to_owned(),
        environment: scope.environment.map(str::to_owned),
        service: scope.service.map(str::to_owned),
        request_id,
    };
    (StatusCode::FORBIDDEN, Json(body)).into_response()
}

/// `docs/access.md`'s table of roles, made from [`Role::permissions`] (a test keeps the page
/// equal to it).
pub fn roles_table() -> String {
    let mut table = String::from("| permission | least role | roles that hold it |\n|---|---|---|\n");
    for permission in Permission::ALL {
        let holders: Vec<String> =
            Role::ALL.iter().filter(|r| r.grants(permission)).map(|r| format!("`{}`", r.as_str())).collect();
        table.push_str(&format!(
            "| `{}` | `{}` | {} |\n",
            permission.as_str(),
            permission.least_role().as_str(),
            holders.join(", ")
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[project]
name = "shop"
[environments.staging]
[environments.production]
[access.people.vera]
[access.people.dan]
[access.people.amy]
[access.people.otto]
[access.people.sam]
[access.people.nobody]
[access.groups.ops]
members = ["otto"]
[access.robots.ci]
[[access.grants]]
people = ["vera"]
role = "viewer"
environments = ["production"]
[[access.grants]]
people = ["dan"]
role = "deployer"
environments = ["staging"]
[[access.grants]]
people = ["amy"]
role = "approver"
environments = ["production"]
[[access.grants]]
groups = ["ops"]
role = "operator"
environments = ["production"]
[[access.grants]]
people = ["sam"]
role = "deployer"
environments = ["*"]
services = ["api*"]
[[access.grants]]
robots = ["ci"]
role = "deployer"
environments = ["staging", "production"]
"#;

    fn access() -> Access {
        let parsed = windlass_config::parse(&windlass_config::Source::new("windlass.toml", CONFIG));
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
        parsed.config.access
    }

    fn person(name: &str) -> Actor {
        Actor { name: name.into(), token: format!("{name}-laptop"), robot: false, admin: false }
    }

    fn on(environment: &str) -> Scope<'_> {
        Scope { environment: Some(environment), service: None }
    }

    fn service<'a>(environment: &'a str, service: &'a str) -> Scope<'a> {
        Scope { environment: Some(environment), service: Some(service) }
    }

    #[test]
    fn the_role_matrix() {
        use Permission::*;
        let access = access();
        let robot = Actor { name: "ci".into(), token: "ci-main".into(), robot: true, admin: false };
        let root = Actor { admin: true, ..person("root") };
        // (who, permission, scope, allowed)
        let cases: Vec<(Actor, Permission, Scope, bool)> = vec![
            (person("vera"), Read, on("production"), true),
            (person("vera"), Read, on("staging"), false),
            (person("vera"), Deploy, on("production"), false),
            (person("dan"), Deploy, on("staging"), true),
            (person("dan"), Rollback, on("staging"), true),
            (person("dan"), Scale, service("staging", "web"), true),
            (person("dan"), Deploy, on("production"), false),
            (person("dan"), Approve, on("staging"), false),
            (person("dan"), OverrideWindow, on("staging"), false),
            (person("dan"), Read, on("production"), false),
            (person("amy"), Approve, on("production"), true),
            (person("amy"), Deploy, on("production"), false),
            (person("amy"), Approve, on("staging"), false),
            (person("otto"), Silence, on("production"), true),
            (person("otto"), Failover, service("production", "api"), true),
            (person("otto"), BreakLock, on("production"), true),
            (person("otto"), Emergency, on("production"), true),
            (person("otto"), Deploy, on("production"), false),
            (person("otto"), Approve, on("production"), false),
            (person("otto"), Silence, on("staging"), false),
            (person("otto"), Silence, Scope::default(), true),
            (person("sam"), Scale, service("production", "api"), true),
            (person("sam"), Scale, service("production", "api-v2"), true),
            (person("sam"), Scale, service("production", "web"), false),
            (person("sam"), Deploy, on("production"), false),
            (person("sam"), Read, on("production"), true),
            (person("nobody"), Read, on("production"), false),
            (person("nobody"), Read, Scope::default(), false),
            (person("stranger"), Read, on("production"), false),
            (robot.clone(), Deploy, on("production"), true),
            (robot.clone(), Approve, on("production"), false),
            (robot.clone(), Silence, on("production"), false),
            (Actor { admin: true, ..robot.clone() }, Approve, on("staging"), false),
            (root.clone(), Approve, on("production"), true),
            (root.clone(), Admin, Scope::default(), true),
        ];
        for (actor, permission, scope, allowed) in cases {
            let decision = decide(&access, &actor, permission, scope);
            assert_eq!(decision.is_ok(), allowed, "{} {permission:?} {scope:?}: {decision:?}", actor.name);
            if let Err(denial) = decision {
                assert_eq!(denial.permission, permission);
                assert!(denial.message.contains(&actor.name), "{}", denial.message);
                assert!(denial.message.contains(permission.as_str()), "{}", denial.message);
            }
        }
    }

    #[test]
    fn a_denial_names_the_permission_the_role_and_the_scope() {
        let denial = decide(&access(), &person("vera"), Permission::Deploy, on("production")).unwrap_err();
        assert_eq!(denial.role, Role::Deployer);
        assert!(denial.message.contains("`deploy`"), "{}", denial.message);
        assert!(denial.message.contains("role `deployer`"), "{}", denial.message);
        assert!(denial.message.contains("environment `production`"), "{}", denial.message);
        let denial = decide(&access(), &person("otto"), Permission::Approve, on("production")).unwrap_err();
        assert_eq!(denial.role, Role::Approver);
    }

    #[test]
    fn every_role_reads_and_admin_holds_everything() {
        for role in Role::ALL {
            assert!(role.grants(Permission::Read), "{role:?}");
        }
        for permission in Permission::ALL {
            assert!(Role::Admin.grants(permission), "{permission:?}");
        }
        assert_eq!(Permission::Approve.least_role(), Role::Approver);
        assert_eq!(Permission::Admin.least_role(), Role::Admin);
    }

    #[test]
    fn docs_access_md_shows_the_roles_table() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/access.md")).unwrap();
        assert!(
            docs.contains(&roles_table()),
            "docs/access.md's table differs from Role::permissions:\n{}",
            roles_table()
        );
    }
}
