//! A deploy from request to record: [`Deployer::start`] checks everything that can be checked
//! before anything changes (config, environment, phases, variables, artifacts, the environment's
//! lock) and records the deploy; [`Deployer::execute`] then runs the plan step by step, each
//! step's output stored line by line as it comes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tracing::Instrument as _;
use windlass_config::{Config, Source};
use windlass_runtime::Runtime;
use windlass_store::{Acquire, DeployId, DeployStatus, Holder, Lease, NewDeploy, NewEvent, StepStatus, Store};

use crate::artifacts::{self, Artifact};
use crate::edge::EdgeControl;
use crate::plan::{self, DeployOptions, Plan, StepPlan};
use crate::rollout::{self, Change};
use crate::state::EnvState;
use crate::vars::{self, Variables};
use crate::{DeployError, checks, command};

mod heartbeat;
pub mod progress;
mod run;
mod scale;
mod step_log;

pub use heartbeat::Heartbeat;
pub use run::{CommandError, OpenStep, Run, RunError, route_hosts};
pub use scale::{Scaled, scale};
pub use step_log::{DetachedLines, HEAD_BYTES, StepLog, TAIL_BYTES, dropped_marker};

/// How long the deploy lock lives without a heartbeat; renewed every third of it.
pub const LOCK_TTL: Duration = Duration::from_secs(30);

pub fn lock_name(environment: &str) -> String {
    format!("deploy/{environment}")
}

/// The control plane's parts a deploy uses.
#[derive(Debug)]
pub struct Deployer {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<dyn Runtime>,
    pub edge: Arc<dyn EdgeControl>,
    pub config_path: PathBuf,
    /// Where frozen artifacts live (`<state>/artifacts`).
    pub artifacts_dir: PathBuf,
    /// This server, as it holds locks and owns deploys.
    pub holder: Holder,
    /// An env file to use instead of each environment's own (`windlass server --env-file`).
    pub env_file: Option<PathBuf>,
    /// The config as last parsed, with the text it was parsed from: the server's loops read the
    /// config every few seconds, and a large one (thousands of probes) costs tens of
    /// milliseconds to parse.
    pub parsed: ConfigCache,
    /// The time, injected (the store's clock): what the pipeline records and decides by it.
    pub clock: Arc<dyn windlass_store::Clock>,
    /// The owner of the deploys, scales and notifications this deployer runs in the background.
    pub tasks: crate::supervisor::Supervisor,
}

/// The last parse of the config file, reused while the file's text is unchanged.
#[derive(Debug, Default)]
pub struct ConfigCache {
    last: std::sync::Mutex<Option<(String, Arc<Config>)>>,
}

#[derive(Debug, Clone)]
pub struct StartRequest {
    pub environment: String,
    pub actor: String,
    pub options: DeployOptions,
    /// What an approver approved: the deploy is refused if the config or a build changed since.
    pub expect: Option<Fingerprint>,
    /// The person who approved this deploy (an approver, or the requester with `--approve`
    /// where anyone may approve), recorded with it: a rollback to its builds later needs no
    /// approval again. None: it ran without approval.
    pub approved_by: Option<String>,
}

/// What a deploy would run: the config text and each rolled-out build, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub config_sha256: String,
    pub artifacts: BTreeMap<String, String>,
    /// The built-in migrations' files (names and contents), when the config has them.
    #[serde(default)]
    pub migrations_sha256: Option<String>,
}

/// A hash over the names and contents of the files in a migrations directory; none when it
/// cannot be read (the deploy itself then reports it).
fn migrations_hash(dir: &std::path::Path) -> Option<String> {
    let mut names: Vec<std::path::PathBuf> =
        std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
    names.sort();
    let mut hasher = sha2::Sha256::new();
    for path in names {
        hasher.update(path.file_name()?.as_encoded_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&path).ok()?);
        hasher.update([0]);
    }
    Some(hex::encode(hasher.finalize()))
}

impl Fingerprint {
    /// What changed from `self` to `now`, in words; none when nothing did.
    pub fn differs_from(&self, now: &Fingerprint) -> Option<String> {
        if self.config_sha256 != now.config_sha256 {
            return Some("the config changed".into());
        }
        if self.migrations_sha256 != now.migrations_sha256 {
            return Some("the database migrations changed".into());
        }
        let changed: Vec<&str> = self
            .artifacts
            .keys()
            .chain(now.artifacts.keys())
            .filter(|s| self.artifacts.get(*s) != now.artifacts.get(*s))
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        (!changed.is_empty()).then(|| format!("the build of {} changed", changed.join(", ")))
    }
}

/// A deploy checked but not started.
#[derive(Debug)]
pub struct Checked {
    pub source: Source,
    pub config: Config,
    pub plan: Plan,
    /// The recorded override of a closed deploy window, if one was used.
    pub overridden: Option<String>,
    pub variables: Variables,
    pub artifacts: BTreeMap<String, Artifact>,
    pub fingerprint: Fingerprint,
}

/// What the deploy record's `artifacts` holds: for every service, what runs after the deploy,
/// and the approval the deploy ran under.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recorded {
    pub services: BTreeMap<String, RecordedService>,
    /// Who approved this deploy; none when it ran without approval. It is written only by the
    /// server when a deploy, promotion or rollback starts approved, and it is what makes a later
    /// rollback to these builds go without approval ([`crate::rollback::passed_approval`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedService {
    pub artifact: Artifact,
    /// The deploy that started the instances (none: this deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<String>,
    /// The deploy whose config describes them (none: this deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_deploy: Option<String>,
}

/// What a deploy does to its services: roll out the config's current code, or return to what a
/// former deploy ran.
#[derive(Debug, Clone)]
pub enum Kind {
    Deploy {
        plan: Plan,
    },
    /// `restore_database`: also restore the backup taken before the first migration after
    /// `target` (`rollback --restore-database`).
    Rollback {
        target: Box<windlass_store::Deploy>,
        restore_database: bool,
    },
    Promote {
        from: String,
        services: Vec<crate::promote::Promoted>,
    },
}

/// A recorded deploy holding its environment's lock, ready to run.
#[derive(Debug)]
pub struct Prepared {
    pub id: DeployId,
    pub environment: String,
    pub actor: String,
    pub kind: Kind,
    pub(crate) lease: Lease,
    pub(crate) config: Arc<Config>,
    pub(crate) variables: Variables,
    pub(crate) artifacts: BTreeMap<String, Artifact>,
}

/// The config text parsed; problems rendered as `windlass validate` shows them.
pub fn parse_config(source: &Source) -> Result<Config, DeployError> {
    let parsed = windlass_config::parse(source);
    if parsed.has_errors() {
        let text: Vec<String> = parsed.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.render()).collect();
        return Err(DeployError::Config(text.join("\n")));
    }
    Ok(parsed.config)
}

impl Deployer {
    /// The config as the file says now, parsed again only when its text changed.
    ///
    /// The parse happens under the cache's lock: the server's loops all start at once, and a
    /// large config parsed by each of them side by side costs its peak memory several times.
    pub fn shared_config(&self) -> Result<Arc<Config>, DeployError> {
        let source = Source::read(&self.config_path).map_err(|err| DeployError::Config(err.to_string()))?;
        let mut last = self.parsed.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((text, config)) = last.as_ref()
            && text == source.text()
        {
            return Ok(config.clone());
        }
        let config = Arc::new(parse_config(&source)?);
        *last = Some((source.text().to_owned(), config.clone()));
        Ok(config)
    }

    pub fn config_dir(&self) -> PathBuf {
        let dir = windlass_config::config_dir(&self.config_path);
        std::path::absolute(&dir).unwrap_or(dir)
    }

    /// The environment's secrets store, read with the server's age identity or OpenBao token.
    pub async fn stored_secrets(
        &self,
        config: &Config,
        environment: &str,
    ) -> Result<Option<vars::StoredSecrets>, DeployError> {
        let options = windlass_secrets::OpenOptions::default();
        windlass_secrets::load_if_present(config, environment, &options)
            .await
            .map_err(|err| DeployError::Config(format!("the secrets of `{environment}`: {err}")))
    }

    /// The variables of an environment, or every problem with them.
    pub async fn variables(&self, config: &Config, environment: &str) -> Result<Variables, DeployError> {
        let stored = self.stored_secrets(config, environment).await?;
        let (variables, diagnostics) =
            Variables::resolve(config, environment, self.env_file.as_deref(), stored.as_ref());
        let errors: Vec<String> = diagnostics.iter().filter(|d| d.is_error()).map(|d| d.render()).collect();
        if errors.is_empty() { Ok(variables) } else { Err(DeployError::Config(errors.join("\n"))) }
    }

    /// The plan alone (`--dry-run`): nothing is recorded, locked or started.
    pub fn plan(&self, request: &StartRequest) -> Result<Plan, DeployError> {
        let config = self.shared_config()?;
        Ok(plan::plan(&config, &request.environment, &request.options)?)
    }

    /// Takes the environment's deploy lock, or says who holds it since when. A lock whose holder
    /// stopped renewing it (stale: no heartbeat for [`LOCK_TTL`]) is taken over; the lease's
    /// `taken_over` says from whom (the store audits it as `lease.taken_over`). Whoever holds the
    /// lock for longer than a moment keeps it fresh with [`Deployer::heartbeat`].
    pub async fn lock(&self, environment: &str, purpose: &str) -> Result<Lease, DeployError> {
        let name = lock_name(environment);
        match self.store.acquire_lease(&name, &self.holder, purpose, LOCK_TTL).await? {
            Acquire::Acquired(lease) => {
                if let Some(previous) = &lease.taken_over {
                    tracing::warn!(environment, "{}", took_over(previous));
                }
                Ok(lease)
            }
            Acquire::Held(info) => Err(DeployError::Locked {
                environment: environment.into(),
                lease: name,
                holder: format!("{} ({})", info.holder, info.purpose),
                since: info.acquired_at.to_string(),
            }),
        }
    }

    /// Renews `lease` every third of its TTL until the returned guard is dropped; the flag turns
    /// true if the lease was lost (broken, or taken over after a stall).
    pub fn heartbeat(&self, lease: &Lease) -> (Heartbeat, Arc<AtomicBool>) {
        let lost = Arc::new(AtomicBool::new(false));
        // Owned by the guard, which aborts it when dropped: it lives exactly as long as the work
        // holding the lease, which the supervisor owns.
        #[allow(clippy::disallowed_methods)]
        let task = tokio::spawn(heartbeat::renew(self.store.clone(), lease.clone(), lost.clone()));
        (Heartbeat(task), lost)
    }

    /// Everything a deploy can check before it changes anything: config, plan, deploy window,
    /// variables, and the builds it would roll out (frozen by content hash).
    pub async fn check(&self, request: &StartRequest) -> Result<Checked, DeployError> {
        let source = Source::read(&self.config_path).map_err(|err| DeployError::Config(err.to_string()))?;
        let config = parse_config(&source)?;
        let plan = plan::plan(&config, &request.environment, &request.options)?;
        let overridden = plan::check_window(&config, &request.environment, &request.options, self.clock.now())
            .map_err(|err| DeployError::Rejected(err.to_string()))?;
        let variables = self.variables(&config, &request.environment).await?;
        // A service keeps the version it runs until a deploy names another.
        let state = EnvState::load(&*self.store, &request.environment).await?;
        let mut artifacts = BTreeMap::new();
        for service in plan.services() {
            let Some(spec) = config.service_in(&request.environment, service) else { continue };
            let Some(run) = &spec.run else { continue };
            let version = request
                .options
                .versions
                .get(service)
                .cloned()
                .or_else(|| state.live(service).and_then(|(_, live)| live.artifact.version.clone()));
            let uses_version = run.vars().any(|v| v == "WINDLASS_VERSION")
                || spec.env.values().any(|setting| {
                    matches!(setting, windlass_config::template::Setting::Text(t) if t.vars().any(|v| v == "WINDLASS_VERSION"))
                });
            if uses_version && version.is_none() {
                return Err(DeployError::Rejected(format!(
                    "service `{service}` uses ${{WINDLASS_VERSION}} and runs no version yet: name one with `--version {service}=<version>`"
                )));
            }
            // `run` becomes the instances' argv, which every local user can read: no secret goes
            // there (`validate` says so for declared secrets; this also catches a value that
            // comes from the secrets store).
            if let Some(secret) = run.vars().find(|name| variables.is_secret(name)) {
                return Err(DeployError::Rejected(format!(
                    "service `{service}`: secret `{secret}` is used in `run`, which would put it on the instances' command line; pass it through the service's `env` instead"
                )));
            }
            let lookup = |name: &str| match name {
                "WINDLASS_VERSION" => version.clone(),
                _ => variables.get(name),
            };
            let cannot =
                |err: String| DeployError::Rejected(format!("service `{service}`: cannot render `run`: {err}"));
            // Split into words as written, then each word filled in: a value is one argument
            // (or part of one), never more words or quotes.
            let words = artifacts::split_command(&run.raw).map_err(|err| cannot(err.to_string()))?;
            let words = words
                .iter()
                .map(|word| windlass_config::template::Template::parse(word).and_then(|t| t.render(lookup)))
                .collect::<Result<Vec<String>, _>>()
                .map_err(|err| cannot(err.into()))?;
            let command = run.render(lookup).map_err(|err| cannot(err.into()))?;
            // Hashing and copying a build is blocking file work (seconds for a large one): it
            // runs on the blocking pool, not on the thread that serves the API.
            let (config_dir, artifacts_dir, dir) = (self.config_dir(), self.artifacts_dir.clone(), spec.dir.clone());
            let mut artifact = tokio::task::spawn_blocking(move || {
                artifacts::snapshot_words(&command, &words, &config_dir, &artifacts_dir, dir.as_deref())
            })
            .await
            .map_err(|err| DeployError::Failed(format!("snapshotting `{service}` stopped: {err}")))?
            .map_err(|err| err.redacted(variables.redactor()))?;
            artifact.version = version;
            artifacts.insert(service.to_owned(), artifact);
        }
        let migrations = match config.database.as_ref().and_then(|d| d.migrate.as_ref()) {
            Some(windlass_config::Migrate::Dir(dir)) => {
                let dir = self.config_dir().join(&dir.value);
                tokio::task::spawn_blocking(move || migrations_hash(&dir)).await.ok().flatten()
            }
            _ => None,
        };
        let fingerprint = Fingerprint {
            config_sha256: hex::encode(sha2::Sha256::digest(source.text().as_bytes())),
            artifacts: artifacts.iter().map(|(service, a)| (service.clone(), a.sha256.clone())).collect(),
            migrations_sha256: migrations,
        };
        Ok(Checked { source, config, plan, overridden, variables, artifacts, fingerprint })
    }

    /// Checks a deploy, takes the lock, snapshots the artifacts and records the deploy.
    pub async fn start(&self, request: &StartRequest) -> Result<Prepared, DeployError> {
        let Checked { source, config, plan, overridden, variables, artifacts, fingerprint } =
            self.check(request).await?;
        if let Some(expected) = &request.expect
            && let Some(change) = expected.differs_from(&fingerprint)
        {
            return Err(DeployError::Conflict(format!(
                "{change} since the deploy was requested: what would run is not what was approved; request it again"
            )));
        }
        let purpose = format!("deploy requested by {}", request.actor);
        let lease = self.lock(&request.environment, &purpose).await?;
        let mut recorded = recorded_after(&self.state_under(&lease, &request.environment).await?, &artifacts);
        recorded.approved_by = request.approved_by.clone();
        let record = NewDeploy {
            environment: request.environment.clone(),
            actor: request.actor.clone(),
            reason: match &overridden {
                Some(_) => request.options.reason.as_ref().map(|r| format!("{r} [deploy window overridden]")),
                None => request.options.reason.clone(),
            },
            config_snapshot: source.text().to_owned(),
            artifacts: serde_json::to_string(&recorded).unwrap_or_default(),
            owner: self.holder.id.clone(),
        };
        let id =
            self.record_started(&lease, &record, overridden.as_deref(), |id| format!("deploy {id} started")).await?;
        Ok(Prepared {
            id,
            environment: request.environment.clone(),
            actor: request.actor.clone(),
            kind: Kind::Deploy { plan },
            lease,
            config: Arc::new(config),
            variables,
            artifacts,
        })
    }

    /// The environment's state, read while holding its deploy lock `lease` (a deploy that just
    /// finished has changed what runs); on failure the lease is released.
    pub(crate) async fn state_under(&self, lease: &Lease, environment: &str) -> Result<EnvState, DeployError> {
        match EnvState::load(&*self.store, environment).await {
            Ok(state) => Ok(state),
            Err(err) => {
                let _ = self.store.release_lease(lease).await;
                Err(err)
            }
        }
    }

    /// Records a deploy (of any kind) that holds `lease`, its window override if one was used,
    /// and `deploy.started` with the message `started` makes; on failure the lease is released,
    /// so nothing is left half-started.
    pub(crate) async fn record_started(
        &self,
        lease: &Lease,
        record: &NewDeploy,
        overridden: Option<&str>,
        started: impl FnOnce(&DeployId) -> String,
    ) -> Result<DeployId, DeployError> {
        let id = match self.store.create_deploy(record).await {
            Ok(id) => id,
            Err(err) => {
                let _ = self.store.release_lease(lease).await;
                return Err(err.into());
            }
        };
        if let Some(overridden) = overridden {
            self.audit(&record.actor, &record.environment, "deploy.window_overridden", &id, overridden).await;
        }
        let mut message = started(&id);
        if let Some(previous) = &lease.taken_over {
            message = format!("{message}; it {}", took_over(previous));
        }
        self.audit(&record.actor, &record.environment, "deploy.started", &id, &message).await;
        Ok(id)
    }

    pub(crate) async fn audit(&self, actor: &str, environment: &str, kind: &str, id: &DeployId, message: &str) {
        self.audit_with(actor, environment, kind, id, message, serde_json::json!({})).await;
    }

    pub(crate) async fn audit_with(
        &self,
        actor: &str,
        environment: &str,
        kind: &str,
        id: &DeployId,
        message: &str,
        data: serde_json::Value,
    ) {
        let event = NewEvent {
            actor: actor.into(),
            environment: Some(environment.into()),
            kind: kind.into(),
            subject: Some(id.to_string()),
            message: message.into(),
            data: data.to_string(),
        };
        if let Err(err) = self.store.record_event(&event).await {
            tracing::warn!(%err, "cannot record an audit event");
        }
    }

    /// Runs a prepared deploy to its end and records the outcome; the lock is released after.
    #[tracing::instrument(name = "deploy", skip_all, fields(id = %prepared.id, env = %prepared.environment))]
    pub async fn execute(self: &Arc<Self>, prepared: Prepared) -> DeployStatus {
        let (heartbeat, lost) = self.heartbeat(&prepared.lease);
        let mut run = Run {
            deployer: self.clone(),
            id: prepared.id.clone(),
            environment: prepared.environment.clone(),
            config: prepared.config.clone(),
            variables: prepared.variables.clone(),
            changes: Vec::new(),
            lock_lost: lost,
            service_waits: Default::default(),
        };
        let began = std::time::Instant::now();
        let what = match &prepared.kind {
            Kind::Deploy { .. } => "deploy".to_owned(),
            Kind::Rollback { target, .. } => format!("rollback to {}", target.id),
            Kind::Promote { from, .. } => format!("promotion from {from}"),
        };
        let fields = vec![("actor".to_owned(), prepared.actor.clone()), ("deploy".to_owned(), prepared.id.to_string())];
        let notify = |event: &str, headline: String, text: String| {
            let message = crate::notifications::message(
                &prepared.config,
                event,
                &prepared.environment,
                Some(prepared.id.as_str()),
                &headline,
                text,
                fields.clone(),
            );
            crate::notifications::notify(self, &prepared.config, &prepared.variables, message);
        };
        notify(
            "deploy.started",
            format!("{what} {} started", prepared.id),
            format!("{} started a {what}", prepared.actor),
        );
        let outcome = match &prepared.kind {
            Kind::Deploy { plan } => run.deploy(plan, &prepared.artifacts).await,
            Kind::Rollback { target, restore_database } => {
                crate::rollback::run(&mut run, target, *restore_database).await
            }
            Kind::Promote { from, services } => crate::promote::run(&mut run, from, services).await,
        };
        let (status, error) = match outcome {
            Ok(()) => (DeployStatus::Succeeded, None),
            Err(failure) if run.changes.is_empty() => (DeployStatus::Failed, Some(failure.to_string())),
            Err(failure) => match run.undo_changes().await {
                Ok(()) => {
                    (DeployStatus::RolledBack, Some(format!("{failure}; every service it changed was rolled back")))
                }
                Err(undo) => (DeployStatus::Failed, Some(format!("{failure}; rolling back failed too: {undo}"))),
            },
        };
        drop(heartbeat);
        let elapsed = began.elapsed();
        let waited = run.service_wait_total();
        let (elapsed_ms, waited_ms) = (elapsed.as_millis() as u64, waited.as_millis() as u64);
        let timing = serde_json::json!({
            "elapsed_ms": elapsed_ms,
            "service_waits_ms": waited_ms,
            "overhead_ms": elapsed_ms.saturating_sub(waited_ms),
        });
        tracing::info!(deploy = %prepared.id, %timing, "deploy ran");
        // Errors quote what failed (a check's body, an instance's last output): hide secrets once
        // here, before the record, the audit event and the notification.
        let error = error.map(|e| run.variables.redact(&e));
        if let Err(err) = self.store.finish_deploy(&prepared.id, status, error.as_deref()).await {
            tracing::error!(%err, deploy = %prepared.id, "cannot record the end of a deploy");
        }
        progress::publish(&prepared.id, progress::Progress::Changed);
        if let Err(err) = self.store.release_lease(&prepared.lease).await {
            tracing::warn!(%err, "cannot release the deploy lock");
        }
        let message = match &error {
            Some(error) => format!("deploy {} {status}: {error}", prepared.id),
            None => format!("deploy {} {status}", prepared.id),
        };
        self.audit_with(
            &prepared.actor,
            &prepared.environment,
            &format!("deploy.{status}"),
            &prepared.id,
            &message,
            timing,
        )
        .await;
        let text = error.clone().unwrap_or_else(|| format!("{what} {} {status}", prepared.id));
        notify(&format!("deploy.{status}"), format!("{what} {} {status}", prepared.id), text);
        status
    }
}

/// How a takeover of a stale lock reads in a deploy's or a scale's record.
pub fn took_over(previous: &windlass_store::LeaseInfo) -> String {
    format!(
        "took over the stale lock held by {} ({}) since {}: no heartbeat since {}",
        previous.holder, previous.purpose, previous.acquired_at, previous.heartbeat_at
    )
}

/// For every service, what runs after a deploy that rolls out `artifacts`.
pub(crate) fn recorded_after(state: &EnvState, artifacts: &BTreeMap<String, Artifact>) -> Recorded {
    let mut recorded = Recorded::default();
    for (service, color) in state.services.keys().filter_map(|s| Some((s, state.live(s)?.1))) {
        recorded.services.insert(
            service.clone(),
            RecordedService {
                artifact: color.artifact.clone(),
                deploy: Some(color.deploy_id.clone()),
                config_deploy: Some(color.config_deploy.clone()),
            },
        );
    }
    for (service, artifact) in artifacts {
        recorded
            .services
            .insert(service.clone(), RecordedService { artifact: artifact.clone(), deploy: None, config_deploy: None });
    }
    recorded
}

fn stop_key(id: &DeployId) -> String {
    format!("deploy-stop/{id}")
}

/// Asks the running deploy `id` to stop before its next step, saying why; it then undoes what
/// it changed, like any failed deploy. Idempotent: the first reason stays.
pub async fn request_stop(store: &dyn Store, id: &DeployId, reason: &str) -> Result<bool, DeployError> {
    if store.setting(&stop_key(id)).await?.is_some() {
        return Ok(false);
    }
    store.set_setting(&stop_key(id), reason).await?;
    Ok(true)
}
