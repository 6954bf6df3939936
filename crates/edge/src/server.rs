//! The data plane's threads: one current-thread runtime per worker, each accepting on its own
//! `SO_REUSEPORT` socket and serving its connections start to finish with no cross-thread
//! wakeups (the design `../shared/EDGE-PERF.md` measured fastest here).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::framing::ScanReads;
use crate::limits::{self, Finishing, Tracked, TrackedIo, Worker, close};
use crate::proxy::{self, Connection};
use crate::shared::Shared;
use crate::tls::Certificates;

/// Binds `count` sockets to one address with `SO_REUSEPORT` (port 0 picks a free port for all).
pub fn bind_reuseport(address: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut bound = address;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&bound.into())?;
        socket.listen(4096)?;
        socket.set_nonblocking(true)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Starts one worker thread per listener (serving TLS when `certificates` is set); they stop
/// accepting when `stop` turns true.
///
/// A worker whose accept loop panics is restarted on a fresh runtime with the same listener: its
/// `SO_REUSEPORT` socket stays open meanwhile (the kernel keeps queueing its share of new
/// connections in the backlog), so nothing is refused, and the other workers' connections are
/// untouched; only the panicking worker's own connections are lost. Aborting the process instead
/// would cut every worker's connections and rely on a supervisor to bring the edge back.
pub fn start_workers(
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    certificates: Option<Arc<Certificates>>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<Vec<std::thread::JoinHandle<()>>> {
    listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            let shared = shared.clone();
            let stop = stop.clone();
            let certificates = certificates.clone();
            let name =
                if certificates.is_some() { format!("edge-tls-{index}") } else { format!("edge-worker-{index}") };
            std::thread::Builder::new().name(name.clone()).spawn(move || {
                let worker = shared.connections.worker();
                loop {
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_worker(&shared, &listener, certificates.clone(), &worker, stop.clone())
                    }));
                    if *stop.borrow() {
                        return;
                    }
                    match run {
                        Ok(Ok(())) => return,
                        Ok(Err(err)) => {
                            tracing::error!("{name} cannot run: {err}; trying again in a second");
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                        Err(_) => {
                            shared.connections.record_restart(&worker);
                            shared.record_event(
                                "*",
                                "worker.restarted",
                                format!("{name} panicked; restarted on the same socket"),
                            );
                        }
                    }
                }
            })
        })
        .collect()
}

/// One run of a worker: a current-thread runtime accepting on (a duplicate of) `listener` and
/// sweeping its connections' timeouts, then draining once `stop` is set.
fn run_worker(
    shared: &Arc<Shared>,
    listener: &std::net::TcpListener,
    certificates: Option<Arc<Certificates>>,
    worker: &Arc<Worker>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // A duplicate, so that the socket itself outlives a run that panics.
    let listener = listener.try_clone()?;
    let drain_timeout = shared.settings.drain_timeout;
    let graceful = Drain::new();
    runtime.spawn(limits::sweep(shared.connections.clone(), worker.clone(), stop.clone()));
    runtime.block_on(accept_loop(shared.clone(), listener, certificates, worker, &graceful, stop));
    // Stopped accepting: let requests in flight finish (idle keep-alive connections are
    // closed at once), for at most the drain timeout.
    runtime.block_on(async {
        let _ = tokio::time::timeout(drain_timeout, graceful.shutdown()).await;
    });
    Ok(())
}

/// The number of request headers hyper accepts unless told otherwise.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Tells a worker's connections to finish what they are doing and close, and waits until they
/// have. hyper-util's `GracefulShutdown` does the same but polls its stop signal on every poll of
/// every connection (measured: ~480 instructions a request); here a connection polls it once to
/// be woken by it, and again only after a shared flag says a stop was asked for.
struct Drain {
    stopping: Arc<AtomicBool>,
    sender: watch::Sender<()>,
}

/// A connection's side of a [`Drain`]. Each holds a receiver: all dropped, all are done.
struct DrainWatcher {
    stopping: Arc<AtomicBool>,
    signal: watch::Receiver<()>,
}

impl Drain {
    fn new() -> Self {
        Drain { stopping: Arc::new(AtomicBool::new(false)), sender: watch::Sender::new(()) }
    }

    fn watcher(&self) -> DrainWatcher {
        DrainWatcher { stopping: self.stopping.clone(), signal: self.sender.subscribe() }
    }

    /// Asks every connection to finish, and waits until they all have.
    async fn shutdown(self) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.sender.send(());
        self.sender.closed().await;
    }
}

impl DrainWatcher {
    /// Serves `connection` until it ends; after [`Drain::shutdown`], or when its limits ask it
    /// to close gracefully, it is shut down gracefully; when they ask to cut it, it is dropped
    /// (which closes the socket) and `None` is returned.
    async fn watch<C: GracefulConnection>(self, connection: C, tracked: &Tracked) -> Option<C::Output> {
        let DrainWatcher { stopping, mut signal } = self;
        let mut connection = std::pin::pin!(connection);
        let mut stop = std::pin::pin!(signal.changed());
        let (mut registered, mut stopped, mut shut) = (false, false, false);
        std::future::poll_fn(|cx| {
            match tracked.poll_close(cx) {
                close::KEEP => {}
                close::GRACEFUL => {
                    if !shut {
                        shut = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
                _ => return Poll::Ready(None),
            }
            // The first poll leaves the task's waker with the signal; after that the signal is
            // polled only once the flag is up (it is raised before the signal is sent).
            if !stopped && (!registered || stopping.load(Ordering::Acquire)) {
                registered = true;
                if stop.as_mut().poll(cx).is_ready() {
                    stopped = true;
                    if !shut {
                        shut = true;
                        connection.as_mut().graceful_shutdown();
                    }
                }
            }
            connection.as_mut().poll(cx).map(Some)
        })
        .await
    }
}

/// Set once the first connection has been accepted, for the failpoint that fires there.
static FIRST_ACCEPTED: AtomicBool = AtomicBool::new(false);

async fn accept_loop(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    certificates: Option<Arc<Certificates>>,
    worker: &Arc<Worker>,
    graceful: &Drain,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!("edge listener: {err}");
            return;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let settings = &shared.settings;
    // No hyper header read timeout: the limits' sweep times the head from the connection's
    // first byte (hyper's starts only once its HTTP/1 parser runs, after the protocol sniff, and
    // arms a timer per request).
    builder
        .http1()
        .max_buf_size(settings.max_header_bytes.max(8192))
        // Headers and body copied into one buffer and written with one `write`: measured 2.4%
        // more requests a second than hyper's default vectored writes for small responses
        // (bench/README.md), at the cost of a copy of large bodies that nginx makes as well.
        .writev(false);
    // hyper's own limit is 100 headers; naming it explicitly makes hyper allocate and fill a
    // header index array on every parse (measured: ~1,700 instructions a request), so it is
    // set only when it differs.
    if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(settings.max_headers);
    }
    let h2 = &settings.limits.http2;
    builder
        .http2()
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_pending_accept_reset_streams(h2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(h2.max_local_error_reset_streams)
        .max_frame_size(h2.max_frame_size)
        .keep_alive_interval(h2.keepalive_interval)
        .keep_alive_timeout(h2.keepalive_timeout)
        .timer(TokioTimer::new());
    let builder = Arc::new(builder);
    // The header-read timeout runs from the accept, the handshake included; the sweep cannot cut
    // a handshake in progress, so the shorter of the two bounds it here.
    let tls_handshake_timeout = settings.limits.tls_handshake_timeout.min(settings.limits.header_read_timeout);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, client)) = accepted else {
                    // Out of file descriptors and the like: pause rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                };
                if !FIRST_ACCEPTED.load(Ordering::Relaxed) && !FIRST_ACCEPTED.swap(true, Ordering::Relaxed) {
                    windlass_failpoint::hit("edge.worker.first_accept");
                }
                // At the cap with nothing idle to close, or past the per-address cap: refused,
                // closed at once (the stream is dropped).
                let Ok(admission) = shared.connections.admit(worker, client.ip()) else { continue };
                let _ = stream.set_nodelay(true);
                let tracked = admission.tracked().clone();
                let io = TrackedIo::new(stream, admission);
                let shared = shared.clone();
                let builder = builder.clone();
                let certificates = certificates.clone();
                let watcher = graceful.watcher();
                // A per-connection task, owned by its worker (graceful watcher).
                #[allow(clippy::disallowed_methods)]
                tokio::spawn(async move {
                    let Some(certificates) = certificates else {
                        let connection = Arc::new(Connection::new(client, "http"));
                        let io = ScanReads::new(io, connection.length_lines.clone());
                        let service = tracked_service(shared, connection, tracked.clone());
                        let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
                        let _ = watcher.watch(connection, &tracked).await;
                        return;
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(certificates.current());
                    let Ok(Ok(tls)) = tokio::time::timeout(tls_handshake_timeout, acceptor.accept(io)).await else {
                        return;
                    };
                    let connection = Arc::new(Connection::new(client, "https"));
                    let tls = ScanReads::new(tls, connection.length_lines.clone());
                    let service = tracked_service(shared, connection, tracked.clone());
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned();
                    let _ = watcher.watch(connection, &tracked).await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}

/// The proxy as a connection's service, telling the connection's [`Tracked`] when a request
/// starts and when its response is done (or switched protocols).
fn tracked_service(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    tracked: Arc<Tracked>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Finishing<proxy::Body>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Finishing<proxy::Body>>, Infallible>> + Send,
> + Clone {
    service_fn(move |request: Request<Incoming>| {
        let active = tracked.request_started(request.version() == hyper::Version::HTTP_2);
        let handled = proxy::handle(shared.clone(), connection.clone(), request);
        async move {
            let Ok(response) = handled.await;
            if response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS {
                active.upgraded();
            }
            Ok(response.map(|body| Finishing::new(body, active)))
        }
    })
}
