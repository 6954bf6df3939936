//! A small HTTP/1.1 client for what Windlass asks of others: the edge's admin API, health
//! gates, smoke checks, OpenBao and webhooks. One connection per request (these are rare and must not share a
//! broken connection), a deadline over the whole exchange, and the time the exchange took.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Bodies larger than this are an error, not a memory problem.
const MAX_BODY: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
    pub elapsed: Duration,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {address}: {source}")]
    Connect { address: SocketAddr, source: std::io::Error },
    #[error("no answer from {address} within {timeout:?}")]
    Timeout { address: SocketAddr, timeout: Duration },
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
    let protocol = |message: String| HttpError::Protocol { address, message };
    let started = Instant::now();
    let stream =
        tokio::net::TcpStream::connect(address).await.map_err(|source| HttpError::Connect { address, source })?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|err| protocol(err.to_string()))?;
    tokio::spawn(connection);
    let host = if request.host.is_empty() { address.to_string() } else { request.host.to_owned() };
    let mut builder = hyper::Request::builder().method(request.method).uri(request.path).header("host", host);
    for (name, value) in request.headers {
        builder = builder.header(*name, *value);
    }
    if request.body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(request.body.unwrap_or_default()));
    let outgoing = builder.body(body).map_err(|err| protocol(err.to_string()))?;
    let response = sender.send_request(outgoing).await.map_err(|err| protocol(err.to_string()))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|err| protocol(format!("reading the body: {err}")))?
        .to_bytes();
    Ok(Reply { status, body, elapsed: started.elapsed() })
}

/// Parses `http://host[:port]/path?query` into (host with port as written, host name, port,
/// path). Only plain HTTP: smoke checks and health gates reach loopback and the edge.
pub fn split_url(url: &str) -> Result<(String, String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("`{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    let (name, port) = match authority.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(']') || authority.starts_with('[') => {
            let port = port.parse::<u16>().map_err(|_| format!("`{url}` has a bad port `{port}`"))?;
            (name.to_owned(), port)
        }
        _ => (authority.to_owned(), 80),
    };
    Ok((authority.to_owned(), name.trim_start_matches('[').trim_end_matches(']').to_owned(), port, path.to_owned()))
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
}
