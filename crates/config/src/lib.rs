//! `windlass.toml`: the typed model of a platform, its parser, and the checks behind
//! `windlass validate`.
//!
//! Parsing never stops at the first problem: [`parse`] returns the config it could read together
//! with every problem found, each located at `file:line:column`. Callers that only want a valid
//! config use [`load`].
//!
//! This crate knows nothing of deploys, the store or the network: it reads files and answers
//! questions about them.

mod check;
mod decode;
pub mod diagnostic;
pub mod dotenv;
pub mod env_check;
pub mod formats;
mod model;
pub mod monitor;
pub mod oncall;
pub mod probes;
pub mod schedule;
pub mod server;
pub mod source;
pub mod template;
pub mod units;
pub mod window;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use decode::{Spanned, did_you_mean};
pub use diagnostic::{Diagnostic, Severity};
pub use model::*;
pub use source::Source;

/// A value that does not follow its grammar (a duration, a percentage, a size, a rate, a deploy
/// window, a variable's format, a metric rule, on-call hours). The message says what is wrong, as
/// diagnostics show it; a grammar error has no underlying cause to keep as a source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(String);

impl From<String> for InvalidValue {
    fn from(message: String) -> Self {
        InvalidValue(message)
    }
}

/// For callers that carry problems as text (diagnostics, messages): the message itself.
impl From<InvalidValue> for String {
    fn from(invalid: InvalidValue) -> Self {
        invalid.0
    }
}

impl From<&str> for InvalidValue {
    fn from(message: &str) -> Self {
        InvalidValue(message.to_owned())
    }
}

/// A file that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is not UTF-8 text (invalid byte at offset {offset})", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
}

/// Why [`load`] gave no config.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{} has {} problem(s)", path.display(), diagnostics.iter().filter(|d| d.is_error()).count())]
    Invalid { path: PathBuf, diagnostics: Vec<Diagnostic> },
}

/// What [`parse`] read: the config (with defaults where a value was unusable) and every problem.
#[derive(Debug)]
pub struct Parsed {
    pub config: Config,
    pub diagnostics: Vec<Diagnostic>,
    /// Every schema path the parser knows about in this file's tables (for documentation checks).
    pub schema_paths: BTreeSet<String>,
}

impl Parsed {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses and checks a config. Relative paths in it (migrations, env files) are resolved against
/// the directory of `source`'s path.
pub fn parse(source: &Source) -> Parsed {
    let (root, syntax_errors) = toml::de::DeTable::parse_recoverable(source.text());
    let mut cx = decode::Cx::new(source);
    let root_value = toml::Spanned::new(root.span(), toml::de::DeValue::Table(root.into_inner()));
    let config = Config::decode(&mut cx, &root_value);
    let base_dir = config_dir(source.path());
    check::check(&mut cx, &config, &base_dir);
    let mut diagnostics = cx.diagnostics;
    if !syntax_errors.is_empty() {
        // What a broken file seems to lack is mostly noise from the break itself: report only
        // the syntax errors, every one of them.
        diagnostics = syntax_errors
            .iter()
            .map(|error| {
                let span = error.span().unwrap_or(0..0);
                Diagnostic::error(format!("invalid TOML: {}", error.message().trim_end())).at(source, span)
            })
            .collect();
    }
    diagnostic::sort(&mut diagnostics);
    Parsed { config, diagnostics, schema_paths: cx.schema_paths }
}

/// Reads and parses a config file, failing if it has any error (warnings are dropped).
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let source = Source::read(path)?;
    let parsed = parse(&source);
    if parsed.has_errors() {
        return Err(LoadError::Invalid { path: path.to_owned(), diagnostics: parsed.diagnostics });
    }
    Ok(parsed.config)
}

/// The directory a config's relative paths are resolved against.
pub fn config_dir(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `dir/name`, written without a leading `./` so paths in messages read as the user wrote them.
fn beside(dir: &Path, name: &str) -> PathBuf {
    if dir == Path::new(".") { PathBuf::from(name) } else { dir.join(name) }
}

impl Config {
    /// The env file of `environment`: its `env_file`, or `.env.<environment>` beside the config.
    pub fn env_file_path(&self, environment: &str) -> PathBuf {
        let dir = config_dir(self.source.path());
        match self.environments.get(environment).and_then(|e| e.env_file.as_ref()) {
            Some(file) => beside(&dir, file),
            None => beside(&dir, &format!(".env.{environment}")),
        }
    }

    /// A service as `environment` runs it, with that environment's overrides applied.
    pub fn service_in(&self, environment: &str, service: &str) -> Option<Service> {
        let base = self.services.get(service)?;
        Some(match self.environments.get(environment).and_then(|e| e.services.get(service)) {
            Some(changes) => changes.apply(base),
            None => base.clone(),
        })
    }
}
