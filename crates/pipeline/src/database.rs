//! An environment's database as the config's `[database]` describes it, for the deploy's
//! `database` phase, `rollback --restore-database` and `windlass db`: its URL (often a secret),
//! its migrations (built-in SQL files or an external tool, run with the environment's variables),
//! where its backups go and how long they are kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use windlass_config::{Config, Migrate};
use windlass_db::{
    BackupPolicy, BackupStore, Database, NoWriteStop, Options, PgWriteStop, Retention, Source, WriteStop,
};

use crate::edge::EdgeControl;
use crate::vars::{Variables, base_env};

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
    ) -> Result<Option<Target>, String> {
        let Some(db) = &config.database else { return Ok(None) };
        let builtins: BTreeMap<String, String> = [("WINDLASS_ENV".to_owned(), environment.to_owned())].into();
        let url = variables
            .render(&db.url, &builtins)
            .map_err(|err| format!("[database] url: {err} (set it in the environment, the env file or the secrets)"))?;
        let dir = windlass_config::config_dir(config_path);
        let url = sqlite_beside_config(&url, &dir)?;
        let database = Database::new(&url, options).map_err(|err| format!("[database] url: {err}"))?;
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
                template.check_env(&env).map_err(|err| format!("[database] migrate command: {err}"))?;
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
}

impl EdgeMaintenance {
    pub fn new(edge: std::sync::Arc<dyn EdgeControl>, services: Vec<String>) -> Self {
        EdgeMaintenance { edge, services, switched: Vec::new() }
    }
}

#[async_trait::async_trait]
impl WriteStop for EdgeMaintenance {
    async fn begin(&mut self) -> windlass_db::Result<()> {
        let state = self.edge.state().await.map_err(|e| edge_error("the edge's state", e))?;
        for service in self.services.clone() {
            if state.services.get(&service).is_some_and(|s| s.maintenance) {
                continue;
            }
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
fn sqlite_beside_config(url: &str, config_dir: &Path) -> Result<String, String> {
    let Some(rest) = url.strip_prefix("sqlite:") else { return Ok(url.to_owned()) };
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let (file, query) = path.split_once('?').map_or((path, None), |(f, q)| (f, Some(q)));
    if file.is_empty() || file.starts_with('/') || file == ":memory:" {
        return Ok(url.to_owned());
    }
    let absolute = std::path::absolute(config_dir.join(file)).map_err(|e| format!("[database] url: {e}"))?;
    if let Some(parent) = absolute.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("[database] url: cannot create {}: {e}", parent.display()))?;
    }
    Ok(match query {
        Some(query) => format!("sqlite://{}?{query}", absolute.display()),
        None => format!("sqlite://{}", absolute.display()),
    })
}
