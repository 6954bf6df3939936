//! Request framing as RFC 9112 asks, sent as raw bytes (a client library would fix the request
//! up before it left): conflicting framings and double Hosts refused, the absolute form routed
//! and forwarded by its authority, `Connection` never stripping Host, and error answers that
//! disclose nothing of the upstreams.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// What the edge answered to raw bytes, and whether it closed the connection (within 3 s).
struct RawAnswer {
    text: String,
    closed: bool,
}

impl RawAnswer {
    fn status(&self) -> u16 {
        self.text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The JSON body of the last answer (the demo's `/echo`).
    fn json(&self) -> serde_json::Value {
        let body = self.text.rsplit("\r\n\r\n").next().unwrap_or("");
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }
}

/// Sends `bytes` and reads until the edge closes the connection or 3 s pass.
async fn raw(address: std::net::SocketAddr, bytes: &[u8]) -> RawAnswer {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer)).await.is_ok();
    RawAnswer { text: String::from_utf8_lossy(&answer).into_owned(), closed }
}

/// Requests to `/echo` the demo has answered (from its own counters).
async fn echoed(demo: &Demo) -> u64 {
    let metrics = windlass_testkit::http::get(demo.address, "/metrics").await.unwrap().body;
    metrics
        .lines()
        .filter(|l| l.starts_with("demo_http_requests_total{route=\"/echo\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn one_service(demo: &Demo) -> windlass_edge::EdgeHandle {
    start_edge(spec(vec![("api", service("api.localhost", vec![("blue", pool(&[demo], 100))]))]), settings(), None)
}

/// Both framings in one request, in either order (hyper hides `Content-Length` from the proxy in
/// both): 400 and the connection closed, nothing reaches the upstream. Chunked and sized
/// requests alone, one after the other on one connection, still pass.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused_and_the_connection_closed() {
    let demo = Demo::start("v1");
    let edge = one_service(&demo);
    let both: [&[u8]; 3] = [
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nTransfer-Encoding: chunked\r\ncontent-LENGTH: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ];
    for request in both {
        let answer = raw(edge.address, request).await;
        assert_eq!(answer.status(), 400, "{}", answer.text);
        assert!(answer.text.to_ascii_lowercase().contains("connection: close"), "{}", answer.text);
        assert!(answer.closed, "the edge closed the connection: {}", answer.text);
        assert_eq!(answer.text.matches("HTTP/1.1 ").count(), 1, "{}", answer.text);
    }
    assert_eq!(echoed(&demo).await, 0, "none reached the upstream");

    // A sized request, then a chunked one, on one keep-alive connection: the first's
    // Content-Length is not held against the second.
    let answer = raw(
        edge.address,
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 5\r\n\r\nhello\
          POST /echo HTTP/1.1\r\nHost: api.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(answer.text.matches("HTTP/1.1 200").count(), 2, "{}", answer.text);
    assert_eq!(answer.json()["body"], "world");
    assert_eq!(echoed(&demo).await, 2);
    edge.stop();
}

/// RFC 9112 §3.2: a request with two Host lines is a 400 (whichever would have routed it).
#[tokio::test]
async fn two_host_headers_are_refused() {
    let demo = Demo::start("v1");
    let edge = one_service(&demo);
    for request in [
        &b"GET /echo HTTP/1.1\r\nHost: api.localhost\r\nHost: other.localhost\r\n\r\n"[..],
        b"GET /echo HTTP/1.1\r\nHost: api.localhost\r\nX-A: 1\r\nhost: api.localhost\r\n\r\n",
    ] {
        let answer = raw(edge.address, request).await;
        assert_eq!(answer.status(), 400, "{}", answer.text);
        assert!(answer.text.contains("more than one Host"), "{}", answer.text);
    }
    assert_eq!(echoed(&demo).await, 0);
    // Other repeated headers are fine.
    let answer = raw(
        edge.address,
        b"GET /echo HTTP/1.1\r\nHost: api.localhost\r\nX-A: 1\r\nX-A: 2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    edge.stop();
}

/// RFC 9112 §3.2.2: an absolute-form target is routed by its authority, and the upstream gets
/// that authority as its Host, not the Host line the client sent beside it.
#[tokio::test]
async fn an_absolute_form_target_is_routed_and_forwarded_by_its_authority() {
    let (api, other) = (Demo::start("api"), Demo::start("other"));
    let edge = start_edge(
        spec(vec![
            ("api", service("api.localhost", vec![("blue", pool(&[&api], 100))])),
            ("other", service("other.localhost", vec![("blue", pool(&[&other], 100))])),
        ]),
        settings(),
        None,
    );
    let answer = raw(
        edge.address,
        b"GET http://api.localhost/echo?x=1 HTTP/1.1\r\nHost: other.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    let echo = answer.json();
    assert_eq!(echo["headers"]["host"], "api.localhost", "{echo}");
    assert_eq!((echo["path"].as_str(), echo["query"].as_str()), (Some("/echo"), Some("x=1")), "origin form upstream");
    assert_eq!((echoed(&api).await, echoed(&other).await), (1, 0), "routed to api, not other");

    // With a port: forwarded as given.
    let answer = raw(
        edge.address,
        b"GET http://api.localhost:8080/echo HTTP/1.1\r\nHost: other.localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.json()["headers"]["host"], "api.localhost:8080");
    // User information in the target is refused (it must not become a Host).
    let answer = raw(edge.address, b"GET http://user@api.localhost/echo HTTP/1.1\r\nHost: api.localhost\r\n\r\n").await;
    assert_eq!(answer.status(), 400, "{}", answer.text);
    edge.stop();
}

/// Hop-by-hop removal of the names `Connection` lists never removes Host (nor Content-Length):
/// the upstream gets the Host the request was routed by, and the body its length.
#[tokio::test]
async fn connection_naming_host_keeps_host() {
    let demo = Demo::start("v1");
    let edge = one_service(&demo);
    let answer = raw(
        edge.address,
        b"POST /echo HTTP/1.1\r\nHost: api.localhost\r\nConnection: host, content-length, x-hop, close\r\nX-Hop: 1\r\nX-Kept: 2\r\nContent-Length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
    let echo = answer.json();
    assert_eq!(echo["headers"]["host"], "api.localhost", "{echo}");
    assert_eq!(echo["headers"]["content-length"], "5", "{echo}");
    assert_eq!(echo["body"], "hello", "{echo}");
    assert!(echo["headers"].get("x-hop").is_none(), "other listed names still go: {echo}");
    assert_eq!(echo["headers"]["x-kept"], "2", "{echo}");
    edge.stop();
}

/// A 502 names no upstream address and no error: a generic body with the request id (the
/// detail goes to the edge's log under that id).
#[tokio::test]
async fn a_bad_gateway_answer_discloses_no_address() {
    // An address nothing listens on: bound, then closed.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_address = gone.local_addr().unwrap();
    drop(gone);
    let edge = start_edge(
        spec(vec![(
            "api",
            service(
                "api.localhost",
                vec![("blue", windlass_edge::spec::PoolSpec { instances: vec![gone_address], weight: 100 })],
            ),
        )]),
        settings(),
        None,
    );
    let reply = get(&edge, "api.localhost", "/", &[("x-request-id", "req-502-check")]).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert!(reply.body.contains("bad gateway"), "{}", reply.body);
    assert!(reply.body.contains("req-502-check"), "the body names the request id: {}", reply.body);
    for secret in ["127.0.0.1", &gone_address.port().to_string(), "refused", "connect"] {
        assert!(!reply.body.contains(secret), "the body discloses `{secret}`: {}", reply.body);
    }
    edge.stop();
}
