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
    /// Create a token for a person or a robot declared in `[access]`, or a bootstrap admin
    /// token; it is printed once and stored only as a hash.
    Create {
        /// The person it belongs to (declared in `[access.people]`, unless --admin).
        #[arg(long = "for", value_name = "PERSON", conflicts_with = "robot")]
        person: Option<String>,
        /// The robot it belongs to (declared in `[access.robots]`), such as `ci`.
        #[arg(long, value_name = "ROBOT")]
        robot: Option<String>,
        /// A bootstrap admin token: every permission everywhere. Made only here, with access
        /// to the server's state; the person defaults to `admin`.
        #[arg(long, conflicts_with = "robot")]
        admin: bool,
        /// The token's own name, unique among tokens [default: the person's or robot's name]
        #[arg(long)]
        name: Option<String>,
        /// How long it lives, such as 30d or 12h (at most 366d)
        #[arg(long, default_value = "90d", value_parser = lifetime)]
        expires: std::time::Duration,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List tokens: whose, expiry, last use, revocation (never the tokens themselves).
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

fn lifetime(text: &str) -> Result<std::time::Duration, String> {
    windlass_config::units::Duration::parse(text).map(|d| d.as_std()).map_err(|e| e.to_string())
}

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

/// Who a new token belongs to, checked against `[access]`: a declared person, a declared robot,
/// or (with `--admin`) any person name, as a bootstrap admin.
fn token_owner(
    config: &windlass_config::Config,
    path: &Path,
    person: Option<String>,
    robot: Option<String>,
    admin: bool,
) -> anyhow::Result<(String, bool)> {
    let access = &config.access;
    match (person, robot) {
        (_, Some(robot)) => {
            tokens::check_name(&robot).map_err(|err| UsageError(err.to_string()))?;
            if !access.robots.contains_key(&robot) {
                return Err(UsageError(format!(
                    "robot `{robot}` is not declared in {}: add [access.robots.{robot}] and grant it a role",
                    path.display()
                ))
                .into());
            }
            Ok((robot, true))
        }
        (Some(person), None) => {
            tokens::check_name(&person).map_err(|err| UsageError(err.to_string()))?;
            if !admin && !access.people.contains_key(&person) {
                return Err(UsageError(format!(
                    "person `{person}` is not declared in {}: add [access.people.{person}] and a grant \
                     ([[access.grants]] people = [\"{person}\"], role = ..., environments = [...]), \
                     or make a bootstrap admin token with --admin",
                    path.display()
                ))
                .into());
            }
            Ok((person, false))
        }
        (None, None) if admin => Ok(("admin".to_owned(), false)),
        (None, None) => Err(UsageError(
            "say whose token it is: --for <person> (declared in [access.people]), --robot <robot>, \
             or --admin for a bootstrap admin token"
                .into(),
        )
        .into()),
    }
}

pub fn token(args: TokenArgs) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        match args.command {
            TokenCommand::Create { person, robot, admin, name, expires, state } => {
                if let Some(name) = &name {
                    tokens::check_name(name).map_err(|err| UsageError(err.to_string()))?;
                }
                if expires > tokens::MAX_LIFETIME || expires.is_zero() {
                    return Err(UsageError(format!(
                        "--expires must be more than 0 and at most 366d (asked: {}s)",
                        expires.as_secs()
                    ))
                    .into());
                }
                let (config, path, dir) = state.resolve()?;
                let (owner, is_robot) = token_owner(&config, &path, person, robot, admin)?;
                let store = windlass_server::open_store(&dir, state.database.as_deref()).await?;
                let name = match name {
                    Some(name) => name,
                    None => free_token_name(&*store, &owner).await?,
                };
                let request = tokens::TokenRequest {
                    name: name.clone(),
                    owner: owner.clone(),
                    robot: is_robot,
                    admin,
                    lifetime: expires,
                };
                let token = tokens::create(&*store, &request).await.map_err(|err| UsageError(err.to_string()))?;
                let whose = match (is_robot, admin) {
                    (true, _) => format!("robot `{owner}`"),
                    (false, true) => format!("bootstrap admin `{owner}`"),
                    (false, false) => format!("`{owner}`"),
                };
                eprintln!("token `{name}` of {whose} created, valid for {}; it is shown only now:", days(expires));
                println!("{token}");
            }
            TokenCommand::List { state, output } => {
                let (_, _, dir) = state.resolve()?;
                let store = windlass_server::open_store(&dir, state.database.as_deref()).await?;
                let now = store.now();
                let tokens: Vec<crate::output::TokenRow> = (store.tokens().await?.into_iter())
                    .map(|t| crate::output::TokenRow {
                        expired: t.expires_at.is_some_and(|at| at <= now),
                        name: t.name,
                        owner: t.owner,
                        robot: t.kind == windlass_store::TokenOwnerKind::Robot,
                        admin: t.admin,
                        created_at: t.created_at,
                        expires_at: t.expires_at,
                        last_used_at: t.last_used_at,
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

/// `owner`, or `owner-2`, `owner-3`... : the first name no token has.
async fn free_token_name(store: &dyn windlass_store::Store, owner: &str) -> anyhow::Result<String> {
    let taken: std::collections::HashSet<String> = store.tokens().await?.into_iter().map(|t| t.name).collect();
    let name = std::iter::once(owner.to_owned())
        .chain((2..).map(|n| format!("{owner}-{n}")))
        .find(|name| !taken.contains(name))
        .unwrap_or_else(|| owner.to_owned());
    Ok(name)
}

fn days(lifetime: std::time::Duration) -> String {
    let secs = lifetime.as_secs();
    if secs.is_multiple_of(86_400) {
        format!("{} days", secs / 86_400)
    } else {
        format!("{} hours", secs.div_ceil(3600))
    }
}
