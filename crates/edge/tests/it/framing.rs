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
    // An empty path after the authority (here a fragment follows it) is forwarded as `/`, never
    // as an empty request target (found by the edge_request fuzz target).
    let answer =
        raw(edge.address, b"GET http://api.localhost#x HTTP/1.1\r\nHost: other.localhost\r\nConnection: close\r\n\r\n")
            .await;
    assert_eq!(answer.status(), 200, "{}", answer.text);
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

/// The corpus of raw requests, decoded (see the file's header for the format).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let text = include_str!("../data/rfc9112-requests.txt");
    let mut cases: Vec<(String, Vec<u8>)> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (name, escaped) = line.split_once('\t').unwrap_or_else(|| panic!("no tab in {line:?}"));
            (name.to_owned(), unescape(escaped))
        })
        .collect();
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: api.localhost\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    cases.push(("headers over 64 KiB".into(), huge.into_bytes()));
    cases
}

fn unescape(escaped: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chars = escaped.bytes();
    while let Some(b) = chars.next() {
        if b != b'\\' {
            bytes.push(b);
            continue;
        }
        match chars.next() {
            Some(b'r') => bytes.push(b'\r'),
            Some(b'n') => bytes.push(b'\n'),
            Some(b't') => bytes.push(b'\t'),
            Some(b'0') => bytes.push(0),
            Some(b'\\') => bytes.push(b'\\'),
            Some(b'x') => {
                let hex: Vec<u8> = chars.by_ref().take(2).collect();
                let hex = std::str::from_utf8(&hex).unwrap();
                bytes.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad escape \\x{hex}")));
            }
            other => panic!("unknown escape \\{:?}", other.map(char::from)),
        }
    }
    bytes
}

/// An upstream that counts the requests it received whole (head and complete body) and answers
/// each with 200.
async fn recording_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let whole = request.into_body().collect().await.is_ok();
                        if whole {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        let status = if whole { 200 } else { 400 };
                        let mut response =
                            hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from_static(b"ok")));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, received)
}

/// A real nginx (from `WINDLASS_TEST_NGINX`) proxying to `upstream`, on a port found free (nginx
/// binds it itself: it does not take a listener from its parent without its own master).
async fn start_nginx(
    nginx: &str,
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
) -> (windlass_testkit::process::Process, std::net::SocketAddr) {
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let d = dir.display();
    let config = format!(
        "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           server {{\n    listen {address};\n    location / {{\n      proxy_pass http://{upstream};\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    let mut command = std::process::Command::new(nginx);
    command.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log")).arg("-c").arg(&path);
    let process = windlass_testkit::process::Process::start(command);
    eventually("nginx listens", || async { tokio::net::TcpStream::connect(address).await.is_ok() }).await;
    (process, address)
}

/// Whether a proxy refused a request: a 4xx/5xx of its own or a connection closed without an
/// answer, and the upstream did not receive it.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Verdict {
    status: u16,
    reached_upstream: bool,
}

impl Verdict {
    fn refused(self) -> bool {
        !self.reached_upstream && (self.status == 0 || self.status >= 400)
    }
}

/// Sends one raw request and reads the answer (until the proxy closes, or a moment after a
/// head arrived, or 3 s), then reads the upstream's count.
async fn verdict(proxy: std::net::SocketAddr, request: &[u8], received: &std::sync::atomic::AtomicUsize) -> Verdict {
    let before = received.load(std::sync::atomic::Ordering::SeqCst);
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    // The proxy may close before reading it all: a failed write is an answer too.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&answer);
    let status =
        if text.starts_with("HTTP/1.") { text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0) } else { 0 };
    Verdict { status, reached_upstream: received.load(std::sync::atomic::Ordering::SeqCst) > before }
}

/// RFC 9112's request rules side by side with nginx: every request of the corpus nginx refuses,
/// the edge refuses too, and no request the edge refuses reaches its upstream. Skipped (with a
/// note) only when `WINDLASS_TEST_NGINX` is unset; `.ci/run` sets it.
#[tokio::test]
async fn the_edge_refuses_whatever_nginx_refuses() {
    let Ok(nginx) = std::env::var("WINDLASS_TEST_NGINX") else {
        eprintln!("skipped: WINDLASS_TEST_NGINX is unset (the path of nginx, e.g. /usr/sbin/nginx)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (edge_upstream, edge_received) = recording_upstream().await;
    let (nginx_upstream, nginx_received) = recording_upstream().await;
    let (_nginx, nginx_address) = start_nginx(&nginx, dir.path(), nginx_upstream).await;
    let edge = start_edge(
        spec(vec![(
            "api",
            service(
                "api.localhost",
                vec![("blue", windlass_edge::spec::PoolSpec { instances: vec![edge_upstream], weight: 100 })],
            ),
        )]),
        settings(),
        None,
    );
    let mut problems = Vec::new();
    let mut table = String::new();
    for (name, request) in corpus() {
        let by_nginx = verdict(nginx_address, &request, &nginx_received).await;
        let by_edge = verdict(edge.address, &request, &edge_received).await;
        table += &format!(
            "{name:40} nginx {:3} {:8} edge {:3} {:8}\n",
            by_nginx.status,
            if by_nginx.refused() { "refused" } else { "passed" },
            by_edge.status,
            if by_edge.refused() { "refused" } else { "passed" }
        );
        if by_nginx.refused() && !by_edge.refused() {
            problems.push(format!("{name}: nginx refused it ({by_nginx:?}), the edge did not ({by_edge:?})"));
        }
        if (by_edge.status == 0 || by_edge.status >= 400) && by_edge.reached_upstream {
            problems.push(format!("{name}: the edge refused it but the upstream received it ({by_edge:?})"));
        }
    }
    eprintln!("{table}");
    assert!(problems.is_empty(), "{}\n\n{table}", problems.join("\n"));
    edge.stop();
}
