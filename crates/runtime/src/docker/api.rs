//! A minimal Docker Engine API client: one HTTP/1.1 connection per request over the daemon's
//! unix socket, the API version pinned in every path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::DockerError;

/// The API version every path names: Docker Engine 20.10 speaks 1.41, and newer engines still
/// accept it.
pub const API_VERSION: &str = "v1.41";
/// The largest answer read (build output, logs, inspections).
const MAX_BODY: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// An answer: its status and its whole body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON; a body that is not is a bad answer for `action`.
    pub fn json(&self, action: &str) -> Result<serde_json::Value, DockerError> {
        serde_json::from_slice(&self.body)
            .map_err(|err| DockerError::BadAnswer { action: action.to_owned(), reason: format!("not JSON: {err}") })
    }

    /// What the daemon said went wrong: its `message`, or the body itself.
    pub fn message(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|value| value.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.trim().chars().take(500).collect())
    }

    /// `Ok` for a 2xx answer, else the daemon's refusal of `action`.
    pub fn ok(self, action: &str) -> Result<Answer, DockerError> {
        if self.status.is_success() { Ok(self) } else { Err(self.refused(action)) }
    }

    pub fn refused(&self, action: &str) -> DockerError {
        DockerError::Api { action: action.to_owned(), status: self.status.as_u16(), message: self.message() }
    }
}

impl Client {
    pub fn new(socket: PathBuf) -> Self {
        Client { socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request (`path` without the version prefix, with its query) and reads the whole
    /// answer within `timeout`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        action: &str,
        timeout: Duration,
    ) -> Result<Answer, DockerError> {
        match tokio::time::timeout(timeout, self.exchange(method, path, body, action)).await {
            Ok(result) => result,
            Err(_) => Err(DockerError::Timeout { action: action.to_owned(), timeout }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Bytes)>,
        action: &str,
    ) -> Result<Answer, DockerError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| DockerError::Unreachable { socket: self.socket.clone(), source })?;
        let http = |source: hyper::Error| DockerError::Http { action: action.to_owned(), source };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(http)?;
        // Not the control plane's: drives one Docker API connection, ends with it.
        #[allow(clippy::disallowed_methods)]
        let driver = tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%err, "docker connection ended with an error");
            }
        });
        let mut request =
            Request::builder().method(method).uri(format!("/{API_VERSION}{path}")).header("host", "docker");
        let body = match body {
            Some((content_type, bytes)) => {
                request = request.header("content-type", content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = request.body(Full::new(body)).map_err(|err| DockerError::BadAnswer {
            action: action.to_owned(),
            reason: format!("cannot form the request {path}: {err}"),
        })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|err| {
            DockerError::BadAnswer { action: action.to_owned(), reason: format!("cannot read the answer: {err}") }
        })?;
        driver.abort();
        Ok(Answer { status, body: body.to_bytes() })
    }
}

/// Percent-encodes a query value (everything but unreserved characters).
pub use windlass_http::percent::encode;

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode("windlass/web:abc"), "windlass%2Fweb%3Aabc");
        assert_eq!(encode(r#"{"label":["a=b"]}"#), "%7B%22label%22%3A%5B%22a%3Db%22%5D%7D");
    }
}
