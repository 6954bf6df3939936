//! Windlass secrets: where an environment's secrets live, how they are read and written, and
//! the redactor that keeps their values out of everything Windlass prints.
//!
//! Two backends sit behind one [`Backend`] trait:
//! - [`files::FileBackend`]: one SOPS-format file per environment (`<dir>/<env>.enc.env`,
//!   `.enc.yaml` or `.enc.json`), age-encrypted to the team's keys, committed to the repo and
//!   interoperable with the real `sops` binary (see [`sops`] and [`age`]);
//! - [`bao::BaoBackend`]: OpenBao / HashiCorp Vault KV version 2, one versioned entry per
//!   environment, written with check-and-set.
//!
//! The deploy pipeline calls [`open`] (or [`load_all`]) with the config and an environment and
//! gets a [`SecretSet`]; everything that prints builds a [`Redactor`] from it first. Values live
//! in [`SecretValue`], which zeroizes on drop and never prints its content.

pub mod age;
pub mod bao;
mod error;
pub mod files;
pub mod redact;
pub mod sops;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

pub use error::{Result, SecretsError};
pub use redact::{MIN_LEN, Redactor, StreamRedactor};

/// A secret value: zeroized on drop; `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        SecretValue(Zeroizing::new(value.into()))
    }

    /// The value itself: only for injecting it where it is used, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl std::fmt::Display for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// An environment's secrets, name → value; `Debug` shows names only.
#[derive(Clone, Default)]
pub struct SecretSet {
    pub values: BTreeMap<String, SecretValue>,
}

impl std::fmt::Debug for SecretSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.values.keys().map(|k| (k, format!("[REDACTED:{k}]")))).finish()
    }
}

impl SecretSet {
    pub fn get(&self, name: &str) -> Option<&SecretValue> {
        self.values.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The redactor for every value in the set.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.values.iter().map(|(k, v)| (k.as_str(), v.expose())))
    }
}

/// What `list` shows: never a value.
#[derive(Debug, Clone)]
pub struct SecretInfo {
    pub name: String,
    /// When it last changed, as far as the backend knows (files: the file's `lastmodified`;
    /// OpenBao: the environment entry's version time).
    pub changed: String,
    /// OpenBao's version of the environment entry.
    pub version: Option<u64>,
}

/// A secret name must be a valid environment variable name.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.to_ascii_lowercase().starts_with("sops")
        && name != "sops";
    if ok { Ok(()) } else { Err(SecretsError::InvalidName(name.to_owned())) }
}

/// Refuses values too short to redact reliably, unless `allow_short`.
pub fn check_length(name: &str, value: &SecretValue, allow_short: bool) -> Result<()> {
    if !allow_short && value.len() < MIN_LEN {
        return Err(SecretsError::TooShort { name: name.to_owned() });
    }
    Ok(())
}

/// How to open a backend.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// `--identity FILE`: the age keys file; otherwise see [`identity_path`].
    pub identity: Option<PathBuf>,
}

/// The age identity file: `explicit`, then `WINDLASS_AGE_KEY_FILE`, `SOPS_AGE_KEY_FILE`, then
/// `~/.config/sops/age/keys.txt` (when it exists).
pub fn identity_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_owned());
    }
    for var in ["WINDLASS_AGE_KEY_FILE", "SOPS_AGE_KEY_FILE"] {
        if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Some(PathBuf::from(value));
        }
    }
    let default = PathBuf::from(std::env::var_os("HOME")?).join(".config/sops/age/keys.txt");
    default.exists().then_some(default)
}

/// Refuses an identity file that other users may read or write, as ssh does for a private key:
/// whoever can read it can decrypt every secret, whoever can write it can swap the key.
/// Only regular files are checked (a pipe such as `--identity <(...)` is the caller's own).
pub fn check_identity_permissions(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        // Reading it says what is wrong.
        return Ok(());
    };
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        return Err(SecretsError::IdentityNotPrivate { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Reads the identities of `identity_path(explicit)`, refusing a file that is not private.
pub fn load_identities(explicit: Option<&Path>) -> Result<Vec<age::Identity>> {
    let path = identity_path(explicit).ok_or(SecretsError::NoIdentity)?;
    check_identity_permissions(&path)?;
    let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
        let from = if explicit.is_some() {
            "--identity"
        } else if std::env::var_os("WINDLASS_AGE_KEY_FILE").is_some_and(|v| !v.is_empty()) {
            "WINDLASS_AGE_KEY_FILE"
        } else if std::env::var_os("SOPS_AGE_KEY_FILE").is_some_and(|v| !v.is_empty()) {
            "SOPS_AGE_KEY_FILE"
        } else {
            "the default location"
        };
        SecretsError::BadKey(format!(
            "cannot read the age identity file {} (from {from}): {e}; point it at your keys file \
             (made with `age-keygen -o FILE`)",
            path.display()
        ))
    })?);
    let identities =
        age::Identity::parse_file(&text).map_err(|e| SecretsError::BadKey(format!("{}: {e}", path.display())))?;
    if identities.is_empty() {
        return Err(SecretsError::BadKey(format!("{}: no AGE-SECRET-KEY-1... line in it", path.display())));
    }
    Ok(identities)
}

/// The operations every backend offers.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// The file or the server and path, for messages.
    fn describe(&self) -> String;
    /// Names and last changes, never values.
    async fn list(&self) -> Result<Vec<SecretInfo>>;
    /// Every secret of the environment.
    async fn load_all(&self) -> Result<SecretSet>;
    /// Sets (adds or replaces) these values in one write.
    async fn set_many(&self, values: Vec<(String, SecretValue)>) -> Result<()>;
    /// Removes one secret; an error if it is not there.
    async fn remove(&self, name: &str) -> Result<()>;

    async fn get(&self, name: &str) -> Result<SecretValue> {
        let mut set = self.load_all().await?;
        set.values.remove(name).ok_or_else(|| SecretsError::NotFound { place: self.describe(), name: name.to_owned() })
    }
}

/// The secrets backend of `environment`: its `[environments.X.secrets]`, else `[secrets]`.
pub fn backend_config<'a>(
    config: &'a windlass_config::Config,
    environment: &str,
) -> Result<&'a windlass_config::SecretsBackend> {
    let env = config.environments.get(environment).ok_or_else(|| {
        let known: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        SecretsError::Config(format!(
            "{}: no environment `{environment}` (known: {})",
            config.source.path().display(),
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ))
    })?;
    Ok(env.secrets.as_ref().unwrap_or(&config.secrets))
}

/// The secrets directory `dir` of the files backend, relative to the config file's directory.
pub fn files_dir(config: &windlass_config::Config, dir: &str) -> PathBuf {
    let base = windlass_config::config_dir(config.source.path());
    if base == Path::new(".") { PathBuf::from(dir) } else { base.join(dir) }
}

/// Opens the backend of `environment` as the config describes it.
pub fn open(config: &windlass_config::Config, environment: &str, options: &OpenOptions) -> Result<Box<dyn Backend>> {
    match backend_config(config, environment)? {
        windlass_config::SecretsBackend::Files { dir } => {
            let dir = files_dir(config, dir);
            Ok(Box::new(files::FileBackend::locate(&dir, environment, options.identity.clone())))
        }
        windlass_config::SecretsBackend::OpenBao { address, mount, prefix, auth } => {
            let address = address
                .render(|name| std::env::var(name).ok())
                .map_err(|e| SecretsError::Config(format!("[secrets] address: {e}")))?;
            let credentials = bao::Credentials::from_env(*auth)?;
            Ok(Box::new(bao::BaoBackend::new(&address, mount, prefix, environment, credentials)?))
        }
    }
}

/// The secrets of `environment` and where they are kept; none when the environment keeps no
/// secrets (the files backend without a file for it): a platform need not use secrets at all.
pub async fn load_if_present(
    config: &windlass_config::Config,
    environment: &str,
    options: &OpenOptions,
) -> Result<Option<(String, SecretSet)>> {
    if let windlass_config::SecretsBackend::Files { dir } = backend_config(config, environment)? {
        let backend = files::FileBackend::locate(&files_dir(config, dir), environment, options.identity.clone());
        if !backend.exists() {
            return Ok(None);
        }
    }
    let backend = open(config, environment, options)?;
    let set = backend.load_all().await?;
    Ok(Some((backend.describe(), set)))
}

/// Every secret of `environment`: what the deploy pipeline injects.
pub async fn load_all(config: &windlass_config::Config, environment: &str, options: &OpenOptions) -> Result<SecretSet> {
    open(config, environment, options)?.load_all().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_never_print() {
        assert!(validate_name("DATABASE_URL").is_ok());
        for bad in ["", "1X", "A-B", "A B", "sops_mac", "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let v = SecretValue::new("hunter2hunter2");
        assert_eq!(format!("{v} {v:?}"), "[REDACTED] [REDACTED]");
        let mut set = SecretSet::default();
        set.values.insert("PW".into(), v);
        assert!(!format!("{set:?}").contains("hunter2"));
    }
}
