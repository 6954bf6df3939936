//! A deploy while it runs ([`Run`]): its phases and steps in the plan's order, each step opened
//! ([`Run::begin`], the deploy's safe point: a requested stop or a stopping server is honoured
//! there) and closed ([`Run::end`]) with its status in the store, and what it changed, for undo.
//! It must not take or release the environment's lock: [`super::Deployer::execute`] does.

use super::*;

pub(super) type Spans = std::sync::Mutex<Vec<(std::time::Instant, std::time::Instant)>>;

/// The time the spans cover together, overlaps counted once.
fn union_of(waits: &Spans) -> std::time::Duration {
    let mut spans = waits.lock().map(|w| w.clone()).unwrap_or_default();
    spans.sort();
    let mut total = std::time::Duration::ZERO;
    let mut current: Option<(std::time::Instant, std::time::Instant)> = None;
    for (from, to) in spans {
        current = match current {
            Some((start, end)) if from <= end => Some((start, end.max(to))),
            Some((start, end)) => {
                total += end - start;
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }
    if let Some((start, end)) = current {
        total += end - start;
    }
    total
}

/// Why a deploy's run stopped. A step's problem may quote what failed (a check's body, a
/// command's output): [`Run::end`] redacts it before it is kept here; the whole error's text is
/// redacted again before it is recorded or shown.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A stop was requested before the step `title` began.
    #[error("stopped before `{title}`: {reason}")]
    Stopped { title: String, reason: String },
    #[error("the deploy lock was broken while this deploy ran; stopping here")]
    LockLost,
    /// A recorded step failed; `problem` is redacted.
    #[error("step `{title}`: {problem}")]
    Step { title: String, problem: String },
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error(transparent)]
    Target(#[from] crate::database::TargetError),
    #[error(transparent)]
    Database(#[from] windlass_db::Error),
    /// Anything else that stops the run, described.
    #[error("{0}")]
    Failed(String),
}

/// Why a custom step's command (or its undo) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Render(#[from] vars::RenderError),
    /// The script names a variable that has no value.
    #[error(transparent)]
    Unset(#[from] windlass_config::template::TemplateError),
    /// The command failed (its last attempt).
    #[error(transparent)]
    Failed(#[from] command::ShellError),
}

/// Why the `database` phase's migration failed.
#[derive(Debug, thiserror::Error)]
enum MigrateError {
    #[error(transparent)]
    Target(#[from] crate::database::TargetError),
    #[error("the config has no [database]")]
    NoDatabase,
    #[error("[database] has no `migrate`")]
    NoMigrate,
    /// The migration failed; the text is redacted (it may quote the database's URL).
    #[error("{0}")]
    Failed(String),
}

/// A step between [`Run::begin`] and [`Run::end`].
pub struct OpenStep {
    seq: i64,
    title: String,
    pub log: StepLog,
}

/// A deploy while it runs.
pub struct Run {
    pub deployer: Arc<Deployer>,
    pub id: DeployId,
    pub environment: String,
    pub config: Arc<Config>,
    pub variables: Variables,
    /// What this deploy changed so far, newest last: what to undo if it fails.
    pub changes: Vec<Change>,
    pub(super) lock_lost: Arc<AtomicBool>,
    /// When this deploy waited on services: from asking the runtime for an instance to its
    /// passing the health gate. What is left of the deploy's time is Windlass's own overhead.
    pub(super) service_waits: Arc<Spans>,
}

impl Run {
    /// Records a span of time spent waiting on a service (instances start concurrently: spans
    /// may overlap, and are counted once).
    pub fn record_service_wait(&self, from: std::time::Instant, to: std::time::Instant) {
        if let Ok(mut waits) = self.service_waits.lock() {
            waits.push((from, to));
        }
    }

    /// The time covered by the recorded waits, overlaps counted once.
    pub fn service_wait_total(&self) -> std::time::Duration {
        union_of(&self.service_waits)
    }

    /// Whether the environment's deploy lock was lost (broken by someone) while this runs.
    pub fn lock_lost(&self) -> bool {
        self.lock_lost.load(Ordering::SeqCst)
    }

    /// Starts a recorded step; its output goes to the returned log until [`Run::end`]. Refused
    /// once the deploy lost its lock or was asked to stop.
    pub async fn begin(&self, phase: &str, title: &str) -> Result<OpenStep, RunError> {
        // Asked of the store as each step starts ([`request_stop`]): a stop requested before a
        // step is never missed.
        if let Some(reason) = self.deployer.store.setting(&stop_key(&self.id)).await.ok().flatten() {
            return Err(RunError::Stopped { title: title.to_owned(), reason });
        }
        // The start of a step is the deploy's safe point: when the server is stopping, the deploy
        // waits here to be dropped, recorded as running at its last step exactly as a crash would
        // leave it, and recovery on the next start takes it from there.
        if self.deployer.tasks.is_stopping() {
            tracing::warn!(deploy = %self.id, "the server is stopping: this deploy stops before `{title}`");
            self.deployer.tasks.park().await;
        }
        self.open_step(phase, title).await
    }

    /// A step that undoes a change: it runs even when the deploy was asked to stop (stopping is
    /// why it runs), never without the lock.
    async fn open_step(&self, phase: &str, title: &str) -> Result<OpenStep, RunError> {
        if self.lock_lost.load(Ordering::SeqCst) {
            return Err(RunError::LockLost);
        }
        let store = self.deployer.store.clone();
        let seq = store.start_step(&self.id, phase, title).await?;
        super::progress::publish(&self.id, super::progress::Progress::Changed);
        Ok(OpenStep {
            seq,
            title: title.to_owned(),
            log: StepLog::open(store, self.id.clone(), seq, self.variables.clone()),
        })
    }

    /// Records how a step ended and passes its result on, its problem redacted.
    pub async fn end<E: std::fmt::Display>(&self, step: OpenStep, result: Result<(), E>) -> Result<(), RunError> {
        let problem = result.err().map(|problem| problem.to_string());
        if let Some(problem) = &problem {
            step.log.line(format!("error: {problem}"));
        }
        step.log.close().await;
        let problem = problem.map(|problem| self.variables.redact(&problem));
        let status = if problem.is_some() { StepStatus::Failed } else { StepStatus::Succeeded };
        self.deployer.store.finish_step(&self.id, step.seq, status, problem.as_deref()).await?;
        super::progress::publish(&self.id, super::progress::Progress::Changed);
        // The deploy's error names the step it came from.
        match problem {
            Some(problem) => Err(RunError::Step { title: step.title, problem }),
            None => Ok(()),
        }
    }

    pub async fn skipped(&self, phase: &str, title: &str, why: &str) -> Result<(), RunError> {
        let store = &self.deployer.store;
        let seq = store.start_step(&self.id, phase, title).await?;
        store.append_step_output(&self.id, seq, &format!("{why}\n")).await?;
        store.finish_step(&self.id, seq, StepStatus::Skipped, None).await?;
        super::progress::publish(&self.id, super::progress::Progress::Changed);
        Ok(())
    }

    pub(super) async fn deploy(&mut self, plan: &Plan, artifacts: &BTreeMap<String, Artifact>) -> Result<(), RunError> {
        let route_hosts = route_hosts(&self.config, &self.environment);
        for phase in &plan.phases {
            let span = tracing::info_span!("phase", name = %phase.name);
            self.phase(phase, artifacts, &route_hosts).instrument(span).await?;
        }
        Ok(())
    }

    async fn phase(
        &mut self,
        phase: &crate::plan::PhasePlan,
        artifacts: &BTreeMap<String, Artifact>,
        route_hosts: &[String],
    ) -> Result<(), RunError> {
        if let Some(why) = &phase.skipped {
            tracing::debug!("phase skipped: {why}");
            return self.skipped(&phase.name, &format!("phase {}", phase.name), why).await;
        }
        tracing::debug!("phase started");
        for step in &phase.steps {
            let title = step.title();
            let span = tracing::info_span!("step", name = %title);
            self.step(phase, step, title, artifacts, route_hosts).instrument(span).await?;
            windlass_failpoint::hit("pipeline.after_step");
        }
        Ok(())
    }

    async fn step(
        &mut self,
        phase: &crate::plan::PhasePlan,
        step: &StepPlan,
        title: String,
        artifacts: &BTreeMap<String, Artifact>,
        route_hosts: &[String],
    ) -> Result<(), RunError> {
        tracing::debug!("step started");
        match step {
            StepPlan::Validate => {
                let step = self.begin(&phase.name, &title).await?;
                let checked = self.config.env.values().filter(|s| s.applies_to(&self.environment)).count();
                step.log.line(format!(
                    "config {} and {checked} variables of {} are in order",
                    self.deployer.config_path.display(),
                    self.environment
                ));
                self.end(step, Ok::<(), String>(())).await?
            }
            StepPlan::Rollout { service, .. } => {
                let artifact = artifacts
                    .get(service)
                    .cloned()
                    .ok_or_else(|| RunError::Failed(format!("no artifact was snapshotted for `{service}`")))?;
                let config_deploy = self.id.to_string();
                let step = self.begin(&phase.name, &title).await?;
                let result = rollout::roll_out(self, &step.log, service, &artifact, &config_deploy).await;
                self.end(step, result).await?
            }
            StepPlan::Command { index, .. } => {
                let Some(custom) = self.config.phases.get(&phase.name).and_then(|p| p.steps.get(*index)) else {
                    return Ok(());
                };
                let custom = custom.clone();
                let step = self.begin(&phase.name, &title).await?;
                let result = self.command(&custom, &step.log).await;
                self.end(step, result).await?;
                if custom.undo.is_some() {
                    self.changes.push(Change::Step { title: title.clone(), step: Box::new(custom) });
                }
            }
            StepPlan::Migrate { .. } => {
                let step = self.begin(&phase.name, &title).await?;
                let result = self.migrate(&step.log).await;
                self.end(step, result).await?
            }
            StepPlan::Smoke { index, .. } => {
                let Some(check) = self.config.smoke.get(*index).cloned() else { return Ok(()) };
                let hosts = route_hosts.to_vec();
                let step = self.begin(&phase.name, &title).await?;
                let result = checks::smoke(&check, &self.variables, &hosts, &*self.deployer.edge, None)
                    .await
                    .map(|summary| step.log.line(summary));
                self.end(step, result).await?
            }
        }
        Ok(())
    }

    /// The `database` phase: backup, then the pending migrations, under the migration lock. A
    /// committed change that fails is restored from the backup behind a write stop (the edge's
    /// maintenance mode for the environment's services, and read-only sessions on PostgreSQL).
    async fn migrate(&self, log: &StepLog) -> Result<(), MigrateError> {
        let target = crate::database::Target::resolve(
            &self.config,
            &self.deployer.config_path,
            &self.environment,
            &self.variables,
            windlass_db::Options::default(),
        )?
        .ok_or(MigrateError::NoDatabase)?;
        let source = target.source.clone().ok_or(MigrateError::NoMigrate)?;
        let mut stop = crate::database::FullWriteStop {
            edge: crate::database::EdgeMaintenance::new(self.deployer.edge.clone(), self.routed_services()),
            database: target.database_write_stop(),
        };
        log.line(format!("database {}", target.database.redacted_url()));
        let report = target
            .database
            .migrate(windlass_db::MigrateRequest {
                source,
                deploy_id: Some(self.id.to_string()),
                backup: target.backup_policy(),
                write_stop: &mut stop,
            })
            .await
            .map_err(|err| MigrateError::Failed(self.variables.redact(&err.to_string())))?;
        if let Some(backup) = &report.backup {
            log.line(format!(
                "backup {} ({} bytes in {} ms, sha256 {})",
                backup.name,
                backup.size_bytes,
                backup.duration_ms,
                &backup.sha256[..12.min(backup.sha256.len())]
            ));
        }
        if let Some(output) = &report.output {
            // Redacted whole before it is cut into lines: a secret of several lines goes whole.
            for line in self.variables.redact(output).lines() {
                log.line(line.to_owned());
            }
        }
        for applied in &report.applied {
            log.line(format!("applied {:04} {} in {} ms", applied.version, applied.name, applied.duration_ms));
        }
        if report.applied.is_empty() && report.output.is_none() {
            log.line("no pending migrations");
        }
        for pruned in &report.pruned {
            log.line(format!("removed old backup {pruned}"));
        }
        Ok(())
    }

    /// The services of this environment that the edge routes (maintenance mode applies to them).
    pub fn routed_services(&self) -> Vec<String> {
        self.config
            .services
            .keys()
            .filter(|name| self.config.service_in(&self.environment, name).is_some_and(|s| !s.routes.is_empty()))
            .cloned()
            .collect()
    }

    /// Every smoke check of the config, through the edge: the `verification` phase of a deploy
    /// that does not run the config's phases (a promotion).
    pub async fn verify(&mut self) -> Result<(), RunError> {
        let hosts = route_hosts(&self.config, &self.environment);
        for check in self.config.smoke.clone() {
            let step = self.begin("verification", &format!("smoke check: {}", check.name)).await?;
            let result = checks::smoke(&check, &self.variables, &hosts, &*self.deployer.edge, None)
                .await
                .map(|summary| step.log.line(summary));
            self.end(step, result).await?;
        }
        Ok(())
    }

    /// Undoes this deploy's changes, newest first.
    pub(super) async fn undo_changes(&mut self) -> Result<(), RunError> {
        let changes = std::mem::take(&mut self.changes);
        let mut result = Ok(());
        for change in changes.into_iter().rev() {
            let title = change.undo_title();
            let step = self.open_step("rollback", &title).await?;
            let undone = rollout::undo(self, &step.log, change).await;
            let outcome = self.end(step, undone).await;
            if let Err(err) = outcome {
                result = Err(err);
            }
        }
        result
    }

    async fn command(&self, custom: &windlass_config::Step, log: &StepLog) -> Result<(), CommandError> {
        self.shell(&custom.run, custom, log).await
    }

    /// Runs a custom step's `undo` command, with the step's environment, timeout and retries.
    pub async fn undo_command(&self, custom: &windlass_config::Step, log: &StepLog) -> Result<(), CommandError> {
        match &custom.undo {
            Some(undo) => self.shell(undo, custom, log).await,
            None => Ok(()),
        }
    }

    async fn shell(
        &self,
        script: &windlass_config::template::CommandTemplate,
        custom: &windlass_config::Step,
        log: &StepLog,
    ) -> Result<(), CommandError> {
        // Never rendered into the script: every value reaches `sh` as an environment variable
        // and `sh` expands `${NAME}`, so a value is data, never shell code.
        let mut env = vars::base_env();
        env.extend(self.variables.all().clone());
        env.extend(self.builtins());
        for (name, setting) in &custom.env {
            env.insert(name.clone(), self.render(setting)?);
        }
        script.check_env(&env)?;
        let redactor = self.variables.redactor();
        command::run(script.script(), &env, custom.timeout.as_std(), custom.retries, redactor, |line| log.line(line))
            .await?;
        Ok(())
    }

    pub fn render(&self, setting: &windlass_config::template::Setting) -> Result<String, vars::RenderError> {
        self.variables.render(setting, &self.builtins())
    }

    pub fn builtins(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("WINDLASS_ENV".to_owned(), self.environment.clone()),
            ("WINDLASS_DEPLOY_ID".to_owned(), self.id.to_string()),
        ])
    }

    pub fn config_dir(&self) -> PathBuf {
        self.deployer.config_dir()
    }
}

/// The host names the edge routes for an environment: smoke checks of these go through the edge.
pub fn route_hosts(config: &Config, environment: &str) -> Vec<String> {
    config
        .services
        .keys()
        .filter_map(|name| config.service_in(environment, name))
        .flat_map(|s| s.routes.into_iter().filter_map(|r| r.host))
        .collect()
}

#[cfg(test)]
mod wait_tests {
    use std::time::{Duration, Instant};

    /// The union of spans, as `Run::service_wait_total` computes it.
    fn union(spans: &[(u64, u64)]) -> Duration {
        let zero = Instant::now();
        let at = |ms: u64| zero + Duration::from_millis(ms);
        let waits = std::sync::Mutex::new(spans.iter().map(|(a, b)| (at(*a), at(*b))).collect::<Vec<_>>());
        super::union_of(&waits)
    }

    #[test]
    fn overlapping_waits_count_once_and_gaps_do_not_count() {
        assert_eq!(union(&[]), Duration::ZERO);
        assert_eq!(union(&[(0, 100), (50, 150)]), Duration::from_millis(150));
        assert_eq!(union(&[(200, 300), (0, 100)]), Duration::from_millis(200));
        assert_eq!(union(&[(0, 500), (100, 200), (300, 400)]), Duration::from_millis(500));
    }
}
