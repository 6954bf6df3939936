//! After a restart (or a crash): deploys this server was running are marked interrupted, its
//! locks released, the env state reconciled with what the edge actually routes, and instances
//! nobody records (started by an interrupted deploy) stopped. The edge decides what is live: it
//! kept serving while the server was down, so its table is what users saw. Which instances a
//! pool holds is the state's to say: every recorded pool (each color, the secondary) is given
//! its recorded instances before the unrecorded ones stop, so the edge never routes to an
//! instance recovery stopped.

use std::collections::BTreeSet;

use windlass_store::Interrupted;

use crate::DeployError;
use crate::deploy::Deployer;
use crate::rollout::{SECONDARY_CANDIDATE, retire};
use crate::state::EnvState;
use windlass_edge::spec::SECONDARY_POOL;

#[derive(Debug, Default)]
pub struct Recovery {
    pub interrupted: Vec<Interrupted>,
    /// What was found and done, one line each, for the log and the user.
    pub notes: Vec<String>,
}

pub async fn recover(deployer: &Deployer, environments: &[String]) -> Result<Recovery, DeployError> {
    let mut recovery =
        Recovery { interrupted: deployer.store.interrupt_running(&deployer.holder.id).await?, notes: Vec::new() };
    for deploy in &recovery.interrupted {
        recovery.notes.push(format!(
            "deploy {} of {} was interrupted{}",
            deploy.deploy_id,
            deploy.environment,
            deploy.step.as_ref().map(|s| format!(" at step `{s}`")).unwrap_or_default()
        ));
    }
    for lease in deployer.store.leases().await? {
        if lease.holder.id == deployer.holder.id {
            deployer
                .store
                .break_lease(
                    &lease.name,
                    lease.token,
                    &deployer.holder.id,
                    "the server restarted; what the lock guarded was interrupted",
                )
                .await?;
            recovery.notes.push(format!("released lock `{}` held before the restart", lease.name));
        }
    }
    let mut all: BTreeSet<String> = environments.iter().cloned().collect();
    all.extend(recovery.interrupted.iter().map(|i| i.environment.clone()));
    let config = deployer.shared_config().ok();
    let edge_state = deployer.edge.state().await?;
    let instances = deployer.runtime.list().await?;
    for environment in &all {
        // Instances a pool at the edge still names after reconciliation: never stopped.
        let mut still_routed: BTreeSet<std::net::SocketAddr> = BTreeSet::new();
        let mut state = EnvState::load(&*deployer.store, environment).await?;
        let now = deployer.clock.now().as_millisecond();
        for (service, service_state) in &mut state.services {
            let keep_warm = config
                .as_ref()
                .and_then(|c| c.service_in(environment, service))
                .map_or(0, |s| i64::try_from(s.keep_warm.as_std().as_millis()).unwrap_or(i64::MAX));
            // Only a color with all the traffic was switched to (blue-green's one weights call, or
            // a promoted canary). A split is a canary caught between steps: never promoted, so
            // whichever side has more traffic, the recorded live color keeps the service.
            let routed = edge_state.services.get(service).and_then(|s| {
                s.pools
                    .iter()
                    .find(|(name, pool)| *name != windlass_edge::spec::SECONDARY_POOL && pool.weight == 100)
                    .map(|(name, _)| name.clone())
            });
            if let Some(routed) = routed
                && service_state.live.as_ref() != Some(&routed)
                && service_state.colors.contains_key(&routed)
            {
                recovery.notes.push(format!("{environment}/{service}: the edge routes to {routed}; recorded as live"));
                if let Some(previous) = service_state.live.replace(routed.clone())
                    && let Some(old) = service_state.colors.get_mut(&previous)
                {
                    old.retire_at_ms = Some(now.saturating_add(keep_warm));
                }
                if let Some(live) = service_state.colors.get_mut(&routed) {
                    live.retire_at_ms = None;
                }
            }
            // A canary interrupted between its steps still has a share of the traffic: it was
            // never promoted, so the live color takes it all back before the canary retires.
            let split =
                edge_state.services.get(service).is_some_and(|s| has_stray_weight(s, service_state.live.as_ref()));
            if let (true, Some(live)) = (split, service_state.live.clone()) {
                let weights = std::collections::BTreeMap::from([(live.clone(), 100u8)]);
                deployer.edge.set_weights(service, &weights).await?;
                recovery.notes.push(format!(
                    "{environment}/{service}: an interrupted canary had part of the traffic; all of it is back on {live}"
                ));
                interrupt_canary(
                    deployer,
                    environment,
                    service,
                    "its deploy was interrupted (the server restarted); traffic went back to the stable color",
                )
                .await?;
            }
            // A managed secondary: the edge's pool holds exactly the recorded instances (a crash
            // between recording new instances and the pool swap leaves the old ones there), and a
            // candidate pool left by an interrupted smoke check goes.
            let edge_service = edge_state.services.get(service);
            if let Some(secondary) = &service_state.secondary {
                let recorded: BTreeSet<std::net::SocketAddr> = secondary.instances.iter().map(|i| i.address).collect();
                let routed: BTreeSet<std::net::SocketAddr> = edge_service
                    .and_then(|s| s.pools.get(SECONDARY_POOL))
                    .map(|p| p.instances.iter().map(|i| i.address).collect())
                    .unwrap_or_default();
                if routed != recorded {
                    let addresses: Vec<std::net::SocketAddr> = recorded.into_iter().collect();
                    deployer.edge.put_pool(service, SECONDARY_POOL, &addresses).await?;
                    recovery.notes.push(format!(
                        "{environment}/{service}: the secondary pool holds the recorded instances of build {} again",
                        secondary.artifact.short_hash()
                    ));
                }
            }
            // Each color's pool holds exactly its recorded instances, as the secondary's does: a
            // crash between a pool change at the edge and the state save (a rolling replacement,
            // a scale) leaves the edge routing to instances no record names, which are stopped
            // below as orphans. The recorded ones still run (they stop only after the save).
            for (color, recorded) in &service_state.colors {
                let Some(pool) = edge_service.and_then(|s| s.pools.get(color)) else { continue };
                let addresses: BTreeSet<std::net::SocketAddr> = recorded.instances.iter().map(|i| i.address).collect();
                let routed: BTreeSet<std::net::SocketAddr> = pool.instances.iter().map(|i| i.address).collect();
                if routed != addresses {
                    let addresses: Vec<std::net::SocketAddr> = addresses.into_iter().collect();
                    // One pool the edge refuses (say, no instance left for a weighted pool) must
                    // not keep the server from starting: it is reported and the rest goes on.
                    match deployer.edge.put_pool(service, color, &addresses).await {
                        Ok(()) => recovery.notes.push(format!(
                            "{environment}/{service}: {color}'s pool at the edge holds its recorded instances again (build {}, {} instance{})",
                            recorded.artifact.short_hash(),
                            addresses.len(),
                            if addresses.len() == 1 { "" } else { "s" }
                        )),
                        Err(err) => {
                            still_routed.extend(routed);
                            recovery.notes.push(format!(
                                "{environment}/{service}: {color}'s pool at the edge differs from its recorded instances and could not be set: {err}"
                            ));
                        }
                    }
                }
            }
            if edge_service.is_some_and(|s| s.pools.contains_key(SECONDARY_CANDIDATE)) {
                deployer.edge.delete_pool(service, SECONDARY_CANDIDATE).await?;
                recovery.notes.push(format!(
                    "{environment}/{service}: a secondary update was interrupted before its smoke checks ended; its candidates are stopped"
                ));
            }
            for (color, recorded) in &mut service_state.colors {
                if Some(color) != service_state.live.as_ref() && recorded.retire_at_ms.is_none() {
                    recovery.notes.push(format!(
                        "{environment}/{service}: {color} was started by an interrupted deploy and never took traffic; it is retired"
                    ));
                    recorded.retire_at_ms = Some(now);
                }
            }
        }
        state.save(&*deployer.store, environment).await?;
        let referenced: BTreeSet<&str> = state
            .services
            .values()
            .flat_map(|s| s.colors.values().chain(s.secondary.as_ref()))
            .flat_map(|c| c.instances.iter().map(|i| i.id.as_str()))
            .collect();
        for instance in &instances {
            if instance.labels.get("environment") == Some(environment) && !referenced.contains(instance.id.as_str()) {
                if instance.addresses.values().any(|a| still_routed.contains(a)) {
                    recovery.notes.push(format!(
                        "{environment}: kept {}, started by an interrupted deploy, because the edge still routes to it",
                        instance.id
                    ));
                    continue;
                }
                deployer.runtime.remove(&instance.id).await?;
                recovery
                    .notes
                    .push(format!("{environment}: stopped {}, started by an interrupted deploy", instance.id));
            }
        }
    }
    for environment in &all {
        // A database restore killed under its write stop: writes and traffic resume.
        match crate::database::recover_interrupted_restore(deployer, environment).await {
            Ok(notes) => recovery.notes.extend(notes),
            Err(err) => recovery.notes.push(format!("{environment}: an interrupted database restore: {err}")),
        }
    }
    Ok(recovery)
}

/// Retires every warm color whose time has come, unless a deploy holds the environment (it
/// will be retried on the next round). Returns what was retired.
pub async fn retire_due(deployer: &Deployer, environment: &str) -> Result<Vec<String>, DeployError> {
    let state = EnvState::load(&*deployer.store, environment).await?;
    let now = deployer.clock.now().as_millisecond();
    let due: Vec<(String, String)> = state
        .services
        .iter()
        .flat_map(|(service, s)| {
            s.colors
                .iter()
                .filter(|(color, c)| s.live.as_ref() != Some(*color) && c.retire_at_ms.is_some_and(|at| at <= now))
                .map(|(color, _)| (service.clone(), color.clone()))
        })
        .collect();
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let lease = match deployer.lock(environment, "retiring warm colors").await {
        Ok(lease) => lease,
        Err(DeployError::Locked { .. }) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    // Draining a color may take a while: the lock stays fresh (a stale one is taken over).
    let heartbeat = deployer.heartbeat(&lease);
    let mut retired = Vec::new();
    for (service, color) in due {
        match retire(deployer, environment, &service, &color).await {
            Ok(()) => retired.push(format!("{environment}/{service}/{color}")),
            Err(problem) => tracing::warn!(environment, service, color, %problem, "cannot retire a warm color"),
        }
    }
    drop(heartbeat);
    let _ = deployer.store.release_lease(&lease).await;
    Ok(retired)
}

/// Whether a pool other than the live color (the secondary aside) still gets new clients.
fn has_stray_weight(edge_service: &crate::edge::ServiceState, live: Option<&String>) -> bool {
    edge_service.pools.iter().any(|(name, pool)| name != SECONDARY_POOL && pool.weight > 0 && Some(name) != live)
}

/// Outside deploys, the edge sends each service's traffic to its live color only. A split left
/// behind — a canary abort whose weight reset failed even after its retries, or weights changed
/// at the edge around the control plane — is returned to the live color, its canary marked
/// aborted, and the move recorded as an `edge.traffic_returned` event. Runs under the
/// environment's lock, so a deploy's own canary steps are never touched.
pub async fn return_stray_traffic(deployer: &Deployer, environment: &str) -> Result<Vec<String>, DeployError> {
    let edge_state = deployer.edge.state().await?;
    let state = EnvState::load(&*deployer.store, environment).await?;
    let stray = |edge_state: &crate::edge::EdgeState, state: &EnvState| -> Vec<(String, String)> {
        state
            .services
            .iter()
            .filter_map(|(service, s)| {
                let live = s.live.clone()?;
                edge_state
                    .services
                    .get(service)
                    .is_some_and(|e| has_stray_weight(e, Some(&live)))
                    .then(|| (service.clone(), live))
            })
            .collect()
    };
    if stray(&edge_state, &state).is_empty() {
        return Ok(Vec::new());
    }
    let lease = match deployer.lock(environment, "returning stray traffic to the live colors").await {
        Ok(lease) => lease,
        Err(DeployError::Locked { .. }) => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let heartbeat = deployer.heartbeat(&lease);
    // Read again under the lock: a deploy that just ended may have changed both.
    let result = async {
        let edge_state = deployer.edge.state().await?;
        let state = EnvState::load(&*deployer.store, environment).await?;
        let mut returned = Vec::new();
        for (service, live) in stray(&edge_state, &state) {
            let weights = std::collections::BTreeMap::from([(live.clone(), 100u8)]);
            deployer.edge.set_weights(&service, &weights).await?;
            let message =
                format!("{service}: traffic outside a deploy on other pools than {live}; all of it is back on {live}");
            interrupt_canary(
                deployer,
                environment,
                &service,
                "its traffic was returned to the stable color after the deploy",
            )
            .await?;
            let event = windlass_store::NewEvent {
                actor: "windlass".into(),
                environment: Some(environment.to_owned()),
                kind: "edge.traffic_returned".into(),
                subject: Some(service.clone()),
                message: message.clone(),
                data: serde_json::json!({ "service": service, "live": live }).to_string(),
            };
            deployer.store.record_event(&event).await?;
            returned.push(message);
        }
        Ok::<_, DeployError>(returned)
    }
    .await;
    drop(heartbeat);
    let _ = deployer.store.release_lease(&lease).await;
    result
}

/// Marks a canary that no longer runs as aborted, so `canary status` does not show it running
/// and nobody can promote it.
async fn interrupt_canary(
    deployer: &Deployer,
    environment: &str,
    service: &str,
    reason: &str,
) -> Result<(), DeployError> {
    let key = crate::canary::progress_key(environment, service);
    let Some(text) = deployer.store.setting(&key).await? else { return Ok(()) };
    let Ok(mut progress) = serde_json::from_str::<crate::canary::Progress>(&text) else { return Ok(()) };
    if progress.outcome == "running" {
        progress.outcome = "aborted".into();
        progress.reason = Some(reason.to_owned());
        deployer.store.set_setting(&key, &serde_json::to_string(&progress).unwrap_or_default()).await?;
    }
    Ok(())
}
