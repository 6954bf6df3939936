//! `windlass slo <env>` end to end: rollups collected from real traffic through an in-process
//! edge, then the real `windlass server` answering `GET /api/v1/slo/{env}` from them and the real
//! CLI printing the table. Needs the workspace's binaries built (`cargo build --workspace`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use windlass_edge::client::EdgeClient;
use windlass_edge::spec::{EdgeSpec, PoolSpec, RouteSpec, ServiceSpec};
use windlass_edge::{EdgeOptions, Settings};
use windlass_monitor::slo::collector::{Collected, Collector, CollectorSettings};
use windlass_store::ManualClock;
use windlass_testkit::http;
use windlass_testkit::process::{Process, loopback_listener};
use windlass_testkit::workspace_bin;

const TOKEN: &str = "slo-server-test-admin-token-0123456789";
const HOST: &str = "api.shop.localhost";

#[tokio::test]
async fn the_server_reports_and_the_cli_prints_the_slos() {
    let dir = windlass_testkit::tempdir();
    let demo_bin = workspace_bin("windlass-demo");
    let config = dir.path().join("windlass.toml");
    std::fs::write(
        &config,
        format!(
            r#"[project]
name = "shop"

[environments.production]

[services.api]
run = "{}"
route = {{ host = "{HOST}", path = "/" }}

[slo.api]
availability = "99.9%"
latency = {{ p95 = "300ms", p99 = "2s" }}
"#,
            demo_bin.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");

    // A demo failing a fifth of its answers behind an in-process edge.
    let (main, admin) = (loopback_listener(), loopback_listener());
    let mut command = Command::new(&demo_bin);
    command.env_clear().env("VERSION", "v1").env("FAULT_ERROR_RATE", "20%");
    let demo = Process::start_with_listeners(command, &[&main, &admin]);
    demo.wait_for_line("listening on");
    let service = ServiceSpec {
        routes: vec![RouteSpec { host: Some(HOST.into()), path: "/".into() }],
        pools: [("blue".to_owned(), PoolSpec { instances: vec![main.local_addr().unwrap()], weight: 100 })]
            .into_iter()
            .collect(),
        ..ServiceSpec::default()
    };
    let edge = windlass_edge::start(EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        settings: Settings { eject_after_errors: u32::MAX, ..Settings::new(TOKEN) },
        initial: EdgeSpec { services: [("api".to_owned(), service)].into_iter().collect(), maintenance_all: false },
        state_path: None,
        tls: None,
        admin_tls: None,
    })
    .unwrap();

    // Two minutes ago by the wall, a collector on a manual clock stores a minute of that traffic
    // in the server's store.
    let clock = ManualClock::new(Timestamp::now() - jiff::SignedDuration::from_mins(2));
    let store =
        windlass_store::open(&state.join("windlass.db").display().to_string(), Arc::new(clock.clone())).await.unwrap();
    let collector = Collector {
        store: store.clone(),
        edge: Arc::new(EdgeClient::new(edge.admin_address, edge.address, TOKEN)),
        clock: Arc::new(clock.clone()),
        environment: "production".into(),
        settings: CollectorSettings::default(),
    };
    let services = vec!["api".to_owned()];
    assert_eq!(collector.collect(&services).await.unwrap(), Collected::Baseline);
    let (mut answers, mut errors) = (0u64, 0u64);
    for _ in 0..300 {
        let reply = http::request("GET", edge.address, "/version", &[("host", HOST)], "").await.unwrap();
        answers += 1;
        errors += u64::from(reply.status >= 500);
    }
    assert!(errors > 20, "{errors} of {answers}");
    clock.advance(Duration::from_secs(60));
    assert!(matches!(collector.collect(&services).await.unwrap(), Collected::Rows { .. }));
    drop(collector);
    drop(store);

    // The real server and CLI.
    let created = Command::new(workspace_bin("windlass"))
        .args(["token", "create", "--admin", "--for", "alice"])
        .arg("--config")
        .arg(&config)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    let mut server = Command::new(workspace_bin("windlass"));
    server
        .args(["server", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&config)
        .arg("--state")
        .arg(&state)
        .arg("--edge-admin")
        .arg(edge.admin_address.to_string())
        .arg("--edge-listen")
        .arg(edge.address.to_string())
        .env("WINDLASS_EDGE_TOKEN", TOKEN);
    let server = Process::start(server);
    let url = server.wait_for_line_containing("server listening on ");
    let url = url.rsplit(' ').next().unwrap().to_owned();
    let address: SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    // The API: token required; the JSON has what the minute held.
    let anonymous = http::request("GET", address, "/api/v1/slo/production", &[], "").await.unwrap();
    assert_eq!(anonymous.status, 401);
    let bearer = format!("Bearer {token}");
    let reply =
        http::request("GET", address, "/api/v1/slo/production", &[("authorization", &bearer)], "").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let api = &json["services"][0];
    assert_eq!(api["objective"]["service"], "api");
    assert_eq!(api["window"]["total"], answers);
    assert_eq!(api["window"]["bad"], errors);
    assert_eq!(api["alerts"][0]["severity"], "critical");
    let unknown =
        http::request("GET", address, "/api/v1/slo/nowhere", &[("authorization", &bearer)], "").await.unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    // The CLI: the table, and exit 1 while a burn alert fires.
    let cli = |extra: &[&str]| {
        Command::new(workspace_bin("windlass"))
            .args(["slo", "production", "--server", &url])
            .arg("--token-file")
            .arg(&token_file)
            .args(extra)
            .output()
            .unwrap()
    };
    let table = cli(&[]);
    let text = String::from_utf8_lossy(&table.stdout).into_owned();
    assert_eq!(table.status.code(), Some(1), "{text}{}", String::from_utf8_lossy(&table.stderr));
    assert!(text.contains("api  availability 99.900% over 30d · p95 ≤ 300ms · p99 ≤ 2.00s"), "{text}");
    assert!(text.contains(&format!("({answers} requests, {errors} errors)")), "{text}");
    assert!(text.contains("CRITICAL 14.4×: 1h at"), "{text}");
    let as_json = cli(&["--output", "json"]);
    let parsed: serde_json::Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(parsed["services"][0]["window"]["total"], answers);
    drop(server);
    drop(demo);
    edge.stop();
}
