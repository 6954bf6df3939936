//! The edge: Windlass's reverse proxy, in its own process (`windlass edge`) so that the control
//! plane can restart or crash without costing a request.
//!
//! - Data plane (`server`, `proxy`): a current-thread runtime per worker on `SO_REUSEPORT`
//!   sockets; each downstream connection owns its upstream connections.
//! - Routing table (`table`): compiled from the desired state (`spec`) and swapped whole, so a
//!   switch, weight change or new instance set never fails or splits a request.
//! - Control (`admin`, `health`): the token-protected admin API the server drives, `/metrics`, and
//!   the active health checks that decide failover. The state is persisted on every change and
//!   restored on start. The admin API's bodies are the types of `admin::api`; `client` is the
//!   control plane's side of it ([`client::EdgeControl`], [`client::EdgeClient`]).
//!
//! The edge knows nothing of deploys: it serves whatever table it was last given.

pub mod access_log;
pub mod admin;
pub mod client;
pub mod config;
pub mod endpoints;
pub mod framing;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod server;
pub mod shared;
pub mod spec;
pub mod table;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

pub use shared::{HotPath, Settings, Shared};
pub use spec::EdgeSpec;

/// How to start an edge.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Data-plane worker threads (default: one per core).
    pub workers: usize,
    pub settings: Settings,
    /// The state to start from when nothing is persisted at `state_path`.
    pub initial: EdgeSpec,
    /// Where the state is persisted; a restarted edge comes back to it.
    pub state_path: Option<PathBuf>,
    /// TLS termination, if any.
    pub tls: Option<TlsOptions>,
    /// TLS on the admin listener, if any (`[edge] admin_tls`).
    pub admin_tls: Option<AdminTlsOptions>,
}

/// The admin listener's certificate and key (PEM files, reloaded when they change).
#[derive(Debug, Clone)]
pub struct AdminTlsOptions {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where to serve HTTPS and with which certificate.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    #[error("the persisted edge state cannot be used: {0}")]
    State(#[from] spec::LoadError),
    #[error("the persisted edge state cannot be used: cannot write {path}: {source}")]
    Save { path: String, source: std::io::Error },
    #[error("the edge state is invalid: {0}")]
    Spec(#[from] spec::SpecError),
    #[error("cannot start the edge's threads: {0}")]
    Threads(std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// A running edge. Dropping it does not stop it; call [`EdgeHandle::stop`].
pub struct EdgeHandle {
    pub address: SocketAddr,
    pub admin_address: SocketAddr,
    /// Where HTTPS is served, when TLS is on.
    pub tls_address: Option<SocketAddr>,
    /// Whether the state came from the persisted file (a restart) rather than `initial`.
    pub restored: bool,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl EdgeHandle {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting and waits for the threads to end.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A restored state with each service's endpoints and latency thresholds as `initial` (the
/// config) has them: what is counted follows the config across restarts, while routes, pools and
/// weights stay as the control plane left them. Unchanged if the result would not pass `check`.
fn with_counting_of(restored: EdgeSpec, initial: &EdgeSpec) -> EdgeSpec {
    let mut merged = restored.clone();
    for (name, service) in &mut merged.services {
        if let Some(configured) = initial.services.get(name) {
            service.endpoints.clone_from(&configured.endpoints);
            service.thresholds_ms.clone_from(&configured.thresholds_ms);
        }
    }
    if merged.check().is_ok() { merged } else { restored }
}

/// Starts the edge: binds its listeners (errors are returned, not logged), restores or installs
/// the state, and starts the worker and control threads.
pub fn start(options: EdgeOptions) -> Result<EdgeHandle, StartError> {
    let restored_spec = match &options.state_path {
        Some(path) => EdgeSpec::load(path)?,
        None => None,
    };
    let restored = restored_spec.is_some();
    let spec = match restored_spec {
        Some(restored) => with_counting_of(restored, &options.initial),
        None => options.initial,
    };
    if let Some(path) = &options.state_path
        && !restored
    {
        spec.check()?;
        spec.save(path).map_err(|source| StartError::Save { path: path.display().to_string(), source })?;
    }
    let shared = Shared::new(spec, options.settings, options.state_path.clone())?;

    let workers = if options.workers == 0 {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    } else {
        options.workers
    };
    let listen_error = |address| move |source| StartError::Listen { address, source };
    let listeners = server::bind_reuseport(options.listen, workers).map_err(listen_error(options.listen))?;
    let address = listeners[0].local_addr().map_err(listen_error(options.listen))?;
    let admin_listener =
        std::net::TcpListener::bind(options.admin_listen).map_err(listen_error(options.admin_listen))?;
    admin_listener.set_nonblocking(true).map_err(listen_error(options.admin_listen))?;
    let admin_address = admin_listener.local_addr().map_err(listen_error(options.admin_listen))?;

    let certificates = match &options.tls {
        Some(tls) => Some(Arc::new(tls::Certificates::load(tls.cert.clone(), tls.key.clone())?)),
        None => None,
    };
    let (tls_listeners, tls_address) = match &options.tls {
        Some(tls) => {
            let listeners = server::bind_reuseport(tls.listen, workers).map_err(listen_error(tls.listen))?;
            let address = listeners[0].local_addr().map_err(listen_error(tls.listen))?;
            (listeners, Some(address))
        }
        None => (Vec::new(), None),
    };

    let (stop, stopped) = watch::channel(false);
    let mut threads =
        server::start_workers(shared.clone(), listeners, None, stopped.clone()).map_err(StartError::Threads)?;
    if let Some(certificates) = &certificates {
        threads.extend(
            server::start_workers(shared.clone(), tls_listeners, Some(certificates.clone()), stopped.clone())
                .map_err(StartError::Threads)?,
        );
    }
    let admin_certificates = match &options.admin_tls {
        Some(tls) => Some(Arc::new(tls::Certificates::load_for_admin(tls.cert.clone(), tls.key.clone())?)),
        None => None,
    };
    let control_shared = shared.clone();
    let control = std::thread::Builder::new()
        .name("edge-control".into())
        .spawn(move || run_control(control_shared, admin_listener, certificates, admin_certificates, stopped))
        .map_err(StartError::Threads)?;
    threads.push(control);
    if restored {
        shared.record_event("*", "restored", "the edge restarted with its persisted routing table".into());
    }
    Ok(EdgeHandle { address, admin_address, tls_address, restored, shared, stop, threads })
}

/// The admin API, the health checker and certificate reloads, on one small runtime of their own.
fn run_control(
    shared: Arc<Shared>,
    admin_listener: std::net::TcpListener,
    certificates: Option<Arc<tls::Certificates>>,
    admin_certificates: Option<Arc<tls::Certificates>>,
    stop: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("edge control runtime: {err}");
            return;
        }
    };
    runtime.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(admin_listener) else { return };
        // The edge's own loops, stopped by its `stop` signal.
        #[allow(clippy::disallowed_methods)]
        let health = tokio::spawn(health::run(shared.clone(), stop.clone()));
        if let Some(certificates) = certificates {
            // The edge's own loops, stopped by its `stop` signal.
            #[allow(clippy::disallowed_methods)]
            tokio::spawn(reload_certificates(shared.clone(), certificates, stop.clone()));
        }
        let mut admin_stop = stop.clone();
        let shutdown = async move {
            let _ = admin_stop.changed().await;
        };
        let router = admin::router(shared.clone());
        let listener = admin::guard::GuardedListener::new(listener, shared.settings.limits.admin.clone());
        let served = match admin_certificates {
            None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await,
            Some(certificates) => {
                // The edge's own loops, stopped by its `stop` signal.
                #[allow(clippy::disallowed_methods)]
                tokio::spawn(reload_certificates(shared, certificates.clone(), stop.clone()));
                match tls::AdminTlsListener::start(listener, certificates) {
                    Ok(listener) => axum::serve(listener, router).with_graceful_shutdown(shutdown).await,
                    Err(err) => Err(err),
                }
            }
        };
        if let Err(err) = served {
            tracing::error!("edge admin API: {err}");
        }
        let _ = health.await;
    });
}

/// Checks the certificate files every second; a change takes effect for new connections.
async fn reload_certificates(
    shared: Arc<Shared>,
    certificates: Arc<tls::Certificates>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        match certificates.reload_if_changed() {
            Ok(true) => shared.record_event("*", "tls.reloaded", "the TLS certificate was reloaded".into()),
            Ok(false) => {}
            Err(err) => shared.record_event("*", "tls.reload_failed", format!("kept the previous certificate: {err}")),
        }
    }
}
