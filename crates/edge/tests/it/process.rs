//! `windlass edge` as its own process: serving a config's static upstreams, refusing to start
//! without a token, and coming back to its persisted table after a restart.

use std::process::Command;

use windlass_testkit::process::Process;

use crate::harness::*;

fn config(demo: &Demo, listen: &str) -> String {
    format!(
        r#"
[project]
name = "shop"
[environments.production]
[services.api]
upstreams = ["{}"]
route = {{ host = "api.localhost" }}
[edge]
listen = "{listen}"
admin_listen = "127.0.0.1:0"
access_log = true
"#,
        demo.address
    )
}

fn edge_process(dir: &std::path::Path, token: &str) -> Process {
    let mut command = Command::new(windlass_testkit::workspace_bin("windlass"));
    command
        .current_dir(dir)
        .args(["edge", "--env", "production", "--workers", "1"])
        .env_clear()
        .env("WINDLASS_EDGE_TOKEN", token);
    Process::start(command)
}

#[tokio::test]
async fn a_restarted_edge_comes_back_to_its_table() {
    let (blue, green) = (Demo::start("v1"), Demo::start("v2"));
    let dir = windlass_testkit::tempdir();
    // A port of our own for the restart to reuse: bound, read, released just before the start.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::fs::write(dir.path().join("windlass.toml"), config(&blue, &port.to_string())).unwrap();

    let mut first = edge_process(dir.path(), TOKEN);
    let address = first.wait_for_address("edge listening on");
    let admin_address = first.wait_for_address("admin listening on");
    let via = || async move {
        windlass_testkit::http::request("GET", address, "/version", &[("host", "api.localhost")], "").await
    };
    assert_eq!(version_of(&via().await.unwrap()), "v1");
    let logged: serde_json::Value = serde_json::from_str(&first.wait_for_line_containing("\"request_id\"")).unwrap();
    assert_eq!(
        (logged["path"].as_str(), logged["status"].as_u64(), logged["host"].as_str()),
        (Some("/version"), Some(200), Some("api.localhost")),
        "the access log has a JSON line for the request: {logged}"
    );

    let auth = format!("Bearer {TOKEN}");
    let put = |path: &'static str, body: String| {
        let auth = auth.clone();
        async move {
            windlass_testkit::http::request("PUT", admin_address, path, &[("authorization", &auth)], &body)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        put("/edge/services/api/pools/green", format!(r#"{{"instances": ["{}"]}}"#, green.address)).await.status,
        200
    );
    assert_eq!(put("/edge/services/api/weights", r#"{"green": 100}"#.into()).await.status, 200);
    assert_eq!(version_of(&via().await.unwrap()), "v2");

    first.signal(libc::SIGKILL);
    first.wait();
    let second = edge_process(dir.path(), TOKEN);
    assert_eq!(second.wait_for_address("edge listening on"), address);
    second.wait_for_line("restored the persisted routing table");
    assert_eq!(version_of(&via().await.unwrap()), "v2", "the switch survived kill -9 and restart");
}

#[test]
fn the_edge_refuses_to_start_without_a_token() {
    let demo = Demo::start("v1");
    let dir = windlass_testkit::tempdir();
    std::fs::write(dir.path().join("windlass.toml"), config(&demo, "127.0.0.1:0")).unwrap();
    let output = Command::new(windlass_testkit::workspace_bin("windlass"))
        .current_dir(dir.path())
        .args(["edge", "--env", "production"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs an admin token"), "{stderr}");
}

/// A crash in the middle of persisting a change (after the new state is written to its temporary
/// file, before it replaces the old one) leaves the previous state whole: the restarted edge
/// serves exactly what it served before the change.
#[tokio::test]
async fn a_crash_while_persisting_a_switch_leaves_the_previous_table() {
    let (blue, green) = (Demo::start("v1"), Demo::start("v2"));
    let dir = windlass_testkit::tempdir();
    std::fs::write(dir.path().join("windlass.toml"), config(&blue, "127.0.0.1:0")).unwrap();
    {
        // A first run writes the initial state.
        let mut first = edge_process(dir.path(), TOKEN);
        first.wait_for_line("admin listening on");
        first.signal(libc::SIGTERM);
        assert!(first.wait().success());
    }
    let mut command = Command::new(windlass_testkit::workspace_bin("windlass"));
    command
        .current_dir(dir.path())
        .args(["edge", "--env", "production", "--workers", "1"])
        .env_clear()
        .env("WINDLASS_EDGE_TOKEN", TOKEN)
        .env("WINDLASS_FAILPOINTS", "edge.state.before_rename=abort");
    let mut armed = Process::start(command);
    armed.wait_for_line("edge listening on");
    let admin_address = armed.wait_for_address("admin listening on");
    let auth = format!("Bearer {TOKEN}");
    let body = format!(r#"{{"instances": ["{}"]}}"#, green.address);
    let crashed = windlass_testkit::http::request(
        "PUT",
        admin_address,
        "/edge/services/api/pools/green",
        &[("authorization", &auth)],
        &body,
    )
    .await;
    assert!(crashed.is_err(), "the edge died at the failpoint instead of answering");
    assert!(!armed.wait().success());

    let restarted = edge_process(dir.path(), TOKEN);
    let address = restarted.wait_for_address("edge listening on");
    let admin_address = restarted.wait_for_address("admin listening on");
    let auth = format!("Bearer {TOKEN}");
    let reply = windlass_testkit::http::request("GET", admin_address, "/edge/state", &[("authorization", &auth)], "")
        .await
        .unwrap();
    let state: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert!(
        state["spec"]["services"]["api"]["pools"].get("green").is_none(),
        "the half-done change is not there: {state}"
    );
    let reply =
        windlass_testkit::http::request("GET", address, "/version", &[("host", "api.localhost")], "").await.unwrap();
    assert_eq!(version_of(&reply), "v1");
}

/// `[edge.tls]` in the config: certificate paths are read relative to the config file, and the
/// process serves HTTPS with HTTP/2 beside plain HTTP.
#[tokio::test]
async fn the_edge_process_serves_tls_from_the_config() {
    let demo = Demo::start("v1");
    let dir = windlass_testkit::tempdir();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    crate::protocols::make_ca(&certs);
    crate::protocols::make_certificate(&certs, "process");
    let config = config(&demo, "127.0.0.1:0")
        + "tls = { listen = \"127.0.0.1:0\", cert = \"certs/edge.pem\", key = \"certs/edge.key\" }\n";
    std::fs::write(dir.path().join("windlass.toml"), config).unwrap();
    let edge = edge_process(dir.path(), TOKEN);
    edge.wait_for_line("edge listening on");
    let tls_address = edge.wait_for_address("tls listening on");
    let (tls, _) = crate::protocols::tls_connect(tls_address, &certs.join("ca.pem"), &[b"h2"]).await;
    let (version, body) = crate::protocols::h2_get(tls, "https://api.localhost/version").await;
    assert_eq!(version, hyper::Version::HTTP_2);
    assert_eq!(crate::protocols::version_in(&body), "v1");
}
