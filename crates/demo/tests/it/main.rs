//! The demo service, run as a real process and reached over loopback.

// Tests: their tasks live as long as the test.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;

use futures_util::{SinkExt, StreamExt};
use windlass_testkit::http;
use windlass_testkit::process::{Process, loopback_listener};

struct Demo {
    process: Process,
    main: SocketAddr,
    admin: SocketAddr,
}

/// Starts the demo with both ports handed over as sockets (race-free) and `env` set.
fn start(env: &[(&str, &str)]) -> Demo {
    let main = loopback_listener();
    let admin = loopback_listener();
    let mut command = Command::new(env!("CARGO_BIN_EXE_windlass-demo"));
    command.env_clear().envs(env.iter().copied());
    let process = Process::start_with_listeners(command, &[&main, &admin]);
    let main_address = process.wait_for_address("listening on");
    let admin_address = process.wait_for_address("admin listening on");
    assert_eq!(main_address, main.local_addr().unwrap(), "the demo serves the socket it was given");
    assert_eq!(admin_address, admin.local_addr().unwrap());
    Demo { process, main: main_address, admin: admin_address }
}

async fn put_faults(demo: &Demo, json: &str) -> http::Reply {
    http::request("PUT", demo.admin, "/faults", &[("content-type", "application/json")], json).await.unwrap()
}

#[tokio::test]
async fn answers_health_version_echo_and_metrics() {
    let demo = start(&[("VERSION", "api-1.4.2")]);
    let health = http::get(demo.main, "/health").await.unwrap();
    assert_eq!(health.status, 200);
    assert!(health.body.contains("\"status\":\"ok\""), "{}", health.body);

    let version: serde_json::Value =
        serde_json::from_str(&http::get(demo.main, "/version").await.unwrap().body).unwrap();
    assert_eq!(version["version"], "api-1.4.2");
    let build_id = version["build_id"].as_str().unwrap();
    assert_eq!(build_id.len(), 16, "a 64-bit hash of the binary: {build_id}");
    assert_ne!(build_id, "0000000000000000", "the binary could be read and hashed");

    let echo = http::request("POST", demo.main, "/echo?x=1", &[("x-probe", "yes")], "hello").await.unwrap();
    let echo: serde_json::Value = serde_json::from_str(&echo.body).unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["query"], "x=1");
    assert_eq!(echo["headers"]["x-probe"], "yes");
    assert_eq!(echo["body"], "hello");

    for _ in 0..3 {
        assert_eq!(http::request("POST", demo.main, "/emails", &[], "").await.unwrap().status, 202);
    }
    let metrics = http::get(demo.main, "/metrics").await.unwrap();
    assert!(metrics.headers["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    assert!(metrics.body.contains("demo_emails_sent_total 3"), "{}", metrics.body);
    assert!(metrics.body.contains("demo_http_requests_total{route=\"/health\",code=\"200\"} 1"), "{}", metrics.body);
    assert!(metrics.body.contains("demo_build_info{version=\"api-1.4.2\""), "{}", metrics.body);
}

#[tokio::test]
async fn faults_switch_on_and_off_at_run_time() {
    let demo = start(&[]);
    let reply = put_faults(&demo, r#"{"error_rate": 0.5, "health_failing": true}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(http::get(demo.main, "/echo").await.unwrap().status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 500).count(), 5, "exactly half fail: {statuses:?}");
    assert_eq!(http::get(demo.main, "/health").await.unwrap().status, 503);
    assert_eq!(http::get(demo.main, "/metrics").await.unwrap().status, 200, "metrics are never failed");

    let reset = http::request("DELETE", demo.admin, "/faults", &[], "").await.unwrap();
    assert_eq!(reset.status, 200);
    assert_eq!(http::get(demo.main, "/health").await.unwrap().status, 200);
    for _ in 0..4 {
        assert_eq!(http::get(demo.main, "/echo").await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn bad_fault_requests_are_refused_and_change_nothing() {
    let demo = start(&[]);
    for body in [r#"{"error_rate": 2}"#, r#"{"latency_ms": 999999}"#, r#"{"explode": true}"#, "not json"] {
        let reply = put_faults(&demo, body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        assert!(reply.body.contains("error"), "{}", reply.body);
    }
    let faults: serde_json::Value =
        serde_json::from_str(&http::get(demo.admin, "/faults").await.unwrap().body).unwrap();
    assert_eq!(faults["error_rate"], 0.0);
    assert_eq!(faults["latency_ms"], 0);
}

#[tokio::test]
async fn refusing_connections_is_real_and_reversible() {
    let demo = start(&[]);
    assert_eq!(put_faults(&demo, r#"{"refuse_connections": true}"#).await.status, 200);
    let refused = tokio::net::TcpStream::connect(demo.main).await;
    assert_eq!(refused.err().map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(http::get(demo.admin, "/faults").await.unwrap().status, 200, "the admin port is unaffected");

    assert_eq!(put_faults(&demo, r#"{"refuse_connections": false}"#).await.status, 200);
    assert_eq!(http::get(demo.main, "/health").await.unwrap().status, 200, "the same port accepts again");
}

#[tokio::test]
async fn faults_from_the_environment_and_slow_start() {
    let demo = start(&[("FAULT_ERROR_RATE", "100%"), ("SLOW_START", "1h")]);
    assert_eq!(http::get(demo.main, "/echo").await.unwrap().status, 500);
    let ready = http::get(demo.main, "/ready").await.unwrap();
    assert_eq!(ready.status, 503);
    assert!(ready.body.contains("starting"), "{}", ready.body);
}

#[test]
fn a_malformed_fault_variable_stops_the_start_with_a_message() {
    let output = Command::new(env!("CARGO_BIN_EXE_windlass-demo"))
        .env_clear()
        .env("PORT", "0")
        .env("FAULT_ERROR_RATE", "lots")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("FAULT_ERROR_RATE: `lots` is not a share"), "{stderr}");
}

#[tokio::test]
async fn websocket_echo() {
    let demo = start(&[]);
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", demo.main)).await.unwrap();
    socket.send(tokio_tungstenite::tungstenite::Message::text("ping over ws")).await.unwrap();
    let reply = socket.next().await.unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "ping over ws");
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_then_exits() {
    let mut demo = start(&[]);
    let main = demo.main;
    let in_flight = tokio::spawn(async move { http::get(main, "/sleep?ms=1500").await });
    wait_until_in_flight(main, 1).await;
    demo.process.signal(libc::SIGTERM);
    let reply = in_flight.await.unwrap().expect("the in-flight request is answered, not cut off");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "slept 1500 ms\n");
    assert!(demo.process.wait().success());
}

/// Waits until the demo reports `count` requests inside it (a condition, not a delay).
async fn wait_until_in_flight(address: SocketAddr, count: u32) {
    let wanted = format!("demo_http_requests_in_flight {count}\n");
    for _ in 0..3000 {
        if http::get(address, "/metrics").await.unwrap().body.contains(&wanted) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the demo never had {count} request(s) in flight");
}
