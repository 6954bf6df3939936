//! The admin API's wire contract: every request and response body of `edge/src/admin.rs`, as
//! Rust types that the edge serves and [`crate::client`] reads, so a renamed field fails to
//! compile on both sides instead of reading as a default.
//!
//! The field names are the JSON the admin API has always served (scripts and tests read it): a
//! change here is a change of the wire format. This module holds data only; it must not reach
//! into the routing table or do I/O (`admin.rs` builds these values from the table).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use crate::endpoints::EndpointSnapshot;
use crate::metrics::Snapshot;
use crate::spec::{EdgeSpec, EndpointSpec, ServiceSpec};

pub use crate::shared::EdgeEvent;

/// The body of every refusal (4xx, 5xx): `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `GET /edge/state`: what the edge routes now, and the spec it was built from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeState {
    pub maintenance_all: bool,
    pub services: BTreeMap<String, ServiceState>,
    /// Served for people and tools; never read back by [`crate::client::EdgeClient`]: the spec's
    /// types refuse unknown fields, and an edge one version apart from its server (an upgrade
    /// done one process at a time) must not make every state read fail.
    #[serde(default, skip_deserializing)]
    pub spec: EdgeSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub maintenance: bool,
    pub failed_over: bool,
    pub pools: BTreeMap<String, PoolState>,
}

/// One pool as the edge reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolState {
    pub weight: u8,
    pub taking_traffic: bool,
    pub in_flight: u64,
    /// Takes no traffic and has nothing in flight: safe to stop.
    #[serde(default)]
    pub drained: bool,
    #[serde(default)]
    pub instances: Vec<InstanceState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceState {
    pub address: SocketAddr,
    pub healthy: bool,
    /// Taken out of rotation for a while after consecutive errors.
    #[serde(default)]
    pub ejected: bool,
    #[serde(default)]
    pub in_flight: u64,
}

/// `GET /edge/events`: the edge's recent events, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<EdgeEvent>,
}

/// The answer to every change of one service: its spec after the change (`None` once deleted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceChanged {
    pub service: String,
    pub spec: Option<ServiceSpec>,
}

/// `PUT /edge/services/{service}/weights`: pool name to weight (0..=100). Signed and wide on
/// the wire so that a negative or too large weight is refused by the spec check with its own
/// message rather than by the JSON reader.
pub type Weights = BTreeMap<String, i64>;

/// `PUT /edge/maintenance` and `PUT /edge/services/{service}/maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Switch {
    pub enabled: bool,
}

/// The answer to `PUT /edge/maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceAll {
    pub maintenance_all: bool,
}

/// `PUT /edge/services/{service}/failover`: `to` is `secondary` or `primary` (a string on the
/// wire so that another word is refused with a message naming both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    pub to: String,
}

/// `PUT /edge/services/{service}/pools/{pool}`: the pool's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolMembership {
    pub instances: Vec<SocketAddr>,
}

/// `PUT /edge/services/{service}/endpoints`: the endpoints a service's requests are counted
/// under and the latency thresholds counted, replaced together (routes, pools and weights stay).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointsRequest {
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    pub thresholds_ms: Vec<u64>,
}

/// `GET /edge/services/{service}/pools/{pool}/metrics`: a pool's counters since the edge
/// started, with a few figures read off them for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolMetrics {
    pub service: String,
    pub pool: String,
    pub requests: u64,
    pub errors: u64,
    pub p50_micros: Option<u64>,
    pub p95_micros: Option<u64>,
    pub p99_micros: Option<u64>,
    pub snapshot: Snapshot,
}

/// `GET /edge/counters`: the cumulative counters of every routed service, read in one pass over
/// one routing table: what SLO accounting and canary analysis consume (the same numbers
/// `/metrics` renders as Prometheus text for scrapers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub services: BTreeMap<String, ServiceCounters>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceCounters {
    /// Requests answered with the maintenance page (the service or the whole edge in maintenance).
    pub maintenance: u64,
    /// Requests refused by the service's rate limit.
    pub rate_limited: u64,
    /// Per pool of the current spec: its answers and latency histogram.
    pub pools: BTreeMap<String, Snapshot>,
    /// Per configured endpoint and `other` (every request forwarded to a pool counts under
    /// exactly one): answers by class and exact counts under each latency threshold. Empty (and
    /// left out) for a service without endpoints and thresholds, or from an older edge.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, EndpointSnapshot>,
}

#[cfg(test)]
mod tests {
    /// An edge one version ahead adds fields to its spec (whose types refuse unknown fields) and
    /// to its answers: the server's client still reads the state it needs.
    #[test]
    fn a_state_from_an_edge_a_version_apart_is_read() {
        let answer = r#"{"maintenance_all":true,"services":{},"spec":{"services":{},"a_newer_field":1},"another":[]}"#;
        let state: super::EdgeState = serde_json::from_str(answer).expect("the state is read");
        assert!(state.maintenance_all);
        assert!(state.services.is_empty());
    }

    /// Counters with endpoints are read by a reader that knows none (its types ignore unknown
    /// fields), and an older edge's counters, without them, are read as no endpoints.
    #[test]
    fn counters_with_and_without_endpoints_are_read_both_ways() {
        let old = r#"{"services":{"api":{"maintenance":1,"rate_limited":0,"pools":{}}}}"#;
        let counters: super::Counters = serde_json::from_str(old).expect("an older edge's counters are read");
        assert!(counters.services["api"].endpoints.is_empty());

        let mut new = counters.clone();
        let endpoint =
            super::EndpointSnapshot { by_class: [0, 7, 0, 0, 1], latency_under: [(200, 6), (500, 8)].into() };
        new.services.get_mut("api").unwrap().endpoints.insert("users".into(), endpoint.clone());
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""latency_under":{"200":6,"500":8}"#), "{text}");
        assert_eq!(serde_json::from_str::<super::Counters>(&text).unwrap(), new);

        #[derive(serde::Deserialize)]
        struct OldServiceCounters {
            maintenance: u64,
        }
        #[derive(serde::Deserialize)]
        struct OldCounters {
            services: std::collections::BTreeMap<String, OldServiceCounters>,
        }
        let read: OldCounters = serde_json::from_str(&text).expect("an older reader reads them");
        assert_eq!(read.services["api"].maintenance, 1);
        // Without endpoints, nothing new is written at all.
        assert_eq!(serde_json::to_string(&counters).unwrap(), old);
    }
}
