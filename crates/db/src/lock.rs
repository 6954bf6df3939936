//! The lock against concurrent runs: a PostgreSQL advisory lock held by the run's session, or
//! an flock beside the SQLite file. A run that cannot take it within the timeout names the holder.

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::conn::{Conn, sql_error};
use crate::error::{Error, Result};

/// The advisory lock key ("WIND"); pg_locks shows it as classid 0, objid 1464421956.
pub const ADVISORY_KEY: i64 = 0x5749_4E44;

/// Held for the run; dropping it releases the flock (the advisory lock ends with the session).
pub(crate) enum LockGuard {
    Advisory,
    File(#[allow(dead_code)] std::fs::File),
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// `windlass <what> <host> pid <pid>`: the application_name other runs see as the holder.
pub(crate) fn application_name(what: &str) -> String {
    let name = format!("windlass {what} {} pid {}", hostname(), std::process::id());
    name.chars().take(63).collect()
}

pub(crate) fn lock_file_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".windlass-lock");
    db.with_file_name(name)
}

pub(crate) async fn acquire(
    conn: &mut Conn,
    url: &str,
    sqlite_path: Option<&Path>,
    timeout: Duration,
) -> Result<LockGuard> {
    let started = Instant::now();
    match (conn, sqlite_path) {
        (Conn::Lite(_), Some(path)) => {
            let lock_path = lock_file_path(path);
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&lock_path)
                .map_err(|err| Error::io(format!("cannot open the lock file {}", lock_path.display()), err))?;
            loop {
                match file.try_lock() {
                    Ok(()) => break,
                    Err(std::fs::TryLockError::WouldBlock) if started.elapsed() < timeout => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(std::fs::TryLockError::WouldBlock) => {
                        let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
                        return Err(Error::Locked(format!(
                            "another run holds the migration lock {} (held by {}); waited {}s",
                            lock_path.display(),
                            if holder.trim().is_empty() { "an unknown process" } else { holder.trim() },
                            timeout.as_secs()
                        )));
                    }
                    Err(std::fs::TryLockError::Error(err)) => {
                        return Err(Error::io(format!("cannot lock {}", lock_path.display()), err));
                    }
                }
            }
            let holder =
                format!("windlass pid {} on {} since {}", std::process::id(), hostname(), jiff::Timestamp::now());
            let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(holder.as_bytes()));
            Ok(LockGuard::File(file))
        }
        (conn @ Conn::Pg(_), _) => {
            loop {
                let got = conn
                    .scalar_i64(&format!("SELECT pg_try_advisory_lock({ADVISORY_KEY})::int::bigint"))
                    .await
                    .map_err(|err| sql_error(url, &err))?;
                if got == Some(1) {
                    return Ok(LockGuard::Advisory);
                }
                if started.elapsed() >= timeout {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let holders = conn
                .strings(&format!(
                    "SELECT format('%s (pid %s, since %s)', coalesce(nullif(a.application_name, ''), 'a session'), a.pid, \
                     date_trunc('second', a.backend_start)) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = {ADVISORY_KEY}::oid \
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                ))
                .await
                .unwrap_or_default();
            Err(Error::Locked(format!(
                "another run holds the migration lock (held by {}); waited {}s",
                if holders.is_empty() { "a session that just ended".to_owned() } else { holders.join(", ") },
                timeout.as_secs()
            )))
        }
        (Conn::Lite(_), None) => Err(Error::Config("a SQLite lock needs the database path".into())),
    }
}
