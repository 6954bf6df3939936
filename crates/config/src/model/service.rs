//! `[services.<service>]`: how a service runs (process or docker), its instances and their
//! per-environment overrides.
//!
//! It checks what can be checked from the files (a docker service's program exists); it must
//! not start anything.

use indexmap::IndexMap;

use crate::decode::{At, Cx, Spanned, Table, Value, integer_in, one_of};
use crate::template::{Setting, Template};
use crate::units::Duration;

use super::{
    Analysis, Environment, Failover, Health, RateLimit, Route, Strategy, check_slug, decode_routes, decode_run,
    read_env_table,
};

/// Where a service's instances run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceRuntime {
    /// Local processes, each under its own shim (the default).
    #[default]
    Process,
    /// Containers on the local Docker Engine, from an image `FROM scratch` holding the `run`
    /// program (which must be a static executable).
    Docker,
}

impl ServiceRuntime {
    fn decode_key(cx: &mut Cx, t: &mut Table, at: &At) -> Option<Self> {
        t.get(cx, "runtime").and_then(|v| {
            one_of(
                cx,
                v,
                &at.key("runtime"),
                &[("process", ServiceRuntime::Process), ("docker", ServiceRuntime::Docker)],
            )
        })
    }
}

/// A docker service needs `run`, and its program must be a file: the image is built from it.
pub(super) fn check_docker_services(
    cx: &mut Cx,
    services: &IndexMap<String, Service>,
    environments: &IndexMap<String, Environment>,
) {
    let mut checks: Vec<(Spanned<String>, Option<Template>, String)> = Vec::new();
    for service in services.values().filter(|s| s.runtime == ServiceRuntime::Docker) {
        checks.push((service.name.clone(), service.run.clone(), format!("service `{}`", service.name.value)));
    }
    for environment in environments.values() {
        for (name, changes) in &environment.services {
            let Some(base) = services.get(name) else { continue };
            let merged = changes.apply(base);
            let changed = changes.runtime.is_some() || changes.run.is_some();
            if merged.runtime == ServiceRuntime::Docker && changed {
                let span = changes.name.clone().unwrap_or_else(|| base.name.clone());
                checks.push((
                    span,
                    merged.run,
                    format!("service `{name}` in environment `{}`", environment.name.value),
                ));
            }
        }
    }
    let config_dir = crate::config_dir(cx.source.path());
    for (name, run, what) in checks {
        let Some(run) = run else {
            cx.error(name.span.clone(), format!("{what} runs in docker but has no `run` command")).help =
                Some("`run` names the static executable that is put into the service's image".into());
            continue;
        };
        // The first word is the program; one with a variable or quotes is resolved at deploy time.
        let Some(program) = run.raw.split_whitespace().next() else { continue };
        if program.contains(['$', '\'', '"']) {
            continue;
        }
        if resolve_program(program, &config_dir).is_none() {
            let diagnostic = cx
                .error(name.span.clone(), format!("{what} runs in docker, but its program `{program}` is not a file"));
            diagnostic.help = Some(
                "the image is built from the executable itself: give its path (relative to the config), or put it \
                 on PATH or beside windlass; it must be static (see scripts/build-static-demo)"
                    .into(),
            );
        }
    }
}

/// The file a program names: a path (relative to the config's directory), or a name on PATH or
/// beside the running windlass (where `windlass-demo` is installed); how a deploy finds it too.
/// A path comes back absolute (instances run in other directories).
pub fn resolve_program(program: &str, config_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let path = config_dir.join(program);
        return path.is_file().then(|| std::path::absolute(&path).unwrap_or(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).collect::<Vec<_>>())
        .unwrap_or_default();
    let beside_us = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(program)));
    on_path.into_iter().chain(beside_us).find(|path| path.is_file())
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: Spanned<String>,
    pub phase: Spanned<String>,
    /// The command that runs one instance (process runtime). `$PORT` is set for it.
    pub run: Option<Template>,
    /// Working directory of the command, relative to the config file.
    pub dir: Option<String>,
    pub instances: u32,
    pub env: IndexMap<String, Setting>,
    pub strategy: Strategy,
    pub keep_warm: Duration,
    pub analysis: Option<Analysis>,
    pub routes: Vec<Route>,
    pub health: Option<Health>,
    pub depends_on: Vec<Spanned<String>>,
    pub failover: Option<Failover>,
    pub rate_limit: Option<RateLimit>,
    /// Instances that run outside Windlass (`"127.0.0.1:9000"`), served as pool `blue`.
    pub upstreams: Vec<Spanned<String>>,
    /// Time between SIGTERM and SIGKILL when an instance stops.
    pub stop_timeout: Duration,
    /// Where its instances run.
    pub runtime: ServiceRuntime,
    /// Endpoints the edge counts apart (`endpoints = [{ name, path, methods }]`).
    pub endpoints: Vec<super::Endpoint>,
}

impl Service {
    pub(super) fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        check_slug(cx, &name, "service");
        let mut t = Table::open(cx, value, at)?;
        let phase = t.or(cx, "phase", Spanned::new("backend".to_owned(), name.span.clone()));
        let run = decode_run(cx, &mut t);
        let dir = t.optional(cx, "dir");
        let instances = t.get(cx, "instances").and_then(|v| integer_in(cx, v, &at.key("instances"), 1..=1000));
        let env = read_env_table(cx, &mut t);
        let strategy = t.or(cx, "strategy", Strategy::Rolling);
        let keep_warm = t.or(cx, "keep_warm", Duration::from_secs(600));
        let analysis: Option<Analysis> = t.optional(cx, "analysis");
        let routes = t.get(cx, "route").and_then(|v| decode_routes(cx, v, &at.key("route"))).unwrap_or_default();
        let health = t.optional(cx, "health");
        let depends_on = t.or(cx, "depends_on", Vec::new());
        let failover: Option<Failover> = t.optional(cx, "failover");
        let rate_limit = t.optional(cx, "rate_limit");
        let upstreams: Vec<Spanned<String>> = t.or(cx, "upstreams", Vec::new());
        for address in &upstreams {
            if address.value.parse::<std::net::SocketAddr>().is_err() {
                cx.error(address.span.clone(), format!("invalid upstream address `{}`", address.value)).expected =
                    Some("an IP address and port such as \"127.0.0.1:9000\"".into());
            }
        }
        let stop_timeout = t.or(cx, "stop_timeout", Duration::from_secs(10));
        let runtime = ServiceRuntime::decode_key(cx, &mut t, at).unwrap_or_default();
        let endpoints = t
            .get(cx, "endpoints")
            .map(|v| super::endpoint::decode_endpoints(cx, v, &at.key("endpoints")))
            .unwrap_or_default();
        if run.is_none() && upstreams.is_empty() && t.get(cx, "run").is_none() {
            cx.error(t.span(), format!("service `{}` has neither `run` nor `upstreams`", name.value)).help =
                Some("`run` starts its instances; `upstreams` names instances that run elsewhere".into());
        }
        t.finish(cx);
        if let Some(failover) = &failover
            && failover.managed.is_some()
            && run.is_none()
        {
            cx.error(
                name.span.clone(),
                format!(
                    "service `{}` has managed secondary `instances` but no `run` command to start them",
                    name.value
                ),
            );
        }
        if analysis.is_some() && !matches!(strategy, Strategy::Canary(_)) {
            cx.warning(
                name.span.clone(),
                format!(
                    "service `{}` has `analysis` but its strategy is not a canary; analysis only runs for canaries",
                    name.value
                ),
            );
        }
        Some(Service {
            name,
            phase,
            run,
            dir,
            instances: instances.map_or(1, |n| n as u32),
            env,
            strategy,
            keep_warm,
            analysis,
            routes,
            health,
            depends_on,
            failover,
            rate_limit,
            upstreams,
            stop_timeout,
            runtime,
            endpoints,
        })
    }
}

/// What an environment changes about a service; absent keys keep the service's own values.
#[derive(Debug, Clone, Default)]
pub struct ServiceOverride {
    pub name: Option<Spanned<String>>,
    pub instances: Option<u32>,
    pub run: Option<Template>,
    pub env: IndexMap<String, Setting>,
    pub strategy: Option<Strategy>,
    pub routes: Option<Vec<Route>>,
    pub runtime: Option<ServiceRuntime>,
}

impl ServiceOverride {
    pub(super) fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let instances = t.get(cx, "instances").and_then(|v| integer_in(cx, v, &at.key("instances"), 1..=1000));
        let run = decode_run(cx, &mut t);
        let env = read_env_table(cx, &mut t);
        let strategy = t.optional(cx, "strategy");
        let routes = t.get(cx, "route").and_then(|v| decode_routes(cx, v, &at.key("route")));
        let runtime = ServiceRuntime::decode_key(cx, &mut t, at);
        t.finish(cx);
        Some(ServiceOverride {
            name: Some(name),
            instances: instances.map(|n| n as u32),
            run,
            env,
            strategy,
            routes,
            runtime,
        })
    }

    /// The service as this environment runs it.
    pub fn apply(&self, service: &Service) -> Service {
        let mut merged = service.clone();
        if let Some(instances) = self.instances {
            merged.instances = instances;
        }
        if let Some(run) = &self.run {
            merged.run = Some(run.clone());
        }
        for (name, setting) in &self.env {
            merged.env.insert(name.clone(), setting.clone());
        }
        if let Some(strategy) = &self.strategy {
            merged.strategy = strategy.clone();
        }
        if let Some(routes) = &self.routes {
            merged.routes = routes.clone();
        }
        if let Some(runtime) = self.runtime {
            merged.runtime = runtime;
        }
        merged
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::ServiceRuntime;
    use crate::{Source, parse};

    fn config(dir: &std::path::Path, services: &str) -> crate::Parsed {
        let text = format!("[project]\nname = \"shop\"\n[environments.production]\n{services}\n");
        parse(&Source::new(dir.join("windlass.toml"), text))
    }

    fn rendered(parsed: &crate::Parsed) -> String {
        parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn docker_services_need_a_program_that_is_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-static"), b"\x7fELF").unwrap();
        let default = config(dir.path(), "[services.api]\nrun = \"./api-static\"");
        assert_eq!(default.config.services["api"].runtime, ServiceRuntime::Process);
        let docker = config(dir.path(), "[services.api]\nrun = \"./api-static --flag\"\nruntime = \"docker\"");
        assert!(!docker.has_errors(), "{}", rendered(&docker));
        assert_eq!(docker.config.services["api"].runtime, ServiceRuntime::Docker);

        let missing = config(dir.path(), "[services.api]\nrun = \"./api-nope\"\nruntime = \"docker\"");
        assert!(
            rendered(&missing).contains("runs in docker, but its program `./api-nope` is not a file"),
            "{}",
            rendered(&missing)
        );
        let no_run = config(dir.path(), "[services.api]\nupstreams = [\"127.0.0.1:9000\"]\nruntime = \"docker\"");
        assert!(rendered(&no_run).contains("runs in docker but has no `run` command"), "{}", rendered(&no_run));
        let typo = config(dir.path(), "[services.api]\nrun = \"./api-static\"\nruntime = \"dokcer\"");
        assert!(rendered(&typo).contains("did you mean \"docker\"?"), "{}", rendered(&typo));
        // A program named by a variable is resolved at deploy time.
        let variable = config(
            dir.path(),
            "[services.api]\nrun = \"${API_BIN}\"\nruntime = \"docker\"\n[env.API_BIN]\ndefault = \"x\"",
        );
        assert!(!rendered(&variable).contains("runs in docker"), "{}", rendered(&variable));
    }

    #[test]
    fn an_environment_can_move_a_service_to_docker() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-static"), b"\x7fELF").unwrap();
        let moved = config(
            dir.path(),
            "[services.api]\nrun = \"./api-static\"\n[environments.production.services.api]\nruntime = \"docker\"",
        );
        assert!(!moved.has_errors(), "{}", rendered(&moved));
        assert_eq!(moved.config.service_in("production", "api").unwrap().runtime, ServiceRuntime::Docker);
        assert_eq!(moved.config.services["api"].runtime, ServiceRuntime::Process);
        let broken = config(
            dir.path(),
            "[services.api]\nrun = \"./api-static\"\n[environments.production.services.api]\nruntime = \"docker\"\nrun = \"./gone\"",
        );
        let text = rendered(&broken);
        assert!(
            text.contains("service `api` in environment `production` runs in docker, but its program `./gone`"),
            "{text}"
        );
    }
}
