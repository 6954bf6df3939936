//! The process runtime: runs service instances as local processes, each under its own small
//! **shim** process (the containerd-shim / conmon pattern).
//!
//! # Why a shim
//!
//! The server must be restartable without restarting the services. So the server never is the
//! parent of a service: for each instance it starts `windlass-shim <instance dir>` in its own
//! process group (a Ctrl-C to the server's terminal does not reach it), with stdin, stdout and
//! stderr on `/dev/null`. The shim owns the child; when the server exits, the shim and its child
//! keep running, and a new server finds them again by reading the instance directories
//! ([`Runtime::list`]): the files are the whole interface between the two, so re-attaching needs
//! no connection and no protocol.
//!
//! The shim:
//! - binds every socket of the spec on `listen_host:0` **once**, so restarts of the child keep the
//!   same ports and connections made during a restart wait in the backlog;
//! - spawns the child with the sockets as fds 3, 4, ... (`LISTEN_FDS`, `LISTEN_FDNAMES`, the
//!   systemd convention, plus `PORT` = the first socket's port), an environment of exactly the
//!   spec's `env`, and `PR_SET_PDEATHSIG(SIGKILL)`, so that if the shim is killed the child dies
//!   with it (no orphans holding ports);
//! - captures the child's stdout and stderr line by line into `output.log`, rotated by size;
//! - restarts the child after a back-off when it exits by itself ([`RestartPolicy`]), and gives
//!   up with [`InstanceState::CrashLoop`] when it exits too often;
//! - on SIGTERM (what [`Runtime::stop`] sends) forwards SIGTERM to the child, SIGKILLs it after
//!   `stop_grace`, records [`InstanceState::Stopped`] and exits.
//!
//! A shim that died without recording a final state (e.g. `kill -9`) is reported as
//! [`InstanceState::Lost`]. A pid is only trusted when `/proc/<pid>/cmdline` names the instance
//! directory, which guards against recycled pids.
//!
//! # The instance directory, `<root>/<id>/`
//!
//! | file | written by | content |
//! |---|---|---|
//! | `spec.json` | runtime, once, atomically | the [`InstanceSpec`] |
//! | `status.json` | runtime first (`starting`), then the shim at every change, atomically | `{state, shim_pid, child_pid, restarts, last_exit, error?, updated_at}` |
//! | `shim.json` | shim, once, atomically, after binding | `{shim_pid, addresses, started_at}` |
//! | `output.log`, `output.log.1`... | shim | the child's lines: `<RFC 3339 UTC time> <stdout\|stderr> <line>`; `.1` is the newest rotated file |
//! | `shim.log` | shim | the shim's own diagnostics (bind and spawn errors, exits, restarts) |
//!
//! "Atomically" means a temporary file and a rename: a reader sees the old or the new content.
//! Ids are `[a-z0-9-]{1,100}` and checked before any path is built from them.
//!
//! Linux only (`/proc`, `prctl`).
//!
//! # Other runtimes
//!
//! [`DockerRuntime`] runs instances as containers of the local Docker Engine (see [`docker`]).
//! [`Runtimes`] puts both behind one [`Runtime`]: it starts each instance on the runtime its spec
//! names ([`InstanceSpec::runtime`]) and finds every other call's instance wherever it runs.

pub mod docker;
mod files;
mod logfile;
mod process;
pub mod shim;
mod spec;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use docker::{DockerError, DockerRuntime};
pub use process::ProcessRuntime;
pub use spec::{
    ExitInfo, Instance, InstanceSpec, InstanceState, LogPolicy, MAX_ID_LEN, MAX_SOCKETS, RestartPolicy, RuntimeKind,
    validate_id,
};

/// Runs and supervises service instances.
#[async_trait]
pub trait Runtime: Send + Sync + std::fmt::Debug {
    /// What kind of runtime this is (`"process"`).
    fn kind(&self) -> &'static str;
    /// Starts an instance and returns once its child runs (or failed to).
    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError>;
    /// Stops an instance gracefully and waits until its shim has exited. `Ok` for an instance
    /// that is already over; [`RuntimeError::NotFound`] for an unknown id.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops the instance if it runs, then deletes its directory.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every instance under the root, alive or not, sorted by id: how a restarted server
    /// re-attaches.
    async fn list(&self) -> Result<Vec<Instance>, RuntimeError>;
    async fn get(&self, id: &str) -> Result<Option<Instance>, RuntimeError>;
    /// The last `tail` lines of the instance's output across rotated files, oldest first.
    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, RuntimeError>;
}

/// What went wrong, with the instance and the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid instance id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("instance {id}: invalid spec: {reason}")]
    InvalidSpec { id: String, reason: String },
    #[error("instance {id}: program {}: {reason}", program.display())]
    Program { id: String, program: PathBuf, reason: String },
    #[error("instance {id}: program {}: {source}", program.display())]
    ProgramUnreadable { id: String, program: PathBuf, source: std::io::Error },
    #[error("no instance {0}")]
    NotFound(String),
    #[error("instance {id} is already running{}", shim_pid.map(|pid| format!(" (shim pid {pid})")).unwrap_or_default())]
    AlreadyRunning { id: String, shim_pid: Option<u32> },
    #[error("instance {id}: cannot start the shim {}: {source}", program.display())]
    Shim { id: String, program: PathBuf, source: std::io::Error },
    #[error("instance {id} did not start: {reason}")]
    StartFailed { id: String, reason: String },
    #[error("instance {id}: {what} within {timeout:?}")]
    Timeout { id: String, what: &'static str, timeout: Duration },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{} is not valid: {source}", path.display())]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("a background task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Docker(#[from] DockerError),
}

impl RuntimeError {
    /// Whether this says the Docker Engine cannot be reached at all.
    fn is_docker_unreachable(&self) -> bool {
        matches!(self, RuntimeError::Docker(err) if err.is_unreachable())
    }
}

/// The runtimes of one server behind one [`Runtime`]: an instance starts on the runtime its
/// spec names; `stop`, `remove`, `get` and `logs` find the instance on whichever runtime has it
/// (the process runtime's files first, then the Docker Engine); `list` merges both.
///
/// Docker is only reached when asked about an instance the process runtime does not have, or to
/// list; a Docker Engine that cannot be reached (no socket, not running, no permission) simply
/// has no containers of ours: a platform without docker services never needs a daemon.
#[derive(Debug, Clone)]
pub struct Runtimes {
    process: Arc<dyn Runtime>,
    docker: Option<DockerRuntime>,
}

impl Runtimes {
    /// `docker: None` refuses docker instances with a clear error.
    pub fn new(process: Arc<dyn Runtime>, docker: Option<DockerRuntime>) -> Self {
        Runtimes { process, docker }
    }

    pub fn docker(&self) -> Option<&DockerRuntime> {
        self.docker.as_ref()
    }

    /// The docker runtime's answer, or `absent` when the Docker Engine cannot be reached.
    async fn on_docker<T, F>(&self, absent: Result<T, RuntimeError>, call: F) -> Result<T, RuntimeError>
    where
        F: AsyncFnOnce(&DockerRuntime) -> Result<T, RuntimeError>,
    {
        let Some(docker) = &self.docker else { return absent };
        match call(docker).await {
            Err(err) if err.is_docker_unreachable() => {
                // No daemon, or none this user may use: no container of ours runs there either.
                tracing::debug!("docker is not reachable; only process instances are considered: {err}");
                absent
            }
            other => other,
        }
    }
}

#[async_trait]
impl Runtime for Runtimes {
    fn kind(&self) -> &'static str {
        "runtimes"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
        validate_id(&spec.id)?;
        // One id runs on one runtime.
        let elsewhere = match spec.runtime {
            RuntimeKind::Process => self.on_docker(Ok(None), async |d| d.get(&spec.id).await).await?,
            RuntimeKind::Docker => self.process.get(&spec.id).await?,
        };
        if elsewhere.is_some_and(|instance| !instance.state.is_final()) {
            return Err(RuntimeError::AlreadyRunning { id: spec.id.clone(), shim_pid: None });
        }
        match spec.runtime {
            RuntimeKind::Process => self.process.start(spec).await,
            RuntimeKind::Docker => match &self.docker {
                Some(docker) => docker.start(spec).await,
                None => Err(RuntimeError::InvalidSpec {
                    id: spec.id.clone(),
                    reason: "it asks for the docker runtime, which this server does not offer".into(),
                }),
            },
        }
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        match self.process.stop(id).await {
            Err(RuntimeError::NotFound(_)) => {
                self.on_docker(Err(RuntimeError::NotFound(id.to_owned())), async |d| d.stop(id).await).await
            }
            other => other,
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.process.remove(id).await {
            Err(RuntimeError::NotFound(_)) => {
                self.on_docker(Err(RuntimeError::NotFound(id.to_owned())), async |d| d.remove(id).await).await
            }
            other => other,
        }
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        let mut instances = self.process.list().await?;
        instances.extend(self.on_docker(Ok(Vec::new()), async |d| d.list().await).await?);
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(instances)
    }

    async fn get(&self, id: &str) -> Result<Option<Instance>, RuntimeError> {
        match self.process.get(id).await? {
            Some(instance) => Ok(Some(instance)),
            None => self.on_docker(Ok(None), async |d| d.get(id).await).await,
        }
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        match self.process.logs(id, tail).await {
            Err(RuntimeError::NotFound(_)) => {
                self.on_docker(Err(RuntimeError::NotFound(id.to_owned())), async |d| d.logs(id, tail).await).await
            }
            other => other,
        }
    }
}

/// `windlass-shim` next to the running executable, if it is there.
pub fn default_shim_program() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let shim = exe.parent()?.join("windlass-shim");
    shim.is_file().then_some(shim)
}
