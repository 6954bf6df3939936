//! The CLI as the server's client: `deploy`, `rollback`, `status`, `lock`, `maintenance`,
//! `failover`, `scale`, `logs`. It finds the server at `--server` / `WINDLASS_SERVER`
//! (default http://127.0.0.1:7700) and presents the token from `--token-file` /
//! `WINDLASS_TOKEN` / `.windlass/token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::UsageError;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";

#[derive(clap::Args, Clone)]
pub struct Connection {
    /// The server's URL [default: WINDLASS_SERVER, or http://127.0.0.1:7700]
    #[arg(long, global = true)]
    server: Option<String>,
    /// A file holding your token [default: WINDLASS_TOKEN, or .windlass/token]
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

impl Connection {
    /// A connection to `server` with the token in `token_file`.
    pub fn to(server: &str, token_file: &std::path::Path) -> Self {
        Connection { server: Some(server.to_owned()), token_file: Some(token_file.to_owned()) }
    }
}

pub struct Client {
    address: SocketAddr,
    authority: String,
    token: String,
}

impl Client {
    pub fn new(connection: &Connection) -> anyhow::Result<Self> {
        let url = connection
            .server
            .clone()
            .or_else(|| std::env::var("WINDLASS_SERVER").ok())
            .unwrap_or_else(|| DEFAULT_SERVER.into());
        let (authority, host, port, _) = windlass_pipeline::http::split_url(&url).map_err(UsageError)?;
        let address = if host == "localhost" {
            SocketAddr::from(([127, 0, 0, 1], port))
        } else {
            use std::net::ToSocketAddrs as _;
            (host.as_str(), port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .ok_or_else(|| UsageError(format!("cannot resolve the server `{host}`")))?
        };
        let token = match (&connection.token_file, std::env::var("WINDLASS_TOKEN")) {
            (Some(file), _) => std::fs::read_to_string(file)
                .map_err(|e| UsageError(format!("cannot read the token file {}: {e}", file.display())))?,
            (None, Ok(token)) => token,
            (None, Err(_)) => std::fs::read_to_string(".windlass/token").map_err(|_| {
                UsageError("no token: set WINDLASS_TOKEN, pass --token-file, or create one with `windlass token create --name <you>`".into())
            })?,
        };
        Ok(Client { address, authority, token: token.trim().to_owned() })
    }

    async fn open(&self) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(self.address).await.with_context(|| {
            format!("cannot reach the windlass server at {} (is `windlass server` running?)", self.address)
        })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .header("host", &self.authority)
            .header("authorization", format!("Bearer {}", self.token));
        if body.is_some() {
            builder = builder.header("content-type", "application/json");
        }
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        Ok(builder.body(Full::new(bytes))?)
    }

    /// One call; a non-2xx answer becomes an error with the server's message.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut sender = self.open().await?;
        let response =
            tokio::time::timeout(Duration::from_secs(120), sender.send_request(self.request(method, path, body)?))
                .await
                .context("the server did not answer within 2 minutes")??;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({ "error": String::from_utf8_lossy(&bytes) }));
        if status.is_success() {
            return Ok(value);
        }
        let message = value.get("error").and_then(Value::as_str).unwrap_or("no message").to_owned();
        if status.is_client_error() {
            Err(UsageError(message).into())
        } else {
            Err(anyhow::anyhow!("the server failed ({status}): {message}"))
        }
    }

    /// Follows a server-sent event stream until it ends; `on_event(kind, data)`.
    pub async fn follow(&self, path: &str, mut on_event: impl FnMut(&str, &Value)) -> anyhow::Result<()> {
        let mut sender = self.open().await?;
        let response = sender.send_request(self.request("GET", path, None)?).await?;
        if !response.status().is_success() {
            anyhow::bail!("cannot follow {path}: {}", response.status());
        }
        let mut body = response.into_body();
        let mut buffer = String::new();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame?.into_data() else { continue };
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

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}
