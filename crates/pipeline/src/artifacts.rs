//! What a deploy runs, frozen: each service's executable is copied into the state directory under
//! its content hash, so that a rollback starts the old code, not today's binary with an old
//! setting. The snapshot is the executable a command resolves to (its first word); arguments
//! stay as the config wrote them. A service with a `dir` (a Python or Node app, say) has its whole
//! directory frozen too, under a hash of its tree, and runs inside that copy.

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
    /// The frozen copy of the service's `dir`, where its instances run; none without a `dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// The hash of that directory's tree (paths, executable bits, contents, symlinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_sha256: Option<String>,
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
    #[error("the service directory {path} {problem}")]
    Directory { path: PathBuf, problem: String },
}

impl ArtifactError {
    /// The error with every secret value in the command it echoes redacted (`run` holds no
    /// secret, by `validate` and the deploy's own check; this is the second line).
    pub fn redacted(self, redactor: &windlass_secrets::Redactor) -> Self {
        match self {
            ArtifactError::BadCommand { command, message } => {
                ArtifactError::BadCommand { command: redactor.redact(&command), message: redactor.redact(&message) }
            }
            ArtifactError::NotFound { command, program } => {
                ArtifactError::NotFound { command: redactor.redact(&command), program: redactor.redact(&program) }
            }
            other => other,
        }
    }
}

/// Directories larger than this are refused: a deploy copies them whole.
const MAX_TREE_FILES: usize = 100_000;
const MAX_TREE_BYTES: u64 = 4 << 30;
/// Not part of what a service runs: version control and Windlass's own state.
const SKIPPED: [&str; 2] = [".git", ".windlass"];

#[derive(Debug)]
enum Entry {
    File { rel: PathBuf, executable: bool },
    Link { rel: PathBuf, target: PathBuf },
}

/// Every file and symlink under `root` (not following links), sorted by path.
fn walk(root: &Path) -> Result<Vec<Entry>, ArtifactError> {
    let problem = |problem: String| ArtifactError::Directory { path: root.to_owned(), problem };
    let meta = std::fs::metadata(root).map_err(|e| problem(format!("cannot be read: {e}")))?;
    if !meta.is_dir() {
        return Err(problem("is not a directory".into()));
    }
    let (mut entries, mut stack, mut bytes) = (Vec::new(), vec![PathBuf::new()], 0u64);
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let read = std::fs::read_dir(&dir).map_err(|source| ArtifactError::Io { path: dir.clone(), source })?;
        for item in read {
            let item = item.map_err(|source| ArtifactError::Io { path: dir.clone(), source })?;
            let name = item.file_name();
            if rel.as_os_str().is_empty() && SKIPPED.iter().any(|s| name == *s) {
                continue;
            }
            let path = rel.join(&name);
            let kind = item.file_type().map_err(|source| ArtifactError::Io { path: root.join(&path), source })?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                let target = std::fs::read_link(root.join(&path))
                    .map_err(|source| ArtifactError::Io { path: path.clone(), source })?;
                entries.push(Entry::Link { rel: path, target });
            } else if kind.is_file() {
                use std::os::unix::fs::PermissionsExt as _;
                let meta = item.metadata().map_err(|source| ArtifactError::Io { path: root.join(&path), source })?;
                bytes += meta.len();
                entries.push(Entry::File { rel: path, executable: meta.permissions().mode() & 0o111 != 0 });
            }
            if entries.len() > MAX_TREE_FILES || bytes > MAX_TREE_BYTES {
                return Err(problem(format!(
                    "is too large to freeze for a deploy (more than {MAX_TREE_FILES} files or {} GiB)",
                    MAX_TREE_BYTES >> 30
                )));
            }
        }
    }
    entries.sort_by(|a, b| entry_path(a).cmp(entry_path(b)));
    Ok(entries)
}

fn entry_path(entry: &Entry) -> &Path {
    match entry {
        Entry::File { rel, .. } | Entry::Link { rel, .. } => rel,
    }
}

/// Freezes the directory `source` under `<store_dir>/dirs/<tree hash>` (once per content) and
/// returns the copy and the hash. The copy is made beside and renamed into place, so a crash
/// never leaves half a tree under a hash.
fn freeze_dir(source: &Path, store_dir: &Path) -> Result<(PathBuf, String), ArtifactError> {
    use std::os::unix::ffi::OsStrExt as _;
    let entries = walk(source)?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ArtifactError::Io { path, source }
    };
    let mut tree = Sha256::new();
    for entry in &entries {
        match entry {
            Entry::File { rel, executable } => {
                let bytes = std::fs::read(source.join(rel)).map_err(io(&source.join(rel)))?;
                tree.update(if *executable { b"x " } else { b"f " });
                tree.update(rel.as_os_str().as_bytes());
                tree.update(b"\0");
                tree.update(Sha256::digest(&bytes));
            }
            Entry::Link { rel, target } => {
                tree.update(b"l ");
                tree.update(rel.as_os_str().as_bytes());
                tree.update(b"\0");
                tree.update(target.as_os_str().as_bytes());
                tree.update(b"\0");
            }
        }
    }
    let hash = hex::encode(tree.finalize());
    let dirs = store_dir.join("dirs");
    let frozen = dirs.join(&hash);
    if frozen.is_dir() {
        return Ok((frozen, hash));
    }
    let temp = dirs.join(format!(".{hash}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    windlass_failpoint::private::create_dir_all(&temp).map_err(io(&temp))?;
    for entry in &entries {
        let rel = entry_path(entry);
        let to = temp.join(rel);
        if let Some(parent) = to.parent() {
            windlass_failpoint::private::create_dir_all(parent).map_err(io(parent))?;
        }
        match entry {
            Entry::File { rel, .. } => {
                std::fs::copy(source.join(rel), &to).map_err(io(&to))?;
                // The copy has the source's mode: keep only the owner's bits (0600 or 0700).
                windlass_failpoint::private::tighten(&to).map_err(io(&to))?;
            }
            Entry::Link { target, .. } => std::os::unix::fs::symlink(target, &to).map_err(io(&to))?,
        }
    }
    // The files' contents reach the disk before the tree is named by its hash.
    for entry in &entries {
        if let Entry::File { rel, .. } = entry {
            std::fs::File::open(temp.join(rel)).and_then(|f| f.sync_all()).map_err(io(&temp.join(rel)))?;
        }
    }
    match std::fs::rename(&temp, &frozen) {
        Ok(()) => Ok((frozen, hash)),
        // Another deploy froze the same tree first: theirs is identical.
        Err(_) if frozen.is_dir() => {
            let _ = std::fs::remove_dir_all(&temp);
            Ok((frozen, hash))
        }
        Err(source) => Err(ArtifactError::Io { path: frozen, source }),
    }
}

/// Why a command line cannot be split into words.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("unclosed single quote")]
    UnclosedSingleQuote,
    #[error("unclosed double quote")]
    UnclosedDoubleQuote,
    #[error("unfinished escape")]
    UnfinishedEscape,
    #[error("the command is empty")]
    Empty,
}

/// Splits a command line into words: whitespace separates, single and double quotes group,
/// backslash escapes outside single quotes. No expansion: variables were already rendered.
pub fn split_command(command: &str) -> Result<Vec<String>, SplitError> {
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
                        None => return Err(SplitError::UnclosedSingleQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => word.push(chars.next().ok_or(SplitError::UnfinishedEscape)?),
                        Some(c) => word.push(c),
                        None => return Err(SplitError::UnclosedDoubleQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or(SplitError::UnfinishedEscape)?);
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
        return Err(SplitError::Empty);
    }
    Ok(words)
}

/// Finds the executable a command names (the config's check and the deploy look alike).
pub use windlass_config::resolve_program;

/// Snapshots what `command` runs: its executable into `<store_dir>/<sha256>/<name>` (once per
/// content), and with a `service_dir` (relative to the config's directory) that whole directory,
/// in which the program is then looked up first. A program inside the directory runs from the
/// frozen tree; one outside it (an interpreter on PATH) is frozen on its own. The artifact's
/// hash then covers both.
pub fn snapshot(
    command: &str,
    config_dir: &Path,
    store_dir: &Path,
    service_dir: Option<&str>,
) -> Result<Artifact, ArtifactError> {
    let words = split_command(command)
        .map_err(|err| ArtifactError::BadCommand { command: command.into(), message: err.to_string() })?;
    snapshot_words(command, &words, config_dir, store_dir, service_dir)
}

/// [`snapshot`] of a command already split into its program and arguments (`command` is how
/// it is shown).
pub fn snapshot_words(
    command: &str,
    words: &[String],
    config_dir: &Path,
    store_dir: &Path,
    service_dir: Option<&str>,
) -> Result<Artifact, ArtifactError> {
    let (program, args) = words
        .split_first()
        .ok_or_else(|| ArtifactError::BadCommand { command: command.into(), message: "the command is empty".into() })?;
    let Some(service_dir) = service_dir else { return snapshot_program(command, program, args, config_dir, store_dir) };
    let source_dir = std::path::absolute(config_dir.join(service_dir)).unwrap_or_else(|_| config_dir.join(service_dir));
    let (workdir, tree) = freeze_dir(&source_dir, store_dir)?;
    let inside = program.contains('/').then(|| source_dir.join(program)).filter(|p| p.is_file());
    let mut artifact = match inside.as_ref().and_then(|p| p.strip_prefix(&source_dir).ok()) {
        Some(rel) => {
            let bytes = std::fs::read(source_dir.join(rel))
                .map_err(|source| ArtifactError::Io { path: source_dir.join(rel), source })?;
            Artifact {
                command: command.into(),
                source: source_dir.join(rel),
                sha256: hex::encode(Sha256::digest(&bytes)),
                program: workdir.join(rel),
                args: args.to_vec(),
                workdir: None,
                tree_sha256: None,
                version: None,
            }
        }
        None => snapshot_program(command, program, args, config_dir, store_dir)?,
    };
    artifact.sha256 = hex::encode(Sha256::digest(format!("{}:{tree}", artifact.sha256)));
    artifact.workdir = Some(workdir);
    artifact.tree_sha256 = Some(tree);
    Ok(artifact)
}

fn snapshot_program(
    command: &str,
    program: &str,
    args: &[String],
    config_dir: &Path,
    store_dir: &Path,
) -> Result<Artifact, ArtifactError> {
    let source = resolve_program(program, config_dir)
        .ok_or_else(|| ArtifactError::NotFound { command: command.into(), program: program.to_owned() })?;
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
        // Written beside, then renamed: a crash never leaves a truncated executable in place.
        // 0700 under 0700 directories, like everything in the state directory.
        windlass_failpoint::private::write_atomic_executable(&frozen, &bytes).map_err(io(&frozen))?;
    }
    Ok(Artifact {
        command: command.into(),
        source,
        sha256,
        program: frozen,
        args: args.to_vec(),
        workdir: None,
        tree_sha256: None,
        version: None,
    })
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

    #[test]
    fn errors_never_echo_a_secret_of_the_command() {
        let redactor = windlass_secrets::Redactor::new([("TOKEN", "tok-0123456789-secret")]);
        let dir = std::env::temp_dir();
        let missing = super::snapshot("./no-such-program-xyz --token tok-0123456789-secret", &dir, &dir, None)
            .unwrap_err()
            .redacted(&redactor);
        let text = missing.to_string();
        assert!(text.contains("--token [REDACTED:TOKEN]") && !text.contains("tok-0123456789"), "{text}");
        let unclosed =
            super::snapshot("prog 'tok-0123456789-secret", &dir, &dir, None).unwrap_err().redacted(&redactor);
        assert!(!unclosed.to_string().contains("tok-0123456789"), "{unclosed}");
    }
}
