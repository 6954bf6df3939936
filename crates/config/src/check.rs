//! Checks that need the whole config: references between sections (a `depends_on` to a missing
//! service, a route to an unknown receiver), dependency cycles, two services claiming one route,
//! phases that do not exist, and `${VAR}` / secret references to undeclared variables.

use std::collections::HashMap;
use std::path::Path;

use crate::decode::{Cx, Spanned, did_you_mean};
use crate::model::{Config, Migrate};
use crate::template::BUILTIN_VARS;

/// The edge's admin API refuses a service spec outside these ranges (`windlass_edge::spec::limits`,
/// crates/edge/src/spec.rs:175-193, checked in `ServiceSpec::check_values`, spec.rs:246). The
/// config crate cannot depend on the edge, so they are mirrored here: what `validate` accepts,
/// the edge takes. Rates need no mirror: a `Rate` (1 to u32::MAX per second, minute or hour)
/// always lies within the edge's 1e-4..=1e10 a second; checks in a row are 1..=1_000_000 in
/// both (`count`, model/pipeline.rs:111).
pub(crate) mod edge_limits {
    use crate::units::Duration;

    /// spec.rs:177 `INTERVAL_MS`: health checks at least every 10 ms, at most every hour.
    pub const HEALTH_INTERVAL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(3600));
    /// spec.rs:179 `TIMEOUT_MS`: a health check's timeout, 10 ms to 10 minutes.
    pub const HEALTH_TIMEOUT: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(600));
    /// spec.rs:188 `BURST`: a rate limit's burst.
    pub const BURST: std::ops::RangeInclusive<i64> = 1..=1_000_000;
    /// spec.rs:190 `MAX_PATH`: a health check's path (and a route's), in bytes.
    pub const MAX_PATH: usize = 2048;
}

pub(crate) fn check(cx: &mut Cx, config: &Config, base_dir: &Path) {
    check_environments_declared(cx, config);
    check_phases(cx, config);
    check_dependencies(cx, config);
    check_routes(cx, config);
    check_service_references(cx, config);
    check_alerts(cx, config);
    check_variable_references(cx, config);
    check_paths(cx, config, base_dir);
    crate::probes::check(cx, config);
    crate::monitor::check(cx, config);
    crate::model::access::check(cx, config);
}

/// Reports `name` as unknown among `known`, with the nearest known name as a suggestion.
pub(crate) fn unknown(cx: &mut Cx, name: &Spanned<String>, what: &str, known: &[&str]) {
    let diagnostic = cx.error(name.span.clone(), format!("unknown {what} `{}`", name.value));
    diagnostic.expected = Some(if known.is_empty() {
        format!("a {what}, but none is declared")
    } else {
        format!("one of {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))
    });
    if let Some(suggestion) = did_you_mean(&name.value, known.iter().copied()) {
        diagnostic.help = Some(format!("did you mean `{suggestion}`?"));
    }
}

fn check_environments_declared(cx: &mut Cx, config: &Config) {
    if config.environments.is_empty() {
        cx.error(0..0, "no environment is declared").help =
            Some("add at least one, such as `[environments.production]`".into());
    }
}

fn check_phases(cx: &mut Cx, config: &Config) {
    let phases: Vec<&str> = config.pipeline.phases.iter().map(|p| p.value.as_str()).collect();
    for phase in config.phases.values() {
        if !phases.contains(&phase.name.value.as_str()) {
            unknown(cx, &phase.name, "phase", &phases);
        }
    }
    for service in config.services.values() {
        if !phases.contains(&service.phase.value.as_str()) {
            unknown(cx, &service.phase, "phase", &phases);
        }
    }
}

fn check_dependencies(cx: &mut Cx, config: &Config) {
    let mut known: Vec<&str> = config.services.keys().map(String::as_str).collect();
    if config.database.is_some() {
        known.push("database");
    }
    for service in config.services.values() {
        for dependency in &service.depends_on {
            if dependency.value == service.name.value {
                cx.error(dependency.span.clone(), format!("service `{}` depends on itself", service.name.value));
            } else if !known.contains(&dependency.value.as_str()) {
                unknown(cx, dependency, "dependency", &known);
            }
        }
    }
    if let Some(cycle) = find_cycle(config) {
        let first = &config.services[cycle[0].as_str()];
        let span =
            first.depends_on.iter().find(|d| d.value == cycle[1]).map_or(first.name.span.clone(), |d| d.span.clone());
        cx.error(span, format!("dependency cycle: {}", cycle.join(" -> "))).help =
            Some("services must be startable in some order; remove one of these `depends_on` entries".into());
    }
}

/// A cycle among services' `depends_on`, as the list of names from a service back to itself.
fn find_cycle(config: &Config) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }
    fn visit<'a>(
        config: &'a Config,
        name: &'a str,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match marks.get(name).copied().unwrap_or(Mark::Unvisited) {
            Mark::Done => return None,
            Mark::OnPath => {
                let start = path.iter().position(|p| *p == name).unwrap_or(0);
                let mut cycle: Vec<String> = path[start..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(name.to_owned());
                return Some(cycle);
            }
            Mark::Unvisited => {}
        }
        marks.insert(name, Mark::OnPath);
        path.push(name);
        if let Some(service) = config.services.get(name) {
            for dependency in &service.depends_on {
                if dependency.value != name
                    && config.services.contains_key(&dependency.value)
                    && let Some(cycle) = visit(config, &dependency.value, marks, path)
                {
                    return Some(cycle);
                }
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        None
    }
    let mut marks = HashMap::new();
    for name in config.services.keys() {
        if let Some(cycle) = visit(config, name, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

fn check_routes(cx: &mut Cx, config: &Config) {
    let mut claimed: HashMap<(Option<&str>, &str), &str> = HashMap::new();
    for service in config.services.values() {
        for route in &service.routes {
            let key = (route.host.as_deref(), route.path.trim_end_matches('/'));
            if let Some(owner) = claimed.get(&key) {
                let host = route.host.as_deref().unwrap_or("any host");
                cx.error(
                    route.span.clone(),
                    format!(
                        "services `{owner}` and `{}` both claim the route {host}{}",
                        service.name.value, route.path
                    ),
                )
                .help = Some("each host and path prefix can lead to only one service".into());
            } else {
                claimed.insert(key, &service.name.value);
            }
        }
    }
}

fn check_service_references(cx: &mut Cx, config: &Config) {
    let services: Vec<&str> = config.services.keys().map(String::as_str).collect();
    let environments: Vec<&str> = config.environments.keys().map(String::as_str).collect();
    for environment in config.environments.values() {
        for (name, service_override) in &environment.services {
            if !config.services.contains_key(name)
                && let Some(name) = &service_override.name
            {
                unknown(cx, name, "service", &services);
            }
        }
    }
    for check in &config.smoke {
        if let Some(service) = &check.service
            && !config.services.contains_key(&service.value)
        {
            unknown(cx, service, "service", &services);
        }
    }
    for slo in config.slo.values() {
        if !config.services.contains_key(&slo.service.value) {
            unknown(cx, &slo.service, "service", &services);
        }
    }
    for spec in config.env.values() {
        for environment in spec.environments.iter().flatten() {
            if !config.environments.contains_key(&environment.value) {
                unknown(cx, environment, "environment", &environments);
            }
        }
    }
}

fn check_alerts(cx: &mut Cx, config: &Config) {
    let receivers: Vec<&str> = config.alerts.receivers.keys().map(String::as_str).collect();
    let services: Vec<&str> = config.services.keys().map(String::as_str).collect();
    let environments: Vec<&str> = config.environments.keys().map(String::as_str).collect();
    for route in &config.alerts.routes {
        if let Some(service) = &route.service
            && !services.contains(&service.value.as_str())
        {
            unknown(cx, service, "service", &services);
        }
        if let Some(environment) = &route.environment
            && !environments.contains(&environment.value.as_str())
        {
            unknown(cx, environment, "environment", &environments);
        }
    }
    // Every receiver type takes deploy notifications (PagerDuty as Change Events), so a name
    // only has to exist.
    for receiver in &config.pipeline.notify {
        if !config.alerts.receivers.contains_key(&receiver.value) {
            unknown(cx, receiver, "receiver", &receivers);
        }
    }
    crate::oncall::check(cx, config);
}

fn check_variable_references(cx: &mut Cx, config: &Config) {
    let declared: Vec<&str> = config.env.keys().map(String::as_str).collect();
    let references = std::mem::take(&mut cx.var_refs);
    for reference in &references {
        if !declared.contains(&reference.value.as_str()) && !BUILTIN_VARS.contains(&reference.value.as_str()) {
            let diagnostic = cx.error(
                reference.span.clone(),
                format!("`${{{}}}` refers to a variable not declared in [env]", reference.value),
            );
            diagnostic.help = Some(match did_you_mean(&reference.value, declared.iter().copied()) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => format!("declare it, such as `[env.{}] required = true`", reference.value),
            });
        }
    }
    // A variable in `run` becomes part of the instance's argv, which every local user reads in
    // /proc/<pid>/cmdline: a secret may reach an instance only through its environment.
    let in_run = std::mem::take(&mut cx.run_refs);
    for reference in &in_run {
        if config.env.get(&reference.value).is_some_and(|spec| spec.secret) {
            let name = &reference.value;
            let diagnostic = cx.error(
                reference.span.clone(),
                format!(
                    "secret `{name}` is used in `run`: it would be on the instance's command line, which every local user can read in /proc"
                ),
            );
            diagnostic.help = Some(format!(
                "pass it through the service's `env` (`env = {{ {name} = {{ secret = \"{name}\" }} }}`) and have the program read it from its environment"
            ));
        }
    }
    let secrets = std::mem::take(&mut cx.secret_refs);
    for secret in &secrets {
        match config.env.get(&secret.value) {
            Some(spec) if spec.secret => {}
            Some(_) => {
                cx.error(
                    secret.span.clone(),
                    format!("`{}` is used as a secret but is not declared `secret = true` in [env]", secret.value),
                );
            }
            None => {
                cx.error(secret.span.clone(), format!("secret `{}` is not declared in [env]", secret.value)).help =
                    Some(format!("declare it: `[env.{}] secret = true`", secret.value));
            }
        }
    }
}

fn check_paths(cx: &mut Cx, config: &Config, base_dir: &Path) {
    if let Some(database) = &config.database
        && let Some(Migrate::Dir(dir)) = &database.migrate
        && !base_dir.join(&dir.value).is_dir()
    {
        cx.error(dir.span.clone(), format!("migrations directory `{}` does not exist", dir.value)).help =
            Some(format!("it is read relative to {}", base_dir.display()));
    }
}
