//! The one outgoing HTTP/1.1 client of Windlass: the CLI's calls to the server, the edge's admin
//! API and health checks, health gates, smoke checks, probes, OpenBao and webhooks. One connection
//! per request (these are rare and must not share a broken connection), a deadline over the whole
//! exchange (or, when streaming, over everything up to the response's head), and the time the
//! exchange took; `https://` with rustls against the system's CAs or a given CA file.
//!
//! It must not grow a connection pool or retries: the edge's upstream hot path has its own pooled
//! client, and callers decide what a failure means (notify retries, a health check counts it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

pub use hyper::{HeaderMap, StatusCode};

pub mod percent;

/// Whether two secrets (a presented token and the expected one, a computed MAC and the stored
/// one) are equal, in time that depends only on their lengths, never on where they differ. The
/// one constant-time compare of Windlass.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bodies larger than this are an error, not a memory problem.
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
    /// For `https://`: the server's leaf certificate (DER) as the TLS handshake saw it.
    pub peer_certificate: Option<Bytes>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL was refused (the words of a [`UrlError`]).
    #[error("{0}")]
    BadUrl(String),
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("TLS with {host}: {message}")]
    Tls { host: String, message: String },
    #[error("cannot connect to {address}: {source}")]
    Connect { address: SocketAddr, source: std::io::Error },
    #[error("no answer from {address} within {timeout:?}")]
    Timeout { address: SocketAddr, timeout: Duration },
    #[error("no answer from {host} within {timeout:?}")]
    TimeoutAt { host: String, timeout: Duration },
    #[error("{address}: {message}")]
    Protocol { address: SocketAddr, message: String },
}

/// A request to send: `host` is the Host header (the address when empty).
pub struct Request<'a> {
    pub method: &'a str,
    pub address: SocketAddr,
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
}

pub async fn send(request: Request<'_>) -> Result<Reply, HttpError> {
    let address = request.address;
    let timeout = request.timeout;
    match tokio::time::timeout(timeout, exchange(request)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout { address, timeout }),
    }
}

async fn exchange(request: Request<'_>) -> Result<Reply, HttpError> {
    let address = request.address;
    let started = Instant::now();
    let stream =
        tokio::net::TcpStream::connect(address).await.map_err(|source| HttpError::Connect { address, source })?;
    exchange_on(stream, request, started).await
}

/// A URL this client can reach: `http://` or `https://`, a host, an optional port and a path.
/// Parsed by the `url` crate (WHATWG rules: the host is lower-cased, IDNA names become
/// punycode, the path is percent-encoded where it must be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    /// The host with the port if it is not the scheme's default (the Host header).
    pub authority: String,
    /// The host name or address, without brackets.
    pub host: String,
    pub port: u16,
    /// The path and query, `/` at least.
    pub path: String,
}

/// Why a URL was refused. The messages never quote credentials written in the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{url}` is not an http:// or https:// URL")]
    Scheme { url: String },
    #[error("`{url}` is not an http:// URL")]
    NotHttp { url: String },
    #[error("credentials in the URL are not supported; use a header")]
    Credentials,
    #[error("`{url}` has no host")]
    NoHost { url: String },
    #[error("`{url}` has a bad port")]
    BadPort { url: String },
    #[error("`{url}` is not a valid URL: {source}")]
    Invalid { url: String, source: url::ParseError },
}

/// Callers whose own errors are still words (`?` in a function returning `Result<_, String>`).
impl From<UrlError> for String {
    fn from(err: UrlError) -> String {
        err.to_string()
    }
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, UrlError> {
        let https = match text.get(..8).map(str::to_ascii_lowercase) {
            Some(prefix) if prefix == "https://" => true,
            _ if text.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("http://")) => false,
            _ => return Err(UrlError::Scheme { url: redact_userinfo(text) }),
        };
        let rest = &text[if https { 8 } else { 7 }..];
        // Checked on the text: the parser would accept `user:password@` and the error messages
        // below quote the URL.
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        // WHATWG parsing would take `http:///x` as the host `x`; a URL in a config means what it says.
        if authority.is_empty() {
            return Err(UrlError::NoHost { url: text.to_owned() });
        }
        let parsed = url::Url::parse(text).map_err(|source| match source {
            url::ParseError::EmptyHost => UrlError::NoHost { url: text.to_owned() },
            url::ParseError::InvalidPort => UrlError::BadPort { url: text.to_owned() },
            source => UrlError::Invalid { url: text.to_owned(), source },
        })?;
        let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
            return Err(UrlError::NoHost { url: text.to_owned() });
        };
        let port = parsed.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
        let authority = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let path = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        let path = if path.starts_with('/') { path } else { format!("/{path}") };
        Ok(Url { https, authority, host, port, path })
    }
}

/// The URL with anything before an `@` in its authority hidden (user:password).
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…{}", &url[..scheme], &url[at..]),
        _ => url.to_owned(),
    }
}

/// A request to a URL, HTTP or HTTPS (checked against the system's CA certificates, or the
/// bundle named by `SSL_CERT_FILE`).
pub struct UrlRequest<'a> {
    pub method: &'a str,
    pub url: &'a Url,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<Vec<u8>>,
    pub timeout: Duration,
    /// CA certificates to trust instead of the system's (a private CA).
    pub ca_file: Option<&'a std::path::Path>,
}

pub async fn send_url(request: UrlRequest<'_>) -> Result<Reply, HttpError> {
    let timeout = request.timeout;
    let url = request.url;
    match tokio::time::timeout(timeout, exchange_url(request)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::TimeoutAt { host: url.authority.clone(), timeout }),
    }
}

async fn exchange_url(request: UrlRequest<'_>) -> Result<Reply, HttpError> {
    let started = Instant::now();
    let (response, address, leaf) = open_url(request).await?;
    let mut reply = collect(response, address, started).await?;
    reply.peer_certificate = leaf;
    Ok(reply)
}

/// A response whose body is read as it arrives: server-sent events, a log that follows.
pub struct Streaming {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    address: SocketAddr,
    body: hyper::body::Incoming,
}

impl Streaming {
    /// The next piece of the body as it came off the wire; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpError> {
        while let Some(frame) = self.body.frame().await {
            let frame = frame.map_err(|err| HttpError::Protocol {
                address: self.address,
                message: format!("reading the body: {err}"),
            })?;
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// The whole rest of the body, without the size limit of [`send_url`] (for a peer that is
    /// trusted to send what it was asked for, such as the Windlass server to its CLI).
    pub async fn bytes(self) -> Result<Bytes, HttpError> {
        let address = self.address;
        Ok(self
            .body
            .collect()
            .await
            .map_err(|err| HttpError::Protocol { address, message: format!("reading the body: {err}") })?
            .to_bytes())
    }
}

/// Sends a request and returns once the response's head has arrived: `timeout` bounds the
/// connection, the TLS handshake and the wait for the head, not the body.
pub async fn stream_url(request: UrlRequest<'_>) -> Result<Streaming, HttpError> {
    let timeout = request.timeout;
    let url = request.url;
    match tokio::time::timeout(timeout, open_url(request)).await {
        Ok(result) => {
            let (response, address, _) = result?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            Ok(Streaming { status, headers, address, body: response.into_body() })
        }
        Err(_) => Err(HttpError::TimeoutAt { host: url.authority.clone(), timeout }),
    }
}

type Opened = (hyper::Response<hyper::body::Incoming>, SocketAddr, Option<Bytes>);

/// Connects (with TLS for `https://`), sends the request and waits for the response's head.
async fn open_url(request: UrlRequest<'_>) -> Result<Opened, HttpError> {
    let url = request.url;
    let address = resolve(&url.host, url.port).await?;
    let stream =
        tokio::net::TcpStream::connect(address).await.map_err(|source| HttpError::Connect { address, source })?;
    let ca_file = request.ca_file;
    let plain = Request {
        method: request.method,
        address,
        host: &url.authority,
        path: &url.path,
        headers: request.headers,
        body: request.body,
        timeout: request.timeout,
    };
    if !url.https {
        return Ok((respond_on(stream, plain).await?, address, None));
    }
    let tls = |message: String| HttpError::Tls { host: url.host.clone(), message };
    let config = client_config(ca_file).map_err(tls)?;
    let name = rustls_pki_types::ServerName::try_from(url.host.clone()).map_err(|e| tls(e.to_string()))?;
    let stream =
        tokio_rustls::TlsConnector::from(config).connect(name, stream).await.map_err(|e| tls(e.to_string()))?;
    let leaf =
        stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(|c| Bytes::copy_from_slice(c));
    Ok((respond_on(stream, plain).await?, address, leaf))
}

/// The first address of `host`: `localhost` and names under `.localhost` are loopback (RFC 6761)
/// even where the system resolver does not know them; anything else asks the resolver.
pub async fn resolve(host: &str, port: u16) -> Result<SocketAddr, HttpError> {
    let lower = host.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await
        .map_err(|err| HttpError::Resolve { host: host.to_owned(), message: err.to_string() })?
        .next()
        .ok_or_else(|| HttpError::Resolve { host: host.to_owned(), message: "no address".into() })
}

/// Where CA certificates are read from: `SSL_CERT_FILE`, or Debian's bundle.
fn ca_bundle() -> std::path::PathBuf {
    std::env::var_os("SSL_CERT_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into())
}

/// TLS settings per CA bundle, with the bundle's modification time: built once, not for every
/// request (the system bundle holds over a hundred certificates), and again when the file changes.
type ConfigCache =
    std::collections::HashMap<std::path::PathBuf, (std::time::SystemTime, std::sync::Arc<rustls::ClientConfig>)>;
static CLIENT_CONFIGS: std::sync::LazyLock<std::sync::Mutex<ConfigCache>> = std::sync::LazyLock::new(Default::default);

fn client_config(ca_file: Option<&std::path::Path>) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    let bundle = ca_file.map(std::path::Path::to_owned).unwrap_or_else(ca_bundle);
    let modified = std::fs::metadata(&bundle).and_then(|m| m.modified()).ok();
    if let (Some(modified), Ok(cache)) = (modified, CLIENT_CONFIGS.lock())
        && let Some((when, config)) = cache.get(&bundle)
        && *when == modified
    {
        return Ok(config.clone());
    }
    let config = build_client_config(&bundle)?;
    if let (Some(modified), Ok(mut cache)) = (modified, CLIENT_CONFIGS.lock()) {
        cache.insert(bundle, (modified, config.clone()));
    }
    Ok(config)
}

fn build_client_config(bundle: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let certificates = rustls_pki_types::CertificateDer::pem_file_iter(bundle)
        .map_err(|err| format!("cannot read CA certificates from {} ({err}); set SSL_CERT_FILE", bundle.display()))?;
    for certificate in certificates.flatten() {
        let _ = roots.add(certificate);
    }
    if roots.is_empty() {
        return Err(format!("{} holds no CA certificate; set SSL_CERT_FILE", bundle.display()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

async fn exchange_on<S>(stream: S, request: Request<'_>, started: Instant) -> Result<Reply, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let address = request.address;
    let response = respond_on(stream, request).await?;
    collect(response, address, started).await
}

async fn respond_on<S>(stream: S, request: Request<'_>) -> Result<hyper::Response<hyper::body::Incoming>, HttpError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let address = request.address;
    let protocol = |message: String| HttpError::Protocol { address, message };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|err| protocol(err.to_string()))?;
    // The connection task ends with the exchange: it is owned by this request, not the caller.
    #[allow(clippy::disallowed_methods)]
    tokio::spawn(connection);
    let host = if request.host.is_empty() { address.to_string() } else { request.host.to_owned() };
    let mut builder = hyper::Request::builder().method(request.method).uri(request.path).header("host", host);
    for (name, value) in request.headers {
        builder = builder.header(*name, *value);
    }
    if request.body.is_some() && !request.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-type")) {
        builder = builder.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
    let outgoing = builder.body(body).map_err(|err| protocol(err.to_string()))?;
    sender.send_request(outgoing).await.map_err(|err| protocol(err.to_string()))
}

async fn collect(
    response: hyper::Response<hyper::body::Incoming>,
    address: SocketAddr,
    started: Instant,
) -> Result<Reply, HttpError> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|err| HttpError::Protocol { address, message: format!("reading the body: {err}") })?
        .to_bytes();
    Ok(Reply { status, headers, body, elapsed: started.elapsed(), peer_certificate: None })
}

/// Parses `http://host[:port]/path?query` into (host with port as written, host name, port,
/// path). Only plain HTTP: smoke checks and health gates reach loopback and the edge.
pub fn split_url(url: &str) -> Result<(String, String, u16, String), UrlError> {
    let parsed = Url::parse(url)?;
    if parsed.https {
        return Err(UrlError::NotHttp { url: url.to_owned() });
    }
    Ok((parsed.authority, parsed.host, parsed.port, parsed.path))
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://api.maily.localhost:8080/health?x=1").unwrap(),
            ("api.maily.localhost:8080".into(), "api.maily.localhost".into(), 8080, "/health?x=1".into())
        );
        assert_eq!(split_url("http://example.test").unwrap().2, 80);
        assert!(split_url("https://x").is_err());
        assert!(split_url("http://x:notaport/").is_err());
    }

    #[test]
    fn https_urls_default_to_port_443_and_credentials_are_refused_unshown() {
        let url = super::Url::parse("https://hooks.slack.test/services/T0/B0/x").unwrap();
        assert_eq!(
            (url.https, url.port, url.host.as_str(), url.path.as_str()),
            (true, 443, "hooks.slack.test", "/services/T0/B0/x")
        );
        assert_eq!(super::Url::parse("https://[::1]:8443/").unwrap().port, 8443);
        assert_eq!(super::Url::parse("http://127.0.0.1/").unwrap().port, 80);
        let err = super::Url::parse("ftp://user:hunter2@x/").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(super::Url::parse("https://user:hunter2@x/").unwrap_err().to_string().contains("credentials"));
        let query = super::Url::parse("https://hooks.test?token=s3cret").unwrap();
        assert_eq!((query.host.as_str(), query.path.as_str()), ("hooks.test", "/?token=s3cret"));
        assert_eq!(
            super::Url::parse("http://x:notaport/"),
            Err(super::UrlError::BadPort { url: "http://x:notaport/".into() })
        );
        assert!(matches!(super::Url::parse("http:///nohost"), Err(super::UrlError::NoHost { .. })));
        let v6 = super::Url::parse("http://[::1]/x").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(super::constant_time_eq(b"wl_token", b"wl_token"));
        assert!(!super::constant_time_eq(b"wl_token", b"wl_tokem"));
        assert!(!super::constant_time_eq(b"wl_token", b"wl_toke"));
        assert!(super::constant_time_eq(b"", b""));
    }

    #[tokio::test]
    async fn names_under_localhost_are_loopback() {
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 8080));
        assert_eq!(super::resolve("api.shop.localhost", 8080).await.unwrap(), loopback);
        assert_eq!(super::resolve("LOCALHOST", 8080).await.unwrap(), loopback);
        assert_eq!(super::resolve("::1", 80).await.unwrap().to_string(), "[::1]:80");
        assert!(matches!(super::resolve("no-such-host.invalid", 80).await, Err(super::HttpError::Resolve { .. })));
    }
}
