//! A request's life through the edge:
//!
//! framing checks → route (host, path) → maintenance → rate limit → pool (pinning header,
//! failover, sticky cohort, weights) → instance (power of two choices over healthy ones) →
//! forward on this connection's own upstream connection (a request nothing of which was sent is
//! sent again to another instance, then to the secondary pool: at most three in all) → record
//! status and latency for the service and pool → answer.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
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
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use crate::framing::LengthLines;
use crate::shared::Shared;
use crate::table::{Instance, Pool, Service};

pub type Body = Either<TrackedBody, Full<Bytes>>;

/// The header that pins a request to a pool (with the pin secret, derived from the admin token,
/// in [`TOKEN_HEADER`]).
pub const POOL_HEADER: HeaderName = HeaderName::from_static("x-windlass-pool");
pub const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-windlass-token");
// Header names as constants: looking one up by `&str` hashes the string on every request.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// One downstream connection: who it is and the upstream connections it owns.
pub struct Connection {
    pub client: SocketAddr,
    pub scheme: &'static str,
    /// The client's address as a header value, made once per connection.
    client_header: HeaderValue,
    upstreams: Mutex<Upstreams>,
    /// Woken when an upstream connection is given back or closed while a request waits for one
    /// (an HTTP/2 client's streams beyond `max_upstream_per_connection`).
    freed: tokio::sync::Notify,
    /// `Content-Length` lines read on this connection, counted by [`crate::framing::ScanReads`]
    /// (hyper hides the header when `Transfer-Encoding` is there too).
    pub length_lines: Arc<LengthLines>,
    /// The upstream timeout's timer, kept from one request to the next (see [`Connection::deadline`]).
    deadline: Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
}

/// When the upstream timeout fires: between the timeout and this much later. Rearming a timer
/// costs a timer-wheel removal and insertion; with this slack, a connection's timer is rearmed
/// at most once per slack interval rather than on every request.
const DEADLINE_SLACK_DIVISOR: u32 = 16;

/// The timer of one request's upstream timeout (ready once it has passed).
struct Deadline(Pin<Box<tokio::time::Sleep>>);

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl Connection {
    pub fn new(client: SocketAddr, scheme: &'static str) -> Self {
        let client_header =
            HeaderValue::from_str(&client.ip().to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Connection {
            client,
            scheme,
            client_header,
            upstreams: Mutex::new(Upstreams::default()),
            freed: tokio::sync::Notify::new(),
            length_lines: Arc::new(LengthLines::default()),
            deadline: Mutex::new(None),
        }
    }

    /// A timer that fires between `timeout` and `timeout` plus a sixteenth after `started`: this
    /// connection's timer from its previous request when it fires late enough but not too late
    /// (then nothing is rearmed), else a rearmed or new one. Concurrent requests (HTTP/2) each
    /// get their own.
    fn deadline(&self, started: Instant, timeout: std::time::Duration) -> Deadline {
        let earliest = tokio::time::Instant::from_std(started) + timeout;
        let latest = earliest + timeout / DEADLINE_SLACK_DIVISOR;
        let kept = self.deadline.lock().unwrap_or_else(|e| e.into_inner()).take();
        match kept {
            Some(sleep) if sleep.deadline() >= earliest && sleep.deadline() <= latest => Deadline(sleep),
            Some(mut sleep) => {
                sleep.as_mut().reset(latest);
                Deadline(sleep)
            }
            None => Deadline(Box::pin(tokio::time::sleep_until(latest))),
        }
    }

    /// Keeps a request's timer for the next request on this connection.
    fn keep_deadline(&self, deadline: Deadline) {
        let mut kept = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_none() {
            *kept = Some(deadline.0);
        }
    }

    fn upstreams(&self) -> std::sync::MutexGuard<'_, Upstreams> {
        self.upstreams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle upstream connection to `address`, or the right to open one (at most `max` are
    /// open per instance), waiting for one to be given back or closed when all are in use. On
    /// an HTTP/1 connection (one request at a time) this never waits: it costs the lock and the
    /// lookup the cache always took.
    async fn acquire(&self, address: SocketAddr, max: usize) -> Leased<'_> {
        loop {
            let notified = {
                let mut upstreams = self.upstreams();
                if let Some(index) = upstreams.idle.iter().position(|(a, _)| *a == address) {
                    let sender = upstreams.idle.swap_remove(index).1;
                    return Leased { connection: self, address, sender: Some(sender), counted: true };
                }
                if upstreams.open(address) < max.max(1) {
                    upstreams.opened(address);
                    return Leased { connection: self, address, sender: None, counted: true };
                }
                upstreams.waiting += 1;
                // Created under the lock that `give_back` and `Drop` take to notify: a `Notified`
                // receives `notify_waiters` from its creation on, even before its first poll, so a
                // connection freed between this unlock and that poll is not missed.
                self.freed.notified()
            };
            let _waiting = Waiting(self);
            notified.await;
        }
    }
}

/// The upstream connections a downstream connection owns: the idle ones, and how many are open
/// per instance (idle or in use).
#[derive(Default)]
struct Upstreams {
    idle: Vec<(SocketAddr, SendRequest<Incoming>)>,
    open: Vec<(SocketAddr, usize)>,
    /// Requests waiting for a connection to free up.
    waiting: usize,
}

impl Upstreams {
    fn open(&self, address: SocketAddr) -> usize {
        self.open.iter().find(|(a, _)| *a == address).map_or(0, |(_, n)| *n)
    }

    fn opened(&mut self, address: SocketAddr) {
        match self.open.iter_mut().find(|(a, _)| *a == address) {
            Some((_, n)) => *n += 1,
            None => self.open.push((address, 1)),
        }
    }

    fn closed(&mut self, address: SocketAddr) {
        if let Some(index) = self.open.iter().position(|(a, _)| *a == address) {
            self.open[index].1 -= 1;
            if self.open[index].1 == 0 {
                self.open.swap_remove(index);
            }
        }
    }
}

/// A request waiting in [`Connection::acquire`] (also when its future is dropped).
struct Waiting<'c>(&'c Connection);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.upstreams().waiting -= 1;
    }
}

/// An upstream connection (or the right to open one) held by one request. Dropped without being
/// given back, its slot frees up and a waiting request is woken.
struct Leased<'c> {
    connection: &'c Connection,
    address: SocketAddr,
    sender: Option<SendRequest<Incoming>>,
    /// Whether it counts against the bound (upgrades have connections of their own).
    counted: bool,
}

impl Leased<'_> {
    /// Gives the connection back for the next request to this instance.
    fn give_back(mut self) {
        let Some(sender) = self.sender.take() else { return };
        if !self.counted {
            return;
        }
        self.counted = false;
        let mut upstreams = self.connection.upstreams();
        upstreams.idle.push((self.address, sender));
        if upstreams.waiting > 0 {
            // Every waiter: they wait for different instances, and one woken for another
            // instance's slot would leave the right one asleep.
            self.connection.freed.notify_waiters();
        }
    }
}

impl Drop for Leased<'_> {
    fn drop(&mut self) {
        if self.counted {
            let mut upstreams = self.connection.upstreams();
            upstreams.closed(self.address);
            if upstreams.waiting > 0 {
                self.connection.freed.notify_waiters();
            }
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
    let seen = Seen::of(request.headers());
    let given = if seen.request_id {
        request.headers().get(&X_REQUEST_ID).filter(|v| !v.is_empty() && v.len() <= 200).cloned()
    } else {
        None
    };
    let request_id = match given {
        Some(id) => Some(id),
        None => shared.settings.hot_path.request_id.then(new_request_id),
    };
    // Only what the access log needs is kept, and only when it is on.
    let logged = shared.access_log.is_some().then(|| {
        let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        (request.method().clone(), host, request.uri().path().to_owned())
    });
    let arrival = Arrival { seen, request_id: request_id.as_ref(), started };
    let mut response = route_and_forward(&shared, &connection, request, arrival).await;
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
    arrival: Arrival<'_>,
) -> Response<Body> {
    let Arrival { seen, started, .. } = arrival;
    if let Err((status, problem)) = check_framing(connection, &request, seen) {
        let mut response = text(status, problem.into());
        // As nginx does: what follows on this connection cannot be trusted to be framed right.
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
        && let Err(retry_after) = limiter.check(client_ip, started)
    {
        service.edge_metrics.record_rate_limited();
        let mut response = text(StatusCode::TOO_MANY_REQUESTS, "too many requests".into());
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }

    let choice = choose_pool(shared, service, &request, seen);
    let Some(pool) = choice.pool.and_then(|p| service.pools.get(p)) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("service `{}` has no pool taking traffic", service.name));
    };
    // Per-endpoint counters: matched before the request moves upstream (`None` costs nothing).
    let endpoint = match &service.endpoints {
        Some(endpoints) if shared.settings.hot_path.metrics => {
            Some((endpoints, endpoints.index(request.method(), request.uri().path())))
        }
        _ => None,
    };
    // The pool that answered: the chosen one, or the secondary it failed over to.
    let (mut response, pool) = forward(shared, connection, service, pool, choice.pinned, request, arrival).await;
    if shared.settings.hot_path.metrics {
        let micros = elapsed_micros(started);
        pool.metrics.record(response.status().as_u16(), micros);
        if let Some((endpoints, index)) = endpoint {
            endpoints.record(index, response.status().as_u16(), micros);
        }
    }
    if let Some(cookie) = choice.set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The request rules hyper leaves to the proxy, cheapest test first (they run on every request).
fn check_framing(
    connection: &Connection,
    request: &Request<Incoming>,
    seen: Seen,
) -> Result<(), (StatusCode, &'static str)> {
    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    // Read on every request so that a count never outlives its request (see `framing`).
    let length_lines = connection.length_lines.take();
    let headers = request.headers();
    // RFC 9112 §6.1: a request with both is a smuggling attempt or a broken client; refuse it
    // rather than guess which framing an upstream would believe. hyper drops Content-Length
    // from the map in that case, hence the count of the lines read.
    if seen.hop_by_hop & TRANSFER_ENCODING_BIT != 0 {
        if length_lines > 0 || headers.contains_key(header::CONTENT_LENGTH) {
            return Err((BAD, "both Content-Length and Transfer-Encoding are set"));
        }
        // hyper accepts any codings that end in `chunked` (`gzip, chunked`, `chunked, chunked`,
        // or over two lines) and passes the body on undecoded; like nginx, only `chunked` alone
        // is taken (RFC 9112 §6.1: 501 for a coding the server does not understand).
        let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
        let only_chunked = codings.next().is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !only_chunked {
            return Err((StatusCode::NOT_IMPLEMENTED, "only the chunked transfer coding is supported"));
        }
    }
    // RFC 9112 §3.2: more than one Host field line is a 400. Counting values needs a lookup by
    // name; it is done only when some name repeats (values outnumber names).
    if headers.len() != headers.keys_len() && headers.get_all(header::HOST).iter().nth(1).is_some() {
        return Err((BAD, "more than one Host header"));
    }
    // RFC 9110 §4.2.4: userinfo in a target is an error (and would otherwise become the Host).
    if let Some(authority) = request.uri().authority()
        && authority.as_str().contains('@')
    {
        return Err((BAD, "the request target carries user information"));
    }
    Ok(())
}

fn elapsed_micros(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// The host a request is for: the URI's authority (HTTP/2, absolute form) or the Host header,
/// lowercase and without a port. Borrowed unless it has to be lowercased.
fn request_host(request: &Request<Incoming>) -> Option<Cow<'_, str>> {
    let raw = match request.uri().host() {
        Some(host) => host,
        None => {
            let value = request.headers().get(header::HOST)?.to_str().ok()?;
            // Bytes searched for ASCII delimiters (cheaper than `str` patterns on every request);
            // slicing at an ASCII byte keeps the `str` valid.
            if value.starts_with('[') {
                // `[::1]:8080`: the brackets stay.
                let end = value.bytes().position(|b| b == b']')?;
                &value[..=end]
            } else {
                let end = value.bytes().position(|b| b == b':').unwrap_or(value.len());
                &value[..end]
            }
        }
    };
    if raw.is_empty() {
        return None;
    }
    Some(if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    })
}

struct PoolChoice {
    pool: Option<usize>,
    set_cookie: Option<HeaderValue>,
    /// Pinned by a valid pin secret (a smoke check): never answered by another pool.
    pinned: bool,
}

/// Which pool serves this request. In order: a pinning header with a valid token; the secondary
/// when failed over; the client's cohort cookie if its pool still takes traffic; a new cohort
/// drawn by weight.
fn choose_pool(shared: &Shared, service: &Service, request: &Request<Incoming>, seen: Seen) -> PoolChoice {
    let headers = request.headers();
    if seen.pinning
        && let Some(pool) = headers.get(POOL_HEADER)
        && let Some(token) = headers.get(TOKEN_HEADER)
        && shared.pin_is_valid(token.as_bytes())
        && let Some(index) = service.pools.iter().position(|p| p.name.as_bytes() == pool.as_bytes())
    {
        return PoolChoice { pool: Some(index), set_cookie: None, pinned: true };
    }
    if service.failed_over && service.secondary.is_some() {
        return PoolChoice { pool: service.secondary, set_cookie: None, pinned: false };
    }
    // No allocation on the hot path: the iterator is cloned where it is walked twice.
    let weighted = service.weighted();
    let mut probe = weighted.clone();
    match (probe.next(), probe.next()) {
        (None, _) => PoolChoice { pool: None, set_cookie: None, pinned: false },
        // One pool takes everything: no cohort to remember.
        (Some((index, _)), None) => PoolChoice { pool: Some(index), set_cookie: None, pinned: false },
        _ => {
            if let Some(header_name) = &shared.settings.sticky_header
                && let Some(value) = headers.get(header_name.as_str())
            {
                return PoolChoice {
                    pool: Some(by_weight(weighted, fnv1a(value.as_bytes()))),
                    set_cookie: None,
                    pinned: false,
                };
            }
            let cookie_name = format!("{}_{}", shared.settings.sticky_cookie, service.name);
            if let Some(remembered) = cookie(headers, &cookie_name)
                && let Some((pool_name, _)) = remembered.split_once('.')
                && let Some((index, _)) = weighted.clone().find(|(_, p)| p.name == pool_name)
            {
                return PoolChoice { pool: Some(index), set_cookie: None, pinned: false };
            }
            let cohort = random_hex();
            let index = by_weight(weighted, fnv1a(cohort.as_bytes()));
            let value = format!("{cookie_name}={}.{cohort}; Path=/; HttpOnly; SameSite=Lax", service.pools[index].name);
            PoolChoice { pool: Some(index), set_cookie: HeaderValue::from_str(&value).ok(), pinned: false }
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
        && shared.bypass_is_valid(value.as_bytes())
    {
        return true;
    }
    if let Some(name) = &settings.allow_cookie
        && let Some(value) = cookie(request.headers(), name)
        && shared.bypass_is_valid(value.as_bytes())
    {
        return true;
    }
    false
}

/// The maintenance bypass header and cookie are the edge's, never the application's: they are
/// removed before the request goes upstream, valid or not, maintenance or not (other cookies are
/// kept as sent). Nothing to do, and no cost, when no bypass header or cookie is configured.
fn strip_bypass(headers: &mut HeaderMap, settings: &crate::shared::Settings) {
    if let Some(name) = &settings.allow_header {
        headers.remove(name.as_str());
    }
    let Some(name) = &settings.allow_cookie else { return };
    let is_bypass = |pair: &str| pair.trim().split_once('=').is_some_and(|(key, _)| key == name);
    let carries = headers
        .get_all(header::COOKIE)
        .iter()
        .any(|value| value.to_str().map_or(true, |v| v.split(';').any(is_bypass)));
    if !carries {
        return;
    }
    // Rebuilt without the bypass pair: one header (RFC 9113 §8.2.3 allows joining crumbs with
    // "; ", and HTTP/1.1 sends one Cookie header). A value that is not text cannot be checked
    // for the pair and is dropped rather than forwarded with the secret in it.
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter(|pair| !pair.trim().is_empty() && !is_bypass(pair))
        .map(str::trim)
        .collect();
    let rebuilt = (!kept.is_empty()).then(|| HeaderValue::from_str(&kept.join("; ")).ok()).flatten();
    headers.remove(header::COOKIE);
    if let Some(value) = rebuilt {
        headers.insert(header::COOKIE, value);
    }
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

/// Picks the less busy of two random usable instances, avoiding those in `exclude`.
fn choose_instance(pool: &Pool, now_ms: u64, exclude: &[SocketAddr]) -> Option<Arc<Instance>> {
    // Counted, then indexed: no list is built on the hot path.
    let usable = |instance: &&Arc<Instance>| instance.usable(now_ms) && !exclude.contains(&instance.address);
    let nth = |n: usize| pool.instances.iter().filter(usable).nth(n);
    match pool.instances.iter().filter(usable).count() {
        0 => None,
        1 => nth(0).cloned(),
        n => {
            let random = fast_random();
            let first = nth((random % n as u64) as usize)?;
            let second = nth(((random >> 32) % n as u64) as usize)?;
            let load = |i: &Instance| i.outstanding.load(Ordering::Relaxed);
            Some(if load(second) < load(first) { second.clone() } else { first.clone() })
        }
    }
}

/// Instances a request is sent to at most: the first, and two more when nothing of it could be
/// sent (connect refused or reset, an upstream connection closed before the request went out).
const MAX_ATTEMPTS: usize = 3;

/// Why no upstream answered.
enum Failure {
    /// The upstream timeout passed.
    Timeout,
    /// The upstream timeout passed before the request could be written: every upstream
    /// connection this client connection may have to the instance stayed busy (an HTTP/2
    /// client's own streams). The client's queueing, not the instance's fault.
    Busy,
    /// The client's own body broke off or was malformed: the client's fault, not the instance's.
    ClientBody,
    /// No usable instance in the pool (nor in the secondary).
    NoInstance,
    /// The instance failed (or every attempt's did).
    Upstream(Arc<Instance>, UpstreamError),
}

async fn forward<'s>(
    shared: &Arc<Shared>,
    connection: &Arc<Connection>,
    service: &'s Service,
    pool: &'s Pool,
    pinned: bool,
    mut request: Request<Incoming>,
    arrival: Arrival<'_>,
) -> (Response<Body>, &'s Pool) {
    let Arrival { seen, request_id, started } = arrival;
    let upgrade = seen.hop_by_hop & UPGRADE_BIT != 0 && is_upgrade(&request);
    prepare_request(&mut request, seen, connection, request_id, upgrade, shared.settings.hot_path.forwarded_headers);
    strip_bypass(request.headers_mut(), &shared.settings);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

    // Everything from choosing an instance to the response's head is bounded by the upstream
    // timeout: connecting, waiting for a connection to free up, retries, the answer.
    let mut deadline = connection.deadline(started, shared.settings.upstream_timeout);
    let attempt = Attempts { shared, connection, service, started, upgrade, pinned };
    let (outcome, pool) = attempt.run(pool, request, &mut deadline).await;
    connection.keep_deadline(deadline);
    let (mut response, instance, in_flight) = match outcome {
        Ok(answered) => answered,
        Err(failure) => return (failure_answer(shared, service, pool, request_id, failure), pool),
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
        let (shared, service, pool_name) = (shared.clone(), service.name.clone(), pool.name.clone());
        // A per-connection task (an upgraded connection), owned by its worker.
        #[allow(clippy::disallowed_methods)]
        tokio::spawn(async move {
            let _session = in_flight;
            if let (Ok(downstream), Ok(upstream)) = (downstream.await, upstream.await) {
                relay_until_drained(&shared, &service, &pool_name, TokioIo::new(downstream), TokioIo::new(upstream))
                    .await;
            }
        });
        let (parts, body) = response.into_parts();
        return (Response::from_parts(parts, Either::Left(TrackedBody { inner: body, _in_flight: None })), pool);
    }
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // A switch nobody asked for (no upgrade request, or HTTP/2): nothing would relay it, and
        // the client connection would be left in a state no timeout covers.
        let id = request_id.and_then(|id| id.to_str().ok()).unwrap_or("");
        tracing::warn!(service = %service.name, pool = %pool.name, instance = %instance.address, request_id = id, "the upstream switched protocols unasked");
        let body = if id.is_empty() { "bad gateway".to_owned() } else { format!("bad gateway (request id {id})") };
        return (text(StatusCode::BAD_GATEWAY, body), pool);
    }
    strip_hop_by_hop(response.headers_mut(), upgrade);
    let (parts, body) = response.into_parts();
    (Response::from_parts(parts, Either::Left(TrackedBody { inner: body, _in_flight: Some(in_flight) })), pool)
}

type Answered = (Response<Incoming>, Arc<Instance>, InFlight);

/// Sends the request to an instance of `pool`, and as long as nothing of it was sent, again to
/// another (at most [`MAX_ATTEMPTS`]): first the pool's other usable instances, then the
/// service's secondary pool (not for a request pinned to a pool: a smoke check of that pool must
/// not be answered by another), all before `deadline`. Returns the pool that answered.
struct Attempts<'a, 's> {
    shared: &'a Shared,
    connection: &'a Connection,
    service: &'s Service,
    started: Instant,
    upgrade: bool,
    pinned: bool,
}

impl<'s> Attempts<'_, 's> {
    async fn run(
        self,
        mut pool: &'s Pool,
        mut request: Request<Incoming>,
        deadline: &mut Deadline,
    ) -> (Result<Answered, Failure>, &'s Pool) {
        let Attempts { shared, connection, service, started, upgrade, pinned } = self;
        let now_ms = shared.ms_at(started);
        let mut tried = [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_ATTEMPTS];
        let mut attempt = 0;
        let mut last_error: Option<(Arc<Instance>, UpstreamError)> = None;
        let secondary = service.secondary.and_then(|index| service.pools.get(index)).filter(|_| !pinned);
        loop {
            let instance = match choose_instance(pool, now_ms, &tried[..attempt]) {
                Some(instance) => instance,
                // The pool has no usable instance left: the failover secondary, if there is one and
                // this is not it. The active checks still decide when the service fails over.
                None => match secondary {
                    Some(secondary) if !std::ptr::eq(secondary, pool) => {
                        pool = secondary;
                        continue;
                    }
                    _ => {
                        let failure = match last_error {
                            Some((instance, err)) => Failure::Upstream(instance, err),
                            None => Failure::NoInstance,
                        };
                        return (Err(failure), pool);
                    }
                },
            };
            tried[attempt] = instance.address;
            attempt += 1;
            // Counted in flight while it waits for its answer too (the drain and the balancer see it).
            let in_flight = InFlight::new(instance.clone());
            let writing = std::sync::atomic::AtomicBool::new(false);
            let outcome = {
                let once = attempt_once(shared, connection, &instance, request, upgrade, &writing);
                let mut once = std::pin::pin!(once);
                std::future::poll_fn(|cx| match once.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(Some(result)),
                    Poll::Pending => Pin::new(&mut *deadline).poll(cx).map(|()| None),
                })
                .await
            };
            let Some(outcome) = outcome else {
                if !writing.load(Ordering::Relaxed) {
                    // Still waiting for one of this client connection's own upstream connections
                    // to free up: nothing says the instance is slow.
                    return (Err(Failure::Busy), pool);
                }
                // Timed out on this instance (connecting, or its answer).
                note_error(shared, &instance);
                return (Err(Failure::Timeout), pool);
            };
            match outcome {
                Ok(response) => return (Ok((response, instance, in_flight)), pool),
                Err(Attempt::NotSent(not_sent)) => {
                    let (given_back, err) = *not_sent;
                    if err.is_refused() {
                        // Nothing listens there: certain, unlike an error answer, so out at once.
                        eject(shared, &instance);
                    } else {
                        note_error(shared, &instance);
                    }
                    tracing::debug!(service = %service.name, pool = %pool.name, instance = %instance.address, error = %err, "not sent, trying another instance");
                    request = given_back;
                    if attempt == MAX_ATTEMPTS {
                        return (Err(Failure::Upstream(instance, err)), pool);
                    }
                    last_error = Some((instance, err));
                }
                Err(Attempt::ClientBody) => return (Err(Failure::ClientBody), pool),
                Err(Attempt::Failed(err)) => {
                    note_error(shared, &instance);
                    return (Err(Failure::Upstream(instance, err)), pool);
                }
            }
        }
    }
}

/// How one attempt failed.
enum Attempt {
    /// Nothing of the request was sent: it is given back, to try elsewhere. Boxed (a rare path)
    /// so that the `Result` an attempt returns, moved on every request, stays small.
    NotSent(Box<(Request<Incoming>, UpstreamError)>),
    ClientBody,
    Failed(UpstreamError),
}

/// One attempt on one instance: a connection (this downstream connection's idle one if it is
/// still usable, else a new one), and the request sent on it. A cached connection the upstream
/// had closed gives the request back untouched; it is then sent once on a new connection.
async fn attempt_once(
    shared: &Shared,
    connection: &Connection,
    instance: &Instance,
    mut request: Request<Incoming>,
    upgrade: bool,
    writing: &std::sync::atomic::AtomicBool,
) -> Result<Response<Incoming>, Attempt> {
    let address = instance.address;
    let mut leased = if upgrade {
        // Upgrades get connections of their own, not counted against the bound.
        Leased { connection, address, sender: None, counted: false }
    } else {
        connection.acquire(address, shared.settings.max_upstream_per_connection).await
    };
    let mut fresh = false;
    loop {
        match leased.sender.as_mut() {
            Some(sender) => {
                if !fresh && sender.ready().await.is_err() {
                    // Closed while idle: its slot is reused for a new connection.
                    leased.sender = None;
                    continue;
                }
            }
            None => {
                // Connecting is the instance's business from here on (a connect that hangs
                // until the upstream timeout is the instance's fault).
                writing.store(true, Ordering::Relaxed);
                // Boxed: connecting is rare on keep-alive connections, and its future would
                // otherwise make every request's future larger (and costlier to move).
                match Box::pin(open(shared, address)).await {
                    Ok(sender) => {
                        leased.sender = Some(sender);
                        fresh = true;
                    }
                    Err(err) => return Err(Attempt::NotSent(Box::new((request, err)))),
                }
            }
        }
        let Some(sender) = leased.sender.as_mut() else { continue };
        writing.store(true, Ordering::Relaxed);
        match sender.try_send_request(request).await {
            Ok(response) => {
                if !upgrade {
                    leased.give_back();
                }
                return Ok(response);
            }
            Err(mut err) => match err.take_message() {
                // A cached connection the upstream had closed: nothing was sent, so the request
                // goes once more, on a new connection to the same instance.
                Some(given_back) if !fresh => {
                    leased.sender = None;
                    request = given_back;
                }
                Some(given_back) => {
                    return Err(Attempt::NotSent(Box::new((given_back, err.into_error().into()))));
                }
                None => {
                    let err = err.into_error();
                    return Err(if err.is_user() { Attempt::ClientBody } else { Attempt::Failed(err.into()) });
                }
            },
        }
    }
}

/// The answer when no upstream answered. 502 and 504 bodies name no address or error (they go
/// to whoever asked): the detail is logged with the request id the body carries.
fn failure_answer(
    shared: &Shared,
    service: &Service,
    pool: &Pool,
    request_id: Option<&HeaderValue>,
    failure: Failure,
) -> Response<Body> {
    let id = request_id.and_then(|id| id.to_str().ok()).unwrap_or("");
    let (status, what) = match failure {
        Failure::ClientBody => {
            let mut response = text(StatusCode::BAD_REQUEST, "the request body is malformed or was cut off".into());
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return response;
        }
        Failure::NoInstance => {
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("no healthy instance in pool `{}`", pool.name));
        }
        Failure::Busy => {
            tracing::warn!(service = %service.name, pool = %pool.name, request_id = id, bound = shared.settings.max_upstream_per_connection, "no upstream connection of this client connection freed up in time");
            (StatusCode::SERVICE_UNAVAILABLE, "service unavailable: too many concurrent requests on this connection")
        }
        Failure::Timeout => {
            tracing::warn!(service = %service.name, pool = %pool.name, request_id = id, timeout = ?shared.settings.upstream_timeout, "no answer from upstream in time");
            (StatusCode::GATEWAY_TIMEOUT, "gateway timeout")
        }
        Failure::Upstream(instance, err) => {
            tracing::warn!(service = %service.name, pool = %pool.name, instance = %instance.address, request_id = id, error = %err, "upstream failed");
            (StatusCode::BAD_GATEWAY, "bad gateway")
        }
    };
    let body = if id.is_empty() { what.to_owned() } else { format!("{what} (request id {id})") };
    text(status, body)
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

/// Takes an instance out at once (a refused connect: nothing listens there), for as long as
/// [`note_error`] would after enough errors.
fn eject(shared: &Shared, instance: &Instance) {
    instance.consecutive_errors.store(shared.settings.eject_after_errors.saturating_sub(1), Ordering::Relaxed);
    note_error(shared, instance);
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

impl UpstreamError {
    fn is_refused(&self) -> bool {
        matches!(self, UpstreamError::Connect(_, err) if err.kind() == std::io::ErrorKind::ConnectionRefused)
    }
}

/// A new HTTP/1 connection to an upstream (with upgrades, for WebSockets), bounded by the connect
/// timeout; its connection task runs on this worker.
async fn open(shared: &Shared, address: SocketAddr) -> Result<SendRequest<Incoming>, UpstreamError> {
    let stream = tokio::time::timeout(shared.settings.connect_timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(address))?
        .map_err(|e| UpstreamError::Connect(address, e))?;
    let _ = stream.set_nodelay(true);
    // One buffer, one `write` per request (see the server's builder).
    let (sender, conn) =
        hyper::client::conn::http1::Builder::new().writev(false).handshake(TokioIo::new(stream)).await?;
    // Drives one upstream connection of the hot path, ends with it.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
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
    request: &mut Request<Incoming>,
    seen: Seen,
    connection: &Connection,
    request_id: Option<&HeaderValue>,
    upgrade: bool,
    forwarded_headers: bool,
) {
    let headers = request.headers_mut();
    strip_present_hop_by_hop(headers, upgrade, seen.hop_by_hop);
    // Rarely present (a removal hashes the custom name even when absent).
    if seen.pinning {
        headers.remove(POOL_HEADER);
        headers.remove(TOKEN_HEADER);
    }
    if forwarded_headers {
        let previous = if seen.forwarded_for { headers.get(&X_FORWARDED_FOR) } else { None };
        let forwarded_for = match previous.and_then(|v| v.to_str().ok()) {
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
    // The target's authority (HTTP/1 absolute form, HTTP/2 `:authority`) is what the request
    // was routed by and replaces any Host header (RFC 9112 §3.2.2, RFC 9113 §8.3.1), so the
    // upstream sees the host the edge chose it for.
    if let Some(authority) = request.uri().authority()
        && let Ok(value) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, value);
    }
    // Origin form (`/path?query`) for the upstream; an HTTP/1 request has it already.
    if request.uri().scheme().is_some()
        && let Some(path) = request.uri().path_and_query()
    {
        // An empty path (`http://host`, or `x://host#...`, whose fragment is dropped) reads as
        // `/` but is written as nothing once the scheme is gone: an empty request target reached
        // the upstream (found by the fuzz target). A static `/` is written as `/`.
        let path = if path.as_str() == "/" { PathAndQuery::from_static("/") } else { path.clone() };
        *request.uri_mut() = hyper::Uri::from(path);
    }
    *request.version_mut() = hyper::Version::HTTP_11;
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), which apply to one connection and are never forwarded,
/// in the order of [`hop_by_hop_index`].
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];
const CONNECTION_BIT: u8 = 1 << 0;
const TRANSFER_ENCODING_BIT: u8 = 1 << 3;
const UPGRADE_BIT: u8 = 1 << 4;

/// What the edge learnt of a request as it came in.
#[derive(Debug, Clone, Copy)]
struct Arrival<'a> {
    seen: Seen,
    /// The client's or a generated one (none when the feature is off).
    request_id: Option<&'a HeaderValue>,
    started: Instant,
}

/// Which of the names the edge looks at a request carries, found in one pass over its header
/// names: a lookup by name hashes the name, present or not, and most are absent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen {
    /// Bits by index in [`HOP_BY_HOP`].
    hop_by_hop: u8,
    request_id: bool,
    forwarded_for: bool,
    /// `X-Windlass-Pool` or `X-Windlass-Token`.
    pinning: bool,
}

impl Seen {
    fn of(headers: &HeaderMap) -> Seen {
        let mut seen = Seen::default();
        for name in headers.keys() {
            let name = name.as_str().as_bytes();
            if let Some(index) = hop_by_hop_index(name) {
                seen.hop_by_hop |= 1 << index;
                continue;
            }
            match name.len() {
                12 => seen.request_id |= name == b"x-request-id",
                15 => {
                    seen.forwarded_for |= name == b"x-forwarded-for";
                    seen.pinning |= name == POOL_HEADER.as_str().as_bytes();
                }
                16 => seen.pinning |= name == TOKEN_HEADER.as_str().as_bytes(),
                _ => {}
            }
        }
        seen
    }
}

/// The index in [`HOP_BY_HOP`] of a header name (in any case), found by its length first: most
/// names are compared with at most two others.
fn hop_by_hop_index(name: &[u8]) -> Option<usize> {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 => is(b"te").then_some(1),
        7 if is(b"trailer") => Some(2),
        7 => is(b"upgrade").then_some(4),
        10 if is(b"connection") => Some(0),
        10 => is(b"keep-alive").then_some(6),
        16 => is(b"proxy-connection").then_some(7),
        17 => is(b"transfer-encoding").then_some(3),
        19 => is(b"proxy-authorization").then_some(5),
        _ => None,
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names finds which hop-by-hop headers are there: removing a header hashes
    // its name, present or not, and most messages carry one of these at most (`Connection`).
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(index) = hop_by_hop_index(name.as_str().as_bytes()) {
            present |= 1 << index;
        }
    }
    strip_present_hop_by_hop(headers, keep_upgrade, present);
}

/// [`strip_hop_by_hop`] when the hop-by-hop names present are known (bits by index in
/// [`HOP_BY_HOP`]).
fn strip_present_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, mut present: u8) {
    if keep_upgrade {
        present &= !UPGRADE_BIT;
    }
    // The usual value whole (`Connection: keep-alive` from browsers and `ab`, or `close`) names
    // nothing more: the token walk below is skipped for it (measured ~300 instructions).
    let usual = |value: &HeaderValue| {
        value.as_bytes().eq_ignore_ascii_case(b"keep-alive") || value.as_bytes().eq_ignore_ascii_case(b"close")
    };
    let only_usual = present & CONNECTION_BIT != 0 && {
        let mut values = headers.get_all(header::CONNECTION).iter();
        matches!((values.next(), values.next()), (Some(value), None) if usual(value))
    };
    if present & CONNECTION_BIT != 0 && !only_usual {
        // Other names the Connection header lists are hop-by-hop too. The usual tokens
        // (`keep-alive`, `close`, `upgrade`) name nothing more, so this seldom allocates.
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            // The usual values whole, without splitting them into tokens.
            .filter(|value| !usual(value))
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|token| {
                !token.is_empty()
                    && !token.eq_ignore_ascii_case(b"close")
                    && hop_by_hop_index(token).is_none()
                    && !is_end_to_end_kept(token)
            })
            .filter_map(|token| {
                headers.keys().find(|name| name.as_str().as_bytes().eq_ignore_ascii_case(token)).cloned()
            })
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (index, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << index) != 0 {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Headers a `Connection` token never removes: the upstream needs them whatever the client
/// lists (`Connection: host` would leave an HTTP/1.1 request without the Host it was routed by,
/// `Connection: content-length` a body without its length).
fn is_end_to_end_kept(token: &[u8]) -> bool {
    token.eq_ignore_ascii_case(b"host") || token.eq_ignore_ascii_case(b"content-length")
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
    fn the_bypass_header_and_only_the_bypass_cookie_go() {
        let settings = crate::shared::Settings {
            allow_header: Some("x-staff".into()),
            allow_cookie: Some("staff".into()),
            ..crate::shared::Settings::new("admin-token-0123456789")
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-staff", HeaderValue::from_static("secret"));
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; staff=secret; b=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("staff=again"));
        headers.append(header::COOKIE, HeaderValue::from_static("c=3;staffer=kept"));
        strip_bypass(&mut headers, &settings);
        assert!(!headers.contains_key("x-staff"));
        let cookies: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3; staffer=kept"]);

        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("staff=secret"));
        strip_bypass(&mut headers, &settings);
        assert!(!headers.contains_key(header::COOKIE), "nothing else to send");

        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1;b=2"));
        strip_bypass(&mut headers, &settings);
        assert_eq!(headers[header::COOKIE], "a=1;b=2", "untouched without the bypass cookie");
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

        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade, X-Hop"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers, true);
        let mut names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["connection", "upgrade", "x-kept"]);
        assert_eq!(headers[header::CONNECTION], "upgrade");
    }
}
