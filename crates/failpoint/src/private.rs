//! Private files: everything Windlass writes may hold a secret (rendered commands and variables,
//! step output, tokens, the store), so it is readable and writable by its owner only, as a class.
//!
//! Every writer goes through these helpers instead of `std::fs::write`, `File::create`,
//! `create_dir_all` or `OpenOptions`:
//! - [`create_dir_all`] / [`create_dir`]: directories made 0700 (existing ones are left alone);
//! - [`ensure_dir`]: a state directory, made 0700 or tightened to 0700 (logged) when looser;
//! - [`write_atomic`]: a file written 0600 by temporary file, fsync, rename and fsync of the
//!   directory, so a reader (or a crash) sees the old or the new content, never a part;
//! - [`open_append`] / [`create_new`]: files opened 0600 (an existing looser file is tightened);
//! - [`tighten`] / [`tighten_logged`]: an existing file or directory made private (e.g.
//!   SQLite's files on open, a copied file).
//!
//! The modes are given at creation, so they never depend on the process umask; the binaries
//! also set the umask to 0o077 at start ([`restrict_umask`]) as defence in depth, so that files
//! created by code that does not know about this module (SQLite's `-wal` and `-shm`, a library)
//! are private too.
//!
//! It lives in `windlass-failpoint` because that is the one crate every writer already depends
//! on, and atomic writes take a failpoint before their rename.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of every directory Windlass creates.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file Windlass creates (an executable it freezes is 0700).
pub const FILE_MODE: u32 = 0o600;
/// The umask [`restrict_umask`] sets.
pub const UMASK: u32 = 0o077;

/// Sets the process umask to 0o077 and returns the previous one. Called first thing in `main` of
/// `windlass` and `windlass-shim`: a file any code creates without an explicit mode (a library,
/// SQLite's `-wal`/`-shm`, a step's `sh`) is then private too. Children inherit it, so service
/// instances and step commands also start with umask 0o077 (they may set their own).
pub fn restrict_umask() -> u32 {
    // SAFETY: umask(2) only swaps an integer in the process; it cannot fail or touch memory.
    #[allow(unsafe_code)]
    let previous = unsafe { libc::umask(UMASK as libc::mode_t) };
    previous
}

/// Creates `dir` and any missing parent 0700; directories that exist are left as they are.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
    Ok(())
}

/// Creates the one directory `dir` 0700 (its parent must exist); `AlreadyExists` when it does.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(dir)
}

/// A state directory: created 0700 (with missing parents), or tightened to 0700 when it exists
/// with any group or other permission (logged as a warning, naming the old mode).
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    create_dir_all(dir)?;
    tighten_logged(dir)?;
    Ok(())
}

/// [`tighten`], logging a warning that names the path and its old mode when it changed it: for
/// files and directories an operator may have made (a state directory, an existing store).
pub fn tighten_logged(path: &Path) -> io::Result<Option<u32>> {
    let old = tighten(path)?;
    if let Some(mode) = old {
        tracing::warn!(
            path = %path.display(),
            "{} was accessible to other users (mode {mode:o}); made it private",
            path.display()
        );
    }
    Ok(old)
}

/// Makes an existing file 0600 (keeping the owner's execute bit: 0700) or directory 0700 when
/// it has any group or other permission. Returns the old mode when it changed something;
/// `Ok(None)` when it was private already, is a symbolic link or does not exist.
pub fn tighten(path: &Path) -> io::Result<Option<u32>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    if meta.file_type().is_symlink() {
        return Ok(None);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    let private = if meta.is_dir() { DIR_MODE } else { (mode & 0o100) | FILE_MODE };
    std::fs::set_permissions(path, Permissions::from_mode(private))?;
    Ok(Some(mode))
}

fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Sets an open file's mode to 0600 when it has any group or other bit (a file that existed
/// before it was opened keeps its mode otherwise).
fn tighten_open(file: &File) -> io::Result<()> {
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// Opens `path` for appending, creating it 0600; an existing looser file is made 0600.
pub fn open_append(path: &Path) -> io::Result<File> {
    let file = private_options().create(true).append(true).open(path)?;
    tighten_open(&file)?;
    Ok(file)
}

/// Creates a new file 0600 for writing; `AlreadyExists` when there is one.
pub fn create_new(path: &Path) -> io::Result<File> {
    private_options().write(true).create_new(true).open(path)
}

/// Writes `bytes` to `path` 0600, atomically: a temporary file beside it (`.<name>.tmp-<pid>-<n>`),
/// synced, renamed over `path`, then the directory synced. Missing directories are created 0700.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with_failpoint(path, bytes, None)
}

/// [`write_atomic`], reaching the failpoint `before_rename` (when given) between the synced
/// temporary file and the rename.
pub fn write_atomic_with_failpoint(path: &Path, bytes: &[u8], before_rename: Option<&str>) -> io::Result<()> {
    write_atomic_mode(path, bytes, FILE_MODE, before_rename)
}

/// [`write_atomic`] with the executable mode 0700: for a frozen executable.
pub fn write_atomic_executable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, bytes, DIR_MODE, None)
}

fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32, before_rename: Option<&str>) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?
        .to_string_lossy()
        .into_owned();
    create_dir_all(&dir)?;
    remove_stale_temporaries(&dir, &name);
    let pid = std::process::id();
    let temp = dir.join(format!(".{name}.tmp-{pid}-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp)?;
        // Exactly `mode`, whatever the umask.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    if let Some(name) = before_rename {
        crate::hit(name);
    }
    if let Err(err) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    File::open(&dir)?.sync_all()
}

/// Removes the temporary files of `name` that a crashed writer left (`.<name>.tmp-<pid>-<n>` of
/// a process that is gone); a live process's are its writes in progress and are left alone.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("windlass-private-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    /// The umask is the process's: tests that set it take turns.
    static UMASK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Each test runs under a permissive umask, so a mode that comes out private was asked for
    /// explicitly, not granted by the umask.
    fn permissive_umask() -> std::sync::MutexGuard<'static, ()> {
        let guard = UMASK_LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: umask(2) swaps an integer.
        #[allow(unsafe_code)]
        unsafe {
            libc::umask(0o002);
        }
        guard
    }

    #[test]
    fn directories_are_made_0700_with_their_missing_parents() {
        let _umask = permissive_umask();
        let root = scratch("dirs");
        let deep = root.join("a/b/c");
        create_dir_all(&deep).unwrap();
        for dir in [root.join("a"), root.join("a/b"), deep.clone()] {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        }
        create_dir(&root.join("one")).unwrap();
        assert_eq!(mode(&root.join("one")), 0o700);
        assert_eq!(create_dir(&root.join("one")).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_loose_state_directory_is_tightened_and_a_private_one_left_alone() {
        let _umask = permissive_umask();
        let root = scratch("ensure");
        let state = root.join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(tighten(&state).unwrap(), None, "already private");
        let fresh = root.join("new/state");
        ensure_dir(&fresh).unwrap();
        assert_eq!((mode(&root.join("new")), mode(&fresh)), (0o700, 0o700));
        // Files: 0600, keeping the owner's execute bit; a missing one is no error.
        let file = root.join("f");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(tighten(&file).unwrap(), Some(0o644));
        assert_eq!(mode(&file), 0o600);
        let exe = root.join("x");
        std::fs::write(&exe, "x").unwrap();
        std::fs::set_permissions(&exe, Permissions::from_mode(0o755)).unwrap();
        tighten(&exe).unwrap();
        assert_eq!(mode(&exe), 0o700);
        assert_eq!(tighten(&root.join("missing")).unwrap(), None);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn atomic_writes_are_0600_replace_the_old_content_and_leave_no_temporary() {
        let _umask = permissive_umask();
        let root = scratch("atomic");
        let path = root.join("sub/spec.json");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!((mode(&path), mode(&root.join("sub"))), (0o600, 0o700));
        // An existing world-readable file is replaced by a private one.
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(mode(&path), 0o600);
        let exe = root.join("program");
        write_atomic_executable(&exe, b"#!/bin/sh\n").unwrap();
        assert_eq!(mode(&exe), 0o700);
        // A dead writer's temporary is swept; only the two files remain.
        let stale = root.join("sub/.spec.json.tmp-999999999-0");
        std::fs::write(&stale, "partial").unwrap();
        write_atomic(&path, b"third").unwrap();
        let names: Vec<_> = std::fs::read_dir(root.join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["spec.json"]);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn appending_creates_0600_and_tightens_an_existing_loose_file() {
        let _umask = permissive_umask();
        let root = scratch("append");
        let log = root.join("output.log");
        open_append(&log).unwrap().write_all(b"one\n").unwrap();
        assert_eq!(mode(&log), 0o600);
        std::fs::set_permissions(&log, Permissions::from_mode(0o644)).unwrap();
        open_append(&log).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(mode(&log), 0o600);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        let new = root.join("new");
        create_new(&new).unwrap();
        assert_eq!(mode(&new), 0o600);
        assert_eq!(create_new(&new).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn restrict_umask_makes_plainly_created_files_private() {
        let _umask = permissive_umask();
        let root = scratch("umask");
        let previous = restrict_umask();
        assert_eq!(previous, 0o002);
        std::fs::write(root.join("plain"), "x").unwrap();
        std::fs::create_dir(root.join("dir")).unwrap();
        // SAFETY: umask(2) swaps an integer.
        #[allow(unsafe_code)]
        unsafe {
            libc::umask(previous as libc::mode_t);
        }
        assert_eq!((mode(&root.join("plain")), mode(&root.join("dir"))), (0o600, 0o700));
        std::fs::remove_dir_all(root).unwrap();
    }
}
