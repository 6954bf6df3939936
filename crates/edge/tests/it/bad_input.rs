//! Hostile and broken input, from clients, upstreams and admin callers: a clear answer, nothing
//! changed, everyone else still served.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// Sends raw bytes and reads until the edge closes or a second passes.
async fn raw(address: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

async fn echo_count(demo: &Demo) -> u64 {
    let metrics = windlass_testkit::http::get(demo.address, "/metrics").await.unwrap().body;
    metrics
        .lines()
        .filter(|l| l.starts_with("demo_http_requests_total{route=\"/echo\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A request that has both `Content-Length` and `Transfer-Encoding` is refused with 400 and the
/// connection closed (RFC 9112 §6.1, as nginx does): neither the outer request nor the one
/// smuggled inside it reaches an upstream.
#[tokio::test]
async fn smuggling_attempts_never_reach_an_upstream() {
    let demo = Demo::start("v1");
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    let attempts: [&[u8]; 2] = [
        // CL.TE: the front believes Content-Length, the back chunked (or the other way round).
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
        // TE.CL
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n31\r\nGET /smuggled HTTP/1.1\r\nHost: api.localhost\r\n\r\n\r\n0\r\n\r\n",
    ];
    for attempt in attempts {
        let answer = raw(edge.address, attempt).await;
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer per connection: {answer}");
        let head = answer.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 400"), "{answer}");
        assert!(head.contains("connection: close"), "{answer}");
    }
    let metrics = windlass_testkit::http::get(demo.address, "/metrics").await.unwrap().body;
    assert!(!metrics.contains("route=\"other\""), "no smuggled request reached the upstream:\n{metrics}");
    assert_eq!(echo_count(&demo).await, 0, "neither outer request reached it");

    // A body whose chunk framing is broken is refused, and the request is not completed upstream.
    let answer = raw(
        edge.address,
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "v1", "everyone else is still served");
    edge.stop();
}

#[tokio::test]
async fn oversized_headers_garbage_and_http09_are_refused() {
    let demo = Demo::start("v1");
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&demo], 100))]))]),
        settings(),
        None,
    );
    let huge = format!("GET / HTTP/1.1\r\nHost: api.localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(70 * 1024));
    assert!(raw(edge.address, huge.as_bytes()).await.starts_with("HTTP/1.1 431"), "over 64 KiB of headers");
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: api.localhost\r\n{many}\r\n");
    assert!(raw(edge.address, many.as_bytes()).await.starts_with("HTTP/1.1 431"), "over 100 headers");
    assert!(raw(edge.address, b"\x16\x03\x01garbage\r\n\r\n").await.starts_with("HTTP/1.1 400"));
    let http09 = raw(edge.address, b"GET /\r\n").await;
    assert!(http09.is_empty() || http09.starts_with("HTTP/1.1 400"), "HTTP/0.9 gets nothing or a 400: {http09:?}");
    assert!(
        raw(edge.address, b"GET / HTTP/1.1\r\nHost: api.localhost\r\nBad\x01Header: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 400")
    );
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "v1");
    edge.stop();
}

#[tokio::test]
async fn an_upstream_that_hangs_gets_504_and_one_that_answers_garbage_502() {
    let slow = Demo::start("slow");
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_address = garbage.local_addr().unwrap();
    let garbage_server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = garbage.accept().await else { return };
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let _ = stream.write_all(b"this is not HTTP at all\r\n\r\n").await;
        }
    });
    let settings = windlass_edge::Settings { upstream_timeout: Duration::from_millis(300), ..settings() };
    let edge = start_edge(
        spec(vec![
            ("slow", service("slow.localhost", vec![("blue", pool(&[&slow], 100))])),
            (
                "broken",
                service(
                    "broken.localhost",
                    vec![("blue", windlass_edge::spec::PoolSpec { instances: vec![garbage_address], weight: 100 })],
                ),
            ),
        ]),
        settings,
        None,
    );
    let hung = get(&edge, "slow.localhost", "/sleep?ms=5000", &[]).await;
    assert_eq!(hung.status, 504, "{}", hung.body);
    let broken = get(&edge, "broken.localhost", "/", &[]).await;
    assert_eq!(broken.status, 502, "{}", broken.body);
    assert_eq!(version_of(&get(&edge, "slow.localhost", "/version", &[]).await), "slow", "the next request is served");
    garbage_server.abort();
    edge.stop();
}

#[tokio::test]
async fn bad_admin_calls_change_nothing() {
    let (_blue, _green, edge) = blue_green("api.localhost", 100, settings());
    let before = state(&edge).await["spec"].clone();
    let cases = [
        ("PUT", "/edge/services/api/weights", r#"{"blue": 150}"#, 400, "outside 0..=100"),
        ("PUT", "/edge/services/api/weights", r#"{"blue": -1, "green": 101}"#, 400, "outside 0..=100"),
        ("PUT", "/edge/services/api/weights", r#"{"blue": 60, "green": 30}"#, 400, "add up to 90"),
        ("PUT", "/edge/services/api/weights", r#"{"purple": 100}"#, 404, "no pool `purple`"),
        ("PUT", "/edge/services/nope/weights", r#"{"blue": 100}"#, 404, "unknown service `nope`"),
        ("PUT", "/edge/services/api/weights", "not json", 400, "invalid request body"),
        ("PUT", "/edge/services/api/failover", r#"{"to": "secondary"}"#, 400, "no secondary pool"),
        ("PUT", "/edge/services/api/failover", r#"{"to": "sideways"}"#, 400, "neither"),
    ];
    for (method, path, body, status, message) in cases {
        let reply = admin(&edge, method, path, body).await;
        assert_eq!(reply.status, status, "{path} {body}: {}", reply.body);
        assert!(reply.body.contains(message), "{path} {body}: {}", reply.body);
    }
    let unauthenticated = windlass_testkit::http::request(
        "PUT",
        edge.admin_address,
        "/edge/services/api/weights",
        &[],
        r#"{"green": 100}"#,
    )
    .await
    .unwrap();
    assert_eq!(unauthenticated.status, 401);
    let forged = windlass_testkit::http::request(
        "PUT",
        edge.admin_address,
        "/edge/services/api/weights",
        &[("authorization", "Bearer not-the-token")],
        r#"{"green": 100}"#,
    )
    .await
    .unwrap();
    assert_eq!(forged.status, 403);
    assert_eq!(state(&edge).await["spec"], before, "nothing changed");
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "v1");
    edge.stop();
}
