//! `windlass-shim <instance dir>`: the small process that owns one instance's child.
//!
//! It binds the instance's sockets once, then runs the child with them as fds 3, 4, ...,
//! captures its output into `output.log`, restarts it after a back-off when it exits, and on
//! SIGTERM (or SIGINT) stops it: SIGTERM to the child, SIGKILL after the grace period. Every change
//! is written to `status.json`; its own diagnostics go to `shim.log`. It is single-threaded (a
//! tokio current-thread runtime): the child is spawned from the main thread, which matters for
//! `PR_SET_PDEATHSIG` (the signal fires when the *thread* that forked exits).

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use crate::RuntimeError;
use crate::files::{self, ShimInfo, Status};
use crate::logfile::LogWriter;
use crate::spec::{ExitInfo, InstanceSpec, InstanceState, MAX_SOCKETS};

/// Longer output lines are split into pieces of this many bytes.
const MAX_LINE: u64 = 16 * 1024;
/// How long the output of an exited child may still be read (a grandchild can hold the pipes).
const PUMP_DRAIN: Duration = Duration::from_secs(2);

/// The shim's whole program; its only argument is the instance directory.
pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: windlass-shim <instance dir>");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    close_inherited_fds();
    let diag = match Diag::open(&dir) {
        Ok(diag) => diag,
        Err(err) => {
            eprintln!("windlass-shim: cannot open {}: {err}", dir.join(files::SHIM_LOG).display());
            return ExitCode::FAILURE;
        }
    };
    let mut shim = Shim { status: Status::new(InstanceState::Starting, Some(std::process::id())), dir, diag };
    let outcome = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime.block_on(shim.run()),
        Err(err) => Err(ShimError::AsyncRuntime(err)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let reason = error.to_string();
            shim.diag.log(format_args!("giving up: {reason}"));
            shim.set(|status| {
                status.state = InstanceState::Exited;
                status.child_pid = None;
                status.error = Some(reason);
            });
            ExitCode::FAILURE
        }
    }
}

/// Closes every descriptor above stderr that the shim inherited from whoever started it (a
/// server's parent may leak some): the shim must not keep their pipes open for as long as it
/// lives, nor pass them on to the child.
fn close_inherited_fds() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<RawFd> =
        entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).filter(|&fd| fd > 2).collect();
    for fd in fds {
        // SAFETY: this runs first thing in `main`, before the shim opened anything: every
        // descriptor above 2 was inherited and nothing in this process owns or uses it. (The
        // directory listing's own descriptor is closed already; closing it again fails harmlessly.)
        #[allow(unsafe_code)]
        unsafe {
            libc::close(fd);
        }
    }
}

/// Why the shim gave up; its text is what `status.json` records as the instance's error.
#[derive(Debug, thiserror::Error)]
enum ShimError {
    #[error("cannot start the async runtime: {0}")]
    AsyncRuntime(#[source] io::Error),
    #[error("cannot handle signals: {0}")]
    Signals(#[source] io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("{} does not exist", .0.display())]
    NoSpec(PathBuf),
    #[error("cannot bind socket {name} on {address}: {source}")]
    Bind { name: String, address: SocketAddr, source: io::Error },
    #[error("socket {name}: {source}")]
    Address { name: String, source: io::Error },
    #[error("cannot {action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("cannot start {}: {source}", program.display())]
    Start { program: PathBuf, source: io::Error },
}

struct Shim {
    dir: PathBuf,
    diag: Diag,
    status: Status,
}

impl Shim {
    /// Changes the status and writes it (a failure to write is only logged: the child matters more).
    fn set(&mut self, change: impl FnOnce(&mut Status)) {
        change(&mut self.status);
        self.status.updated_at = Timestamp::now();
        let path = self.dir.join(files::STATUS);
        if let Err(err) = files::write_json_atomic(&path, &self.status) {
            self.diag.log(format_args!("cannot write {}: {err}", path.display()));
        }
    }

    async fn run(&mut self) -> Result<(), ShimError> {
        let mut signals = Signals::install().map_err(ShimError::Signals)?;
        self.set(|_| {}); // records our pid
        let spec_path = self.dir.join(files::SPEC);
        let spec: InstanceSpec = files::read_json(&spec_path)?.ok_or(ShimError::NoSpec(spec_path))?;
        spec.validate()?;

        // Bound once: every restart of the child gets the same sockets, so the ports never change
        // and connections made while the child restarts wait in the backlog.
        let listeners = spec
            .sockets
            .iter()
            .map(|name| {
                TcpListener::bind((spec.listen_host, 0)).map_err(|source| ShimError::Bind {
                    name: name.clone(),
                    address: SocketAddr::new(spec.listen_host, 0),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut addresses = BTreeMap::new();
        for (name, listener) in spec.sockets.iter().zip(&listeners) {
            let address = listener.local_addr().map_err(|source| ShimError::Address { name: name.clone(), source })?;
            addresses.insert(name.clone(), address);
        }
        let info = ShimInfo { shim_pid: std::process::id(), addresses, started_at: Timestamp::now() };
        let info_path = self.dir.join(files::SHIM);
        files::write_json_atomic(&info_path, &info).map_err(|source| ShimError::Io {
            action: "write",
            path: info_path.clone(),
            source,
        })?;
        self.diag.log(format_args!("shim {} for {} listening on {:?}", info.shim_pid, spec.id, info.addresses));

        let output_path = self.dir.join(files::OUTPUT_LOG);
        let output = LogWriter::open(output_path.clone(), spec.log).map_err(|source| ShimError::Io {
            action: "open",
            path: output_path.clone(),
            source,
        })?;
        self.supervise(&spec, &listeners, Arc::new(Mutex::new(output)), &mut signals).await
    }

    /// Runs the child until a stop or a crash loop.
    async fn supervise(
        &mut self,
        spec: &InstanceSpec,
        listeners: &[TcpListener],
        output: Arc<Mutex<LogWriter>>,
        signals: &mut Signals,
    ) -> Result<(), ShimError> {
        let policy = spec.restart;
        let mut restart_times: VecDeque<Instant> = VecDeque::new();
        let mut backoff = policy.backoff_initial;
        let mut ever_ran = false;
        loop {
            let started = Instant::now();
            match spawn_child(spec, listeners) {
                Ok(mut child) => {
                    ever_ran = true;
                    let pid = child.id();
                    self.set(|status| {
                        status.state = InstanceState::Running;
                        status.child_pid = pid;
                        status.error = None;
                    });
                    self.diag.log(format_args!("started {} (pid {})", spec.program.display(), pid.unwrap_or(0)));
                    let pumps = [
                        child.stdout.take().map(|out| pump(out, "stdout", output.clone(), self.diag.clone())),
                        child.stderr.take().map(|err| pump(err, "stderr", output.clone(), self.diag.clone())),
                    ];
                    let stop = tokio::select! {
                        biased;
                        () = signals.stop() => None,
                        status = child.wait() => Some(status),
                    };
                    let exit = match stop {
                        None => {
                            let exit = terminate(&mut child, spec.stop_grace, &self.diag).await;
                            drain(pumps).await;
                            self.diag.log(format_args!("stopped; the child ended with {exit}"));
                            self.set(|status| {
                                status.state = InstanceState::Stopped;
                                status.child_pid = None;
                                status.last_exit = Some(exit);
                            });
                            return Ok(());
                        }
                        Some(status) => exit_info(status),
                    };
                    drain(pumps).await;
                    self.diag.log(format_args!("the child exited by itself: {exit}"));
                    self.set(|status| {
                        status.child_pid = None;
                        status.last_exit = Some(exit);
                    });
                }
                Err(source) => {
                    let error = ShimError::Start { program: spec.program.clone(), source };
                    if !ever_ran {
                        // Not a crash but a setup problem: retrying would not help.
                        return Err(error);
                    }
                    let reason = error.to_string();
                    self.diag.log(&reason);
                    self.set(|status| status.error = Some(reason));
                }
            }

            let now = Instant::now();
            while restart_times.front().is_some_and(|&at| now.duration_since(at) > policy.window) {
                restart_times.pop_front();
            }
            if restart_times.len() >= policy.max_restarts as usize {
                self.diag.log(format_args!(
                    "crash loop: {} restarts within {:?} already; giving up",
                    restart_times.len(),
                    policy.window
                ));
                self.set(|status| {
                    status.state = InstanceState::CrashLoop;
                    status.child_pid = None;
                });
                return Ok(());
            }
            if started.elapsed() >= policy.backoff_max {
                backoff = policy.backoff_initial;
            }
            self.diag.log(format_args!("restarting in {backoff:?}"));
            self.set(|status| status.state = InstanceState::BackingOff);
            let stopped = tokio::select! {
                biased;
                () = signals.stop() => true,
                () = tokio::time::sleep(backoff) => false,
            };
            if stopped {
                self.diag.log("stopped while backing off");
                self.set(|status| status.state = InstanceState::Stopped);
                return Ok(());
            }
            backoff = backoff.saturating_mul(2).min(policy.backoff_max);
            restart_times.push_back(Instant::now());
            self.status.restarts += 1;
        }
    }
}

/// SIGTERM and SIGINT mean "stop"; SIGHUP is ignored (the shim outlives terminals).
struct Signals {
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        let mut hangup = signal(SignalKind::hangup())?;
        // The shim's own process, not the control plane: ignores SIGHUP for the shim's life.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move { while hangup.recv().await.is_some() {} });
        Ok(Signals { terminate: signal(SignalKind::terminate())?, interrupt: signal(SignalKind::interrupt())? })
    }

    /// Resolves when a stop is asked for (cancel-safe: a signal is never lost).
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

fn spawn_child(spec: &InstanceSpec, listeners: &[TcpListener]) -> io::Result<Child> {
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .env_remove("LISTEN_PID")
        .current_dir(&spec.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(first) = listeners.first() {
        command
            .env("LISTEN_FDS", listeners.len().to_string())
            .env("LISTEN_FDNAMES", spec.sockets.join(":"))
            .env("PORT", first.local_addr()?.port().to_string());
    }
    let fds: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    let parent = libc::pid_t::try_from(std::process::id()).map_err(io::Error::other)?;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (prctl, getppid, fcntl, dup2) on integers and on descriptors this process keeps open until
    // the spawn returns; it allocates nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || prepare_child(parent, &fds));
    }
    command.spawn()
}

/// In the forked child: die with the shim, and put the listeners at fds 3, 4, ...
#[allow(unsafe_code)]
fn prepare_child(parent: libc::pid_t, fds: &[RawFd]) -> io::Result<()> {
    // SAFETY: see `spawn_child`; every call takes plain integers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The shim died before the line above took effect: the signal would never come.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // First copy every listener above the targets (close-on-exec, so the copies vanish), so
        // that placing one cannot overwrite another that happens to sit at 3, 4, ...
        let mut moved: [RawFd; MAX_SOCKETS] = [0; MAX_SOCKETS];
        let floor = 3 + fds.len() as RawFd;
        for (slot, &fd) in moved.iter_mut().zip(fds) {
            *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, floor);
            if *slot < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // dup2 leaves FD_CLOEXEC clear on the target, so the sockets survive exec.
        for (i, &fd) in moved.iter().take(fds.len()).enumerate() {
            if libc::dup2(fd, 3 + i as RawFd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// SIGTERM, then SIGKILL after `grace`; how the child ended.
async fn terminate(child: &mut Child, grace: Duration, diag: &Diag) -> ExitInfo {
    if let Some(pid) = child.id() {
        let _ = files::send_signal(pid, libc::SIGTERM);
    }
    let status = match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            diag.log(format_args!("the child did not exit within {grace:?} of SIGTERM; sending SIGKILL"));
            let _ = child.start_kill();
            child.wait().await
        }
    };
    exit_info(status)
}

fn exit_info(status: io::Result<ExitStatus>) -> ExitInfo {
    match status {
        Ok(status) => ExitInfo { code: status.code(), signal: status.signal() },
        Err(_) => ExitInfo { code: None, signal: None },
    }
}

/// Copies one of the child's streams into the output log, line by line.
// The shim's own process, not the control plane: the caller owns the returned handle.
#[allow(clippy::disallowed_methods)]
fn pump(
    stream: impl AsyncRead + Unpin + Send + 'static,
    name: &'static str,
    output: Arc<Mutex<LogWriter>>,
    diag: Diag,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let mut reported = false;
        loop {
            line.clear();
            match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let written =
                        output.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).write_line(name, &line);
                    if let Err(err) = written
                        && !reported
                    {
                        diag.log(format_args!("cannot write the child's {name} to the output log: {err}"));
                        reported = true;
                    }
                }
            }
        }
    })
}

/// Lets the pumps write what the exited child left in the pipes, but not forever.
async fn drain(pumps: [Option<JoinHandle<()>>; 2]) {
    for pump in pumps.into_iter().flatten() {
        let abort = pump.abort_handle();
        if tokio::time::timeout(PUMP_DRAIN, pump).await.is_err() {
            abort.abort();
        }
    }
}

/// `shim.log`: the shim's own diagnostics, one timestamped line each.
#[derive(Clone)]
struct Diag(Arc<File>);

impl Diag {
    fn open(dir: &Path) -> io::Result<Self> {
        Ok(Diag(Arc::new(windlass_failpoint::private::open_append(&dir.join(files::SHIM_LOG))?)))
    }

    fn log(&self, message: impl std::fmt::Display) {
        let _ = (&*self.0).write_all(format!("{:.3} {message}\n", Timestamp::now()).as_bytes());
    }
}
