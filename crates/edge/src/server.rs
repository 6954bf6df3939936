//! The data plane's threads: one current-thread runtime per worker, each accepting on its own
//! `SO_REUSEPORT` socket and serving its connections start to finish with no cross-thread
//! wakeups (the design `../shared/EDGE-PERF.md` measured fastest here).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulConnection;
use socket2::{Domain, Socket, Type};
use tokio::sync::watch;

use crate::framing::ScanReads;
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
            std::thread::Builder::new().name(name).spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        tracing::error!("edge worker {index} cannot start: {err}");
                        return;
                    }
                };
                let drain_timeout = shared.settings.drain_timeout;
                let graceful = Drain::new();
                runtime.block_on(accept_loop(shared, listener, certificates, &graceful, stop));
                // Stopped accepting: let requests in flight finish (idle keep-alive connections are
                // closed at once), for at most the drain timeout.
                runtime.block_on(async {
                    let _ = tokio::time::timeout(drain_timeout, graceful.shutdown()).await;
                });
            })
        })
        .collect()
}

/// hyper's timer, for the header read timeout, which hyper arms anew for every request on a
/// connection (a new timer, inserted into and removed from tokio's timer wheel each time). Here
/// the timers are recycled per worker thread: one whose deadline lies within
/// [`RECYCLED_SLACK`] after the one asked for is reused as it is, without touching the wheel, so
/// a timeout fires up to that much late.
#[derive(Debug, Clone, Copy)]
struct RecyclingTimer;

/// How much later than asked a recycled timer may fire.
const RECYCLED_SLACK: std::time::Duration = std::time::Duration::from_secs(1);
/// Timers kept per worker thread.
const RECYCLED_KEPT: usize = 64;

thread_local! {
    static RECYCLED: std::cell::RefCell<Vec<Pin<Box<tokio::time::Sleep>>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl hyper::rt::Timer for RecyclingTimer {
    fn sleep(&self, duration: std::time::Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let earliest = tokio::time::Instant::from_std(deadline);
        let latest = earliest + RECYCLED_SLACK;
        let sleep = match RECYCLED.with(|kept| kept.borrow_mut().pop()) {
            Some(sleep) if sleep.deadline() >= earliest && sleep.deadline() <= latest => sleep,
            Some(mut sleep) => {
                sleep.as_mut().reset(latest);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(latest)),
        };
        Box::pin(RecycledSleep(Some(sleep)))
    }
}

/// A timer handed to hyper, given back to its thread's pool when hyper drops it.
struct RecycledSleep(Option<Pin<Box<tokio::time::Sleep>>>);

impl Future for RecycledSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.0.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
}

impl hyper::rt::Sleep for RecycledSleep {}

impl Drop for RecycledSleep {
    fn drop(&mut self) {
        if let Some(sleep) = self.0.take() {
            // Outside a worker's runtime (or when the pool is full) it is simply dropped.
            let _ = RECYCLED.try_with(|kept| {
                if let Ok(mut kept) = kept.try_borrow_mut()
                    && kept.len() < RECYCLED_KEPT
                {
                    kept.push(sleep);
                }
            });
        }
    }
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
    /// Serves `connection` until it ends; after [`Drain::shutdown`], it is shut down gracefully.
    async fn watch<C: GracefulConnection>(self, connection: C) -> C::Output {
        let DrainWatcher { stopping, mut signal } = self;
        let mut connection = std::pin::pin!(connection);
        let mut stop = std::pin::pin!(signal.changed());
        let (mut registered, mut stopped) = (false, false);
        std::future::poll_fn(|cx| {
            // The first poll leaves the task's waker with the signal; after that the signal is
            // polled only once the flag is up (it is raised before the signal is sent).
            if !stopped && (!registered || stopping.load(Ordering::Acquire)) {
                registered = true;
                if stop.as_mut().poll(cx).is_ready() {
                    stopped = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
            connection.as_mut().poll(cx)
        })
        .await
    }
}

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn accept_loop(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    certificates: Option<Arc<Certificates>>,
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
    builder
        .http1()
        .max_buf_size(settings.max_header_bytes.max(8192))
        // Headers and body copied into one buffer and written with one `write`: measured 2.4%
        // more requests a second than hyper's default vectored writes for small responses
        // (bench/README.md), at the cost of a copy of large bodies that nginx makes as well.
        .writev(false)
        .timer(RecyclingTimer)
        .header_read_timeout(std::time::Duration::from_secs(30));
    // hyper's own limit is 100 headers; naming it explicitly makes hyper allocate and fill a
    // header index array on every parse (measured: ~1,700 instructions a request), so it is
    // set only when it differs.
    if settings.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(settings.max_headers);
    }
    builder.http2().max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, client)) = accepted else {
                    // Out of file descriptors and the like: pause rather than spin.
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let builder = builder.clone();
                let certificates = certificates.clone();
                let watcher = graceful.watcher();
                // A per-connection task, owned by its worker (graceful watcher).
                #[allow(clippy::disallowed_methods)]
                tokio::spawn(async move {
                    let Some(certificates) = certificates else {
                        let connection = Arc::new(Connection::new(client, "http"));
                        let stream = ScanReads::new(stream, connection.length_lines.clone());
                        let service = service_fn(move |request| proxy::handle(shared.clone(), connection.clone(), request));
                        let _ = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned()).await;
                        return;
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(certificates.current());
                    let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                        return;
                    };
                    let connection = Arc::new(Connection::new(client, "https"));
                    let tls = ScanReads::new(tls, connection.length_lines.clone());
                    let service = service_fn(move |request| proxy::handle(shared.clone(), connection.clone(), request));
                    let _ = watcher.watch(builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned()).await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}
