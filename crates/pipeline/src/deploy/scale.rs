//! `windlass scale`: the live color of a service made to run another number of instances,
//! under the environment's lock, as a task of the supervisor.

use super::*;

/// What a scale did: its output, line by line, and the message it recorded.
#[derive(Debug, Clone)]
pub struct Scaled {
    pub lines: Vec<String>,
    pub message: String,
}

/// `windlass scale`: the live color of `service` made to run `count` instances, under the
/// environment's lock. The work runs as a task of its own (like a deploy): a caller that goes
/// away, such as an HTTP request whose client disconnected, does not stop it half-way. The task
/// renews the lock while it runs, releases it when done, and records the `scale` event; new
/// instances are recorded, or stopped if the scale fails.
pub async fn scale(
    deployer: &Arc<Deployer>,
    environment: &str,
    service: &str,
    count: usize,
    actor: &str,
    reason: Option<&str>,
) -> Result<Scaled, DeployError> {
    let deployer = deployer.clone();
    let (environment, service, actor) = (environment.to_owned(), service.to_owned(), actor.to_owned());
    let reason = reason.map(str::to_owned);
    let tasks = deployer.tasks.clone();
    tasks
        .run(async move { scale_owned(&deployer, &environment, &service, count, &actor, reason.as_deref()).await })
        .await
        .map_err(|err| DeployError::Failed(format!("the scale stopped before its end: {err}")))?
}

async fn scale_owned(
    deployer: &Arc<Deployer>,
    environment: &str,
    service: &str,
    count: usize,
    actor: &str,
    reason: Option<&str>,
) -> Result<Scaled, DeployError> {
    let config = deployer.shared_config()?;
    plan::check_environment(&config, environment)?;
    if count > 1000 {
        return Err(DeployError::Rejected(format!(
            "{count} instances is more than this machine should run (at most 1000)"
        )));
    }
    let state = EnvState::load(&*deployer.store, environment).await?;
    let (_, live) = state.live(service).ok_or_else(|| {
        DeployError::Rejected(format!("`{service}` does not run in `{environment}`; deploy it first"))
    })?;
    let id = DeployId::parse(&live.deploy_id)
        .ok_or_else(|| DeployError::Corrupt(format!("bad deploy id {}", live.deploy_id)))?;
    let variables = deployer.variables(&config, environment).await?;
    let lease = deployer.lock(environment, &format!("scale requested by {actor}")).await?;
    // From here on nothing returns early: the lease is released below, whatever happened.
    let (heartbeat, lost) = deployer.heartbeat(&lease);
    let run = Run {
        deployer: deployer.clone(),
        id,
        environment: environment.into(),
        config,
        variables,
        changes: Vec::new(),
        lock_lost: lost,
        service_waits: Default::default(),
    };
    let (log, lines) = StepLog::detached();
    if let Some(previous) = &lease.taken_over {
        log.line(format!("this scale {}", took_over(previous)));
    }
    let result = rollout::scale(&run, &log, service, count).await;
    drop(heartbeat);
    drop(log);
    if let Err(err) = deployer.store.release_lease(&lease).await {
        tracing::warn!(%err, environment, "cannot release the lock after a scale");
    }
    let done: Vec<String> = lines.take().iter().map(|line| run.variables.redact(line)).collect();
    let because = reason.map(|r| format!(": {r}")).unwrap_or_default();
    // A failed scale is audited too: it started (and stopped) instances.
    let (kind, message) = match &result {
        Ok(()) => ("scale", format!("{service} scaled to {count}{because}")),
        Err(problem) => (
            "scale.failed",
            format!("{service} not scaled to {count}{because}: {}", run.variables.redact(&problem.to_string())),
        ),
    };
    let event = NewEvent {
        actor: actor.into(),
        environment: Some(environment.into()),
        kind: kind.into(),
        subject: Some(service.into()),
        message: message.clone(),
        data: "{}".into(),
    };
    if let Err(err) = deployer.store.record_event(&event).await {
        tracing::warn!(%err, "cannot record an audit event");
    }
    result.map_err(|e| DeployError::Failed(run.variables.redact(&e.to_string())))?;
    Ok(Scaled { lines: done, message })
}
