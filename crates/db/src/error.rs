//! The library's errors. Every message is redacted before it is built: no password of a
//! database URL ever reaches one.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL is not a PostgreSQL or SQLite URL, or a setting is malformed.
    #[error("{0}")]
    Config(String),
    /// The database cannot be reached (down, wrong password, unknown database).
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The migrations directory is missing, or has duplicate versions, a gap, a bad name.
    #[error("migrations: {0}")]
    Migrations(String),
    /// Applied migrations whose files changed since; `repair` re-records their checksums.
    #[error(
        "applied migrations were edited since they ran (checksum mismatch): {}; run `windlass db repair` if the edit is intended",
        .0.join(", ")
    )]
    ChecksumMismatch(Vec<String>),
    /// Migrations run outside a transaction whose run was killed between their statement and
    /// their history row: neither re-run nor restored; the operator decides with `repair`.
    #[error(
        "{}: interrupted after it started and before it was recorded, so its statement may have taken effect (wholly \
         or in part). Windlass neither runs it again nor restores a backup for it. Check the database (for example \
         an INVALID index left by CREATE INDEX CONCURRENTLY), then run `windlass db repair {environment} --applied \
         VERSION --reason \"...\"` if it took effect, or `windlass db repair {environment} --clear VERSION --reason \"...\"` \
         to run it again on the next migrate",
        started.join(", ")
    )]
    MigrationInterrupted { environment: String, started: Vec<String> },
    /// Another run holds the migration lock.
    #[error("{0}")]
    Locked(String),
    /// A migration failed. `restored` names the backup restored when the change had committed.
    #[error("migration {version} ({name}) failed: {reason}{}", restored_note(.restored))]
    MigrationFailed { version: u64, name: String, reason: String, restored: Option<String> },
    /// The external migration command failed.
    #[error("migration command failed: {reason}{}", restored_note(.restored))]
    CommandFailed { reason: String, output: String, restored: Option<String> },
    #[error("backup: {0}")]
    Backup(String),
    /// The write stop (maintenance mode, read-only sessions) could not be set or lifted.
    #[error("stopping writes: {0}")]
    WriteStop(String),
    #[error("restore: {0}")]
    Restore(String),
    #[error("verify: {0}")]
    Verify(String),
    /// The driver's message, redacted: it is kept as text (not as the driver's error) because
    /// the driver's own message may quote the URL with its password.
    #[error("database: {0}")]
    Sql(String),
    /// A file or directory could not be read, written or checked; `context` names it.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// A manifest or intent record could not be written as JSON.
    #[error("{0}")]
    Json(#[source] serde_json::Error),
}

impl Error {
    /// An [`Error::Io`] about `context` (a path, or what was being done to it).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

fn restored_note(restored: &Option<String>) -> String {
    match restored {
        Some(name) => format!(" (the change had committed: the database was restored from backup {name})"),
        None => String::new(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
