//! The files in an instance directory, shared by the runtime (reader) and the shim (writer), and
//! the few process helpers both need.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::RuntimeError;
use crate::spec::{ExitInfo, InstanceState};

pub const SPEC: &str = "spec.json";
pub const STATUS: &str = "status.json";
pub const SHIM: &str = "shim.json";
pub const SHIM_LOG: &str = "shim.log";
pub const OUTPUT_LOG: &str = "output.log";

/// `shim.json`: written once by the shim, after it bound the sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimInfo {
    pub shim_pid: u32,
    pub addresses: BTreeMap<String, SocketAddr>,
    pub started_at: Timestamp,
}

/// `status.json`: rewritten at every change (first by the runtime, then only by the shim).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub state: InstanceState,
    pub shim_pid: Option<u32>,
    pub child_pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<ExitInfo>,
    /// Why the shim gave up, for [`InstanceState::Exited`]; the last spawn error otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at: Timestamp,
}

impl Status {
    pub fn new(state: InstanceState, shim_pid: Option<u32>) -> Self {
        Status {
            state,
            shim_pid,
            child_pid: None,
            restarts: 0,
            last_exit: None,
            error: None,
            updated_at: Timestamp::now(),
        }
    }
}

/// Writes `value` as JSON to `path` atomically and privately (0600: `spec.json` holds rendered
/// secrets): a temporary file next to it, then a rename, so a reader sees the old or the new
/// content, never a part.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    bytes.push(b'\n');
    windlass_failpoint::private::write_atomic(path, &bytes)
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, RuntimeError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RuntimeError::Io { action: "read", path: path.to_owned(), source }),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|source| RuntimeError::Corrupt { path: path.to_owned(), source })
}

/// Whether `pid` is a live shim serving `dir`: its command line has `dir` as an argument. This
/// guards against a recycled pid; a zombie has an empty command line and counts as gone.
pub fn is_shim_of(pid: u32, dir: &Path) -> bool {
    if pid <= 1 {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    cmdline.split(|&b| b == 0).skip(1).any(|arg| arg == dir.as_os_str().as_bytes())
}

/// A live shim serving `dir`, found by scanning `/proc`: for when the files cannot say.
pub fn find_shim(dir: &Path) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .find(|&pid| is_shim_of(pid, dir))
}

/// Sends `signal` to `pid`.
pub fn send_signal(pid: u32, signal: i32) -> io::Result<()> {
    let pid = i32::try_from(pid).ok().filter(|&pid| pid > 1).ok_or_else(|| io::Error::other("bad pid"))?;
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let result = unsafe { libc::kill(pid, signal) };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The last `lines` lines of `shim.log`, for error messages.
pub fn shim_log_tail(dir: &Path, lines: usize) -> String {
    match crate::logfile::tail(&[dir.join(SHIM_LOG)], lines) {
        Ok(tail) if !tail.is_empty() => tail.join("; "),
        _ => "shim.log is empty".to_owned(),
    }
}
