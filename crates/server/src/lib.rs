//! `windlass server`: the control plane. It owns the store, drives the edge through its admin API
//! and the instances through the runtime, runs deploys in the background and serves the
//! versioned REST API (`/api/v1`), with server-sent events for live deploy output.
//!
//! Every API call needs a personal token (`Authorization: Bearer wl_...`), so every record says
//! who. On start the server recovers from whatever stopped it before ([`windlass_pipeline::recover`]).

pub mod access;
pub mod alerts;
mod api;
mod courier;
pub mod listener;
mod probes;
mod signals;
mod slo;
pub mod tokens;

pub use api::{RouteRule, route_table, routes_markdown};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use windlass_pipeline::Deployer;
use windlass_pipeline::edge::{EdgeClient, EdgeControl};
use windlass_pipeline::supervisor::Supervisor;
use windlass_runtime::{ProcessRuntime, Runtime};
use windlass_store::{Clock, Holder, Store, SystemClock};

/// The server's clock: the real time, shared by the store and the deployer.
fn store_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

pub struct ServerOptions {
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    /// The store: a SQLite file path or a postgres:// URL; default `<state>/windlass.db`.
    pub database: Option<String>,
    pub listen: SocketAddr,
    pub edge_admin: SocketAddr,
    pub edge_public: SocketAddr,
    pub edge_token: String,
    /// `https://` to the edge's admin listener (`[edge] admin_tls`), with the CA to trust.
    pub edge_admin_tls: Option<windlass_pipeline::edge::AdminTls>,
    pub env_file: Option<PathBuf>,
    /// The `windlass-shim` executable; default beside the running binary.
    pub shim: Option<PathBuf>,
    /// The environments this server deploys, recovers and reaps; empty: all of the config's.
    /// Servers that share one store each manage their own.
    pub environments: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
    #[error(transparent)]
    Deploy(#[from] windlass_pipeline::DeployError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] listener::TlsError),
}

/// The state directory's stable server id, created on first start: deploys and locks are owned
/// by it, so a restarted server recognises what its previous life left running.
fn server_id(state_dir: &Path) -> Result<String, ServerError> {
    let path = state_dir.join("server-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(ServerError::Setup(format!("cannot read {}: {err}", path.display()))),
    }
    let random = tokens::generate().map_err(|err| ServerError::Setup(err.to_string()))?;
    let id = format!("server-{}", &random[tokens::PREFIX.len()..tokens::PREFIX.len() + 12]);
    windlass_failpoint::private::write_atomic(&path, id.as_bytes())
        .map_err(|err| ServerError::Setup(format!("cannot write {}: {err}", path.display())))?;
    Ok(id)
}

pub fn default_database(state_dir: &Path) -> String {
    state_dir.join("windlass.db").display().to_string()
}

/// Opens the store, creating the state directory 0700, or tightening it to 0700 (logged) when
/// it is readable by other users: everything in it is private.
pub async fn open_store(state_dir: &Path, database: Option<&str>) -> Result<Arc<dyn Store>, ServerError> {
    windlass_failpoint::private::ensure_dir(state_dir)
        .map_err(|err| ServerError::Setup(format!("cannot create {}: {err}", state_dir.display())))?;
    let location = database.map(str::to_owned).unwrap_or_else(|| default_database(state_dir));
    Ok(windlass_store::open(&location, store_clock()).await?)
}

/// A running server.
pub struct ServerHandle {
    pub address: SocketAddr,
    /// `https` with `[server] tls`, else `http`.
    pub scheme: &'static str,
    /// What recovery found and did at start, one line each.
    pub recovery: Vec<String>,
    pub deployer: Arc<Deployer>,
    /// The API server: it ends by itself only if serving fails.
    serving: tokio::task::JoinHandle<()>,
}

/// How long a stopping server waits by default for its deploys to finish or reach a safe point.
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl ServerHandle {
    /// Completes if the API server stops by itself (it fails to serve); it does not otherwise.
    pub async fn failed(&mut self) {
        let _ = (&mut self.serving).await;
    }

    /// Refuses new work from now on (503) and stops the loops; [`ServerHandle::shutdown`] does
    /// the rest.
    pub fn stop_taking_work(&self) {
        self.deployer.tasks.begin_stop();
    }

    /// Stops the server: new work is refused at once (503), the loops stop, running deploys get
    /// up to `grace` to finish or reach their next safe point; whatever is still running then is
    /// dropped as a crash would drop it, for recovery on the next start. The API serves reads
    /// until the end. Instances and the edge are not touched.
    pub async fn shutdown(mut self, grace: std::time::Duration) -> windlass_pipeline::supervisor::Shutdown {
        let outcome = self.deployer.tasks.shutdown(grace).await;
        // Not a graceful stop of the API: a client following a deploy that was just dropped
        // would keep its connection open for ever. Its stream ends, as after a crash.
        self.serving.abort();
        let _ = (&mut self.serving).await;
        outcome
    }
}

/// While the server stops, only reads are served: anything that could start work gets 503.
async fn refuse_work_when_stopping(
    axum::extract::State(tasks): axum::extract::State<windlass_pipeline::supervisor::Supervisor>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if tasks.is_stopping() && !matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD) {
        let body = axum::Json(windlass_api::ErrorBody::new("the server is shutting down; try again when it is back"));
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, body).into_response();
    }
    next.run(request).await
}

/// Opens everything, recovers, and starts serving.
pub async fn start(mut options: ServerOptions) -> Result<ServerHandle, ServerError> {
    // Instances and artifacts are found by absolute paths: shims run in other directories.
    options.state_dir = std::path::absolute(&options.state_dir)
        .map_err(|err| ServerError::Setup(format!("{}: {err}", options.state_dir.display())))?;
    let store = open_store(&options.state_dir, options.database.as_deref()).await?;
    let id = server_id(&options.state_dir)?;
    let shim = options
        .shim
        .clone()
        .or_else(windlass_runtime::default_shim_program)
        .ok_or_else(|| ServerError::Setup("cannot find windlass-shim beside this executable".into()))?;
    let process: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(options.state_dir.join("instances"), shim));
    // Docker is reached only when a service runs there (or an id is not a process instance).
    let docker = windlass_runtime::DockerRuntime::for_state_dir(&options.state_dir);
    let runtime: Arc<dyn Runtime> = Arc::new(windlass_runtime::Runtimes::new(process, Some(docker)));
    let edge: Arc<dyn EdgeControl> = Arc::new(EdgeClient {
        admin: options.edge_admin,
        public: options.edge_public,
        token: options.edge_token.clone(),
        tls: options.edge_admin_tls.clone(),
    });
    let deployer = Arc::new(Deployer {
        store: store.clone(),
        runtime,
        edge,
        config_path: options.config_path.clone(),
        artifacts_dir: options.state_dir.join("artifacts"),
        holder: Holder::this_process(id),
        env_file: options.env_file.clone(),
        parsed: Default::default(),
        clock: store_clock(),
        tasks: Supervisor::new(),
    });
    let tasks = deployer.tasks.clone();
    let config = deployer.shared_config()?;
    for environment in &options.environments {
        windlass_pipeline::plan::check_environment(&config, environment)
            .map_err(|err| ServerError::Setup(format!("--env: {err}")))?;
    }
    let environments: Vec<String> = if options.environments.is_empty() {
        config.environments.keys().cloned().collect()
    } else {
        options.environments.clone()
    };
    // The key and certificate are checked, and the port bound, before recovery changes
    // anything: a server that cannot serve must not have acted first.
    let tls = listener::TlsFiles::from_config(&config, &options.config_path);
    let listener = listener::Bound::bind(options.listen, tls.as_ref()).await?;
    let recovery = windlass_pipeline::recover::recover(&deployer, &environments).await?;
    for note in &recovery.notes {
        tracing::warn!("{note}");
    }
    let address = listener.local_addr().map_err(|source| ServerError::Listen { address: options.listen, source })?;
    let alerting = alerts::open(store.clone(), &config).await?;
    let courier =
        Arc::new(courier::Courier { deployer: deployer.clone(), store: store.clone(), alerting: alerting.clone() });
    tasks.spawn_loop("alerts", alerts::run(courier.clone()));
    tasks.spawn_loop("signals", signals::run(courier.clone(), environments.clone()));
    tasks.spawn_loop("guard", signals::guard(courier.clone(), environments.clone()));
    let probes = probes::Probes::default();
    let app = api::router(api::AppState {
        deployer: deployer.clone(),
        store: store.clone(),
        managed: environments.clone(),
        probes: probes.clone(),
        alerting,
        courier: courier.clone(),
    })
    .layer(axum::middleware::from_fn_with_state(tasks.clone(), refuse_work_when_stopping));
    tasks.spawn_loop("probes", probes::run(deployer.clone(), store, environments.clone(), probes, courier.clone()));
    tasks.spawn_loop("retire warm colors", retire_warm_colors(deployer.clone(), environments.clone()));
    tasks.spawn_loop("slo", slo::collect(deployer.clone(), environments.clone(), courier.clone()));
    tasks.spawn_loop("database schedules", database_schedules(deployer.clone(), environments));
    let scheme = listener.scheme();
    // The API server is not one of the supervisor's tasks: it serves reads (status, a deploy's
    // progress) while the supervisor stops the work, and stops last ([`ServerHandle::shutdown`]).
    #[allow(clippy::disallowed_methods)]
    let serving = tokio::spawn(async move {
        if let Err(err) = listener.serve(app).await {
            tracing::error!(%err, "the API server stopped");
        }
    });
    Ok(ServerHandle { address, scheme, recovery: recovery.notes, deployer, serving })
}

/// Once a second: stops warm colors whose keep-warm time is over, and returns traffic left on
/// other pools than the live color outside a deploy.
async fn retire_warm_colors(deployer: Arc<Deployer>, environments: Vec<String>) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        // One pass is work (it holds the environment's lock while it retires a color): a
        // stopping server lets it end; only the wait between passes is cut short.
        let (pass_deployer, environments) = (deployer.clone(), environments.clone());
        let pass = async move {
            let deployer = pass_deployer;
            for environment in &environments {
                match windlass_pipeline::recover::retire_due(&deployer, environment).await {
                    Ok(retired) => {
                        for what in retired {
                            tracing::info!("retired the warm {what}");
                        }
                    }
                    Err(err) => tracing::warn!(%err, environment, "cannot retire warm colors"),
                }
                match windlass_pipeline::recover::return_stray_traffic(&deployer, environment).await {
                    Ok(returned) => {
                        for what in returned {
                            tracing::warn!("{what}");
                        }
                    }
                    Err(err) => tracing::debug!(%err, environment, "cannot check the edge's weights"),
                }
            }
        };
        if let Err(windlass_pipeline::supervisor::Stopped::ShuttingDown) = deployer.tasks.run(pass).await {
            return;
        }
    }
}

/// Every 30 s, the scheduled database jobs that are due ([`windlass_pipeline::schedules`]).
async fn database_schedules(deployer: Arc<Deployer>, environments: Vec<String>) {
    loop {
        // One pass is work (a backup half-written, its lease held, if cut off): a stopping
        // server lets it end; only the wait between passes is cut short.
        let (pass_deployer, pass_environments) = (deployer.clone(), environments.clone());
        let pass = async move {
            for environment in &pass_environments {
                if let Err(err) = windlass_pipeline::schedules::run_due(&pass_deployer, environment).await {
                    tracing::warn!(%err, environment, "scheduled database jobs");
                }
            }
        };
        if let Err(windlass_pipeline::supervisor::Stopped::ShuttingDown) = deployer.tasks.run(pass).await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    }
}
