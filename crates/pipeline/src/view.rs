//! The pipeline's records and state as the server's API shows them ([`windlass_api`] types):
//! deploy records and steps (with commands passed through the environment's redactor), plans,
//! approval requests, the whole status view and a service's secondary drift.
//!
//! Read-only: nothing here changes state or reaches the edge other than to read it. The server's
//! handlers call these and answer; the views are tested in process here.

use std::collections::BTreeMap;

use serde_json::Value;
use windlass_api::deploys as wire;
use windlass_api::status::{
    EnvironmentStatus, InstanceStatus, ManagedSecondary, PoolStatus, SecondaryDrift, ServiceStatus, StaticSecondary,
    Status,
};
use windlass_store::{Deploy, StepRecord};

use crate::deploy::{Deployer, lock_name};
use crate::state::{ColorState, EnvState, ServiceState};
use crate::vars::Variables;
use crate::{DeployError, Plan};

/// An environment's variables, to redact what the API shows; none when its secrets cannot be
/// read.
pub async fn shown_variables(deployer: &Deployer, environment: &str) -> Option<Variables> {
    let config = deployer.shared_config().ok()?;
    let stored = deployer.stored_secrets(&config, environment).await.ok()?;
    Some(Variables::resolve(&config, environment, deployer.env_file.as_deref(), stored.as_ref()).0)
}

/// A deploy record's artifacts as the API shows them: `run` holds no secret (validate and the
/// deploy refuse one), and a command recorded before that rule passes the environment's
/// redactor, or is left out when the secrets cannot be read.
fn shown_artifacts(value: &mut Value, variables: Option<&Variables>) {
    match value {
        Value::Object(map) => {
            if variables.is_none() {
                map.remove("command");
                map.remove("args");
            }
            map.values_mut().for_each(|v| shown_artifacts(v, variables));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shown_artifacts(v, variables)),
        Value::String(text) => {
            if let Some(variables) = variables {
                *text = variables.redact(text);
            }
        }
        _ => {}
    }
}

/// A deploy record as the API shows it.
pub fn deploy(deploy: &Deploy, variables: Option<&Variables>) -> wire::Deploy {
    let mut artifacts = serde_json::from_str::<Value>(&deploy.artifacts).unwrap_or(Value::Null);
    shown_artifacts(&mut artifacts, variables);
    wire::Deploy {
        id: deploy.id.as_str().to_owned(),
        environment: deploy.environment.clone(),
        status: deploy.status.as_str().to_owned(),
        actor: deploy.actor.clone(),
        reason: deploy.reason.clone(),
        started_at: deploy.started_at.to_string(),
        finished_at: deploy.finished_at.map(|t| t.to_string()),
        current_step: deploy.current_step.clone(),
        error: deploy.error.clone(),
        artifacts,
    }
}

/// A deploy's step as the API shows it.
pub fn step(step: &StepRecord) -> wire::Step {
    wire::Step {
        seq: step.seq,
        phase: step.phase.clone(),
        name: step.name.clone(),
        status: step.status.as_str().to_owned(),
        started_at: step.started_at.to_string(),
        finished_at: step.finished_at.map(|t| t.to_string()),
        output: step.output.clone(),
        error: step.error.clone(),
    }
}

/// A plan as the API shows it.
pub fn plan(plan: &Plan) -> wire::Plan {
    use crate::plan::StepPlan;
    let phases = plan
        .phases
        .iter()
        .map(|phase| wire::PhasePlan {
            name: phase.name.clone(),
            skipped: phase.skipped.clone(),
            steps: phase
                .steps
                .iter()
                .map(|step| match step {
                    StepPlan::Validate => wire::StepPlan::Validate,
                    StepPlan::Rollout { service, strategy, instances } => wire::StepPlan::Rollout {
                        service: service.clone(),
                        strategy: strategy.clone(),
                        instances: *instances,
                    },
                    StepPlan::Command { name, index } => {
                        wire::StepPlan::Command { name: name.clone(), index: *index as u64 }
                    }
                    StepPlan::Smoke { name, index } => {
                        wire::StepPlan::Smoke { name: name.clone(), index: *index as u64 }
                    }
                    StepPlan::Migrate { backup } => wire::StepPlan::Migrate { backup: *backup },
                })
                .collect(),
        })
        .collect();
    wire::Plan { environment: plan.environment.clone(), phases }
}

/// A request's deploy options as the pipeline takes them.
pub fn options(request: wire::DeployRequest) -> crate::DeployOptions {
    crate::DeployOptions {
        skip: request.skip,
        only: request.only,
        dry_run: request.dry_run,
        reason: request.reason,
        override_window: request.override_window,
        approve: request.approve,
        versions: request.versions,
    }
}

/// Deploy options as the API shows them (in approval requests).
pub fn options_shown(options: &crate::DeployOptions) -> wire::DeployRequest {
    wire::DeployRequest {
        skip: options.skip.clone(),
        only: options.only.clone(),
        dry_run: options.dry_run,
        reason: options.reason.clone(),
        override_window: options.override_window,
        approve: options.approve,
        versions: options.versions.clone(),
    }
}

/// A service's secondary pool and whether failing over would serve the live build. A managed
/// secondary (`failover.instances`) is deployed with the primary, so it drifts only when its
/// update failed; a static one (addresses the config names) is never updated by Windlass, and
/// failing over serves whatever code it runs. Said loudly rather than discovered during an
/// outage. None when the service has no failover.
pub fn secondary_drift(
    config: &windlass_config::Config,
    environment: &str,
    service: &str,
    service_state: Option<&ServiceState>,
) -> Option<SecondaryDrift> {
    let failover = config.service_in(environment, service)?.failover?;
    let live = service_state.and_then(|s| s.live.as_ref().and_then(|color| s.colors.get(color)));
    let live_build = live.map(|c| c.artifact.short_hash().to_owned());
    if failover.managed.is_some() {
        let secondary = service_state.and_then(|s| s.secondary.as_ref());
        let in_step = matches!((secondary, live), (Some(s), Some(l)) if s.artifact.sha256 == l.artifact.sha256);
        let warning = match (secondary, live) {
            (None, Some(_)) => Some(
                "the secondary runs no instance: failing over would serve nothing until the next deploy starts it"
                    .to_owned(),
            ),
            (Some(s), Some(l)) if !in_step => Some(format!(
                "the secondary runs build {} but the primary runs build {}: failing over serves other code until the next deploy",
                s.artifact.short_hash(),
                l.artifact.short_hash()
            )),
            _ => None,
        };
        return Some(SecondaryDrift::Managed(ManagedSecondary {
            deployed_by_windlass: true,
            build: secondary.map(|s| s.artifact.short_hash().to_owned()),
            deploy: secondary.map(|s| s.deploy_id.clone()),
            in_step,
            warning,
        }));
    }
    let live_build = live_build.as_deref();
    let addresses: Vec<String> = failover.secondary.iter().map(|a| a.value.clone()).collect();
    let warning = format!(
        "the secondary ({}) is not deployed by Windlass: deploys do not update it, and failing over serves the code it runs{}",
        addresses.join(", "),
        live_build.map(|b| format!(", not build {b}")).unwrap_or_default()
    );
    Some(SecondaryDrift::Static(StaticSecondary { addresses, deployed_by_windlass: false, warning }))
}

/// Every environment of the config: its services (each pool's build and instances, with the
/// runtime's and the edge's view of each instance), its deploy lock and its last deploy.
pub async fn status(deployer: &Deployer) -> Result<Status, DeployError> {
    let config = deployer.shared_config()?;
    let store = &*deployer.store;
    let edge = deployer.edge.state().await.ok();
    let mut environments = BTreeMap::new();
    for environment in config.environments.keys() {
        let env_state = EnvState::load(store, environment).await?;
        // `run` holds no secret (validate and the deploy refuse one), but a command recorded
        // before that rule is shown through the environment's redactor, or not at all when the
        // secrets cannot be read.
        let redactor = shown_variables(deployer, environment).await;
        let mut services = BTreeMap::new();
        for (service, service_state) in &env_state.services {
            let mut colors = BTreeMap::new();
            // A managed secondary is shown like a color: its pool at the edge is `secondary`.
            let secondary = service_state.secondary.iter().map(|s| ("secondary".to_owned(), s));
            let pools: Vec<(String, &ColorState)> =
                service_state.colors.iter().map(|(c, s)| (c.clone(), s)).chain(secondary).collect();
            for (color, recorded) in pools {
                let mut instances = Vec::new();
                for instance in &recorded.instances {
                    let found = deployer.runtime.get(&instance.id).await.ok().flatten();
                    let healthy = edge.as_ref().and_then(|e| {
                        e.services
                            .get(service)?
                            .pools
                            .get(&color)?
                            .instances
                            .iter()
                            .find(|i| i.address == instance.address)
                            .map(|i| i.healthy)
                    });
                    instances.push(InstanceStatus {
                        id: instance.id.clone(),
                        address: instance.address.to_string(),
                        state: found.as_ref().and_then(|f| {
                            serde_json::to_value(f.state).ok().and_then(|v| v.as_str().map(str::to_owned))
                        }),
                        restarts: found.as_ref().map(|f| f.restarts),
                        healthy,
                    });
                }
                let pool = PoolStatus {
                    deploy: recorded.deploy_id.clone(),
                    build: recorded.artifact.short_hash().to_owned(),
                    version: recorded.artifact.version.clone(),
                    command: redactor.as_ref().map(|v| v.redact(&recorded.artifact.command)),
                    retire_at: recorded
                        .retire_at_ms
                        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                        .map(|t| t.to_string()),
                    instances,
                };
                colors.insert(color, pool);
            }
            let edge_service = edge.as_ref().and_then(|e| e.services.get(service));
            services.insert(
                service.clone(),
                ServiceStatus {
                    live: service_state.live.clone(),
                    maintenance: edge_service.map(|s| s.maintenance),
                    failed_over: edge_service.map(|s| s.failed_over),
                    colors,
                    secondary: secondary_drift(&config, environment, service, Some(service_state)),
                },
            );
        }
        let lock = store.lease(&lock_name(environment)).await.ok().flatten();
        let last = store.deploys(environment, 1).await.ok().and_then(|d| d.into_iter().next());
        environments.insert(
            environment.clone(),
            EnvironmentStatus {
                services,
                lock: lock.map(|l| windlass_api::locks::LockSummary {
                    holder: l.holder.to_string(),
                    purpose: l.purpose,
                    since: l.acquired_at.to_string(),
                    stale: l.stale,
                }),
                last_deploy: last.as_ref().map(|d| self::deploy(d, redactor.as_ref())),
            },
        );
    }
    Ok(Status { edge_reachable: edge.is_some(), environments })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(failover: &str) -> windlass_config::Config {
        let text = format!(
            "[project]\nname = \"shop\"\n\n[environments.production]\n\n[pipeline]\nphases = [\"backend\"]\n\n\
             [services.api]\nphase = \"backend\"\nrun = \"./api\"\nroute = {{ host = \"api.localhost\" }}\n\
             health = {{ path = \"/health\" }}\nfailover = {failover}\n"
        );
        let parsed = windlass_config::parse(&windlass_config::Source::new("windlass.toml", text));
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>());
        parsed.config
    }

    fn pool(sha256: &str, deploy: &str) -> ColorState {
        ColorState {
            deploy_id: deploy.into(),
            config_deploy: deploy.into(),
            artifact: crate::artifacts::Artifact {
                command: "./api".into(),
                source: "api".into(),
                sha256: sha256.into(),
                program: "api".into(),
                args: Vec::new(),
                workdir: None,
                tree_sha256: None,
                version: None,
            },
            instances: Vec::new(),
            retire_at_ms: None,
        }
    }

    fn serving(secondary: Option<ColorState>) -> ServiceState {
        let live = pool("aaaaaaaaaaaaaaaa", "d2");
        ServiceState { live: Some("blue".into()), colors: [("blue".to_owned(), live)].into(), secondary }
    }

    #[test]
    fn a_static_secondary_always_warns_that_deploys_do_not_reach_it() {
        let config = config(r#"{ secondary = ["127.0.0.2:8000"] }"#);
        let drift = secondary_drift(&config, "production", "api", Some(&serving(None))).expect("a failover");
        let SecondaryDrift::Static(fixed) = &drift else { panic!("{drift:?}") };
        assert_eq!(fixed.addresses, ["127.0.0.2:8000"]);
        assert!(fixed.warning.ends_with(", not build aaaaaaaaaaaa"), "{}", fixed.warning);
        let wire = serde_json::to_value(&drift).unwrap();
        assert_eq!(wire["deployed_by_windlass"], false);
    }

    #[test]
    fn a_managed_secondary_warns_only_when_it_is_behind_or_missing() {
        let config = config("{ instances = 1 }");
        let in_step =
            secondary_drift(&config, "production", "api", Some(&serving(Some(pool("aaaaaaaaaaaaaaaa", "d2")))));
        let Some(SecondaryDrift::Managed(managed)) = in_step else { panic!("{in_step:?}") };
        assert!(managed.in_step && managed.warning.is_none(), "{managed:?}");
        assert_eq!(managed.deploy.as_deref(), Some("d2"));

        let behind =
            secondary_drift(&config, "production", "api", Some(&serving(Some(pool("bbbbbbbbbbbbbbbb", "d1")))));
        let Some(SecondaryDrift::Managed(managed)) = behind else { panic!("{behind:?}") };
        assert!(!managed.in_step);
        assert!(managed.warning.as_deref().is_some_and(|w| w.contains("runs build bbbbbbbbbbbb")), "{managed:?}");

        let missing = secondary_drift(&config, "production", "api", Some(&serving(None)));
        let Some(SecondaryDrift::Managed(managed)) = missing else { panic!("{missing:?}") };
        assert!(managed.warning.as_deref().is_some_and(|w| w.contains("runs no instance")), "{managed:?}");
    }

    #[test]
    fn a_service_without_failover_has_no_secondary() {
        let text = "[project]\nname = \"shop\"\n\n[environments.production]\n\n[pipeline]\nphases = [\"backend\"]\n\n\
                    [services.api]\nphase = \"backend\"\nrun = \"./api\"\n";
        let parsed = windlass_config::parse(&windlass_config::Source::new("windlass.toml", text));
        assert_eq!(secondary_drift(&parsed.config, "production", "api", None), None);
    }
}
