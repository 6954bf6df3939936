//! The admin API's secrets (#18): reads need a token, a read token cannot write, the pin and
//! bypass secrets are good for their one purpose only and never reach an upstream (a recording
//! upstream checks every header of every request), admin TLS with a private CA, and odd specs
//! refused with the field and the bound.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use windlass_edge::client::{AdminTls, EdgeClient, EdgeControl, EdgeError};
use windlass_edge::spec::PoolSpec;
use windlass_edge::{EdgeOptions, Settings};
use windlass_testkit::http;

use crate::harness::*;

/// Writes a secret file as an operator would: 0600.
fn write_private(path: &std::path::Path, value: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, value).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const READ_TOKEN: &str = "a-read-only-token-0123456789";
const BYPASS: &str = "the-staff-bypass-secret-42";

/// Every header of every request an upstream received, in order.
type Recorded = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A real HTTP/1.1 upstream on loopback that records every request's headers and answers
/// `{"version": <name>}` (what the harness's `version_of` reads).
async fn recording_upstream(name: &'static str) -> (SocketAddr, Recorded) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let recorded: Recorded = Arc::default();
    let log = recorded.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let headers = request
                        .headers()
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        .collect();
                    log.lock().unwrap().push(headers);
                    let body = format!("{{\"version\": \"{name}\"}}");
                    async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (address, recorded)
}

async fn with_token(address: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> http::Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    http::request(method, address, path, &headers, body).await.unwrap()
}

const READS: [&str; 5] =
    ["/edge/state", "/edge/events", "/edge/counters", "/metrics", "/edge/services/api/pools/blue/metrics"];

#[tokio::test]
async fn reads_need_a_token_and_the_read_token_cannot_write() {
    let demo = Demo::start("v1");
    let settings = Settings { read_token: Some(READ_TOKEN.into()), ..settings() };
    let edge =
        start_edge(spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]), settings, None);
    for path in READS {
        let anonymous = with_token(edge.admin_address, "GET", path, None, "").await;
        assert_eq!(anonymous.status, 401, "GET {path} without a token: {}", anonymous.body);
        assert!(!anonymous.body.contains("127.0.0.1"), "nothing of the topology leaks: {}", anonymous.body);
        assert_eq!(with_token(edge.admin_address, "GET", path, Some("not-a-token"), "").await.status, 403, "{path}");
        for token in [READ_TOKEN, TOKEN] {
            let reply = with_token(edge.admin_address, "GET", path, Some(token), "").await;
            assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
        }
    }
    let before = state(&edge).await["spec"].clone();
    let writes = [
        ("PUT", "/edge/services/api/weights", r#"{"blue": 100}"#),
        ("PUT", "/edge/services/api/maintenance", r#"{"enabled": true}"#),
        ("PUT", "/edge/maintenance", r#"{"enabled": true}"#),
        ("DELETE", "/edge/services/api", ""),
    ];
    for (method, path, body) in writes {
        let reply = with_token(edge.admin_address, method, path, Some(READ_TOKEN), body).await;
        assert_eq!(reply.status, 403, "{method} {path} with the read token: {}", reply.body);
        assert!(reply.body.contains("read token"), "{}", reply.body);
    }
    assert_eq!(state(&edge).await["spec"], before, "nothing changed");

    // The typed client reads with a read token as the control plane would, and is refused writes.
    let reader = EdgeClient::new(edge.admin_address, edge.address, READ_TOKEN);
    assert!(reader.state().await.unwrap().services.contains_key("api"));
    assert!(reader.counters().await.unwrap().services.contains_key("api"));
    let refused = reader.maintenance(None, true).await.unwrap_err();
    assert!(matches!(&refused, EdgeError::Refused { status: 403, .. }), "{refused}");
    let anonymous = EdgeClient::new(edge.admin_address, edge.address, "");
    let refused = anonymous.state().await.unwrap_err();
    assert!(matches!(&refused, EdgeError::Refused { status: 401, .. }), "{refused}");
    edge.stop();
}

#[tokio::test]
async fn the_pin_and_bypass_secrets_cannot_call_the_admin_api() {
    let demo = Demo::start("v1");
    let settings = Settings { allow_header: Some("x-staff".into()), ..settings() };
    let edge =
        start_edge(spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]), settings, None);
    let pin = windlass_edge::shared::pin_token(TOKEN).unwrap();
    let bypass = windlass_edge::shared::derived_bypass_token(TOKEN).unwrap();
    assert_ne!(pin, TOKEN);
    assert_ne!(bypass, TOKEN);
    for secret in [&pin, &bypass] {
        for (method, path, body) in [("GET", "/edge/state", ""), ("PUT", "/edge/maintenance", r#"{"enabled": true}"#)] {
            let reply = with_token(edge.admin_address, method, path, Some(secret), body).await;
            assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
        }
    }
    assert_eq!(state(&edge).await["maintenance_all"], false);
    edge.stop();
}

/// Pinning with the pin secret and a maintenance bypass by header and by cookie reach the
/// upstream; the admin token in their place does not; and across all of it no header that an
/// upstream saw carries a secret or a pin or bypass header, while the other cookies arrive as sent.
#[tokio::test]
async fn bypass_and_pin_secrets_are_scoped_and_never_reach_an_upstream() {
    let (blue, blue_seen) = recording_upstream("blue").await;
    let (green, green_seen) = recording_upstream("green").await;
    let api = service(
        "api.localhost",
        vec![
            ("blue", PoolSpec { instances: vec![blue], weight: 100 }),
            ("green", PoolSpec { instances: vec![green], weight: 0 }),
        ],
    );
    let settings = Settings {
        allow_header: Some("x-staff".into()),
        allow_cookie: Some("staff_pass".into()),
        bypass_token: Some(BYPASS.into()),
        read_token: Some(READ_TOKEN.into()),
        ..settings()
    };
    let edge = start_edge(spec(vec![("api", api)]), settings, None);
    let pin = windlass_edge::client::EdgeClient::new(edge.admin_address, edge.address, TOKEN).pin_token();
    assert_eq!(Some(&pin), windlass_edge::shared::pin_token(TOKEN).as_ref());

    // Pinning: the pin secret reaches green at weight 0; the admin token or the read token does not.
    let pinned = get(&edge, "api.localhost", "/", &[("x-windlass-pool", "green"), ("x-windlass-token", &pin)]).await;
    assert_eq!(version_of(&pinned), "green");
    for not_pin in [TOKEN, READ_TOKEN, BYPASS] {
        let reply =
            get(&edge, "api.localhost", "/", &[("x-windlass-pool", "green"), ("x-windlass-token", not_pin)]).await;
        assert_eq!(version_of(&reply), "blue", "only the pin secret pins");
    }

    // Maintenance: the bypass secret passes by header and by cookie; nothing else does.
    assert_eq!(admin(&edge, "PUT", "/edge/services/api/maintenance", r#"{"enabled": true}"#).await.status, 200);
    assert_eq!(get(&edge, "api.localhost", "/", &[]).await.status, 503);
    let by_header = get(&edge, "api.localhost", "/", &[("x-staff", BYPASS)]).await;
    assert_eq!(version_of(&by_header), "blue");
    let cookies = format!("theme=dark; staff_pass={BYPASS}; session=abc123");
    let by_cookie = get(&edge, "api.localhost", "/", &[("cookie", &cookies)]).await;
    assert_eq!(version_of(&by_cookie), "blue");
    let derived = windlass_edge::shared::derived_bypass_token(TOKEN).unwrap();
    for not_bypass in [TOKEN, READ_TOKEN, pin.as_str(), derived.as_str()] {
        assert_eq!(get(&edge, "api.localhost", "/", &[("x-staff", not_bypass)]).await.status, 503);
        let cookie = format!("staff_pass={not_bypass}");
        assert_eq!(get(&edge, "api.localhost", "/", &[("cookie", &cookie)]).await.status, 503);
    }
    // While in maintenance, the pin alone does not pass (pinning is not a bypass).
    let pinned = get(&edge, "api.localhost", "/", &[("x-windlass-pool", "green"), ("x-windlass-token", &pin)]).await;
    assert_eq!(pinned.status, 503);
    // A pin together with the bypass: both pass, and neither reaches green.
    let both = get(
        &edge,
        "api.localhost",
        "/",
        &[("x-staff", BYPASS), ("x-windlass-pool", "green"), ("x-windlass-token", &pin)],
    )
    .await;
    assert_eq!(version_of(&both), "green");

    let blue_seen = blue_seen.lock().unwrap().clone();
    let green_seen = green_seen.lock().unwrap().clone();
    assert_eq!(blue_seen.len(), 5, "3 unpinned + bypass by header + bypass by cookie");
    assert_eq!(green_seen.len(), 2, "pinned twice");
    let secrets = [TOKEN, READ_TOKEN, BYPASS, pin.as_str(), derived.as_str()];
    for request in blue_seen.iter().chain(&green_seen) {
        for (name, value) in request {
            assert!(
                !["x-staff", "x-windlass-pool", "x-windlass-token", "authorization"].contains(&name.as_str()),
                "`{name}` reached the upstream: {request:?}"
            );
            for secret in secrets {
                assert!(!value.contains(secret), "a secret reached the upstream in `{name}`: {request:?}");
            }
        }
    }
    let cookie_seen: Vec<&str> =
        blue_seen.iter().flatten().filter(|(name, _)| name == "cookie").map(|(_, v)| v.as_str()).collect();
    assert_eq!(cookie_seen, ["theme=dark; session=abc123"], "the other cookies arrive as sent");
    edge.stop();
}

#[tokio::test]
async fn admin_tls_with_the_private_ca_and_without() {
    let demo = Demo::start("v1");
    let dir = windlass_testkit::tempdir();
    let certificates = windlass_testkit::smtp::certificates(dir.path());
    let edge = windlass_edge::start(EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        settings: settings(),
        initial: spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        state_path: None,
        tls: None,
        admin_tls: Some(windlass_edge::AdminTlsOptions {
            cert: certificates.cert.clone(),
            key: certificates.key.clone(),
        }),
    })
    .unwrap();

    let client = EdgeClient::new(edge.admin_address, edge.address, TOKEN)
        .with_tls(AdminTls { ca_file: Some(certificates.ca.clone()) });
    assert!(client.state().await.unwrap().services.contains_key("api"), "a read over TLS");
    client.maintenance(Some("api"), true).await.unwrap();
    assert!(client.state().await.unwrap().services["api"].maintenance, "a write over TLS");
    assert_eq!(get(&edge, "api.localhost", "/version", &[]).await.status, 503);

    // Without the private CA the certificate is not trusted, and the error says TLS.
    let untrusting = EdgeClient::new(edge.admin_address, edge.address, TOKEN).with_tls(AdminTls { ca_file: None });
    let err = untrusting.state().await.unwrap_err();
    assert!(matches!(&err, EdgeError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("TLS"), "{err}");
    // Plain HTTP to the TLS listener gets no answer it can read.
    let plain = EdgeClient::new(edge.admin_address, edge.address, TOKEN);
    assert!(plain.state().await.is_err());
    // And the CA does not stand in for the token.
    let anonymous = EdgeClient::new(edge.admin_address, edge.address, "")
        .with_tls(AdminTls { ca_file: Some(certificates.ca.clone()) });
    assert!(matches!(anonymous.state().await.unwrap_err(), EdgeError::Refused { status: 401, .. }));
    edge.stop();
}

#[tokio::test]
async fn odd_specs_are_refused_naming_the_field_and_the_bound() {
    let demo = Demo::start("v1");
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    let address = demo.address.to_string();
    let with = |extra: &str| {
        format!(
            r#"{{"routes": [{{"host": "odd.localhost", "path": "/"}}], "pools": {{"blue": {{"instances": ["{address}"], "weight": 100}}}}{extra}}}"#
        )
    };
    let health = |interval: &str, timeout: &str, healthy: &str, unhealthy: &str| {
        with(&format!(
            r#", "health": {{"path": "/health", "interval_ms": {interval}, "timeout_ms": {timeout}, "healthy_after": {healthy}, "unhealthy_after": {unhealthy}}}"#
        ))
    };
    let limit = |client: &str, burst: &str| {
        with(&format!(r#", "rate_limit": {{"per_client_per_sec": {client}, "burst": {burst}}}"#))
    };
    let cases = [
        (health("1000", "0", "1", "3"), "health.timeout_ms` is 0, outside 10..=600000"),
        (health("0", "500", "1", "3"), "health.interval_ms` is 0, outside 10..=3600000"),
        (health("1000000000000", "500", "1", "3"), "health.interval_ms` is 1000000000000, outside 10..=3600000"),
        (health("1000", "500", "0", "3"), "health.healthy_after` is 0, outside 1..=1000000"),
        (health("1000", "500", "1", "0"), "health.unhealthy_after` is 0, outside 1..=1000000"),
        (
            limit("1e-300", "1"),
            "rate_limit.per_client_per_sec` is 1e-300, outside 0.0001..=10000000000 requests a second",
        ),
        (limit("0", "1"), "rate_limit.per_client_per_sec` is 0.0, outside 0.0001..=10000000000"),
        (limit("-5", "1"), "rate_limit.per_client_per_sec` is -5.0, outside"),
        (limit("10", "0"), "rate_limit.burst` is 0, outside 1..=1000000"),
        (limit("10", "4000000000"), "rate_limit.burst` is 4000000000, outside 1..=1000000"),
        (
            with(r#", "failover": {"after_failures": 0, "failback_after": 2, "automatic": true}"#),
            "failover.after_failures` is 0",
        ),
        (
            r#"{"routes": [{"host": "odd.localhost", "path": ""}], "pools": {}}"#.to_owned(),
            "routes[0].path` `` must start with /",
        ),
        (
            r#"{"routes": [{"host": "odd.localhost", "path": "/a b"}], "pools": {}}"#.to_owned(),
            "routes[0].path` `/a b` holds ' '",
        ),
        (r#"{"routes": [{"host": "", "path": "/"}], "pools": {}}"#.to_owned(), "routes[0].host` is empty"),
        (r#"{"routes": [{"host": "odd.localhost:80", "path": "/"}], "pools": {}}"#.to_owned(), "routes[0].host`"),
        (
            r#"{"routes": [{"host": "odd.localhost", "path": "/"}], "pools": {"blue": {"instances": ["127.0.0.1:0"], "weight": 100}}}"#.to_owned(),
            "pools.blue.instances` holds 127.0.0.1:0",
        ),
    ];
    for (body, message) in cases {
        let reply = admin(&edge, "PUT", "/edge/services/odd", &body).await;
        assert_eq!(reply.status, 400, "{body}: {}", reply.body);
        let error: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        let error = error["error"].as_str().unwrap();
        assert!(error.contains(&format!("`services.odd.{message}")), "{body}:\n{error}");
    }
    // Not even JSON can say NaN or infinity: refused as a body, before any check.
    for rate in ["NaN", "1e999"] {
        let reply = admin(&edge, "PUT", "/edge/services/odd", &limit(rate, "1")).await;
        assert_eq!(reply.status, 400, "{rate}: {}", reply.body);
    }
    let weights = admin(&edge, "PUT", "/edge/services/api/weights", r#"{"blue": 101}"#).await;
    assert_eq!(weights.status, 400);
    assert!(weights.body.contains("outside 0..=100"), "{}", weights.body);
    let state = state(&edge).await;
    assert!(state["services"].get("odd").is_none(), "nothing was applied: {state}");
    // A sane spec of the same shape is taken: the bounds are not in the way of real values.
    let sane = with(
        r#", "health": {"path": "/health", "interval_ms": 1000, "timeout_ms": 500, "healthy_after": 2, "unhealthy_after": 3}, "rate_limit": {"per_client_per_sec": 0.000277, "burst": 10}"#,
    );
    let reply = admin(&edge, "PUT", "/edge/services/odd", &sane).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    edge.stop();
}

/// `windlass edge` as its own process, wired from its files and config: `--read-token-file`,
/// `--bypass-token-file` and `[edge] admin_tls`; and secrets that would serve two purposes, or
/// are too short, refused at start with what is wrong.
#[tokio::test]
async fn the_edge_process_takes_its_secrets_from_files_and_admin_tls_from_the_config() {
    let demo = Demo::start("v1");
    let dir = windlass_testkit::tempdir();
    let certificates = windlass_testkit::smtp::certificates(dir.path());
    let config = format!(
        r#"
[project]
name = "shop"
[environments.production]
[services.api]
upstreams = ["{}"]
route = {{ host = "api.localhost" }}
[edge]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_tls = {{ cert = "leaf.pem", key = "leaf.key", ca = "ca.pem" }}
[edge.maintenance.allow]
header = "X-Staff"
"#,
        demo.address
    );
    std::fs::write(dir.path().join("windlass.toml"), config).unwrap();
    let read_file = dir.path().join("read.token");
    let bypass_file = dir.path().join("bypass.token");
    let edge = |read: &str, bypass: &str| {
        write_private(&read_file, &format!("{read}\n"));
        write_private(&bypass_file, bypass);
        let mut command = std::process::Command::new(windlass_testkit::workspace_bin("windlass"));
        command
            .current_dir(dir.path())
            .args(["edge", "--env", "production", "--workers", "1", "--read-token-file"])
            .arg(&read_file)
            .arg("--bypass-token-file")
            .arg(&bypass_file)
            .env_clear()
            .env("WINDLASS_EDGE_TOKEN", TOKEN);
        command
    };
    for (read, bypass, complaint) in [
        (READ_TOKEN, "short", "bypass secret"),
        (TOKEN, BYPASS, "must differ from the admin token"),
        (READ_TOKEN, TOKEN, "must differ from the admin token"),
    ] {
        let output = edge(read, bypass).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{read} {bypass}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(complaint), "{stderr}");
        assert!(!stderr.contains(TOKEN) && !stderr.contains(BYPASS), "no secret in the message: {stderr}");
    }
    // A secret file other users may read is refused, naming it and its mode.
    let mut loose = edge(READ_TOKEN, BYPASS);
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&bypass_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let output = loose.output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bypass.token may be read or written by other users (mode 0644)"), "{stderr}");

    let process = windlass_testkit::process::Process::start(edge(READ_TOKEN, BYPASS));
    let address = process.wait_for_address("edge listening on");
    let admin_address = process.wait_for_address("admin listening on");
    let with_ca = AdminTls { ca_file: Some(certificates.ca.clone()) };
    let reader = EdgeClient::new(admin_address, address, READ_TOKEN).with_tls(with_ca.clone());
    assert!(reader.state().await.unwrap().services.contains_key("api"), "the read token reads, over TLS");
    assert!(matches!(reader.maintenance(None, true).await.unwrap_err(), EdgeError::Refused { status: 403, .. }));
    let operator = EdgeClient::new(admin_address, address, TOKEN).with_tls(with_ca);
    operator.maintenance(None, true).await.unwrap();
    let through = |value: &'static str| async move {
        http::request("GET", address, "/version", &[("host", "api.localhost"), ("x-staff", value)], "").await.unwrap()
    };
    assert_eq!(through("nope").await.status, 503);
    assert_eq!(version_of(&through(BYPASS).await), "v1", "the bypass secret from the file passes");
    assert!(EdgeClient::new(admin_address, address, TOKEN).state().await.is_err(), "no plain HTTP on the admin port");
}

/// Rotation without a restart: new token files and SIGHUP; the old admin, read and bypass
/// secrets (and the pin secret derived from the old admin token) stop working, the new ones
/// work, and the edge kept serving. A broken file on a later SIGHUP keeps the secrets in use.
#[tokio::test]
async fn secrets_rotate_on_sighup_without_a_restart() {
    let (demo, green) = (Demo::start("v1"), Demo::start("v2"));
    let dir = windlass_testkit::tempdir();
    let config = format!(
        "[project]\nname = \"shop\"\n[environments.production]\n[services.api]\nupstreams = [\"{}\"]\n\
         route = {{ host = \"api.localhost\" }}\n[edge]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [edge.maintenance.allow]\nheader = \"X-Staff\"\n",
        demo.address
    );
    std::fs::write(dir.path().join("windlass.toml"), config).unwrap();
    let files = ["admin.token", "read.token", "bypass.token"].map(|name| dir.path().join(name));
    let write = |values: [&str; 3]| {
        for (file, value) in files.iter().zip(values) {
            write_private(file, value);
        }
    };
    write([TOKEN, READ_TOKEN, BYPASS]);
    let mut command = std::process::Command::new(windlass_testkit::workspace_bin("windlass"));
    command
        .current_dir(dir.path())
        .args(["edge", "--env", "production", "--workers", "1", "--token-file"])
        .arg(&files[0])
        .arg("--read-token-file")
        .arg(&files[1])
        .arg("--bypass-token-file")
        .arg(&files[2])
        .env_clear();
    let mut process = windlass_testkit::process::Process::start(command);
    let address = process.wait_for_address("edge listening on");
    let admin_address = process.wait_for_address("admin listening on");
    let status = |token: &'static str| async move {
        with_token(admin_address, "GET", "/edge/state", Some(token), "").await.status
    };
    let pinned = |pin: String| async move {
        let headers = [("host", "api.localhost"), ("x-windlass-pool", "green"), ("x-windlass-token", pin.as_str())];
        version_of(&http::request("GET", address, "/version", &headers, "").await.unwrap())
    };
    assert_eq!((status(TOKEN).await, status(READ_TOKEN).await), (200, 200));
    // A pool at weight 0 that only the pin secret reaches.
    let old_pin = windlass_edge::shared::pin_token(TOKEN).unwrap();
    EdgeClient::new(admin_address, address, TOKEN).put_pool("api", "green", &[green.address]).await.unwrap();
    assert_eq!(pinned(old_pin.clone()).await, "v2");

    const ADMIN2: &str = "the-rotated-admin-token-0123";
    const READ2: &str = "the-rotated-read-token-0123";
    const BYPASS2: &str = "the-rotated-bypass-secret-42";
    write([ADMIN2, READ2, BYPASS2]);
    process.signal(libc::SIGHUP);
    process.wait_for_line("secrets reloaded");
    assert_eq!((status(TOKEN).await, status(READ_TOKEN).await), (403, 403), "the old tokens are refused");
    assert_eq!((status(ADMIN2).await, status(READ2).await), (200, 200), "the new tokens work");
    let operator = EdgeClient::new(admin_address, address, ADMIN2);
    operator.maintenance(None, true).await.unwrap();
    let through = |value: &'static str| async move {
        http::request("GET", address, "/version", &[("host", "api.localhost"), ("x-staff", value)], "").await.unwrap()
    };
    assert_eq!(through(BYPASS).await.status, 503, "the old bypass secret no longer passes");
    assert_eq!(version_of(&through(BYPASS2).await), "v1");
    operator.maintenance(None, false).await.unwrap();
    assert_eq!(pinned(old_pin).await, "v1", "the pin derived from the old admin token no longer pins");
    assert_eq!(pinned(operator.pin_token()).await, "v2", "the pin the client derives from the new one does");

    // A file that breaks the rules: nothing changes, and the edge says why.
    write([ADMIN2, ADMIN2, BYPASS2]);
    process.signal(libc::SIGHUP);
    let refused = process.wait_for_line("secrets not reloaded");
    assert!(refused.contains("must differ from the admin token"), "{refused}");
    assert_eq!(status(READ2).await, 200, "the read token in use stays");
    process.signal(libc::SIGTERM);
    assert!(process.wait().success());
}
