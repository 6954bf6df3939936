//! What the runtime is asked to run ([`InstanceSpec`]) and what it reports ([`Instance`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// The longest instance id.
pub const MAX_ID_LEN: usize = 100;
/// The most listening sockets one instance may have.
pub const MAX_SOCKETS: usize = 32;

/// One service instance to run: the program, its environment and its sockets, and how it is
/// restarted, stopped and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// `[a-z0-9-]{1,100}`; also the name of the instance's directory under the runtime's root.
    pub id: String,
    /// Free-form labels (environment, service, color, deploy...), stored and returned by `list`.
    pub labels: BTreeMap<String, String>,
    /// The absolute path of the executable.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The child's whole environment (nothing is inherited); the runtime adds `LISTEN_FDS`,
    /// `LISTEN_FDNAMES` and `PORT` when there are sockets.
    pub env: BTreeMap<String, String>,
    pub working_dir: PathBuf,
    /// Names of the listening sockets to bind, passed as fds 3, 4, ... in this order.
    pub sockets: Vec<String>,
    /// Where the sockets bind, each on port 0 (the kernel picks a free port).
    pub listen_host: IpAddr,
    /// On stop: SIGTERM, then SIGKILL after this long.
    pub stop_grace: Duration,
    pub restart: RestartPolicy,
    pub log: LogPolicy,
    /// Which runtime runs it; [`crate::Runtimes`] dispatches on this. Specs written before the
    /// field existed read as [`RuntimeKind::Process`].
    #[serde(default)]
    pub runtime: RuntimeKind,
}

/// Where an instance runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// A local process under a shim ([`crate::ProcessRuntime`]).
    #[default]
    Process,
    /// A container on the local Docker Engine ([`crate::DockerRuntime`]).
    Docker,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl InstanceSpec {
    /// A spec with defaults: no labels, arguments, environment or sockets, working directory `/`,
    /// sockets on 127.0.0.1, 10 s stop grace, default restart and log policies, the process runtime.
    pub fn new(id: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        InstanceSpec {
            id: id.into(),
            labels: BTreeMap::new(),
            program: program.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            working_dir: PathBuf::from("/"),
            sockets: Vec::new(),
            listen_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            stop_grace: Duration::from_secs(10),
            restart: RestartPolicy::default(),
            log: LogPolicy::default(),
            runtime: RuntimeKind::Process,
        }
    }

    /// Checks what can be checked without touching the file system.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        validate_id(&self.id)?;
        let invalid = |reason: String| Err(RuntimeError::InvalidSpec { id: self.id.clone(), reason });
        if !self.program.is_absolute() {
            return invalid(format!("program {} is not an absolute path", self.program.display()));
        }
        if !self.working_dir.is_absolute() {
            return invalid(format!("working directory {} is not an absolute path", self.working_dir.display()));
        }
        if let Some(arg) = self.args.iter().find(|arg| arg.contains('\0')) {
            return invalid(format!("argument {arg:?} contains a NUL character"));
        }
        for (name, value) in &self.env {
            if name.is_empty() || name.contains(['=', '\0']) {
                return invalid(format!("environment variable name {name:?} is empty or contains '=' or NUL"));
            }
            if value.contains('\0') {
                return invalid(format!("environment variable {name} contains a NUL character"));
            }
        }
        if self.sockets.len() > MAX_SOCKETS {
            return invalid(format!("{} sockets; at most {MAX_SOCKETS}", self.sockets.len()));
        }
        for (i, name) in self.sockets.iter().enumerate() {
            let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
            if name.is_empty() || name.len() > 64 || !name.chars().all(valid_char) {
                return invalid(format!("socket name {name:?} is not 1 to 64 of [A-Za-z0-9._-]"));
            }
            if self.sockets[..i].contains(name) {
                return invalid(format!("socket name {name:?} appears twice"));
            }
        }
        if self.log.max_bytes == 0 {
            return invalid("log.max_bytes is 0".into());
        }
        if self.restart.backoff_initial > self.restart.backoff_max {
            return invalid(format!(
                "restart.backoff_initial {:?} is above restart.backoff_max {:?}",
                self.restart.backoff_initial, self.restart.backoff_max
            ));
        }
        Ok(())
    }
}

/// Checks an instance id: `[a-z0-9-]{1,100}`. Every path the runtime builds from an id goes
/// through here first, so an id can never name anything outside its root.
pub fn validate_id(id: &str) -> Result<(), RuntimeError> {
    let reason = if id.is_empty() {
        "it is empty"
    } else if id.len() > MAX_ID_LEN {
        "it is longer than 100 characters"
    } else if !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        "only a-z, 0-9 and '-' are allowed"
    } else {
        return Ok(());
    };
    Err(RuntimeError::InvalidId { id: id.to_owned(), reason })
}

/// When the shim restarts a child that exited by itself.
///
/// After an exit the shim waits a back-off (`backoff_initial`, doubling up to `backoff_max`; a
/// child that ran at least `backoff_max` starts over at `backoff_initial`), then restarts it.
/// An exit that would make more than `max_restarts` restarts within `window` ends in
/// [`InstanceState::CrashLoop`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    /// 5 restarts in 60 s, back-off 200 ms doubling to 10 s.
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// How the child's output file is rotated: when a line would take `output.log` past `max_bytes`
/// it becomes `output.log.1` (and `.1` becomes `.2`...), keeping `keep` rotated files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPolicy {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Default for LogPolicy {
    /// 10 MiB per file, 5 rotated files.
    fn default() -> Self {
        LogPolicy { max_bytes: 10 * 1024 * 1024, keep: 5 }
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// The shim is starting: binding the sockets, spawning the child.
    Starting,
    /// The child runs.
    Running,
    /// The child exited by itself; the shim restarts it after a back-off.
    BackingOff,
    /// Final: the shim gave up without a crash loop: it could not bind a socket or could not
    /// start the program at all (the reason is in `shim.log`).
    Exited,
    /// Final: the child exited more often than the restart policy allows; the shim closed the
    /// sockets and exited. `last_exit` says how the child ended the last time.
    CrashLoop,
    /// Final: stopped on request; `last_exit` says how the child ended.
    Stopped,
    /// Final: the shim died without writing a final status (e.g. it was killed with SIGKILL);
    /// its child was killed with it.
    Lost,
}

impl InstanceState {
    /// Whether the instance is over (nothing runs and nothing will restart).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Exited | Self::CrashLoop | Self::Stopped | Self::Lost)
    }
}

/// How a child ended: an exit code, or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => write!(f, "unknown exit"),
        }
    }
}

/// An instance as the runtime finds it on disk. Pids are only reported while the shim is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Socket name to bound address (empty until the shim has bound them).
    pub addresses: BTreeMap<String, SocketAddr>,
    pub state: InstanceState,
    pub shim_pid: Option<u32>,
    pub child_pid: Option<u32>,
    /// How many times the shim restarted the child.
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    /// When the shim started (when the instance was created, until the shim has bound its
    /// sockets).
    pub started_at: jiff::Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_lowercase_letters_digits_and_dashes() {
        for id in ["a", "web-blue-20260101-1", &"x".repeat(100)] {
            assert!(validate_id(id).is_ok(), "{id}");
        }
        for id in ["", "..", "../x", "a/b", "A", "a_b", "a.b", "é", &"x".repeat(101)] {
            assert!(validate_id(id).is_err(), "{id}");
        }
    }

    #[test]
    fn specs_are_checked_before_anything_runs() {
        let good = InstanceSpec::new("web", "/bin/true");
        assert!(good.validate().is_ok());
        let broken: [fn(&mut InstanceSpec); 6] = [
            |spec| spec.program = "bin/true".into(),
            |spec| spec.sockets = vec!["http".into(), "http".into()],
            |spec| spec.sockets = vec!["a:b".into()],
            |spec| _ = spec.env.insert("A=B".into(), "c".into()),
            |spec| spec.args = vec!["a\0b".into()],
            |spec| spec.log.max_bytes = 0,
        ];
        for (i, break_it) in broken.iter().enumerate() {
            let mut spec = good.clone();
            break_it(&mut spec);
            assert!(matches!(spec.validate(), Err(RuntimeError::InvalidSpec { .. })), "case {i}");
        }
    }

    #[test]
    fn states_serialize_in_snake_case() {
        assert_eq!(serde_json::to_string(&InstanceState::CrashLoop).unwrap(), "\"crash_loop\"");
        assert_eq!(serde_json::from_str::<InstanceState>("\"backing_off\"").unwrap(), InstanceState::BackingOff);
    }
}
