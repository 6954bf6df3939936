//! [`SqlStore`]: the [`Store`] over sqlx's `Any` driver, for SQLite and PostgreSQL alike.
//!
//! Every statement is written in the SQL both databases accept (`$1` parameters, `ON CONFLICT`,
//! `RETURNING`). Each operation is one statement, or a transaction whose first statement writes,
//! so SQLite never has to upgrade a read lock (which `busy_timeout` cannot wait out).

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::{QueryContext, Result, StoreError};
use crate::model::*;
use crate::schema::{MIGRATIONS, latest_version};
use crate::{Backend, Clock, Store};
use rollups::{ProbeSampleRow, RollupRow, SloCursor};

#[path = "rollups.rs"]
pub(crate) mod rollups;

// Column lists as macros, so that every query is one static string built at compile time.
macro_rules! lease_columns {
    () => {
        "name, holder_id, holder_host, holder_pid, purpose, acquired_at, heartbeat_at, ttl_ms, token"
    };
}

macro_rules! deploy_columns {
    () => {
        "id, environment, status, actor, reason, config_snapshot, artifacts, owner, started_at, finished_at, current_step, error"
    };
}

macro_rules! event_columns {
    () => {
        "id, at, actor, environment, kind, subject, message, data"
    };
}

macro_rules! token_columns {
    () => {
        "name, owner, owner_kind, admin, created_at, expires_at, last_used_at, revoked_at"
    };
}

/// A token's last-used time is kept to the minute: a busy token writes once a minute, not once
/// a request.
const TOKEN_USE_RESOLUTION_MS: i64 = 60_000;

/// Arbitrary but fixed: the PostgreSQL advisory lock key that serializes schema migrations.
const MIGRATION_LOCK_KEY: i64 = 0x5749_4E44_4C41_5353; // "WINDLASS"

#[derive(Debug)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    backend: Backend,
    pub(crate) clock: Arc<dyn Clock>,
}

/// Splits a location into the URL sqlx connects to and the backend it names.
fn parse_location(location: &str) -> Result<(String, Backend)> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        return Ok((location.to_owned(), Backend::Postgres));
    }
    let path = location.strip_prefix("sqlite://").unwrap_or(location);
    // Windlass sets SQLite's options itself; a `?` would also hide the file from the checks that
    // keep it private.
    if path.is_empty() || path.contains('?') || location.contains("://") && !location.starts_with("sqlite://") {
        return Err(StoreError::BadLocation(location.to_owned()));
    }
    Ok((format!("sqlite://{path}?mode=rwc"), Backend::Sqlite))
}

fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn timestamp(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|_| StoreError::Corrupt { what: "timestamp", value: ms.to_string() })
}

fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// How long opening waits for another process that is switching the same new file to WAL.
const WAL_SWITCH_PATIENCE: Duration = Duration::from_secs(10);

/// Puts a SQLite file in WAL mode (readers beside the one writer; the mode is stored in the file).
/// Switching takes an exclusive lock that SQLite's busy timeout does not wait for, so when two
/// processes open a new store at once the loser is told "database is locked" at once: it retries
/// until the winner is done (then the file is already in WAL and nothing needs the lock).
async fn enable_wal(pool: &AnyPool) -> Result<(), sqlx::Error> {
    let deadline = std::time::Instant::now() + WAL_SWITCH_PATIENCE;
    loop {
        match sqlx::query("PRAGMA journal_mode=WAL").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(db))
                if matches!(db.code().as_deref(), Some("5" | "6")) && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// The store holds the ack-link secret, step output and rendered commands: its file, and the
/// `-wal` and `-shm` SQLite makes beside it (with the main file's mode), are 0600. A missing
/// directory is made 0700 and a missing file created empty 0600 (an empty file is an empty
/// database) before SQLite opens it; existing looser files are tightened (and that is logged).
fn private_sqlite_files(path: &std::path::Path) -> std::io::Result<()> {
    use windlass_failpoint::private;
    let name = path.to_string_lossy();
    if name.is_empty() || name.starts_with(':') {
        // In memory: no file to prepare.
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private::create_dir_all(dir)?;
    }
    match private::create_new(path) {
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        private::tighten_logged(std::path::Path::new(&file))?;
    }
    Ok(())
}

/// A write has committed: the point where a crash test may stop the process.
fn committed() {
    windlass_failpoint::hit("store.after_write");
}

impl SqlStore {
    pub async fn open(location: &str, clock: Arc<dyn Clock>) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (url, backend) = parse_location(location)?;
        if backend == Backend::Sqlite {
            let path = std::path::Path::new(location.strip_prefix("sqlite://").unwrap_or(location));
            private_sqlite_files(path)
                .map_err(|err| StoreError::Open { location: location.to_owned(), source: sqlx::Error::Io(err) })?;
        }
        let open_error = |source| StoreError::Open { location: redact_url(location), source };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .map_err(open_error)?;
        if backend == Backend::Sqlite {
            enable_wal(&pool).await.map_err(open_error)?;
        }
        let store = SqlStore { pool, backend, clock };
        store.migrate(&redact_url(location)).await?;
        Ok(store)
    }

    fn now_ms(&self) -> i64 {
        millis(self.clock.now())
    }

    /// Applies the schema migrations this binary knows, once, under a lock.
    async fn migrate(&self, location: &str) -> Result<()> {
        let mut conn = self.pool.acquire().await.during("taking a connection for migrations")?;
        let begin = match self.backend {
            Backend::Sqlite => "BEGIN IMMEDIATE".to_owned(),
            Backend::Postgres => format!("BEGIN; SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(begin)).execute(&mut *conn).await.during("locking for migrations")?;
        let result = async {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS windlass_schema (version BIGINT NOT NULL, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await
            .during("creating the schema table")?;
            let current: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM windlass_schema")
                .fetch_one(&mut *conn)
                .await
                .during("reading the schema version")?;
            let current = current.unwrap_or(0);
            if current > latest_version() {
                return Err(StoreError::SchemaTooNew {
                    location: location.to_owned(),
                    found: current,
                    known: latest_version(),
                });
            }
            for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
                let sql = match self.backend {
                    Backend::Sqlite => migration.sqlite.clone(),
                    Backend::Postgres => migration.postgres.clone(),
                };
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *conn)
                    .await
                    .during("applying a schema migration")?;
                sqlx::query("INSERT INTO windlass_schema (version, applied_at) VALUES ($1, $2)")
                    .bind(migration.version)
                    .bind(self.now_ms())
                    .execute(&mut *conn)
                    .await
                    .during("recording a schema migration")?;
                tracing::info!(version = migration.version, "state store schema migrated");
            }
            Ok(())
        }
        .await;
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = sqlx::raw_sql(end).execute(&mut *conn).await.during("ending the migration transaction");
        result.and(ended).map(drop)
    }

    async fn lease_row(&self, name: &str) -> Result<Option<LeaseInfo>> {
        let row = sqlx::query(concat!("SELECT ", lease_columns!(), " FROM leases WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .during("reading a lease")?;
        row.map(|row| self.lease_from_row(&row)).transpose()
    }

    /// Replaces the stale lease `stale` with a new one for `holder`, and records the takeover, in
    /// one transaction whose first statement (the delete, guarded by the stale lease's token and
    /// by its staleness now) writes. `None`: it was renewed, released or taken over meanwhile.
    async fn take_over(
        &self,
        stale: LeaseInfo,
        holder: &Holder,
        purpose: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        let now = self.now_ms();
        let mut tx = self.pool.begin().await.during("taking over a stale lease")?;
        let deleted = sqlx::query("DELETE FROM leases WHERE name = $1 AND token = $2 AND $3 - heartbeat_at > ttl_ms")
            .bind(&stale.name)
            .bind(stale.token)
            .bind(now)
            .execute(&mut *tx)
            .await
            .during("taking over a stale lease")?;
        if deleted.rows_affected() == 0 {
            tx.rollback().await.during("taking over a stale lease")?;
            return Ok(None);
        }
        let token: i64 = sqlx::query_scalar(
            "INSERT INTO lease_tokens (name, last_token) VALUES ($1, 1)
             ON CONFLICT (name) DO UPDATE SET last_token = lease_tokens.last_token + 1
             RETURNING last_token",
        )
        .bind(&stale.name)
        .fetch_one(&mut *tx)
        .await
        .during("drawing a lease token")?;
        sqlx::query(
            "INSERT INTO leases (name, holder_id, holder_host, holder_pid, purpose, acquired_at, heartbeat_at, ttl_ms, token)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8)",
        )
        .bind(&stale.name)
        .bind(&holder.id)
        .bind(&holder.host)
        .bind(i64::from(holder.pid))
        .bind(purpose)
        .bind(now)
        .bind(duration_ms(ttl))
        .bind(token)
        .execute(&mut *tx)
        .await
        .during("taking over a stale lease")?;
        let message = format!(
            "{} took over stale lease `{}` from {} ({}), held since {}: no heartbeat since {}, longer than its TTL of {} s",
            holder.id,
            stale.name,
            stale.holder,
            stale.purpose,
            stale.acquired_at,
            stale.heartbeat_at,
            stale.ttl.as_secs()
        );
        let data = serde_json::json!({
            "previous": {
                "holder": stale.holder.id,
                "host": stale.holder.host,
                "pid": stale.holder.pid,
                "purpose": stale.purpose,
                "token": stale.token,
                "acquired_at": stale.acquired_at.to_string(),
                "heartbeat_at": stale.heartbeat_at.to_string(),
                "ttl_ms": duration_ms(stale.ttl),
            },
            "token": token,
            "purpose": purpose,
        });
        let event = NewEvent {
            actor: holder.id.clone(),
            environment: None,
            kind: "lease.taken_over".into(),
            subject: Some(stale.name.clone()),
            message,
            data: data.to_string(),
        };
        insert_event(&mut *tx, now, &event).await?;
        tx.commit().await.during("taking over a stale lease")?;
        committed();
        tracing::warn!(lease = stale.name, previous = %stale.holder, token, "took over a stale lease");
        Ok(Some(Lease { name: stale.name.clone(), holder: holder.clone(), token, ttl, taken_over: Some(stale) }))
    }

    fn lease_from_row(&self, row: &AnyRow) -> Result<LeaseInfo> {
        let heartbeat_ms: i64 = get(row, "heartbeat_at")?;
        let ttl_ms: i64 = get(row, "ttl_ms")?;
        Ok(LeaseInfo {
            name: get(row, "name")?,
            holder: Holder {
                id: get(row, "holder_id")?,
                host: get(row, "holder_host")?,
                pid: u32::try_from(get::<i64>(row, "holder_pid")?).unwrap_or(0),
            },
            purpose: get(row, "purpose")?,
            acquired_at: timestamp(get(row, "acquired_at")?)?,
            heartbeat_at: timestamp(heartbeat_ms)?,
            ttl: Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)),
            token: get(row, "token")?,
            stale: self.now_ms() - heartbeat_ms > ttl_ms,
        })
    }
}

fn get<'r, T>(row: &'r AnyRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(column).during(column)
}

/// A PostgreSQL URL without its password, for messages.
fn redact_url(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}@{host}")
            }
            None => location.to_owned(),
        },
        None => location.to_owned(),
    }
}

fn deploy_from_row(row: &AnyRow) -> Result<Deploy> {
    Ok(Deploy {
        id: DeployId(get(row, "id")?),
        environment: get(row, "environment")?,
        status: DeployStatus::parse(&get::<String>(row, "status")?)?,
        actor: get(row, "actor")?,
        reason: get(row, "reason")?,
        config_snapshot: get(row, "config_snapshot")?,
        artifacts: get(row, "artifacts")?,
        owner: get(row, "owner")?,
        started_at: timestamp(get(row, "started_at")?)?,
        finished_at: get::<Option<i64>>(row, "finished_at")?.map(timestamp).transpose()?,
        current_step: get(row, "current_step")?,
        error: get(row, "error")?,
    })
}

fn step_from_row(row: &AnyRow) -> Result<StepRecord> {
    Ok(StepRecord {
        deploy_id: DeployId(get(row, "deploy_id")?),
        seq: get(row, "seq")?,
        phase: get(row, "phase")?,
        name: get(row, "name")?,
        status: StepStatus::parse(&get::<String>(row, "status")?)?,
        started_at: timestamp(get(row, "started_at")?)?,
        finished_at: get::<Option<i64>>(row, "finished_at")?.map(timestamp).transpose()?,
        output: get(row, "output")?,
        error: get(row, "error")?,
    })
}

fn event_from_row(row: &AnyRow) -> Result<Event> {
    Ok(Event {
        id: get(row, "id")?,
        at: timestamp(get(row, "at")?)?,
        actor: get(row, "actor")?,
        environment: get(row, "environment")?,
        kind: get(row, "kind")?,
        subject: get(row, "subject")?,
        message: get(row, "message")?,
        data: get(row, "data")?,
    })
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.backend
    }

    async fn create_deploy(&self, deploy: &NewDeploy) -> Result<DeployId> {
        let now = self.clock.now();
        let base = DeployId::base(&deploy.environment, now);
        // A second deploy in the same second gets `-2`, then `-3`: the insert that wins a
        // candidate id is the one whose row is written; no read-then-write race.
        for attempt in 1..=1000 {
            let id = if attempt == 1 { base.clone() } else { format!("{base}-{attempt}") };
            let inserted = sqlx::query(
                "INSERT INTO deploys (id, environment, status, actor, reason, config_snapshot, artifacts, owner, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&id)
            .bind(&deploy.environment)
            .bind(DeployStatus::Running.as_str())
            .bind(&deploy.actor)
            .bind(deploy.reason.as_deref())
            .bind(&deploy.config_snapshot)
            .bind(&deploy.artifacts)
            .bind(&deploy.owner)
            .bind(millis(now))
            .execute(&self.pool)
            .await
            .during("recording a deploy")?;
            if inserted.rows_affected() == 1 {
                committed();
                return Ok(DeployId(id));
            }
        }
        Err(StoreError::Corrupt { what: "deploy ids", value: format!("{base} and 999 more are taken") })
    }

    async fn deploy(&self, id: &DeployId) -> Result<Option<Deploy>> {
        let row = sqlx::query(concat!("SELECT ", deploy_columns!(), " FROM deploys WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .during("reading a deploy")?;
        row.as_ref().map(deploy_from_row).transpose()
    }

    async fn deploys(&self, environment: &str, limit: u32) -> Result<Vec<Deploy>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            deploy_columns!(),
            " FROM deploys WHERE environment = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
        ))
        .bind(environment)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .during("listing deploys")?;
        rows.iter().map(deploy_from_row).collect()
    }

    async fn finish_deploy(&self, id: &DeployId, status: DeployStatus, error: Option<&str>) -> Result<()> {
        // A deploy already final (say, marked interrupted by a restarted server) keeps its status.
        let updated =
            sqlx::query("UPDATE deploys SET status = $2, finished_at = $3, error = $4 WHERE id = $1 AND status = $5")
                .bind(id.as_str())
                .bind(status.as_str())
                .bind(self.now_ms())
                .bind(error)
                .bind(DeployStatus::Running.as_str())
                .execute(&self.pool)
                .await
                .during("finishing a deploy")?;
        if updated.rows_affected() == 0 && self.deploy(id).await?.is_none() {
            return Err(StoreError::DeployNotFound(id.to_string()));
        }
        committed();
        Ok(())
    }

    async fn start_step(&self, id: &DeployId, phase: &str, name: &str) -> Result<i64> {
        let mut tx = self.pool.begin().await.during("starting a step")?;
        let seq: Option<i64> = sqlx::query_scalar(
            "INSERT INTO deploy_steps (deploy_id, seq, phase, name, status, started_at, output)
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, '' FROM deploy_steps WHERE deploy_id = $1
             RETURNING seq",
        )
        .bind(id.as_str())
        .bind(phase)
        .bind(name)
        .bind(StepStatus::Running.as_str())
        .bind(self.now_ms())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::DeployNotFound(id.to_string()),
            _ => StoreError::Query { operation: "starting a step", source: err },
        })?;
        let seq = seq.ok_or_else(|| StoreError::DeployNotFound(id.to_string()))?;
        let updated = sqlx::query("UPDATE deploys SET current_step = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await
            .during("starting a step")?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::DeployNotFound(id.to_string()));
        }
        tx.commit().await.during("starting a step")?;
        committed();
        Ok(seq)
    }

    async fn append_step_output(&self, id: &DeployId, seq: i64, output: &str) -> Result<()> {
        sqlx::query("UPDATE deploy_steps SET output = output || $3 WHERE deploy_id = $1 AND seq = $2")
            .bind(id.as_str())
            .bind(seq)
            .bind(output)
            .execute(&self.pool)
            .await
            .during("storing step output")?;
        committed();
        Ok(())
    }

    async fn finish_step(&self, id: &DeployId, seq: i64, status: StepStatus, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE deploy_steps SET status = $3, finished_at = $4, error = $5
             WHERE deploy_id = $1 AND seq = $2 AND status = $6",
        )
        .bind(id.as_str())
        .bind(seq)
        .bind(status.as_str())
        .bind(self.now_ms())
        .bind(error)
        .bind(StepStatus::Running.as_str())
        .execute(&self.pool)
        .await
        .during("finishing a step")?;
        committed();
        Ok(())
    }

    async fn steps(&self, id: &DeployId) -> Result<Vec<StepRecord>> {
        let rows = sqlx::query(
            "SELECT deploy_id, seq, phase, name, status, started_at, finished_at, output, error
             FROM deploy_steps WHERE deploy_id = $1 ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await
        .during("listing steps")?;
        rows.iter().map(step_from_row).collect()
    }

    async fn interrupt_running(&self, owner: &str) -> Result<Vec<Interrupted>> {
        let now = self.now_ms();
        let mut tx = self.pool.begin().await.during("marking interrupted deploys")?;
        sqlx::query(
            "UPDATE deploy_steps SET status = $1, finished_at = $2, error = 'the server stopped during this step'
             WHERE status = $3 AND deploy_id IN (SELECT id FROM deploys WHERE status = $4 AND owner = $5)",
        )
        .bind(StepStatus::Interrupted.as_str())
        .bind(now)
        .bind(StepStatus::Running.as_str())
        .bind(DeployStatus::Running.as_str())
        .bind(owner)
        .execute(&mut *tx)
        .await
        .during("marking interrupted steps")?;
        let rows = sqlx::query(
            "UPDATE deploys SET status = $1, finished_at = $2, error = 'the server stopped while this deploy was running'
             WHERE status = $3 AND owner = $4 RETURNING id, environment, current_step",
        )
        .bind(DeployStatus::Interrupted.as_str())
        .bind(now)
        .bind(DeployStatus::Running.as_str())
        .bind(owner)
        .fetch_all(&mut *tx)
        .await
        .during("marking interrupted deploys")?;
        tx.commit().await.during("marking interrupted deploys")?;
        committed();
        let mut interrupted = rows
            .iter()
            .map(|row| {
                Ok(Interrupted {
                    deploy_id: DeployId(get(row, "id")?),
                    environment: get(row, "environment")?,
                    step: get(row, "current_step")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        interrupted.sort_by(|a, b| a.deploy_id.cmp(&b.deploy_id));
        Ok(interrupted)
    }

    async fn acquire_lease(&self, name: &str, holder: &Holder, purpose: &str, ttl: Duration) -> Result<Acquire> {
        // A lease released between our failed insert and our read is simply tried again.
        for _ in 0..3 {
            let token: i64 = sqlx::query_scalar(
                "INSERT INTO lease_tokens (name, last_token) VALUES ($1, 1)
                 ON CONFLICT (name) DO UPDATE SET last_token = lease_tokens.last_token + 1
                 RETURNING last_token",
            )
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .during("drawing a lease token")?;
            let now = self.now_ms();
            let inserted = sqlx::query(
                "INSERT INTO leases (name, holder_id, holder_host, holder_pid, purpose, acquired_at, heartbeat_at, ttl_ms, token)
                 VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8) ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(&holder.id)
            .bind(&holder.host)
            .bind(i64::from(holder.pid))
            .bind(purpose)
            .bind(now)
            .bind(duration_ms(ttl))
            .bind(token)
            .execute(&self.pool)
            .await
            .during("taking a lease")?;
            if inserted.rows_affected() == 1 {
                committed();
                return Ok(Acquire::Acquired(Lease {
                    name: name.to_owned(),
                    holder: holder.clone(),
                    token,
                    ttl,
                    taken_over: None,
                }));
            }
            match self.lease_row(name).await? {
                Some(held) if held.stale => {
                    if let Some(lease) = self.take_over(held, holder, purpose, ttl).await? {
                        return Ok(Acquire::Acquired(lease));
                    }
                    // Someone renewed it, or took it over first: look again.
                }
                Some(held) => return Ok(Acquire::Held(held)),
                None => {}
            }
        }
        Err(StoreError::Corrupt {
            what: "lease",
            value: format!("`{name}` changed hands three times while being taken"),
        })
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<()> {
        let updated = sqlx::query("UPDATE leases SET heartbeat_at = $3 WHERE name = $1 AND token = $2")
            .bind(&lease.name)
            .bind(lease.token)
            .bind(self.now_ms())
            .execute(&self.pool)
            .await
            .during("renewing a lease")?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::LeaseLost { name: lease.name.clone() });
        }
        committed();
        Ok(())
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM leases WHERE name = $1 AND token = $2")
            .bind(&lease.name)
            .bind(lease.token)
            .execute(&self.pool)
            .await
            .during("releasing a lease")?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::LeaseLost { name: lease.name.clone() });
        }
        committed();
        Ok(())
    }

    async fn lease(&self, name: &str) -> Result<Option<LeaseInfo>> {
        self.lease_row(name).await
    }

    async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let rows = sqlx::query(concat!("SELECT ", lease_columns!(), " FROM leases ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .during("listing leases")?;
        rows.iter().map(|row| self.lease_from_row(row)).collect()
    }

    async fn break_lease(&self, name: &str, token: i64, actor: &str, reason: &str) -> Result<Option<LeaseInfo>> {
        let Some(info) = self.lease_row(name).await?.filter(|l| l.token == token) else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await.during("breaking a lease")?;
        let deleted = sqlx::query("DELETE FROM leases WHERE name = $1 AND token = $2")
            .bind(name)
            .bind(token)
            .execute(&mut *tx)
            .await
            .during("breaking a lease")?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        let message =
            format!("{actor} broke lease `{name}` held by {} since {}: {reason}", info.holder, info.acquired_at);
        insert_event(
            &mut *tx,
            self.now_ms(),
            &NewEvent {
                actor: actor.to_owned(),
                environment: None,
                kind: "lease.broken".into(),
                subject: Some(name.to_owned()),
                message,
                data: format!("{{\"token\":{token}}}"),
            },
        )
        .await?;
        tx.commit().await.during("breaking a lease")?;
        committed();
        Ok(Some(info))
    }

    async fn record_event(&self, event: &NewEvent) -> Result<i64> {
        let id = insert_event(&self.pool, self.now_ms(), event).await?;
        committed();
        Ok(id)
    }

    async fn events(&self, environment: Option<&str>, limit: u32) -> Result<Vec<Event>> {
        let rows = match environment {
            Some(environment) => {
                sqlx::query(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM events WHERE environment = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(environment)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query(concat!("SELECT ", event_columns!(), " FROM events ORDER BY id DESC LIMIT $1"))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .during("listing events")?;
        rows.iter().map(event_from_row).collect()
    }

    async fn create_token(&self, token: &NewToken) -> Result<()> {
        let inserted = sqlx::query(
            "INSERT INTO tokens (name, hash, created_at, owner, owner_kind, admin, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&token.name)
        .bind(&token.hash)
        .bind(self.now_ms())
        .bind(&token.owner)
        .bind(token.kind.as_str())
        .bind(i64::from(token.admin))
        .bind(token.expires_at.map(millis))
        .execute(&self.pool)
        .await
        .during("creating a token")?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::TokenExists(token.name.clone()));
        }
        committed();
        Ok(())
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenInfo>> {
        let row = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .during("looking up a token")?;
        row.as_ref().map(token_from_row).transpose()
    }

    async fn token_used(&self, name: &str) -> Result<bool> {
        let now = self.now_ms();
        let updated = sqlx::query(
            "UPDATE tokens SET last_used_at = $2 WHERE name = $1 AND (last_used_at IS NULL OR last_used_at <= $3)",
        )
        .bind(name)
        .bind(now)
        .bind(now - TOKEN_USE_RESOLUTION_MS)
        .execute(&self.pool)
        .await
        .during("recording a token's use")?;
        Ok(updated.rows_affected() > 0)
    }

    async fn revoke_token(&self, name: &str) -> Result<bool> {
        let revoked = sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL")
            .bind(name)
            .bind(self.now_ms())
            .execute(&self.pool)
            .await
            .during("revoking a token")?;
        committed();
        Ok(revoked.rows_affected() > 0)
    }

    async fn tokens(&self) -> Result<Vec<TokenInfo>> {
        let rows = sqlx::query(concat!("SELECT ", token_columns!(), " FROM tokens ORDER BY name"))
            .fetch_all(&self.pool)
            .await
            .during("listing tokens")?;
        rows.iter().map(token_from_row).collect()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .during("reading a setting")
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await
        .during("writing a setting")?;
        committed();
        Ok(())
    }

    async fn add_probe_samples(&self, environment: &str, samples: &[ProbeSampleRow]) -> Result<()> {
        self.add_probe_samples_impl(environment, samples).await
    }

    async fn probe_samples(
        &self,
        environment: &str,
        from: Timestamp,
        before: Timestamp,
    ) -> Result<Vec<ProbeSampleRow>> {
        self.probe_samples_impl(environment, from, before).await
    }

    async fn forget_probe_samples(&self, environment: &str, before: Timestamp) -> Result<u64> {
        self.forget_probe_samples_impl(environment, before).await
    }

    async fn put_rollups(&self, rows: &[RollupRow], cursor: Option<&SloCursor>) -> Result<()> {
        self.put_rollups_impl(rows, cursor).await
    }

    async fn slo_cursor(&self, environment: &str) -> Result<Option<SloCursor>> {
        self.slo_cursor_impl(environment).await
    }

    async fn rollups(
        &self,
        environment: &str,
        service: Option<&str>,
        span_secs: Option<i64>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupRow>> {
        self.rollups_impl(environment, service, span_secs, from, to).await
    }

    async fn first_rollup(&self, environment: &str, span_secs: i64, from: Timestamp) -> Result<Option<Timestamp>> {
        self.first_rollup_impl(environment, span_secs, from).await
    }

    async fn last_rollup(&self, environment: &str, span_secs: i64) -> Result<Option<Timestamp>> {
        self.last_rollup_impl(environment, span_secs).await
    }

    async fn replace_rollups(
        &self,
        environment: &str,
        span_secs: i64,
        before: Timestamp,
        replacements: &[RollupRow],
    ) -> Result<u64> {
        self.replace_rollups_impl(environment, span_secs, before, replacements).await
    }
}

fn token_from_row(row: &AnyRow) -> Result<TokenInfo> {
    let name: String = get(row, "name")?;
    Ok(TokenInfo {
        owner: get::<Option<String>>(row, "owner")?.unwrap_or_else(|| name.clone()),
        name,
        kind: TokenOwnerKind::parse(&get::<String>(row, "owner_kind")?)?,
        admin: get::<i64>(row, "admin")? != 0,
        created_at: timestamp(get(row, "created_at")?)?,
        expires_at: get::<Option<i64>>(row, "expires_at")?.map(timestamp).transpose()?,
        last_used_at: get::<Option<i64>>(row, "last_used_at")?.map(timestamp).transpose()?,
        revoked_at: get::<Option<i64>>(row, "revoked_at")?.map(timestamp).transpose()?,
    })
}

async fn insert_event<'e, E>(executor: E, at: i64, event: &NewEvent) -> Result<i64>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query_scalar(
        "INSERT INTO events (at, actor, environment, kind, subject, message, data)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(at)
    .bind(&event.actor)
    .bind(event.environment.as_deref())
    .bind(&event.kind)
    .bind(event.subject.as_deref())
    .bind(&event.message)
    .bind(&event.data)
    .fetch_one(executor)
    .await
    .during("recording an event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert_eq!(parse_location("state.db").unwrap().1, Backend::Sqlite);
        assert_eq!(parse_location("sqlite:///tmp/x.db").unwrap().0, "sqlite:///tmp/x.db?mode=rwc");
        assert_eq!(parse_location("postgresql://u@h/db").unwrap().1, Backend::Postgres);
        assert!(parse_location("mysql://u@h/db").is_err());
        assert!(parse_location("").is_err());
        assert_eq!(redact_url("postgres://user:hunter2@host:5432/db"), "postgres://user@host:5432/db");
    }
}
