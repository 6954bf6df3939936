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
use windlass_api::slo as wire;
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
        Ok(report) => Json(report_item(&report)).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

// The API's SLO report, converted field by field from the monitor's (the API crate must not
// depend on the monitor).

fn span(duration: std::time::Duration) -> wire::Span {
    wire::Span { secs: duration.as_secs(), nanos: duration.subsec_nanos() }
}

fn counts_item(counts: &report::WindowCounts) -> wire::WindowCounts {
    wire::WindowCounts {
        window_secs: counts.window_secs,
        source: match counts.source {
            report::Source::Edge => wire::Source::Edge,
            report::Source::Probes => wire::Source::Probes,
            report::Source::None => wire::Source::None,
        },
        total: counts.total,
        bad: counts.bad,
    }
}

fn service_item(service: &report::ServiceReport) -> wire::ServiceReport {
    let o = &service.objective;
    wire::ServiceReport {
        objective: wire::Objective {
            service: o.service.clone(),
            availability: o.availability,
            error_rate: o.error_rate,
            p95: o.p95.map(span),
            p99: o.p99.map(span),
            window: span(o.window),
        },
        sli: service.sli,
        window: counts_item(&service.window),
        maintenance: service.maintenance,
        rate_limited: service.rate_limited,
        budget: service
            .budget
            .iter()
            .map(|b| wire::BudgetLeft {
                window_secs: b.window_secs,
                budget_minutes: b.budget_minutes,
                share_left: b.share_left,
                minutes_left: b.minutes_left,
                counts: counts_item(&b.counts),
            })
            .collect(),
        burn_rates: service
            .burn_rates
            .iter()
            .map(|b| wire::BurnRate { window_secs: b.window_secs, rate: b.rate, counts: counts_item(&b.counts) })
            .collect(),
        latency: service
            .latency
            .iter()
            .map(|l| wire::LatencyFigure {
                quantile: l.quantile.clone(),
                target_ms: l.target_ms,
                observed_ms: l.observed_ms,
                met: l.met,
                slower_share: l.slower_share,
            })
            .collect(),
        alerts: service
            .alerts
            .iter()
            .map(|a| wire::BurnAlert {
                severity: match a.severity {
                    report::Severity::Critical => wire::BurnSeverity::Critical,
                    report::Severity::Warning => wire::BurnSeverity::Warning,
                },
                factor: a.factor,
                long_secs: a.long_secs,
                short_secs: a.short_secs,
                long_rate: a.long_rate,
                short_rate: a.short_rate,
            })
            .collect(),
    }
}

fn report_item(report: &report::Report) -> wire::SloReport {
    wire::SloReport {
        environment: report.environment.clone(),
        at: report.at.to_string(),
        services: report.services.iter().map(service_item).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The API's report must be the JSON the monitor's report made before it was typed.
    #[test]
    fn the_api_report_serializes_as_the_monitors() {
        let counts = |source| report::WindowCounts { window_secs: 3600, source, total: 1000, bad: 3 };
        let service = report::ServiceReport {
            objective: Objective {
                service: "web".into(),
                availability: Some(0.999),
                error_rate: None,
                p95: Some(std::time::Duration::from_millis(250)),
                p99: None,
                window: std::time::Duration::from_secs(30 * 86_400),
            },
            sli: Some(0.997),
            window: counts(report::Source::Edge),
            maintenance: 2,
            rate_limited: 5,
            budget: vec![report::budget_left(counts(report::Source::Probes), 0.001)],
            burn_rates: vec![report::BurnRate { window_secs: 300, rate: None, counts: counts(report::Source::None) }],
            latency: vec![report::LatencyFigure {
                quantile: "p95".into(),
                target_ms: 250.0,
                observed_ms: Some(180.5),
                met: Some(true),
                slower_share: Some(0.01),
            }],
            alerts: vec![report::Alert {
                severity: report::Severity::Warning,
                factor: 6.0,
                long_secs: 21_600,
                short_secs: 1800,
                long_rate: 7.5,
                short_rate: 8.25,
            }],
        };
        let report = report::Report {
            environment: "production".into(),
            at: "2026-12-03T14:00:00.5Z".parse().expect("a timestamp"),
            services: vec![service],
        };
        assert_eq!(
            serde_json::to_value(&report).expect("the monitor's report"),
            serde_json::to_value(report_item(&report)).expect("the API's report")
        );
    }
}
