//! Instances that die under load: requests that were not yet sent go to another instance of the
//! pool, or to the failover secondary, at once (not when the health checks decide); only the
//! requests in flight on the dead instance may fail. And an HTTP/2 client's streams share a
//! bounded number of upstream connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use windlass_edge::spec::{FailoverSpec, HealthSpec};

use crate::harness::*;

/// `/version` requests a demo has answered (from its own counters).
async fn served(demo: &Demo) -> u64 {
    let metrics = windlass_testkit::http::get(demo.address, "/metrics").await.unwrap().body;
    metrics
        .lines()
        .filter(|l| l.starts_with("demo_http_requests_total{route=\"/version\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const CLIENTS: usize = 5;

/// Runs `CLIENTS` keep-alive clients against the edge, kills `victim` once it has answered
/// 100 requests, and stops the load once `survivor` has answered 200 after that (each client
/// sends at most 2,000: bounded however fast the edge is).
async fn kill_under_load(edge: &windlass_edge::EdgeHandle, victim: &Demo, survivor: &Demo) -> LoadReport {
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(edge.address, "api.localhost", CLIENTS, 2_000, stop.clone());
    eventually("the victim has served 100 requests", || async { served(victim).await >= 100 }).await;
    let before = served(survivor).await;
    victim.kill();
    eventually("the survivor has served 200 more requests", || async { served(survivor).await >= before + 200 }).await;
    stop.store(true, Ordering::Relaxed);
    let report = load.await.unwrap();
    eprintln!("{} answered, {} failed: {:?}", report.ok, report.failures.len(), report.failures);
    report
}

/// The primary pool's one instance is killed with `kill -9` under load. The health checks are
/// slow (one a minute) and so never flip `failed_over` during the test: every request after the
/// kill is answered by the secondary anyway, and at most the requests in flight at the kill (one
/// per client) fail.
#[tokio::test]
async fn a_killed_primary_fails_over_to_the_secondary_before_the_health_checks_decide() {
    let (primary, secondary) = (Demo::start("primary"), Demo::start("secondary"));
    let mut api =
        service("api.localhost", vec![("blue", pool(&[&primary], 100)), ("secondary", pool(&[&secondary], 0))]);
    api.health = Some(HealthSpec {
        path: "/health".into(),
        interval_ms: 60_000,
        timeout_ms: 1_000,
        healthy_after: 1,
        unhealthy_after: 3,
    });
    api.failover = Some(FailoverSpec { after_failures: 3, failback_after: 2, automatic: true });
    let edge = start_edge(spec(vec![("api", api)]), settings(), None);

    let report = kill_under_load(&edge, &primary, &secondary).await;
    assert!(report.failures.len() <= CLIENTS, "only requests in flight at the kill fail: {:?}", report.failures);
    assert!(report.versions.get("primary").copied().unwrap_or(0) >= 100, "{:?}", report.versions);
    assert!(report.versions.get("secondary").copied().unwrap_or(0) >= 200, "{:?}", report.versions);
    assert_eq!(state(&edge).await["services"]["api"]["failed_over"], false, "the health checks did not decide yet");
    for _ in 0..20 {
        let reply = get(&edge, "api.localhost", "/version", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(version_of(&reply), "secondary");
    }
    edge.stop();
}

/// Two instances in a pool, one killed under load: every later request is served by the other,
/// and at most the requests in flight on the dead one fail.
#[tokio::test]
async fn a_killed_instance_leaves_its_pool_at_once() {
    let (a, b) = (Demo::start("a"), Demo::start("b"));
    let edge = start_edge(
        spec(vec![("api", service("api.localhost", vec![("blue", pool(&[&a, &b], 100))]))]),
        settings(),
        None,
    );

    let report = kill_under_load(&edge, &a, &b).await;
    assert!(report.failures.len() <= CLIENTS, "only requests in flight at the kill fail: {:?}", report.failures);
    assert!(report.versions.get("a").copied().unwrap_or(0) >= 100, "{:?}", report.versions);
    for _ in 0..20 {
        let reply = get(&edge, "api.localhost", "/version", &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(version_of(&reply), "b");
    }
    edge.stop();
}

/// An upstream that counts the connections it accepts and answers each request after 10 ms.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (address, accepted, server)
}

/// One h2c connection with 200 concurrent streams opens at most `max_upstream_per_connection`
/// upstream connections; the other streams wait their turn, and all 200 are answered.
#[tokio::test]
async fn one_http2_connection_with_200_streams_opens_a_bounded_number_of_upstream_connections() {
    let (upstream, accepted, server) = counting_upstream().await;
    let settings = windlass_edge::Settings {
        max_upstream_per_connection: 4,
        upstream_timeout: Duration::from_secs(30),
        ..settings()
    };
    let edge = start_edge(
        spec(vec![(
            "api",
            service(
                "api.localhost",
                vec![("blue", windlass_edge::spec::PoolSpec { instances: vec![upstream], weight: 100 })],
            ),
        )]),
        settings,
        None,
    );
    let stream = tokio::net::TcpStream::connect(edge.address).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    let requests: Vec<_> = (0..200)
        .map(|_| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let request = hyper::Request::get("http://api.localhost/").body(Empty::<Bytes>::new()).unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body)
            })
        })
        .collect();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!((status.as_u16(), &body[..]), (200, &b"ok"[..]));
    }
    // The client's connection closes first (`stop` blocks this thread), so the edge stops
    // without waiting for it.
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    let opened = accepted.load(Ordering::Relaxed);
    assert!((1..=4).contains(&opened), "{opened} upstream connections for one downstream connection");
    server.abort();
    edge.stop();
}

/// A request pinned to a pool (a smoke check of a new color) is never answered by the
/// secondary: when the pinned pool's instance is gone, the check sees the failure.
#[tokio::test]
async fn a_pinned_request_does_not_fail_over() {
    let (blue, secondary) = (Demo::start("blue"), Demo::start("secondary"));
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone_address = gone.local_addr().unwrap();
    drop(gone);
    let edge = start_edge(
        spec(vec![(
            "api",
            service(
                "api.localhost",
                vec![
                    ("blue", pool(&[&blue], 100)),
                    ("green", windlass_edge::spec::PoolSpec { instances: vec![gone_address], weight: 0 }),
                    ("secondary", pool(&[&secondary], 0)),
                ],
            ),
        )]),
        settings(),
        None,
    );
    // Pinned with the pin secret (derived from the admin token; the admin token itself does not pin).
    let pin = windlass_edge::shared::pin_token(TOKEN).unwrap();
    let pinned = [("x-windlass-pool", "green"), ("x-windlass-token", pin.as_str())];
    let reply = get(&edge, "api.localhost", "/version", &pinned).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    let reply = get(&edge, "api.localhost", "/version", &pinned).await;
    assert!(reply.status == 502 || reply.status == 503, "{} {}", reply.status, reply.body);
    assert_eq!(served(&secondary).await, 0, "the secondary answered no pinned request");
    assert_eq!(version_of(&get(&edge, "api.localhost", "/version", &[]).await), "blue");
    edge.stop();
}

/// An upstream on raw TCP (keep-alive): `/slow` answers its head at once and its 4-byte body
/// only after 3 s; anything else answers `ok` at once.
async fn slow_body_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Ok(read) = stream.read(&mut buffer).await else { return };
                    if read == 0 {
                        return;
                    }
                    head.extend_from_slice(&buffer[..read]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let slow = head.starts_with(b"GET /slow ");
                    head.drain(..end + 4);
                    if slow {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n").await;
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        let _ = stream.write_all(b"done").await;
                    } else {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                    }
                }
            });
        }
    });
    (address, server)
}

/// An HTTP/2 client's streams queued behind its own busy upstream connection (the bound) get
/// 503 when the upstream timeout passes, and the instance is not blamed for it: it is not
/// ejected, even with ejection after a single error.
#[tokio::test]
async fn a_stream_queued_behind_its_own_connection_is_not_the_instances_fault() {
    let (upstream, server) = slow_body_upstream().await;
    let settings = windlass_edge::Settings {
        max_upstream_per_connection: 1,
        upstream_timeout: Duration::from_millis(500),
        eject_after_errors: 1,
        ..settings()
    };
    let edge = start_edge(
        spec(vec![(
            "api",
            service(
                "api.localhost",
                vec![("blue", windlass_edge::spec::PoolSpec { instances: vec![upstream], weight: 100 })],
            ),
        )]),
        settings,
        None,
    );
    let stream = tokio::net::TcpStream::connect(edge.address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    let connection = tokio::spawn(connection);
    // Stream 1 holds the one upstream connection while its body trickles in.
    let slow = sender
        .send_request(hyper::Request::get("http://api.localhost/slow").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    // Stream 2 waits for that connection until the upstream timeout passes.
    let queued = sender
        .send_request(hyper::Request::get("http://api.localhost/fast").body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = queued.status();
    let body = queued.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("too many concurrent requests"), "{body:?}");
    // The instance was not ejected: another client is served at once.
    let reply = get(&edge, "api.localhost", "/fast", &[]).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    // And stream 1 still gets its whole body.
    let body = slow.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"done");
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
    server.abort();
    edge.stop();
}
