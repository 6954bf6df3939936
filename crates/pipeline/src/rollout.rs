//! Service rollouts. Each strategy starts new instances, waits for their health gate and moves
//! the service's traffic at the edge; the env state is written after each change, in an order
//! that [`crate::recover`] can finish or undo after a crash at any point:
//!
//! 1. instances started (not yet in the state: found as orphans and stopped on recovery);
//! 2. the new color recorded, out of rotation, its pool added at the edge with weight 0;
//! 3. smoke checks pinned to the new pool through the edge (`X-Windlass-Pool`);
//! 4. the switch: one weights call to the edge (atomic there);
//! 5. the state records the new live color and when the old one retires.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use windlass_config::{Config, Service, ServiceRuntime, Source, Strategy};
use windlass_edge::spec::SECONDARY_POOL;
use windlass_runtime::{InstanceSpec, InstanceState, LogPolicy, RestartPolicy, RuntimeKind};

use crate::artifacts::Artifact;
use crate::deploy::{Deployer, Run, StepLog, parse_config, route_hosts};
use crate::state::{ColorState, EnvState, InstanceRef, other_color};
use crate::{DeployError, canary, checks, vars};

/// Why a rollout (or an undo, a retirement, a scale) failed. Its text may quote what failed (an
/// instance's last output, a health check's body): it is redacted when its step ends.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Edge(#[from] crate::edge::EdgeError),
    #[error(transparent)]
    Runtime(#[from] windlass_runtime::RuntimeError),
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Render(#[from] vars::RenderError),
    #[error(transparent)]
    Command(#[from] crate::deploy::CommandError),
    #[error(transparent)]
    Health(#[from] checks::HealthError),
    /// Anything else, described.
    #[error("{0}")]
    Failed(String),
}

/// What a deploy changed, so a failure later in the deploy can undo it.
#[derive(Debug, Clone)]
pub enum Change {
    /// The service's traffic moved from `from` (none: it had none) to `to`.
    Switched { service: String, from: Option<String>, to: String },
    /// A rolling service's instances were replaced; `previous` is what ran before.
    Rolled { service: String, previous: Option<ColorState> },
    /// A custom step with an `undo` command completed.
    Step { title: String, step: Box<windlass_config::Step> },
    /// A managed secondary pool was brought to this deploy's build; `previous` is what it ran.
    Secondary { service: String, previous: Option<ColorState> },
}

impl Change {
    /// The title of the step that undoes this change.
    pub fn undo_title(&self) -> String {
        match self {
            Change::Switched { service, .. } | Change::Rolled { service, .. } => format!("roll back {service}"),
            Change::Step { title, .. } => format!("undo: {title}"),
            Change::Secondary { service, .. } => format!("roll back {service}'s secondary"),
        }
    }
}

/// The config a color runs with: this deploy's, or the snapshot recorded with an older deploy.
pub async fn config_of(run: &Run, config_deploy: &str) -> Result<Arc<Config>, RolloutError> {
    if config_deploy == run.id.as_str() {
        return Ok(run.config.clone());
    }
    let id = windlass_store::DeployId::parse(config_deploy)
        .ok_or_else(|| RolloutError::Failed(format!("bad deploy id `{config_deploy}`")))?;
    let record = run
        .deployer
        .store
        .deploy(&id)
        .await?
        .ok_or_else(|| RolloutError::Failed(format!("deploy {config_deploy} is not recorded")))?;
    let source = Source::new(run.deployer.config_path.clone(), record.config_snapshot);
    parse_config(&source)
        .map(Arc::new)
        .map_err(|e| RolloutError::Failed(format!("the config recorded with {config_deploy}: {e}")))
}

/// Rolls `service` out with its strategy: `artifact`, configured as deploy `config_deploy` says.
#[tracing::instrument(name = "rollout", skip_all, fields(service = %service, strategy = tracing::field::Empty))]
pub async fn roll_out(
    run: &mut Run,
    log: &StepLog,
    service: &str,
    artifact: &Artifact,
    config_deploy: &str,
) -> Result<(), RolloutError> {
    let config = config_of(run, config_deploy).await?;
    let spec = config
        .service_in(&run.environment, service)
        .ok_or_else(|| RolloutError::Failed(format!("service `{service}` is not in the config of {config_deploy}")))?;
    ensure_edge_service(run, &config, service).await?;
    prune_dead(run, log, service).await?;
    let version = artifact.version.as_ref().map(|v| format!(" version {v}")).unwrap_or_default();
    log.line(format!("{service}: build {}{version} from {}", artifact.short_hash(), artifact.source.display()));
    let strategy = match spec.strategy {
        Strategy::Rolling => "rolling",
        Strategy::BlueGreen => "blue-green",
        Strategy::Canary(_) => "canary",
    };
    tracing::Span::current().record("strategy", tracing::field::display(strategy));
    tracing::debug!(artifact = artifact.short_hash(), "rolling out");
    match spec.strategy {
        Strategy::Rolling => rolling(run, log, service, &spec, artifact, config_deploy).await?,
        Strategy::BlueGreen | Strategy::Canary(_) => {
            blue_green(run, log, service, &spec, artifact, config_deploy).await?
        }
    }
    // After the primary, never before: a build that fails there must not reach the standby.
    sync_secondary(run, log, service, &spec, artifact, config_deploy).await
}

/// Creates the service at the edge (routes, health checks, failover pool) if it has none yet.
/// An existing service keeps its spec: replacing it would reset weights under live traffic; only
/// its endpoints and latency thresholds (what it counts, not where traffic goes) follow the config.
async fn ensure_edge_service(run: &Run, config: &Config, service: &str) -> Result<(), RolloutError> {
    let edge = &run.deployer.edge;
    let state = edge.state().await?;
    let mut spec = windlass_edge::config::spec_from_config(config, &run.environment);
    let mut service_spec = spec
        .services
        .remove(service)
        .ok_or_else(|| RolloutError::Failed(format!("the edge has no spec for `{service}`")))?;
    if state.services.contains_key(service) {
        // Counting is no reason to stop a deploy (an edge a version older has no such call).
        let (endpoints, thresholds) = (&service_spec.endpoints, &service_spec.thresholds_ms);
        if let Err(err) = edge.set_endpoints(service, endpoints, thresholds).await
            && !(endpoints.is_empty() && thresholds.is_empty())
        {
            tracing::warn!(%err, "the edge does not count {service}'s endpoints");
        }
        return Ok(());
    }
    service_spec.pools.retain(|name, _| name == windlass_edge::spec::SECONDARY_POOL);
    edge.put_service(service, &service_spec).await.map_err(RolloutError::from)
}

/// Forgets colors none of whose instances still run (stopped with `windlass up`, or lost):
/// a service without live instances is rolled out as if for the first time.
async fn prune_dead(run: &Run, log: &StepLog, service: &str) -> Result<(), RolloutError> {
    let deployer = &run.deployer;
    let mut state = EnvState::load(&*deployer.store, &run.environment).await?;
    let Some(service_state) = state.services.get_mut(service) else { return Ok(()) };
    let mut dead = Vec::new();
    for (color, recorded) in &service_state.colors {
        if alive_count(deployer, &recorded.instances).await == 0 {
            dead.push(color.clone());
        }
    }
    let secondary_dead = match &service_state.secondary {
        Some(secondary) => alive_count(deployer, &secondary.instances).await == 0,
        None => false,
    };
    if secondary_dead && let Some(secondary) = service_state.secondary.take() {
        log.line(format!("{service}: no secondary instance runs any more; it is forgotten"));
        for instance in secondary.instances {
            let _ = deployer.runtime.remove(&instance.id).await;
        }
        let _ = deployer.edge.put_pool(service, SECONDARY_POOL, &[]).await;
    }
    if dead.is_empty() {
        if secondary_dead {
            state.save(&*deployer.store, &run.environment).await?;
        }
        return Ok(());
    }
    for color in &dead {
        log.line(format!("{service}: no instance of {color} runs any more; it is forgotten"));
        if let Some(recorded) = service_state.colors.remove(color) {
            for instance in recorded.instances {
                let _ = deployer.runtime.remove(&instance.id).await;
            }
        }
        if service_state.live.as_deref() == Some(color) {
            service_state.live = None;
        }
        let _ = deployer.edge.delete_pool(service, color).await;
    }
    state.save(&*deployer.store, &run.environment).await.map_err(RolloutError::from)
}

pub fn is_alive(state: InstanceState) -> bool {
    matches!(state, InstanceState::Starting | InstanceState::Running | InstanceState::BackingOff)
}

/// How many of `instances` the runtime still runs.
pub async fn alive_count(deployer: &Deployer, instances: &[InstanceRef]) -> usize {
    let mut alive = 0;
    for instance in instances {
        if matches!(deployer.runtime.get(&instance.id).await, Ok(Some(found)) if is_alive(found.state)) {
            alive += 1;
        }
    }
    alive
}

/// An id the runtime accepts: lowercase letters, digits and `-`.
fn instance_id(parts: &[&str]) -> String {
    let joined = parts.join("-").to_ascii_lowercase();
    let cleaned: String = joined.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    cleaned.chars().take(90).collect()
}

/// Starts one instance of `service` and waits for its health gate.
pub async fn start_instance(
    run: &Run,
    log: &StepLog,
    service: &str,
    spec: &Service,
    artifact: &Artifact,
    color: &str,
    index: usize,
) -> Result<InstanceRef, RolloutError> {
    let runtime = &run.deployer.runtime;
    let base = instance_id(&[run.id.as_str(), service, color, &index.to_string()]);
    let mut id = base.clone();
    let mut attempt = 1;
    while runtime.get(&id).await?.is_some() {
        attempt += 1;
        id = format!("{base}-r{attempt}");
    }
    let mut env = vars::base_env();
    let mut builtins = run.builtins();
    builtins.insert("WINDLASS_SERVICE".into(), service.into());
    builtins.insert("WINDLASS_COLOR".into(), color.into());
    builtins.insert("WINDLASS_INSTANCE".into(), id.clone());
    if let Some(version) = &artifact.version {
        builtins.insert("WINDLASS_VERSION".into(), version.clone());
    }
    for (name, setting) in &spec.env {
        env.insert(name.clone(), run.variables.render(setting, &builtins)?);
    }
    env.extend(builtins);
    let labels = BTreeMap::from([
        ("environment".to_owned(), run.environment.clone()),
        ("service".to_owned(), service.to_owned()),
        ("color".to_owned(), color.to_owned()),
        ("deploy".to_owned(), run.id.to_string()),
    ]);
    let instance_spec = InstanceSpec {
        id: id.clone(),
        labels,
        program: artifact.program.clone(),
        args: artifact.args.clone(),
        env,
        working_dir: artifact.workdir.clone().unwrap_or_else(|| run.config_dir()),
        sockets: vec!["http".into()],
        listen_host: Ipv4Addr::LOCALHOST.into(),
        stop_grace: spec.stop_timeout.as_std(),
        restart: RestartPolicy::default(),
        log: LogPolicy::default(),
        runtime: match spec.runtime {
            ServiceRuntime::Process => RuntimeKind::Process,
            ServiceRuntime::Docker => RuntimeKind::Docker,
        },
    };
    let asked = std::time::Instant::now();
    let started = runtime.start(&instance_spec).await?;
    let address: SocketAddr = *started
        .addresses
        .get("http")
        .ok_or_else(|| RolloutError::Failed(format!("instance {id} reported no address")))?;
    log.line(format!("{service}: started {id} at {address}"));
    windlass_failpoint::hit("pipeline.instance_started");
    if let Err(problem) = checks::wait_healthy(&**runtime, &id, address, spec.health.as_ref()).await {
        let _ = runtime.remove(&id).await;
        return Err(problem.into());
    }
    run.record_service_wait(asked, std::time::Instant::now());
    log.line(format!("{service}: {id} is healthy"));
    Ok(InstanceRef { id, address })
}

async fn stop_instances(run: &Run, instances: &[InstanceRef]) {
    for instance in instances {
        if let Err(err) = run.deployer.runtime.remove(&instance.id).await {
            tracing::warn!(%err, id = instance.id, "cannot remove an instance");
        }
    }
}

/// Starts `count` instances concurrently and waits for all; on any failure, none is left.
async fn start_color(
    run: &Run,
    log: &StepLog,
    service: &str,
    spec: &Service,
    artifact: &Artifact,
    color: &str,
    count: usize,
) -> Result<Vec<InstanceRef>, RolloutError> {
    log.line(format!("{service}: starting {count} instance{} as {color}", if count == 1 { "" } else { "s" }));
    let starts = (0..count).map(|index| start_instance(run, log, service, spec, artifact, color, index));
    // Started together on this task (no spawning: the starts borrow the run).
    let results = futures_util::future::join_all(starts).await;
    let (started, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    let started: Vec<InstanceRef> = started.into_iter().filter_map(Result::ok).collect();
    if let Some(Err(problem)) = failed.into_iter().next() {
        stop_instances(run, &started).await;
        return Err(problem);
    }
    Ok(started)
}

async fn load(run: &Run) -> Result<EnvState, RolloutError> {
    EnvState::load(&*run.deployer.store, &run.environment).await.map_err(RolloutError::from)
}

async fn save(run: &Run, state: &EnvState) -> Result<(), RolloutError> {
    state.save(&*run.deployer.store, &run.environment).await.map_err(RolloutError::from)
}

async fn blue_green(
    run: &mut Run,
    log: &StepLog,
    service: &str,
    spec: &Service,
    artifact: &Artifact,
    config_deploy: &str,
) -> Result<(), RolloutError> {
    let edge = run.deployer.edge.clone();
    let state = load(run).await?;
    let old = state.live(service).map(|(color, _)| color.to_owned());
    let new = old.as_deref().map_or("blue", other_color).to_owned();
    if state.services.get(service).is_some_and(|s| s.colors.contains_key(&new)) {
        log.line(format!("{service}: retiring the warm {new} to make room"));
        retire(&run.deployer, &run.environment, service, &new).await?;
    }
    let instances = start_color(run, log, service, spec, artifact, &new, spec.instances as usize).await?;
    let mut state = load(run).await?;
    state.services.entry(service.to_owned()).or_default().colors.insert(
        new.clone(),
        ColorState {
            deploy_id: run.id.to_string(),
            config_deploy: config_deploy.to_owned(),
            artifact: artifact.clone(),
            instances: instances.clone(),
            retire_at_ms: None,
        },
    );
    save(run, &state).await?;
    let addresses: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
    edge.put_pool(service, &new, &addresses).await?;
    windlass_failpoint::hit("pipeline.before_smoke");

    if old.is_some() {
        let hosts = route_hosts(&run.config, &run.environment);
        for check in run.config.smoke.iter().filter(|c| c.service.as_ref().is_some_and(|s| s.value == service)) {
            match checks::smoke(check, &run.variables, &hosts, &*edge, Some(&new)).await {
                Ok(summary) => log.line(format!("{service}: smoke check `{}` on {new}: {summary}", check.name)),
                Err(problem) => {
                    retire(&run.deployer, &run.environment, service, &new).await?;
                    return Err(RolloutError::Failed(format!(
                        "{new} failed smoke check `{}`: {problem}; {} keeps serving",
                        check.name,
                        old.as_deref().unwrap_or("nothing")
                    )));
                }
            }
        }
    }
    windlass_failpoint::hit("pipeline.before_switch");
    if let (Some(old), Strategy::Canary(steps)) = (&old, &spec.strategy)
        && let Err(aborted) = canary::run_steps(run, log, service, &new, old, steps, spec.analysis.as_ref()).await
    {
        // Weight 0 at once: the edge hands the canary's sticky clients back to the stable pool.
        let weights = BTreeMap::from([(old.clone(), 100), (new.clone(), 0)]);
        let reset = edge.set_weights(service, &weights).await;
        windlass_failpoint::hit("pipeline.canary_aborted");
        log.line(format!("{service}: canary aborted, all traffic back on {old}: {}", aborted.reason));
        let message = crate::notifications::message(
            &run.config,
            "canary.aborted",
            &run.environment,
            Some(run.id.as_str()),
            &format!("canary {new} of {service} aborted"),
            aborted.reason.clone(),
            vec![("service".to_owned(), service.to_owned()), ("stable".to_owned(), old.clone())],
        );
        crate::notifications::notify(&run.deployer, &run.config, &run.variables, message);
        reset.map_err(|e| {
            RolloutError::Failed(format!(
                "the canary was aborted ({}) but its weight could not be reset: {e}",
                aborted.reason
            ))
        })?;
        retire(&run.deployer, &run.environment, service, &new).await?;
        return Err(RolloutError::Failed(format!("{service}: canary {new} aborted: {}", aborted.reason)));
    }
    edge.set_weights(service, &BTreeMap::from([(new.clone(), 100)])).await?;
    run.changes.push(Change::Switched { service: service.to_owned(), from: old.clone(), to: new.clone() });
    windlass_failpoint::hit("pipeline.after_switch");
    let mut state = load(run).await?;
    let service_state = state.services.entry(service.to_owned()).or_default();
    service_state.live = Some(new.clone());
    let keep_warm = spec.keep_warm.as_std();
    if let Some(old_state) = old.as_ref().and_then(|o| service_state.colors.get_mut(o)) {
        old_state.retire_at_ms = Some(
            run.deployer
                .clock
                .now()
                .as_millisecond()
                .saturating_add(i64::try_from(keep_warm.as_millis()).unwrap_or(i64::MAX)),
        );
    }
    save(run, &state).await?;
    match &old {
        Some(old) if keep_warm.is_zero() => {
            log.line(format!("{service}: traffic switched to {new}; stopping {old}"));
            retire(&run.deployer, &run.environment, service, old).await?;
        }
        Some(old) => log.line(format!("{service}: traffic switched to {new}; {old} stays warm for {keep_warm:?}")),
        None => log.line(format!("{service}: {new} takes all traffic")),
    }
    Ok(())
}

async fn rolling(
    run: &mut Run,
    log: &StepLog,
    service: &str,
    spec: &Service,
    artifact: &Artifact,
    config_deploy: &str,
) -> Result<(), RolloutError> {
    let state = load(run).await?;
    let Some((color, previous)) = state.live(service).map(|(c, s)| (c.to_owned(), s.clone())) else {
        // Nothing runs yet: start them all, then take traffic, which is exactly what a first
        // blue-green rollout does (with nothing live, it has nothing to smoke-test against).
        return blue_green(run, log, service, spec, artifact, config_deploy).await;
    };
    run.changes.push(Change::Rolled { service: service.to_owned(), previous: Some(previous.clone()) });
    let mut current = previous.instances.clone();
    let wanted = spec.instances as usize;
    for index in 0..wanted {
        let fresh = start_instance(run, log, service, spec, artifact, &color, index).await?;
        let replaced = match current.get_mut(index) {
            Some(slot) => Some(std::mem::replace(slot, fresh)),
            None => {
                current.push(fresh);
                None
            }
        };
        publish(run, service, &color, &current).await?;
        if let Some(old) = replaced {
            // Out of the pool first; the graceful stop lets its in-flight requests finish.
            stop_instances(run, std::slice::from_ref(&old)).await;
            log.line(format!("{service}: replaced {} ({}/{wanted})", old.id, index + 1));
        }
        windlass_failpoint::hit("pipeline.rolling.replaced");
    }
    if current.len() > wanted {
        let extra: Vec<InstanceRef> = current.drain(wanted..).collect();
        publish(run, service, &color, &current).await?;
        stop_instances(run, &extra).await;
    }
    current.truncate(wanted);
    let mut state = load(run).await?;
    if let Some(recorded) = state.services.entry(service.to_owned()).or_default().colors.get_mut(&color) {
        recorded.instances = current;
        recorded.deploy_id = run.id.to_string();
        recorded.config_deploy = config_deploy.to_owned();
        recorded.artifact = artifact.clone();
    }
    save(run, &state).await?;
    log.line(format!("{service}: all {wanted} instances run build {}", artifact.short_hash()));
    Ok(())
}

/// Puts a color's instances in its edge pool and in the state.
async fn publish(run: &Run, service: &str, color: &str, instances: &[InstanceRef]) -> Result<(), RolloutError> {
    let addresses: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
    run.deployer.edge.put_pool(service, color, &addresses).await?;
    // A crash here leaves the edge routing to instances the state does not name yet: recovery
    // puts the recorded ones (still running: they stop only after the save) back in the pool.
    windlass_failpoint::hit("pipeline.rolling.pool_replaced");
    let mut state = load(run).await?;
    if let Some(recorded) = state.services.entry(service.to_owned()).or_default().colors.get_mut(color) {
        recorded.instances = instances.to_vec();
    }
    save(run, &state).await
}

/// Takes a color out of service: out of the edge (after its in-flight requests finish, up to
/// 30 s), its instances stopped, its record removed.
pub async fn retire(deployer: &Deployer, environment: &str, service: &str, color: &str) -> Result<(), RolloutError> {
    let edge = &deployer.edge;
    let drain_deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let state = edge.state().await?;
        let pool = state.services.get(service).and_then(|s| s.pools.get(color));
        match pool {
            Some(pool) if pool.taking_traffic => {
                return Err(RolloutError::Failed(format!(
                    "{service}'s {color} still takes traffic; it cannot be retired"
                )));
            }
            Some(pool) if pool.in_flight > 0 && tokio::time::Instant::now() < drain_deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Some(_) => {
                edge.delete_pool(service, color).await?;
                break;
            }
            None => break,
        }
    }
    let mut state = EnvState::load(&*deployer.store, environment).await?;
    let recorded = state.services.get(service).and_then(|s| s.colors.get(color)).cloned();
    if let Some(recorded) = recorded {
        for instance in &recorded.instances {
            if let Err(err) = deployer.runtime.remove(&instance.id).await {
                tracing::warn!(%err, id = instance.id, "cannot remove an instance");
            }
        }
        if let Some(service_state) = state.services.get_mut(service) {
            service_state.colors.remove(color);
        }
        state.save(&*deployer.store, environment).await?;
    }
    Ok(())
}

/// Undoes one change of a failed deploy.
pub async fn undo(run: &mut Run, log: &StepLog, change: Change) -> Result<(), RolloutError> {
    let edge = run.deployer.edge.clone();
    match change {
        Change::Switched { service, from: Some(from), to } => {
            edge.set_weights(&service, &BTreeMap::from([(from.clone(), 100)])).await?;
            let mut state = load(run).await?;
            if let Some(service_state) = state.services.get_mut(&service) {
                service_state.live = Some(from.clone());
                if let Some(old) = service_state.colors.get_mut(&from) {
                    old.retire_at_ms = None;
                }
            }
            save(run, &state).await?;
            log.line(format!("{service}: traffic back on {from}; stopping {to}"));
            retire(&run.deployer, &run.environment, &service, &to).await
        }
        Change::Switched { service, from: None, .. } | Change::Rolled { service, previous: None } => {
            let Some(to) = load(run).await?.live(&service).map(|(color, _)| color.to_owned()) else {
                return Ok(());
            };
            edge.set_weights(&service, &BTreeMap::new()).await?;
            let mut state = load(run).await?;
            if let Some(service_state) = state.services.get_mut(&service) {
                service_state.live = None;
            }
            save(run, &state).await?;
            log.line(format!("{service}: nothing ran before this deploy; stopping {to}"));
            retire(&run.deployer, &run.environment, &service, &to).await
        }
        Change::Step { step, .. } => Ok(run.undo_command(&step, log).await?),
        Change::Secondary { service, previous: Some(previous) } => {
            log.line(format!("{service}: the secondary goes back to build {}", previous.artifact.short_hash()));
            back_to(run, log, &service, &previous, Target::Secondary).await
        }
        Change::Secondary { service, previous: None } => {
            edge.put_pool(&service, SECONDARY_POOL, &[]).await?;
            let mut state = load(run).await?;
            let stopped = state.services.get_mut(&service).and_then(|s| s.secondary.take());
            save(run, &state).await?;
            if let Some(stopped) = stopped {
                stop_instances(run, &stopped.instances).await;
            }
            log.line(format!("{service}: no secondary ran before this deploy; its instances are stopped"));
            Ok(())
        }
        Change::Rolled { service, previous: Some(previous) } => {
            log.line(format!("{service}: rolling back to build {}", previous.artifact.short_hash()));
            back_to(run, log, &service, &previous, Target::Primary).await
        }
    }
}

/// Which instances an undo brings back to an earlier build.
enum Target {
    /// A rolling service's own instances.
    Primary,
    /// Its managed secondary.
    Secondary,
}

/// Rolls `target` of `service` back to `previous`'s build, configured as its deploy recorded. An
/// undo is not itself a change to undo: what it records is dropped.
async fn back_to(
    run: &mut Run,
    log: &StepLog,
    service: &str,
    previous: &ColorState,
    target: Target,
) -> Result<(), RolloutError> {
    let config = config_of(run, &previous.config_deploy).await?;
    let spec = config.service_in(&run.environment, service).ok_or_else(|| {
        RolloutError::Failed(format!("`{service}` is not in the config of {}", previous.config_deploy))
    })?;
    let changes_before = run.changes.len();
    let result = match target {
        Target::Primary => rolling(run, log, service, &spec, &previous.artifact, &previous.config_deploy).await,
        Target::Secondary => {
            sync_secondary(run, log, service, &spec, &previous.artifact, &previous.config_deploy).await
        }
    };
    run.changes.truncate(changes_before);
    result
}

/// The edge pool in which a managed secondary's new instances are smoke-checked before they
/// replace the secondary's members (weight 0: only pinned requests reach it).
pub const SECONDARY_CANDIDATE: &str = "secondary-next";

/// Brings a managed secondary (`failover.instances`) to `artifact`: new instances are started
/// behind the health gate, smoke-checked through the edge pinned to a candidate pool, recorded,
/// then swapped into the secondary pool in one edge call; the old ones stop after. While the
/// service is failed over, the swap moves its traffic to the new build atomically like a
/// switch. Nothing to do for services without a managed secondary, or whose secondary already
/// runs this build with this config.
///
/// Crash order: an instance started but not recorded is an orphan (stopped on recovery);
/// recorded but not yet in the pool, recovery puts the recorded instances in the pool.
pub async fn sync_secondary(
    run: &mut Run,
    log: &StepLog,
    service: &str,
    spec: &Service,
    artifact: &Artifact,
    config_deploy: &str,
) -> Result<(), RolloutError> {
    let Some(count) = spec.failover.as_ref().and_then(|f| f.managed) else { return Ok(()) };
    let count = count as usize;
    let edge = run.deployer.edge.clone();
    let previous = load(run).await?.services.get(service).and_then(|s| s.secondary.clone());
    if let Some(previous) = &previous
        && previous.artifact.sha256 == artifact.sha256
        && previous.config_deploy == config_deploy
        && previous.instances.len() == count
        && alive_count(&run.deployer, &previous.instances).await == count
    {
        log.line(format!("{service}: the secondary already runs build {}", artifact.short_hash()));
        return Ok(());
    }
    let instances = start_color(run, log, service, spec, artifact, SECONDARY_POOL, count).await?;
    let addresses: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
    let hosts = route_hosts(&run.config, &run.environment);
    let smoke: Vec<_> =
        run.config.smoke.iter().filter(|c| c.service.as_ref().is_some_and(|s| s.value == service)).collect();
    if !smoke.is_empty() {
        edge.put_pool(service, SECONDARY_CANDIDATE, &addresses).await?;
        for check in smoke {
            let result = checks::smoke(check, &run.variables, &hosts, &*edge, Some(SECONDARY_CANDIDATE)).await;
            match result {
                Ok(summary) => {
                    log.line(format!("{service}: smoke check `{}` on the new secondary: {summary}", check.name))
                }
                Err(problem) => {
                    let _ = edge.delete_pool(service, SECONDARY_CANDIDATE).await;
                    stop_instances(run, &instances).await;
                    let kept = previous
                        .as_ref()
                        .map_or("nothing".to_owned(), |p| format!("build {}", p.artifact.short_hash()));
                    return Err(RolloutError::Failed(format!(
                        "{service}: the new secondary failed smoke check `{}`: {problem}; the secondary keeps {kept}",
                        check.name
                    )));
                }
            }
        }
        edge.delete_pool(service, SECONDARY_CANDIDATE).await?;
    }
    let mut state = load(run).await?;
    state.services.entry(service.to_owned()).or_default().secondary = Some(ColorState {
        deploy_id: run.id.to_string(),
        config_deploy: config_deploy.to_owned(),
        artifact: artifact.clone(),
        instances: instances.clone(),
        retire_at_ms: None,
    });
    save(run, &state).await?;
    windlass_failpoint::hit("pipeline.secondary.recorded");
    edge.put_pool(service, SECONDARY_POOL, &addresses).await?;
    run.changes.push(Change::Secondary { service: service.to_owned(), previous: previous.clone() });
    if let Some(previous) = previous {
        stop_instances(run, &previous.instances).await;
    }
    log.line(format!(
        "{service}: the secondary runs build {} ({count} instance{})",
        artifact.short_hash(),
        if count == 1 { "" } else { "s" }
    ));
    Ok(())
}

/// Starts or stops instances of a service's live color until it runs `count`. New instances
/// are recorded only with the pool change; if one fails its health gate (or the lock was lost
/// meanwhile) the ones this scale started are stopped and nothing else changes. Crash order: the
/// pool changes, then the state (recovery puts the recorded instances back in the pool and stops
/// the others), then the removed instances stop.
pub async fn scale(run: &Run, log: &StepLog, service: &str, count: usize) -> Result<(), RolloutError> {
    let state = load(run).await?;
    let (color, recorded) = state
        .live(service)
        .map(|(c, s)| (c.to_owned(), s.clone()))
        .ok_or_else(|| RolloutError::Failed(format!("`{service}` is not running")))?;
    let config = config_of(run, &recorded.config_deploy).await?;
    let spec = config.service_in(&run.environment, service).ok_or_else(|| {
        RolloutError::Failed(format!("`{service}` is not in the config of {}", recorded.config_deploy))
    })?;
    let mut instances = recorded.instances.clone();
    let mut removed = Vec::new();
    while instances.len() > count {
        removed.extend(instances.pop());
    }
    let mut started = Vec::new();
    while instances.len() + started.len() < count {
        let index = instances.len() + started.len();
        match start_instance(run, log, service, &spec, &recorded.artifact, &color, index).await {
            Ok(instance) => started.push(instance),
            Err(problem) if started.is_empty() => return Err(problem),
            Err(problem) => {
                stop_instances(run, &started).await;
                return Err(RolloutError::Failed(format!(
                    "{problem}; the {} other new instance(s) are stopped",
                    started.len()
                )));
            }
        }
    }
    if run.lock_lost() {
        stop_instances(run, &started).await;
        return Err(RolloutError::Failed(format!(
            "the lock of `{}` was lost while scaling; nothing was changed",
            run.environment
        )));
    }
    instances.extend(started.iter().cloned());
    let addresses: Vec<SocketAddr> = instances.iter().map(|i| i.address).collect();
    // Undoes the pool change when it cannot be recorded: the edge back on the recorded instances,
    // the new ones stopped.
    let undo = async |problem: RolloutError| {
        let before: Vec<SocketAddr> = recorded.instances.iter().map(|i| i.address).collect();
        let _ = run.deployer.edge.put_pool(service, &color, &before).await;
        stop_instances(run, &started).await;
        problem
    };
    if let Err(err) = run.deployer.edge.put_pool(service, &color, &addresses).await {
        // The edge may have applied it before failing to answer: back to what is recorded.
        return Err(undo(err.into()).await);
    }
    let mut state = match load(run).await {
        Ok(state) => state,
        Err(problem) => return Err(undo(problem).await),
    };
    if let Some(recorded) = state.services.get_mut(service).and_then(|s| s.colors.get_mut(&color)) {
        recorded.instances = instances;
    }
    if run.lock_lost() {
        return Err(undo(RolloutError::Failed(format!(
            "the lock of `{}` was lost while scaling; nothing was changed",
            run.environment
        )))
        .await);
    }
    if let Err(problem) = save(run, &state).await {
        return Err(undo(problem).await);
    }
    stop_instances(run, &removed).await;
    log.line(format!("{service}: {count} instances on {color}"));
    Ok(())
}
