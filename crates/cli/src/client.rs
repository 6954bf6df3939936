//! The CLI as the server's client: `deploy`, `rollback`, `status`, `lock`, `maintenance`,
//! `failover`, `scale`, `logs`. It finds the server at `--server` / `WINDLASS_SERVER`
//! (default http://127.0.0.1:7700) and presents the token from `--token-file` /
//! `WINDLASS_TOKEN` / `.windlass/token`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use windlass_http::{self as http, HttpError, Url, UrlRequest};

use crate::UsageError;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";

/// How long one call may take; a deploy's events are followed without a limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long connecting and the answer's head may take when following events.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Clone)]
pub struct Connection {
    /// The server's URL [default: WINDLASS_SERVER, or http://127.0.0.1:7700]
    #[arg(long, global = true)]
    server: Option<String>,
    /// A file holding your token [default: WINDLASS_TOKEN, or .windlass/token]
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust for an https:// server instead of the system's, for a
    /// server whose certificate a private CA signed [default: WINDLASS_CA_FILE]
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
}

impl Connection {
    /// A connection to `server` with the token in `token_file`.
    pub fn to(server: &str, token_file: &std::path::Path) -> Self {
        Connection { server: Some(server.to_owned()), token_file: Some(token_file.to_owned()), ca_file: None }
    }
}

pub struct Client {
    url: Url,
    token: String,
    ca_file: Option<PathBuf>,
}

impl Client {
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let server = connection
            .server
            .clone()
            .or_else(|| std::env::var("WINDLASS_SERVER").ok())
            .unwrap_or_else(|| DEFAULT_SERVER.into());
        let url = Url::parse(&server).map_err(|err| UsageError(format!("--server: {err}")))?;
        // An explicit --ca-file for an http:// server is a mistake worth saying; an exported
        // WINDLASS_CA_FILE is a default for https:// servers and is not used for http:// ones.
        if let Some(file) = &connection.ca_file
            && !url.https
        {
            return Err(UsageError(format!(
                "--ca-file {} is for an https:// server, and the server is {server}",
                file.display()
            ))
            .into());
        }
        let token = match (&connection.token_file, std::env::var("WINDLASS_TOKEN")) {
            (Some(file), _) => std::fs::read_to_string(file)
                .map_err(|e| UsageError(format!("cannot read the token file {}: {e}", file.display())))?,
            (None, Ok(token)) => token,
            (None, Err(_)) => std::fs::read_to_string(".windlass/token").map_err(|_| {
                UsageError("no token: set WINDLASS_TOKEN, pass --token-file, or create one with `windlass token create --for <you>`".into())
            })?,
        };
        let ca_file = connection
            .ca_file
            .clone()
            .or_else(|| std::env::var_os("WINDLASS_CA_FILE").map(PathBuf::from))
            .filter(|_| url.https);
        Ok(Client { url, token: token.trim().to_owned(), ca_file })
    }

    /// Sends a request to `/api/v1{path}` and returns once the answer's head has arrived.
    async fn open(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<http::Streaming> {
        let authorization = format!("Bearer {}", self.token);
        let url = Url { path: format!("/api/v1{path}"), ..self.url.clone() };
        let sent = http::stream_url(UrlRequest {
            method,
            url: &url,
            headers: &[("authorization", &authorization)],
            body: body.map(|b| b.to_string().into_bytes()),
            timeout,
            ca_file: self.ca_file.as_deref(),
        })
        .await;
        match sent {
            Ok(streaming) => Ok(streaming),
            Err(err @ (HttpError::Connect { .. } | HttpError::Resolve { .. })) => Err(anyhow::Error::new(err).context(
                format!("cannot reach the windlass server at {} (is `windlass server` running?)", self.url.authority),
            )),
            Err(HttpError::Timeout { .. } | HttpError::TimeoutAt { .. }) => {
                anyhow::bail!("the server did not answer within {} seconds", timeout.as_secs())
            }
            Err(err) => {
                Err(anyhow::Error::new(err)
                    .context(format!("talking to the windlass server at {}", self.url.authority)))
            }
        }
    }

    /// One call; a non-2xx answer becomes an error with the server's message.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let call = async {
            let response = self.open(method, path, body, CALL_TIMEOUT).await?;
            let status = response.status;
            let bytes = response.bytes().await?;
            anyhow::Ok((status, bytes))
        };
        let (status, bytes) =
            tokio::time::timeout(CALL_TIMEOUT, call).await.context("the server did not answer within 2 minutes")??;
        let value: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }));
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value.get("error").and_then(Value::as_str).unwrap_or("no message").to_owned();
        if (400..500).contains(&status) {
            Err(UsageError(message).into())
        } else {
            Err(anyhow::anyhow!("the server failed ({}): {message}", StatusLine(status)))
        }
    }

    /// Follows a server-sent event stream until it ends; `on_event(kind, data)`.
    pub async fn follow(&self, path: &str, mut on_event: impl FnMut(&str, &Value)) -> anyhow::Result<()> {
        let mut response = self.open("GET", path, None, FOLLOW_TIMEOUT).await?;
        if !(200..300).contains(&response.status) {
            anyhow::bail!("cannot follow {path}: {}", StatusLine(response.status));
        }
        let mut buffer = String::new();
        while let Some(data) = response.chunk().await? {
            buffer.push_str(&String::from_utf8_lossy(&data));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let mut kind = "message";
                let mut payload = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        payload.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                if payload.is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(&payload).unwrap_or(Value::String(payload.clone()));
                on_event(kind, &value);
            }
        }
        Ok(())
    }
}

/// `text` as one path segment of an API URL, whatever it holds: every byte but RFC 3986's
/// unreserved ones is percent-encoded (so `/`, `?`, `#`, `%`, spaces and non-ASCII stay inside
/// the segment), and a segment that is all dots (`.`, `..`) is encoded whole, as no dot segment
/// may reach a URL normaliser. A name like `../../x` reaches its own route and is answered as
/// an unknown name there, never another route.
pub fn segment(text: impl AsRef<str>) -> String {
    http::percent::segment(text.as_ref())
}

/// `text` as one query value (`?environment=...`): every byte but the unreserved ones encoded.
pub fn query_value(text: impl AsRef<str>) -> String {
    http::percent::encode(text.as_ref())
}

/// A status as hyper showed it before (`404 Not Found`), for messages that stay the same.
struct StatusLine(u16);

impl std::fmt::Display for StatusLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match http::StatusCode::from_u16(self.0) {
            Ok(code) => write!(f, "{code}"),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_keeps_every_name_inside_itself() {
        let cases = [
            ("api", "api"),
            ("../../x", "..%2F..%2Fx"),
            ("..", "%2E%2E"),
            (".", "%2E"),
            ("...", "%2E%2E%2E"),
            ("a b", "a%20b"),
            ("%2e%2e", "%252e%252e"),
            ("what?#x", "what%3F%23x"),
            ("café", "caf%C3%A9"),
            ("v1.2_rc-1~", "v1.2_rc-1~"),
        ];
        for (name, want) in cases {
            assert_eq!(segment(name), want, "{name}");
            // Decoded by the server, it is the name again.
            assert_eq!(http::percent::decode(&segment(name)), name);
        }
        assert_eq!(query_value("production&service=x"), "production%26service%3Dx");
    }
}
