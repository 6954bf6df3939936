//! The routing table requests see: compiled from an [`EdgeSpec`], immutable, and replaced as a
//! whole (`ArcSwap`), so no request ever sees half of a change. Instances, metrics and rate
//! limiters live in a [`Registry`] and are shared by every table that names them, so health
//! state, in-flight counts and counters survive a table swap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::endpoints::{EndpointCounters, ServiceEndpoints};
use crate::metrics::PoolMetrics;
use crate::ratelimit::RateLimiter;
use crate::spec::{EdgeSpec, SECONDARY_POOL};

/// One upstream instance and what the edge knows of it.
#[derive(Debug)]
pub struct Instance {
    pub address: SocketAddr,
    /// The active checks' verdict (instances start healthy; the passive detector and the checks
    /// take them out).
    pub healthy: AtomicBool,
    /// Requests (and WebSocket sessions) in flight on it.
    pub outstanding: AtomicUsize,
    /// Consecutive 5xx answers or connect errors seen by the proxy.
    pub consecutive_errors: AtomicU32,
    /// Milliseconds since the edge started until which passive detection keeps it out.
    pub ejected_until_ms: AtomicU64,
    /// Ejections in a row without a success in between (each doubles the back-off).
    pub ejections: AtomicU32,
    /// Consecutive failed and passed active checks.
    pub check_failures: AtomicU32,
    pub check_passes: AtomicU32,
}

impl Instance {
    fn new(address: SocketAddr) -> Self {
        Instance {
            address,
            healthy: AtomicBool::new(true),
            outstanding: AtomicUsize::new(0),
            consecutive_errors: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            check_passes: AtomicU32::new(0),
        }
    }

    pub fn usable(&self, now_ms: u64) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.ejected_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub weight: u8,
    pub instances: Vec<Arc<Instance>>,
    pub metrics: Arc<PoolMetrics>,
}

impl Pool {
    pub fn in_flight(&self) -> usize {
        self.instances.iter().map(|i| i.outstanding.load(Ordering::Relaxed)).sum()
    }
}

#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub pools: Vec<Pool>,
    pub maintenance: bool,
    pub failed_over: bool,
    pub secondary: Option<usize>,
    pub rate_limiter: Option<Arc<RateLimiter>>,
    /// Metrics for answers given before a pool is chosen (maintenance, rate limit).
    pub edge_metrics: Arc<PoolMetrics>,
    /// Per-endpoint counters; `None` (no work per request) without endpoints and thresholds.
    pub endpoints: Option<Box<ServiceEndpoints>>,
}

impl Service {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The pools that share the traffic by weight (weight above 0; never the secondary), with
    /// their index in `pools`.
    pub fn weighted(&self) -> impl Iterator<Item = (usize, &Pool)> + Clone {
        self.pools.iter().enumerate().filter(|(_, p)| p.weight > 0 && p.name != SECONDARY_POOL)
    }

    /// Whether new requests go to `pool`: the secondary while failed over, else a weighted pool.
    pub fn takes_traffic(&self, pool: &Pool) -> bool {
        if self.failed_over { pool.name == SECONDARY_POOL } else { pool.weight > 0 && pool.name != SECONDARY_POOL }
    }
}

#[derive(Debug)]
enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Suffix(String),
}

#[derive(Debug)]
struct Route {
    host: HostMatch,
    path: String,
    service: usize,
}

#[derive(Debug)]
pub struct Table {
    pub spec: Arc<EdgeSpec>,
    routes: Vec<Route>,
    pub services: Vec<Service>,
}

impl Table {
    /// The service for a host (lowercase, without port) and path.
    pub fn route(&self, host: &str, path: &str) -> Option<&Service> {
        self.routes
            .iter()
            .find(|route| {
                let host_matches = match &route.host {
                    HostMatch::Any => true,
                    HostMatch::Exact(exact) => exact == host,
                    HostMatch::Suffix(suffix) => host.ends_with(suffix.as_str()) && host.len() > suffix.len(),
                };
                host_matches && path_has_prefix(path, &route.path)
            })
            .map(|route| &self.services[route.service])
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Whether new requests can go to this pool (a pool that was removed takes none).
    pub fn pool_in_rotation(&self, service: &str, pool: &str) -> bool {
        let Some(service) = self.service(service) else { return false };
        service.pool(pool).is_some_and(|found| service.takes_traffic(found))
    }
}

/// `/api` matches `/api`, `/api/` and `/api/users`, not `/apix`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    // Bytes, not `trim_end_matches('/')`: a char searcher per route per request cost ~300
    // instructions (callgrind).
    let (path, mut prefix) = (path.as_bytes(), prefix.as_bytes());
    while let [rest @ .., b'/'] = prefix {
        prefix = rest;
    }
    prefix.is_empty() || path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// Service, endpoint and the service's thresholds (ms, ascending).
type EndpointKey = (String, String, Vec<u64>);

/// The long-lived objects tables point at.
#[derive(Debug, Default)]
pub struct Registry {
    instances: Mutex<HashMap<(String, String, SocketAddr), Arc<Instance>>>,
    metrics: Mutex<HashMap<(String, String), Arc<PoolMetrics>>>,
    limiters: Mutex<HashMap<String, (crate::spec::RateLimitSpec, Arc<RateLimiter>)>>,
    /// By service, endpoint and thresholds: other thresholds are other counters.
    endpoints: Mutex<HashMap<EndpointKey, Arc<EndpointCounters>>>,
}

impl Registry {
    fn instance(&self, service: &str, pool: &str, address: SocketAddr) -> Arc<Instance> {
        let mut instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        instances
            .entry((service.to_owned(), pool.to_owned(), address))
            .or_insert_with(|| Arc::new(Instance::new(address)))
            .clone()
    }

    pub fn metrics(&self, service: &str, pool: &str) -> Arc<PoolMetrics> {
        let mut metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        metrics.entry((service.to_owned(), pool.to_owned())).or_default().clone()
    }

    /// Every pool's metrics ever seen (removed pools keep their counters, as Prometheus expects).
    pub fn all_metrics(&self) -> Vec<((String, String), Arc<PoolMetrics>)> {
        let metrics = self.metrics.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = metrics.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn endpoint_counters(&self, service: &str, endpoint: &str, thresholds_ms: &[u64]) -> Arc<EndpointCounters> {
        let mut endpoints = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        endpoints.entry((service.to_owned(), endpoint.to_owned(), thresholds_ms.to_vec())).or_default().clone()
    }

    fn limiter(&self, service: &str, spec: &crate::spec::RateLimitSpec) -> Arc<RateLimiter> {
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        match limiters.get(service) {
            Some((existing, limiter)) if existing == spec => limiter.clone(),
            _ => {
                let limiter = Arc::new(RateLimiter::new(spec.per_client_per_sec, spec.per_route_per_sec, spec.burst));
                limiters.insert(service.to_owned(), (spec.clone(), limiter.clone()));
                limiter
            }
        }
    }

    /// Compiles a checked spec into a table.
    pub fn compile(&self, spec: Arc<EdgeSpec>) -> Table {
        let mut routes = Vec::new();
        let mut services = Vec::new();
        for (index, (name, service)) in spec.services.iter().enumerate() {
            for route in &service.routes {
                let host = match route.host.as_deref().map(str::to_ascii_lowercase) {
                    None => HostMatch::Any,
                    Some(host) => match host.strip_prefix('*') {
                        Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                        None => HostMatch::Exact(host),
                    },
                };
                routes.push(Route { host, path: route.path.clone(), service: index });
            }
            let pools: Vec<Pool> = service
                .pools
                .iter()
                .map(|(pool_name, pool)| Pool {
                    name: pool_name.clone(),
                    weight: pool.weight,
                    instances: pool.instances.iter().map(|a| self.instance(name, pool_name, *a)).collect(),
                    metrics: self.metrics(name, pool_name),
                })
                .collect();
            let secondary = pools.iter().position(|p| p.name == SECONDARY_POOL);
            services.push(Service {
                name: name.clone(),
                maintenance: service.maintenance,
                failed_over: service.failed_over,
                secondary,
                rate_limiter: service.rate_limit.as_ref().map(|r| self.limiter(name, r)),
                edge_metrics: self.metrics(name, "-"),
                endpoints: ServiceEndpoints::compile(service, |endpoint, thresholds| {
                    self.endpoint_counters(name, endpoint, thresholds)
                }),
                pools,
            });
        }
        // Most specific first: exact hosts, then wildcards (longer first), then any host;
        // within each, longer paths first.
        routes.sort_by_key(|route| {
            let host_rank = match &route.host {
                HostMatch::Exact(_) => (0, 0),
                HostMatch::Suffix(suffix) => (1, usize::MAX - suffix.len()),
                HostMatch::Any => (2, 0),
            };
            (host_rank, usize::MAX - route.path.trim_end_matches('/').len())
        });
        Table { spec, routes, services }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PoolSpec, RouteSpec, ServiceSpec};

    fn service(routes: &[(Option<&str>, &str)]) -> ServiceSpec {
        ServiceSpec {
            routes: routes.iter().map(|(h, p)| RouteSpec { host: h.map(Into::into), path: (*p).into() }).collect(),
            pools: [("blue".to_owned(), PoolSpec { instances: vec!["127.0.0.1:1".parse().unwrap()], weight: 100 })]
                .into(),
            ..ServiceSpec::default()
        }
    }

    #[test]
    fn path_prefixes_match_whole_segments() {
        for prefix in ["/api", "/api/", "/api//"] {
            assert!(path_has_prefix("/api", prefix), "{prefix}");
            assert!(path_has_prefix("/api/", prefix), "{prefix}");
            assert!(path_has_prefix("/api/users", prefix), "{prefix}");
            assert!(!path_has_prefix("/apix", prefix), "{prefix}");
            assert!(!path_has_prefix("/ap", prefix), "{prefix}");
        }
        for prefix in ["", "/"] {
            assert!(path_has_prefix("/anything", prefix));
            assert!(path_has_prefix("/", prefix));
        }
    }

    #[test]
    fn the_most_specific_route_wins() {
        let mut spec = EdgeSpec::default();
        spec.services.insert("catchall".into(), service(&[(None, "/")]));
        spec.services.insert("api".into(), service(&[(Some("shop.localhost"), "/api")]));
        spec.services.insert("web".into(), service(&[(Some("shop.localhost"), "/")]));
        spec.services.insert("tenants".into(), service(&[(Some("*.shop.localhost"), "/")]));
        spec.check().unwrap();
        let table = Registry::default().compile(Arc::new(spec));
        let route = |host: &str, path: &str| table.route(host, path).map(|s| s.name.as_str());
        assert_eq!(route("shop.localhost", "/api/users"), Some("api"));
        assert_eq!(route("shop.localhost", "/api"), Some("api"));
        assert_eq!(route("shop.localhost", "/apix"), Some("web"));
        assert_eq!(route("a.shop.localhost", "/api"), Some("tenants"));
        assert_eq!(route("other.localhost", "/x"), Some("catchall"));
    }

    #[test]
    fn instances_and_their_state_survive_recompiling() {
        let registry = Registry::default();
        let mut spec = EdgeSpec::default();
        spec.services.insert("api".into(), service(&[(None, "/")]));
        let first = registry.compile(Arc::new(spec.clone()));
        first.services[0].pools[0].instances[0].healthy.store(false, Ordering::Relaxed);
        let second = registry.compile(Arc::new(spec));
        assert!(!second.services[0].pools[0].instances[0].healthy.load(Ordering::Relaxed));
        assert!(Arc::ptr_eq(&first.services[0].pools[0].metrics, &second.services[0].pools[0].metrics));
    }
}
