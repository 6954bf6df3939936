//! A restore's intent: written (0600, atomically) into the backup directory before writes stop,
//! updated at each stage, removed once writes resume. A run killed in between leaves it behind;
//! the next `windlass db` command and the server's start-up find it, undo the write stop (the
//! database's read-only default; the edge's maintenance mode, which only the server can lift)
//! and say what was interrupted and what was done.

use serde::{Deserialize, Serialize};

use crate::backup::{BackupStore, write_atomic};
use crate::error::{Error, Result};

/// The file name, in the backup directory (not `.json`: it is no backup manifest).
pub const INTENT_FILE: &str = "restore.intent";

/// What a write stop holds while a restore runs, recorded before it begins, so a recovery after
/// a kill undoes exactly that.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StopPlan {
    /// PostgreSQL: `ALTER DATABASE .. SET default_transaction_read_only = on`.
    pub database_read_only: bool,
    /// Services this stop puts in maintenance at the edge (not those already in it).
    pub maintenance: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RestoreIntent {
    /// The backup being restored.
    pub backup: String,
    /// Why: `an explicit restore` (`windlass db restore`, `rollback --restore-database`) or
    /// `undoing a failed migration`.
    pub purpose: String,
    pub started_at: String,
    pub host: String,
    pub pid: u32,
    /// How far it got: `stopping writes`, `backing up the current state`, `replacing the
    /// database`, `letting writes through again`.
    pub stage: String,
    /// The backup of the state just before the restore, once taken.
    pub pre_restore: Option<String>,
    pub stop: StopPlan,
}

impl RestoreIntent {
    pub fn new(backup: &str, purpose: &str) -> Self {
        RestoreIntent {
            backup: backup.to_owned(),
            purpose: purpose.to_owned(),
            started_at: jiff::Timestamp::now().to_string(),
            host: crate::lock::hostname(),
            pid: std::process::id(),
            stage: "stopping writes".into(),
            pre_restore: None,
            stop: StopPlan::default(),
        }
    }

    /// Writes it durably (temporary file, fsync, rename, fsync of the directory), 0600.
    pub fn save(&self, store: &BackupStore) -> Result<()> {
        crate::backup::create_private_dir(&store.dir)?;
        let text = serde_json::to_string_pretty(self).map_err(Error::Json)?;
        write_atomic(&store.dir.join(INTENT_FILE), text.as_bytes())
    }

    pub fn stage(&mut self, store: &BackupStore, stage: &str) -> Result<()> {
        stage.clone_into(&mut self.stage);
        self.save(store)
    }

    /// The intent left in `store` by an interrupted restore, if any.
    pub fn load(store: &BackupStore) -> Result<Option<RestoreIntent>> {
        let path = store.dir.join(INTENT_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map(Some).map_err(|err| {
                Error::Restore(format!(
                    "{} is not a restore intent ({err}); if no restore runs, check that the database is writable \
                     and remove the file",
                    path.display()
                ))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(Error::io(path.display().to_string(), err)),
        }
    }

    pub fn remove(store: &BackupStore) -> Result<()> {
        let path = store.dir.join(INTENT_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                crate::backup::sync_dir(&path);
                Ok(())
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::io(path.display().to_string(), err)),
        }
    }
}

/// What recovery found and did about an interrupted restore.
#[derive(Debug, Clone)]
pub struct RecoveredRestore {
    pub intent: RestoreIntent,
    /// What was done, one line each.
    pub done: Vec<String>,
    /// Services still in maintenance at the edge because of it (only the server can lift them;
    /// the intent stays until it does).
    pub maintenance_left: Vec<String>,
}

impl RecoveredRestore {
    /// One message for the operator: what was interrupted, what was done, what to check.
    pub fn message(&self, environment: &str) -> String {
        let intent = &self.intent;
        let mut text = format!(
            "an interrupted restore was found: backup {} ({}), started {} by pid {} on {}, stopped while {}. ",
            intent.backup, intent.purpose, intent.started_at, intent.pid, intent.host, intent.stage
        );
        if self.done.is_empty() {
            text.push_str("Nothing needed undoing. ");
        } else {
            text.push_str(&format!("Done: {}. ", self.done.join("; ")));
        }
        if intent.stage == "replacing the database" || intent.stage == "letting writes through again" {
            text.push_str(&format!(
                "The replacement runs as one transaction (SQLite: one rename), so the database is either all of \
                 backup {} or as it was before; check it (`windlass db status {environment}`) and run \
                 `windlass db restore {environment} {} --yes` to restore it again if needed.",
                intent.backup, intent.backup
            ));
        } else {
            text.push_str("The database was not replaced: it is as it was before the restore.");
        }
        if let Some(pre) = &intent.pre_restore {
            text.push_str(&format!(" The state just before the restore is backup {pre}."));
        }
        if !self.maintenance_left.is_empty() {
            text.push_str(&format!(
                " Still in maintenance at the edge: {} (the server lifts it when it starts; or run \
                 `windlass maintenance off {environment} <service>`).",
                self.maintenance_left.join(", ")
            ));
        }
        text
    }
}
