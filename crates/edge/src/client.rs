//! The client of the admin API: what the control plane (pipeline, server, monitor) asks of a
//! running edge, written down once as the [`EdgeControl`] trait, and [`EdgeClient`], which
//! speaks it over HTTP with the types of [`crate::admin::api`].
//!
//! This module only talks to an edge over its admin listener; it must not reach into an edge's
//! memory (in-process callers use the same HTTP path as a remote server does) and must not
//! decide anything about deploys.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use windlass_http::HttpError;
// Every name goes into a path encoded, as one segment: a name is never a path of its own.
use windlass_http::percent::segment;

use crate::admin::api::{self, Counters, EdgeEvent, EdgeState, Events, FailoverRequest, PoolMembership, Switch};
use crate::metrics::Snapshot;
use crate::spec::{EndpointSpec, ServiceSpec};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("the edge's admin API at {address} cannot be reached: {source}")]
    Unreachable { address: SocketAddr, source: HttpError },
    #[error("the edge refused `{call}` ({status}): {message}")]
    Refused { call: String, status: u16, message: String },
    #[error("the edge answered `{call}` with something unreadable: {source}")]
    Unreadable { call: String, source: serde_json::Error },
    #[error("the body of `{call}` cannot be written: {source}")]
    Encode { call: String, source: serde_json::Error },
}

#[async_trait::async_trait]
pub trait EdgeControl: Send + Sync + std::fmt::Debug {
    async fn state(&self) -> Result<EdgeState, EdgeError>;
    /// The edge's recent events, oldest first.
    async fn events(&self) -> Result<Vec<EdgeEvent>, EdgeError>;
    /// Creates or replaces a service's whole spec (routes, pools, health...).
    async fn put_service(&self, service: &str, spec: &ServiceSpec) -> Result<(), EdgeError>;
    /// Sets a pool's members, creating it with weight 0 if new.
    async fn put_pool(&self, service: &str, pool: &str, instances: &[SocketAddr]) -> Result<(), EdgeError>;
    async fn delete_pool(&self, service: &str, pool: &str) -> Result<(), EdgeError>;
    /// Sets every pool's weight at once: the atomic switch.
    async fn set_weights(&self, service: &str, weights: &BTreeMap<String, u8>) -> Result<(), EdgeError>;
    async fn maintenance(&self, service: Option<&str>, enabled: bool) -> Result<(), EdgeError>;
    async fn failover(&self, service: &str, to: &str) -> Result<(), EdgeError>;
    /// Replaces the endpoints a service's requests are counted under and the latency thresholds
    /// counted (an edge older than per-endpoint counters refuses with 404).
    async fn set_endpoints(
        &self,
        service: &str,
        endpoints: &[EndpointSpec],
        thresholds_ms: &[u64],
    ) -> Result<(), EdgeError>;
    /// A pool's answer counters and latency histogram since the edge started.
    async fn pool_metrics(&self, service: &str, pool: &str) -> Result<Snapshot, EdgeError>;
    /// Every routed service's counters (pools, maintenance and rate-limited answers), read at
    /// one moment.
    async fn counters(&self) -> Result<Counters, EdgeError>;
    /// The secret that pins a request to a pool (`X-Windlass-Token`), derived from the admin
    /// token ([`crate::shared::pin_token`]): it can pin, and nothing else. The admin token itself
    /// never leaves for the data plane.
    fn pin_token(&self) -> String;
    /// Where the edge serves traffic.
    fn public_address(&self) -> SocketAddr;
}

/// An edge reached over its admin API.
#[derive(Clone)]
pub struct EdgeClient {
    pub admin: SocketAddr,
    pub public: SocketAddr,
    /// The admin token (or a read token, for a client that only reads).
    pub token: String,
    /// `https://` to the admin listener, when it serves TLS (`[edge] admin_tls`).
    pub tls: Option<AdminTls>,
}

/// How the control plane reaches an admin listener that serves TLS: the certificate must be
/// valid for the admin address's IP (an IP subject alternative name), signed by `ca_file` (a
/// private CA) or else by a CA of the system's bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    pub ca_file: Option<std::path::PathBuf>,
}

/// By hand: the admin token never reaches a log line.
impl std::fmt::Debug for EdgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeClient")
            .field("admin", &self.admin)
            .field("public", &self.public)
            .field("token", &"<hidden>")
            .field("tls", &self.tls)
            .finish()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl EdgeClient {
    /// A client of the admin API at `admin` (plain HTTP) for the edge serving at `public`.
    pub fn new(admin: SocketAddr, public: SocketAddr, token: impl Into<String>) -> Self {
        EdgeClient { admin, public, token: token.into(), tls: None }
    }

    /// The same client over TLS.
    pub fn with_tls(self, tls: AdminTls) -> Self {
        EdgeClient { tls: Some(tls), ..self }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<windlass_http::Reply, EdgeError> {
        // Every call carries the token: reads need it too.
        let authorization = format!("Bearer {}", self.token);
        let headers = [("authorization", authorization.as_str())];
        let sent = match &self.tls {
            None => {
                windlass_http::send(windlass_http::Request {
                    method,
                    address: self.admin,
                    host: "",
                    path,
                    headers: &headers,
                    body,
                    timeout: TIMEOUT,
                })
                .await
            }
            Some(tls) => {
                // The certificate is checked against the address's IP: the one name the client
                // has for the edge, and the one it connects to (no resolver in between).
                let url = windlass_http::Url {
                    https: true,
                    authority: self.admin.to_string(),
                    host: self.admin.ip().to_string(),
                    port: self.admin.port(),
                    path: path.to_owned(),
                };
                windlass_http::send_url(windlass_http::UrlRequest {
                    method,
                    url: &url,
                    headers: &headers,
                    body,
                    timeout: TIMEOUT,
                    ca_file: tls.ca_file.as_deref(),
                })
                .await
            }
        };
        let reply = sent.map_err(|source| EdgeError::Unreachable { address: self.admin, source })?;
        if (200..300).contains(&reply.status) {
            return Ok(reply);
        }
        let message = serde_json::from_slice::<api::ErrorBody>(&reply.body)
            .map(|body| body.error)
            .unwrap_or_else(|_| reply.text());
        Err(EdgeError::Refused { call: format!("{method} {path}"), status: reply.status, message })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, EdgeError> {
        let reply = self.call("GET", path, None).await?;
        serde_json::from_slice(&reply.body)
            .map_err(|source| EdgeError::Unreadable { call: format!("GET {path}"), source })
    }

    async fn put(&self, path: &str, body: &impl Serialize) -> Result<(), EdgeError> {
        let body =
            serde_json::to_vec(body).map_err(|source| EdgeError::Encode { call: format!("PUT {path}"), source })?;
        self.call("PUT", path, Some(body)).await.map(drop)
    }
}

#[async_trait::async_trait]
impl EdgeControl for EdgeClient {
    async fn state(&self) -> Result<EdgeState, EdgeError> {
        self.get("/edge/state").await
    }

    async fn events(&self) -> Result<Vec<EdgeEvent>, EdgeError> {
        self.get::<Events>("/edge/events").await.map(|answer| answer.events)
    }

    async fn put_service(&self, service: &str, spec: &ServiceSpec) -> Result<(), EdgeError> {
        self.put(&format!("/edge/services/{}", segment(service)), spec).await
    }

    async fn put_pool(&self, service: &str, pool: &str, instances: &[SocketAddr]) -> Result<(), EdgeError> {
        let body = PoolMembership { instances: instances.to_vec() };
        self.put(&format!("/edge/services/{}/pools/{}", segment(service), segment(pool)), &body).await
    }

    async fn delete_pool(&self, service: &str, pool: &str) -> Result<(), EdgeError> {
        self.call("DELETE", &format!("/edge/services/{}/pools/{}", segment(service), segment(pool)), None)
            .await
            .map(drop)
    }

    async fn set_weights(&self, service: &str, weights: &BTreeMap<String, u8>) -> Result<(), EdgeError> {
        self.put(&format!("/edge/services/{}/weights", segment(service)), weights).await
    }

    async fn maintenance(&self, service: Option<&str>, enabled: bool) -> Result<(), EdgeError> {
        let path = match service {
            Some(service) => format!("/edge/services/{}/maintenance", segment(service)),
            None => "/edge/maintenance".to_owned(),
        };
        self.put(&path, &Switch { enabled }).await
    }

    async fn failover(&self, service: &str, to: &str) -> Result<(), EdgeError> {
        self.put(&format!("/edge/services/{}/failover", segment(service)), &FailoverRequest { to: to.to_owned() }).await
    }

    async fn set_endpoints(
        &self,
        service: &str,
        endpoints: &[EndpointSpec],
        thresholds_ms: &[u64],
    ) -> Result<(), EdgeError> {
        let body = api::EndpointsRequest { endpoints: endpoints.to_vec(), thresholds_ms: thresholds_ms.to_vec() };
        self.put(&format!("/edge/services/{}/endpoints", segment(service)), &body).await
    }

    async fn pool_metrics(&self, service: &str, pool: &str) -> Result<Snapshot, EdgeError> {
        let path = format!("/edge/services/{}/pools/{}/metrics", segment(service), segment(pool));
        self.get::<api::PoolMetrics>(&path).await.map(|answer| answer.snapshot)
    }

    async fn counters(&self) -> Result<Counters, EdgeError> {
        self.get("/edge/counters").await
    }

    fn pin_token(&self) -> String {
        crate::shared::pin_token(&self.token).unwrap_or_default()
    }

    fn public_address(&self) -> SocketAddr {
        self.public
    }
}
