//! The files backend: one SOPS file per environment in the secrets directory, named
//! `<env>.enc.env` (dotenv, the default), `<env>.enc.yaml` or `<env>.enc.json`.
//!
//! Writes are atomic: the new content goes to a temporary file in the same directory, is
//! fsynced, renamed over the old file, and the directory is fsynced, so a crash at any point
//! leaves either the old file or the new one, never a mix. The failpoint
//! `secrets.before_rename` sits between the fsync of the temporary file and the rename.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::age::Recipient;
use crate::sops::{Document, Format};
use crate::{Backend, Result, SecretInfo, SecretSet, SecretValue, SecretsError};

/// The failpoint between writing the temporary file and renaming it into place.
pub const FAILPOINT_BEFORE_RENAME: &str = "secrets.before_rename";

#[derive(Debug, Clone)]
pub struct FileBackend {
    path: PathBuf,
    format: Format,
    identity: Option<PathBuf>,
}

impl FileBackend {
    /// The file of `environment` in `dir`: an existing `<env>.enc.{env,yaml,yml,json}`, else
    /// (for a file still to be made) `<env>.enc.env`.
    pub fn locate(dir: &Path, environment: &str, identity: Option<PathBuf>) -> Self {
        for ext in ["env", "yaml", "yml", "json"] {
            let path = dir.join(format!("{environment}.enc.{ext}"));
            if path.exists() {
                let format = Format::parse(ext).unwrap_or(Format::Dotenv);
                return FileBackend { path, format, identity };
            }
        }
        FileBackend { path: dir.join(format!("{environment}.enc.env")), format: Format::Dotenv, identity }
    }

    /// A backend for exactly this file and format.
    pub fn at(path: PathBuf, format: Format, identity: Option<PathBuf>) -> Self {
        FileBackend { path, format, identity }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    fn label(&self) -> String {
        self.path.display().to_string()
    }

    /// Reads and decrypts the file with the user's identity.
    pub fn read(&self) -> Result<Document> {
        let text = match std::fs::read(&self.path) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| SecretsError::Malformed {
                file: self.label(),
                why: "not UTF-8 text (not a SOPS file?)".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretsError::Config(format!(
                    "{}: no secrets file yet; create it with `windlass secrets init <env> --recipient age1...`",
                    self.label()
                )));
            }
            Err(source) => return Err(SecretsError::Io { path: self.path.clone(), source }),
        };
        let identities = crate::load_identities(self.identity.as_deref())?;
        Document::decrypt(&text, self.format, &identities, &self.label())
    }

    /// Creates the file, empty, encrypted to `recipients`, in `format` (a `<env>.enc.<ext>` name
    /// takes the format's extension); refuses to overwrite one. Returns the backend of the new file.
    pub fn init(&self, format: Format, recipients: &[Recipient]) -> Result<FileBackend> {
        if self.exists() {
            return Err(SecretsError::Config(format!(
                "{} already exists; use `windlass secrets recipients add` to add a key",
                self.label()
            )));
        }
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let path = match name.rfind(".enc.") {
            Some(at) => self.path.with_file_name(format!("{}.enc.{}", &name[..at], format.extension())),
            None => self.path.clone(),
        };
        let target = FileBackend { path, format, identity: self.identity.clone() };
        if target.exists() {
            return Err(SecretsError::Config(format!("{} already exists", target.label())));
        }
        let mut doc = Document::new(format, recipients)?;
        target.write(&mut doc)?;
        Ok(target)
    }

    /// Encrypts `doc` and replaces the file atomically.
    pub fn write(&self, doc: &mut Document) -> Result<()> {
        let text = doc.encrypt()?;
        write_atomic(&self.path, text.as_bytes())
    }

    /// Reads, lets `change` edit the document, and writes it back when it returns true.
    pub fn update(&self, change: impl FnOnce(&mut Document) -> Result<bool>) -> Result<()> {
        let mut doc = self.read()?;
        if change(&mut doc)? {
            self.write(&mut doc)?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| SecretsError::Io { path: path.to_owned(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    remove_stale_temporaries(&dir, &name);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    windlass_failpoint::hit(FAILPOINT_BEFORE_RENAME);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io)?;
    tracing::debug!(path = %path.display(), "secrets file written");
    Ok(())
}

/// Removes the temporary files a crashed writer left (`.<name>.tmp-<pid>` of a process that is
/// gone); those of a live process are its write in progress and are left alone.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            tracing::debug!(path = %entry.path().display(), "removing a crashed write's temporary file");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[async_trait::async_trait]
impl Backend for FileBackend {
    fn describe(&self) -> String {
        self.label()
    }

    async fn list(&self) -> Result<Vec<SecretInfo>> {
        let doc = self.read()?;
        Ok(doc
            .names()
            .map(|name| SecretInfo { name: name.to_owned(), changed: doc.lastmodified().to_owned(), version: None })
            .collect())
    }

    async fn load_all(&self) -> Result<SecretSet> {
        let doc = self.read()?;
        let mut set = SecretSet::default();
        for (name, value) in doc.values() {
            set.values.insert(name.to_owned(), value.clone());
        }
        Ok(set)
    }

    async fn set_many(&self, values: Vec<(String, SecretValue)>) -> Result<()> {
        self.update(|doc| {
            let mut changed = false;
            for (name, value) in values {
                changed |= doc.set(&name, value)?;
            }
            Ok(changed)
        })
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let label = self.label();
        self.update(|doc| {
            if doc.remove(name) {
                Ok(true)
            } else {
                Err(SecretsError::NotFound { place: label, name: name.to_owned() })
            }
        })
    }
}
