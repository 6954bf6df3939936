//! `windlass rollback <env> [<deploy-id>]`: back to what an earlier deploy ran. A service whose
//! earlier color is still warm is switched back at the edge (one call, well under a second);
//! any other is redeployed from the artifacts and config recorded with that deploy. A rollback
//! is itself a recorded deploy.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use windlass_config::{Approval, Source, Step};
use windlass_store::{Deploy, DeployId, DeployStatus, NewDeploy, StepStatus, StoreError};

use crate::DeployError;
use crate::deploy::{Deployer, Kind, Prepared, Recorded, Run, RunError, parse_config};
use crate::plan::DeployOptions;
use crate::rollout::{self, Change, alive_count};
use crate::state::EnvState;

/// The deploy a rollback returns to: the one named, or the last successful one before the
/// newest successful one.
pub async fn target(deployer: &Deployer, environment: &str, named: Option<&str>) -> Result<Deploy, DeployError> {
    if let Some(named) = named {
        let id = DeployId::parse(named).ok_or_else(|| DeployError::UnknownDeploy(named.into()))?;
        let deploy = deployer.store.deploy(&id).await?.ok_or_else(|| DeployError::UnknownDeploy(named.into()))?;
        if deploy.environment != environment {
            return Err(DeployError::Rejected(format!(
                "deploy {named} is of environment `{}`, not `{environment}`",
                deploy.environment
            )));
        }
        if deploy.status != DeployStatus::Succeeded {
            return Err(DeployError::Rejected(format!(
                "deploy {named} did not succeed ({}); only a successful deploy can be returned to",
                deploy.status
            )));
        }
        return Ok(deploy);
    }
    let succeeded: Vec<Deploy> = deployer
        .store
        .deploys(environment, 500)
        .await?
        .into_iter()
        .filter(|d| d.status == DeployStatus::Succeeded)
        .collect();
    succeeded.into_iter().nth(1).ok_or_else(|| {
        DeployError::Rejected(format!("`{environment}` has no earlier successful deploy to roll back to"))
    })
}

/// How a rollback's recorded reason starts (the record has no kind of its own).
const ROLLBACK_REASON: &str = "rollback to ";

/// Whether a recorded deploy is a rollback.
pub fn is_rollback(deploy: &Deploy) -> bool {
    deploy.reason.as_deref().is_some_and(|r| r.starts_with(ROLLBACK_REASON))
}

/// What a deploy recorded, with "this deploy" spelled out as its id.
pub fn recorded(deploy: &Deploy) -> Result<Recorded, DeployError> {
    let mut recorded: Recorded = serde_json::from_str(&deploy.artifacts).map_err(|err| {
        DeployError::Corrupt(format!("the artifacts recorded with {} are unreadable: {err}", deploy.id))
    })?;
    for service in recorded.services.values_mut() {
        service.deploy.get_or_insert_with(|| deploy.id.to_string());
        service.config_deploy.get_or_insert_with(|| deploy.id.to_string());
    }
    Ok(recorded)
}

/// Why a rollback runs, which decides the rules it passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Asked for by someone: the environment's deploy window and approval policy apply.
    #[default]
    Planned,
    /// `--emergency --reason`: an operator skips approval and deploy windows; it needs a
    /// reason, is audited as `rollback.emergency` and announced to the deploy receivers.
    Emergency,
    /// The automatic rollback policy (`[pipeline] auto_rollback`) returning from a deploy that
    /// broke: it runs at once (the deploy it leaves was itself let through), and is audited by
    /// [`crate::guard`].
    Automatic,
}

/// A rollback as asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub environment: String,
    /// The person or robot asking (the requester, for an approved rollback).
    pub actor: String,
    /// The deploy to return to; none: the last successful one before the newest successful one.
    pub to: Option<String>,
    pub reason: Option<String>,
    /// Also restore the database backup taken before the first migration after the target.
    pub restore_database: bool,
    /// Roll back outside the environment's deploy window (needs a reason).
    pub override_window: bool,
    pub mode: Mode,
    /// Who approved it (see [`crate::deploy::StartRequest::approved_by`]).
    pub approved_by: Option<String>,
}

impl RollbackRequest {
    fn options(&self) -> DeployOptions {
        DeployOptions { reason: self.reason.clone(), override_window: self.override_window, ..Default::default() }
    }
}

/// What a rollback was checked to do before anything changes.
#[derive(Debug, Clone)]
pub struct Checked {
    pub target: Deploy,
    /// The environment's approval policy.
    pub policy: Approval,
    /// Whether the rollback must be approved first: the policy asks for approvals and the
    /// target's config and builds never passed approval in the environment.
    pub needs_approval: bool,
    /// The recorded override of a closed deploy window, if one was used.
    pub overridden: Option<String>,
}

/// The words of a refused emergency rollback without a reason.
pub const EMERGENCY_NEEDS_REASON: &str = "--emergency needs --reason \"why\": an emergency rollback skips approval and deploy windows, and its reason is recorded and announced";

/// Everything a rollback checks before it changes anything: the environment, the target, the
/// reason of an emergency, the deploy window (planned rollbacks) and whether approval is needed.
pub async fn check(deployer: &Deployer, request: &RollbackRequest) -> Result<Checked, DeployError> {
    let current = deployer.shared_config()?;
    crate::plan::check_environment(&current, &request.environment)?;
    if request.mode == Mode::Emergency && request.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(DeployError::Rejected(EMERGENCY_NEEDS_REASON.into()));
    }
    let target = target(deployer, &request.environment, request.to.as_deref()).await?;
    let policy = current.environments.get(&request.environment).map(|e| e.approval).unwrap_or_default();
    if request.mode != Mode::Planned {
        return Ok(Checked { target, policy, needs_approval: false, overridden: None });
    }
    let overridden =
        crate::plan::check_window(&current, &request.environment, &request.options(), deployer.clock.now())
            .map_err(|err| DeployError::Rejected(err.to_string()))?;
    let needs_approval = policy != Approval::None && passed_approval(deployer, &target).await?.is_none();
    Ok(Checked { target, policy, needs_approval, overridden })
}

/// The deploy of `target`'s environment, among its 500 newest, that ran approved with exactly
/// the config and builds `target` ran (`target` itself, or another: a rollback that was
/// approved, an approved deploy of the same builds): what it means for a rollback target to
/// have passed approval. None: the target's config and builds never passed approval there.
///
/// Only the deploy records decide: a deploy records who approved it when it starts approved
/// (after `windlass approve`, or `--approve` where the policy is `anyone`); a deploy made while
/// the environment needed no approval, an emergency or automatic rollback record no approval.
pub async fn passed_approval(deployer: &Deployer, target: &Deploy) -> Result<Option<DeployId>, DeployError> {
    let wanted = recorded(target)?;
    let builds = |r: &Recorded| -> BTreeMap<String, String> {
        r.services.iter().map(|(service, s)| (service.clone(), s.artifact.sha256.clone())).collect()
    };
    let wanted_builds = builds(&wanted);
    for deploy in deployer.store.deploys(&target.environment, 500).await? {
        if deploy.config_snapshot != target.config_snapshot {
            continue;
        }
        // A record that cannot be read is no proof of anything.
        let Ok(record) = recorded(&deploy) else { continue };
        if record.approved_by.is_some() && builds(&record) == wanted_builds {
            return Ok(Some(deploy.id));
        }
    }
    Ok(None)
}

/// Checks and records a rollback, holding the environment's lock. A planned rollback that
/// needs approval and carries none is refused: the caller asks for approval first.
pub async fn start(deployer: &Deployer, request: &RollbackRequest) -> Result<Prepared, DeployError> {
    let Checked { target, needs_approval, overridden, .. } = check(deployer, request).await?;
    let environment = request.environment.as_str();
    let actor = request.actor.as_str();
    if needs_approval && request.approved_by.is_none() {
        return Err(DeployError::Forbidden(format!(
            "`{environment}` needs approval for a rollback to {}: its builds never passed approval there",
            target.id
        )));
    }
    let mut services = recorded(&target)?;
    // The target's own approval is not this rollback's.
    services.approved_by = request.approved_by.clone();
    let config = parse_config(&Source::new(deployer.config_path.clone(), target.config_snapshot.clone()))?;
    let variables = deployer.variables(&config, environment).await?;
    let lease = deployer.lock(environment, &format!("rollback requested by {actor}")).await?;
    let mut why = format!("{ROLLBACK_REASON}{}", target.id);
    if request.mode == Mode::Emergency {
        why.push_str(" [emergency]");
    }
    if overridden.is_some() {
        why.push_str(" [deploy window overridden]");
    }
    if let Some(reason) = &request.reason {
        why.push_str(&format!(": {reason}"));
    }
    let record = NewDeploy {
        environment: environment.into(),
        actor: actor.into(),
        reason: Some(why.clone()),
        config_snapshot: target.config_snapshot.clone(),
        artifacts: serde_json::to_string(&services).unwrap_or_default(),
        owner: deployer.holder.id.clone(),
    };
    let id = deployer.record_started(&lease, &record, overridden.as_deref(), |_| why.clone()).await?;
    if request.mode == Mode::Emergency {
        emergency_announced(deployer, request, &target, &id).await;
    }
    Ok(Prepared {
        id,
        environment: environment.into(),
        actor: actor.into(),
        kind: Kind::Rollback { target: Box::new(target), restore_database: request.restore_database },
        lease,
        config: Arc::new(config),
        variables,
        artifacts: BTreeMap::new(),
    })
}

/// An emergency rollback is audited (`rollback.emergency`, with its reason) and announced to the
/// receivers of the config as it is now (`[pipeline] notify`): the people to tell today, even
/// if the target's config named others.
async fn emergency_announced(deployer: &Deployer, request: &RollbackRequest, target: &Deploy, id: &DeployId) {
    let reason = request.reason.clone().unwrap_or_default();
    let message = format!(
        "emergency rollback of `{}` to {} by {} (approval and deploy windows skipped): {reason}",
        request.environment, target.id, request.actor
    );
    let data = serde_json::json!({
        "emergency": true,
        "reason": reason,
        "target": target.id.to_string(),
        "restore_database": request.restore_database,
    });
    deployer.audit_with(&request.actor, &request.environment, "rollback.emergency", id, &message, data).await;
    let config = match deployer.shared_config() {
        Ok(config) => config,
        Err(err) => {
            tracing::warn!(%err, "the emergency rollback cannot be announced: the config cannot be read");
            return;
        }
    };
    let variables = match deployer.variables(&config, &request.environment).await {
        Ok(variables) => variables,
        Err(err) => {
            tracing::warn!(%err, "the emergency rollback cannot be announced: the variables cannot be resolved");
            return;
        }
    };
    let notice = crate::notifications::message(
        &config,
        "rollback.emergency",
        &request.environment,
        Some(id.as_str()),
        &format!("emergency rollback to {} by {}", target.id, request.actor),
        message,
        vec![
            ("actor".to_owned(), request.actor.clone()),
            ("reason".to_owned(), reason),
            ("target".to_owned(), target.id.to_string()),
            ("deploy".to_owned(), id.to_string()),
        ],
    );
    crate::notifications::notify(deployer, &config, &variables, notice);
}

/// The name of the rollback step that runs the undo of step `title` of `deploy`.
fn undo_step_name(title: &str, deploy: &DeployId) -> String {
    format!("undo: {title} (from {deploy})")
}

/// The custom steps with an `undo` command that completed in the successful deploys after
/// `target`, newest first: what a rollback to `target` undoes before it moves any traffic.
/// A step an earlier rollback already undid is not undone twice.
async fn steps_to_undo(run: &Run, target: &Deploy) -> Result<Vec<(DeployId, String, Step)>, StoreError> {
    let store = &*run.deployer.store;
    let after: Vec<Deploy> = store
        .deploys(&run.environment, 500)
        .await?
        .into_iter()
        .take_while(|d| d.id != target.id)
        .filter(|d| d.id != run.id)
        .collect();
    let mut undone = std::collections::BTreeSet::new();
    for deploy in &after {
        for step in store.steps(&deploy.id).await? {
            if step.phase == "rollback" && step.status == StepStatus::Succeeded && step.name.starts_with("undo: ") {
                undone.insert(step.name);
            }
        }
    }
    let newer = after.into_iter().filter(|d| d.status == DeployStatus::Succeeded);
    let mut undo = Vec::new();
    for deploy in newer {
        let Ok(config) = parse_config(&Source::new(run.deployer.config_path.clone(), deploy.config_snapshot.clone()))
        else {
            continue;
        };
        let mut steps = store.steps(&deploy.id).await?;
        steps.sort_by_key(|s| std::cmp::Reverse(s.seq));
        for record in steps.into_iter().filter(|s| s.status == StepStatus::Succeeded) {
            let Some(phase) = config.phases.get(&record.phase) else { continue };
            let found = phase.steps.iter().enumerate().find(|(index, step)| {
                let name = step.name.clone().unwrap_or_else(|| format!("{} step {}", record.phase, index + 1));
                name == record.name && step.undo.is_some()
            });
            if let Some((_, step)) = found
                && !undone.contains(&undo_step_name(&record.name, &deploy.id))
            {
                undo.push((deploy.id.clone(), record.name.clone(), step.clone()));
            }
        }
    }
    Ok(undo)
}

/// Restores the database as it was when `target` was live: the backup taken before the
/// migrations of the first deploy after it. Refused, never skipped, when there is none.
async fn restore_database(run: &Run, target: &Deploy) -> Result<(), RunError> {
    let database = crate::database::Target::resolve(
        &run.config,
        &run.deployer.config_path,
        &run.environment,
        &run.variables,
        windlass_db::Options::default(),
    )?
    .ok_or_else(|| RunError::Failed("--restore-database: the config has no [database]".into()))?;
    let mut after: Vec<Deploy> = run
        .deployer
        .store
        .deploys(&run.environment, 500)
        .await?
        .into_iter()
        .take_while(|d| d.id != target.id)
        .collect();
    after.reverse();
    let mut backup = None;
    for deploy in &after {
        if let Some(found) = database.store.before_deploy(deploy.id.as_str())? {
            backup = Some(found);
            break;
        }
    }
    let backup = backup.ok_or_else(|| {
        RunError::Failed(format!(
            "--restore-database: no backup was taken before the migrations of any deploy after {}; nothing is restored",
            target.id
        ))
    })?;
    let step = run.begin("rollback", &format!("restore the database from backup {}", backup.name)).await?;
    let log = &step.log;
    let mut stop = crate::database::FullWriteStop {
        edge: crate::database::EdgeMaintenance::new(run.deployer.edge.clone(), run.routed_services()),
        database: database.database_write_stop(),
    };
    log.line(format!("writes stopped (maintenance mode) while {} is restored", backup.name));
    let result = database
        .database
        .restore(&database.store, &backup.name, &mut stop)
        .await
        .map(|report| {
            log.line(format!(
                "restored {}; the state just before the restore is kept as backup {}",
                report.restored.name, report.pre_restore.name
            ));
        })
        .map_err(|err| run.variables.redact(&err.to_string()));
    run.end(step, result).await
}

pub(crate) async fn run(run: &mut Run, target: &Deploy, with_database: bool) -> Result<(), RunError> {
    let services = recorded(target)?;
    if with_database {
        restore_database(run, target).await?;
    }
    let mut failed_undo = Vec::new();
    for (deploy, title, step) in steps_to_undo(run, target).await? {
        let open = run.begin("rollback", &undo_step_name(&title, &deploy)).await?;
        let result = run.undo_command(&step, &open.log).await;
        if run.end(open, result).await.is_err() {
            failed_undo.push(title);
        }
    }
    let mut cold = Vec::new();
    // Warm switches first: they are instant, and most of a rollback's value is speed.
    for (service, wanted) in &services.services {
        let want_deploy = wanted.deploy.clone().unwrap_or_default();
        let state = EnvState::load(&*run.deployer.store, &run.environment).await?;
        let Some(service_state) = state.services.get(service) else {
            cold.push((service.clone(), wanted.clone()));
            continue;
        };
        let matching = service_state
            .colors
            .iter()
            .find(|(_, c)| c.deploy_id == want_deploy && c.artifact.sha256 == wanted.artifact.sha256)
            .map(|(color, c)| (color.clone(), c.clone()));
        let Some((color, recorded)) = matching else {
            cold.push((service.clone(), wanted.clone()));
            continue;
        };
        if service_state.live.as_deref() == Some(color.as_str()) {
            run.skipped("rollback", &format!("{service}: already on {want_deploy}"), "nothing to do").await?;
            continue;
        }
        let alive = alive_count(&run.deployer, &recorded.instances).await;
        if recorded.instances.is_empty() || alive < recorded.instances.len() {
            cold.push((service.clone(), wanted.clone()));
            continue;
        }
        let from = service_state.live.clone();
        let keep_warm =
            run.config.service_in(&run.environment, service).map(|s| s.keep_warm.as_std()).unwrap_or_default();
        let title = format!("switch {service} back to {color} ({want_deploy})");
        let step = run.begin("rollback", &title).await?;
        let log = &step.log;
        let switched: Result<(), rollout::RolloutError> = async {
            run.deployer.edge.set_weights(service, &BTreeMap::from([(color.clone(), 100)])).await?;
            run.changes.push(Change::Switched { service: service.clone(), from: from.clone(), to: color.clone() });
            let store = &*run.deployer.store;
            let mut state = EnvState::load(store, &run.environment).await?;
            if let Some(service_state) = state.services.get_mut(service) {
                service_state.live = Some(color.clone());
                if let Some(now_live) = service_state.colors.get_mut(&color) {
                    now_live.retire_at_ms = None;
                }
                if let Some(previous) = from.as_ref().and_then(|f| service_state.colors.get_mut(f)) {
                    let warm = i64::try_from(keep_warm.as_millis()).unwrap_or(i64::MAX);
                    previous.retire_at_ms = Some(run.deployer.clock.now().as_millisecond().saturating_add(warm));
                }
            }
            state.save(store, &run.environment).await?;
            log.line(format!("{service}: traffic is on {color} again"));
            Ok(())
        }
        .await;
        run.end(step, switched).await?;
        let managed = run.config.service_in(&run.environment, service).and_then(|s| s.failover).and_then(|f| f.managed);
        if managed.is_some() {
            let step = run.begin("rollback", &format!("bring {service}'s secondary to {want_deploy}")).await?;
            let synced = async {
                let config = rollout::config_of(run, &recorded.config_deploy).await?;
                let spec = config.service_in(&run.environment, service).ok_or_else(|| {
                    rollout::RolloutError::Failed(format!(
                        "`{service}` is not in the config of {}",
                        recorded.config_deploy
                    ))
                })?;
                rollout::sync_secondary(run, &step.log, service, &spec, &recorded.artifact, &recorded.config_deploy)
                    .await
            }
            .await;
            run.end(step, synced).await?;
        }
    }
    for (service, wanted) in cold {
        let config_deploy = wanted.config_deploy.clone().unwrap_or_else(|| target.id.to_string());
        let title = format!("redeploy {service} as of {}", wanted.deploy.as_deref().unwrap_or_default());
        let step = run.begin("rollback", &title).await?;
        let result = rollout::roll_out(run, &step.log, &service, &wanted.artifact, &config_deploy).await;
        run.end(step, result).await?;
    }
    if !failed_undo.is_empty() {
        // The services are back where they should be: keep them there, but fail loudly.
        run.changes.clear();
        return Err(RunError::Failed(format!(
            "the services are back on {}, but undoing {} failed: see the failed steps",
            target.id,
            failed_undo.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(())
}
