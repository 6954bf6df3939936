//! Backups: `pg_dump -Fc` in an exported snapshot (row counts taken in the same snapshot) or
//! SQLite `VACUUM INTO`, a JSON manifest beside each file, retention, restore and verify.
//!
//! Layout of a backup directory:
//! ```text
//! <dir>/20261123T181500Z-d42.dump   the pg_dump custom-format archive (SQLite: .sqlite)
//! <dir>/20261123T181500Z-d42.json   its manifest (written atomically, after the file)
//! ```
//! A file without a manifest is an unfinished backup and is never listed or restored.
//!
//! Backups hold every row of the database: the directory is made 0700, archives and manifests
//! 0600 (with explicit modes at creation, whatever the umask). A manifest's `file` and `name` are
//! plain names inside the directory; a manifest naming anything else is refused, so a planted
//! one can never make `prune` or `restore` touch a file outside.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    /// `postgres` or `sqlite`.
    pub engine: String,
    /// The backup file's name, in the same directory.
    pub file: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// Why it was taken: `before-migrate`, `manual`, `pre-restore`, `scheduled`.
    pub reason: String,
    pub deploy_id: Option<String>,
    pub size_bytes: u64,
    pub duration_ms: u64,
    pub sha256: String,
    /// The highest applied migration version at the time of the backup.
    pub schema_version: Option<i64>,
    /// Row counts per table, taken in the backup's own snapshot.
    pub tables: BTreeMap<String, i64>,
    /// `pg_dump (PostgreSQL) 15.18` or `sqlite VACUUM INTO`.
    pub tool: String,
    pub verification: Option<Verification>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verification {
    pub at: String,
    pub ok: bool,
    pub detail: String,
    pub duration_ms: u64,
}

/// The backups of one database, in one directory.
#[derive(Debug, Clone)]
pub struct BackupStore {
    pub dir: PathBuf,
}

/// Retention: keep the newest `keep`, and none older than `max_age`; the newest backup is
/// always kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub keep: u32,
    pub max_age: Duration,
}

impl BackupStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        BackupStore { dir: dir.into() }
    }

    pub fn manifest_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    pub fn file_path(&self, manifest: &Manifest) -> PathBuf {
        self.dir.join(&manifest.file)
    }

    /// Every finished backup, oldest first.
    pub fn list(&self) -> Result<Vec<Manifest>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(Error::io(self.dir.display().to_string(), err)),
        };
        let mut manifests = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|err| Error::io(path.display().to_string(), err))?;
            let manifest: Manifest = serde_json::from_str(&text)
                .map_err(|err| Error::Backup(format!("{} is not a backup manifest: {err}", path.display())))?;
            self.check_manifest(&manifest, &path)?;
            manifests.push(manifest);
        }
        manifests.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
        Ok(manifests)
    }

    /// A manifest names its backup and its file by plain names inside this directory: no `/`,
    /// no `..`, not absolute, and the file is not a symlink. Anything else is refused (a planted
    /// or damaged manifest), so nothing outside the directory is ever read or deleted.
    fn check_manifest(&self, manifest: &Manifest, path: &Path) -> Result<()> {
        let refuse = |what: &str, value: &str, why: &str| {
            Error::Backup(format!(
                "{} is refused: its `{what}` `{value}` {why}; a backup manifest names a plain file inside {} \
                 (nothing was deleted or restored; remove this manifest if Windlass did not write it)",
                path.display(),
                self.dir.display()
            ))
        };
        for (what, value) in [("name", &manifest.name), ("file", &manifest.file)] {
            if !is_plain_name(value) {
                return Err(refuse(what, value, "is not a plain file name"));
            }
        }
        let file = self.dir.join(&manifest.file);
        if std::fs::symlink_metadata(&file).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(refuse("file", &manifest.file, "is a symbolic link"));
        }
        Ok(())
    }

    /// A backup by name (or `latest`).
    pub fn get(&self, name: &str) -> Result<Manifest> {
        let all = self.list()?;
        let found = if name == "latest" { all.last().cloned() } else { all.into_iter().find(|m| m.name == name) };
        found.ok_or_else(|| Error::Backup(format!("no backup named `{name}` in {}", self.dir.display())))
    }

    /// The backup taken before `deploy_id`'s migrations (for `rollback --restore-database`).
    pub fn before_deploy(&self, deploy_id: &str) -> Result<Option<Manifest>> {
        Ok(self
            .list()?
            .into_iter()
            .rev()
            .find(|m| m.reason == "before-migrate" && m.deploy_id.as_deref() == Some(deploy_id)))
    }

    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let text = serde_json::to_string_pretty(manifest).map_err(Error::Json)?;
        write_atomic(&self.manifest_path(&manifest.name), text.as_bytes())
    }

    /// Removes what the retention no longer keeps; returns the names removed.
    pub fn prune(&self, retention: Retention, now: jiff::Timestamp) -> Result<Vec<String>> {
        let all = self.list()?;
        let count = all.len();
        let mut removed = Vec::new();
        for (index, manifest) in all.iter().enumerate() {
            let newest_first = count - 1 - index;
            if newest_first == 0 {
                continue;
            }
            let age = manifest
                .created_at
                .parse::<jiff::Timestamp>()
                .ok()
                .and_then(|created| now.duration_since(created).try_into().ok())
                .unwrap_or(Duration::ZERO);
            if newest_first >= retention.keep as usize || age > retention.max_age {
                // The manifest first: a file without one is an unfinished backup, never listed.
                let _ = std::fs::remove_file(self.manifest_path(&manifest.name));
                let _ = std::fs::remove_file(self.file_path(manifest));
                removed.push(manifest.name.clone());
            }
        }
        Ok(removed)
    }

    /// Versions before streamed restores wrote the SQL of a restore to
    /// `.<backup>.restore.sql` here and left it when killed: plaintext of the whole database.
    /// Removes any found (nothing writes such a file any more, so none is in use); returns them.
    pub fn remove_plaintext_leftovers(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".restore.sql") && std::fs::remove_file(entry.path()).is_ok() {
                removed.push(entry.path());
            }
        }
        removed
    }

    /// A fresh name: `<UTC time>-<label>`, unique in the directory.
    pub fn new_name(&self, label: Option<&str>) -> String {
        let time = jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let label: String = label
            .unwrap_or("manual")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' })
            .collect();
        let base = format!("{time}-{label}");
        let mut name = base.clone();
        let mut n = 2;
        while self.manifest_path(&name).exists() || self.dir.join(format!("{name}.dump")).exists() {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }
}

/// A name with no path in it: not empty, no `/`, no NUL, not `.` or `..`.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Makes `dir` (and its missing parents) and leaves it 0700: backups hold every row.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|err| Error::Backup(format!("cannot create {}: {err}", dir.display())))?;
    // An existing directory made by an older version (0755) is tightened too.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|err| Error::Backup(format!("cannot make {} private (0700): {err}", dir.display())))
}

/// Opens a new file readable by its owner only (0600), replacing any file at `path`.
pub(crate) fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// Sets a file to 0600 (a file a child process wrote).
pub(crate) fn make_private(path: &Path) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| Error::io(format!("cannot make {} private (0600)", path.display()), err))
}

/// Writes a file atomically (0600): a temporary file, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |err: std::io::Error| Error::io(path.display().to_string(), err);
    let tmp = path.with_extension("tmp");
    let mut file = create_private_file(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path);
    Ok(())
}

pub(crate) fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all();
    }
}

/// sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|err| Error::io(path.display().to_string(), err))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|err| Error::io(path.display().to_string(), err))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks the file against its manifest: present, same size, same sha256.
pub fn check_file(store: &BackupStore, manifest: &Manifest) -> Result<()> {
    let path = store.file_path(manifest);
    let size = std::fs::metadata(&path)
        .map_err(|err| Error::Backup(format!("backup file {} is missing: {err}", path.display())))?
        .len();
    if size != manifest.size_bytes {
        return Err(Error::Backup(format!(
            "backup file {} is {size} bytes, the manifest says {} (truncated or replaced)",
            path.display(),
            manifest.size_bytes
        )));
    }
    if file_sha256(&path)? != manifest.sha256 {
        return Err(Error::Backup(format!("backup file {} does not match its checksum (corrupt)", path.display())));
    }
    Ok(())
}

/// Bytes available to an unprivileged user on the filesystem holding `dir`.
#[allow(unsafe_code)]
pub fn free_space(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        Error::io(
            dir.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path with a NUL byte"),
        )
    })?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is a valid NUL-terminated string and stat points to writable memory of the
    // right type; statvfs only writes into it.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(Error::io(format!("statvfs {}", dir.display()), std::io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let stat = unsafe { stat.assume_init() };
    #[allow(clippy::useless_conversion)] // fsblkcnt_t and c_ulong are u64 on 64-bit Linux only
    Ok(u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize)))
}

/// Limits the size of files the child may write (RLIMIT_FSIZE) and ignores SIGXFSZ, so a
/// write past the limit fails with EFBIG instead of killing the child.
#[allow(unsafe_code)]
pub(crate) fn limit_file_size(command: &mut tokio::process::Command, bytes: u64) {
    // SAFETY: between fork and exec the closure calls only async-signal-safe functions
    // (signal, setrlimit) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub(crate) fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
