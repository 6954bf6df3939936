//! The scheduled backups and verifications of `[database] backup.schedule|verify`. The last run
//! of each job is kept in the store, so a restarted server neither repeats nor forgets one; a
//! short lease keeps two servers sharing a store from running the same job. Every run is an event
//! (`db.backup`, `db.backup_failed`, `db.verify`, `db.verify_failed`), which the monitor turns into
//! alerts. The server calls [`run_due`] every 30 s; this module does not loop or sleep itself.

use windlass_db::schedule::is_due;
use windlass_db::{BackupPolicy, ScheduledJob};

use crate::{DeployError, Deployer};

/// Why the scheduled jobs could not be looked at or started.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Schedule(#[from] windlass_db::Error),
    /// The database the jobs run against could not be resolved from the config.
    #[error("{0}")]
    Target(String),
}

/// Runs the jobs of `environment` that are due now (see the module docs).
pub async fn run_due(deployer: &Deployer, environment: &str) -> Result<(), ScheduleError> {
    let config = deployer.shared_config()?;
    let Some(database) = &config.database else { return Ok(()) };
    let jobs = [
        (ScheduledJob::Backup, "backup", database.backup.schedule),
        (ScheduledJob::Verify, "verify", database.backup.verify),
    ];
    let now = deployer.clock.now();
    let mut due = Vec::new();
    for (job, name, schedule) in jobs {
        let Some(schedule) = schedule else { continue };
        let key = format!("db-schedule/{environment}/{name}");
        let last = deployer.store.setting(&key).await?.and_then(|t| t.parse().ok());
        if is_due(schedule, last, now) {
            due.push((job, name, key));
        }
    }
    if due.is_empty() {
        return Ok(());
    }
    let lease_name = format!("db-schedule/{environment}");
    let lease = match deployer
        .store
        .acquire_lease(&lease_name, &deployer.holder, "scheduled database job", std::time::Duration::from_secs(3600))
        .await?
    {
        windlass_store::Acquire::Acquired(lease) => lease,
        windlass_store::Acquire::Held(_) => return Ok(()),
    };
    // Another server sharing the store may have run these while this one waited for the lease.
    let mut still_due = Vec::new();
    for (job, name, key) in due {
        let last = deployer.store.setting(&key).await?.and_then(|t| t.parse().ok());
        let schedule = match job {
            ScheduledJob::Backup => database.backup.schedule,
            ScheduledJob::Verify => database.backup.verify,
        };
        if let Some(schedule) = schedule
            && is_due(schedule, last, now)
        {
            still_due.push((job, name, key));
        }
    }
    let due = still_due;
    let names: Vec<&'static str> = due.iter().map(|(_, name, _)| *name).collect();
    let result = async {
        let variables = deployer.variables(&config, environment).await?;
        let target = crate::database::Target::resolve(
            &config,
            &deployer.config_path,
            environment,
            &variables,
            windlass_db::Options::default(),
        )
        .map_err(|e| ScheduleError::Target(e.to_string()))?
        .ok_or_else(|| ScheduleError::Target("no [database]".into()))?;
        let policy = BackupPolicy { store: target.store.clone(), retention: target.retention };
        for (job, name, key) in due {
            let outcome = windlass_db::run_scheduled(&target.database, job, &policy).await;
            let kind = if outcome.ok { format!("db.{name}") } else { format!("db.{name}_failed") };
            let event = windlass_store::NewEvent {
                actor: "windlass".into(),
                environment: Some(environment.to_owned()),
                kind: kind.clone(),
                subject: outcome.backup.clone(),
                message: variables.redact(&outcome.message),
                data: serde_json::to_string(&outcome).unwrap_or_default(),
            };
            let _ = deployer.store.record_event(&event).await;
            if outcome.ok {
                tracing::info!(environment, "{kind}: {}", variables.redact(&outcome.message));
            } else {
                tracing::error!(environment, "{kind}: {}", variables.redact(&outcome.message));
            }
            deployer.store.set_setting(&key, &now.to_string()).await?;
        }
        Ok::<(), ScheduleError>(())
    }
    .await;
    if let Err(problem) = &result {
        // A job that cannot even start failed too: say so where alerts look.
        for name in names {
            let event = windlass_store::NewEvent {
                actor: "windlass".into(),
                environment: Some(environment.to_owned()),
                kind: format!("db.{name}_failed"),
                subject: None,
                message: format!("the scheduled {name} could not start: {problem}"),
                data: "{}".into(),
            };
            let _ = deployer.store.record_event(&event).await;
        }
    }
    let _ = deployer.store.release_lease(&lease).await;
    result
}
