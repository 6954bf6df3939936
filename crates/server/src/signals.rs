//! What feeds the alert engine besides probes: the SLO report's burn-rate alerts, the audit
//! trail (failed deploys, failed backups and verifications, failovers) and the edge's own
//! failover decisions. The edge stays the one health source for failover: its moves are
//! recorded and alerted on here, never re-checked.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use windlass_config::AlertSeverity;
use windlass_monitor::alert::Signal;
use windlass_monitor::incident::TimelineEntry;
use windlass_monitor::slo::report::{self, Report};
use windlass_store::{Event, NewEvent};

use crate::courier::Courier;

/// The last audit event the engine has seen, kept so a restarted server neither replays nor
/// skips any.
const CURSOR: &str = "alerts/events-cursor";
/// The newest edge event already recorded (Unix ms), for the same reason.
const EDGE_CURSOR: &str = "alerts/edge-events-cursor";

fn signal(
    source: &str,
    name: &str,
    service: &str,
    environment: &str,
    severity: AlertSeverity,
    summary: String,
) -> Signal {
    Signal {
        source: source.into(),
        name: name.into(),
        service: service.into(),
        environment: environment.into(),
        severity,
        summary,
    }
}

/// Fires the burn-rate alerts the report shows and resolves the ones it no longer shows.
pub(crate) async fn burn_alerts(courier: &Arc<Courier>, report: &Report) {
    let environment = report.environment.as_str();
    let mut firing = Vec::new();
    for service in &report.services {
        for alert in &service.alerts {
            let name =
                format!("burn rate {}x over {} and {}", alert.factor, human(alert.long_secs), human(alert.short_secs));
            let severity = match alert.severity {
                report::Severity::Critical => AlertSeverity::Critical,
                report::Severity::Warning => AlertSeverity::Warning,
            };
            let summary = format!(
                "{} {environment}: error budget burning {:.1}x over {} and {:.1}x over {} (alert at {}x)",
                service.objective.service,
                alert.long_rate,
                human(alert.long_secs),
                alert.short_rate,
                human(alert.short_secs),
                alert.factor
            );
            firing.push(signal("slo", &name, &service.objective.service, environment, severity, summary));
        }
    }
    let ids: BTreeSet<String> = firing.iter().map(Signal::fingerprint).collect();
    let result = courier
        .alerting
        .with(|engine, now| {
            let mut dispatches = Vec::new();
            for signal in &firing {
                dispatches.extend(engine.fire(signal, now));
            }
            let stale: Vec<String> = engine
                .alerts()
                .filter(|a| a.source == "slo" && a.environment == environment && a.is_firing() && !ids.contains(&a.id))
                .map(|a| a.id.clone())
                .collect();
            for id in stale {
                dispatches.extend(engine.resolve_id(&id, now));
            }
            dispatches
        })
        .await;
    match result {
        Ok(dispatches) => courier.deliver(dispatches),
        Err(err) => tracing::warn!(%err, "alerting: cannot save the engine's state"),
    }
}

fn human(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{}m", s / 60),
    }
}

/// Every two seconds: new audit events into the engine, and the edge's failovers into the
/// audit trail.
pub(crate) async fn run(courier: Arc<Courier>, environments: Vec<String>) {
    loop {
        if let Err(problem) = edge_events(&courier, &environments).await {
            tracing::debug!(%problem, "edge events");
        }
        if let Err(problem) = audit_events(&courier, &environments).await {
            tracing::warn!(%problem, "alerting: audit events");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn audit_events(courier: &Arc<Courier>, environments: &[String]) -> Result<(), String> {
    let store = &courier.store;
    let seen: i64 = store.setting(CURSOR).await.map_err(|e| e.to_string())?.and_then(|v| v.parse().ok()).unwrap_or(-1);
    let mut events: Vec<Event> = store.events(None, 500).await.map_err(|e| e.to_string())?;
    events.retain(|e| e.id > seen);
    events.sort_by_key(|e| e.id);
    let Some(last) = events.last().map(|e| e.id) else { return Ok(()) };
    if seen < 0 {
        // First start: history is not news.
        return store.set_setting(CURSOR, &last.to_string()).await.map_err(|e| e.to_string());
    }
    let relevant: Vec<Event> =
        events.into_iter().filter(|e| e.environment.as_ref().is_some_and(|env| environments.contains(env))).collect();
    let result = courier
        .alerting
        .with(|engine, now| {
            let mut dispatches = Vec::new();
            for event in &relevant {
                dispatches.extend(apply(engine, event, now));
            }
            dispatches
        })
        .await;
    match result {
        Ok(dispatches) => courier.deliver(dispatches),
        Err(err) => return Err(err.to_string()),
    }
    store.set_setting(CURSOR, &last.to_string()).await.map_err(|e| e.to_string())
}

/// What one audit event means for alerts and incidents.
fn apply(
    engine: &mut windlass_monitor::alert::Engine,
    event: &Event,
    now: Timestamp,
) -> Vec<windlass_monitor::alert::Dispatch> {
    let Some(environment) = event.environment.as_deref() else { return Vec::new() };
    let subject = event.subject.clone().unwrap_or_default();
    let deploy_failed = signal(
        "deploy",
        "deploy failed",
        "deploys",
        environment,
        AlertSeverity::Warning,
        format!("{environment}: {}", event.message),
    );
    let backup = |name: &str, severity| {
        signal("backup", name, "database", environment, severity, format!("{environment}: {}", event.message))
    };
    let timeline = |kind: &str| TimelineEntry::new(event.at, kind, event.message.clone()).by(&event.actor);
    match event.kind.as_str() {
        "deploy.started" => {
            engine.record(environment, None, timeline("deploy"));
            Vec::new()
        }
        "deploy.succeeded" => {
            engine.record(environment, None, timeline("deploy"));
            engine.resolve(&deploy_failed, now)
        }
        "deploy.failed" | "deploy.rolled_back" => {
            engine.record(environment, None, timeline("deploy"));
            engine.fire(&deploy_failed, now)
        }
        "db.backup_failed" => engine.fire(&backup("backup failed", AlertSeverity::Critical), now),
        "db.backup" => engine.resolve(&backup("backup failed", AlertSeverity::Critical), now),
        "db.verify_failed" => engine.fire(&backup("backup verification failed", AlertSeverity::Warning), now),
        "db.verify" => engine.resolve(&backup("backup verification failed", AlertSeverity::Warning), now),
        "failover" | "edge.failover" | "edge.failback" => {
            let service = subject;
            engine.record(environment, Some(&service), timeline("failover"));
            let on_secondary = signal(
                "edge",
                "traffic on the secondary",
                &service,
                environment,
                AlertSeverity::Warning,
                format!("{service} {environment}: {}", event.message),
            );
            let to_secondary = event.kind == "edge.failover" || event.message.contains("moved to secondary");
            if to_secondary { engine.fire(&on_secondary, now) } else { engine.resolve(&on_secondary, now) }
        }
        _ => Vec::new(),
    }
}

/// The edge's failover and failback decisions, recorded in the audit trail once each (the edge
/// keeps its last events in memory; the cursor is the newest one recorded).
async fn edge_events(courier: &Arc<Courier>, environments: &[String]) -> Result<(), String> {
    let edge = &courier.deployer.edge;
    let events = edge.events().await.map_err(|e| e.to_string())?;
    let store = &courier.store;
    let seen: Option<u64> = store.setting(EDGE_CURSOR).await.map_err(|e| e.to_string())?.and_then(|v| v.parse().ok());
    let newest = events.iter().map(|e| e.at_unix_ms).max();
    let Some(newest) = newest else { return Ok(()) };
    if let Some(seen) = seen {
        for event in events.iter().filter(|e| e.at_unix_ms > seen && (e.kind == "failover" || e.kind == "failback")) {
            // One edge serves the environments this server manages; the first is named.
            let environment = environments.first().cloned();
            let record = NewEvent {
                actor: "edge".into(),
                environment,
                kind: format!("edge.{}", event.kind),
                subject: Some(event.service.clone()),
                message: format!("{}: {}", event.service, event.message),
                data: serde_json::json!({ "at_unix_ms": event.at_unix_ms }).to_string(),
            };
            store.record_event(&record).await.map_err(|e| e.to_string())?;
        }
    }
    store.set_setting(EDGE_CURSOR, &newest.to_string()).await.map_err(|e| e.to_string())
}

/// Automatic rollback (`[pipeline] auto_rollback`): every two seconds, a critical alert of a
/// service that fired after a deploy of it started stops that deploy while it runs (it then
/// undoes its changes), or, once it has succeeded and while the service's previous color is
/// still warm, rolls the environment back to the deploy before. Each deploy is acted on once.
pub(crate) async fn guard(courier: Arc<Courier>, environments: Vec<String>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // One pass is work, not the loop's wait: a stopping server lets it end (it writes the
        // acted-on marker and starts the rollback together), only the sleep is cut short.
        let (deployer, environments) = (courier.deployer.clone(), environments.clone());
        let pass = async move {
            for environment in &environments {
                if let Err(problem) = windlass_pipeline::guard::act_on_critical_alerts(&deployer, environment).await {
                    tracing::warn!(environment, %problem, "automatic rollback");
                }
            }
        };
        if let Err(windlass_pipeline::supervisor::Stopped::ShuttingDown) = courier.deployer.tasks.run(pass).await {
            return;
        }
    }
}
