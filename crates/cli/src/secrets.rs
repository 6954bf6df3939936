//! `windlass secrets ...`: an environment's secrets, in SOPS files or OpenBao, from the command line.
//!
//! Only `get` ever prints a value. `set` reads the value from stdin (or a hidden prompt), never
//! from the arguments, where it would land in shell history and `ps`. `exec` runs a command with
//! the secrets in its environment and passes its output through the redactor.

use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::Context as _;
use windlass_secrets::age::Recipient;
use windlass_secrets::files::FileBackend;
use windlass_secrets::sops::Format;
use windlass_secrets::{Backend, OpenOptions, Redactor, SecretValue, SecretsError};

use crate::table::Table;
use crate::{Outcome, OutputFormat, UsageError, print_json};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Args, Clone)]
struct Common {
    /// The config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The age keys file (else WINDLASS_AGE_KEY_FILE, SOPS_AGE_KEY_FILE, ~/.config/sops/age/keys.txt).
    #[arg(long)]
    identity: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Create an environment's encrypted file (files backend).
    Init {
        env: String,
        /// An age public key (age1...) to encrypt to; repeat for each teammate. Default: your own.
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// dotenv, yaml or json.
        #[arg(long, default_value = "dotenv")]
        format: String,
        #[command(flatten)]
        common: Common,
    },
    /// Set a secret; the value is read from stdin (or a hidden prompt on a terminal).
    Set {
        env: String,
        name: String,
        /// Accept a value shorter than 8 characters (it cannot be redacted reliably).
        #[arg(long)]
        allow_short: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print one secret's value (the only command that prints a value).
    Get {
        env: String,
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Names and last change, never values.
    List {
        env: String,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[command(flatten)]
        common: Common,
    },
    /// Remove a secret.
    Rm {
        env: String,
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// Edit the decrypted file in $EDITOR (the plaintext lives only in memory-backed /dev/shm).
    Edit {
        env: String,
        #[arg(long)]
        allow_short: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Add or replace secrets from a plain .env file.
    Import {
        env: String,
        file: PathBuf,
        #[arg(long)]
        allow_short: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Add or remove a recipient (age public key) of an environment's file.
    Recipients {
        #[command(subcommand)]
        action: RecipientsAction,
    },
    /// A new data key, every value re-encrypted, to the current recipients.
    Rotate {
        env: String,
        #[command(flatten)]
        common: Common,
    },
    /// Run a command with the secrets as environment variables; its output is redacted.
    Exec {
        env: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Subcommand)]
enum RecipientsAction {
    /// Encrypt the file's data key to one more key as well.
    Add {
        env: String,
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Stop encrypting the data key to a key (then run `rotate`, and rotate the secrets themselves).
    Rm {
        env: String,
        key: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Maps library errors: what the user must fix in how they called us is a usage error (exit 2).
fn fail(err: SecretsError) -> anyhow::Error {
    match err {
        SecretsError::Config(_)
        | SecretsError::InvalidName(_)
        | SecretsError::TooShort { .. }
        | SecretsError::NoIdentity
        | SecretsError::IdentityNotPrivate { .. }
        | SecretsError::BadKey(_)
        | SecretsError::Unsupported(_) => UsageError(err.to_string()).into(),
        other => anyhow::Error::from(other),
    }
}

struct Env {
    config: windlass_config::Config,
    name: String,
    options: OpenOptions,
}

impl Env {
    fn open(common: &Common, env: &str) -> anyhow::Result<Self> {
        let path = crate::config_path(common.config.clone());
        let config = crate::load_config(&path)?;
        windlass_secrets::backend_config(&config, env).map_err(fail)?;
        Ok(Env { config, name: env.to_owned(), options: OpenOptions { identity: common.identity.clone() } })
    }

    fn backend(&self) -> anyhow::Result<Box<dyn Backend>> {
        windlass_secrets::open(&self.config, &self.name, &self.options).map_err(fail)
    }

    /// The files backend, or a usage error for an OpenBao environment.
    fn files(&self, what: &str) -> anyhow::Result<FileBackend> {
        match windlass_secrets::backend_config(&self.config, &self.name).map_err(fail)? {
            windlass_config::SecretsBackend::Files { dir } => {
                let dir = windlass_secrets::files_dir(&self.config, dir);
                Ok(FileBackend::locate(&dir, &self.name, self.options.identity.clone()))
            }
            windlass_config::SecretsBackend::OpenBao { .. } => Err(UsageError(format!(
                "`secrets {what}` is for the files backend; environment `{}` keeps its secrets in OpenBao",
                self.name
            ))
            .into()),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    sweep_dead_edits();
    let runtime = crate::client::runtime()?;
    match args.command {
        Sub::Init { env, recipients, format, common } => {
            let env = Env::open(&common, &env)?;
            let backend = env.files("init")?;
            let format = Format::parse(&format)
                .ok_or_else(|| UsageError(format!("unknown format `{format}`: use dotenv, yaml or json")))?;
            let recipients = if recipients.is_empty() {
                let ids = windlass_secrets::load_identities(env.options.identity.as_deref()).map_err(|e| {
                    UsageError(format!("{e}\n(or pass --recipient age1... for each key the file is encrypted to)"))
                })?;
                vec![ids[0].recipient()]
            } else {
                parse_recipients(&recipients)?
            };
            let backend = backend.init(format, &recipients).map_err(fail)?;
            eprintln!("created {} for {} recipient(s)", backend.path().display(), recipients.len());
            Ok(Outcome::Ok)
        }
        Sub::Set { env, name, allow_short, common } => {
            windlass_secrets::validate_name(&name).map_err(fail)?;
            let env = Env::open(&common, &env)?;
            let backend = env.backend()?;
            let value = read_value(&name)?;
            windlass_secrets::check_length(&name, &value, allow_short).map_err(fail)?;
            runtime.block_on(backend.set_many(vec![(name.clone(), value)])).map_err(fail)?;
            eprintln!("set {name} in {}", backend.describe());
            Ok(Outcome::Ok)
        }
        Sub::Get { env, name, common } => {
            windlass_secrets::validate_name(&name).map_err(fail)?;
            let env = Env::open(&common, &env)?;
            let value = runtime.block_on(env.backend()?.get(&name)).map_err(fail)?;
            let mut out = std::io::stdout().lock();
            out.write_all(value.expose().as_bytes())?;
            out.write_all(b"\n")?;
            Ok(Outcome::Ok)
        }
        Sub::List { env, output, common } => {
            let env = Env::open(&common, &env)?;
            let backend = env.backend()?;
            let list = runtime.block_on(backend.list()).map_err(fail)?;
            if output == OutputFormat::Json {
                let secrets: Vec<ListedSecret> = list
                    .iter()
                    .map(|i| ListedSecret { name: &i.name, changed: &i.changed, version: i.version })
                    .collect();
                return print_json(&ListedSecrets { secrets });
            }
            let mut table = Table::new();
            for info in &list {
                let version = info.version.map(|v| format!("(version {v})")).unwrap_or_default();
                table.row([info.name.clone(), format!("changed {}", info.changed), version]);
            }
            table.print();
            if list.is_empty() {
                eprintln!("no secrets in {}", backend.describe());
            }
            Ok(Outcome::Ok)
        }
        Sub::Rm { env, name, common } => {
            windlass_secrets::validate_name(&name).map_err(fail)?;
            let env = Env::open(&common, &env)?;
            let backend = env.backend()?;
            runtime.block_on(backend.remove(&name)).map_err(fail)?;
            eprintln!("removed {name} from {}", backend.describe());
            Ok(Outcome::Ok)
        }
        Sub::Edit { env, allow_short, common } => {
            let env = Env::open(&common, &env)?;
            edit(&runtime, &env.files("edit")?, allow_short)
        }
        Sub::Import { env, file, allow_short, common } => {
            let env = Env::open(&common, &env)?;
            let values = read_plain_env(&file)?;
            for (name, value) in &values {
                windlass_secrets::validate_name(name).map_err(fail)?;
                windlass_secrets::check_length(name, value, allow_short).map_err(fail)?;
            }
            let backend = env.backend()?;
            let count = values.len();
            runtime.block_on(backend.set_many(values)).map_err(fail)?;
            eprintln!("imported {count} secret(s) from {} into {}", file.display(), backend.describe());
            Ok(Outcome::Ok)
        }
        Sub::Recipients { action } => {
            let (env, key, common, add) = match action {
                RecipientsAction::Add { env, key, common } => (env, key, common, true),
                RecipientsAction::Rm { env, key, common } => (env, key, common, false),
            };
            let env = Env::open(&common, &env)?;
            let backend = env.files("recipients")?;
            let key = Recipient::parse(&key).map_err(fail)?;
            let mut doc = backend.read().map_err(fail)?;
            let mut current = parse_recipients(&doc.recipients())?;
            if add {
                if current.contains(&key) {
                    eprintln!("{key} is already a recipient of {}", backend.path().display());
                    return Ok(Outcome::Ok);
                }
                current.push(key.clone());
            } else {
                if !current.contains(&key) {
                    return Err(UsageError(format!("{key} is not a recipient of {}", backend.path().display())).into());
                }
                current.retain(|r| *r != key);
            }
            doc.set_recipients(&current).map_err(fail)?;
            backend.write(&mut doc).map_err(fail)?;
            if add {
                eprintln!("added {key} to {}", backend.path().display());
            } else {
                eprintln!(
                    "removed {key} from {}; run `windlass secrets rotate {}` for a new data key, and change the \
                     secrets that key could read: it may have kept copies",
                    backend.path().display(),
                    env.name
                );
            }
            Ok(Outcome::Ok)
        }
        Sub::Rotate { env, common } => {
            let env = Env::open(&common, &env)?;
            let backend = env.files("rotate")?;
            let mut doc = backend.read().map_err(fail)?;
            let recipients = parse_recipients(&doc.recipients())?;
            doc.rotate(&recipients).map_err(fail)?;
            backend.write(&mut doc).map_err(fail)?;
            eprintln!(
                "rotated the data key of {}: every value is re-encrypted for {} recipient(s)",
                backend.path().display(),
                recipients.len()
            );
            Ok(Outcome::Ok)
        }
        Sub::Exec { env, command, common } => {
            let env = Env::open(&common, &env)?;
            let secrets = runtime.block_on(env.backend()?.load_all()).map_err(fail)?;
            exec(&command, &secrets)
        }
    }
}

fn parse_recipients(keys: &[String]) -> anyhow::Result<Vec<Recipient>> {
    keys.iter().map(|k| Recipient::parse(k).map_err(fail)).collect()
}

/// The value for `set`: stdin, or a prompt without echo when stdin is a terminal.
/// `secrets list --output json`: names and when they changed, never a value.
#[derive(serde::Serialize)]
struct ListedSecrets<'a> {
    secrets: Vec<ListedSecret<'a>>,
}

#[derive(serde::Serialize)]
struct ListedSecret<'a> {
    name: &'a str,
    changed: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<u64>,
}

fn read_value(name: &str) -> anyhow::Result<SecretValue> {
    let stdin = std::io::stdin();
    let mut text = String::new();
    if stdin.is_terminal() {
        eprint!("value for {name} (not shown): ");
        let _ = std::io::stderr().flush();
        let echo_off = stty("-echo");
        let read = stdin.read_line(&mut text);
        if echo_off {
            stty("echo");
        }
        eprintln!();
        read.context("reading the value")?;
    } else {
        stdin.lock().read_to_string(&mut text).context("reading the value from stdin")?;
    }
    // One trailing newline is how `echo` and a prompt end a value; it is not part of it.
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    let value = SecretValue::new(text);
    if value.is_empty() {
        return Err(UsageError(format!(
            "no value for {name}: pipe it on stdin, e.g. `pass show x | windlass secrets set ENV {name}`"
        ))
        .into());
    }
    Ok(value)
}

fn stty(arg: &str) -> bool {
    std::fs::File::open("/dev/tty")
        .ok()
        .and_then(|tty| std::process::Command::new("stty").arg(arg).stdin(tty).status().ok())
        .is_some_and(|s| s.success())
}

/// A plain .env file as (name, value) pairs. Parse problems are reported by position only:
/// the lines hold secrets.
fn read_plain_env(path: &Path) -> anyhow::Result<Vec<(String, SecretValue)>> {
    let text = std::fs::read_to_string(path).map_err(|e| UsageError(format!("{}: {e}", path.display())))?;
    parse_plain_env(path, text)
}

fn parse_plain_env(path: &Path, text: String) -> anyhow::Result<Vec<(String, SecretValue)>> {
    let source = windlass_config::Source::new(path, text);
    let (file, diagnostics) = windlass_config::dotenv::EnvFile::parse(source);
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.location().unwrap_or_else(|| path.display().to_string()), d.message))
        .collect();
    if !errors.is_empty() {
        return Err(UsageError(format!("{} cannot be read:\n{}", path.display(), errors.join("\n"))).into());
    }
    Ok(file.entries.into_iter().map(|e| (e.key, SecretValue::new(e.value))).collect())
}

/// Where `secrets edit` keeps the plaintext while the editor runs: memory, never a disk.
const SHM: &str = "/dev/shm";
/// An edit session's directory is `/dev/shm/windlass-edit-<pid>-<nanos>`: the pid says whether
/// its session is still running.
const EDIT_PREFIX: &str = "windlass-edit-";

/// Memory-backed storage for the plaintext while the editor runs: a private (0700) directory of
/// its own under /dev/shm.
fn shm_dir() -> anyhow::Result<PathBuf> {
    let base = Path::new(SHM);
    if !base.is_dir() {
        return Err(UsageError(
            "`secrets edit` needs memory-backed /dev/shm, so the plaintext never touches a disk; use `secrets set` \
             and `secrets rm` instead"
                .into(),
        )
        .into());
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = base.join(format!("{EDIT_PREFIX}{}-{nanos}", std::process::id()));
    windlass_failpoint::private::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Overwrites the files in `dir`, then removes it.
fn scrub_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if let Ok(meta) = entry.metadata()
                && meta.is_file()
            {
                let _ = std::fs::write(entry.path(), vec![0u8; meta.len() as usize]);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Overwrites, then removes, the plaintext directory when dropped.
struct Scrub(PathBuf);

impl Drop for Scrub {
    fn drop(&mut self) {
        scrub_dir(&self.0);
    }
}

/// A `secrets edit` killed by SIGKILL (or a crash) cannot clean up after itself: every later
/// `windlass secrets ...` removes the plaintext directories of sessions whose process is gone.
/// Only the current user's are touched; a live session's are left alone (a reused pid only
/// delays the sweep, it never removes a live session's file).
fn sweep_dead_edits() {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(entries) = std::fs::read_dir(SHM) else { return };
    // SAFETY: geteuid(2) takes nothing, cannot fail and touches no memory of ours.
    #[allow(unsafe_code)]
    let me = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(EDIT_PREFIX)) else { continue };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me) {
            continue;
        }
        scrub_dir(&path);
        eprintln!(
            "windlass: removed {}, the plaintext of an interrupted `secrets edit` (process {pid} is gone)",
            path.display()
        );
    }
}

/// How the editor ended.
enum Edited {
    /// It exited (or was killed by a signal) by itself.
    Exited(std::process::ExitStatus),
    /// We were sent this signal (SIGTERM or SIGHUP): the session is abandoned.
    Abandoned(i32, tokio::process::Child),
}

/// Sends `signal` to the editor (the shell `exec`s it, so the pid is the editor's).
fn forward(child: &tokio::process::Child, signal: i32) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) on our own child, which has not been reaped (it has an id).
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Runs the editor on `file` while handling SIGINT, SIGTERM and SIGHUP, so that the plaintext
/// is removed whatever ends the session. SIGINT goes to the editor, which decides (vi ignores
/// it; an editor it ends counts as failed); SIGTERM and SIGHUP are passed on to the editor too
/// and end the session at once. The handlers are in place before the plaintext is written.
async fn run_editor(editor: &str, file: &Path, plain: String) -> anyhow::Result<Edited> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let written = windlass_failpoint::private::create_new(file).and_then(|mut out| out.write_all(plain.as_bytes()));
    drop(plain);
    written.with_context(|| format!("writing {}", file.display()))?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {editor} \"$1\""))
        .arg("sh")
        .arg(file)
        .spawn()
        .with_context(|| format!("running the editor `{editor}`"))?;
    loop {
        tokio::select! {
            status = child.wait() => return Ok(Edited::Exited(status?)),
            _ = interrupt.recv() => forward(&child, libc::SIGINT),
            _ = terminate.recv() => {
                forward(&child, libc::SIGTERM);
                return Ok(Edited::Abandoned(libc::SIGTERM, child));
            }
            _ = hangup.recv() => {
                forward(&child, libc::SIGHUP);
                return Ok(Edited::Abandoned(libc::SIGHUP, child));
            }
        }
    }
}

fn edit(runtime: &tokio::runtime::Runtime, backend: &FileBackend, allow_short: bool) -> anyhow::Result<Outcome> {
    let mut doc = backend.read().map_err(fail)?;
    let dir = shm_dir()?;
    let scrub = Scrub(dir.clone());
    let file = dir.join("secrets.env");
    let mut plain = String::new();
    for (name, value) in doc.values() {
        let quoted = value.expose().replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        plain.push_str(&format!("{name}=\"{quoted}\"\n"));
    }
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let status = match runtime.block_on(run_editor(&editor, &file, plain))? {
        Edited::Exited(status) => status,
        Edited::Abandoned(signal, mut child) => {
            drop(scrub);
            // The editor had the signal too; give it a moment to restore the terminal.
            let _ =
                runtime.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await });
            let name = if signal == libc::SIGHUP { "SIGHUP" } else { "SIGTERM" };
            eprintln!("windlass: {name} while editing: the plaintext is removed and nothing was changed");
            std::process::exit(128 + signal);
        }
    };
    if !status.success() {
        return Err(anyhow::anyhow!("the editor `{editor}` failed ({status}); nothing was changed"));
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let values = parse_plain_env(Path::new("(edited secrets)"), text)?;
    drop(scrub);
    for (name, value) in &values {
        windlass_secrets::validate_name(name).map_err(fail)?;
        windlass_secrets::check_length(name, value, allow_short).map_err(fail)?;
    }
    let mut changed = false;
    let old: Vec<String> = doc.names().map(str::to_owned).collect();
    for name in old.iter().filter(|n| !values.iter().any(|(k, _)| k == *n)) {
        changed |= doc.remove(name);
    }
    for (name, value) in values {
        changed |= doc.set(&name, value).map_err(fail)?;
    }
    if changed {
        backend.write(&mut doc).map_err(fail)?;
        eprintln!("saved {}", backend.path().display());
    } else {
        eprintln!("no changes to {}", backend.path().display());
    }
    Ok(Outcome::Ok)
}

/// Runs `command` with the secrets in its environment; its stdout and stderr go through the redactor.
fn exec(command: &[String], secrets: &windlass_secrets::SecretSet) -> anyhow::Result<Outcome> {
    let (program, args) = command.split_first().ok_or_else(|| UsageError("no command after `--`".into()))?;
    let redactor = secrets.redactor();
    let mut child = std::process::Command::new(program)
        .args(args)
        .envs(secrets.values.iter().map(|(k, v)| (k, v.expose())))
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| UsageError(format!("cannot run `{program}`: {e}")))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    std::thread::scope(|scope| {
        if let Some(out) = stdout {
            scope.spawn(|| pump(out, std::io::stdout(), &redactor));
        }
        if let Some(err) = stderr {
            scope.spawn(|| pump(err, std::io::stderr(), &redactor));
        }
    });
    let status = child.wait()?;
    if status.success() {
        Ok(Outcome::Ok)
    } else {
        eprintln!("windlass: `{program}` failed ({status})");
        Ok(Outcome::NotOk)
    }
}

fn pump(mut from: impl std::io::Read, mut to: impl std::io::Write, redactor: &Redactor) {
    let mut stream = redactor.stream();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = to.write_all(&stream.push(&buf[..n]));
                let _ = to.flush();
            }
        }
    }
    let _ = to.write_all(&stream.finish());
    let _ = to.flush();
}
