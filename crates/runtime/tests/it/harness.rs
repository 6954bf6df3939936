//! A runtime root of its own per test, killed clean when the test ends (even when it fails).

use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use windlass_runtime::{InstanceSpec, ProcessRuntime};
use windlass_testkit::TempDir;

/// A runtime root in a temporary directory. On drop, every process still running for it (a
/// shim has its instance directory on its command line) is killed: nothing lingers after a
/// failed test; a shim's child dies with it.
pub struct Root {
    dir: TempDir,
}

impl Root {
    pub fn new() -> Self {
        Root { dir: windlass_testkit::tempdir() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("instances")
    }

    /// A new runtime on this root, as a (re)started server would make.
    pub fn runtime(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.path(), windlass_testkit::workspace_bin("windlass-shim"))
    }

    pub fn instance_dir(&self, id: &str) -> PathBuf {
        self.path().join(id)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let root = self.path();
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            if cmdline
                .split(|&b| b == 0)
                .skip(1)
                .any(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)).starts_with(&root))
            {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

/// The demo service with an http and an admin socket, answering `VERSION=version`.
pub fn demo_spec(id: &str, version: &str) -> InstanceSpec {
    let mut spec = InstanceSpec::new(id, windlass_testkit::workspace_bin("windlass-demo"));
    spec.env.insert("VERSION".into(), version.into());
    spec.sockets = vec!["http".into(), "admin".into()];
    spec.labels.insert("service".into(), "web".into());
    spec
}

// Polling until a condition holds: the one helper in testkit.
pub use windlass_testkit::eventually;

/// Whether a process runs (a zombie does not: it holds no sockets and will never run again).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub fn signal(pid: u32, signal: i32) {
    let pid = i32::try_from(pid).unwrap();
    // SAFETY: kill(2) on a pid the test started (through the runtime) touches no memory of ours.
    #[allow(unsafe_code)]
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal}): {}", std::io::Error::last_os_error());
}

/// Whether a connection to `address` is refused.
pub async fn refuses(address: SocketAddr) -> bool {
    matches!(tokio::net::TcpStream::connect(address).await, Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// Every directory under `root` (and `root`) is 0700, every file 0600: nothing Windlass wrote is
/// readable by another user.
pub fn assert_private_tree(root: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut pending = vec![root.to_owned()];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700, "{} is a directory of mode {mode:o}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                let mode = meta.permissions().mode() & 0o7777;
                assert_eq!(mode, 0o600, "{} has mode {mode:o}", entry.path().display());
                files += 1;
            }
        }
    }
    assert!(files > 0, "no files under {}", root.display());
}
