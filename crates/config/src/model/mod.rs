//! The typed model of `windlass.toml`, and how each section is read.
//!
//! Each type's `decode` lists the keys it knows; `docs/config.md` documents the same keys (a test
//! checks that the two agree). Defaults live here, next to the key they belong to.
//!
//! This module holds the whole file ([`Config`]) and the rules shared by its sections; each
//! section has its own submodule, split along what it describes: projects and environments
//! (`environment`), the deploy's phases and steps (`pipeline`), services and how they run
//! (`service`), rollout strategies and canary analysis (`rollout`), routes, health, failover and
//! rate limits (`traffic`), smoke checks (`smoke`), the database and its backups (`database`),
//! SLOs (`slo`), alert receivers and routes (`alerts`), the edge (`edge`) and the secrets backend
//! (`secrets`). Everything is re-exported, so callers name `windlass_config::Service` and never a
//! submodule.
//!
//! Reading a value never does anything with it: no file is opened (except to check that a named
//! program exists), no socket bound, no command run.

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, named_entries};
use crate::source::Source;

pub(crate) mod access;
mod alerts;
mod database;
mod edge;
mod endpoint;
mod environment;
mod pipeline;
mod rollout;
mod secrets;
mod service;
mod slo;
mod smoke;
mod traffic;

pub use access::*;
pub use alerts::*;
pub use database::*;
pub use edge::*;
pub use endpoint::*;
pub use environment::*;
pub use pipeline::*;
pub use rollout::*;
pub use secrets::*;
pub use service::*;
pub use slo::*;
pub use smoke::*;
pub use traffic::*;

/// The phases of a deploy when the config does not list its own (the seeds' order).
pub const DEFAULT_PHASES: [&str; 9] =
    ["validate", "infrastructure", "database", "backend", "frontend", "ai", "monitoring", "verification", "traffic"];

/// A whole `windlass.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub project: Project,
    pub environments: IndexMap<String, Environment>,
    /// The declared variables (`[env]`), the schema a `.env.<environment>` file must satisfy.
    pub env: IndexMap<String, VarSpec>,
    pub pipeline: Pipeline,
    pub phases: IndexMap<String, Phase>,
    pub services: IndexMap<String, Service>,
    pub smoke: Vec<SmokeCheck>,
    pub database: Option<Database>,
    pub slo: IndexMap<String, Slo>,
    pub alerts: Alerts,
    pub oncall: crate::oncall::OnCall,
    /// `[monitor]`: burn-rate alerts and the fewest requests a window needs.
    pub monitor: crate::monitor::Monitor,
    pub edge: Edge,
    pub secrets: SecretsBackend,
    pub probes: IndexMap<String, crate::probes::Probe>,
    /// `[server]`: how `windlass server` serves its API (TLS).
    pub server: crate::server::Server,
    /// `[access]`: people, groups, robots and the roles granted to them.
    pub access: Access,
}

impl Config {
    pub(crate) fn decode(cx: &mut Cx, root: &Value) -> Self {
        let at = At::default();
        let mut top = Table::open(cx, root, &at);
        let mut section = |cx: &mut Cx, key: &'static str| top.as_mut().and_then(|t| t.get(cx, key));

        let project = section(cx, "project").and_then(|v| Project::decode(cx, v, &at.key("project")));
        let environments = section(cx, "environments")
            .map(|v| named_entries(cx, v, &at.key("environments"), "<env>", Environment::decode))
            .unwrap_or_default();
        let env = section(cx, "env")
            .map(|v| named_entries(cx, v, &at.key("env"), "<VAR>", VarSpec::decode))
            .unwrap_or_default();
        let pipeline =
            section(cx, "pipeline").and_then(|v| Pipeline::decode(cx, v, &at.key("pipeline"))).unwrap_or_default();
        let phases = section(cx, "phases")
            .map(|v| named_entries(cx, v, &at.key("phases"), "<phase>", Phase::decode))
            .unwrap_or_default();
        let services = section(cx, "services")
            .map(|v| named_entries(cx, v, &at.key("services"), "<service>", Service::decode))
            .unwrap_or_default();
        let smoke = section(cx, "smoke").and_then(|v| Vec::<SmokeCheck>::decode(cx, v, &at.key("smoke")));
        let database = section(cx, "database").and_then(|v| Database::decode(cx, v, &at.key("database")));
        let slo = section(cx, "slo")
            .map(|v| named_entries(cx, v, &at.key("slo"), "<service>", Slo::decode))
            .unwrap_or_default();
        let alerts = section(cx, "alerts").and_then(|v| Alerts::decode(cx, v, &at.key("alerts")));
        let oncall = section(cx, "oncall").and_then(|v| crate::oncall::OnCall::decode(cx, v, &at.key("oncall")));
        let monitor = section(cx, "monitor").and_then(|v| crate::monitor::Monitor::decode(cx, v, &at.key("monitor")));
        let edge = section(cx, "edge").and_then(|v| Edge::decode(cx, v, &at.key("edge")));
        let secrets = section(cx, "secrets").and_then(|v| SecretsBackend::decode(cx, v, &at.key("secrets")));
        let probes = section(cx, "probes").map(|v| crate::probes::decode_probes(cx, v, &at.key("probes")));
        let server = section(cx, "server").and_then(|v| crate::server::Server::decode(cx, v, &at.key("server")));
        let access = section(cx, "access").and_then(|v| Access::decode(cx, v, &at.key("access")));
        if let Some(top) = top {
            top.finish(cx);
        }

        check_docker_services(cx, &services, &environments);
        endpoint::check_latency_thresholds(cx, &services, &slo);
        let project = project.unwrap_or_else(|| {
            cx.error(0..0, "missing [project] table").expected = Some("[project] with name = \"...\"".into());
            Project { name: String::new(), state_dir: None }
        });
        Config {
            source: cx.source.clone(),
            project,
            environments,
            env,
            pipeline,
            phases,
            services,
            smoke: smoke.unwrap_or_default(),
            database,
            slo,
            alerts: alerts.unwrap_or_default(),
            oncall: oncall.unwrap_or_default(),
            monitor: monitor.unwrap_or_default(),
            edge: edge.unwrap_or_default(),
            secrets: secrets.unwrap_or_default(),
            probes: probes.unwrap_or_default(),
            server: server.unwrap_or_default(),
            access: access.unwrap_or_default(),
        }
    }
}

/// Reads a name the user gives to an environment or service: lowercase letters, digits and `-`,
/// since it ends up in deploy ids, host names and file names.
pub(crate) fn check_slug(cx: &mut Cx, name: &Spanned<String>, what: &str) -> bool {
    let ok = name.value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.value.len() <= 63;
    if !ok {
        cx.error(name.span.clone(), format!("invalid {what} name `{}`", name.value)).expected =
            Some("lowercase letters, digits and `-`, starting with a letter or digit, at most 63 characters".into());
    }
    ok
}
