//! What a deploy runs, frozen: each service's executable is copied into the state directory under
//! its content hash, so that a rollback starts the old code, not today's binary with an old
//! setting. The snapshot is the executable a command resolves to (its first word); arguments
//! stay as the config wrote them.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// The command as rendered from the config.
    pub command: String,
    /// Where the executable was found when the deploy snapshotted it.
    pub source: PathBuf,
    /// SHA-256 of the executable's bytes, hex.
    pub sha256: String,
    /// The frozen copy that instances run.
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The version the deploy named (`--version api=v2`), kept until another is named; given
    /// to the service as `WINDLASS_VERSION` and usable in `run` as `${WINDLASS_VERSION}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Artifact {
    /// The first 12 hex digits, enough to tell builds apart in output.
    pub fn short_hash(&self) -> &str {
        &self.sha256[..12.min(self.sha256.len())]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("`{command}`: {message}")]
    BadCommand { command: String, message: String },
    #[error("`{program}` (from `{command}`) is not found in the config's directory, on PATH or beside windlass")]
    NotFound { command: String, program: String },
    #[error("cannot snapshot {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Splits a command line into words: whitespace separates, single and double quotes group,
/// backslash escapes outside single quotes. No expansion: variables were already rendered.
pub fn split_command(command: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(chars.next().ok_or("unfinished escape")?),
                        Some(c) => word.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or("unfinished escape")?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("the command is empty".into());
    }
    Ok(words)
}

/// Finds the executable a command names: a path (relative to the config's directory), or a name
/// looked up on PATH and then beside the running windlass (where `windlass-demo` is installed).
pub fn resolve_program(program: &str, config_dir: &Path) -> Option<PathBuf> {
    let is_file = |p: &Path| p.is_file();
    if program.contains('/') {
        let path = config_dir.join(program);
        return is_file(&path).then(|| std::path::absolute(&path).unwrap_or(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).collect::<Vec<_>>())
        .unwrap_or_default();
    let beside_us = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(program)));
    on_path.into_iter().chain(beside_us).find(|p| is_file(p))
}

/// Snapshots the executable of `command` into `<store_dir>/<sha256>/<name>` (once per content).
pub fn snapshot(command: &str, config_dir: &Path, store_dir: &Path) -> Result<Artifact, ArtifactError> {
    let words =
        split_command(command).map_err(|message| ArtifactError::BadCommand { command: command.into(), message })?;
    let (program, args) = words
        .split_first()
        .ok_or_else(|| ArtifactError::BadCommand { command: command.into(), message: "the command is empty".into() })?;
    let source = resolve_program(program, config_dir)
        .ok_or_else(|| ArtifactError::NotFound { command: command.into(), program: program.clone() })?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ArtifactError::Io { path, source }
    };
    let bytes = std::fs::read(&source).map_err(io(&source))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let name = source.file_name().and_then(|n| n.to_str()).unwrap_or("program").to_owned();
    let dir = store_dir.join(&sha256);
    let frozen = dir.join(&name);
    if !frozen.is_file() {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Written beside, then renamed: a crash never leaves a truncated executable in place.
        let temp = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
        file.write_all(&bytes).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).map_err(io(&temp))?;
        std::fs::rename(&temp, &frozen).map_err(io(&frozen))?;
    }
    Ok(Artifact { command: command.into(), source, sha256, program: frozen, args: args.to_vec(), version: None })
}

#[cfg(test)]
mod tests {
    use super::split_command;

    #[test]
    fn words() {
        assert_eq!(split_command("a b  'c d' \"e \\\"f\" g\\ h").unwrap(), ["a", "b", "c d", "e \"f", "g h"]);
        assert!(split_command("  ").is_err());
        assert!(split_command("a 'b").is_err());
    }
}
