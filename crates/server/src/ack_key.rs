//! The key that signs acknowledgement links (`/ack/<token>`): whoever holds it can acknowledge
//! any alert, so it lives in a private file (0600, in a 0700 directory), never in the store, where
//! a copy of the database (a backup, a replica, a dump handed to someone) would carry it.
//!
//! Where: `[server] ack_key_file` (relative to the config file's directory), which must exist,
//! so that servers serving one team's links use one key (a copy of one file); else
//! `ack-link.key` in the state directory, made on first start. The file holds 64 hex digits.
//!
//! Windlass before this kept the key in the store's settings (`alerts.link_secret`). A store
//! that still holds it has it moved out at start: the file is written first (synced, created
//! without replacing anything), the setting deleted after, so a crash in between leaves both
//! holding the same key and the next start only deletes the setting. Links already sent keep
//! working. The failpoint `ack_key.after_write` stops the process between the two steps.

use std::io;
use std::path::{Path, PathBuf};

use windlass_store::Store;
use zeroize::Zeroizing;

/// The file's name in the state directory when `[server] ack_key_file` names none.
pub const DEFAULT_FILE: &str = "ack-link.key";
/// The store setting where Windlass once kept the key; moved out at start.
pub const LEGACY_SETTING: &str = "alerts.link_secret";
/// 256 random bits.
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AckKeyError {
    #[error(
        "[server] ack_key_file: {} does not exist; make it with `(umask 077; openssl rand -hex 32 > {})` and copy it \
         to every server behind alerts.public_url",
        path.display(),
        path.display()
    )]
    Missing { path: PathBuf },
    #[error(
        "the acknowledgement-link key {} is accessible by other users (mode {mode:03o}), so Windlass refuses to use \
         it; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    NotPrivate { path: PathBuf, mode: u32 },
    #[error("the acknowledgement-link key {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("cannot read the acknowledgement-link key {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "the acknowledgement-link key {} does not hold a key: expected {} hex digits ({KEY_BYTES} random bytes), \
         such as `openssl rand -hex 32` prints",
        path.display(),
        KEY_BYTES * 2
    )]
    Malformed { path: PathBuf },
    #[error("cannot write the acknowledgement-link key {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("no randomness for a new acknowledgement-link key: {0}")]
    Random(String),
    #[error("the acknowledgement-link key in the store: {0}")]
    Store(#[from] windlass_store::StoreError),
}

/// The key's bytes, wiped from memory when dropped; `Debug` never shows them.
#[derive(Clone)]
pub struct AckKey(Zeroizing<Vec<u8>>);

impl AckKey {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for AckKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckKey([REDACTED])")
    }
}

/// Where the key is: `[server] ack_key_file` resolved against the config file's directory
/// (true: configured), or the default file in `state_dir` (false).
pub fn location(config: &windlass_config::Config, config_path: &Path, state_dir: &Path) -> (PathBuf, bool) {
    match &config.server.ack_key_file {
        Some(file) => (windlass_config::config_dir(config_path).join(&file.value), true),
        None => (state_dir.join(DEFAULT_FILE), false),
    }
}

/// Reads the key at `path`: refused when other users may read or write it (checked before its
/// content is read), when it is not a regular file, or when it holds no key. `Ok(None)`: no file.
pub fn read(path: &Path) -> Result<Option<AckKey>, AckKeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AckKeyError::Read { path: path.to_owned(), source }),
    };
    if !meta.is_file() {
        return Err(AckKeyError::NotAFile { path: path.to_owned() });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AckKeyError::NotPrivate { path: path.to_owned(), mode });
    }
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|source| AckKeyError::Read { path: path.to_owned(), source })?,
    );
    decode(text.trim()).map(Some).ok_or_else(|| AckKeyError::Malformed { path: path.to_owned() })
}

fn decode(hex_text: &str) -> Option<AckKey> {
    let bytes = Zeroizing::new(hex::decode(hex_text).ok()?);
    (bytes.len() == KEY_BYTES).then(|| AckKey(bytes))
}

/// The server's key, at start: read from its file; moved there from the store if an older
/// Windlass left it in the settings; made (the default file only) if there is none yet.
pub async fn load(
    config: &windlass_config::Config,
    config_path: &Path,
    state_dir: &Path,
    store: &dyn Store,
) -> Result<AckKey, AckKeyError> {
    let (path, configured) = location(config, config_path, state_dir);
    if !configured && store.backend() == windlass_store::Backend::Postgres {
        // A shared store usually means several servers, and a link must verify on whichever
        // one it reaches: a key per state directory would not.
        tracing::warn!(
            path = %path.display(),
            "the acknowledgement-link key is this server's own ({}); servers sharing this store need one key: \
             name it with [server] ack_key_file",
            path.display()
        );
    }
    let legacy = store.setting(LEGACY_SETTING).await?;
    let legacy_key = legacy.as_deref().and_then(|hex_text| {
        let key = decode(hex_text.trim());
        if key.is_none() {
            tracing::warn!(setting = LEGACY_SETTING, "the store's old acknowledgement-link key is malformed; dropped");
        }
        key
    });
    let key = match read(&path)? {
        Some(key) => {
            if legacy_key.as_ref().is_some_and(|old| old.bytes() != key.bytes()) {
                tracing::warn!(
                    path = %path.display(),
                    "the store held another acknowledgement-link key than {}; links signed with the store's no longer \
                     verify",
                    path.display()
                );
            }
            key
        }
        None => {
            let (key, moved) = match legacy_key {
                Some(old) => (old, true),
                None if configured => return Err(AckKeyError::Missing { path }),
                None => (random_key()?, false),
            };
            let key = create(&path, &key)?;
            if moved {
                tracing::info!(path = %path.display(), "moved the acknowledgement-link key out of the store");
            } else {
                tracing::info!(path = %path.display(), "made a new acknowledgement-link key");
            }
            key
        }
    };
    // The file holds the key (synced) before the store lets go of it.
    windlass_failpoint::hit("ack_key.after_write");
    if legacy.is_some() {
        store.delete_setting(LEGACY_SETTING).await?;
    }
    Ok(key)
}

fn random_key() -> Result<AckKey, AckKeyError> {
    let mut bytes = Zeroizing::new(vec![0u8; KEY_BYTES]);
    getrandom::fill(&mut bytes).map_err(|err| AckKeyError::Random(err.to_string()))?;
    Ok(AckKey(bytes))
}

/// Writes `key` to `path` (0600, its directory made 0700 if missing), without ever replacing a
/// file: the key is written to a temporary file beside it, synced, and hard-linked to `path`,
/// which fails if another process made `path` meanwhile; then the key in `path` wins.
fn create(path: &Path, key: &AckKey) -> Result<AckKey, AckKeyError> {
    use std::io::Write as _;
    let write_error = |source| AckKeyError::Write { path: path.to_owned(), source };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    windlass_failpoint::private::create_dir_all(dir).map_err(write_error)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let written = (|| {
        let mut file = windlass_failpoint::private::create_new(&temporary)?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.bytes())));
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&temporary, path)
    })();
    let _ = std::fs::remove_file(&temporary);
    match written {
        Ok(()) => {
            // The new name is durable only once the directory is.
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(write_error)?;
            Ok(key.clone())
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            read(path)?.ok_or_else(|| AckKeyError::Read { path: path.to_owned(), source: err })
        }
        Err(err) => Err(write_error(err)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_made_key_is_private_and_read_back_and_a_loose_or_bad_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join(DEFAULT_FILE);
        let key = create(&path, &random_key().unwrap()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(read(&path).unwrap().unwrap().bytes(), key.bytes());
        // A second creation never replaces the first key.
        let again = create(&path, &random_key().unwrap()).unwrap();
        assert_eq!(again.bytes(), key.bytes());
        assert!(std::fs::read_dir(path.parent().unwrap()).unwrap().count() == 1, "no temporary file is left");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains(&format!("chmod 600 {}", path.display())) && err.contains("640"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex, and a secret-looking value\n").unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("64 hex digits") && !err.contains("secret-looking"), "{err}");
        std::fs::write(&path, "00ff\n").unwrap();
        assert!(matches!(read(&path), Err(AckKeyError::Malformed { .. })));
        assert!(read(&dir.path().join("none")).unwrap().is_none());
        assert!(matches!(read(dir.path()), Err(AckKeyError::NotAFile { .. })));
        assert!(!format!("{key:?}").contains(&hex::encode(key.bytes())));
    }
}
