//! The typed admin contract end to end: what real requests through a real edge did, read back
//! through `windlass_edge::client` as the control plane reads it.

use windlass_edge::client::{EdgeClient, EdgeControl};
use windlass_edge::spec::RateLimitSpec;

use crate::harness::{Demo, TOKEN, admin_read, get, pool, service, settings, spec, start_edge};

#[tokio::test]
async fn typed_counters_count_what_requests_got() {
    let demo = Demo::start("v1");
    let mut api = service("api.localhost", vec![("blue", pool(&[&demo], 100))]);
    // No refill to speak of during the test: the burst of 3 passes, the rest is refused.
    api.rate_limit = Some(RateLimitSpec { per_client_per_sec: Some(0.001), per_route_per_sec: None, burst: Some(3) });
    let mut web = service("web.localhost", vec![("blue", pool(&[&demo], 100))]);
    web.maintenance = true;
    let edge = start_edge(spec(vec![("api", api), ("web", web)]), settings(), None);
    let client = EdgeClient::new(edge.admin_address, edge.address, TOKEN);

    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(get(&edge, "api.localhost", "/version", &[]).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    for _ in 0..2 {
        assert_eq!(get(&edge, "web.localhost", "/version", &[]).await.status, 503);
    }
    // Maintenance switched on through the typed client: answered before the rate limit.
    client.maintenance(Some("api"), true).await.unwrap();
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 503);

    let counters = client.counters().await.unwrap();
    let api = &counters.services["api"];
    assert_eq!((api.maintenance, api.rate_limited), (1, 2));
    assert_eq!(api.pools["blue"].by_class, [0, 3, 0, 0, 0]);
    assert_eq!(api.pools["blue"].latency_buckets.iter().sum::<u64>(), 3);
    let web = &counters.services["web"];
    assert_eq!((web.maintenance, web.rate_limited), (2, 0));
    assert_eq!(web.pools["blue"].requests(), 0);
    assert_eq!(counters.services.len(), 2);

    // The same numbers as the per-pool API and the Prometheus text scrapers read.
    assert_eq!(client.pool_metrics("api", "blue").await.unwrap(), api.pools["blue"]);
    let text = admin_read(&edge, "/metrics").await;
    for line in [
        "windlass_edge_maintenance_answers_total{service=\"api\",pool=\"-\"} 1",
        "windlass_edge_rate_limited_total{service=\"api\",pool=\"-\"} 2",
        "windlass_edge_maintenance_answers_total{service=\"web\",pool=\"-\"} 2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
    edge.stop();
}

/// The client reads a refusal's message from the typed error body.
#[tokio::test]
async fn a_refusal_carries_the_edges_message() {
    let edge = start_edge(spec(vec![]), settings(), None);
    let client = EdgeClient::new(edge.admin_address, edge.address, TOKEN);
    let err = client.failover("nope", "secondary").await.unwrap_err();
    assert!(
        matches!(&err, windlass_edge::client::EdgeError::Refused { status: 404, message, .. } if message.contains("nope")),
        "{err}"
    );
    let wrong = EdgeClient { token: "wrong".into(), ..client };
    let err = wrong.maintenance(None, true).await.unwrap_err();
    assert!(matches!(&err, windlass_edge::client::EdgeError::Refused { status: 403, .. }), "{err}");
    edge.stop();
}
