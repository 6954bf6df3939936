//! SLO accounting in the server: the collector loop (one minute row per service from the edge's
//! counters, under the lease `slo-collector/<env>` so one server collects an environment at a
//! time) and `GET /api/v1/slo/{env}`, the report `windlass slo <env>` prints.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use windlass_monitor::slo::collector::{Collector, CollectorSettings};
use windlass_monitor::slo::report::{self, Objective};
use windlass_pipeline::Deployer;
use windlass_pipeline::state::EnvState;
use windlass_store::{Acquire, Clock, Lease, StoreError, SystemClock};

use crate::api::{AppState, Path, error};

/// How long the collector's lease lives without a renewal (renewed every minute).
const LEASE_TTL: Duration = Duration::from_secs(5 * 60);
/// Hours of minute rows merged into hour rows per collection, so a long-stopped server catches
/// up without one long pause.
const DOWNSAMPLE_HOURS_PER_RUN: u32 = 48;

fn lease_name(environment: &str) -> String {
    format!("slo-collector/{environment}")
}

/// Collects every managed environment once a minute, for as long as the server runs.
pub(crate) async fn collect(deployer: Arc<Deployer>, environments: Vec<String>, courier: Arc<crate::courier::Courier>) {
    let settings = CollectorSettings::default();
    let mut leases: BTreeMap<String, Lease> = BTreeMap::new();
    loop {
        for environment in &environments {
            if let Err(err) = collect_once(&deployer, environment, &settings, &mut leases).await {
                tracing::warn!(%err, environment, "SLO collection");
            }
            // The collecting server (the lease holder) turns burn-rate alerts into alerts.
            if leases.contains_key(environment)
                && let Ok(config) = deployer.shared_config()
            {
                let objectives: Vec<Objective> = config.slo.values().map(Objective::from_config).collect();
                let settings = report::Settings::from_config(&config.monitor);
                let now = SystemClock.now();
                let since = samples_since(&objectives, now);
                if let Err(err) = deployer.store.forget_probe_samples(environment, since).await {
                    tracing::warn!(%err, environment, "cannot expire old probe samples");
                }
                let samples = probe_samples(&*deployer.store, environment, &objectives, now).await;
                match report::load_report(&*deployer.store, environment, &objectives, &samples, now, &settings).await {
                    Ok(report) => crate::signals::burn_alerts(&courier, &report).await,
                    Err(err) => tracing::warn!(%err, environment, "SLO report"),
                }
            }
        }
        tokio::time::sleep(settings.interval).await;
    }
}

async fn collect_once(
    deployer: &Deployer,
    environment: &str,
    settings: &CollectorSettings,
    leases: &mut BTreeMap<String, Lease>,
) -> Result<(), String> {
    let store = &deployer.store;
    // Keep the lease from one minute to the next; a lost one is given up, not fought for.
    if let Some(lease) = leases.get(environment) {
        match store.renew_lease(lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseLost { .. }) => {
                leases.remove(environment);
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    if !leases.contains_key(environment) {
        let name = lease_name(environment);
        match store.acquire_lease(&name, &deployer.holder, "SLO collection", LEASE_TTL).await {
            Ok(Acquire::Acquired(lease)) => {
                leases.insert(environment.to_owned(), lease);
            }
            Ok(Acquire::Held(info)) => {
                // Our own lease from before a restart: broken by token (audited), then taken
                // next minute. (Another server's that stopped renewing is taken over above.)
                if info.holder.id == deployer.holder.id {
                    let reason = "the SLO collector's previous holder stopped renewing it";
                    store
                        .break_lease(&name, info.token, &deployer.holder.id, reason)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
            Err(err) => return Err(err.to_string()),
        }
    }
    let services: Vec<String> =
        EnvState::load(&**store, environment).await.map_err(|e| e.to_string())?.services.into_keys().collect();
    let collector = Collector {
        store: store.clone(),
        edge: deployer.edge.clone(),
        clock: Arc::new(SystemClock),
        environment: environment.to_owned(),
        settings: settings.clone(),
    };
    collector.collect(&services).await.map_err(|e| e.to_string())?;
    collector.downsample(DOWNSAMPLE_HOURS_PER_RUN).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Where the probe samples the report may count begin: the longest window any objective (or
/// the 30-day budget view) needs. Older ones are of no use.
fn samples_since(objectives: &[Objective], now: jiff::Timestamp) -> jiff::Timestamp {
    let month = std::time::Duration::from_secs(30 * 86_400);
    let longest = objectives.iter().map(|o| o.window).max().unwrap_or(month).max(month);
    now.checked_sub(longest).unwrap_or(now)
}

/// The probe results the report may count for idle services.
async fn probe_samples(
    store: &dyn windlass_store::Store,
    environment: &str,
    objectives: &[Objective],
    now: jiff::Timestamp,
) -> Vec<windlass_monitor::slo::ProbeSample> {
    match store.probe_samples(environment, samples_since(objectives, now), now).await {
        Ok(rows) => rows
            .into_iter()
            .map(|r| windlass_monitor::slo::ProbeSample {
                service: r.service,
                minute: r.minute,
                successes: r.successes,
                failures: r.failures,
            })
            .collect(),
        Err(err) => {
            tracing::warn!(%err, environment, "cannot read probe samples");
            Vec::new()
        }
    }
}

/// `GET /api/v1/slo/{env}`: every `[slo.<service>]` objective's figures now.
pub(crate) async fn report(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    let config = match state.deployer.shared_config() {
        Ok(config) => config,
        Err(err) => return error(StatusCode::UNPROCESSABLE_ENTITY, err),
    };
    if let Err(err) = windlass_pipeline::plan::check_environment(&config, &environment) {
        return error(StatusCode::NOT_FOUND, err);
    }
    let objectives: Vec<Objective> = config.slo.values().map(Objective::from_config).collect();
    let settings = report::Settings::from_config(&config.monitor);
    let now = SystemClock.now();
    let samples = probe_samples(&*state.store, &environment, &objectives, now).await;
    match report::load_report(&*state.store, &environment, &objectives, &samples, now, &settings).await {
        Ok(report) => Json(report).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}
