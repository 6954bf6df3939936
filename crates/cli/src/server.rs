//! `windlass server` (the control plane in the foreground) and `windlass token` (personal
//! tokens, written straight into the store: the first token cannot come from the API).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use windlass_server::{ServerOptions, tokens};

use crate::{Outcome, UsageError, config_path, load_config};

#[derive(clap::Args)]
pub struct StateArgs {
    /// The config file [default: ./windlass.toml]
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The state directory [default: project.state_dir, or .windlass beside the config]
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The store: a SQLite file or a postgres:// URL [default: <state>/windlass.db]
    #[arg(long, env = "WINDLASS_DATABASE")]
    pub database: Option<String>,
}

impl StateArgs {
    /// The config, its path and the state directory; a broken config is a usage error.
    pub fn resolve(&self) -> anyhow::Result<(windlass_config::Config, PathBuf, PathBuf)> {
        let path = config_path(self.config.clone());
        let config = load_config(&path)?;
        let state = match &self.state {
            Some(state) => state.clone(),
            None => windlass_config::config_dir(&path).join(config.project.state_dir.as_deref().unwrap_or(".windlass")),
        };
        Ok((config, path, state))
    }
}

#[derive(clap::Args)]
pub struct ServerArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Where to serve the API [default: 127.0.0.1:7700]
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// The edge's admin API [default: edge.admin_listen from the config]
    #[arg(long)]
    edge_admin: Option<SocketAddr>,
    /// Where the edge serves traffic [default: edge.listen from the config]
    #[arg(long)]
    edge_listen: Option<SocketAddr>,
    /// A file holding the edge's admin token [default: WINDLASS_EDGE_TOKEN, or <state>/edge.token]
    #[arg(long)]
    edge_token_file: Option<PathBuf>,
    /// Manage only this environment (repeatable) [default: all]; for servers sharing a store.
    #[arg(long)]
    env: Vec<String>,
    /// Read variables from this file instead of each environment's env file.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// On SIGTERM or Ctrl-C, how long running deploys get to finish or reach their next step;
    /// one still running then is left for recovery on the next start, as after a crash.
    #[arg(long, default_value = "30s", value_parser = grace)]
    shutdown_grace: std::time::Duration,
}

fn grace(text: &str) -> Result<std::time::Duration, String> {
    windlass_config::units::Duration::parse(text).map(|d| d.as_std()).map_err(|e| e.to_string())
}

fn address(text: &str, what: &str) -> anyhow::Result<SocketAddr> {
    text.parse().map_err(|_| UsageError(format!("{what} `{text}` is not an address like 127.0.0.1:8080")).into())
}

pub fn read_token(file: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(file)
        .map_err(|e| UsageError(format!("cannot read the token file {}: {e}", file.display())))?;
    Ok(token.trim().to_owned())
}

pub fn server(args: ServerArgs) -> anyhow::Result<Outcome> {
    let (config, path, state_dir) = args.state.resolve()?;
    let edge_admin = match args.edge_admin {
        Some(a) => a,
        None => address(&config.edge.admin_listen, "edge.admin_listen")?,
    };
    let edge_public = match args.edge_listen {
        Some(a) => a,
        None => address(&config.edge.listen, "edge.listen")?,
    };
    // The edge's admin listener speaks TLS when the config gives it a certificate; the CA to
    // trust is the config's too (a path relative to the config file), or the system's.
    let edge_admin_tls = config.edge.admin_tls.as_ref().map(|tls| windlass_edge::client::AdminTls {
        ca_file: tls.ca.as_ref().map(|ca| windlass_config::config_dir(&path).join(ca)),
    });
    // The server parses the config itself (and again whenever it changes): this copy is not
    // kept for the server's life, which with 10,000 probes would be megabytes held for nothing.
    drop(config);
    let edge_token = match (&args.edge_token_file, std::env::var("WINDLASS_EDGE_TOKEN")) {
        (Some(file), _) => read_token(file)?,
        (None, Ok(token)) => token,
        (None, Err(_)) => read_token(&state_dir.join("edge.token"))?,
    };
    // Logs go to stderr, filtered by RUST_LOG (default: info); each deploy's lines carry its
    // spans (`deploy{id,env}:phase{name}:step{name}`).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed before the server announces itself: a SIGTERM right after the announcement
        // stops it cleanly instead of killing it by the default action.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut handle = windlass_server::start(ServerOptions {
            config_path: path,
            state_dir,
            database: args.state.database,
            listen: args.listen,
            edge_admin,
            edge_public,
            edge_token,
            edge_admin_tls,
            env_file: args.env_file,
            shim: None,
            environments: args.env,
        })
        .await?;
        for note in &handle.recovery {
            println!("recovered: {note}");
        }
        println!("server listening on {}://{}", handle.scheme, handle.address);
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            () = handle.failed() => {}
        }
        handle.stop_taking_work();
        println!(
            "server stopping: no new work; running deploys get {:?} to finish or reach their next step",
            args.shutdown_grace
        );
        // A second SIGTERM or Ctrl-C means "now": what runs is dropped as a crash would drop it
        // (recovery on the next start picks it up).
        let stopped = tokio::select! {
            stopped = handle.shutdown(args.shutdown_grace) => stopped,
            _ = interrupt.recv() => windlass_pipeline::supervisor::Shutdown { settled: false, dropped: 0 },
            _ = terminate.recv() => windlass_pipeline::supervisor::Shutdown { settled: false, dropped: 0 },
        };
        if !stopped.settled && stopped.dropped == 0 {
            println!("stopped at once on a second signal; running deploys are recovered on the next start");
        }
        if stopped.dropped > 0 {
            println!("{} task(s) left unfinished; their deploys are recovered on the next start", stopped.dropped);
        }
        // Instances and the edge keep running: the server is only their control plane.
        println!("server stopped; instances and the edge keep serving");
        Ok(Outcome::Ok)
    });
    // Blocking work still running (hashing or copying a large artifact) must not hold the exit
    // past the grace period: the runtime waits for it only briefly.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    outcome
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a personal token; it is printed once and stored only as a hash.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List tokens by name (never the tokens themselves).
    List {
        #[command(flatten)]
        state: StateArgs,
        #[arg(long, value_enum, default_value_t)]
        output: crate::OutputFormat,
    },
    /// Revoke a token by name.
    Revoke {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

pub fn token(args: TokenArgs) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match args.command {
            TokenCommand::Create { name, state } => {
                tokens::check_name(&name).map_err(|err| UsageError(err.to_string()))?;
                let (_, _, dir) = state.resolve()?;
                let store = windlass_server::open_store(&dir, state.database.as_deref()).await?;
                let token = tokens::create(&*store, &name).await.map_err(|err| UsageError(err.to_string()))?;
                eprintln!("token `{name}` created; it is shown only now:");
                println!("{token}");
            }
            TokenCommand::List { state, output } => {
                let (_, _, dir) = state.resolve()?;
                let store = windlass_server::open_store(&dir, state.database.as_deref()).await?;
                let tokens: Vec<crate::output::TokenRow> = (store.tokens().await?.into_iter())
                    .map(|t| crate::output::TokenRow {
                        name: t.name,
                        created_at: t.created_at,
                        revoked_at: t.revoked_at,
                    })
                    .collect();
                crate::output::tokens(&tokens, output)?;
            }
            TokenCommand::Revoke { name, state } => {
                let (_, _, dir) = state.resolve()?;
                let store = windlass_server::open_store(&dir, state.database.as_deref()).await?;
                if !store.revoke_token(&name).await? {
                    return Err(UsageError(format!("no live token named `{name}`")).into());
                }
                println!("token `{name}` revoked");
            }
        }
        Ok(Outcome::Ok)
    })
}
