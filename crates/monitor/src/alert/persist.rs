//! The engine over the store: every step is saved (in one transaction) before its dispatches are
//! handed out, so a restarted server resumes with its firing alerts and never re-sends what it
//! had sent. (A crash between the save and the sending loses those notifications rather than
//! sending them twice; the next repeat or escalation reaches people again.)

use std::sync::Arc;

use jiff::Timestamp;
use windlass_config::Alerts;
use windlass_config::oncall::OnCall;
use windlass_store::{
    AlertGroupRecord, AlertRecord, AlertingWrite, Clock, IncidentRecord, SilenceRecord, Store, StoreError,
};

use super::{AlertStatus, Changes, Engine, Snapshot};
use crate::incident::Incident;

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the state store holds an unreadable {what}: {source}")]
    Json { what: &'static str, source: serde_json::Error },
}

fn json<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, PersistError> {
    serde_json::to_string(value).map_err(|source| PersistError::Json { what, source })
}

fn parse<T: serde::de::DeserializeOwned>(what: &'static str, data: &str) -> Result<T, PersistError> {
    serde_json::from_str(data).map_err(|source| PersistError::Json { what, source })
}

/// The store's form of an engine step.
pub fn to_write(changes: &Changes) -> Result<AlertingWrite, PersistError> {
    Ok(AlertingWrite {
        alerts: changes
            .alerts
            .iter()
            .map(|a| {
                Ok(AlertRecord {
                    id: a.id.clone(),
                    environment: a.environment.clone(),
                    service: a.service.clone(),
                    status: match a.status {
                        AlertStatus::Firing => "firing".into(),
                        AlertStatus::Resolved => "resolved".into(),
                    },
                    fired_at: a.fired_at,
                    data: json("alert", a)?,
                })
            })
            .collect::<Result<_, PersistError>>()?,
        groups: changes
            .groups
            .iter()
            .map(|g| Ok(AlertGroupRecord { key: g.key.clone(), data: json("alert group", g)? }))
            .collect::<Result<_, PersistError>>()?,
        removed_groups: changes.removed_groups.clone(),
        silences: changes
            .silences
            .iter()
            .map(|s| {
                Ok(SilenceRecord {
                    id: s.id.clone(),
                    environment: s.matchers.environment.clone(),
                    ends_at: s.ends_at,
                    data: json("silence", s)?,
                })
            })
            .collect::<Result<_, PersistError>>()?,
        incidents: changes.incidents.iter().map(incident_record).collect::<Result<_, PersistError>>()?,
    })
}

fn incident_record(i: &Incident) -> Result<IncidentRecord, PersistError> {
    Ok(IncidentRecord {
        id: i64::try_from(i.id).unwrap_or(i64::MAX),
        environment: i.environment.clone(),
        service: i.service.clone(),
        status: i.status.as_str().into(),
        opened_at: i.opened_at,
        resolved_at: i.resolved_at,
        data: json("incident", i)?,
    })
}

/// An incident as the store keeps it.
pub fn incident_from(record: &IncidentRecord) -> Result<Incident, PersistError> {
    parse("incident", &record.data)
}

/// An alert as the store keeps it.
pub fn alert_from(record: &AlertRecord) -> Result<super::Alert, PersistError> {
    parse("alert", &record.data)
}

/// A silence as the store keeps it.
pub fn silence_from(record: &SilenceRecord) -> Result<super::Silence, PersistError> {
    parse("silence", &record.data)
}

/// Reads back what an engine needs to resume.
pub async fn load(store: &dyn Store) -> Result<Snapshot, PersistError> {
    let state = store.load_alerting().await?;
    Ok(Snapshot {
        alerts: state.alerts.iter().map(alert_from).collect::<Result<_, _>>()?,
        groups: state.groups.iter().map(|g| parse("alert group", &g.data)).collect::<Result<_, _>>()?,
        silences: state.silences.iter().map(silence_from).collect::<Result<_, _>>()?,
        incidents: state.incidents.iter().map(incident_from).collect::<Result<_, _>>()?,
        last_incident_id: u64::try_from(state.last_incident_id).unwrap_or(0),
    })
}

/// The engine behind a lock, saving every step: what `windlass server` holds.
#[derive(Debug)]
pub struct Alerting {
    engine: tokio::sync::Mutex<Engine>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl Alerting {
    /// An engine resumed from the store.
    pub async fn open(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        alerts: &Alerts,
        oncall: &OnCall,
    ) -> Result<Self, PersistError> {
        let snapshot = load(store.as_ref()).await?;
        let engine = Engine::restore(alerts, oncall, snapshot);
        Ok(Alerting { engine: tokio::sync::Mutex::new(engine), store, clock })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs one step on the engine at the clock's now, and saves what it changed before handing
    /// back its answer (dispatches to send, or the engine's refusal). If the save fails the step
    /// stays in memory and is saved with the next one.
    pub async fn with<T>(&self, step: impl FnOnce(&mut Engine, Timestamp) -> T) -> Result<T, PersistError> {
        let mut engine = self.engine.lock().await;
        let answer = step(&mut engine, self.clock.now());
        let changes = engine.take_changes();
        if !changes.is_empty() {
            let write = to_write(&changes)?;
            if let Err(err) = self.store.save_alerting(&write).await {
                engine.keep_changes(changes);
                return Err(err.into());
            }
        }
        Ok(answer)
    }
}
