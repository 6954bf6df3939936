//! `windlass db status|plan|migrate|repair|backup|backups|restore|verify <env>`: an
//! environment's database, from the config's `[database]` section. Replaces `db-migration.sh`
//! and `verify-backups.sh`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use windlass_db::{BackupPolicy, MigrateRequest, Options, Source, WriteStop};
use windlass_pipeline::database::Target;
use windlass_pipeline::vars::Variables;

use crate::table::{Align, Table};
use crate::{Outcome, OutputFormat, UsageError, config_path, load_config};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Applied and pending migrations; exit 1 if an applied one was edited.
    Status(Common),
    /// What `migrate` would run, in order, with non-transactional steps flagged.
    Plan(Common),
    /// Back up, then apply the pending migrations under the migration lock.
    Migrate {
        #[command(flatten)]
        common: Common,
        /// Recorded with each applied migration and in the backup's name.
        #[arg(long)]
        deploy_id: Option<String>,
        /// Skip the backup even if `backup.before_migrate` is on.
        #[arg(long)]
        no_backup: bool,
    },
    /// Re-record the checksums of applied migrations whose files were edited; or decide about a
    /// migration interrupted between its statement and its record (--applied or --clear).
    Repair {
        #[command(flatten)]
        common: Common,
        /// The interrupted migration's statement took effect: record it as applied.
        #[arg(long, value_name = "VERSION", conflicts_with = "clear", requires = "reason")]
        applied: Option<u64>,
        /// It did not: forget that it started, so the next migrate runs it again.
        #[arg(long, value_name = "VERSION", requires = "reason")]
        clear: Option<u64>,
        /// Why (recorded with the decision in _windlass_migration_repairs).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take a backup now.
    Backup(Common),
    /// List the environment's backups, oldest first.
    Backups(Common),
    /// Restore a backup (default: the newest) under a write stop, after a fresh backup.
    Restore {
        #[command(flatten)]
        common: Common,
        /// A backup name from `windlass db backups`, or `latest`.
        backup: Option<String>,
        /// Do not ask for confirmation (required without a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Restore a backup into a scratch database and compare it with its manifest.
    Verify {
        #[command(flatten)]
        common: Common,
        /// A backup name, or `latest` (the default).
        backup: Option<String>,
        /// Verify every backup.
        #[arg(long, conflicts_with = "backup")]
        all: bool,
    },
}

#[derive(clap::Args)]
struct Common {
    /// The environment, as declared under [environments].
    environment: String,
    /// The config file [default: ./windlass.toml]
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The env file to read [default: .env.<environment> beside the config, if present]
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Seconds to wait for another run's migration lock.
    #[arg(long, default_value_t = 60)]
    lock_timeout: u64,
    /// The directory holding pg_dump, pg_restore and psql [default: found in PATH]
    #[arg(long, env = "WINDLASS_PG_BIN_DIR")]
    pg_bin_dir: Option<PathBuf>,
    /// `json`: print JSON instead of text (status, plan, backups).
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    /// The older spelling of `--output json`, kept so scripts using it keep working.
    #[arg(long, hide = true)]
    json: bool,
}

impl Common {
    fn json(&self) -> bool {
        self.json || self.output == OutputFormat::Json
    }
}

/// Everything a command needs, resolved from the config, the environment and its secrets.
async fn resolve(common: &Common) -> anyhow::Result<Target> {
    let path = config_path(common.config.clone());
    let config = load_config(&path)?;
    let environment = common.environment.clone();
    if !config.environments.contains_key(&environment) {
        let declared: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        return Err(UsageError(format!(
            "environment `{environment}` is not declared in {} (declared: {})",
            path.display(),
            declared.join(", ")
        ))
        .into());
    }
    let stored = windlass_secrets::load_if_present(&config, &environment, &Default::default())
        .await
        .map_err(|err| UsageError(format!("the secrets of `{environment}`: {err}")))?;
    let (variables, _problems) = Variables::resolve(&config, &environment, common.env_file.as_deref(), stored.as_ref());
    let options = Options {
        lock_timeout: Duration::from_secs(common.lock_timeout),
        pg_bin_dir: common.pg_bin_dir.clone(),
        dump_file_size_limit: None,
        // The config's `[database] command_timeout` replaces it in `Target::resolve`.
        ..Options::default()
    };
    let target = Target::resolve(&config, &path, &environment, &variables, options)
        .map_err(|err| UsageError(err.to_string()))?
        .ok_or_else(|| UsageError(format!("{} has no [database] section", path.display())))?;
    recover_interrupted_restore(&target).await;
    Ok(target)
}

/// A restore killed under its write stop (its intent left in the backup directory) is undone
/// before any command runs, and the operator told what was interrupted and what was done (on
/// stderr: stdout may be JSON).
async fn recover_interrupted_restore(target: &Target) {
    for file in target.store.remove_plaintext_leftovers() {
        eprintln!("windlass: removed {}, the plaintext SQL of a restore that was interrupted", file.display());
    }
    match target.database.recover_restore(&target.store).await {
        Ok(None) => {}
        Ok(Some(recovered)) => eprintln!("windlass: {}", recovered.message(&target.environment)),
        Err(err) => eprintln!(
            "windlass: an interrupted restore left its intent in {} and cannot be undone now: {err}",
            target.store.dir.display()
        ),
    }
}

fn migrations_dir(target: &Target) -> anyhow::Result<&Path> {
    match &target.source {
        Some(Source::Dir(dir)) => Ok(dir),
        Some(Source::Command { .. }) => Err(UsageError(
            "[database] migrate runs an external command: status, plan and repair need `migrate = { dir = \"...\" }`"
                .into(),
        )
        .into()),
        None => Err(UsageError("[database] has no `migrate`".into()).into()),
    }
}

fn write_stop(target: &Target) -> Box<dyn WriteStop> {
    target.database_write_stop()
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: Args) -> anyhow::Result<Outcome> {
    match args.command {
        Command::Status(common) => status(&common, false).await,
        Command::Plan(common) => status(&common, true).await,
        Command::Migrate { common, deploy_id, no_backup } => {
            let target = resolve(&common).await?;
            let Some(source) = target.source.clone() else {
                return Err(UsageError("[database] has no `migrate`".into()).into());
            };
            let backup = (target.before_migrate && !no_backup)
                .then(|| BackupPolicy { store: target.store.clone(), retention: target.retention });
            let mut stop = write_stop(&target);
            let report = target
                .database
                .migrate(MigrateRequest { source, deploy_id, backup, write_stop: stop.as_mut() })
                .await?;
            if let Some(backup) = &report.backup {
                println!("backup {} ({} bytes, {} ms)", backup.name, backup.size_bytes, backup.duration_ms);
            }
            if let Some(output) = &report.output {
                print!("{output}");
            }
            for applied in &report.applied {
                println!(
                    "applied {:04}_{} in {} ms{}",
                    applied.version,
                    applied.name,
                    applied.duration_ms,
                    if applied.transactional { "" } else { " (no transaction)" }
                );
            }
            if report.applied.is_empty() && report.output.is_none() {
                println!("{}: up to date", target.environment);
            }
            for name in &report.pruned {
                println!("removed old backup {name}");
            }
            Ok(Outcome::Ok)
        }
        Command::Repair { common, applied, clear, reason } => {
            let target = resolve(&common).await?;
            let decision = match (applied, clear) {
                (Some(version), _) => Some((version, windlass_db::Resolution::Applied)),
                (None, Some(version)) => Some((version, windlass_db::Resolution::Clear)),
                (None, None) => None,
            };
            if let Some((version, resolution)) = decision {
                let line = target
                    .database
                    .resolve_interrupted(
                        migrations_dir(&target)?,
                        version,
                        resolution,
                        reason.as_deref().unwrap_or_default(),
                    )
                    .await?;
                println!("repaired {line}");
                return Ok(Outcome::Ok);
            }
            let changes = target.database.repair(migrations_dir(&target)?).await?;
            if changes.is_empty() {
                println!("nothing to repair: every applied migration matches its file");
            }
            for change in changes {
                println!("repaired {change}");
            }
            Ok(Outcome::Ok)
        }
        Command::Backup(common) => {
            let target = resolve(&common).await?;
            let manifest = target.database.backup(&target.store, "manual", None).await?;
            let pruned = target.store.prune(target.retention, jiff::Timestamp::now())?;
            println!(
                "backup {} ({} bytes, {} ms, {} tables) in {}",
                manifest.name,
                manifest.size_bytes,
                manifest.duration_ms,
                manifest.tables.len(),
                target.store.dir.display()
            );
            for name in pruned {
                println!("removed old backup {name}");
            }
            Ok(Outcome::Ok)
        }
        Command::Backups(common) => {
            let target = resolve(&common).await?;
            let all = target.store.list()?;
            if common.json() {
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(Outcome::Ok);
            }
            if all.is_empty() {
                println!("no backups in {}", target.store.dir.display());
            }
            let mut table = Table::new().align(2, Align::Right).align(4, Align::Right);
            for m in all {
                let verified = match &m.verification {
                    Some(v) if v.ok => format!("verified {}", v.at),
                    Some(v) => format!("VERIFY FAILED {}: {}", v.at, v.detail),
                    None => "not verified".into(),
                };
                table.row([
                    m.name,
                    m.reason,
                    format!("{} bytes", m.size_bytes),
                    format!("schema {}", m.schema_version.map_or("-".into(), |v| v.to_string())),
                    format!("{} rows", m.tables.values().sum::<i64>()),
                    verified,
                ]);
            }
            table.print();
            Ok(Outcome::Ok)
        }
        Command::Restore { common, backup, yes } => {
            let target = resolve(&common).await?;
            let name = backup.unwrap_or_else(|| "latest".into());
            let manifest = target.store.get(&name).map_err(|err| UsageError(err.to_string()))?;
            if !yes {
                if !std::io::stdin().is_terminal() {
                    return Err(UsageError(
                        "restore replaces the live database: confirm on a terminal or pass --yes".into(),
                    )
                    .into());
                }
                print!(
                    "Restore backup {} into {}? Writes are stopped, the current state is backed up first.\n\
                     Type the environment name ({}) to confirm: ",
                    manifest.name,
                    target.database.redacted_url(),
                    target.environment
                );
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if answer.trim() != target.environment {
                    println!("not restored");
                    return Ok(Outcome::NotOk);
                }
            }
            let mut stop = write_stop(&target);
            let report = target.database.restore(&target.store, &manifest.name, stop.as_mut()).await?;
            println!("backed up the current state as {}", report.pre_restore.name);
            println!("restored {}", report.restored.name);
            Ok(Outcome::Ok)
        }
        Command::Verify { common, backup, all } => {
            let target = resolve(&common).await?;
            let names: Vec<String> = if all {
                target.store.list()?.into_iter().map(|m| m.name).collect()
            } else {
                vec![backup.unwrap_or_else(|| "latest".into())]
            };
            if names.is_empty() {
                println!("no backups in {}", target.store.dir.display());
            }
            let mut outcome = Outcome::Ok;
            for name in names {
                let verification = target.database.verify(&target.store, &name).await?;
                if verification.ok {
                    println!("{name}: ok ({}, {} ms)", verification.detail, verification.duration_ms);
                } else {
                    println!("{name}: FAILED: {}", verification.detail);
                    outcome = Outcome::NotOk;
                }
            }
            Ok(outcome)
        }
    }
}

async fn status(common: &Common, plan: bool) -> anyhow::Result<Outcome> {
    let target = resolve(common).await?;
    let status = target.database.status(migrations_dir(&target)?).await?;
    let bad = !status.mismatched.is_empty() || !status.unknown.is_empty() || !status.interrupted.is_empty();
    if common.json() {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(if bad { Outcome::NotOk } else { Outcome::Ok });
    }
    if !plan {
        println!("{} ({})", target.environment, target.database.redacted_url());
        for a in &status.applied {
            let edited =
                if status.mismatched.contains(&format!("{:04}_{}", a.version, a.name)) { "  EDITED" } else { "" };
            println!(
                "  applied {:04}_{}  {}  {} ms  deploy {}{edited}",
                a.version,
                a.name,
                a.applied_at,
                a.duration_ms,
                a.deploy_id.as_deref().unwrap_or("-")
            );
        }
    }
    if status.pending.is_empty() {
        println!("nothing pending");
    }
    for p in &status.pending {
        println!(
            "  pending {:04}_{}{}{}",
            p.version,
            p.name,
            if p.transactional { "" } else { "  [no transaction: runs alone; a failure is restored from the backup]" },
            if p.has_down { "  (has down)" } else { "" }
        );
    }
    if !status.mismatched.is_empty() {
        println!("edited since applied: {} (`windlass db repair` if intended)", status.mismatched.join(", "));
    }
    if !status.unknown.is_empty() {
        println!("applied but without a file: {:?}", status.unknown);
    }
    for s in &status.interrupted {
        println!(
            "INTERRUPTED {:04}_{}: started {} by {}{} outside a transaction and never recorded; check the database, \
             then `windlass db repair {} --applied {} --reason \"...\"` (it took effect) or `--clear {}` (run it again)",
            s.version,
            s.name,
            s.started_at,
            s.by,
            s.deploy_id.as_ref().map(|d| format!(" (deploy {d})")).unwrap_or_default(),
            target.environment,
            s.version,
            s.version
        );
    }
    Ok(if bad { Outcome::NotOk } else { Outcome::Ok })
}
