//! What the alert engine keeps: alerts (with their acknowledgement), notification groups (what
//! each group already told), silences and incidents (with their timeline). Each record is a JSON
//! document the monitor writes and reads whole, beside the few columns queries filter on; this
//! crate knows nothing of what is inside.
//!
//! One engine step is saved in one transaction ([`AlertStore::save_alerting`]), so a restarted
//! server finds every firing alert with what was sent about it, never half a step.

use jiff::Timestamp;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{QueryContext, Result, StoreError};
use crate::sql::SqlStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub id: String,
    pub environment: String,
    pub service: String,
    /// `firing` or `resolved`.
    pub status: String,
    pub fired_at: Timestamp,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertGroupRecord {
    pub key: String,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SilenceRecord {
    pub id: String,
    pub environment: Option<String>,
    /// None: open-ended (a maintenance window).
    pub ends_at: Option<Timestamp>,
    pub data: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    pub id: i64,
    pub environment: String,
    pub service: String,
    /// `open` or `resolved`.
    pub status: String,
    pub opened_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub data: String,
}

/// One step of the engine, written at once.
#[derive(Debug, Clone, Default)]
pub struct AlertingWrite {
    pub alerts: Vec<AlertRecord>,
    pub groups: Vec<AlertGroupRecord>,
    pub removed_groups: Vec<String>,
    pub silences: Vec<SilenceRecord>,
    pub incidents: Vec<IncidentRecord>,
}

impl AlertingWrite {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.groups.is_empty()
            && self.removed_groups.is_empty()
            && self.silences.is_empty()
            && self.incidents.is_empty()
    }
}

/// What an engine starting up needs.
#[derive(Debug, Clone, Default)]
pub struct AlertingState {
    /// Every alert (one row per fingerprint: its latest firing).
    pub alerts: Vec<AlertRecord>,
    pub groups: Vec<AlertGroupRecord>,
    /// Silences not ended, or ended less than a day ago.
    pub silences: Vec<SilenceRecord>,
    /// The open incidents.
    pub incidents: Vec<IncidentRecord>,
    pub last_incident_id: i64,
}

/// The alert engine's records (part of [`crate::Store`]).
#[async_trait::async_trait]
pub trait AlertStore: Send + Sync {
    /// Writes one engine step in one transaction: upserts, and removes emptied groups.
    async fn save_alerting(&self, write: &AlertingWrite) -> Result<()>;
    async fn load_alerting(&self) -> Result<AlertingState>;
    /// Alerts, newest firing first, optionally of one environment.
    async fn alert_records(&self, environment: Option<&str>) -> Result<Vec<AlertRecord>>;
    /// Silences, newest first (ended ones too), optionally of one environment (silences of no
    /// environment are listed with every environment).
    async fn silence_records(&self, environment: Option<&str>) -> Result<Vec<SilenceRecord>>;
    /// Incidents, newest first.
    async fn incident_records(&self, environment: Option<&str>, limit: u32) -> Result<Vec<IncidentRecord>>;
    async fn incident_record(&self, id: i64) -> Result<Option<IncidentRecord>>;
}

fn col<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).during(column)
}

fn ts(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|_| StoreError::Corrupt { what: "timestamp", value: ms.to_string() })
}

fn alert_from(row: &AnyRow) -> Result<AlertRecord> {
    Ok(AlertRecord {
        id: col(row, "id")?,
        environment: col(row, "environment")?,
        service: col(row, "service")?,
        status: col(row, "status")?,
        fired_at: ts(col(row, "fired_at")?)?,
        data: col(row, "data")?,
    })
}

fn silence_from(row: &AnyRow) -> Result<SilenceRecord> {
    Ok(SilenceRecord {
        id: col(row, "id")?,
        environment: col(row, "environment")?,
        ends_at: col::<Option<i64>>(row, "ends_at")?.map(ts).transpose()?,
        data: col(row, "data")?,
    })
}

fn incident_from(row: &AnyRow) -> Result<IncidentRecord> {
    Ok(IncidentRecord {
        id: col(row, "id")?,
        environment: col(row, "environment")?,
        service: col(row, "service")?,
        status: col(row, "status")?,
        opened_at: ts(col(row, "opened_at")?)?,
        resolved_at: col::<Option<i64>>(row, "resolved_at")?.map(ts).transpose()?,
        data: col(row, "data")?,
    })
}

macro_rules! alert_columns {
    () => {
        "id, environment, service, status, fired_at, data"
    };
}
macro_rules! silence_columns {
    () => {
        "id, environment, ends_at, data"
    };
}
macro_rules! incident_columns {
    () => {
        "id, environment, service, status, opened_at, resolved_at, data"
    };
}

#[async_trait::async_trait]
impl AlertStore for SqlStore {
    async fn save_alerting(&self, write: &AlertingWrite) -> Result<()> {
        if write.is_empty() {
            return Ok(());
        }
        let now = self.clock.now().as_millisecond();
        let mut tx = self.pool.begin().await.during("saving alerts")?;
        for alert in &write.alerts {
            sqlx::query(
                "INSERT INTO alerts (id, environment, service, status, fired_at, updated_at, data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (id) DO UPDATE SET environment = excluded.environment, service = excluded.service,
                 status = excluded.status, fired_at = excluded.fired_at, updated_at = excluded.updated_at,
                 data = excluded.data",
            )
            .bind(&alert.id)
            .bind(&alert.environment)
            .bind(&alert.service)
            .bind(&alert.status)
            .bind(alert.fired_at.as_millisecond())
            .bind(now)
            .bind(&alert.data)
            .execute(&mut *tx)
            .await
            .during("saving an alert")?;
        }
        for group in &write.groups {
            sqlx::query(
                "INSERT INTO alert_groups (key, updated_at, data) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at, data = excluded.data",
            )
            .bind(&group.key)
            .bind(now)
            .bind(&group.data)
            .execute(&mut *tx)
            .await
            .during("saving an alert group")?;
        }
        for key in &write.removed_groups {
            sqlx::query("DELETE FROM alert_groups WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await
                .during("removing an alert group")?;
        }
        for silence in &write.silences {
            sqlx::query(
                "INSERT INTO alert_silences (id, environment, ends_at, updated_at, data) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (id) DO UPDATE SET environment = excluded.environment, ends_at = excluded.ends_at,
                 updated_at = excluded.updated_at, data = excluded.data",
            )
            .bind(&silence.id)
            .bind(silence.environment.as_deref())
            .bind(silence.ends_at.map(|t| t.as_millisecond()))
            .bind(now)
            .bind(&silence.data)
            .execute(&mut *tx)
            .await
            .during("saving a silence")?;
        }
        for incident in &write.incidents {
            sqlx::query(
                "INSERT INTO incidents (id, environment, service, status, opened_at, resolved_at, updated_at, data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (id) DO UPDATE SET status = excluded.status, resolved_at = excluded.resolved_at,
                 updated_at = excluded.updated_at, data = excluded.data",
            )
            .bind(incident.id)
            .bind(&incident.environment)
            .bind(&incident.service)
            .bind(&incident.status)
            .bind(incident.opened_at.as_millisecond())
            .bind(incident.resolved_at.map(|t| t.as_millisecond()))
            .bind(now)
            .bind(&incident.data)
            .execute(&mut *tx)
            .await
            .during("saving an incident")?;
        }
        tx.commit().await.during("saving alerts")?;
        windlass_failpoint::hit("store.after_write");
        Ok(())
    }

    async fn load_alerting(&self) -> Result<AlertingState> {
        let day_ago = self.clock.now().as_millisecond() - 86_400_000;
        let alerts = self.alert_records(None).await?;
        let groups = sqlx::query("SELECT key, data FROM alert_groups ORDER BY key")
            .fetch_all(&self.pool)
            .await
            .during("loading alert groups")?
            .iter()
            .map(|row| Ok(AlertGroupRecord { key: col(row, "key")?, data: col(row, "data")? }))
            .collect::<Result<Vec<_>>>()?;
        let silences = sqlx::query(concat!(
            "SELECT ",
            silence_columns!(),
            " FROM alert_silences WHERE ends_at IS NULL OR ends_at > $1 ORDER BY id"
        ))
        .bind(day_ago)
        .fetch_all(&self.pool)
        .await
        .during("loading silences")?
        .iter()
        .map(silence_from)
        .collect::<Result<Vec<_>>>()?;
        let incidents =
            sqlx::query(concat!("SELECT ", incident_columns!(), " FROM incidents WHERE status = 'open' ORDER BY id"))
                .fetch_all(&self.pool)
                .await
                .during("loading incidents")?
                .iter()
                .map(incident_from)
                .collect::<Result<Vec<_>>>()?;
        let last_incident_id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM incidents")
            .fetch_one(&self.pool)
            .await
            .during("reading the last incident id")?;
        Ok(AlertingState { alerts, groups, silences, incidents, last_incident_id: last_incident_id.unwrap_or(0) })
    }

    async fn alert_records(&self, environment: Option<&str>) -> Result<Vec<AlertRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            alert_columns!(),
            " FROM alerts WHERE ($1 IS NULL OR environment = $1) ORDER BY fired_at DESC, id"
        ))
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .during("listing alerts")?
        .iter()
        .map(alert_from)
        .collect()
    }

    async fn silence_records(&self, environment: Option<&str>) -> Result<Vec<SilenceRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            silence_columns!(),
            " FROM alert_silences WHERE ($1 IS NULL OR environment IS NULL OR environment = $1)",
            " ORDER BY updated_at DESC, id"
        ))
        .bind(environment)
        .fetch_all(&self.pool)
        .await
        .during("listing silences")?
        .iter()
        .map(silence_from)
        .collect()
    }

    async fn incident_records(&self, environment: Option<&str>, limit: u32) -> Result<Vec<IncidentRecord>> {
        sqlx::query(concat!(
            "SELECT ",
            incident_columns!(),
            " FROM incidents WHERE ($1 IS NULL OR environment = $1) ORDER BY id DESC LIMIT $2"
        ))
        .bind(environment)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .during("listing incidents")?
        .iter()
        .map(incident_from)
        .collect()
    }

    async fn incident_record(&self, id: i64) -> Result<Option<IncidentRecord>> {
        sqlx::query(concat!("SELECT ", incident_columns!(), " FROM incidents WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .during("reading an incident")?
            .as_ref()
            .map(incident_from)
            .transpose()
    }
}

/// The tables, shared verbatim by both dialects.
pub(crate) const ALERTS_V4: &str = "
CREATE TABLE alerts (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    fired_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX alerts_by_environment ON alerts (environment, status);
CREATE TABLE alert_groups (
    key TEXT PRIMARY KEY,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE alert_silences (
    id TEXT PRIMARY KEY,
    environment TEXT,
    ends_at BIGINT,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE incidents (
    id BIGINT PRIMARY KEY,
    environment TEXT NOT NULL,
    service TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at BIGINT NOT NULL,
    resolved_at BIGINT,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX incidents_by_environment ON incidents (environment, id);
";
