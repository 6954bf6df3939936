//! Database operations for Windlass: versioned migrations under a lock, a backup before them,
//! restore under a write stop, backup verification and backup schedules.
//!
//! The library takes a URL string (`postgres://...` or `sqlite:///path`) and options; it knows
//! nothing of the config or the pipeline. Entry points:
//! - [`Database::migrate`]: the deploy pipeline's `database` phase.
//! - [`Database::restore`]: `rollback --restore-database` and `windlass db restore`.
//! - [`Database::backup`], [`Database::verify`], [`run_scheduled`]: backups and the server's
//!   scheduler (with [`schedule::next_due`]).

pub mod backup;
mod conn;
pub mod error;
pub mod files;
pub mod intent;
mod lock;
mod process;
pub mod schedule;
pub mod url;
pub mod writestop;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use backup::{BackupStore, Manifest, Retention, Verification};
pub use conn::{Applied, Started};
pub use error::{Error, Result};
pub use files::{Migration, NO_TRANSACTION};
pub use intent::{RecoveredRestore, RestoreIntent, StopPlan};
pub use lock::ADVISORY_KEY;
pub use writestop::{Both, NoWriteStop, PgWriteStop, WriteStop};

use backup::{elapsed_ms, file_sha256, sync_dir};
use conn::{Conn, quote_ident, sql_error};
use url::{Target, redact_in, redact_url, split_password, with_database};

/// Where an environment's backups live: `<config dir>/<backup.dir>/<environment>`, by default
/// `<config dir>/<project.state_dir, .windlass>/backups/<environment>`. The CLI and the
/// pipeline both use this.
pub fn backup_dir(config_dir: &Path, state_dir: Option<&str>, configured: Option<&str>, environment: &str) -> PathBuf {
    match configured {
        Some(dir) => config_dir.join(dir).join(environment),
        None => config_dir.join(state_dir.unwrap_or(".windlass")).join("backups").join(environment),
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for another run's migration lock.
    pub lock_timeout: Duration,
    /// Where `pg_dump`, `pg_restore` and `psql` are; `None`: found in `PATH`.
    pub pg_bin_dir: Option<PathBuf>,
    /// RLIMIT_FSIZE for the dump child (a disk-full stand-in for tests).
    pub dump_file_size_limit: Option<u64>,
    /// How long a child process (`pg_dump`, `pg_restore`, `psql`, a `migrate` command) may run
    /// before its whole process group is killed (`[database] command_timeout`).
    pub command_timeout: Duration,
    /// The environment's name, for the commands messages suggest (`<env>` when unknown).
    pub environment: Option<String>,
}

/// `[database] command_timeout` when the config does not set it.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

impl Default for Options {
    fn default() -> Self {
        Options {
            lock_timeout: Duration::from_secs(60),
            pg_bin_dir: None,
            dump_file_size_limit: None,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            environment: None,
        }
    }
}

/// Where migrations come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Built-in versioned SQL files.
    Dir(PathBuf),
    /// An external tool, run with `sh -c` in exactly this environment (give it `PATH` and
    /// `DATABASE_URL`).
    Command { command: String, env: BTreeMap<String, String>, cwd: Option<PathBuf> },
}

/// Backups taken before a migration.
#[derive(Debug, Clone)]
pub struct BackupPolicy {
    pub store: BackupStore,
    pub retention: Retention,
}

pub struct MigrateRequest<'a> {
    pub source: Source,
    /// Recorded with each applied migration and in the backup's name.
    pub deploy_id: Option<String>,
    /// `None`: no backup before migrating (config `before_migrate = false`).
    pub backup: Option<BackupPolicy>,
    /// Used when a committed change must be undone by a restore.
    pub write_stop: &'a mut dyn WriteStop,
}

#[derive(Debug, Default)]
pub struct MigrateReport {
    pub applied: Vec<Applied>,
    pub backup: Option<Manifest>,
    pub pruned: Vec<String>,
    /// The external command's output, redacted.
    pub output: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Pending {
    pub version: u64,
    pub name: String,
    pub transactional: bool,
    pub has_down: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    pub applied: Vec<Applied>,
    pub pending: Vec<Pending>,
    /// Applied migrations whose file changed since (`0002_orders`).
    pub mismatched: Vec<String>,
    /// Applied versions with no file.
    pub unknown: Vec<u64>,
    /// Migrations run outside a transaction that were interrupted before they were recorded:
    /// `migrate` refuses until `repair --applied` or `--clear` decides.
    pub interrupted: Vec<Started>,
}

/// What `repair` decides about an interrupted migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Its statement took effect: record it as applied.
    Applied,
    /// It did not: forget the start, so the next `migrate` runs it again.
    Clear,
}

#[derive(Debug)]
pub struct RestoreReport {
    pub restored: Manifest,
    /// The backup of the state just before the restore: writes made since `restored` are there.
    pub pre_restore: Manifest,
}

/// What a scheduled job did, for the server to record as an event.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduledResult {
    pub job: ScheduledJob,
    pub ok: bool,
    pub backup: Option<String>,
    pub message: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduledJob {
    Backup,
    Verify,
}

pub struct Database {
    url: String,
    target: Target,
    options: Options,
}

impl Database {
    pub fn new(url: &str, options: Options) -> Result<Self> {
        Ok(Database { target: Target::parse(url)?, url: url.to_owned(), options })
    }

    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// `text` without the URL's password.
    pub fn redact(&self, text: &str) -> String {
        redact_in(text, &self.url)
    }

    fn sqlite_path(&self) -> Option<&Path> {
        match &self.target {
            Target::Sqlite { path } => Some(path),
            Target::Postgres { .. } => None,
        }
    }

    fn sql(&self, err: &sqlx::Error) -> Error {
        sql_error(&self.url, err)
    }

    async fn open(&self, what: &str) -> Result<Conn> {
        Conn::open(&self.url, &lock::application_name(what)).await
    }

    /// Applied and pending migrations, and edited or unknown ones. Takes no lock, writes nothing.
    pub async fn status(&self, dir: &Path) -> Result<Status> {
        let migrations = files::load(dir)?;
        let mut conn = self.open("status").await?;
        let read = async { Ok::<_, sqlx::Error>((conn.history().await?, conn.started().await?)) }.await;
        conn.close().await;
        let (applied, started) = read.map_err(|e| self.sql(&e))?;
        let mut status = compare(&migrations, applied);
        status.interrupted = interrupted(&status.applied, started);
        Ok(status)
    }

    /// Runs the pending migrations under the lock, after a backup.
    pub async fn migrate(&self, request: MigrateRequest<'_>) -> Result<MigrateReport> {
        let mut conn = self.open("migrate").await?;
        let result = match lock::acquire(&mut conn, &self.url, self.sqlite_path(), self.options.lock_timeout).await {
            Ok(_guard) => self.migrate_locked(&mut conn, request).await,
            Err(err) => Err(err),
        };
        conn.close().await;
        result
    }

    async fn migrate_locked(&self, conn: &mut Conn, request: MigrateRequest<'_>) -> Result<MigrateReport> {
        let MigrateRequest { source, deploy_id, backup, write_stop } = request;
        let mut report = MigrateReport::default();
        match source {
            Source::Dir(dir) => {
                let migrations = files::load(&dir)?;
                let status = compare(&migrations, conn.history().await.map_err(|e| self.sql(&e))?);
                let started = conn.started().await.map_err(|e| self.sql(&e))?;
                let stuck = interrupted(&status.applied, started);
                if !stuck.is_empty() {
                    return Err(Error::MigrationInterrupted {
                        environment: self.options.environment.clone().unwrap_or_else(|| "<env>".into()),
                        started: stuck
                            .iter()
                            .map(|s| {
                                format!(
                                    "migration {} ({:04}_{}, outside a transaction) was started at {} by {}{}",
                                    s.version,
                                    s.version,
                                    s.name,
                                    s.started_at,
                                    s.by,
                                    s.deploy_id.as_ref().map(|d| format!(" for deploy {d}")).unwrap_or_default()
                                )
                            })
                            .collect(),
                    });
                }
                if !status.mismatched.is_empty() {
                    return Err(Error::ChecksumMismatch(status.mismatched));
                }
                if !status.unknown.is_empty() {
                    return Err(Error::Migrations(format!(
                        "the database has applied versions with no file in {}: {:?} (a newer release ran here?)",
                        dir.display(),
                        status.unknown
                    )));
                }
                let pending: Vec<&Migration> =
                    migrations.iter().filter(|m| status.pending.iter().any(|p| p.version == m.version)).collect();
                if pending.is_empty() {
                    return Ok(report);
                }
                if let Some(policy) = &backup {
                    report.backup =
                        Some(self.backup_inner(&policy.store, "before-migrate", deploy_id.as_deref()).await?);
                }
                for migration in pending {
                    let started = Instant::now();
                    let result = if migration.transactional {
                        self.apply_transactional(conn, migration, deploy_id.as_deref()).await
                    } else {
                        self.apply_alone(conn, migration, deploy_id.as_deref()).await
                    };
                    match result {
                        Ok(applied) => {
                            tracing::info!(version = migration.version, name = %migration.name, ms = elapsed_ms(started), "applied");
                            report.applied.push(applied);
                        }
                        Err((reason, committed)) => {
                            let restored = if committed {
                                self.restore_after_failure(conn, &backup, &report.backup, write_stop).await?
                            } else {
                                None
                            };
                            let reason = if committed && restored.is_none() {
                                format!(
                                    "{reason} (it ran outside a transaction and may have committed part of its work; \
                                     no backup was taken, so nothing was restored)"
                                )
                            } else {
                                reason
                            };
                            return Err(Error::MigrationFailed {
                                version: migration.version,
                                name: migration.name.clone(),
                                reason,
                                restored,
                            });
                        }
                    }
                }
            }
            Source::Command { command, env, cwd } => {
                let before = conn.fingerprint().await.map_err(|e| self.sql(&e))?;
                if let Some(policy) = &backup {
                    report.backup =
                        Some(self.backup_inner(&policy.store, "before-migrate", deploy_id.as_deref()).await?);
                }
                let mut child = tokio::process::Command::new("sh");
                child.arg("-c").arg(&command).env_clear().envs(&env).kill_on_drop(true);
                if let Some(cwd) = cwd {
                    child.current_dir(cwd);
                }
                let output = match process::output(child, self.options.command_timeout).await {
                    Ok(output) => output,
                    Err(process::RunError::Spawn(err)) => {
                        return Err(Error::CommandFailed {
                            reason: format!("cannot run sh: {err}"),
                            output: String::new(),
                            restored: None,
                        });
                    }
                    Err(process::RunError::TimedOut { output }) => {
                        let after = conn.fingerprint().await.map_err(|e| self.sql(&e))?;
                        let restored = if after != before {
                            self.restore_after_failure(conn, &backup, &report.backup, write_stop).await?
                        } else {
                            None
                        };
                        return Err(Error::CommandFailed {
                            reason: format!("`{}` {}", self.redact(&command), self.timed_out_note()),
                            output: self.redact(&output),
                            restored,
                        });
                    }
                };
                let text = self.redact(&format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ));
                if !output.status.success() {
                    let after = conn.fingerprint().await.map_err(|e| self.sql(&e))?;
                    let restored = if after != before {
                        tracing::warn!("the failed command changed the schema: restoring");
                        self.restore_after_failure(conn, &backup, &report.backup, write_stop).await?
                    } else {
                        None
                    };
                    let tail: String = text
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(Error::CommandFailed {
                        reason: format!("`{}` exited with {}:\n{tail}", self.redact(&command), output.status),
                        output: text,
                        restored,
                    });
                }
                report.output = Some(text);
            }
        }
        if let Some(policy) = &backup {
            report.pruned = policy.store.prune(policy.retention, jiff::Timestamp::now())?;
        }
        Ok(report)
    }

    async fn restore_after_failure(
        &self,
        conn: &mut Conn,
        policy: &Option<BackupPolicy>,
        taken: &Option<Manifest>,
        write_stop: &mut dyn WriteStop,
    ) -> Result<Option<String>> {
        let (Some(policy), Some(manifest)) = (policy, taken) else {
            tracing::error!("a committed change failed and no backup was taken: nothing to restore");
            return Ok(None);
        };
        self.restore_locked(conn, &policy.store, manifest, write_stop, "undoing a failed migration").await?;
        Ok(Some(manifest.name.clone()))
    }

    /// Err((reason, committed)).
    async fn apply_transactional(
        &self,
        conn: &mut Conn,
        migration: &Migration,
        deploy_id: Option<&str>,
    ) -> std::result::Result<Applied, (String, bool)> {
        let started = Instant::now();
        let begin = match conn {
            Conn::Pg(_) => "BEGIN",
            Conn::Lite(_) => "BEGIN IMMEDIATE",
        };
        let fail = |err: sqlx::Error| (self.redact(&err.to_string()), false);
        conn.exec(begin).await.map_err(fail)?;
        let result = async {
            conn.exec(&migration.sql).await?;
            conn.ensure_history().await?;
            let applied = applied_record(migration, deploy_id, started);
            conn.record(&applied).await?;
            windlass_failpoint::hit("db.migrate.before_commit");
            Ok::<_, sqlx::Error>(applied)
        }
        .await;
        match result {
            Ok(applied) => {
                conn.exec("COMMIT").await.map_err(fail)?;
                Ok(applied)
            }
            Err(err) => {
                let _ = conn.exec("ROLLBACK").await;
                Err(fail(err))
            }
        }
    }

    async fn apply_alone(
        &self,
        conn: &mut Conn,
        migration: &Migration,
        deploy_id: Option<&str>,
    ) -> std::result::Result<Applied, (String, bool)> {
        let started = Instant::now();
        let fail = |err: sqlx::Error| (self.redact(&err.to_string()), false);
        conn.ensure_history().await.map_err(fail)?;
        conn.ensure_intents().await.map_err(fail)?;
        // Durably recorded before the statement runs: a kill between the statement and its
        // history row leaves this row, and the next run asks the operator instead of running
        // the statement again (and restoring when it fails).
        conn.record_started(&Started {
            version: migration.version,
            name: migration.name.clone(),
            checksum: migration.checksum.clone(),
            started_at: jiff::Timestamp::now().to_string(),
            deploy_id: deploy_id.map(str::to_owned),
            by: lock::application_name("migrate"),
        })
        .await
        .map_err(fail)?;
        // A non-transactional statement may have committed part of its work (an INVALID index
        // left by a failed CREATE INDEX CONCURRENTLY): treat any failure as committed.
        if let Err(err) = conn.exec(&migration.sql).await {
            // It failed here, in this run: the caller restores (or says it cannot); the start
            // is no longer a question for the operator.
            let _ = conn.forget_started(migration.version).await;
            return Err((self.redact(&err.to_string()), true));
        }
        windlass_failpoint::hit("db.migrate.after_statement");
        let applied = applied_record(migration, deploy_id, started);
        let begin = match conn {
            Conn::Pg(_) => "BEGIN",
            Conn::Lite(_) => "BEGIN IMMEDIATE",
        };
        let recorded = async {
            conn.exec(begin).await?;
            conn.record(&applied).await?;
            conn.forget_started(migration.version).await?;
            conn.exec("COMMIT").await
        }
        .await;
        if let Err(err) = recorded {
            let _ = conn.exec("ROLLBACK").await;
            return Err((self.redact(&err.to_string()), true));
        }
        Ok(applied)
    }

    /// Re-records the checksums of edited applied migrations; says what it changed.
    pub async fn repair(&self, dir: &Path) -> Result<Vec<String>> {
        let migrations = files::load(dir)?;
        let mut conn = self.open("repair").await?;
        let result = async {
            let _guard = lock::acquire(&mut conn, &self.url, self.sqlite_path(), self.options.lock_timeout).await?;
            let applied = conn.history().await.map_err(|e| self.sql(&e))?;
            let mut changes = Vec::new();
            for row in &applied {
                if let Some(file) = migrations.iter().find(|m| m.version == row.version)
                    && file.checksum != row.checksum
                {
                    conn.set_checksum(row.version, &file.checksum).await.map_err(|e| self.sql(&e))?;
                    changes.push(format!(
                        "{:04}_{}: checksum {} -> {}",
                        row.version,
                        row.name,
                        &row.checksum[..12.min(row.checksum.len())],
                        &file.checksum[..12]
                    ));
                }
            }
            Ok(changes)
        }
        .await;
        conn.close().await;
        result
    }

    /// Decides about an interrupted migration (started outside a transaction, never recorded):
    /// `Applied` records it in the history (its statement took effect), `Clear` forgets the
    /// start (the next `migrate` runs it again). The decision and `reason` are recorded in
    /// `_windlass_migration_repairs`. Returns a line saying what was done.
    pub async fn resolve_interrupted(
        &self,
        dir: &Path,
        version: u64,
        resolution: Resolution,
        reason: &str,
    ) -> Result<String> {
        if reason.trim().is_empty() {
            return Err(Error::Config("give a reason (--reason): it is recorded with the decision".into()));
        }
        let migrations = files::load(dir)?;
        let mut conn = self.open("repair").await?;
        let result = async {
            let _guard = lock::acquire(&mut conn, &self.url, self.sqlite_path(), self.options.lock_timeout).await?;
            let applied = conn.history().await.map_err(|e| self.sql(&e))?;
            let started = conn.started().await.map_err(|e| self.sql(&e))?;
            let stuck = interrupted(&applied, started);
            let Some(found) = stuck.iter().find(|s| s.version == version) else {
                let versions: Vec<String> = stuck.iter().map(|s| s.version.to_string()).collect();
                return Err(Error::Migrations(format!(
                    "no interrupted migration has version {version} (interrupted: {})",
                    if versions.is_empty() { "none".to_owned() } else { versions.join(", ") }
                )));
            };
            let by = lock::application_name("repair");
            let begin = match conn {
                Conn::Pg(_) => "BEGIN",
                Conn::Lite(_) => "BEGIN IMMEDIATE",
            };
            let line = match resolution {
                Resolution::Applied => {
                    let file = migrations.iter().find(|m| m.version == version).ok_or_else(|| {
                        Error::Migrations(format!("version {version} has no file in {}", dir.display()))
                    })?;
                    let record = Applied {
                        version,
                        name: file.name.clone(),
                        checksum: file.checksum.clone(),
                        applied_at: jiff::Timestamp::now().to_string(),
                        duration_ms: 0,
                        deploy_id: found.deploy_id.clone(),
                        transactional: false,
                    };
                    let done = async {
                        conn.exec(begin).await?;
                        conn.record(&record).await?;
                        conn.forget_started(version).await?;
                        conn.record_repair(version, "applied", reason, &by).await?;
                        conn.exec("COMMIT").await
                    }
                    .await;
                    if let Err(err) = done {
                        let _ = conn.exec("ROLLBACK").await;
                        return Err(self.sql(&err));
                    }
                    format!("{version:04}_{}: recorded as applied (reason: {reason})", file.name)
                }
                Resolution::Clear => {
                    let done = async {
                        conn.exec(begin).await?;
                        conn.forget_started(version).await?;
                        conn.record_repair(version, "cleared", reason, &by).await?;
                        conn.exec("COMMIT").await
                    }
                    .await;
                    if let Err(err) = done {
                        let _ = conn.exec("ROLLBACK").await;
                        return Err(self.sql(&err));
                    }
                    format!(
                        "{version:04}_{}: interrupted start cleared, it runs again on the next migrate (reason: {reason})",
                        found.name
                    )
                }
            };
            tracing::warn!(version, ?resolution, "{line}");
            Ok(line)
        }
        .await;
        conn.close().await;
        result
    }

    /// Takes a backup now.
    pub async fn backup(&self, store: &BackupStore, reason: &str, deploy_id: Option<&str>) -> Result<Manifest> {
        self.backup_inner(store, reason, deploy_id).await
    }

    fn tool(&self, name: &str) -> PathBuf {
        match &self.options.pg_bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    fn pg_command(&self, tool: &str, url: &str) -> tokio::process::Command {
        let (_, password) = split_password(url);
        let mut command = tokio::process::Command::new(self.tool(tool));
        command.env("PGAPPNAME", lock::application_name(tool)).kill_on_drop(true);
        process::private_umask(&mut command);
        if let Some(password) = password {
            command.env("PGPASSWORD", url::percent_decode(&password));
        }
        command
    }

    async fn run_tool(&self, command: tokio::process::Command, tool: &str) -> Result<std::process::Output, String> {
        process::output(command, self.options.command_timeout).await.map_err(|err| self.run_error(tool, err))
    }

    fn run_error(&self, tool: &str, err: process::RunError) -> String {
        match err {
            process::RunError::Spawn(err) if err.kind() == std::io::ErrorKind::NotFound => format!(
                "{tool} not found ({}); install the PostgreSQL client tools or give their directory (--pg-bin-dir)",
                match &self.options.pg_bin_dir {
                    Some(dir) => format!("looked in {}", dir.display()),
                    None => "looked in PATH".into(),
                }
            ),
            process::RunError::Spawn(err) => format!("cannot run {tool}: {err}"),
            process::RunError::TimedOut { .. } => format!("{tool} {}", self.timed_out_note()),
        }
    }

    fn timed_out_note(&self) -> String {
        format!(
            "did not finish within {:?} ([database] command_timeout): it was stopped, its whole process group killed",
            self.options.command_timeout
        )
    }

    fn failed(&self, tool: &str, output: &std::process::Output) -> String {
        let stderr = String::from_utf8_lossy(&output.stderr);
        self.redact(&format!("{tool} failed ({}): {}", output.status, stderr.trim()))
    }

    async fn pg_dump_major(&self) -> Result<(u32, String)> {
        let mut command = self.pg_command("pg_dump", &self.url);
        command.arg("--version");
        let output = self.run_tool(command, "pg_dump").await.map_err(Error::Backup)?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let major = text
            .split(')')
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|version| version.split('.').next())
            .and_then(|major| major.parse().ok())
            .ok_or_else(|| Error::Backup(format!("cannot read pg_dump's version from `{text}`")))?;
        Ok((major, text))
    }

    async fn backup_inner(&self, store: &BackupStore, reason: &str, deploy_id: Option<&str>) -> Result<Manifest> {
        let started = Instant::now();
        backup::create_private_dir(&store.dir)?;
        let name = store.new_name(Some(deploy_id.unwrap_or(reason)));
        let manifest = match &self.target {
            Target::Postgres { .. } => self.backup_postgres(store, &name).await?,
            Target::Sqlite { path } => self.backup_sqlite(store, &name, path).await?,
        };
        let manifest = Manifest {
            reason: reason.to_owned(),
            deploy_id: deploy_id.map(str::to_owned),
            duration_ms: elapsed_ms(started),
            ..manifest
        };
        windlass_failpoint::hit("db.backup.before_manifest");
        store.write_manifest(&manifest)?;
        tracing::info!(backup = %manifest.name, bytes = manifest.size_bytes, ms = manifest.duration_ms, "backup taken");
        Ok(manifest)
    }

    fn check_space(&self, store: &BackupStore, needed: u64) -> Result<()> {
        let free = backup::free_space(&store.dir)?;
        if free < needed {
            return Err(Error::Backup(format!(
                "not enough free space in {}: {free} bytes available, the database is {needed} bytes; \
                 refusing to continue without a backup",
                store.dir.display()
            )));
        }
        Ok(())
    }

    async fn backup_postgres(&self, store: &BackupStore, name: &str) -> Result<Manifest> {
        let (tool_major, tool) = self.pg_dump_major().await?;
        let mut conn = self.open("backup").await?;
        let result = async {
            let server_major = conn
                .scalar_i64("SELECT current_setting('server_version_num')::bigint / 10000")
                .await
                .map_err(|e| self.sql(&e))?
                .unwrap_or(0);
            if i64::from(tool_major) < server_major {
                return Err(Error::Backup(format!(
                    "pg_dump is version {tool_major} but the server is version {server_major}: pg_dump must be at \
                     least the server's major version; install the PostgreSQL {server_major} client tools"
                )));
            }
            let size = conn
                .scalar_i64("SELECT pg_database_size(current_database())")
                .await
                .map_err(|e| self.sql(&e))?
                .unwrap_or(0);
            self.check_space(store, u64::try_from(size).unwrap_or(0))?;
            conn.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(|e| self.sql(&e))?;
            let snapshot =
                conn.strings("SELECT pg_export_snapshot()").await.map_err(|e| self.sql(&e))?.pop().unwrap_or_default();
            let tables = conn.row_counts().await.map_err(|e| self.sql(&e))?;
            let schema_version = conn.schema_version().await.map_err(|e| self.sql(&e))?;
            let file = format!("{name}.dump");
            let partial = store.dir.join(format!("{file}.partial"));
            let (url, _) = split_password(&self.url);
            let mut command = self.pg_command("pg_dump", &self.url);
            command
                .arg("-Fc")
                .arg("--no-password")
                .arg(format!("--snapshot={snapshot}"))
                .arg("-f")
                .arg(&partial)
                .arg(format!("--dbname={url}"));
            if let Some(limit) = self.options.dump_file_size_limit {
                backup::limit_file_size(&mut command, limit);
            }
            let output = self.run_tool(command, "pg_dump").await;
            let _ = conn.exec("COMMIT").await;
            let failure = match &output {
                Err(message) => Some(message.clone()),
                Ok(output) if !output.status.success() => Some(self.failed("pg_dump", output)),
                Ok(_) => None,
            };
            if let Some(message) = failure {
                let _ = std::fs::remove_file(&partial);
                return Err(Error::Backup(message));
            }
            let final_path = store.dir.join(&file);
            backup::make_private(&partial)?;
            let sha256 = file_sha256(&partial)?;
            let size_bytes = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
            std::fs::rename(&partial, &final_path).map_err(|err| Error::io(final_path.display().to_string(), err))?;
            sync_dir(&final_path);
            Ok(new_manifest(name, "postgres", file, size_bytes, sha256, schema_version, tables, tool))
        }
        .await;
        conn.close().await;
        result
    }

    async fn backup_sqlite(&self, store: &BackupStore, name: &str, path: &Path) -> Result<Manifest> {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        self.check_space(store, size)?;
        let file = format!("{name}.sqlite");
        let partial = store.dir.join(format!("{file}.partial"));
        // VACUUM INTO fills an empty file it is given: made here 0600, so the copy is private.
        backup::create_private_file(&partial).map_err(|err| Error::io(partial.display().to_string(), err))?;
        let mut conn = self.open("backup").await?;
        let vacuum = conn.exec(&format!("VACUUM INTO '{}'", partial.display().to_string().replace('\'', "''"))).await;
        conn.close().await;
        if let Err(err) = vacuum {
            let _ = std::fs::remove_file(&partial);
            return Err(Error::Backup(format!("VACUUM INTO failed: {}", self.redact(&err.to_string()))));
        }
        let mut copy = Conn::open(&format!("sqlite://{}", partial.display()), "windlass backup").await?;
        let counted = async { Ok::<_, sqlx::Error>((copy.row_counts().await?, copy.schema_version().await?)) }.await;
        copy.close().await;
        let (tables, schema_version) = counted.map_err(|e| Error::Backup(e.to_string()))?;
        let final_path = store.dir.join(&file);
        let sha256 = file_sha256(&partial)?;
        let size_bytes = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        std::fs::rename(&partial, &final_path).map_err(|err| Error::io(final_path.display().to_string(), err))?;
        sync_dir(&final_path);
        Ok(new_manifest(name, "sqlite", file, size_bytes, sha256, schema_version, tables, "sqlite VACUUM INTO".into()))
    }

    /// Restores a backup (by name or `latest`) under the migration lock and a write stop: a
    /// fresh backup of the current state first, then the restore, then writes resume.
    pub async fn restore(
        &self,
        store: &BackupStore,
        name: &str,
        write_stop: &mut dyn WriteStop,
    ) -> Result<RestoreReport> {
        let manifest = store.get(name)?;
        let mut conn = self.open("restore").await?;
        let result = match lock::acquire(&mut conn, &self.url, self.sqlite_path(), self.options.lock_timeout).await {
            Ok(_guard) => self.restore_locked(&mut conn, store, &manifest, write_stop, "an explicit restore").await,
            Err(err) => Err(err),
        };
        conn.close().await;
        result
    }

    async fn restore_locked(
        &self,
        conn: &mut Conn,
        store: &BackupStore,
        manifest: &Manifest,
        write_stop: &mut dyn WriteStop,
        purpose: &str,
    ) -> Result<RestoreReport> {
        backup::check_file(store, manifest).map_err(|err| Error::Restore(err.to_string()))?;
        // The intent is on disk before anything is stopped: a kill from here on is found and
        // undone by the next `windlass db` command or the server's start-up.
        let mut intent = RestoreIntent::new(&manifest.name, purpose);
        write_stop.plan(&mut intent.stop).await?;
        // Services an earlier interrupted restore left in maintenance (the CLI cannot lift them)
        // stay recorded for the server, whatever this restore does.
        let inherited: Vec<String> = RestoreIntent::load(store)
            .ok()
            .flatten()
            .map(|earlier| earlier.stop.maintenance)
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !intent.stop.maintenance.contains(s))
            .collect();
        intent.stop.maintenance.extend(inherited.iter().cloned());
        intent.save(store)?;
        windlass_failpoint::hit("db.restore.after_intent");
        if let Err(err) = write_stop.begin().await {
            // `begin` took back what it had stopped.
            let _ = RestoreIntent::remove(store);
            return Err(err);
        }
        let result = async {
            intent.stage(store, "backing up the current state")?;
            let pre_restore = self.backup_inner(store, "pre-restore", None).await?;
            intent.pre_restore = Some(pre_restore.name.clone());
            intent.stage(store, "replacing the database")?;
            windlass_failpoint::hit("db.restore.before_replace");
            match &self.target {
                Target::Postgres { .. } => self.replace_postgres(conn, store, manifest).await?,
                Target::Sqlite { path } => replace_sqlite(store, manifest, path)?,
            }
            intent.stage(store, "letting writes through again")?;
            Ok(RestoreReport { restored: manifest.clone(), pre_restore })
        }
        .await;
        let ended = write_stop.end().await;
        if ended.is_ok() {
            if inherited.is_empty() {
                RestoreIntent::remove(store)?;
            } else {
                intent.stop = StopPlan { database_read_only: false, maintenance: inherited };
                intent.save(store)?;
            }
        }
        let report = result?;
        ended?;
        tracing::info!(backup = %manifest.name, "restored");
        Ok(report)
    }

    /// Finds a restore that was interrupted (its intent left in `store`) and undoes its write
    /// stop: the database's read-only default is reset (PostgreSQL), a half-copied SQLite file
    /// removed. Services it put in maintenance are returned in `maintenance_left` (the edge is
    /// the caller's): the intent stays until [`Database::finish_recovery`] is called, so a
    /// caller that cannot lift them leaves them for one that can. `None`: nothing was
    /// interrupted, or a restore holding the lock is still running (then nothing is touched).
    pub async fn recover_restore(&self, store: &BackupStore) -> Result<Option<RecoveredRestore>> {
        let Some(mut intent) = RestoreIntent::load(store)? else { return Ok(None) };
        let mut conn = self.open("recover").await?;
        let result = match lock::acquire(&mut conn, &self.url, self.sqlite_path(), Duration::ZERO).await {
            Err(Error::Locked(holder)) => {
                tracing::info!(backup = %intent.backup, "a restore is running ({holder}): not recovering it");
                Ok(None)
            }
            Err(err) => Err(err),
            Ok(_guard) => {
                let mut done = Vec::new();
                if intent.stop.database_read_only {
                    PgWriteStop::lift(&self.url).await?;
                    done.push("writes are allowed again (the database had been left read-only)".to_owned());
                    intent.stop.database_read_only = false;
                    if !intent.stop.maintenance.is_empty() {
                        intent.save(store)?;
                    }
                }
                if let Some(path) = self.sqlite_path() {
                    let tmp = sqlite_restore_tmp(path);
                    if std::fs::remove_file(&tmp).is_ok() {
                        done.push(format!("removed the half-copied {}", tmp.display()));
                    }
                }
                let maintenance_left = intent.stop.maintenance.clone();
                if maintenance_left.is_empty() {
                    RestoreIntent::remove(store)?;
                }
                Ok(Some(RecoveredRestore { intent, done, maintenance_left }))
            }
        };
        conn.close().await;
        result
    }

    /// Records that the maintenance mode an interrupted restore left (see
    /// [`Database::recover_restore`]) was lifted: its intent is removed.
    pub fn finish_recovery(store: &BackupStore) -> Result<()> {
        RestoreIntent::remove(store)
    }

    async fn replace_postgres(&self, conn: &mut Conn, store: &BackupStore, manifest: &Manifest) -> Result<()> {
        let schemas = conn
            .strings(
                "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' \
                 ORDER BY 1",
            )
            .await
            .map_err(|e| self.sql(&e))?;
        // One transaction, opened here: the schemas are dropped and the archive replayed in it.
        // `pg_restore --single-transaction` ends its SQL with the COMMIT (and leaves out the
        // BEGIN/COMMIT pairs it otherwise writes around large objects; its own BEGIN only draws
        // a warning). Its SQL streams into psql through this process, never into a file: no
        // plaintext copy of the data is on disk, so a kill leaves none behind. If pg_restore or
        // this process dies part-way, psql's input ends without the COMMIT and PostgreSQL rolls
        // the transaction back: the database is as it was.
        let mut preamble: String = "BEGIN;\n".into();
        for schema in &schemas {
            preamble.push_str(&format!("DROP SCHEMA IF EXISTS {} CASCADE;\n", quote_ident(schema)));
        }
        preamble.push_str("CREATE SCHEMA IF NOT EXISTS public;\n");
        let mut restore = self.pg_command("pg_restore", &self.url);
        restore.arg("--single-transaction").arg("-f").arg("-").arg(store.file_path(manifest));
        let (url, _) = split_password(&self.url);
        let mut psql = self.pg_command("psql", &self.url);
        psql.env("PGOPTIONS", "-c default_transaction_read_only=off")
            .args(["-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "-f", "-"])
            .arg(format!("--dbname={url}"));
        let unchanged = "(the restore ran in one transaction: the database is as it was before it)";
        let piped =
            process::pipe(restore, psql, preamble.as_bytes(), self.options.command_timeout, "db.restore.during_replay")
                .await
                .map_err(|(which, err)| {
                    let tool = match which {
                        "producer" => "pg_restore",
                        "consumer" => "psql",
                        _ => "pg_restore | psql",
                    };
                    Error::Restore(format!("{} {unchanged}", self.run_error(tool, err)))
                })?;
        // psql stopping on an error of its own ends the stream (pg_restore is then killed).
        let psql_failed = !piped.consumer.success() && piped.consumer.code().is_some();
        if !psql_failed && !piped.producer.success() {
            return Err(Error::Restore(self.redact(&format!(
                "pg_restore failed ({}): {} {unchanged}",
                piped.producer,
                piped.producer_stderr.trim()
            ))));
        }
        if !piped.consumer.success() {
            return Err(Error::Restore(self.redact(&format!(
                "psql failed ({}): {} {unchanged}",
                piped.consumer,
                piped.consumer_output.trim()
            ))));
        }
        Ok(())
    }

    /// Restores the backup into a scratch database (SQLite: a copy), checks it and compares
    /// its tables and row counts with the manifest, drops the scratch, records the result.
    pub async fn verify(&self, store: &BackupStore, name: &str) -> Result<Verification> {
        let mut manifest = store.get(name)?;
        let started = Instant::now();
        let outcome = match backup::check_file(store, &manifest) {
            Err(err) => Err(err.to_string()),
            Ok(()) => match &self.target {
                Target::Postgres { .. } => self.verify_postgres(store, &manifest).await?,
                Target::Sqlite { .. } => self.verify_sqlite(store, &manifest).await?,
            },
        };
        let detail = match outcome {
            Err(detail) => Err(detail),
            Ok(counts) => compare_counts(&manifest.tables, &counts),
        };
        let verification = Verification {
            at: jiff::Timestamp::now().to_string(),
            ok: detail.is_ok(),
            detail: detail.unwrap_or_else(|e| e),
            duration_ms: elapsed_ms(started),
        };
        manifest.verification = Some(verification.clone());
        store.write_manifest(&manifest)?;
        Ok(verification)
    }

    /// Ok(Ok(counts)) restored; Ok(Err(why)) the backup is bad; Err: could not check.
    async fn verify_postgres(
        &self,
        store: &BackupStore,
        manifest: &Manifest,
    ) -> Result<Result<BTreeMap<String, i64>, String>> {
        let scratch = format!(
            "windlass_verify_{}_{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
        );
        let mut admin = self.open("verify").await?;
        admin.exec(&format!("CREATE DATABASE {scratch}")).await.map_err(|e| {
            Error::Verify(format!(
                "cannot create the scratch database (the role needs CREATEDB): {}",
                self.redact(&e.to_string())
            ))
        })?;
        let scratch_url = with_database(&self.url, &scratch);
        let result = async {
            let (url, _) = split_password(&scratch_url);
            let mut command = self.pg_command("pg_restore", &self.url);
            command
                .args(["--exit-on-error", "--no-owner", "--no-privileges", "--no-password"])
                .arg(format!("--dbname={url}"))
                .arg(store.file_path(manifest));
            let output = self.run_tool(command, "pg_restore").await.map_err(Error::Verify)?;
            if !output.status.success() {
                return Ok(Err(self.failed("pg_restore", &output)));
            }
            let mut conn = Conn::open(&scratch_url, "windlass verify").await?;
            let counts = conn.row_counts().await.map_err(|e| self.sql(&e));
            conn.close().await;
            Ok(Ok(counts?))
        }
        .await;
        let dropped = admin.exec(&format!("DROP DATABASE IF EXISTS {scratch} WITH (FORCE)")).await;
        admin.close().await;
        if let Err(err) = dropped {
            tracing::warn!(database = %scratch, "cannot drop the scratch database: {}", self.redact(&err.to_string()));
        }
        result
    }

    async fn verify_sqlite(
        &self,
        store: &BackupStore,
        manifest: &Manifest,
    ) -> Result<Result<BTreeMap<String, i64>, String>> {
        let copy = store.dir.join(format!(".verify-{}.sqlite", manifest.name));
        backup::create_private_file(&copy)
            .and_then(|mut to| std::io::copy(&mut std::fs::File::open(store.file_path(manifest))?, &mut to))
            .map_err(|err| Error::io(copy.display().to_string(), err))?;
        let result = async {
            let mut conn = Conn::open(&format!("sqlite://{}", copy.display()), "windlass verify").await?;
            let checked = async {
                let integrity = conn.strings("PRAGMA integrity_check").await?;
                if integrity != ["ok"] {
                    return Ok(Err(format!("integrity_check: {}", integrity.join("; "))));
                }
                Ok(Ok(conn.row_counts().await?))
            }
            .await;
            conn.close().await;
            checked.or_else(|e: sqlx::Error| Ok(Err(format!("cannot read the copy: {e}"))))
        }
        .await;
        let _ = std::fs::remove_file(&copy);
        result
    }
}

/// Runs a scheduled backup (with retention) or a verification of the newest backup, and says
/// what happened; the server records it as an event. Never panics; failures are `ok: false`.
pub async fn run_scheduled(database: &Database, job: ScheduledJob, policy: &BackupPolicy) -> ScheduledResult {
    let started = Instant::now();
    let (ok, backup, message) = match job {
        ScheduledJob::Backup => match database.backup(&policy.store, "scheduled", None).await {
            Ok(manifest) => {
                let pruned = policy.store.prune(policy.retention, jiff::Timestamp::now()).unwrap_or_default();
                let message =
                    format!("backup {} ({} bytes), {} old removed", manifest.name, manifest.size_bytes, pruned.len());
                (true, Some(manifest.name), message)
            }
            Err(err) => (false, None, err.to_string()),
        },
        ScheduledJob::Verify => match database.verify(&policy.store, "latest").await {
            Ok(verification) => {
                let name = policy.store.get("latest").ok().map(|m| m.name);
                (verification.ok, name, verification.detail)
            }
            Err(err) => (false, None, err.to_string()),
        },
    };
    ScheduledResult { job, ok, backup, message: database.redact(&message), duration_ms: elapsed_ms(started) }
}

fn replace_sqlite(store: &BackupStore, manifest: &Manifest, path: &Path) -> Result<()> {
    let io = |err: std::io::Error| Error::Restore(format!("{}: {err}", path.display()));
    let tmp = sqlite_restore_tmp(path);
    // The restored file keeps the live database's mode (the application may read it as another
    // user); the copy is private until it has that mode.
    let mode = std::fs::metadata(path).ok().map(|m| m.permissions());
    backup::create_private_file(&tmp)
        .and_then(|mut to| std::io::copy(&mut std::fs::File::open(store.file_path(manifest))?, &mut to))
        .map_err(io)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(&tmp, mode).map_err(io)?;
    }
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(side));
    }
    sync_dir(path);
    Ok(())
}

/// Where a SQLite restore copies the backup before renaming it over the database.
fn sqlite_restore_tmp(path: &Path) -> PathBuf {
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".windlass-restore");
    path.with_file_name(tmp_name)
}

fn compare_counts(recorded: &BTreeMap<String, i64>, found: &BTreeMap<String, i64>) -> Result<String, String> {
    let mut problems = Vec::new();
    for (table, count) in recorded {
        match found.get(table) {
            None => problems.push(format!("table {table} is missing")),
            Some(n) if n != count => problems.push(format!("{table}: {n} rows, the backup recorded {count}")),
            Some(_) => {}
        }
    }
    for table in found.keys().filter(|t| !recorded.contains_key(*t)) {
        problems.push(format!("unexpected table {table}"));
    }
    if problems.is_empty() {
        Ok(format!("{} tables, {} rows, as recorded", found.len(), found.values().sum::<i64>()))
    } else {
        Err(problems.join("; "))
    }
}

#[allow(clippy::too_many_arguments)]
fn new_manifest(
    name: &str,
    engine: &str,
    file: String,
    size_bytes: u64,
    sha256: String,
    schema_version: Option<i64>,
    tables: BTreeMap<String, i64>,
    tool: String,
) -> Manifest {
    Manifest {
        name: name.to_owned(),
        engine: engine.to_owned(),
        file,
        created_at: jiff::Timestamp::now().to_string(),
        reason: String::new(),
        deploy_id: None,
        size_bytes,
        duration_ms: 0,
        sha256,
        schema_version,
        tables,
        tool,
        verification: None,
    }
}

fn applied_record(migration: &Migration, deploy_id: Option<&str>, started: Instant) -> Applied {
    Applied {
        version: migration.version,
        name: migration.name.clone(),
        checksum: migration.checksum.clone(),
        applied_at: jiff::Timestamp::now().to_string(),
        duration_ms: elapsed_ms(started),
        deploy_id: deploy_id.map(str::to_owned),
        transactional: migration.transactional,
    }
}

fn compare(migrations: &[Migration], applied: Vec<Applied>) -> Status {
    let mut mismatched = Vec::new();
    let mut unknown = Vec::new();
    for row in &applied {
        match migrations.iter().find(|m| m.version == row.version) {
            Some(file) if file.checksum != row.checksum => {
                mismatched.push(format!("{:04}_{}", file.version, file.name))
            }
            Some(_) => {}
            None => unknown.push(row.version),
        }
    }
    let pending = migrations
        .iter()
        .filter(|m| !applied.iter().any(|a| a.version == m.version))
        .map(|m| Pending {
            version: m.version,
            name: m.name.clone(),
            transactional: m.transactional,
            has_down: m.down.is_some(),
        })
        .collect();
    Status { applied, pending, mismatched, unknown, interrupted: Vec::new() }
}

/// The starts with no history row: runs killed between their statement and their record.
fn interrupted(applied: &[Applied], started: Vec<Started>) -> Vec<Started> {
    started.into_iter().filter(|s| !applied.iter().any(|a| a.version == s.version)).collect()
}
