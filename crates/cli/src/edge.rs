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
    let token = match &args.token_file {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| UsageError(format!("cannot read the token file {}: {e}", file.display())))?
            .trim()
            .to_owned(),
        None => std::env::var(TOKEN_VAR).unwrap_or_default(),
    };
    if token.len() < 16 {
        return Err(UsageError(format!(
            "the edge needs an admin token of at least 16 characters: set {TOKEN_VAR} or pass --token-file"
        ))
        .into());
    }
    let parse = |text: &str| text.parse::<SocketAddr>().with_context(|| format!("`{text}` is not an address"));
    let state_dir = windlass_config::config_dir(&path).join(config.project.state_dir.as_deref().unwrap_or(".windlass"));
    let mut settings =
        windlass_edge::config::settings_from_config(&config, token).map_err(|e| UsageError(e.to_string()))?;
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
        Ok::<_, std::io::Error>((signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?))
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
    let (mut terminate, mut interrupt) = signals;
    runtime.block_on(async {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    });
    edge.stop();
    Ok(Outcome::Ok)
}
