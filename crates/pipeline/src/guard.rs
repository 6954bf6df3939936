//! The automatic rollback policy (`[pipeline] auto_rollback`): a critical alert of a service
//! that fired after a deploy of it started stops that deploy while it runs (it then undoes its
//! changes), or, once it has succeeded and while the service's previous color is still warm,
//! rolls the environment back to the deploy before. Each deploy is acted on once; a rollback is
//! never acted on. The server runs [`act_on_critical_alerts`] every two seconds.
//!
//! This module decides and starts; it does not watch (the server's loop does) and it never
//! raises alerts itself.

use std::sync::Arc;

use jiff::Timestamp;
use windlass_store::{DeployStatus, NewEvent, Store};

use crate::{DeployError, Deployer};

/// Why a round of the policy could not decide.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// The critical alerts of `environment` firing now: (service, name, fired at).
pub async fn critical_alerts(
    store: &dyn Store,
    environment: &str,
) -> Result<Vec<(String, String, Timestamp)>, GuardError> {
    let records = store.alert_records(Some(environment)).await?;
    Ok(records
        .into_iter()
        .filter(|r| r.status == "firing")
        .filter_map(|r| {
            let data: serde_json::Value = serde_json::from_str(&r.data).ok()?;
            (data["severity"] == "critical" && data["source"] != "notify")
                .then(|| (r.service.clone(), data["name"].as_str().unwrap_or("an alert").to_owned(), r.fired_at))
        })
        .collect())
}

/// One round of the policy for `environment` (see the module docs).
pub async fn act_on_critical_alerts(deployer: &Arc<Deployer>, environment: &str) -> Result<(), GuardError> {
    let config = deployer.shared_config()?;
    if !config.pipeline.auto_rollback {
        return Ok(());
    }
    let store = &*deployer.store;
    let alerts = critical_alerts(store, environment).await?;
    if alerts.is_empty() {
        return Ok(());
    }
    let Some(last) = store.deploys(environment, 1).await?.into_iter().next() else {
        return Ok(());
    };
    let services = crate::rollback::recorded(&last)?.services;
    let Some((service, alert, fired_at)) = alerts
        .into_iter()
        .find(|(service, _, fired_at)| services.contains_key(service) && *fired_at >= last.started_at)
    else {
        return Ok(());
    };
    // A rollback is never stopped or rolled back in turn: it is the way back.
    if crate::rollback::is_rollback(&last) {
        return Ok(());
    }
    let why = format!("critical alert `{alert}` of {service} fired at {fired_at}, after deploy {} started", last.id);
    match last.status {
        DeployStatus::Running => {
            let asked = crate::deploy::request_stop(store, &last.id, &why).await;
            if asked? {
                let message = format!("deploy {} stopped: {why}", last.id);
                audit(store, environment, "deploy.auto_abort", last.id.as_str(), message).await;
            }
        }
        DeployStatus::Succeeded => {
            // Only while the old color is warm.
            let keep_warm = config.service_in(environment, &service).map(|s| s.keep_warm.as_std()).unwrap_or_default();
            let finished = last.finished_at.unwrap_or(last.started_at);
            let warm_until = finished.checked_add(keep_warm).unwrap_or(finished);
            if deployer.clock.now() > warm_until {
                return Ok(());
            }
            let marker = format!("auto-rollback/{}", last.id);
            if store.setting(&marker).await?.is_some() {
                return Ok(());
            }
            store.set_setting(&marker, &why).await?;
            let request = crate::rollback::RollbackRequest {
                environment: environment.to_owned(),
                actor: "windlass".to_owned(),
                reason: Some(format!("automatic: {why}")),
                mode: crate::rollback::Mode::Automatic,
                ..Default::default()
            };
            let started = crate::rollback::start(deployer, &request).await;
            match started {
                Ok(prepared) => {
                    let id = prepared.id.to_string();
                    audit(
                        store,
                        environment,
                        "deploy.auto_rollback",
                        &last.id.to_string(),
                        format!("rollback {id} started: {why}"),
                    )
                    .await;
                    let deployer = deployer.clone();
                    deployer.tasks.clone().spawn(async move {
                        deployer.execute(prepared).await;
                    });
                }
                Err(err) => {
                    audit(
                        store,
                        environment,
                        "deploy.auto_rollback_failed",
                        &last.id.to_string(),
                        format!("{why}; the rollback could not start: {err}"),
                    )
                    .await;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// An automatic rollback's decision, logged and in the audit trail.
async fn audit(store: &dyn Store, environment: &str, kind: &str, subject: &str, message: String) {
    tracing::warn!(environment, kind, "{message}");
    let event = NewEvent {
        actor: "windlass".into(),
        environment: Some(environment.into()),
        kind: kind.into(),
        subject: Some(subject.into()),
        message,
        data: "{}".into(),
    };
    if let Err(err) = store.record_event(&event).await {
        tracing::warn!(%err, "cannot record an audit event");
    }
}
