//! [`ProcessRuntime`]: starts shims and reads what they write.
//!
//! The JSON files of an instance are a few hundred bytes: they are read inline. Listing every
//! instance, reading logs and deleting directories run on the blocking pool.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::oneshot;

use crate::files::{self, ShimInfo, Status};
use crate::spec::{Instance, InstanceSpec, InstanceState, validate_id};
use crate::{Runtime, RuntimeError, logfile};

/// How long a shim may take to bind its sockets and spawn the child; and how long past the stop
/// grace it may take to exit.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_SLACK: Duration = Duration::from_secs(30);
/// How often the files are read while waiting for a shim.
const POLL: Duration = Duration::from_millis(20);

/// Runs instances as local processes under per-instance shims, with their state in
/// `<root>/<id>/`. Cheap to clone; dropping it leaves every shim running.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    shim_program: PathBuf,
}

impl ProcessRuntime {
    /// A runtime keeping its instances under `root` (created at the first start), running
    /// `shim_program` (see [`crate::default_shim_program`]) for each.
    pub fn new(root: PathBuf, shim_program: PathBuf) -> Self {
        // Shims are recognised by the absolute instance directory on their command line.
        let root = std::path::absolute(&root).unwrap_or(root);
        ProcessRuntime { inner: Arc::new(Inner { root, shim_program }) }
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        validate_id(id)?;
        Ok(self.inner.root.join(id))
    }

    /// Creates the instance directory, replacing a dead instance's.
    fn claim_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let root = &self.inner.root;
        windlass_failpoint::private::create_dir_all(root).map_err(|source| io_error("create", root, source))?;
        let dir = self.dir(id)?;
        match windlass_failpoint::private::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io_error("create", &dir, source)),
        }
        if let Some(existing) = load(&dir, id)?
            && !existing.state.is_final()
        {
            return Err(RuntimeError::AlreadyRunning { id: id.to_owned(), shim_pid: existing.shim_pid });
        }
        tracing::info!(instance = id, "replacing the directory of a finished instance");
        std::fs::remove_dir_all(&dir).map_err(|source| io_error("remove", &dir, source))?;
        match windlass_failpoint::private::create_dir(&dir) {
            Ok(()) => Ok(dir),
            // Another start of the same id won the race.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                Err(RuntimeError::AlreadyRunning { id: id.to_owned(), shim_pid: None })
            }
            Err(source) => Err(io_error("create", &dir, source)),
        }
    }

    /// Waits for the shim to have started the child: `Ok` once it ran, whatever happened since.
    async fn wait_started(
        &self,
        id: &str,
        dir: &Path,
        mut shim_exited: oneshot::Receiver<io::Result<std::process::ExitStatus>>,
        shim_pid: Option<u32>,
    ) -> Result<Instance, RuntimeError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Checked before reading the status, so that a status written just before the exit
            // is seen.
            let exited = match shim_exited.try_recv() {
                Ok(status) => Some(status.map_or_else(|err| err.to_string(), |status| status.to_string())),
                Err(oneshot::error::TryRecvError::Empty) => None,
                Err(oneshot::error::TryRecvError::Closed) => Some("unknown status".to_owned()),
            };
            let status: Option<Status> = files::read_json(&dir.join(files::STATUS))?;
            let failed = |reason: String| Err(RuntimeError::StartFailed { id: id.to_owned(), reason });
            if let Some(status) = status {
                let ran = status.state == InstanceState::Running || status.last_exit.is_some();
                if ran && status.state != InstanceState::Exited {
                    return load(dir, id)?.ok_or_else(|| RuntimeError::NotFound(id.to_owned()));
                }
                match status.state {
                    InstanceState::Exited => {
                        return failed(status.error.unwrap_or_else(|| files::shim_log_tail(dir, 5)));
                    }
                    InstanceState::Stopped => return failed("stopped before the child started".into()),
                    _ => {}
                }
            }
            if let Some(exit) = exited {
                return failed(format!("the shim exited ({exit}): {}", files::shim_log_tail(dir, 5)));
            }
            if Instant::now() > deadline {
                // Leave nothing half-started behind (the child, if any, dies with the shim).
                if let Some(pid) = shim_pid.filter(|&pid| files::is_shim_of(pid, dir)) {
                    let _ = files::send_signal(pid, libc::SIGKILL);
                }
                return Err(RuntimeError::Timeout {
                    id: id.to_owned(),
                    what: "the shim did not start the child",
                    timeout: START_TIMEOUT,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<Instance, RuntimeError> {
        spec.validate()?;
        let id = spec.id.as_str();
        check_program(id, &spec.program)?;
        if !spec.working_dir.is_dir() {
            return Err(RuntimeError::InvalidSpec {
                id: id.to_owned(),
                reason: format!("working directory {} is not a directory", spec.working_dir.display()),
            });
        }
        let shim_program = &self.inner.shim_program;
        if !shim_program.is_file() {
            return Err(RuntimeError::Shim {
                id: id.to_owned(),
                program: shim_program.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "not found"),
            });
        }

        let dir = self.claim_dir(id)?;
        // status.json first: a directory with a spec always has a status.
        let status_path = dir.join(files::STATUS);
        files::write_json_atomic(&status_path, &Status::new(InstanceState::Starting, None))
            .map_err(|source| io_error("write", &status_path, source))?;
        let spec_path = dir.join(files::SPEC);
        files::write_json_atomic(&spec_path, spec).map_err(|source| io_error("write", &spec_path, source))?;

        let mut shim = tokio::process::Command::new(shim_program)
            .arg(&dir)
            .env_clear()
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: signals for the server's terminal do not reach it.
            .process_group(0)
            // The shim outlives this runtime and this process.
            .kill_on_drop(false)
            .spawn()
            .map_err(|source| RuntimeError::Shim { id: id.to_owned(), program: shim_program.clone(), source })?;
        let shim_pid = shim.id();
        tracing::info!(instance = id, shim_pid, "started the shim");
        // Reaps the shim if it exits while this process lives; nothing kills it.
        let (exited_tx, exited) = oneshot::channel();
        // Not the control plane's: the reaper of one shim, ends when it exits.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let _ = exited_tx.send(shim.wait().await);
        });
        self.wait_started(id, &dir, exited, shim_pid).await
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id)?;
        let spec: InstanceSpec =
            files::read_json(&dir.join(files::SPEC))?.ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
        let timeout = spec.stop_grace + STOP_SLACK;
        let deadline = Instant::now() + timeout;
        let mut signalled = false;
        loop {
            let instance = load(&dir, id)?.ok_or_else(|| RuntimeError::NotFound(id.to_owned()))?;
            match instance.shim_pid {
                // A shim starting right now has not recorded its pid yet.
                None if instance.state == InstanceState::Starting => {}
                None => {
                    tracing::info!(instance = id, state = ?instance.state, "stopped");
                    return Ok(());
                }
                Some(pid) if !signalled && !instance.state.is_final() => {
                    tracing::info!(instance = id, shim_pid = pid, "stopping");
                    match files::send_signal(pid, libc::SIGTERM) {
                        Ok(()) => signalled = true,
                        // It exited meanwhile: the next read says how.
                        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
                        Err(source) => return Err(io_error("signal the shim of", &dir, source)),
                    }
                }
                // Signalled, or finishing by itself: wait until it is gone.
                Some(_) => {}
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Timeout { id: id.to_owned(), what: "the shim did not exit", timeout });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id)?;
        if !dir.is_dir() {
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        match self.stop(id).await {
            // Without a spec the directory was never handed to a shim.
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            // The files cannot say whether a shim runs; /proc can.
            Err(err @ RuntimeError::Corrupt { .. }) => {
                if let Some(pid) = files::find_shim(&dir) {
                    tracing::warn!(instance = id, shim_pid = pid, "not removing: {err}, and its shim still runs");
                    return Err(err);
                }
            }
            Err(err) => return Err(err),
        }
        blocking(move || std::fs::remove_dir_all(&dir).map_err(|source| io_error("remove", &dir, source))).await?;
        tracing::info!(instance = id, "removed");
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, RuntimeError> {
        let root = self.inner.root.clone();
        blocking(move || {
            let entries = match std::fs::read_dir(&root) {
                Ok(entries) => entries,
                Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(source) => return Err(io_error("read", &root, source)),
            };
            let mut instances = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|source| io_error("read", &root, source))?;
                let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
                if validate_id(&id).is_err() || !entry.path().is_dir() {
                    continue;
                }
                match load(&entry.path(), &id) {
                    Ok(Some(instance)) => instances.push(instance),
                    Ok(None) => {} // being created or replaced
                    Err(err) => tracing::warn!(instance = id, "skipping an unreadable instance: {err}"),
                }
            }
            instances.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(instances)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Instance>, RuntimeError> {
        let dir = self.dir(id)?;
        let id = id.to_owned();
        blocking(move || load(&dir, &id)).await
    }

    async fn logs(&self, id: &str, tail: usize) -> Result<Vec<String>, RuntimeError> {
        let dir = self.dir(id)?;
        if !dir.join(files::SPEC).exists() {
            return Err(RuntimeError::NotFound(id.to_owned()));
        }
        blocking(move || {
            let output = dir.join(files::OUTPUT_LOG);
            logfile::tail(&logfile::files_oldest_first(&output), tail)
                .map_err(|source| io_error("read", &output, source))
        })
        .await
    }
}

/// Reads an instance's files; `None` when it has no spec (yet). A shim that is gone while the
/// status is not final means the instance is lost.
fn load(dir: &Path, id: &str) -> Result<Option<Instance>, RuntimeError> {
    let Some(spec) = files::read_json::<InstanceSpec>(&dir.join(files::SPEC))? else {
        return Ok(None);
    };
    let status: Option<Status> = files::read_json(&dir.join(files::STATUS))?;
    let shim: Option<ShimInfo> = files::read_json(&dir.join(files::SHIM))?;
    // The runtime writes the status before the spec: no status means a broken directory.
    let status = status.unwrap_or_else(|| Status::new(InstanceState::Lost, None));
    let shim_pid = status.shim_pid.or(shim.as_ref().map(|shim| shim.shim_pid));
    let alive = shim_pid.is_some_and(|pid| files::is_shim_of(pid, dir));
    let state = if status.state.is_final() || alive {
        status.state
    } else if shim_pid.is_none()
        && Timestamp::now().duration_since(status.updated_at)
            < SignedDuration::from_secs(START_TIMEOUT.as_secs() as i64)
    {
        // Written by the runtime; the shim has not written its pid yet.
        InstanceState::Starting
    } else {
        InstanceState::Lost
    };
    Ok(Some(Instance {
        id: id.to_owned(),
        labels: spec.labels,
        addresses: shim.as_ref().map(|shim| shim.addresses.clone()).unwrap_or_default(),
        state,
        shim_pid: shim_pid.filter(|_| alive),
        child_pid: status.child_pid.filter(|_| alive),
        restarts: status.restarts,
        last_exit: status.last_exit,
        started_at: shim.map_or(status.updated_at, |shim| shim.started_at),
    }))
}

/// The program must exist and be an executable file; said plainly, before any shim starts.
fn check_program(id: &str, program: &Path) -> Result<(), RuntimeError> {
    let problem =
        |reason: String| Err(RuntimeError::Program { id: id.to_owned(), program: program.to_owned(), reason });
    match std::fs::metadata(program) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => problem("does not exist".into()),
        Err(source) => Err(RuntimeError::ProgramUnreadable { id: id.to_owned(), program: program.to_owned(), source }),
        Ok(meta) if !meta.is_file() => problem("is not a file".into()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => problem("is not executable".into()),
        Ok(_) => Ok(()),
    }
}

fn io_error(action: &'static str, path: &Path, source: io::Error) -> RuntimeError {
    RuntimeError::Io { action, path: path.to_owned(), source }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(work).await.map_err(RuntimeError::Task)?
}
