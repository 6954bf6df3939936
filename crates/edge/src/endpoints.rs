//! Per-endpoint counters, for latency objectives per API endpoint: a service's configured
//! endpoints (path patterns, optionally limited to some methods) compiled once per table, and per
//! endpoint (plus [`OTHER_ENDPOINT`] for requests that match none) the answers by status class
//! and, for each of the service's latency thresholds, how many answers took at most that long,
//! compared exactly in microseconds (the pool histograms' buckets are up to 25% wide).
//!
//! A service with neither endpoints nor thresholds has no [`ServiceEndpoints`] at all, so the
//! proxy does no work for it beyond one `None` check. Matching allocates nothing: a linear scan
//! over at most 32 patterns, segment by segment.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::spec::{MAX_THRESHOLDS, METHODS, OTHER_ENDPOINT, ServiceSpec};

/// One endpoint's counters. Aligned to a cache line so that two endpoints' counters, bumped
/// by different worker threads, never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct EndpointCounters {
    /// Answers 1xx..5xx (including the 502 and 504 the edge makes).
    classes: [AtomicU64; 5],
    /// By index in the service's thresholds (ascending): answers that took at most that long.
    under: [AtomicU64; MAX_THRESHOLDS],
}

/// One segment of a compiled path pattern.
#[derive(Debug)]
enum Segment {
    Literal(Box<str>),
    /// `{name}`: any one non-empty segment.
    Param,
}

/// A compiled endpoint pattern.
#[derive(Debug)]
struct Matcher {
    segments: Box<[Segment]>,
    /// Ends in `*`: whatever follows matches (nothing included).
    rest: bool,
    /// Bits by index in [`METHODS`]; 0 for every method.
    methods: u16,
}

/// The bit of a method in [`Matcher::methods`]; 0 for a method outside [`METHODS`] (which then
/// matches only endpoints for every method).
fn method_bit(method: &Method) -> u16 {
    // `Method` compares its standard methods by discriminant, not by string.
    let index = if *method == Method::GET {
        0
    } else if *method == Method::HEAD {
        1
    } else if *method == Method::POST {
        2
    } else if *method == Method::PUT {
        3
    } else if *method == Method::DELETE {
        4
    } else if *method == Method::PATCH {
        5
    } else if *method == Method::OPTIONS {
        6
    } else if *method == Method::CONNECT {
        7
    } else if *method == Method::TRACE {
        8
    } else {
        return 0;
    };
    1 << index
}

/// The path after its leading `/`, one trailing `/` taken off (`/users/` is `/users`), as bytes:
/// what [`Matcher::matches`] walks.
fn trimmed(path: &str) -> &[u8] {
    let path = path.as_bytes();
    let path = path.strip_prefix(b"/").unwrap_or(path);
    if path.len() > 1 { path.strip_suffix(b"/").unwrap_or(path) } else { path }
}

impl Matcher {
    /// Compiles a pattern that passed [`crate::spec::path_pattern_problem`].
    fn compile(path: &str, methods: &[String]) -> Matcher {
        let mut segments = Vec::new();
        let mut rest = false;
        for segment in trimmed(path).split(|&b| b == b'/') {
            // Valid patterns are ASCII (checked), so each segment is whole characters.
            let segment = String::from_utf8_lossy(segment);
            if segment == "*" {
                rest = true;
            } else if segment.starts_with('{') && segment.ends_with('}') {
                segments.push(Segment::Param);
            } else {
                segments.push(Segment::Literal(segment.into()));
            }
        }
        let methods = methods
            .iter()
            .filter_map(|m| METHODS.iter().position(|known| known == m))
            .fold(0u16, |bits, index| bits | (1 << index));
        Matcher { segments: segments.into_boxed_slice(), rest, methods }
    }

    /// Whether a request matches, its path [`trimmed`]. Bytes walked by hand: most patterns fail
    /// on their first literal, found by one comparison without looking for the next `/`.
    fn matches(&self, method_bit: u16, path: &[u8]) -> bool {
        if self.methods != 0 && self.methods & method_bit == 0 {
            return false;
        }
        // What is left of the path; `None` once its last segment was taken.
        let mut left = Some(path);
        for segment in &self.segments {
            let Some(rest) = left else { return false };
            let end = match segment {
                Segment::Literal(literal) => {
                    let literal = literal.as_bytes();
                    if !rest.starts_with(literal) || rest.len() > literal.len() && rest[literal.len()] != b'/' {
                        return false;
                    }
                    literal.len()
                }
                Segment::Param => {
                    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                    if end == 0 {
                        return false;
                    }
                    end
                }
            };
            left = rest.get(end + 1..);
        }
        // `/static/*` takes `/static` too: `*` may match nothing.
        self.rest || left.is_none()
    }
}

/// A service's compiled endpoints and their counters (shared by every table that names the same
/// endpoint with the same thresholds, see [`crate::table::Registry`]).
#[derive(Debug)]
pub struct ServiceEndpoints {
    matchers: Box<[Matcher]>,
    /// One per endpoint in config order, then [`OTHER_ENDPOINT`]'s.
    names: Box<[String]>,
    counters: Box<[Arc<EndpointCounters>]>,
    /// Ascending, in microseconds; only the first `thresholds` are used.
    thresholds_us: [u64; MAX_THRESHOLDS],
    thresholds: usize,
}

impl ServiceEndpoints {
    /// `None` when the service counts nothing per endpoint (no endpoints, no thresholds).
    /// `counters` gives the counters of an endpoint name for the (ascending) thresholds.
    pub fn compile(
        service: &ServiceSpec,
        mut counters: impl FnMut(&str, &[u64]) -> Arc<EndpointCounters>,
    ) -> Option<Box<ServiceEndpoints>> {
        if service.endpoints.is_empty() && service.thresholds_ms.is_empty() {
            return None;
        }
        let mut thresholds_ms = service.thresholds_ms.clone();
        thresholds_ms.sort_unstable();
        thresholds_ms.dedup();
        thresholds_ms.truncate(MAX_THRESHOLDS);
        let mut thresholds_us = [u64::MAX; MAX_THRESHOLDS];
        for (slot, ms) in thresholds_us.iter_mut().zip(&thresholds_ms) {
            *slot = ms.saturating_mul(1000);
        }
        let names: Vec<String> = service
            .endpoints
            .iter()
            .map(|e| e.name.clone())
            .chain(std::iter::once(OTHER_ENDPOINT.to_owned()))
            .collect();
        Some(Box::new(ServiceEndpoints {
            matchers: service.endpoints.iter().map(|e| Matcher::compile(&e.path, &e.methods)).collect(),
            counters: names.iter().map(|name| counters(name, &thresholds_ms)).collect(),
            names: names.into_boxed_slice(),
            thresholds_us,
            thresholds: thresholds_ms.len(),
        }))
    }

    /// The endpoint a request counts under: the first that matches, else [`OTHER_ENDPOINT`].
    pub fn index(&self, method: &Method, path: &str) -> usize {
        let (bit, path) = (method_bit(method), trimmed(path));
        self.matchers.iter().position(|m| m.matches(bit, path)).unwrap_or(self.matchers.len())
    }

    /// Counts one answer of endpoint `index` (from [`ServiceEndpoints::index`]).
    pub fn record(&self, index: usize, status: u16, micros: u64) {
        let Some(counters) = self.counters.get(index) else { return };
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        counters.classes[class].fetch_add(1, Ordering::Relaxed);
        // At most the threshold counts as under it: a target of 200 ms is met by 200.000 ms.
        for (threshold, under) in self.thresholds_us[..self.thresholds].iter().zip(&counters.under) {
            if micros <= *threshold {
                under.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Every endpoint's counters now, by name.
    pub fn snapshot(&self) -> BTreeMap<String, EndpointSnapshot> {
        self.names
            .iter()
            .zip(self.counters.iter())
            .map(|(name, counters)| {
                let latency_under = self.thresholds_us[..self.thresholds]
                    .iter()
                    .zip(&counters.under)
                    .map(|(us, count)| (us / 1000, count.load(Ordering::Relaxed)))
                    .collect();
                let snapshot = EndpointSnapshot {
                    by_class: std::array::from_fn(|i| counters.classes[i].load(Ordering::Relaxed)),
                    latency_under,
                };
                (name.clone(), snapshot)
            })
            .collect()
    }
}

/// One endpoint's cumulative counters (subtract an earlier snapshot for an interval). They
/// start from zero when the service's thresholds change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSnapshot {
    /// Answers with status 1xx, 2xx, 3xx, 4xx, 5xx.
    pub by_class: [u64; 5],
    /// Threshold in milliseconds → answers that took at most that long.
    #[serde(default)]
    pub latency_under: BTreeMap<u64, u64>,
}

impl EndpointSnapshot {
    pub fn requests(&self) -> u64 {
        self.by_class.iter().sum()
    }

    /// What happened between `earlier` and this snapshot.
    pub fn since(&self, earlier: &EndpointSnapshot) -> EndpointSnapshot {
        EndpointSnapshot {
            by_class: std::array::from_fn(|i| self.by_class[i].saturating_sub(earlier.by_class[i])),
            latency_under: self
                .latency_under
                .iter()
                .map(|(ms, now)| (*ms, now.saturating_sub(earlier.latency_under.get(ms).copied().unwrap_or(0))))
                .collect(),
        }
    }
}

/// Prometheus text for one service's endpoints.
pub fn render(out: &mut String, service: &str, endpoints: &BTreeMap<String, EndpointSnapshot>) {
    use std::fmt::Write as _;
    for (endpoint, snapshot) in endpoints {
        let labels = format!("service=\"{service}\",endpoint=\"{endpoint}\"");
        for (i, count) in snapshot.by_class.iter().enumerate() {
            let _ = writeln!(out, "windlass_edge_endpoint_requests_total{{{labels},class=\"{}xx\"}} {count}", i + 1);
        }
        for (ms, count) in &snapshot.latency_under {
            let _ = writeln!(out, "windlass_edge_endpoint_latency_under_total{{{labels},le_ms=\"{ms}\"}} {count}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::EndpointSpec;

    fn endpoints(list: &[(&str, &str, &[&str])], thresholds_ms: &[u64]) -> Box<ServiceEndpoints> {
        let service = ServiceSpec {
            endpoints: list
                .iter()
                .map(|(name, path, methods)| EndpointSpec {
                    name: (*name).into(),
                    path: (*path).into(),
                    methods: methods.iter().map(|m| (*m).to_owned()).collect(),
                })
                .collect(),
            thresholds_ms: thresholds_ms.to_vec(),
            ..ServiceSpec::default()
        };
        ServiceEndpoints::compile(&service, |_, _| Arc::default()).expect("something to count")
    }

    #[test]
    fn nothing_to_count_compiles_to_nothing() {
        assert!(ServiceEndpoints::compile(&ServiceSpec::default(), |_, _| Arc::default()).is_none());
    }

    #[test]
    fn patterns_match_segments_first_match_wins() {
        let e = endpoints(
            &[
                ("me", "/users/me", &[]),
                ("user", "/users/{id}", &[]),
                ("create", "/users", &["POST"]),
                ("static", "/static/*", &["GET", "HEAD"]),
                ("root", "/", &[]),
            ],
            &[],
        );
        let name = |method: Method, path: &str| e.names[e.index(&method, path)].as_str();
        assert_eq!(name(Method::GET, "/users/me"), "me");
        assert_eq!(name(Method::GET, "/users/42"), "user");
        assert_eq!(name(Method::DELETE, "/users/42/"), "user");
        assert_eq!(name(Method::GET, "/users/42/orders"), "other");
        assert_eq!(name(Method::GET, "/users//"), "other");
        assert_eq!(name(Method::POST, "/users"), "create");
        assert_eq!(name(Method::GET, "/users"), "other");
        assert_eq!(name(Method::GET, "/static"), "static");
        assert_eq!(name(Method::HEAD, "/static/css/a.css"), "static");
        assert_eq!(name(Method::POST, "/static/a"), "other");
        assert_eq!(name(Method::GET, "/staticx"), "other");
        assert_eq!(name(Method::GET, "/"), "root");
        assert_eq!(name(Method::from_bytes(b"PURGE").unwrap(), "/"), "root");
        assert_eq!(name(Method::from_bytes(b"PURGE").unwrap(), "/static/a"), "other");
    }

    /// The threshold is a bound included: an answer of exactly 50 ms is under 50 ms.
    #[test]
    fn exactly_the_threshold_counts_as_under() {
        let e = endpoints(&[("api", "/api/*", &[])], &[200, 50]);
        let api = e.index(&Method::GET, "/api/x");
        for micros in [49_999, 50_000, 50_001, 200_000, 200_001] {
            e.record(api, 200, micros);
        }
        e.record(api, 503, 10);
        let snapshot = &e.snapshot()["api"];
        assert_eq!(snapshot.by_class, [0, 5, 0, 0, 1]);
        assert_eq!(snapshot.latency_under, BTreeMap::from([(50, 3), (200, 5)]));
        assert_eq!(e.snapshot()["other"].requests(), 0);
    }
}
