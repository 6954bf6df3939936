//! What the edge should do, as data: services with their routes and pools, weights, maintenance
//! and failover state. The admin API edits a copy, checks it, persists it, and only then compiles
//! it into the routing table that requests see; a rejected change leaves everything as it was.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The pool that takes a service's traffic when it fails over.
pub const SECONDARY_POOL: &str = "secondary";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSpec {
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Maintenance mode for every service at once.
    #[serde(default)]
    pub maintenance_all: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Named pools (`blue`, `green`, `secondary`, ...) of upstream instances.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolSpec>,
    #[serde(default)]
    pub maintenance: bool,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    #[serde(default)]
    pub failover: Option<FailoverSpec>,
    /// Traffic is on the secondary pool.
    #[serde(default)]
    pub failed_over: bool,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    // Per-endpoint counters (#18, for latency objectives per endpoint). Left out of the JSON when
    // empty, so that an edge a version older (whose spec refuses unknown fields) still takes the
    // specs of services that configure none.
    /// Endpoints counted apart, first match in this order; unmatched requests count as
    /// [`OTHER_ENDPOINT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointSpec>,
    /// Latencies (ms) under which requests are counted exactly, per endpoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds_ms: Vec<u64>,
}

// The endpoint rules are the config's, so that `validate` and the edge agree.
pub use windlass_config::{
    HTTP_METHODS as METHODS, MAX_ENDPOINTS, MAX_LATENCY_THRESHOLDS as MAX_THRESHOLDS, OTHER_ENDPOINT,
    endpoint_path_problem as path_pattern_problem,
};
/// Thresholds lie within 1 ms ..= 10 minutes.
pub const MAX_THRESHOLD_MS: u64 = 600_000;

/// One endpoint of a service: a path pattern and optionally the methods it is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub name: String,
    /// `/users/{id}/orders`, `/static/*`: literal segments, `{name}` for any one segment, and a
    /// last segment `*` for whatever follows (nothing included). See [`path_pattern_problem`].
    pub path: String,
    /// Upper case (`GET`, `POST`); every method when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Exact (`api.example.com`) or wildcard (`*.example.com`); any host when absent.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "root_path")]
    pub path: String,
}

fn root_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default)]
    pub instances: Vec<SocketAddr>,
    /// Percent of new clients; the weights of a service's pools (the secondary aside) add up to
    /// 100, or are all 0.
    #[serde(default)]
    pub weight: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverSpec {
    pub after_failures: u32,
    pub failback_after: u32,
    pub automatic: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    /// Requests per second per client IP.
    #[serde(default)]
    pub per_client_per_sec: Option<f64>,
    /// Requests per second for all clients of the service together.
    #[serde(default)]
    pub per_route_per_sec: Option<f64>,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Why a spec cannot be applied.
/// Why a persisted spec cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a valid edge state: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("{path}: {source}")]
    Invalid { path: String, source: SpecError },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("unknown service `{0}`")]
    UnknownService(String),
    #[error("service `{service}` has no pool `{pool}`")]
    UnknownPool { service: String, pool: String },
    #[error("weight {weight} for pool `{pool}` is outside 0..=100")]
    WeightOutOfRange { pool: String, weight: i64 },
    #[error("the weights of `{service}` add up to {sum}, not 100")]
    WeightsDoNotAddUp { service: String, sum: u32 },
    #[error("pool `{pool}` of `{service}` has weight {weight} but no instances")]
    WeightWithoutInstances { service: String, pool: String, weight: u8 },
    #[error("the secondary pool takes traffic only by failover; it has no weight")]
    SecondaryWeight,
    #[error("service `{0}` has no secondary pool to fail over to")]
    NoSecondary(String),
    #[error("services `{first}` and `{second}` both claim {host}{path}")]
    RouteClaimedTwice { first: String, second: String, host: String, path: String },
    #[error("invalid name `{0}`: use letters, digits, `-` and `_`")]
    BadName(String),
    #[error("invalid endpoints for `{service}`: {problem}")]
    BadEndpoints { service: String, problem: String },
    /// A number outside what the edge can act on sensibly (`field` is its path in the spec).
    #[error("`{field}` is {value}, outside {bound}")]
    OutOfRange { field: String, value: String, bound: String },
    /// A text value the edge cannot use (`field` is its path in the spec).
    #[error("`{field}` {problem}")]
    BadValue { field: String, problem: String },
}

/// The ranges [`EdgeSpec::check`] enforces, as numbers and as the words its errors use.
pub mod limits {
    /// Health checks: at least every 10 ms, at most every hour.
    pub const INTERVAL_MS: std::ops::RangeInclusive<u64> = 10..=3_600_000;
    /// A health check's timeout: 10 ms to 10 minutes.
    pub const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 10..=600_000;
    /// Checks in a row for health and failover decisions (the config's bounds: 0 would decide
    /// before any check).
    pub const CHECKS_IN_A_ROW: std::ops::RangeInclusive<u32> = 1..=1_000_000;
    /// Requests per second of a rate limit: one an hour (the slowest rate the config can write,
    /// 2.8e-4) rounded down, up to 10^10. Below the minimum, `Retry-After` would say days.
    pub const MIN_RATE: f64 = 1e-4;
    pub const MAX_RATE: f64 = 1e10;
    /// A rate limit's burst.
    pub const BURST: std::ops::RangeInclusive<u32> = 1..=1_000_000;
    /// Paths (routes and health checks) and hosts.
    pub const MAX_PATH: usize = 2048;
    pub const MAX_HOST: usize = 253;
}

fn out_of_range(field: String, value: impl std::fmt::Display, bound: impl std::fmt::Display) -> SpecError {
    SpecError::OutOfRange { field, value: value.to_string(), bound: bound.to_string() }
}

fn check_range<T: PartialOrd + std::fmt::Display>(
    field: impl FnOnce() -> String,
    value: T,
    range: &std::ops::RangeInclusive<T>,
) -> Result<(), SpecError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(out_of_range(field(), value, format!("{}..={}", range.start(), range.end())))
}

/// A path the edge matches or requests: absolute, visible ASCII, no query or fragment.
fn check_path(field: impl Fn() -> String, path: &str) -> Result<(), SpecError> {
    let bad = |problem: String| Err(SpecError::BadValue { field: field(), problem });
    if !path.starts_with('/') {
        return bad(format!("`{path}` must start with /"));
    }
    if path.len() > limits::MAX_PATH {
        return bad(format!("is {} bytes long, more than {}", path.len(), limits::MAX_PATH));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic() || *c == '?' || *c == '#') {
        return bad(format!(
            "`{}` holds {c:?}: use visible ASCII without `?` or `#` (percent-encode the rest)",
            path.escape_debug()
        ));
    }
    Ok(())
}

/// A route's host: a DNS name (optionally `*.` for its subdomains) or a bracketed IPv6 address.
fn check_host(field: impl Fn() -> String, host: &str) -> Result<(), SpecError> {
    let bad = |problem: String| Err(SpecError::BadValue { field: field(), problem });
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.is_empty() {
        return bad("is empty: leave the host out to match any host".into());
    }
    if host.len() > limits::MAX_HOST {
        return bad(format!("is {} bytes long, more than {}", host.len(), limits::MAX_HOST));
    }
    let bracketed = name.starts_with('[') && name.ends_with(']');
    let allowed = |c: char| {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (bracketed && matches!(c, '[' | ']' | ':'))
    };
    if let Some(c) = name.chars().find(|c| !allowed(*c)) {
        return bad(format!(
            "`{}` holds {c:?}: a host name without port, such as `api.example.com`",
            host.escape_debug()
        ));
    }
    Ok(())
}

impl ServiceSpec {
    /// The ranges and forms of one service's values (`name` is the service's).
    fn check_values(&self, name: &str) -> Result<(), SpecError> {
        let at = |field: &str| format!("services.{name}.{field}");
        for (index, route) in self.routes.iter().enumerate() {
            check_path(|| at(&format!("routes[{index}].path")), &route.path)?;
            if let Some(host) = &route.host {
                check_host(|| at(&format!("routes[{index}].host")), host)?;
            }
        }
        for (pool_name, pool) in &self.pools {
            if let Some(zero) = pool.instances.iter().find(|i| i.port() == 0 || i.ip().is_unspecified()) {
                return Err(SpecError::BadValue {
                    field: at(&format!("pools.{pool_name}.instances")),
                    problem: format!("holds {zero}: an instance needs a port and an address to connect to"),
                });
            }
        }
        if let Some(health) = &self.health {
            check_path(|| at("health.path"), &health.path)?;
            check_range(|| at("health.interval_ms"), health.interval_ms, &limits::INTERVAL_MS)?;
            check_range(|| at("health.timeout_ms"), health.timeout_ms, &limits::TIMEOUT_MS)?;
            check_range(|| at("health.healthy_after"), health.healthy_after, &limits::CHECKS_IN_A_ROW)?;
            check_range(|| at("health.unhealthy_after"), health.unhealthy_after, &limits::CHECKS_IN_A_ROW)?;
        }
        if let Some(failover) = &self.failover {
            check_range(|| at("failover.after_failures"), failover.after_failures, &limits::CHECKS_IN_A_ROW)?;
            check_range(|| at("failover.failback_after"), failover.failback_after, &limits::CHECKS_IN_A_ROW)?;
        }
        if let Some(limit) = &self.rate_limit {
            for (field, rate) in
                [("per_client_per_sec", limit.per_client_per_sec), ("per_route_per_sec", limit.per_route_per_sec)]
            {
                // NaN fails both comparisons, so it is refused as well.
                if let Some(rate) = rate
                    && !(limits::MIN_RATE..=limits::MAX_RATE).contains(&rate)
                {
                    let bound = format!("{}..={} requests a second", limits::MIN_RATE, limits::MAX_RATE);
                    // `{:?}`: 1e-300 as written, not as 300 zeros.
                    return Err(out_of_range(at(&format!("rate_limit.{field}")), format!("{rate:?}"), bound));
                }
            }
            if let Some(burst) = limit.burst {
                check_range(|| at("rate_limit.burst"), burst, &limits::BURST)?;
            }
        }
        Ok(())
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 63 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A service's endpoints and thresholds: at most [`MAX_ENDPOINTS`] with unique valid names
/// (never [`OTHER_ENDPOINT`]), valid patterns and known methods; at most [`MAX_THRESHOLDS`]
/// distinct thresholds, each 1 ms ..= [`MAX_THRESHOLD_MS`].
fn check_endpoints(service: &ServiceSpec) -> Result<(), String> {
    if service.endpoints.len() > MAX_ENDPOINTS {
        return Err(format!("{} endpoints, at most {MAX_ENDPOINTS}", service.endpoints.len()));
    }
    let mut names = std::collections::BTreeSet::new();
    for endpoint in &service.endpoints {
        if !valid_name(&endpoint.name) || endpoint.name == OTHER_ENDPOINT {
            return Err(format!(
                "`{}` is not an endpoint name (letters, digits, `-`, `_`; not `other`)",
                endpoint.name
            ));
        }
        if !names.insert(endpoint.name.as_str()) {
            return Err(format!("endpoint `{}` is named twice", endpoint.name));
        }
        if let Some(problem) = path_pattern_problem(&endpoint.path) {
            return Err(format!("endpoint `{}`: {problem}", endpoint.name));
        }
        if let Some(method) = endpoint.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(format!(
                "endpoint `{}`: unknown method `{method}` (one of {})",
                endpoint.name,
                METHODS.join(", ")
            ));
        }
    }
    let distinct: std::collections::BTreeSet<u64> = service.thresholds_ms.iter().copied().collect();
    if distinct.len() != service.thresholds_ms.len() {
        return Err("a latency threshold is given twice".into());
    }
    if distinct.len() > MAX_THRESHOLDS {
        return Err(format!("{} latency thresholds, at most {MAX_THRESHOLDS}", distinct.len()));
    }
    if let Some(bad) = distinct.iter().find(|ms| !(1..=MAX_THRESHOLD_MS).contains(*ms)) {
        return Err(format!("latency threshold {bad} ms is outside 1..={MAX_THRESHOLD_MS} ms"));
    }
    Ok(())
}

impl EdgeSpec {
    /// Checks everything a routing table relies on.
    pub fn check(&self) -> Result<(), SpecError> {
        let mut claimed: BTreeMap<(Option<String>, String), &str> = BTreeMap::new();
        for (name, service) in &self.services {
            if !valid_name(name) {
                return Err(SpecError::BadName(name.clone()));
            }
            service.check_values(name)?;
            for route in &service.routes {
                // Hosts are matched lowercase: `API.x` and `api.x` are one host.
                let key =
                    (route.host.as_deref().map(str::to_ascii_lowercase), route.path.trim_end_matches('/').to_owned());
                if let Some(first) = claimed.insert(key, name) {
                    return Err(SpecError::RouteClaimedTwice {
                        first: first.to_owned(),
                        second: name.clone(),
                        host: route.host.clone().unwrap_or_else(|| "any host".into()),
                        path: route.path.clone(),
                    });
                }
            }
            let mut sum = 0u32;
            for (pool_name, pool) in &service.pools {
                if !valid_name(pool_name) {
                    return Err(SpecError::BadName(pool_name.clone()));
                }
                if pool_name == SECONDARY_POOL {
                    if pool.weight != 0 {
                        return Err(SpecError::SecondaryWeight);
                    }
                    continue;
                }
                if pool.weight > 100 {
                    return Err(SpecError::WeightOutOfRange {
                        pool: pool_name.clone(),
                        weight: i64::from(pool.weight),
                    });
                }
                if pool.weight > 0 && pool.instances.is_empty() {
                    return Err(SpecError::WeightWithoutInstances {
                        service: name.clone(),
                        pool: pool_name.clone(),
                        weight: pool.weight,
                    });
                }
                sum += u32::from(pool.weight);
            }
            if sum != 100 && sum != 0 {
                return Err(SpecError::WeightsDoNotAddUp { service: name.clone(), sum });
            }
            if service.failed_over && !service.pools.contains_key(SECONDARY_POOL) {
                return Err(SpecError::NoSecondary(name.clone()));
            }
            check_endpoints(service).map_err(|problem| SpecError::BadEndpoints { service: name.clone(), problem })?;
        }
        Ok(())
    }

    /// Sets a service's weights: named pools get their weight, the others 0.
    pub fn set_weights(&mut self, service: &str, weights: &BTreeMap<String, i64>) -> Result<(), SpecError> {
        let spec = self.services.get_mut(service).ok_or_else(|| SpecError::UnknownService(service.into()))?;
        for (pool, weight) in weights {
            if !spec.pools.contains_key(pool) {
                return Err(SpecError::UnknownPool { service: service.into(), pool: pool.clone() });
            }
            if !(0..=100).contains(weight) {
                return Err(SpecError::WeightOutOfRange { pool: pool.clone(), weight: *weight });
            }
            if pool == SECONDARY_POOL && *weight != 0 {
                return Err(SpecError::SecondaryWeight);
            }
        }
        for (name, pool) in spec.pools.iter_mut() {
            pool.weight = weights.get(name).map_or(0, |w| *w as u8);
        }
        self.check()
    }

    /// Reads a persisted spec; `None` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>, LoadError> {
        let path_text = || path.display().to_string();
        match std::fs::read(path) {
            Ok(bytes) => {
                let spec: EdgeSpec =
                    serde_json::from_slice(&bytes).map_err(|source| LoadError::Parse { path: path_text(), source })?;
                spec.check().map_err(|source| LoadError::Invalid { path: path_text(), source })?;
                Ok(Some(spec))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LoadError::Read { path: path_text(), source }),
        }
    }

    /// Writes the spec so that a crash at any moment leaves either the old or the new file:
    /// a temporary file beside it, synced, then renamed over it. The file is 0600 (it describes the
    /// platform's layout) and a missing directory is made 0700.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        windlass_failpoint::private::write_atomic_with_failpoint(path, &bytes, Some("edge.state.before_rename"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file written before per-endpoint counters (no `endpoints`, no `thresholds_ms`)
    /// loads, and counts nothing per endpoint.
    #[test]
    fn a_state_file_from_before_endpoints_loads() {
        let dir = windlass_testkit::tempdir();
        let path = dir.path().join("edge.json");
        let old = r#"{
  "services": {
    "api": {
      "routes": [{ "host": "api.localhost", "path": "/" }],
      "pools": { "blue": { "instances": ["127.0.0.1:9001"], "weight": 100 } },
      "maintenance": false,
      "health": null,
      "failover": null,
      "failed_over": false,
      "rate_limit": null
    }
  },
  "maintenance_all": false
}"#;
        std::fs::write(&path, old).unwrap();
        let spec = EdgeSpec::load(&path).unwrap().expect("the file is there");
        let api = &spec.services["api"];
        assert!(api.endpoints.is_empty() && api.thresholds_ms.is_empty());
        assert_eq!(api.pools["blue"].weight, 100);
    }
}
