//! Where the API is served: plain TCP, or TLS (rustls, TLS 1.2 and 1.3, HTTP/1.1 by ALPN) when
//! `[server] tls = { cert, key }` is configured. Both go through one accept loop and hyper's
//! HTTP/1.1 connection, so the HTTP handling and the limits ([`Limits`]) are the same on either:
//! at most `max_connections` open at once (one more is answered 503 and closed at once, TLS
//! handshakes included in the count), a request head must arrive whole within
//! `header_read_timeout` of the connection waiting for it (a half-sent header, a silent
//! connection and an idle keep-alive are all closed by it), and a TLS handshake within
//! [`HANDSHAKE_TIMEOUT`]. What every request gets (a body size limit, a body read deadline, a
//! deadline for the answer, errors as JSON) is [`guard_requests`]. The certificate is read at
//! start: a new one takes a restart.
//!
//! This module binds and accepts; it must not know about routes or the control plane. The key
//! file must be private (no group or world bits), as the age identity is: whoever reads it can
//! impersonate the server to every CLI and token holder.

use std::future::Future as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// A client that has not finished its TLS handshake by then is dropped (slowloris).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[server] tls: cannot read the certificate {}: {source}", path.display())]
    Certificate { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("[server] tls: {} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("[server] tls: cannot read the private key {}: {source}", path.display())]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("[server] tls: cannot read the private key {}: {source}", path.display())]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error(
        "[server] tls: the private key {} is accessible by other users (mode {mode:03o}), so Windlass refuses \
         to use it; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyNotPrivate { path: PathBuf, mode: u32 },
    #[error("[server] tls: the certificate {} and key {} do not make a TLS config: {source}", cert.display(), key.display())]
    Config { cert: PathBuf, key: PathBuf, source: rustls::Error },
}

/// The certificate and key files, already resolved against the config file's directory.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The `[server] tls` of `config`, with paths relative to `config_path`'s directory.
    pub fn from_config(config: &windlass_config::Config, config_path: &Path) -> Option<TlsFiles> {
        let tls = config.server.tls.as_ref()?;
        let dir = windlass_config::config_dir(config_path);
        Some(TlsFiles { cert: dir.join(&tls.cert), key: dir.join(&tls.key) })
    }
}

/// Refuses a key file that other users may read or write (only regular files are checked).
fn check_key_private(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| TlsError::KeyFile { path: path.to_owned(), source })?;
    let mode = meta.permissions().mode() & 0o777;
    if meta.is_file() && mode & 0o077 != 0 {
        return Err(TlsError::KeyNotPrivate { path: path.to_owned(), mode });
    }
    Ok(())
}

/// Reads the certificate chain and the (private) key into a server config for HTTP/1.1.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let (cert, key) = (&files.cert, &files.key);
    check_key_private(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|source| TlsError::Certificate { path: cert.clone(), source })?
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Certificate { path: cert.clone(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert.clone() });
    }
    let private_key =
        PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key { path: key.clone(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, private_key))
        .map_err(|source| TlsError::Config { cert: cert.clone(), key: key.clone(), source })?;
    // The API is served by HTTP/1.1 only (axum's http1 feature).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The API listener's limits. [`Limits::default`] is what the server uses; tests shorten them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections open at once, TLS handshakes in progress included. The API's clients are a
    /// team's CLIs, CI jobs and the PagerDuty hook: a few dozen at most, each stream of deploy
    /// events one more; beyond this someone is flooding the port.
    pub max_connections: usize,
    /// From the moment a connection waits for a request head (its start, or the end of the
    /// previous answer on a keep-alive connection) until the head is in whole. hyper starts it
    /// at that moment, so it is the idle keep-alive timeout as well.
    pub header_read_timeout: Duration,
    /// The largest request body, in bytes; a larger one is answered 413.
    pub max_body: usize,
    /// From the request head until its body is in whole; a body still arriving then fails the
    /// request (400) and the connection.
    pub body_read_timeout: Duration,
    /// From the request head until the answer's head (a stream of events is answered at once,
    /// and then streams as long as it needs). What a request started goes on after it: work
    /// is owned by the server, never by the request.
    pub request_deadline: Duration,
    /// Connections open at once from one client address: one address cannot take every place.
    pub max_per_client: usize,
    /// How long a write may wait on a client that does not read: a client that pipelines
    /// requests and never reads the answers (or stops reading a stream of events) would
    /// otherwise hold its connection for ever, since hyper reads no new head while an answer
    /// is unwritten.
    pub write_stall_timeout: Duration,
}

/// See [`Limits::max_connections`].
pub const MAX_CONNECTIONS: usize = 256;

/// See [`Limits::header_read_timeout`]: 30 s is far beyond a real client's head (sent in one
/// write) and short enough that a slowloris holding the cap gains little.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// See [`Limits::max_body`]: the API's bodies are small JSON documents (a deploy's options, a
/// silence, a PagerDuty webhook of a few kB); 1 MiB leaves room and bounds what a caller can make
/// the server hold (the cap on connections times this).
pub const MAX_BODY: usize = 1024 * 1024;

/// See [`Limits::body_read_timeout`]: a real client sends its small body with the head.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// See [`Limits::request_deadline`]: the slowest answer is `scale`'s, which waits for the new
/// instances to pass their health checks.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10 * 60);

/// See [`Limits::max_per_client`]: a team behind one NAT address runs a few CLIs and streams;
/// 32 leaves them room and keeps one address to an eighth of [`MAX_CONNECTIONS`].
pub const MAX_PER_CLIENT: usize = 32;

/// See [`Limits::write_stall_timeout`]: a reading client takes a write within milliseconds;
/// a stream of deploy events sends something at least every 15 s.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_body: MAX_BODY,
            body_read_timeout: BODY_READ_TIMEOUT,
            request_deadline: REQUEST_DEADLINE,
            max_per_client: MAX_PER_CLIENT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }
}

/// A bound listener, plain or TLS, and the address it is bound to.
pub struct Bound {
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Bound {
    /// Binds `address`; with `tls`, the certificate and key are read (and checked) first, so a
    /// bad pair stops the server before it listens.
    pub async fn bind(address: SocketAddr, tls: Option<&TlsFiles>) -> Result<Bound, BindError> {
        let config = tls.map(server_config).transpose()?;
        let tcp = TcpListener::bind(address).await.map_err(|source| BindError::Listen { address, source })?;
        Ok(Bound { tcp, tls: config.map(|config| tokio_rustls::TlsAcceptor::from(Arc::new(config))) })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// `https` or `http`, for what the server announces.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves `app` within the default [`Limits`] until this future is dropped (which closes
    /// every connection: they are owned by it). A failing `accept` (out of file descriptors)
    /// pauses accepting; it does not end serving.
    pub async fn serve(self, app: axum::Router) -> std::io::Result<()> {
        self.serve_within(app, Limits::default()).await
    }

    /// [`Bound::serve`] within `limits`.
    pub async fn serve_within(self, app: axum::Router, limits: Limits) -> std::io::Result<()> {
        let app = guard_requests(app, &limits);
        let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        let per_client = PerClient::new(limits.max_per_client.max(1));
        // Every connection is a task of this set: dropping the serve future (the server's
        // shutdown aborts it) ends them all, a deploy's event stream included.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, client)) => {
                        let Ok(place) = places.clone().try_acquire_owned() else {
                            refuse(stream, client, self.tls.is_some(), TOO_MANY_CONNECTIONS);
                            continue;
                        };
                        let Some(client_place) = per_client.take(client.ip()) else {
                            refuse(stream, client, self.tls.is_some(), TOO_MANY_FROM_CLIENT);
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let stream = StallGuarded::new(stream, limits.write_stall_timeout);
                        let (app, tls, header_read_timeout) = (app.clone(), self.tls.clone(), limits.header_read_timeout);
                        connections.spawn(async move {
                            serve_connection(stream, client, tls, app, header_read_timeout).await;
                            drop((place, client_place));
                        });
                    }
                    // Out of file descriptors and the like: pause rather than spin. Connections
                    // go on meanwhile (they are tasks); only accepting waits.
                    Err(err) => {
                        tracing::warn!(%err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reaps ended connections, so the set holds only open ones.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }
}

/// Connections open per client address, each counted by a [`ClientPlace`] while it lives.
#[derive(Clone)]
struct PerClient {
    open: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    max: usize,
}

impl PerClient {
    fn new(max: usize) -> Self {
        PerClient { open: Arc::default(), max }
    }

    /// A place for one more connection from `ip`, or none when it holds `max` already.
    fn take(&self, ip: std::net::IpAddr) -> Option<ClientPlace> {
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientPlace { per_client: self.clone(), ip })
    }
}

/// One connection's place in its address's count, given back when dropped.
struct ClientPlace {
    per_client: PerClient,
    ip: std::net::IpAddr,
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut open = self.per_client.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection whose writes fail with `TimedOut` once one has waited `limit` on a client
/// that does not read. Reads are bounded elsewhere (the header-read timeout, the body
/// deadline); this bounds the other direction, so no client holds a place by not reading.
struct StallGuarded<S> {
    inner: S,
    limit: Duration,
    /// Set when a write first waits; cleared when one goes through.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallGuarded<S> {
    fn new(inner: S, limit: Duration) -> Self {
        StallGuarded { inner, limit, stalled: None }
    }

    /// After a write that waited: `TimedOut` once the stall has lasted `limit`.
    fn check_stall(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<usize>> {
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client has read nothing of the answer for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallGuarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallGuarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.check_stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.check_stall(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.check_stall(cx).map_ok(|_| ()),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.check_stall(cx).map_ok(|_| ()),
            ready => ready,
        }
    }
}

/// What a connection beyond the cap is told before it is closed, as the API's JSON error.
const TOO_MANY_CONNECTIONS: &str =
    r#"{"error":"the server has too many open connections; try again in a few seconds"}"#;

/// What a connection beyond the cap of its client address is told.
const TOO_MANY_FROM_CLIENT: &str =
    r#"{"error":"too many open connections from your address; close some and try again"}"#;

/// Closes a connection beyond the cap at once: a 503 on plain HTTP (a TLS client would need a
/// handshake first, which is what the cap is there to spare), nothing on TLS.
fn refuse(stream: TcpStream, client: SocketAddr, tls: bool, why: &str) {
    tracing::debug!(%client, "refused a connection: too many open");
    if !tls {
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n{why}",
            why.len()
        );
        // Written without waiting (a fresh socket's send buffer takes it): a flood must not tie
        // up the accept loop.
        let _ = stream.try_write(answer.as_bytes());
    }
    drop(stream);
}

/// One connection: the TLS handshake (if any) within [`HANDSHAKE_TIMEOUT`], then HTTP/1.1
/// requests until the client closes, a head is late, or an error.
async fn serve_connection(
    stream: StallGuarded<TcpStream>,
    client: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    header_read_timeout: Duration,
) {
    match tls {
        None => serve_http(stream, client, app, header_read_timeout).await,
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => serve_http(stream, client, app, header_read_timeout).await,
            Ok(Err(err)) => tracing::debug!(%client, %err, "TLS handshake failed"),
            Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
        },
    }
}

async fn serve_http<S>(stream: S, client: SocketAddr, app: axum::Router, header_read_timeout: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Each request carries the address of its connection's client (axum's `ConnectInfo`), so
    // audit records say where a call came from.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(axum::extract::ConnectInfo(client));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, request).await }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(err) = served {
        // A late head, a reset, a malformed request: the client's doing, not the server's.
        tracing::debug!(%client, %err, "API connection ended");
    }
}

/// What every request to the API gets, whatever its route: a body of at most `max_body` bytes
/// (413 at once when its `Content-Length` says more, or once more has arrived), read within
/// `body_read_timeout`, an answer within `request_deadline`, and every error answered as the
/// API's JSON (`{"error": ...}`), axum's own rejections (a malformed query, path or JSON body, a
/// method a path does not take, an unknown path) included.
pub fn guard_requests(app: axum::Router, limits: &Limits) -> axum::Router {
    let app = app
        .layer(axum::middleware::from_fn_with_state(limits.clone(), within_limits))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body));
    // Around the whole router as one service, not as a layer of its routes: a route's 405 gets
    // its `Allow` header outside its layers.
    axum::Router::new().fallback_service(app).layer(axum::middleware::from_fn_with_state(limits.max_body, json_errors))
}

/// The body failed its read deadline ([`Limits::body_read_timeout`]).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive whole within {0:?}")]
struct BodyTooSlow(Duration);

async fn within_limits(
    axum::extract::State(limits): axum::extract::State<Limits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use futures_util::StreamExt as _;
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limits.max_body as u64) {
        return body_too_large(limits.max_body);
    }
    let (parts, body) = request.into_parts();
    // The body as a stream that fails at the deadline: whoever reads it (a handler's `Bytes`)
    // gets the error, and nothing is read here (a body is read after the token check).
    let deadline = tokio::time::Instant::now() + limits.body_read_timeout;
    let timeout = limits.body_read_timeout;
    let chunks = futures_util::stream::unfold(Some(body.into_data_stream()), move |chunks| async move {
        let mut chunks = chunks?;
        match tokio::time::timeout_at(deadline, chunks.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(chunks))),
            Ok(Some(Err(err))) => Some((Err(axum::BoxError::from(err)), None)),
            Ok(None) => None,
            Err(_) => Some((Err(axum::BoxError::from(BodyTooSlow(timeout))), None)),
        }
    });
    let request = axum::extract::Request::from_parts(parts, axum::body::Body::from_stream(chunks));
    match tokio::time::timeout(limits.request_deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => api_error(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer within {:?}; what the request started goes on (see `windlass status` and the events)",
                limits.request_deadline
            ),
        ),
    }
}

fn body_too_large(max_body: usize) -> axum::response::Response {
    api_error(
        axum::http::StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than the API takes ({max_body} bytes at most)"),
    )
}

fn api_error(status: axum::http::StatusCode, message: impl std::fmt::Display) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    (status, axum::Json(windlass_api::ErrorBody::new(message))).into_response()
}

/// The most of a plain-text error this reads to put into JSON (axum's rejections are a line).
const MAX_PLAIN_ERROR: usize = 16 * 1024;

/// Turns an error answered in plain text (or with no body) into the API's JSON error: axum's
/// extractors and router answer their rejections so. Answers with another type (an HTML page
/// for a person following an ack link) are left alone.
async fn json_errors(
    axum::extract::State(max_body): axum::extract::State<usize>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let plain = match response.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(value) => value.to_str().is_ok_and(|value| value.starts_with("text/plain")),
    };
    if !plain {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_PLAIN_ERROR).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            match parts.headers.get(header::ALLOW).and_then(|value| value.to_str().ok()) {
                Some(allowed) if !allowed.is_empty() => format!("{path} does not take {method}; it takes {allowed}"),
                _ => format!("{path} does not take {method}"),
            }
        }
        StatusCode::PAYLOAD_TOO_LARGE => return body_too_large(max_body),
        _ if text.is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
        _ => text,
    };
    let mut answer = api_error(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    answer
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
}

impl From<BindError> for crate::ServerError {
    fn from(err: BindError) -> Self {
        match err {
            BindError::Tls(err) => crate::ServerError::Tls(err),
            BindError::Listen { address, source } => crate::ServerError::Listen { address, source },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Limits short enough for a test; each test lengthens nothing it does not wait for.
    fn short() -> Limits {
        Limits {
            max_connections: 8,
            header_read_timeout: Duration::from_millis(300),
            max_body: 1000,
            body_read_timeout: Duration::from_millis(300),
            request_deadline: Duration::from_millis(300),
            max_per_client: 8,
            write_stall_timeout: Duration::from_millis(300),
        }
    }

    #[derive(serde::Deserialize)]
    struct Page {
        #[allow(dead_code)]
        limit: u32,
    }

    #[derive(serde::Deserialize)]
    struct Note {
        #[allow(dead_code)]
        text: String,
    }

    fn app() -> axum::Router {
        axum::Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route("/page", get(|_: axum::extract::Query<Page>| async { "page" }))
            .route("/items/{id}", get(|_: axum::extract::Path<u64>| async { "item" }))
            .route("/notes", post(|_: axum::Json<Note>| async { "noted" }))
            .route("/echo", post(|body: axum::body::Bytes| async move { format!("{} bytes", body.len()) }))
            .route("/never", get(std::future::pending::<&'static str>))
            .route("/big", get(|| async { "x".repeat(1 << 20) }))
            .route("/page.html", get(|| async { (axum::http::StatusCode::GONE, axum::response::Html("<p>gone</p>")) }))
            .route(
                "/stream",
                get(|| async {
                    // Five chunks, 150 ms apart: the whole answer outlasts the header timeout.
                    let chunks = futures_util::stream::unfold(0, |n| async move {
                        if n == 5 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        Some((Ok::<_, std::io::Error>(format!("chunk{n}\n")), n + 1))
                    });
                    axum::body::Body::from_stream(chunks)
                }),
            )
    }

    async fn start(limits: Limits) -> SocketAddr {
        let bound = Bound::bind("127.0.0.1:0".parse().expect("address"), None).await.expect("bind");
        let address = bound.local_addr().expect("address");
        // The test's own task: it ends with the test's runtime.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(bound.serve_within(app(), limits));
        address
    }

    /// Everything the server sends until it closes the connection (a reset counts as closed);
    /// a test that hangs here fails at its guard instead.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buffer = [0u8; 4096];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the server kept the connection open; got so far: {}", String::from_utf8_lossy(&all));
        String::from_utf8_lossy(&all).into_owned()
    }

    async fn exchange(address: SocketAddr, request: &str) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        until_closed(&mut stream).await
    }

    fn status_and_body(answer: &str) -> (u16, String) {
        let status = answer.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        (status, body)
    }

    /// The JSON error of an answer, checking that it is one.
    fn json_error(answer: &str) -> (u16, String) {
        let (status, body) = status_and_body(answer);
        assert!(answer.to_lowercase().contains("content-type: application/json"), "{answer}");
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|err| panic!("{err}: {answer}"));
        let message = value["error"].as_str().unwrap_or_else(|| panic!("no error field: {answer}")).to_owned();
        (status, message)
    }

    #[tokio::test]
    async fn a_half_sent_header_and_an_idle_connection_are_closed() {
        let address = start(short()).await;
        // Half a head, then nothing: the server closes it (no answer is owed).
        let mut slow = TcpStream::connect(address).await.expect("connect");
        slow.write_all(b"GET /hello HTTP/1.1\r\nHost: windlass\r\n").await.expect("write");
        let answer = until_closed(&mut slow).await;
        assert!(!answer.contains("hello"), "{answer}");
        // Nothing at all: closed too.
        let mut silent = TcpStream::connect(address).await.expect("connect");
        until_closed(&mut silent).await;
        // A keep-alive connection answered, then idle: closed after the answer.
        let mut idle = TcpStream::connect(address).await.expect("connect");
        idle.write_all(b"GET /hello HTTP/1.1\r\nHost: windlass\r\n\r\n").await.expect("write");
        let answer = until_closed(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"), "{answer}");
    }

    #[tokio::test]
    async fn an_answer_that_streams_longer_than_the_header_timeout_is_not_cut() {
        let address = start(short()).await;
        let answer = exchange(address, "GET /stream HTTP/1.1\r\nHost: windlass\r\nConnection: close\r\n\r\n").await;
        assert!(answer.contains("chunk0") && answer.contains("chunk4"), "{answer}");
    }

    #[tokio::test]
    async fn the_connection_beyond_the_cap_is_refused_with_503_and_a_freed_place_is_taken() {
        let address =
            start(Limits { max_connections: 2, header_read_timeout: Duration::from_secs(60), ..short() }).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            // Answered: the server has accepted it and holds its place.
            stream.write_all(b"GET /hello HTTP/1.1\r\nHost: windlass\r\n\r\n").await.expect("write");
            let mut buffer = [0u8; 1024];
            let n = stream.read(&mut buffer).await.expect("read");
            assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
            held.push(stream);
        }
        let mut third = TcpStream::connect(address).await.expect("connect");
        let answer = until_closed(&mut third).await;
        let (status, message) = json_error(&answer);
        assert_eq!(status, 503, "{answer}");
        assert!(message.contains("too many open connections"), "{message}");
        assert!(answer.to_lowercase().contains("retry-after: 5"), "{answer}");
        // A place freed is taken again (the server sees the close when it next reads).
        drop(held.pop());
        let mut answered = String::new();
        for _ in 0..200 {
            answered = exchange(address, "GET /hello HTTP/1.1\r\nHost: windlass\r\nConnection: close\r\n\r\n").await;
            if answered.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    }

    #[tokio::test]
    async fn a_client_that_never_reads_its_answers_loses_its_place() {
        // One place, and a head timeout far beyond the test: only the write stall can free it.
        let address =
            start(Limits { max_connections: 1, header_read_timeout: Duration::from_secs(600), ..short() }).await;
        let mut greedy = TcpStream::connect(address).await.expect("connect");
        // Fifty megabytes of answers asked for at once, none read: the server's writes wait.
        let pipelined = "GET /big HTTP/1.1\r\nHost: windlass\r\n\r\n".repeat(50);
        greedy.write_all(pipelined.as_bytes()).await.expect("write");
        let mut answered = String::new();
        for _ in 0..500 {
            answered = exchange(address, "GET /hello HTTP/1.1\r\nHost: windlass\r\nConnection: close\r\n\r\n").await;
            if answered.starts_with("HTTP/1.1 200") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered.starts_with("HTTP/1.1 200"), "the place was never freed: {answered}");
        // The greedy connection was closed: reading it to the end finishes.
        let mut sink = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), greedy.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "the connection that read nothing is still open");
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_place() {
        let address =
            start(Limits { max_per_client: 2, header_read_timeout: Duration::from_secs(60), ..short() }).await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(address).await.expect("connect");
            stream.write_all(b"GET /hello HTTP/1.1\r\nHost: windlass\r\n\r\n").await.expect("write");
            let mut buffer = [0u8; 1024];
            let n = stream.read(&mut buffer).await.expect("read");
            assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
            held.push(stream);
        }
        // The server's cap (8) has room; this address's (2) has not.
        let mut third = TcpStream::connect(address).await.expect("connect");
        let answer = until_closed(&mut third).await;
        let (status, message) = json_error(&answer);
        assert_eq!(status, 503, "{answer}");
        assert!(message.contains("from your address"), "{message}");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_answered_413_as_json() {
        let address = start(short()).await;
        // Declared too large: refused before any of it is read.
        let answer =
            exchange(address, "POST /echo HTTP/1.1\r\nHost: windlass\r\nContent-Length: 1000000000\r\n\r\n").await;
        let (status, message) = json_error(&answer);
        assert_eq!(status, 413, "{answer}");
        assert!(message.contains("1000 bytes at most"), "{message}");
        // Chunked, with no length said: refused once more than the limit has come.
        let chunk = "x".repeat(600);
        let request = format!(
            "POST /echo HTTP/1.1\r\nHost: windlass\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        );
        let answer = exchange(address, &request).await;
        let (status, message) = json_error(&answer);
        assert_eq!(status, 413, "{answer}");
        assert!(message.contains("1000 bytes at most"), "{message}");
        // Within the limit: read whole.
        let answer = exchange(
            address,
            "POST /echo HTTP/1.1\r\nHost: windlass\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert!(answer.ends_with("5 bytes"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_and_an_answer_that_does_not_come_end_in_json_errors() {
        let address = start(short()).await;
        let answer = exchange(address, "POST /echo HTTP/1.1\r\nHost: windlass\r\nContent-Length: 10\r\n\r\nhalf").await;
        let (status, message) = json_error(&answer);
        assert_eq!(status, 400, "{answer}");
        assert!(message.contains("did not arrive whole"), "{message}");
        let answer = exchange(address, "GET /never HTTP/1.1\r\nHost: windlass\r\nConnection: close\r\n\r\n").await;
        let (status, message) = json_error(&answer);
        assert_eq!(status, 503, "{answer}");
        assert!(message.contains("no answer within"), "{message}");
    }

    #[tokio::test]
    async fn every_rejection_of_axum_is_answered_as_json_naming_what_is_wrong() {
        let address = start(short()).await;
        let cases = [
            ("GET /page?limit=many HTTP/1.1", "", 400, "limit"),
            ("GET /page HTTP/1.1", "", 400, "limit"),
            ("GET /items/abc HTTP/1.1", "", 400, "abc"),
            ("POST /notes HTTP/1.1\r\nContent-Type: application/json", "{\"text\": 5}", 422, "text"),
            ("POST /notes HTTP/1.1\r\nContent-Type: application/json", "{not json", 400, "JSON"),
            ("POST /notes HTTP/1.1", "{}", 415, "Content-Type"),
            ("DELETE /hello HTTP/1.1", "", 405, "/hello does not take DELETE; it takes GET,HEAD"),
            ("GET /nowhere HTTP/1.1", "", 404, "Not Found"),
        ];
        for (head, body, want_status, want_text) in cases {
            let request = format!(
                "{head}\r\nHost: windlass\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let answer = exchange(address, &request).await;
            let (status, message) = json_error(&answer);
            assert_eq!(status, want_status, "{head}: {answer}");
            assert!(message.contains(want_text), "{head}: {message}");
        }
        // A page for a person stays a page.
        let answer = exchange(address, "GET /page.html HTTP/1.1\r\nHost: windlass\r\nConnection: close\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 410") && answer.ends_with("<p>gone</p>"), "{answer}");
    }

    #[test]
    fn a_key_other_users_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("server.key");
        std::fs::write(&key, "not a key").expect("write");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let files = TlsFiles { cert: dir.path().join("server.pem"), key: key.clone() };
        let err = server_config(&files).expect_err("refused");
        assert!(matches!(err, TlsError::KeyNotPrivate { mode: 0o644, .. }), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        // Private now: what fails is the missing certificate.
        assert!(matches!(server_config(&files), Err(TlsError::Certificate { .. })));
    }
}
