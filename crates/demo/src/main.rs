//! `windlass-demo`: a small HTTP service in the spirit of podinfo, which every Windlass test and
//! example deploys. It answers `/health`, `/ready`, `/version`, `/echo`, `/sleep?ms=`, a WebSocket
//! echo at `/ws`, business-style `POST /emails` and `POST /payments`, and Prometheus `/metrics`.
//!
//! Faults (latency, a share of 500s, failing health, refused connections, slow start) are set by
//! environment variables at start and switched at run time on a separate admin port, so that a
//! test can turn "refuse connections on the main port" off again.
//!
//! Environment: `PORT` (default 9898), `HOST` (default 127.0.0.1), `ADMIN_PORT`, `VERSION`,
//! `SLOW_START` ("3s"), `FAULT_LATENCY`, `FAULT_ERROR_RATE`, `FAULT_HEALTH`, `FAULT_REFUSE`,
//! `FAULT_PAYMENT_FAILURE_RATE`; or sockets passed by `LISTEN_FDS` (fd 3 main, fd 4 admin).
//!
//! On SIGTERM it stops accepting, finishes the requests in flight (up to 30 s), then exits.

// The demo service, not the control plane: its tasks live as long as it.
#![allow(clippy::disallowed_methods)]

mod app;
mod faults;
mod listen;

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

use crate::faults::Faults;
use crate::listen::Listener;

/// How long in-flight requests may take to finish after SIGTERM.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("windlass-demo: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("windlass-demo: {err}");
            ExitCode::FAILURE
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

async fn run() -> Result<(), String> {
    let faults = Faults::from_env(env)?;
    let slow_start = match env("SLOW_START") {
        Some(text) => windlass_config::units::Duration::parse(&text).map_err(|e| format!("SLOW_START: {e}"))?.as_std(),
        None => Duration::ZERO,
    };
    let (main_listener, admin_listener) = listeners()?;
    let version = env("VERSION").unwrap_or_else(|| "dev".into());
    let main_listener = Arc::new(main_listener);
    let demo = app::Demo::new(version.clone(), build_id(), faults, slow_start, main_listener.clone())
        .map_err(|e| format!("cannot refuse connections on the main port: {e}"))?;

    // Signal handlers go in before the demo says it is ready: a SIGTERM that arrives right after
    // the announcement must mean "drain", never the default "die at once".
    let signals = Signals::install()?;
    // The supervisor and tests read these lines to learn where the demo listens.
    println!("windlass-demo {version} listening on {}", main_listener.address());
    if let Some(admin) = &admin_listener {
        println!("admin listening on {}", admin.address());
    }

    let (stop_tx, stop) = watch::channel(false);
    let graceful = Arc::new(GracefulShutdown::new());
    let main_server = tokio::spawn(serve(
        main_listener,
        app::main_router(demo.clone()),
        demo.refuse.subscribe(),
        stop.clone(),
        graceful.clone(),
    ));
    let admin_server = admin_listener.map(|listener| {
        // The admin port never refuses; its switch lives as long as its server.
        let (never_switched, not_refusing) = watch::channel(false);
        let server =
            serve(Arc::new(listener), app::admin_router(demo.clone()), not_refusing, stop.clone(), graceful.clone());
        tokio::spawn(async move {
            let result = server.await;
            drop(never_switched);
            result
        })
    });

    signals.wait().await;
    let _ = stop_tx.send(true);
    for server in std::iter::once(main_server).chain(admin_server) {
        match server.await {
            Ok(result) => result.map_err(|e| format!("server: {e}"))?,
            Err(err) => return Err(format!("server task failed: {err}")),
        }
    }
    let graceful = Arc::try_unwrap(graceful).map_err(|_| "connections still shared at shutdown".to_owned())?;
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        eprintln!("windlass-demo: requests still in flight after {DRAIN_TIMEOUT:?}; exiting anyway");
    }
    Ok(())
}

fn listeners() -> Result<(Listener, Option<Listener>), String> {
    let mut inherited = listen::inherited(env).map_err(|e| e.to_string())?.into_iter();
    if let Some(main) = inherited.next() {
        return Ok((main, inherited.next()));
    }
    let host: IpAddr =
        env("HOST").unwrap_or_else(|| "127.0.0.1".into()).parse().map_err(|_| "HOST is not an IP address")?;
    let port = |name: &str, default: Option<u16>| -> Result<Option<u16>, String> {
        match env(name) {
            Some(text) => text.parse().map(Some).map_err(|_| format!("{name}={text} is not a port number")),
            None => Ok(default),
        }
    };
    let bind = |port: u16| {
        Listener::bind(SocketAddr::new(host, port)).map_err(|e| format!("cannot listen on {host}:{port}: {e}"))
    };
    let main = bind(port("PORT", Some(9898))?.unwrap_or(9898))?;
    let admin = port("ADMIN_PORT", None)?.map(bind).transpose()?;
    Ok((main, admin))
}

/// Accepts connections until told to stop. While `refuse` says so, the socket is shut (by
/// whoever switched it) and the loop holds no tokio listener on it.
async fn serve(
    listener: Arc<Listener>,
    router: Router,
    mut refuse: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
) -> std::io::Result<()> {
    loop {
        while *refuse.borrow_and_update() {
            tokio::select! {
                changed = refuse.changed() => if changed.is_err() { return Ok(()) },
                _ = stop.changed() => return Ok(()),
            }
        }
        let tcp = listener.to_tokio()?;
        loop {
            tokio::select! {
                accepted = tcp.accept() => match accepted {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let service = TowerToHyperService::new(router.clone());
                        let connection = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        tokio::spawn(graceful.watch(connection));
                    }
                    // A shut socket, too many open files and the like: back off briefly rather
                    // than spin; a refusal arrives through `refuse`.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                },
                // Any switch, even one already undone, rebuilds the tokio listener: a socket that
                // was shut and reopened needs a fresh registration with the reactor.
                changed = refuse.changed() => if changed.is_err() { return Ok(()) } else { break },
                _ = stop.changed() => return Ok(()),
            }
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            terminate: signal(SignalKind::terminate()).map_err(|e| e.to_string())?,
            interrupt: signal(SignalKind::interrupt()).map_err(|e| e.to_string())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// Identifies this very binary: a hash of the executable's bytes, so that a rebuilt binary has a
/// different id even with the same VERSION (a rollback can prove it runs the old code).
fn build_id() -> String {
    let hash = std::fs::read("/proc/self/exe").map(|bytes| fnv1a(&bytes)).unwrap_or(0);
    match option_env!("WINDLASS_DEMO_BUILD_TAG") {
        Some(tag) => format!("{hash:016x}-{tag}"),
        None => format!("{hash:016x}"),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
