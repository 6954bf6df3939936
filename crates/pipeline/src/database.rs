//! An environment's database as the config's `[database]` describes it, for the deploy's
//! `database` phase, `rollback --restore-database` and `windlass db`: its URL (often a secret),
//! its migrations (built-in SQL files or an external tool, run with the environment's variables),
//! where its backups go and how long they are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use windlass_config::{Config, Migrate};
use windlass_db::{
    BackupPolicy, BackupStore, Database, NoWriteStop, Options, PgWriteStop, Retention, Source, StopPlan, WriteStop,
};

use crate::edge::EdgeControl;
use crate::vars::{RenderError, Variables, base_env};

/// Why `[database]` cannot be resolved for an environment. The database's own error may quote
/// its URL: redact it with the environment's variables before it is shown.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("[database] url: {0} (set it in the environment, the env file or the secrets)")]
    Render(#[source] RenderError),
    #[error("[database] url: {0}")]
    Path(#[source] std::io::Error),
    #[error("[database] url: cannot create {}: {source}", .path.display())]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("[database] url: {0}")]
    Database(#[source] windlass_db::Error),
    #[error("[database] migrate command: {0}")]
    MigrateCommand(#[source] windlass_config::template::TemplateError),
}

/// Everything a database operation needs, resolved.
pub struct Target {
    pub database: Database,
    pub url: String,
    pub store: BackupStore,
    pub retention: Retention,
    pub before_migrate: bool,
    pub source: Option<Source>,
    pub environment: String,
}

impl Target {
    /// `[database]` of `config` for `environment`; none when the config has no database.
    pub fn resolve(
        config: &Config,
        config_path: &Path,
        environment: &str,
        variables: &Variables,
        options: Options,
    ) -> Result<Option<Target>, TargetError> {
        let Some(db) = &config.database else { return Ok(None) };
        let builtins: BTreeMap<String, String> = [("WINDLASS_ENV".to_owned(), environment.to_owned())].into();
        let url = variables.render(&db.url, &builtins).map_err(TargetError::Render)?;
        let dir = windlass_config::config_dir(config_path);
        let url = sqlite_beside_config(&url, &dir)?;
        let options = Options {
            command_timeout: db.command_timeout.as_std(),
            environment: Some(environment.to_owned()),
            ..options
        };
        let database = Database::new(&url, options).map_err(TargetError::Database)?;
        let backups =
            windlass_db::backup_dir(&dir, config.project.state_dir.as_deref(), db.backup.dir.as_deref(), environment);
        let source = match &db.migrate {
            None => None,
            Some(Migrate::Dir(migrations)) => Some(Source::Dir(dir.join(&migrations.value))),
            Some(Migrate::Command(template)) => {
                // The command is never rendered: its variables reach `sh` as its environment.
                let mut env = base_env();
                env.extend(variables.all());
                env.extend(builtins.clone());
                env.insert("DATABASE_URL".into(), url.clone());
                template.check_env(&env).map_err(TargetError::MigrateCommand)?;
                Some(Source::Command { command: template.script().to_owned(), env, cwd: Some(dir.clone()) })
            }
        };
        Ok(Some(Target {
            database,
            url,
            store: BackupStore::new(backups),
            retention: Retention { keep: db.backup.keep, max_age: db.backup.max_age.as_std() },
            before_migrate: db.backup.before_migrate,
            source,
            environment: environment.to_owned(),
        }))
    }

    /// The backup policy before migrating, if backups are on.
    pub fn backup_policy(&self) -> Option<BackupPolicy> {
        self.before_migrate.then(|| BackupPolicy { store: self.store.clone(), retention: self.retention })
    }

    /// The database-level write stop (PostgreSQL: read-only sessions; SQLite: none).
    pub fn database_write_stop(&self) -> Box<dyn WriteStop> {
        if self.url.starts_with("postgres") { Box::new(PgWriteStop::new(&self.url)) } else { Box::new(NoWriteStop) }
    }

    pub fn migrations_dir(&self) -> Option<&PathBuf> {
        match &self.source {
            Some(Source::Dir(dir)) => Some(dir),
            _ => None,
        }
    }
}

/// Stops writes at the edge: maintenance mode for every service of the environment, so users
/// get the maintenance answer instead of writing into a database about to be replaced. Services
/// already in maintenance (an operator's choice) are left as they are, before and after.
pub struct EdgeMaintenance {
    pub edge: std::sync::Arc<dyn EdgeControl>,
    pub services: Vec<String>,
    /// The services this stop put in maintenance, to take out again.
    pub switched: Vec<String>,
    /// The services `plan` found out of maintenance: those `begin` switches.
    planned: Option<Vec<String>>,
}

impl EdgeMaintenance {
    pub fn new(edge: std::sync::Arc<dyn EdgeControl>, services: Vec<String>) -> Self {
        EdgeMaintenance { edge, services, switched: Vec::new(), planned: None }
    }

    async fn to_switch(&self) -> windlass_db::Result<Vec<String>> {
        let state = self.edge.state().await.map_err(|e| edge_error("the edge's state", e))?;
        Ok(self
            .services
            .iter()
            .filter(|service| !state.services.get(*service).is_some_and(|s| s.maintenance))
            .cloned()
            .collect())
    }
}

#[async_trait::async_trait]
impl WriteStop for EdgeMaintenance {
    async fn plan(&mut self, plan: &mut StopPlan) -> windlass_db::Result<()> {
        let services = self.to_switch().await?;
        plan.maintenance.extend(services.iter().cloned());
        self.planned = Some(services);
        Ok(())
    }

    async fn begin(&mut self) -> windlass_db::Result<()> {
        let services = match self.planned.take() {
            Some(planned) => planned,
            None => self.to_switch().await?,
        };
        for service in services {
            if let Err(err) = self.edge.maintenance(Some(&service), true).await {
                // Half a stop is no stop: take back what this one switched.
                let _ = self.end().await;
                return Err(edge_error(&service, err));
            }
            self.switched.push(service);
        }
        Ok(())
    }

    async fn end(&mut self) -> windlass_db::Result<()> {
        let mut first_error = None;
        for service in std::mem::take(&mut self.switched) {
            if let Err(err) = self.edge.maintenance(Some(&service), false).await {
                first_error.get_or_insert(edge_error(&service, err));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

fn edge_error(service: &str, err: crate::edge::EdgeError) -> windlass_db::Error {
    windlass_db::Error::WriteStop(format!("maintenance mode for {service} at the edge: {err}"))
}

/// The edge's maintenance mode, then the database's own stop.
pub struct FullWriteStop {
    pub edge: EdgeMaintenance,
    pub database: Box<dyn WriteStop>,
}

#[async_trait::async_trait]
impl WriteStop for FullWriteStop {
    async fn plan(&mut self, plan: &mut StopPlan) -> windlass_db::Result<()> {
        self.edge.plan(plan).await?;
        self.database.plan(plan).await
    }

    async fn begin(&mut self) -> windlass_db::Result<()> {
        self.edge.begin().await?;
        if let Err(err) = self.database.begin().await {
            // The database could not be stopped: lift the maintenance this stop set.
            let _ = self.edge.end().await;
            return Err(err);
        }
        Ok(())
    }

    async fn end(&mut self) -> windlass_db::Result<()> {
        let database = self.database.end().await;
        let edge = self.edge.end().await;
        database.and(edge)
    }
}

/// A SQLite URL with a relative path (`sqlite://.windlass/app.db`) names a file beside the
/// config, wherever Windlass runs from; its directory is made if missing.
fn sqlite_beside_config(url: &str, config_dir: &Path) -> Result<String, TargetError> {
    let Some(rest) = url.strip_prefix("sqlite:") else { return Ok(url.to_owned()) };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let (file, query) = path.split_once('?').map_or((path, None), |(f, q)| (f, Some(q)));
    if file.is_empty() || file.starts_with('/') || file == ":memory:" {
        return Ok(url.to_owned());
    }
    let absolute = std::path::absolute(config_dir.join(file)).map_err(TargetError::Path)?;
    if let Some(parent) = absolute.parent() {
        windlass_failpoint::private::create_dir_all(parent)
            .map_err(|source| TargetError::CreateDir { path: parent.to_owned(), source })?;
    }
    Ok(match query {
        Some(query) => format!("sqlite://{}?{query}", absolute.display()),
        None => format!("sqlite://{}", absolute.display()),
    })
}

/// Why an interrupted restore could not be recovered.
#[derive(Debug, thiserror::Error)]
pub enum RestoreRecoveryError {
    #[error(transparent)]
    Deploy(#[from] crate::DeployError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Database(#[from] windlass_db::Error),
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error("no [database]")]
    NoDatabase,
    /// The recovery itself failed; the text is redacted (it may quote the database's URL).
    #[error("{0}")]
    Recover(String),
}

/// Server start-up: a restore of `environment`'s database interrupted by a kill (its intent is
/// left in the backup directory) is undone: writes are let through again, the services it put
/// in maintenance at the edge are taken out, and the operator is told, as a
/// `db.restore_interrupted` event and in the returned notes. Nothing is connected to unless
/// an intent is there.
pub async fn recover_interrupted_restore(
    deployer: &crate::deploy::Deployer,
    environment: &str,
) -> Result<Vec<String>, RestoreRecoveryError> {
    let config = deployer.shared_config()?;
    if config.database.is_none() {
        return Ok(Vec::new());
    }
    let dir = windlass_config::config_dir(&deployer.config_path);
    let db = config.database.as_ref().ok_or(RestoreRecoveryError::NoDatabase)?;
    let store = BackupStore::new(windlass_db::backup_dir(
        &dir,
        config.project.state_dir.as_deref(),
        db.backup.dir.as_deref(),
        environment,
    ));
    let mut notes: Vec<String> = store
        .remove_plaintext_leftovers()
        .iter()
        .map(|file| {
            format!("{environment}: removed {}, the plaintext SQL of a restore that was interrupted", file.display())
        })
        .collect();
    if windlass_db::RestoreIntent::load(&store)?.is_none() {
        return Ok(notes);
    }
    let variables = deployer.variables(&config, environment).await?;
    let target = Target::resolve(&config, &deployer.config_path, environment, &variables, Options::default())?
        .ok_or(RestoreRecoveryError::NoDatabase)?;
    let Some(recovered) = target
        .database
        .recover_restore(&target.store)
        .await
        .map_err(|e| RestoreRecoveryError::Recover(variables.redact(&e.to_string())))?
    else {
        return Ok(notes);
    };
    let mut lifted = Vec::new();
    let mut failed = Vec::new();
    for service in &recovered.maintenance_left {
        match deployer.edge.maintenance(Some(service), false).await {
            Ok(()) => lifted.push(service.clone()),
            Err(err) => failed.push(format!("{service} ({err})")),
        }
    }
    let mut recovered = recovered;
    if !lifted.is_empty() {
        recovered.done.push(format!("maintenance mode lifted at the edge for {}", lifted.join(", ")));
    }
    recovered.maintenance_left.retain(|s| !lifted.contains(s));
    if failed.is_empty() {
        Database::finish_recovery(&target.store)?;
    }
    let message = variables.redact(&recovered.message(environment));
    let event = windlass_store::NewEvent {
        actor: "windlass".into(),
        environment: Some(environment.to_owned()),
        kind: "db.restore_interrupted".into(),
        subject: Some(recovered.intent.backup.clone()),
        message: message.clone(),
        data: serde_json::to_string(&recovered.intent).unwrap_or_default(),
    };
    deployer.store.record_event(&event).await?;
    notes.push(format!("{environment}: {message}"));
    if !failed.is_empty() {
        notes.push(format!("{environment}: cannot lift maintenance mode for {}", failed.join(", ")));
    }
    Ok(notes)
}
