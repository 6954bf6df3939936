//! Maintenance, failover, rate limits, connect retries, and what the metrics count.

use std::time::Duration;

use windlass_edge::spec::{FailoverSpec, HealthSpec, RateLimitSpec};
use windlass_edge::{Settings, spec::PoolSpec};

use crate::harness::*;

#[tokio::test]
async fn maintenance_answers_503_except_to_the_allow_list_and_is_counted_apart() {
    let demo = Demo::start("v1");
    let settings =
        Settings { allow_header: Some("x-staff".into()), retry_after: Duration::from_secs(120), ..settings() };
    let edge =
        start_edge(spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]), settings, None);
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/maintenance", r#"{"enabled": true}"#).await.status, 200);

    let page = get(&edge, "api.localhost", "/version", &[("accept", "text/html")]).await;
    assert_eq!(page.status, 503);
    assert_eq!(page.headers["retry-after"], "120");
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.body.contains("Down for maintenance"), "{}", page.body);
    let json = get(&edge, "api.localhost", "/version", &[("accept", "application/json")]).await;
    assert_eq!(json.status, 503);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&json.body).unwrap()["error"], "maintenance");
    let bypass = windlass_edge::shared::derived_bypass_token(TOKEN).unwrap();
    assert_eq!(
        version_of(&get(&edge, "api.localhost", "/version", &[("x-staff", &bypass)]).await),
        "v1",
        "the team still gets through with the bypass secret"
    );
    assert_eq!(get(&edge, "api.localhost", "/version", &[("x-staff", "wrong")]).await.status, 503);
    assert_eq!(
        get(&edge, "api.localhost", "/version", &[("x-staff", TOKEN)]).await.status,
        503,
        "the admin token is no bypass secret"
    );

    assert_eq!(admin(&edge, "PUT", "/edge/services/api/maintenance", r#"{"enabled": false}"#).await.status, 200);
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 200);

    let metrics = admin_read(&edge, "/metrics").await;
    assert!(metrics.contains("windlass_edge_maintenance_answers_total{service=\"api\",pool=\"-\"} 4"), "{metrics}");
    assert!(
        metrics.contains("windlass_edge_requests_total{service=\"api\",pool=\"blue\",class=\"5xx\"} 0"),
        "maintenance is no upstream error:\n{metrics}"
    );
    assert!(
        metrics.contains("windlass_edge_requests_total{service=\"api\",pool=\"blue\",class=\"2xx\"} 2"),
        "{metrics}"
    );
    edge.stop();
}

#[tokio::test]
async fn maintenance_for_every_service_at_once() {
    let demo = Demo::start("v1");
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    assert_eq!(admin(&edge, "PUT", "/edge/maintenance", r#"{"enabled": true}"#).await.status, 200);
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 503);
    assert_eq!(admin(&edge, "PUT", "/edge/maintenance", r#"{"enabled": false}"#).await.status, 200);
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 200);
    edge.stop();
}

/// The primary fails its health checks: after three in a row traffic moves to the secondary,
/// and back once the primary passes again; both moves are events with their reason.
#[tokio::test]
async fn failover_after_three_failed_checks_and_failback() {
    let (primary, secondary) = (Demo::start("primary"), Demo::start("secondary"));
    let mut api =
        service("api.localhost", vec![("blue", pool(&[&primary], 100)), ("secondary", pool(&[&secondary], 0))]);
    api.health = Some(HealthSpec {
        path: "/health".into(),
        interval_ms: 100,
        timeout_ms: 500,
        healthy_after: 1,
        unhealthy_after: 3,
    });
    api.failover = Some(FailoverSpec { after_failures: 3, failback_after: 2, automatic: true });
    let edge = start_edge(spec(vec![("api", api)]), settings(), None);
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "primary");

    primary.faults(r#"{"health_failing": true}"#).await;
    eventually("traffic is on the secondary", || async {
        state(&edge).await["services"]["api"]["failed_over"] == true
    })
    .await;
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "secondary");
    let events = admin_read(&edge, "/edge/events").await;
    assert!(events.contains("every primary instance failed 3 health checks in a row"), "{events}");

    primary.faults(r#"{"health_failing": false}"#).await;
    eventually("traffic is back on the primary", || async {
        state(&edge).await["services"]["api"]["failed_over"] == false
    })
    .await;
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "primary");
    let events = admin_read(&edge, "/edge/events").await;
    assert!(events.contains("\"kind\":\"failback\""), "{events}");
    edge.stop();
}

/// A secondary with no instance (a managed one before its first deploy) takes no traffic: the
/// edge fails over only once the secondary has a healthy instance.
#[tokio::test]
async fn no_failover_to_an_empty_secondary() {
    let (primary, secondary) = (Demo::start("primary"), Demo::start("secondary"));
    let mut api = service("api.localhost", vec![("blue", pool(&[&primary], 100)), ("secondary", pool(&[], 0))]);
    api.health = Some(HealthSpec {
        path: "/health".into(),
        interval_ms: 100,
        timeout_ms: 500,
        healthy_after: 1,
        unhealthy_after: 3,
    });
    api.failover = Some(FailoverSpec { after_failures: 3, failback_after: 2, automatic: true });
    let edge = start_edge(spec(vec![("api", api)]), settings(), None);
    primary.faults(r#"{"health_failing": true}"#).await;
    // Unhealthy means 3 failed checks: the failover decision has been taken (and refused).
    eventually("the primary is unhealthy", || async {
        state(&edge).await["services"]["api"]["pools"]["blue"]["instances"][0]["healthy"] == false
    })
    .await;
    assert_eq!(state(&edge).await["services"]["api"]["failed_over"], false);
    let body = format!(r#"{{"instances": ["{}"]}}"#, secondary.address);
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/pools/secondary", &body).await.status, 200);
    eventually("traffic is on the secondary", || async {
        state(&edge).await["services"]["api"]["failed_over"] == true
    })
    .await;
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "secondary");
    edge.stop();
}

#[tokio::test]
async fn manual_failover_through_the_admin_api() {
    let (primary, secondary) = (Demo::start("primary"), Demo::start("secondary"));
    let edge = start_edge(
        spec(vec![(
            "api",
            service("api.localhost", vec![("blue", pool(&[&primary], 100)), ("secondary", pool(&[&secondary], 0))]),
        )]),
        settings(),
        None,
    );
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/failover", r#"{"to": "secondary"}"#).await.status, 200);
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "secondary");
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/failover", r#"{"to": "primary"}"#).await.status, 200);
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "primary");
    edge.stop();
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let demo = Demo::start("v1");
    let mut api = service("api.localhost", vec![("blue", pool(&[&demo], 100))]);
    api.rate_limit = Some(RateLimitSpec { per_client_per_sec: Some(1.0), per_route_per_sec: None, burst: Some(5) });
    let edge = start_edge(spec(vec![("api", api)]), settings(), None);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(get(&edge, "api.localhost", "/version", &[]).await);
    }
    assert!(statuses[..5].iter().all(|r| r.status == 200), "the burst passes");
    assert_eq!(statuses[5].status, 429);
    assert_eq!(statuses[5].headers["retry-after"], "1");
    edge.stop();
}

/// An instance that refuses connections costs no request: the connect is retried on another.
#[tokio::test]
async fn a_refused_connect_is_retried_on_another_instance() {
    let (good, refusing) = (Demo::start("good"), Demo::start("refusing"));
    refusing.faults(r#"{"refuse_connections": true}"#).await;
    let edge = start_edge(
        spec(vec![(
            "api",
            service(
                "api.localhost",
                vec![("blue", PoolSpec { instances: vec![good.address, refusing.address], weight: 100 })],
            ),
        )]),
        settings(),
        None,
    );
    for _ in 0..30 {
        let reply = get(&edge, "api.localhost", "/version", &[]).await;
        assert_eq!((reply.status, version_of(&reply)), (200, "good".to_owned()));
    }
    // Repeated connect errors eject the instance (passive outlier detection).
    let instances = state(&edge).await["services"]["api"]["pools"]["blue"]["instances"].clone();
    let refused =
        instances.as_array().unwrap().iter().find(|i| i["address"] == refusing.address.to_string()).unwrap().clone();
    assert_eq!(refused["ejected"], true, "{instances}");
    edge.stop();
}

/// A request that reached an upstream and failed is answered, not replayed.
#[tokio::test]
async fn upstream_errors_are_passed_on_and_counted() {
    let demo = Demo::start("v1");
    demo.faults(r#"{"error_rate": 1.0}"#).await;
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    for _ in 0..3 {
        assert_eq!(get(&edge, "api.localhost", "/echo", &[]).await.status, 500);
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&admin_read(&edge, "/edge/services/api/pools/blue/metrics").await).unwrap();
    assert_eq!(metrics["requests"], 3);
    assert_eq!(metrics["errors"], 3);
    assert!(metrics["p99_micros"].as_u64().unwrap() > 0);
    let demo_metrics = windlass_testkit::http::get(demo.address, "/metrics").await.unwrap().body;
    assert!(
        demo_metrics.contains("demo_http_requests_total{route=\"/echo\",code=\"500\"} 3"),
        "exactly three reached the demo:\n{demo_metrics}"
    );
    edge.stop();
}
