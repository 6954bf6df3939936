//! `windlass edge --config windlass.toml --env <env>`: the edge proxy as its own process, serving
//! the config's routes and static upstreams, driven by its admin API, and coming back to its
//! persisted table after a restart.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use windlass_edge::EdgeOptions;

use crate::{Outcome, UsageError, config_path, load_config};

/// Where the admin token comes from when `--token-file` is not given.
const TOKEN_VAR: &str = "WINDLASS_EDGE_TOKEN";
/// Where the read-only token comes from when `--read-token-file` is not given (optional).
const READ_TOKEN_VAR: &str = "WINDLASS_EDGE_READ_TOKEN";
/// Where the maintenance bypass secret comes from when `--bypass-token-file` is not given
/// (optional: derived from the admin token when neither is).
const BYPASS_TOKEN_VAR: &str = "WINDLASS_EDGE_BYPASS_TOKEN";
/// Hot-path features to switch off for benchmarks: `metrics,request-id,forwarded-headers`.
const DISABLE_VAR: &str = "WINDLASS_EDGE_DISABLE";

#[derive(clap::Args)]
pub struct Args {
    /// The config file [default: ./windlass.toml]
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The environment whose services, routes and overrides to serve.
    #[arg(long = "env")]
    environment: String,
    /// Where to serve traffic [default: edge.listen from the config]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Where to serve the admin API and /metrics [default: edge.admin_listen]
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// The persisted routing table [default: <state_dir>/edge-<env>.json]
    #[arg(long)]
    state: Option<PathBuf>,
    /// A file holding the admin token [default: the WINDLASS_EDGE_TOKEN variable]
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// A file holding a read-only token for the admin API [default: WINDLASS_EDGE_READ_TOKEN, or none]
    #[arg(long)]
    read_token_file: Option<PathBuf>,
    /// A file holding the maintenance bypass secret [default: WINDLASS_EDGE_BYPASS_TOKEN, or derived from the admin token]
    #[arg(long)]
    bypass_token_file: Option<PathBuf>,
    /// Data-plane worker threads [default: one per core]
    #[arg(long, default_value_t = 0)]
    workers: usize,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let path = config_path(args.config);
    let config = load_config(&path)?;
    if !config.environments.contains_key(&args.environment) {
        return Err(
            UsageError(format!("environment `{}` is not declared in {}", args.environment, path.display())).into()
        );
    }
    let files = SecretFiles {
        admin: args.token_file.clone(),
        read: args.read_token_file.clone(),
        bypass: args.bypass_token_file.clone(),
    };
    let (token, read_token, bypass_token) = files.read()?;
    let parse = |text: &str| text.parse::<SocketAddr>().with_context(|| format!("`{text}` is not an address"));
    let state_dir = windlass_config::config_dir(&path).join(config.project.state_dir.as_deref().unwrap_or(".windlass"));
    let mut settings =
        windlass_edge::config::settings_from_config(&config, token).map_err(|e| UsageError(e.to_string()))?;
    settings.read_token = read_token;
    settings.bypass_token = bypass_token;
    // A measuring aid: switch hot-path features off one at a time to see what each costs.
    if let Ok(disabled) = std::env::var(DISABLE_VAR) {
        settings.hot_path =
            windlass_edge::HotPath::without(&disabled).map_err(|e| UsageError(format!("{DISABLE_VAR}: {e}")))?;
    }
    let options = EdgeOptions {
        listen: args.listen.map_or_else(|| parse(&config.edge.listen), Ok)?,
        admin_listen: args.admin_listen.map_or_else(|| parse(&config.edge.admin_listen), Ok)?,
        workers: args.workers,
        settings,
        initial: windlass_edge::config::spec_from_config(&config, &args.environment),
        state_path: Some(args.state.unwrap_or_else(|| state_dir.join(format!("edge-{}.json", args.environment)))),
        tls: match &config.edge.tls {
            Some(tls) => Some(windlass_edge::TlsOptions {
                listen: parse(&tls.listen)?,
                cert: windlass_config::config_dir(&path).join(&tls.cert),
                key: windlass_config::config_dir(&path).join(&tls.key),
            }),
            None => None,
        },
        admin_tls: config.edge.admin_tls.as_ref().map(|tls| windlass_edge::AdminTlsOptions {
            cert: windlass_config::config_dir(&path).join(&tls.cert),
            key: windlass_config::config_dir(&path).join(&tls.key),
        }),
    };
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_target(false).try_init();
    // Every downstream connection is a file descriptor: the soft limit (often 1024) is raised to
    // the hard one before the default connection cap (90% of it) is read.
    if let Err(err) = windlass_edge::limits::raise_fd_limit() {
        eprintln!("windlass edge: cannot raise the file descriptor limit: {err}");
    }
    // Signal handlers go in before the edge says it is ready, so that a SIGTERM right after the
    // announcement stops it cleanly instead of killing it by the default action.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let signals = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    let edge = windlass_edge::start(options)?;
    println!("edge listening on {}", edge.address);
    if let Some(address) = edge.tls_address {
        println!("tls listening on {address}");
    }
    println!("admin listening on {}", edge.admin_address);
    if edge.restored {
        println!("restored the persisted routing table");
    }
    let (mut terminate, mut interrupt, mut hangup) = signals;
    runtime.block_on(async {
        loop {
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                // Rotation without a restart: the token files are read again; a problem keeps
                // the secrets in use and says why.
                _ = hangup.recv() => match files.read() {
                    Ok((admin, read, bypass)) => {
                        edge.shared().rotate_secrets(admin, read, bypass);
                        println!("secrets reloaded");
                    }
                    // On stdout with the other announcements, where supervisors and tests look.
                    Err(err) => println!("secrets not reloaded, the previous ones stay: {err:#}"),
                },
            }
        }
    });
    edge.stop();
    Ok(Outcome::Ok)
}

/// Where the edge's secrets come from; read at start and again on SIGHUP.
struct SecretFiles {
    admin: Option<PathBuf>,
    read: Option<PathBuf>,
    bypass: Option<PathBuf>,
}

impl SecretFiles {
    /// The admin token, the read token and the bypass secret, each checked.
    fn read(&self) -> anyhow::Result<(String, Option<String>, Option<String>)> {
        let token = match &self.admin {
            Some(file) => {
                private_file(file, "token")?;
                std::fs::read_to_string(file)
                    .map_err(|e| UsageError(format!("cannot read the token file {}: {e}", file.display())))?
                    .trim()
                    .to_owned()
            }
            None => std::env::var(TOKEN_VAR).unwrap_or_default(),
        };
        if token.len() < 16 {
            return Err(UsageError(format!(
                "the edge needs an admin token of at least 16 characters: set {TOKEN_VAR} or pass --token-file"
            ))
            .into());
        }
        let read_token = optional_secret(self.read.as_deref(), READ_TOKEN_VAR, "read token")?;
        let bypass_token = optional_secret(self.bypass.as_deref(), BYPASS_TOKEN_VAR, "bypass secret")?;
        // Each secret is good for one purpose: one value serving two would undo that.
        if read_token.as_deref() == Some(token.as_str()) || bypass_token.as_deref() == Some(token.as_str()) {
            return Err(
                UsageError("the read token and the bypass secret must differ from the admin token".into()).into()
            );
        }
        Ok((token, read_token, bypass_token))
    }
}

/// Refuses a secret file that other users may read or write (as the server's TLS key is).
fn private_file(file: &std::path::Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(file)
        .map_err(|e| UsageError(format!("cannot read the {what} file {}: {e}", file.display())))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(UsageError(format!(
            "the {what} file {} may be read or written by other users (mode {mode:04o}): chmod 600 it",
            file.display()
        ))
        .into());
    }
    Ok(())
}

/// A secret of at least 16 characters from a private file (no group or other bits, as the
/// server's TLS key) or a variable; `None` when neither is given.
fn optional_secret(file: Option<&std::path::Path>, var: &str, what: &str) -> anyhow::Result<Option<String>> {
    let secret = match file {
        Some(file) => {
            private_file(file, what)?;
            std::fs::read_to_string(file)
                .map_err(|e| UsageError(format!("cannot read the {what} file {}: {e}", file.display())))?
                .trim()
                .to_owned()
        }
        None => match std::env::var(var) {
            Ok(value) => value.trim().to_owned(),
            Err(_) => return Ok(None),
        },
    };
    if secret.len() < 16 {
        let source = file.map_or_else(|| var.to_owned(), |f| f.display().to_string());
        return Err(UsageError(format!("the {what} ({source}) must be at least 16 characters")).into());
    }
    Ok(Some(secret))
}
