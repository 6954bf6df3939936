//! Per-endpoint counters through a real edge and a real demo upstream: every request forwarded
//! to a pool counts under exactly one endpoint (or `other`), by status class and, exactly, under
//! each latency threshold.

use std::collections::BTreeMap;

use windlass_edge::client::{EdgeClient, EdgeControl, EdgeError};
use windlass_edge::endpoints::EndpointSnapshot;
use windlass_edge::spec::EndpointSpec;
use windlass_testkit::http;

use crate::harness::{Demo, TOKEN, get, pool, service, settings, spec, start_edge};

fn endpoint(name: &str, path: &str, methods: &[&str]) -> EndpointSpec {
    EndpointSpec { name: name.into(), path: path.into(), methods: methods.iter().map(|m| (*m).to_owned()).collect() }
}

fn counted(by_class: [u64; 5], under: &[(u64, u64)]) -> EndpointSnapshot {
    EndpointSnapshot { by_class, latency_under: under.iter().copied().collect() }
}

/// The demo sleeps 10 ms or 200 ms; the threshold is 100 ms: the slow ones can never be under it,
/// and the fast ones have 90 ms of slack for a busy machine.
#[tokio::test]
async fn each_endpoint_and_other_count_exactly() {
    let demo = Demo::start("v1");
    let mut api = service("api.localhost", vec![("blue", pool(&[&demo], 100))]);
    api.endpoints = vec![
        endpoint("sleep", "/sleep", &["GET"]),
        endpoint("echo-post", "/echo", &["POST", "PUT"]),
        endpoint("user", "/users/{id}", &[]),
    ];
    api.thresholds_ms = vec![100];
    // The same upstream without endpoints or thresholds: nothing is counted per endpoint.
    let plain = service("plain.localhost", vec![("blue", pool(&[&demo], 100))]);
    let edge = start_edge(spec(vec![("api", api), ("plain", plain)]), settings(), None);
    let client = EdgeClient::new(edge.admin_address, edge.address, TOKEN);

    for ms in [10, 200, 10, 200, 10] {
        assert_eq!(get(&edge, "api.localhost", &format!("/sleep?ms={ms}"), &[]).await.status, 200);
    }
    for method in ["POST", "PUT", "GET"] {
        let reply = http::request(method, edge.address, "/echo", &[("host", "api.localhost")], "hi").await.unwrap();
        assert_eq!(reply.status, 200, "{method}");
    }
    // `{id}` takes one segment, not two; the demo answers 404 for both.
    assert_eq!(get(&edge, "api.localhost", "/users/42", &[]).await.status, 404);
    assert_eq!(get(&edge, "api.localhost", "/users/42/orders", &[]).await.status, 404);
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 200);
    assert_eq!(get(&edge, "plain.localhost", "/version", &[]).await.status, 200);

    let counters = client.counters().await.unwrap();
    let api = &counters.services["api"];
    let expected: BTreeMap<String, EndpointSnapshot> = [
        ("sleep", counted([0, 5, 0, 0, 0], &[(100, 3)])),
        ("echo-post", counted([0, 2, 0, 0, 0], &[(100, 2)])),
        ("user", counted([0, 0, 0, 1, 0], &[(100, 1)])),
        // GET /echo (not a method of `echo-post`), /users/42/orders and /version.
        ("other", counted([0, 2, 0, 1, 0], &[(100, 3)])),
    ]
    .into_iter()
    .map(|(name, snapshot)| (name.to_owned(), snapshot))
    .collect();
    assert_eq!(api.endpoints, expected);
    // Every request forwarded to the pool is in exactly one endpoint.
    let per_endpoint: u64 = api.endpoints.values().map(EndpointSnapshot::requests).sum();
    assert_eq!(per_endpoint, api.pools["blue"].requests());
    assert!(counters.services["plain"].endpoints.is_empty());

    let text = crate::harness::admin_read(&edge, "/metrics").await;
    for line in [
        "windlass_edge_endpoint_requests_total{service=\"api\",endpoint=\"sleep\",class=\"2xx\"} 5",
        "windlass_edge_endpoint_latency_under_total{service=\"api\",endpoint=\"sleep\",le_ms=\"100\"} 3",
        "windlass_edge_endpoint_requests_total{service=\"api\",endpoint=\"user\",class=\"4xx\"} 1",
        "windlass_edge_endpoint_requests_total{service=\"api\",endpoint=\"other\",class=\"2xx\"} 2",
        "windlass_edge_endpoint_latency_under_total{service=\"api\",endpoint=\"other\",le_ms=\"100\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    assert!(!text.contains("endpoint_requests_total{service=\"plain\""), "{text}");
    edge.stop();
}

/// The control plane changes what a running service counts without touching its traffic:
/// endpoints that stay keep their counts, a bad list is refused whole, and what was set is
/// persisted and restored.
#[tokio::test]
async fn endpoints_are_set_through_the_admin_api_and_restored() {
    let demo = Demo::start("v1");
    let dir = windlass_testkit::tempdir();
    let state = dir.path().join("edge.json");
    let api = service("api.localhost", vec![("blue", pool(&[&demo], 100))]);
    let edge = start_edge(spec(vec![("api", api.clone())]), settings(), Some(state.clone()));
    let client = EdgeClient::new(edge.admin_address, edge.address, TOKEN);

    let version = [endpoint("version", "/version", &[])];
    client.set_endpoints("api", &version, &[250, 60_000]).await.unwrap();
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 200);
    // Set again (as every deploy does): the same counters go on counting.
    client.set_endpoints("api", &version, &[60_000, 250]).await.unwrap();
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 200);
    let counters = client.counters().await.unwrap();
    assert_eq!(counters.services["api"].endpoints["version"], counted([0, 2, 0, 0, 0], &[(250, 2), (60_000, 2)]));
    assert_eq!(counters.services["api"].pools["blue"].requests(), 2);

    for (endpoints, thresholds, problem) in [
        (vec![endpoint("a", "/a/{}", &[])], vec![], "is not a parameter"),
        (vec![endpoint("other", "/a", &[])], vec![], "not `other`"),
        (vec![endpoint("a", "/a", &["get"])], vec![], "unknown method `get`"),
        (vec![endpoint("a", "/a", &[]), endpoint("a", "/b", &[])], vec![], "named twice"),
        ((0..33).map(|i| endpoint(&format!("e{i}"), "/e", &[])).collect(), vec![], "33 endpoints, at most 32"),
        (vec![], vec![1, 2, 3, 4, 5], "5 latency thresholds, at most 4"),
        (vec![], vec![0], "outside 1..=600000 ms"),
        (vec![], vec![600_001], "outside 1..=600000 ms"),
    ] {
        let err = client.set_endpoints("api", &endpoints, &thresholds).await.unwrap_err();
        assert!(
            matches!(&err, EdgeError::Refused { status: 400, message, .. } if message.contains(problem)),
            "{problem}: {err}"
        );
    }
    let err = client.set_endpoints("nope", &version, &[]).await.unwrap_err();
    assert!(matches!(&err, EdgeError::Refused { status: 404, .. }), "{err}");
    edge.stop();

    // Restarted from its state file (with no initial spec to take counting from).
    let edge = start_edge(spec(vec![]), settings(), Some(state.clone()));
    assert!(edge.restored);
    let client = EdgeClient::new(edge.admin_address, edge.address, TOKEN);
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 200);
    let counters = client.counters().await.unwrap();
    assert_eq!(counters.services["api"].endpoints["version"], counted([0, 1, 0, 0, 0], &[(250, 1), (60_000, 1)]));
    edge.stop();

    // Restarted with a config that counts other things: what is counted follows the config,
    // where traffic goes follows the state.
    let mut configured = api;
    configured.endpoints = vec![endpoint("health", "/health", &["GET"])];
    configured.pools.clear();
    let edge = start_edge(spec(vec![("api", configured)]), settings(), Some(state));
    assert_eq!(get(&edge, "api.localhost", "/health", &[]).await.status, 200);
    let client = EdgeClient::new(edge.admin_address, edge.address, TOKEN);
    let counters = client.counters().await.unwrap();
    let endpoints = &counters.services["api"].endpoints;
    assert_eq!(endpoints.keys().collect::<Vec<_>>(), ["health", "other"]);
    assert_eq!(endpoints["health"], counted([0, 1, 0, 0, 0], &[]));
    edge.stop();
}

/// `services.<svc>.endpoints` and the SLO's latency targets reach the edge's spec.
#[test]
fn the_config_carries_endpoints_and_thresholds() {
    let text = r#"
[project]
name = "shop"
[environments.production]
[services.api]
upstreams = ["127.0.0.1:9000"]
endpoints = [
  { name = "user", path = "/users/{id}", methods = ["GET"] },
  { name = "upload", path = "/upload/*", latency = { p99 = "2s" } },
]
[services.web]
upstreams = ["127.0.0.1:9001"]
[slo.api]
latency = { p95 = "200ms", p99 = "500ms" }
"#;
    let parsed = windlass_config::parse(&windlass_config::Source::new("windlass.toml", text));
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let spec = windlass_edge::config::spec_from_config(&parsed.config, "production");
    spec.check().unwrap();
    let api = &spec.services["api"];
    assert_eq!(api.endpoints, [endpoint("user", "/users/{id}", &["GET"]), endpoint("upload", "/upload/*", &[])]);
    assert_eq!(api.thresholds_ms, [200, 500, 2_000]);
    let web = &spec.services["web"];
    assert!(web.endpoints.is_empty() && web.thresholds_ms.is_empty());
    // Nothing new in the JSON of a service that counts nothing: an older edge takes it.
    let json = serde_json::to_string(web).unwrap();
    assert!(!json.contains("endpoints") && !json.contains("thresholds_ms"), "{json}");
}
