//! A request's life through the edge:
//!
//! framing checks → route (host, path) → maintenance → rate limit → pool (pinning header,
//! failover, sticky cohort, weights) → instance (power of two choices over healthy ones) →
//! forward on this connection's own upstream connection (a failed *connect* is retried once on
//! another instance) → record status and latency for the service and pool → answer.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::{Either, Full};
use hyper::body::{Body as HttpBody, Bytes, Frame, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::shared::Shared;
use crate::table::{Instance, Pool, Service};

pub type Body = Either<TrackedBody, Full<Bytes>>;

/// The header that pins a request to a pool (with the admin token in [`TOKEN_HEADER`]).
pub const POOL_HEADER: HeaderName = HeaderName::from_static("x-windlass-pool");
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-windlass-token");
// Header names as constants: looking one up by `&str` hashes the string on every request.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// Upstream connections kept per downstream connection and instance (more are opened when an
/// HTTP/2 client multiplexes, but only this many are kept).
const CACHED_PER_INSTANCE: usize = 4;

/// One downstream connection: who it is and the upstream connections it owns.
pub struct Connection {
    pub client: SocketAddr,
    pub scheme: &'static str,
    /// The client's address as a header value, made once per connection.
    client_header: HeaderValue,
    upstreams: Mutex<Vec<(SocketAddr, SendRequest<Incoming>)>>,
}

impl Connection {
    pub fn new(client: SocketAddr, scheme: &'static str) -> Self {
        let client_header =
            HeaderValue::from_str(&client.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Connection { client, scheme, client_header, upstreams: Mutex::new(Vec::new()) }
    }

    fn take(&self, address: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        let index = upstreams.iter().position(|(a, _)| *a == address)?;
        Some(upstreams.swap_remove(index).1)
    }

    fn put(&self, address: SocketAddr, sender: SendRequest<Incoming>) {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(|e| e.into_inner());
        if upstreams.iter().filter(|(a, _)| *a == address).count() < CACHED_PER_INSTANCE {
            upstreams.push((address, sender));
        }
    }
}

/// Counts a request (or WebSocket session) as in flight on an instance until dropped.
pub struct InFlight(Arc<Instance>);

impl InFlight {
    fn new(instance: Arc<Instance>) -> Self {
        instance.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(instance)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream's response body, keeping its request counted in flight until it is done.
pub struct TrackedBody {
    inner: Incoming,
    _in_flight: Option<InFlight>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self._in_flight = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// An answer the edge makes itself.
fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Either::Right(Full::new(body.into())));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, message: String) -> Response<Body> {
    answer(status, "text/plain; charset=utf-8", message + "\n")
}

pub async fn handle(
    shared: Arc<Shared>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let given = request.headers().get(&X_REQUEST_ID).filter(|v| !v.is_empty() && v.len() <= 200).cloned();
    let request_id = match given {
        Some(id) => Some(id),
        None => shared.settings.hot_path.request_id.then(new_request_id),
    };
    // Only what the access log needs is kept, and only when it is on.
    let logged = shared.access_log.is_some().then(|| {
        let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (request.method().clone(), host, request.uri().path().to_owned())
    });
    let mut response = route_and_forward(&shared, &connection, request, request_id.as_ref(), started).await;
    if let (Some(log), Some((method, host, path))) = (&shared.access_log, logged) {
        log.write(&crate::access_log::Entry {
            time_unix_ms: crate::shared::unix_millis(),
            client: connection.client.ip(),
            method: method.as_str(),
            host: &host,
            path: &path,
            status: response.status().as_u16(),
            micros: elapsed_micros(started),
            request_id: request_id.as_ref().and_then(|id| id.to_str().ok()).unwrap_or(""),
        });
    }
    if let Some(id) = request_id {
        response.headers_mut().insert(X_REQUEST_ID, id);
    }
    Ok(response)
}

async fn route_and_forward(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    request: Request<Incoming>,
    request_id: Option<&HeaderValue>,
    started: Instant,
) -> Response<Body> {
    // RFC 9112 §6.1: a request with both is a smuggling attempt or a broken client; refuse it
    // rather than guess which framing an upstream would believe.
    let headers = request.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) && headers.contains_key(header::CONTENT_LENGTH) {
        let mut response = text(StatusCode::BAD_REQUEST, "both Content-Length and Transfer-Encoding are set".into());
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let Some(host) = request_host(&request) else {
        return text(StatusCode::BAD_REQUEST, "the request names no host".into());
    };
    let table = shared.table.load_full();
    let Some(service) = table.route(&host, request.uri().path()) else {
        return text(StatusCode::NOT_FOUND, format!("no service is routed for {host}{}", request.uri().path()));
    };
    let client_ip = connection.client.ip();

    if (service.maintenance || table.spec.maintenance_all) && !maintenance_bypass(shared, &request, client_ip) {
        service.edge_metrics.record_maintenance();
        return maintenance_answer(shared, &request);
    }
    if let Some(limiter) = &service.rate_limiter
        && let Err(retry_after) = limiter.check(client_ip, Instant::now())
    {
        service.edge_metrics.record_rate_limited();
        let mut response = text(StatusCode::TOO_MANY_REQUESTS, "too many requests".into());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }

    let choice = choose_pool(shared, service, &request);
    let Some(pool) = choice.pool.and_then(|p| service.pools.get(p)) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("service `{}` has no pool taking traffic", service.name));
    };
    let mut response = forward(shared, connection, &service.name, pool, request, request_id).await;
    if shared.settings.hot_path.metrics {
        pool.metrics.record(response.status().as_u16(), elapsed_micros(started));
    }
    if let Some(cookie) = choice.set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

fn elapsed_micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The host a request is for: the URI's authority (HTTP/2, absolute form) or the Host header,
/// lowercase and without a port.
fn request_host(request: &Request<Incoming>) -> Option<String> {
    let raw = match request.uri().host() {
        Some(host) => host.to_owned(),
        None => {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            if value.starts_with('[') {
                value.split_once(']').map(|(h, _)| format!("{h}]"))?
            } else {
                value.split(':').next()?.to_owned()
            }
        }
    };
    (!raw.is_empty()).then(|| raw.to_ascii_lowercase())
}

struct PoolChoice {
    pool: Option<usize>,
    set_cookie: Option<HeaderValue>,
}

/// Which pool serves this request. In order: a pinning header with a valid token; the secondary
/// when failed over; the client's cohort cookie if its pool still takes traffic; a new cohort
/// drawn by weight.
fn choose_pool(shared: &Shared, service: &Service, request: &Request<Incoming>) -> PoolChoice {
    let headers = request.headers();
    if let (Some(pool), Some(token)) = (headers.get(POOL_HEADER), headers.get(TOKEN_HEADER))
        && shared.token_is_valid(token.as_bytes())
        && let Some(index) = service.pools.iter().position(|p| p.name.as_bytes() == pool.as_bytes())
    {
        return PoolChoice { pool: Some(index), set_cookie: None };
    }
    if service.failed_over && service.secondary.is_some() {
        return PoolChoice { pool: service.secondary, set_cookie: None };
    }
    // No allocation on the hot path: the iterator is cloned where it is walked twice.
    let weighted = service.weighted();
    let mut probe = weighted.clone();
    match (probe.next(), probe.next()) {
        (None, _) => PoolChoice { pool: None, set_cookie: None },
        // One pool takes everything: no cohort to remember.
        (Some((index, _)), None) => PoolChoice { pool: Some(index), set_cookie: None },
        _ => {
            if let Some(header_name) = &shared.settings.sticky_header
                && let Some(value) = headers.get(header_name.as_str())
            {
                return PoolChoice { pool: Some(by_weight(weighted, fnv1a(value.as_bytes()))), set_cookie: None };
            }
            let cookie_name = format!("{}_{}", shared.settings.sticky_cookie, service.name);
            if let Some(remembered) = cookie(headers, &cookie_name)
                && let Some((pool_name, _)) = remembered.split_once('.')
                && let Some((index, _)) = weighted.clone().find(|(_, p)| p.name == pool_name)
            {
                return PoolChoice { pool: Some(index), set_cookie: None };
            }
            let cohort = random_hex();
            let index = by_weight(weighted, fnv1a(cohort.as_bytes()));
            let value = format!("{cookie_name}={}.{cohort}; Path=/; HttpOnly; SameSite=Lax", service.pools[index].name);
            PoolChoice { pool: Some(index), set_cookie: HeaderValue::from_str(&value).ok() }
        }
    }
}

/// The pool whose share of the total weight holds `hash` (modulo the total).
fn by_weight<'p>(weighted: impl Iterator<Item = (usize, &'p Pool)> + Clone, hash: u64) -> usize {
    let total: u64 = weighted.clone().map(|(_, p)| u64::from(p.weight)).sum();
    let mut point = hash % total.max(1);
    let mut last = 0;
    for (index, pool) in weighted {
        if point < u64::from(pool.weight) {
            return index;
        }
        point -= u64::from(pool.weight);
        last = index;
    }
    last
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

fn maintenance_bypass(shared: &Shared, request: &Request<Incoming>, client: IpAddr) -> bool {
    let settings = &shared.settings;
    if settings.allow_networks.iter().any(|(network, prefix)| in_network(client, *network, *prefix)) {
        return true;
    }
    if let Some(name) = &settings.allow_header
        && let Some(value) = request.headers().get(name.as_str())
        && shared.token_is_valid(value.as_bytes())
    {
        return true;
    }
    if let Some(name) = &settings.allow_cookie
        && let Some(value) = cookie(request.headers(), name)
        && shared.token_is_valid(value.as_bytes())
    {
        return true;
    }
    false
}

pub fn in_network(address: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn maintenance_answer(shared: &Shared, request: &Request<Incoming>) -> Response<Body> {
    let settings = &shared.settings;
    let wants_json = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json") && !accept.contains("text/html"));
    let mut response = if wants_json {
        let body = serde_json::json!({ "error": "maintenance", "message": settings.maintenance_message });
        answer(StatusCode::SERVICE_UNAVAILABLE, "application/json", body.to_string())
    } else {
        answer(StatusCode::SERVICE_UNAVAILABLE, "text/html; charset=utf-8", settings.maintenance_html.clone())
    };
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(settings.retry_after.as_secs()));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Picks the less busy of two random usable instances, avoiding `exclude`.
fn choose_instance(pool: &Pool, now_ms: u64, exclude: Option<SocketAddr>) -> Option<Arc<Instance>> {
    let usable: Vec<&Arc<Instance>> =
        pool.instances.iter().filter(|i| i.usable(now_ms) && Some(i.address) != exclude).collect();
    match usable.len() {
        0 => None,
        1 => Some(usable[0].clone()),
        n => {
            let random = fast_random();
            let first = usable[(random % n as u64) as usize];
            let second = usable[((random >> 32) % n as u64) as usize];
            let load = |i: &Instance| i.outstanding.load(Ordering::Relaxed);
            Some(if load(second) < load(first) { second.clone() } else { first.clone() })
        }
    }
}

async fn forward(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    service_name: &str,
    pool: &Pool,
    request: Request<Incoming>,
    request_id: Option<&HeaderValue>,
) -> Response<Body> {
    let now_ms = shared.now_ms();
    let Some(mut instance) = choose_instance(pool, now_ms, None) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("no healthy instance in pool `{}`", pool.name));
    };
    let upgrade = is_upgrade(&request);
    let mut request =
        prepare_request(request, connection, request_id, upgrade, shared.settings.hot_path.forwarded_headers);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

    // A failed connect is retried once, on another instance: nothing was sent yet.
    let mut attempt = 0;
    let (sender, fresh) = loop {
        match connection_to(shared, connection, &instance, upgrade).await {
            Ok(found) => break found,
            Err(err) => {
                note_error(shared, &instance);
                attempt += 1;
                let retry = (attempt == 1).then(|| choose_instance(pool, now_ms, Some(instance.address))).flatten();
                match retry {
                    Some(other) => instance = other,
                    None => {
                        return text(
                            StatusCode::BAD_GATEWAY,
                            format!("cannot connect to an instance of pool `{}`: {err}", pool.name),
                        );
                    }
                }
            }
        }
    };
    let in_flight = InFlight::new(instance.clone());
    let sent = tokio::time::timeout(
        shared.settings.upstream_timeout,
        send(shared, sender, request, connection, &instance, fresh, upgrade),
    )
    .await;
    let mut response = match sent {
        Err(_) => {
            note_error(shared, &instance);
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the upstream did not answer within {:?}", shared.settings.upstream_timeout),
            );
        }
        // The client's own body broke off or was malformed (such as bad chunk framing): the
        // client's fault, not the instance's.
        Ok(Err(UpstreamError::Http(err))) if err.is_user() => {
            let mut response = text(StatusCode::BAD_REQUEST, "the request body is malformed or was cut off".into());
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Ok(Err(err)) => {
            note_error(shared, &instance);
            return text(StatusCode::BAD_GATEWAY, format!("the upstream failed: {err}"));
        }
        Ok(Ok(response)) => response,
    };
    if response.status().is_server_error() {
        note_error(shared, &instance);
    } else {
        note_success(&instance);
    }
    if let Some(downstream) = downstream_upgrade
        && response.status() == StatusCode::SWITCHING_PROTOCOLS
    {
        let upstream = hyper::upgrade::on(&mut response);
        let (shared, service, pool) = (shared.clone(), service_name.to_owned(), pool.name.clone());
        tokio::spawn(async move {
            let _session = in_flight;
            if let (Ok(downstream), Ok(upstream)) = (downstream.await, upstream.await) {
                relay_until_drained(&shared, &service, &pool, TokioIo::new(downstream), TokioIo::new(upstream)).await;
            }
        });
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, Either::Left(TrackedBody { inner: body, _in_flight: None }));
    }
    strip_hop_by_hop(response.headers_mut(), upgrade);
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Either::Left(TrackedBody { inner: body, _in_flight: Some(in_flight) }))
}

/// Copies a WebSocket (or other upgraded) session both ways until either side closes, or until
/// its pool has been out of rotation for the drain timeout.
async fn relay_until_drained<A, B>(shared: &Shared, service: &str, pool: &str, mut downstream: A, mut upstream: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let copy = tokio::io::copy_bidirectional(&mut downstream, &mut upstream);
    tokio::pin!(copy);
    let mut check = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut out_of_rotation_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut copy => return,
            _ = check.tick() => {
                if shared.table.load().pool_in_rotation(service, pool) {
                    out_of_rotation_since = None;
                } else if out_of_rotation_since.get_or_insert_with(Instant::now).elapsed() >= shared.settings.drain_timeout {
                    return;
                }
            }
        }
    }
}

/// The longest an instance stays ejected, however often it fails.
const MAX_EJECTION: std::time::Duration = std::time::Duration::from_secs(300);

/// Passive outlier detection: enough errors in a row take an instance out for a while, twice as
/// long each time it is ejected again without a success in between (up to five minutes).
fn note_error(shared: &Shared, instance: &Instance) {
    let errors = instance.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1;
    if errors >= shared.settings.eject_after_errors {
        let ejections = instance.ejections.fetch_add(1, Ordering::Relaxed).min(16);
        let back_off = shared.settings.eject_for.saturating_mul(1 << ejections).min(MAX_EJECTION);
        let until = shared.now_ms() + u64::try_from(back_off.as_millis()).unwrap_or(u64::MAX);
        instance.ejected_until_ms.store(until, Ordering::Relaxed);
        instance.consecutive_errors.store(0, Ordering::Relaxed);
    }
}

fn note_success(instance: &Instance) {
    instance.consecutive_errors.store(0, Ordering::Relaxed);
    instance.ejections.store(0, Ordering::Relaxed);
}

#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// A connection to `instance`: this downstream connection's cached one if it is still usable,
/// else a new one. Upgrades always get their own.
async fn connection_to(
    shared: &Shared,
    connection: &Connection,
    instance: &Instance,
    upgrade: bool,
) -> Result<(SendRequest<Incoming>, bool), UpstreamError> {
    if !upgrade {
        while let Some(mut sender) = connection.take(instance.address) {
            if sender.ready().await.is_ok() {
                return Ok((sender, false));
            }
        }
    }
    Ok((open(shared, instance.address).await?, true))
}

/// A new HTTP/1 connection to an upstream (with upgrades, for WebSockets), bounded by the connect
/// timeout; its connection task runs on this worker.
async fn open(shared: &Shared, address: SocketAddr) -> Result<SendRequest<Incoming>, UpstreamError> {
    let stream = tokio::time::timeout(shared.settings.connect_timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(address))?
        .map_err(|e| UpstreamError::Connect(address, e))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

async fn send(
    shared: &Shared,
    mut sender: SendRequest<Incoming>,
    request: Request<Incoming>,
    connection: &Connection,
    instance: &Instance,
    fresh: bool,
    upgrade: bool,
) -> Result<Response<Incoming>, UpstreamError> {
    let result = sender.try_send_request(request).await;
    let response = match result {
        Ok(response) => response,
        // A cached connection the upstream had closed: the request was not sent, so it is safe to
        // send it once on a new connection.
        Err(mut err) if !fresh => match err.take_message() {
            Some(request) => {
                sender = open(shared, instance.address).await?;
                sender.send_request(request).await?
            }
            None => return Err(err.into_error().into()),
        },
        Err(err) => return Err(err.into_error().into()),
    };
    if !upgrade {
        connection.put(instance.address, sender);
    }
    Ok(response)
}

fn is_upgrade(request: &Request<Incoming>) -> bool {
    request.headers().contains_key(header::UPGRADE)
        && request
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Rewrites the request for the upstream: hop-by-hop headers out (RFC 9110 §7.6.1), pinning
/// headers out, `X-Forwarded-For/-Proto` and `X-Request-Id` in, origin-form URI.
fn prepare_request(
    request: Request<Incoming>,
    connection: &Connection,
    request_id: Option<&HeaderValue>,
    upgrade: bool,
    forwarded_headers: bool,
) -> Request<Incoming> {
    let (mut parts, body) = request.into_parts();
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    // Rarely present: look before removing (a removal hashes the custom name even when absent).
    if headers.keys().any(|name| name == POOL_HEADER || name == TOKEN_HEADER) {
        headers.remove(POOL_HEADER);
        headers.remove(TOKEN_HEADER);
    }
    if forwarded_headers {
        let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(previous) => HeaderValue::from_str(&format!("{previous}, {}", connection.client.ip())).ok(),
            None => Some(connection.client_header.clone()),
        };
        if let Some(value) = forwarded_for {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(connection.scheme));
    }
    if let Some(id) = request_id {
        headers.insert(X_REQUEST_ID, id.clone());
    }
    if !headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        headers.insert(header::HOST, value);
    }
    if let Some(path) = parts.uri.path_and_query().cloned() {
        parts.uri = hyper::Uri::from(path);
    }
    parts.version = hyper::Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), which apply to one connection and are never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names first: most messages carry none of these, and removing an absent
    // header still costs a hash lookup each.
    if headers.keys().any(is_hop_by_hop) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !(keep_upgrade && name == header::UPGRADE))
            .collect();
        for name in listed {
            headers.remove(name);
        }
        for name in [
            header::CONNECTION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::PROXY_AUTHORIZATION,
            KEEP_ALIVE,
            PROXY_CONNECTION,
        ] {
            headers.remove(name);
        }
        if !keep_upgrade {
            headers.remove(header::UPGRADE);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A fast per-thread generator for load balancing and ids (not for secrets).
fn fast_random() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            // RandomState is seeded per process and per thread by the standard library.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
            hasher.finish() | 1
        });
    }
    STATE.with(|state| {
        // xorshift64*
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

fn random_hex() -> String {
    format!("{:016x}", fast_random())
}

/// 32 lowercase hex digits, written without formatting machinery (it runs on every request).
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (half, random) in [fast_random(), fast_random()].into_iter().enumerate() {
        for i in 0..16 {
            id[half * 16 + i] = HEX[((random >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_network(ip("127.0.0.5"), ip("127.0.0.0"), 8));
        assert!(!in_network(ip("128.0.0.5"), ip("127.0.0.0"), 8));
        assert!(in_network(ip("::1"), ip("::1"), 128));
        assert!(!in_network(ip("::1"), ip("127.0.0.1"), 32));
        assert!(in_network(ip("10.1.2.3"), ip("0.0.0.0"), 0));
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        headers.insert("x-secret-hop", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-kept"));
    }
}
