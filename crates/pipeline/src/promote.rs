//! `windlass promote <from> <to>`: the target environment gets exactly the builds (by content
//! hash) that run live in the source environment and passed there, each with the config its
//! source deploy recorded (the target's own overrides in it apply). The deploy record names the
//! source deploys, and the promotion is audited in both environments.

use std::collections::BTreeMap;

use windlass_store::{DeployStatus, NewDeploy};

use crate::DeployError;
use crate::artifacts::Artifact;
use crate::deploy::{Deployer, Kind, Prepared, Run, RunError, recorded_after};
use crate::plan::{self, DeployOptions};
use crate::rollout;
use crate::state::EnvState;

/// One service to promote: what runs in the source, and which deploy put it there.
#[derive(Debug, Clone)]
pub struct Promoted {
    pub service: String,
    pub artifact: Artifact,
    /// The source deploy that rolled it out.
    pub deploy: String,
    /// The deploy whose config snapshot it runs with.
    pub config_deploy: String,
}

#[derive(Debug, Clone)]
pub struct PromoteRequest {
    pub from: String,
    pub to: String,
    /// Only these services (empty: every service live in the source).
    pub services: Vec<String>,
    pub actor: String,
    pub options: DeployOptions,
    /// Who approved the promotion (see [`crate::deploy::StartRequest::approved_by`]).
    pub approved_by: Option<String>,
}

/// What the source environment runs live, for the requested services, each checked to have
/// passed there (its deploy succeeded) and to have its frozen build on disk.
pub async fn source_services(deployer: &Deployer, request: &PromoteRequest) -> Result<Vec<Promoted>, DeployError> {
    let config = deployer.shared_config()?;
    plan::check_environment(&config, &request.from)?;
    plan::check_environment(&config, &request.to)?;
    if request.from == request.to {
        return Err(DeployError::Rejected(format!("cannot promote `{}` to itself", request.to)));
    }
    let state = EnvState::load(&*deployer.store, &request.from).await?;
    let wanted: Vec<String> = if request.services.is_empty() {
        // In the config's phase order, so services go out as a deploy would roll them.
        let order = plan::plan(&config, &request.to, &DeployOptions::default())?;
        let mut all: Vec<String> = order.services().filter(|s| state.live(s).is_some()).map(str::to_owned).collect();
        let rest: Vec<String> =
            state.services.keys().filter(|s| !all.contains(s) && state.live(s).is_some()).cloned().collect();
        all.extend(rest);
        all
    } else {
        request.services.clone()
    };
    if wanted.is_empty() {
        return Err(DeployError::Rejected(format!("nothing runs in `{}`: there is nothing to promote", request.from)));
    }
    let mut promoted = Vec::new();
    for service in wanted {
        if config.service_in(&request.to, &service).is_none() {
            return Err(DeployError::Rejected(format!("`{service}` is not a service of the config")));
        }
        let Some((_, live)) = state.live(&service) else {
            return Err(DeployError::Rejected(format!(
                "`{}` never deployed `{service}` (nothing of it runs there): deploy it to `{}` first",
                request.from, request.from
            )));
        };
        let id = windlass_store::DeployId::parse(&live.deploy_id)
            .ok_or_else(|| DeployError::Corrupt(format!("bad deploy id {}", live.deploy_id)))?;
        let source =
            deployer.store.deploy(&id).await?.ok_or_else(|| DeployError::UnknownDeploy(live.deploy_id.clone()))?;
        if source.status != DeployStatus::Succeeded {
            return Err(DeployError::Rejected(format!(
                "`{service}` in `{}` came from deploy {} which did not succeed ({}); only what passed is promoted",
                request.from, source.id, source.status
            )));
        }
        if !live.artifact.program.is_file() {
            return Err(DeployError::Rejected(format!(
                "the build of `{service}` that `{}` runs ({}) is no longer at {}",
                request.from,
                live.artifact.short_hash(),
                live.artifact.program.display()
            )));
        }
        promoted.push(Promoted {
            service,
            artifact: live.artifact.clone(),
            deploy: live.deploy_id.clone(),
            config_deploy: live.config_deploy.clone(),
        });
    }
    Ok(promoted)
}

/// Checks and records a promotion, holding the target environment's lock.
pub async fn start(deployer: &Deployer, request: &PromoteRequest) -> Result<Prepared, DeployError> {
    let services = source_services(deployer, request).await?;
    let config = deployer.shared_config()?;
    let overridden = plan::check_window(&config, &request.to, &request.options, deployer.clock.now())
        .map_err(|err| DeployError::Rejected(err.to_string()))?;
    let variables = deployer.variables(&config, &request.to).await?;
    let source =
        windlass_config::Source::read(&deployer.config_path).map_err(|e| DeployError::Config(e.to_string()))?;
    let lease = deployer.lock(&request.to, &format!("promotion requested by {}", request.actor)).await?;
    let target_state = deployer.state_under(&lease, &request.to).await?;
    let artifacts: BTreeMap<String, Artifact> =
        services.iter().map(|p| (p.service.clone(), p.artifact.clone())).collect();
    let mut recorded = recorded_after(&target_state, &artifacts);
    recorded.approved_by = request.approved_by.clone();
    for promoted in &services {
        if let Some(entry) = recorded.services.get_mut(&promoted.service) {
            entry.config_deploy = Some(promoted.config_deploy.clone());
        }
    }
    let sources: Vec<String> =
        services.iter().map(|p| format!("{} {} of {}", p.service, p.artifact.short_hash(), p.deploy)).collect();
    let mut why = format!("promote from {}: {}", request.from, sources.join(", "));
    if let Some(reason) = &request.options.reason {
        why.push_str(&format!(" ({reason})"));
    }
    if overridden.is_some() {
        why.push_str(" [deploy window overridden]");
    }
    let record = NewDeploy {
        environment: request.to.clone(),
        actor: request.actor.clone(),
        reason: Some(why.clone()),
        config_snapshot: source.text().to_owned(),
        artifacts: serde_json::to_string(&recorded).unwrap_or_default(),
        owner: deployer.holder.id.clone(),
    };
    let id = deployer.record_started(&lease, &record, overridden.as_deref(), |_| why.clone()).await?;
    deployer
        .audit(&request.actor, &request.from, "deploy.promoted", &id, &format!("promoted to {} as {id}", request.to))
        .await;
    Ok(Prepared {
        id,
        environment: request.to.clone(),
        actor: request.actor.clone(),
        kind: Kind::Promote { from: request.from.clone(), services },
        lease,
        config,
        variables,
        artifacts,
    })
}

pub(crate) async fn run(run: &mut Run, from: &str, services: &[Promoted]) -> Result<(), RunError> {
    for promoted in services {
        let title = format!(
            "promote {} (build {} from {from} deploy {})",
            promoted.service,
            promoted.artifact.short_hash(),
            promoted.deploy
        );
        let step = run.begin("promote", &title).await?;
        let result =
            rollout::roll_out(run, &step.log, &promoted.service, &promoted.artifact, &promoted.config_deploy).await;
        run.end(step, result).await?;
    }
    run.verify().await
}
