//! Routing, the atomic switch under load, sticky cohorts, pinning, WebSockets, draining.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::{SinkExt, StreamExt};

use crate::harness::*;

#[tokio::test]
async fn requests_reach_the_service_their_host_and_path_name() {
    let (api, web) = (Demo::start("api-1"), Demo::start("web-1"));
    let mut admin_service = service("shop.localhost", vec![("blue", pool(&[&api], 100))]);
    admin_service.routes[0].path = "/version".into();
    let edge = start_edge(
        spec(vec![("api", admin_service), ("web", service("shop.localhost", vec![("blue", pool(&[&web], 100))]))]),
        settings(),
        None,
    );
    assert_eq!(version_of(&get(&edge, "shop.localhost", "/version", &[]).await), "api-1", "the longer prefix wins");
    let echo = get(&edge, "SHOP.localhost:8080", "/echo", &[("x-request-id", "given-id-1")]).await;
    let echoed: serde_json::Value = serde_json::from_str(&echo.body).unwrap();
    assert_eq!(echoed["headers"]["x-request-id"], "given-id-1", "a client's request id is kept");
    assert_eq!(echo.headers["x-request-id"], "given-id-1");
    assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(echoed["headers"]["x-forwarded-proto"], "http");
    assert_eq!(version_of(&get(&edge, "shop.localhost", "/health", &[]).await), "web-1");

    let generated = get(&edge, "shop.localhost", "/health", &[]).await;
    assert_eq!(generated.headers["x-request-id"].len(), 32, "an id is generated when absent");

    let unknown = get(&edge, "elsewhere.localhost", "/", &[]).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body, "no service is routed for elsewhere.localhost/\n");
    edge.stop();
}

/// 100 blue/green switches while 16 keep-alive clients hammer the route: not one request fails,
/// and both versions answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_colors_under_load_fails_no_request() {
    let (_blue, _green, edge) = blue_green("api.localhost", 100, settings());
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(edge.address, "api.localhost", 16, 20_000, stop.clone());
    for switch in 0..100 {
        let body = if switch % 2 == 0 { r#"{"green": 100}"# } else { r#"{"blue": 100}"# };
        let reply = admin(&edge, "PUT", "/edge/services/api/weights", body).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    assert!(
        report.failures.is_empty(),
        "{} failed requests: {:?}",
        report.failures.len(),
        &report.failures[..report.failures.len().min(5)]
    );
    assert!(
        report.versions.get("v1").is_some_and(|n| *n > 0) && report.versions.get("v2").is_some_and(|n| *n > 0),
        "{report:?}"
    );
    edge.stop();
}

#[tokio::test]
async fn sticky_cohorts_keep_their_pool_until_it_leaves_rotation() {
    let (_blue, _green, edge) = blue_green("api.localhost", 50, settings());
    // New clients are spread by weight and told their cohort.
    let mut cohorts = Vec::new();
    for _ in 0..40 {
        let reply = get(&edge, "api.localhost", "/version", &[]).await;
        let cookie = reply.headers["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        cohorts.push((cookie, version_of(&reply)));
    }
    let on_green = cohorts.iter().filter(|(_, v)| v == "v2").count();
    assert!((5..=35).contains(&on_green), "about half of 40 new clients go to green: {on_green}");

    // Weights change: clients keep their pool.
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/weights", r#"{"blue": 90, "green": 10}"#).await.status, 200);
    for (cookie, version) in &cohorts {
        let reply = get(&edge, "api.localhost", "/version", &[("cookie", cookie)]).await;
        assert_eq!(&version_of(&reply), version, "a client keeps its pool while weights change");
        assert!(!reply.headers.contains_key("set-cookie"));
    }

    // Green leaves rotation: its clients move at once.
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/weights", r#"{"blue": 100}"#).await.status, 200);
    for (cookie, _) in &cohorts {
        assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[("cookie", cookie)]).await), "v1");
    }
    edge.stop();
}

#[tokio::test]
async fn a_pool_at_weight_zero_is_reachable_only_with_the_pinning_header_and_token() {
    let (_blue, _green, edge) = blue_green("api.localhost", 100, settings());
    // The pin secret, derived from the admin token: what the control plane sends.
    let pin = windlass_edge::shared::pin_token(TOKEN).unwrap();
    let pinned =
        get(&edge, "api.localhost", "/version", &[("x-windlass-pool", "green"), ("x-windlass-token", &pin)]).await;
    assert_eq!(version_of(&pinned), "v2");
    let forged =
        get(&edge, "api.localhost", "/version", &[("x-windlass-pool", "green"), ("x-windlass-token", "guess")]).await;
    assert_eq!(version_of(&forged), "v1", "without a valid token the header is ignored");
    let admin_token =
        get(&edge, "api.localhost", "/version", &[("x-windlass-pool", "green"), ("x-windlass-token", TOKEN)]).await;
    assert_eq!(version_of(&admin_token), "v1", "the admin token does not pin: it belongs to the admin API only");
    let echo = get(&edge, "api.localhost", "/echo", &[("x-windlass-pool", "green"), ("x-windlass-token", &pin)]).await;
    let headers = &serde_json::from_str::<serde_json::Value>(&echo.body).unwrap()["headers"];
    assert!(
        headers.get("x-windlass-token").is_none() && headers.get("x-windlass-pool").is_none(),
        "stripped: {headers}"
    );
    edge.stop();
}

#[tokio::test]
async fn websockets_pass_through() {
    let demo = Demo::start("v1");
    let edge =
        start_edge(spec(vec![("api", service("ws.localhost", vec![("blue", pool(&[&demo], 100))]))]), settings(), None);
    let request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/ws",
        edge.address
    ))
    .unwrap();
    let mut request = request;
    request.headers_mut().insert("host", "ws.localhost".parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    for message in ["one", "two"] {
        socket.send(tokio_tungstenite::tungstenite::Message::text(message)).await.unwrap();
        assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap().as_str(), message);
    }
    edge.stop();
}

/// A pool taken out of rotation finishes its long request before it reports drained.
#[tokio::test]
async fn a_pool_out_of_rotation_drains_its_requests() {
    let (_blue, _green, edge) = blue_green("api.localhost", 100, settings());
    let address = edge.address;
    let long = tokio::spawn(async move {
        windlass_testkit::http::request("GET", address, "/sleep?ms=1500", &[("host", "api.localhost")], "")
            .await
            .unwrap()
    });
    eventually("the long request is in flight on blue", || async {
        state(&edge).await["services"]["api"]["pools"]["blue"]["in_flight"] == 1
    })
    .await;
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/weights", r#"{"green": 100}"#).await.status, 200);
    let blue_state = &state(&edge).await["services"]["api"]["pools"]["blue"];
    assert_eq!(blue_state["drained"], false, "{blue_state}");
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "v2", "new requests go to green");
    let reply = long.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "slept 1500 ms\n"), "the in-flight request finished");
    eventually("blue reports drained", || async {
        state(&edge).await["services"]["api"]["pools"]["blue"]["drained"] == true
    })
    .await;
    edge.stop();
}

/// A WebSocket session on a pool that leaves rotation keeps working until the drain timeout, then
/// is closed, and the pool reports drained.
#[tokio::test]
async fn websockets_on_a_pool_out_of_rotation_are_closed_after_the_drain_timeout() {
    let (_blue, _green, edge) = blue_green(
        "ws.localhost",
        100,
        windlass_edge::Settings { drain_timeout: std::time::Duration::from_millis(600), ..settings() },
    );
    let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/ws",
        edge.address
    ))
    .unwrap();
    request.headers_mut().insert("host", "ws.localhost".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        state(&edge).await["services"]["api"]["pools"]["blue"]["in_flight"],
        1,
        "the session counts as in flight"
    );

    assert_eq!(admin(&edge, "PUT", "/edge/services/api/weights", r#"{"green": 100}"#).await.status, 200);
    socket.send(tokio_tungstenite::tungstenite::Message::text("still here")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap().into_text().unwrap().as_str(), "still here", "draining, not cut");
    assert_eq!(state(&edge).await["services"]["api"]["pools"]["blue"]["drained"], false);

    // After the drain timeout the edge closes the session.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return,
                Some(Ok(message)) if message.is_close() => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the session was closed after the drain timeout");
    eventually("blue reports drained", || async {
        state(&edge).await["services"]["api"]["pools"]["blue"]["drained"] == true
    })
    .await;
    edge.stop();
}

/// A stopping edge stops accepting but finishes the request in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_edge_finishes_requests_in_flight() {
    let demo = Demo::start("v1");
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    let address = edge.address;
    let long = tokio::spawn(async move {
        windlass_testkit::http::request("GET", address, "/sleep?ms=1000", &[("host", "api.localhost")], "").await
    });
    eventually("the request is in flight", || async {
        state(&edge).await["services"]["api"]["pools"]["blue"]["in_flight"] == 1
    })
    .await;
    let stopped = tokio::task::spawn_blocking(move || edge.stop());
    let reply = long.await.unwrap().expect("the in-flight request is answered");
    assert_eq!((reply.status, reply.body.as_str()), (200, "slept 1000 ms\n"));
    stopped.await.unwrap();
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "a stopped edge accepts nothing");
}

/// With a cohort header configured, the same header value always lands on the same pool.
#[tokio::test]
async fn a_cohort_header_pins_clients_by_hash() {
    let (_blue, _green, edge) =
        blue_green("api.localhost", 50, windlass_edge::Settings { sticky_header: Some("x-user".into()), ..settings() });
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let first = version_of(&get(&edge, "api.localhost", "/version", &[("x-user", &user)]).await);
        for _ in 0..3 {
            assert_eq!(
                version_of(&get(&edge, "api.localhost", "/version", &[("x-user", &user)]).await),
                first,
                "{user}"
            );
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "20 users spread over both pools");
    edge.stop();
}

/// Bodies stream through in both directions: a 4 MiB upload is echoed back whole.
#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let demo = Demo::start("v1");
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    let body: String = (0..4 * 1024 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let reply = windlass_testkit::http::request("POST", edge.address, "/echo", &[("host", "api.localhost")], &body)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    let echoed: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(echoed["body"].as_str().map(str::len), Some(body.len()));
    assert!(echoed["body"] == body.as_str(), "the body arrived unchanged");
    edge.stop();
}
