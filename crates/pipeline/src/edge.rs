//! How the pipeline moves traffic: through the edge's admin API. A trait, so that what the
//! pipeline asks of the edge is written down in one place; [`EdgeClient`] speaks HTTP to a
//! running `windlass edge`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use windlass_edge::spec::ServiceSpec;

use crate::http::{self, HttpError};

#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("the edge's admin API at {address} cannot be reached: {source}")]
    Unreachable { address: SocketAddr, source: HttpError },
    #[error("the edge refused `{call}` ({status}): {message}")]
    Refused { call: String, status: u16, message: String },
    #[error("the edge answered `{call}` with something unreadable: {message}")]
    Unreadable { call: String, message: String },
}

/// One pool as the edge reports it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PoolState {
    pub weight: u8,
    pub in_flight: u64,
    pub taking_traffic: bool,
    #[serde(default)]
    pub instances: Vec<InstanceState>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct InstanceState {
    pub address: SocketAddr,
    pub healthy: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ServiceState {
    pub maintenance: bool,
    pub failed_over: bool,
    pub pools: BTreeMap<String, PoolState>,
}

/// Something the edge did (a failover, a weights change), as `GET /edge/events` lists it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EdgeEvent {
    pub at_unix_ms: u64,
    pub service: String,
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
pub struct EdgeState {
    pub maintenance_all: bool,
    pub services: BTreeMap<String, ServiceState>,
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
    /// A pool's answer counters and latency histogram since the edge started.
    async fn pool_metrics(&self, service: &str, pool: &str) -> Result<windlass_edge::metrics::Snapshot, EdgeError>;
    /// The admin token, which the edge also accepts to pin a request to a pool.
    fn pin_token(&self) -> &str;
    /// Where the edge serves traffic.
    fn public_address(&self) -> SocketAddr;
}

#[derive(Debug, Clone)]
pub struct EdgeClient {
    pub admin: SocketAddr,
    pub public: SocketAddr,
    pub token: String,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl EdgeClient {
    async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<http::Reply, EdgeError> {
        let authorization = format!("Bearer {}", self.token);
        let reply = http::send(http::Request {
            method,
            address: self.admin,
            host: "",
            path,
            headers: &[("authorization", &authorization)],
            body: body.map(|b| b.to_string().into_bytes()),
            timeout: TIMEOUT,
        })
        .await
        .map_err(|source| EdgeError::Unreachable { address: self.admin, source })?;
        if (200..300).contains(&reply.status) {
            return Ok(reply);
        }
        let message = serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| reply.text());
        Err(EdgeError::Refused { call: format!("{method} {path}"), status: reply.status, message })
    }
}

#[async_trait::async_trait]
impl EdgeControl for EdgeClient {
    async fn state(&self) -> Result<EdgeState, EdgeError> {
        let reply = self.call("GET", "/edge/state", None).await?;
        serde_json::from_slice(&reply.body)
            .map_err(|err| EdgeError::Unreadable { call: "GET /edge/state".into(), message: err.to_string() })
    }

    async fn events(&self) -> Result<Vec<EdgeEvent>, EdgeError> {
        #[derive(Deserialize)]
        struct Answer {
            events: Vec<EdgeEvent>,
        }
        let reply = self.call("GET", "/edge/events", None).await?;
        serde_json::from_slice::<Answer>(&reply.body)
            .map(|a| a.events)
            .map_err(|err| EdgeError::Unreadable { call: "GET /edge/events".into(), message: err.to_string() })
    }

    async fn put_service(&self, service: &str, spec: &ServiceSpec) -> Result<(), EdgeError> {
        let body = serde_json::to_value(spec)
            .map_err(|err| EdgeError::Unreadable { call: "service spec".into(), message: err.to_string() })?;
        self.call("PUT", &format!("/edge/services/{service}"), Some(body)).await.map(drop)
    }

    async fn put_pool(&self, service: &str, pool: &str, instances: &[SocketAddr]) -> Result<(), EdgeError> {
        let body = serde_json::json!({ "instances": instances });
        self.call("PUT", &format!("/edge/services/{service}/pools/{pool}"), Some(body)).await.map(drop)
    }

    async fn delete_pool(&self, service: &str, pool: &str) -> Result<(), EdgeError> {
        self.call("DELETE", &format!("/edge/services/{service}/pools/{pool}"), None).await.map(drop)
    }

    async fn set_weights(&self, service: &str, weights: &BTreeMap<String, u8>) -> Result<(), EdgeError> {
        let body = serde_json::to_value(weights)
            .map_err(|err| EdgeError::Unreadable { call: "weights".into(), message: err.to_string() })?;
        self.call("PUT", &format!("/edge/services/{service}/weights"), Some(body)).await.map(drop)
    }

    async fn maintenance(&self, service: Option<&str>, enabled: bool) -> Result<(), EdgeError> {
        let path = match service {
            Some(service) => format!("/edge/services/{service}/maintenance"),
            None => "/edge/maintenance".to_owned(),
        };
        self.call("PUT", &path, Some(serde_json::json!({ "enabled": enabled }))).await.map(drop)
    }

    async fn failover(&self, service: &str, to: &str) -> Result<(), EdgeError> {
        let body = serde_json::json!({ "to": to });
        self.call("PUT", &format!("/edge/services/{service}/failover"), Some(body)).await.map(drop)
    }

    async fn pool_metrics(&self, service: &str, pool: &str) -> Result<windlass_edge::metrics::Snapshot, EdgeError> {
        let path = format!("/edge/services/{service}/pools/{pool}/metrics");
        let reply = self.call("GET", &path, None).await?;
        #[derive(Deserialize)]
        struct Answer {
            snapshot: windlass_edge::metrics::Snapshot,
        }
        serde_json::from_slice::<Answer>(&reply.body)
            .map(|a| a.snapshot)
            .map_err(|err| EdgeError::Unreadable { call: format!("GET {path}"), message: err.to_string() })
    }

    fn pin_token(&self) -> &str {
        &self.token
    }

    fn public_address(&self) -> SocketAddr {
        self.public
    }
}
