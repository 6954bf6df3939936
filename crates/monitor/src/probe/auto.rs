//! The probes of an environment: those of `[probes]`, with their settings resolved, and one HTTP
//! probe per service `health`, made automatically.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use windlass_config::probes::{Probe as ProbeConfig, ProbeTarget, ProbeType};
use windlass_config::template::{Setting, Template};
use windlass_config::{AlertSeverity, Config};

use super::{HttpTarget, MetricsTarget, ProbeError, ProbeSpec, SecretText, Target};

/// What [`probes_for`] found: the probes, and the configured ones it could not resolve.
#[derive(Debug, Default)]
pub struct ProbeList {
    pub probes: Vec<ProbeSpec>,
    /// One line per probe left out ("probe `db`: secret `DATABASE_URL` has no value").
    pub problems: Vec<String>,
}

/// A configured probe with its settings resolved by `resolve` (variables and secrets).
pub fn spec_from_config<E: std::fmt::Display>(
    config: &Config,
    probe: &ProbeConfig,
    resolve: &dyn Fn(&Setting) -> Result<String, E>,
) -> Result<ProbeSpec, ProbeError> {
    let name = &probe.name.value;
    let unresolved = |message: String| ProbeError::Unresolved { probe: name.clone(), message };
    let text = |setting: &Setting| resolve(setting).map_err(|err| unresolved(err.to_string()));
    let ca_file = probe.ca_file.as_ref().map(|file| windlass_config::config_dir(config.source.path()).join(file));
    let headers: Vec<(String, String)> = probe.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let target = match (&probe.target, probe.kind) {
        (ProbeTarget::Url(url), ProbeType::Http) => Target::Http(HttpTarget {
            url: text(url)?,
            method: probe.method.clone(),
            headers,
            expect: probe.expect.clone(),
            ca_file,
        }),
        (ProbeTarget::Url(url), ProbeType::Metrics) => {
            Target::Metrics(MetricsTarget { url: text(url)?, headers, ca_file, rules: probe.rules.clone() })
        }
        (ProbeTarget::Url(url), ProbeType::Postgres) => Target::Postgres { url: SecretText::new(text(url)?) },
        (ProbeTarget::Url(url), ProbeType::Redis) => Target::Redis { url: SecretText::new(text(url)?) },
        (ProbeTarget::Address(address), _) => Target::Tcp { address: text(&Setting::Text(address.clone()))? },
        // Never rendered into the command: each variable it references goes into its
        // environment, resolved like any setting, and `sh` expands it.
        (ProbeTarget::Command(command), _) => Target::Command {
            command: command.script().to_owned(),
            env: command
                .env_from(|name| resolve(&Setting::Text(Template::variable(name))).map_err(|err| err.to_string()))
                .map_err(unresolved)?
                .into_iter()
                .map(|(name, value)| (name, SecretText::new(value)))
                .collect(),
        },
        (ProbeTarget::Url(_), kind) => return Err(unresolved(format!("type \"{}\" has no URL", kind.as_str()))),
    };
    Ok(ProbeSpec {
        name: name.clone(),
        target,
        interval: probe.interval.as_std(),
        timeout: probe.timeout.as_std(),
        failure_threshold: probe.failure_threshold,
        success_threshold: probe.success_threshold,
        service: probe.service.as_ref().map(|s| s.value.clone()),
        environment: probe.environment.as_ref().map(|e| e.value.clone()),
        severity: probe.severity,
    })
}

/// The probes `environment` runs:
///
/// - every `[probes.<probe>]` whose `environment` is this one or unset, its settings resolved by
///   `resolve`;
/// - for each service with a `health` table (as this environment runs it) and no configured
///   `http` probe naming it as its `service`: an HTTP probe of the health path, against each
///   instance address in `instances` (named `health/<service>/<address>`), or, when none are
///   given, through the edge for each route with an exact host and path `/` (named
///   `health/<service>/<host>`). These take the health check's timeout, `unhealthy_after` as the
///   failure threshold and `healthy_after` as the success threshold, the probe interval (30 s)
///   and severity `critical`.
pub fn probes_for<E: std::fmt::Display>(
    config: &Config,
    environment: &str,
    instances: &BTreeMap<String, Vec<SocketAddr>>,
    resolve: &dyn Fn(&Setting) -> Result<String, E>,
) -> ProbeList {
    let mut list = ProbeList::default();
    for probe in config.probes.values() {
        if probe.environment.as_ref().is_some_and(|e| e.value != environment) {
            continue;
        }
        match spec_from_config(config, probe, resolve) {
            Ok(spec) => list.probes.push(spec),
            Err(problem) => list.problems.push(problem.to_string()),
        }
    }
    let edge_port = config.edge.listen.parse::<SocketAddr>().map_or(8080, |a| a.port());
    for name in config.services.keys() {
        let Some(service) = config.service_in(environment, name) else { continue };
        let Some(health) = &service.health else { continue };
        let covered = config.probes.values().any(|p| {
            p.kind == ProbeType::Http
                && p.service.as_ref().is_some_and(|s| s.value == *name)
                && p.environment.as_ref().is_none_or(|e| e.value == environment)
        });
        if covered {
            continue;
        }
        let mut targets: Vec<(String, String)> = instances
            .get(name)
            .into_iter()
            .flatten()
            .map(|address| (format!("health/{name}/{address}"), format!("http://{address}{}", health.path)))
            .collect();
        if targets.is_empty() {
            targets = service
                .routes
                .iter()
                .filter(|r| r.path == "/")
                .filter_map(|r| r.host.as_ref().filter(|h| !h.starts_with("*.")))
                .map(|host| (format!("health/{name}/{host}"), format!("http://{host}:{edge_port}{}", health.path)))
                .collect();
        }
        for (probe_name, url) in targets {
            let mut spec = ProbeSpec::http(probe_name, url);
            spec.timeout = health.timeout.as_std().min(spec.interval / 2);
            spec.failure_threshold = health.unhealthy_after;
            spec.success_threshold = health.healthy_after;
            spec.service = Some(name.clone());
            spec.environment = Some(environment.to_owned());
            spec.severity = AlertSeverity::Critical;
            list.probes.push(spec);
        }
    }
    list
}
