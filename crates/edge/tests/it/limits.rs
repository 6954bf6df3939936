//! Connection limits against real sockets: timeouts from the first byte, the keep-alive idle
//! timeout, the global and per-address caps, HTTP/2 limits and a rapid-reset flood, and a worker
//! that panics (a `windlass edge` process with a failpoint).

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use windlass_edge::limits::{Http2Limits, Limits};
use windlass_edge::{EdgeHandle, Settings};
use windlass_testkit::process::Process;

use crate::harness::*;

const HOST: &str = "api.localhost";
/// Longer than any close this file waits for: only turns a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(10);

fn with_limits(limits: Limits) -> Settings {
    Settings { limits, ..settings() }
}

fn edge_with(limits: Limits) -> (Demo, EdgeHandle) {
    let demo = Demo::start("v1");
    let edge =
        start_edge(spec(vec![("api", service(HOST, vec![("blue", pool(&[&demo], 100))]))]), with_limits(limits), None);
    (demo, edge)
}

/// Reads until the edge closes the connection (EOF or reset); how long that took from `since`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return since.elapsed(),
            Ok(Ok(_)) => {}
            Err(_) => panic!("the edge kept the connection open for {PATIENCE:?}"),
        }
    }
}

/// Whether the edge closed the connection within `within` (EOF or reset, nothing read).
async fn is_closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1];
    matches!(tokio::time::timeout(within, stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// One HTTP/1.1 keep-alive request on a raw connection; the status and body of its answer.
async fn request_on(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    stream.write_all(format!("GET /version HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the answer"));
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data).into_owned();
        let Some(end) = text.find("\r\n\r\n") else { continue };
        let length = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        if data.len() >= end + 4 + length {
            let status = text[9..12].parse().unwrap_or(0);
            return Ok((status, text[end + 4..end + 4 + length].to_owned()));
        }
    }
}

async fn metric(edge: &EdgeHandle, name: &str) -> u64 {
    let text = crate::harness::admin_read(edge, "/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

/// A silent TCP connection, a partial HTTP/2 preface and a half-sent request head are each cut
/// once the header read time has passed (and not long before it).
#[tokio::test]
async fn silent_sniffing_and_half_sent_heads_are_cut_after_the_header_read_timeout() {
    let timeout = Duration::from_millis(300);
    let (_demo, edge) = edge_with(Limits { header_read_timeout: timeout, ..Limits::default() });
    let openers: [&[u8]; 3] = [b"", b"PRI * HTTP/2.0\r\n", b"GET /version HTTP/1.1\r\nHost: api.localhost\r\n"];
    let clients = openers.map(|opener| {
        let address = edge.address;
        tokio::spawn(async move {
            let started = Instant::now();
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream.write_all(opener).await.unwrap();
            closed_after(&mut stream, started).await
        })
    });
    for (client, opener) in clients.into_iter().zip(openers) {
        let after = client.await.unwrap();
        let what = String::from_utf8_lossy(opener);
        assert!(after >= timeout / 2, "{what:?} was cut after {after:?}, before the header read timeout");
        assert!(after < Duration::from_secs(5), "{what:?} was cut only after {after:?}");
    }
    assert_eq!(metric(&edge, "windlass_edge_connections_closed_total{reason=\"header_read_timeout\"}").await, 3);
    edge.stop();
}

/// A kept-alive connection idle after its request is closed after the keep-alive timeout.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    let idle = Duration::from_millis(300);
    let (_demo, edge) = edge_with(Limits { keepalive_timeout: idle, ..Limits::default() });
    let mut stream = TcpStream::connect(edge.address).await.unwrap();
    let (status, body) = request_on(&mut stream).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let answered = Instant::now();
    let after = closed_after(&mut stream, answered).await;
    assert!(after >= idle / 2, "closed {after:?} after the answer, before the keep-alive timeout");
    assert!(after < Duration::from_secs(5), "closed only {after:?} after the answer");
    assert_eq!(metric(&edge, "windlass_edge_connections_closed_total{reason=\"keepalive_timeout\"}").await, 1);
    edge.stop();
}

/// The header read timeout restarts with each request on a kept-alive connection, from its
/// first byte: idle time between requests does not count against it.
#[tokio::test]
async fn the_header_read_timeout_restarts_with_each_request() {
    let timeout = Duration::from_millis(300);
    let limits =
        Limits { header_read_timeout: timeout, keepalive_timeout: Duration::from_secs(30), ..Limits::default() };
    let (_demo, edge) = edge_with(limits);
    let mut stream = TcpStream::connect(edge.address).await.unwrap();
    assert_eq!(request_on(&mut stream).await.unwrap().0, 200);
    // Idle for longer than the header read timeout: still open, and serves the next request.
    assert!(!is_closed_within(&mut stream, timeout * 3).await, "an idle connection was cut by the header timeout");
    assert_eq!(request_on(&mut stream).await.unwrap().0, 200);
    // Half a head: cut after the header read time from its first byte.
    let started = Instant::now();
    stream.write_all(b"GET /version HTTP/1.1\r\n").await.unwrap();
    let after = closed_after(&mut stream, started).await;
    assert!(after >= timeout / 2 && after < Duration::from_secs(5), "cut {after:?} after the first byte");
    edge.stop();
}

/// At the cap, a new client is still served: the connection idle the longest is closed for it.
/// With none idle, a new connection is refused at once and counted.
#[tokio::test]
async fn at_the_connection_cap_the_oldest_idle_connection_makes_room() {
    const CAP: usize = 20;
    let (_demo, edge) = edge_with(Limits { max_connections: Some(CAP), ..Limits::default() });
    let mut kept = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(edge.address).await.unwrap();
        assert_eq!(request_on(&mut stream).await.unwrap().0, 200);
        kept.push(stream);
    }
    let reply = get(&edge, HOST, "/version", &[]).await;
    assert_eq!(reply.status, 200, "a new client at the cap is served: {}", reply.body);
    assert!(is_closed_within(&mut kept[0], PATIENCE).await, "the oldest idle connection was closed");
    for (index, stream) in kept.iter_mut().enumerate().skip(1) {
        let answer = request_on(stream).await;
        assert_eq!(answer.map(|a| a.0).ok(), Some(200), "connection {index} was kept and still serves");
    }
    assert_eq!(metric(&edge, "windlass_edge_connections_closed_total{reason=\"evicted_at_cap\"}").await, 1);

    // Every place taken by a connection that is not idle (a request head under way): refused.
    drop(kept);
    eventually("the closed connections to be counted out", || async {
        metric(&edge, "windlass_edge_connections_open").await == 0
    })
    .await;
    let mut heads = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(edge.address).await.unwrap();
        stream.write_all(b"GET /version HTTP/1.1\r\n").await.unwrap();
        heads.push(stream);
    }
    eventually("the heads to be admitted", || async {
        metric(&edge, "windlass_edge_connections_open").await == CAP as u64
    })
    .await;
    let mut refused = TcpStream::connect(edge.address).await.unwrap();
    let outcome = request_on(&mut refused).await;
    assert!(outcome.is_err(), "a connection over the cap with none idle is refused: {outcome:?}");
    assert_eq!(metric(&edge, "windlass_edge_connections_rejected_total{reason=\"max_connections\"}").await, 1);
    drop(heads);
    edge.stop();
}

/// The per-address cap refuses one address's extra connection while others are served.
#[tokio::test]
async fn the_per_address_cap_refuses_only_that_address() {
    const CAP: usize = 3;
    let (_demo, edge) = edge_with(Limits { max_connections_per_ip: Some(CAP), ..Limits::default() });
    let mut kept = Vec::new();
    for _ in 0..CAP {
        let mut stream = TcpStream::connect(edge.address).await.unwrap();
        assert_eq!(request_on(&mut stream).await.unwrap().0, 200);
        kept.push(stream);
    }
    let mut extra = TcpStream::connect(edge.address).await.unwrap();
    assert!(request_on(&mut extra).await.is_err(), "the fourth connection from 127.0.0.1 is refused");

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(edge.address).await.unwrap();
    assert_eq!(request_on(&mut other).await.unwrap().0, 200, "127.0.0.2 has places of its own");
    for stream in &mut kept {
        assert_eq!(request_on(stream).await.unwrap().0, 200, "the admitted connections still serve");
    }
    assert_eq!(metric(&edge, "windlass_edge_connections_rejected_total{reason=\"max_connections_per_ip\"}").await, 1);
    drop(kept.pop());
    eventually("a closed connection to free its address's place", || async {
        // A refused attempt is closed at once; reconnect until one is admitted.
        let mut attempt = TcpStream::connect(edge.address).await.unwrap();
        request_on(&mut attempt).await.is_ok_and(|(status, _)| status == 200)
    })
    .await;
    edge.stop();
}

// ---- HTTP/2, written as raw frames (RFC 9113) so the test controls every byte ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut out = length.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HEADERS for `GET /version` at `HOST` (HPACK: static-table indices, a literal authority),
/// ending the stream.
fn get_headers(stream: u32) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, 8]; // :method GET, :scheme http, :path (literal) ...
    block.extend_from_slice(b"/version");
    block.extend_from_slice(&[0x01, u8::try_from(HOST.len()).unwrap()]); // :authority, literal
    block.extend_from_slice(HOST.as_bytes());
    frame(0x1, 0x4 | 0x1, stream, &block)
}

/// Reads frames until the connection closes or `until` says stop; every (type, payload) seen.
async fn read_frames(stream: &mut TcpStream, until: impl Fn(u8, &[u8]) -> bool) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut data = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + PATIENCE;
    loop {
        while data.len() >= 9 {
            let length = usize::from(data[0]) << 16 | usize::from(data[1]) << 8 | usize::from(data[2]);
            if data.len() < 9 + length {
                break;
            }
            let kind = data[3];
            let payload = data[9..9 + length].to_vec();
            data.drain(..9 + length);
            let stop = until(kind, &payload);
            frames.push((kind, payload));
            if stop {
                return frames;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            Ok(_) => return frames,
            Err(_) => panic!("no end to the frames within {PATIENCE:?}: {frames:?}"),
        }
    }
}

const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

/// The edge's SETTINGS announce the configured stream and frame limits.
#[tokio::test]
async fn http2_settings_announce_the_configured_limits() {
    let http2 = Http2Limits { max_concurrent_streams: 7, max_frame_size: 32 * 1024, ..Http2Limits::default() };
    let (_demo, edge) = edge_with(Limits { http2, ..Limits::default() });
    let mut stream = TcpStream::connect(edge.address).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let frames = read_frames(&mut stream, |kind, _| kind == SETTINGS).await;
    let (_, payload) = frames.iter().find(|(kind, _)| *kind == SETTINGS).expect("the edge's SETTINGS");
    let settings: Vec<(u16, u32)> = payload
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect();
    assert!(settings.contains(&(0x3, 7)), "SETTINGS_MAX_CONCURRENT_STREAMS = 7 in {settings:?}");
    assert!(settings.contains(&(0x5, 32 * 1024)), "SETTINGS_MAX_FRAME_SIZE = 32768 in {settings:?}");
    // A request still works on that connection.
    stream.write_all(&frame(SETTINGS, 0x1, 0, &[])).await.unwrap();
    stream.write_all(&get_headers(1)).await.unwrap();
    let frames = read_frames(&mut stream, |kind, _| kind == 0x0).await;
    assert!(frames.iter().any(|(kind, _)| *kind == 0x1), "a HEADERS answer: {frames:?}");
    drop(stream);
    edge.stop();
}

/// HEADERS then RST_STREAM, thousands of times on one connection: the edge answers GOAWAY and
/// closes that connection, and keeps serving everyone else.
#[tokio::test]
async fn a_rapid_reset_flood_gets_goaway_and_others_are_still_served() {
    let (_demo, edge) = edge_with(Limits::default());
    let mut flood = TcpStream::connect(edge.address).await.unwrap();
    flood.write_all(PREFACE).await.unwrap();
    flood.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut written = 0;
    'flood: for batch in 0..50u32 {
        let mut bytes = Vec::new();
        for i in 0..100u32 {
            let id = 2 * (batch * 100 + i) + 1;
            bytes.extend_from_slice(&get_headers(id));
            bytes.extend_from_slice(&frame(0x3, 0, id, &8u32.to_be_bytes())); // RST_STREAM CANCEL
        }
        // The edge closing the connection mid-flood ends it.
        if flood.write_all(&bytes).await.is_err() {
            break 'flood;
        }
        written += 100;
    }
    let frames = read_frames(&mut flood, |kind, _| kind == GOAWAY).await;
    let goaway = frames.iter().find(|(kind, _)| *kind == GOAWAY);
    let (_, payload) = goaway.unwrap_or_else(|| panic!("no GOAWAY after {written} reset streams"));
    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    assert_eq!(code, 0xb, "GOAWAY with ENHANCE_YOUR_CALM");
    assert!(is_closed_within(&mut flood, PATIENCE).await, "the flooding connection was closed");
    for _ in 0..10 {
        let reply = get(&edge, HOST, "/version", &[]).await;
        assert_eq!(version_of(&reply), "v1");
    }
    edge.stop();
}

// ---- A worker that panics (in a `windlass edge` process, where failpoints are armed) ----

fn config(demo: &Demo) -> String {
    format!(
        "[project]\nname = \"shop\"\n[environments.production]\n[services.api]\nupstreams = [\"{}\"]\n\
         route = {{ host = \"{HOST}\" }}\n[edge]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n",
        demo.address
    )
}

/// The first accepted connection makes its worker panic; the worker is restarted on the same
/// socket, so every later connection (on either worker's socket) is served.
#[tokio::test]
async fn a_worker_that_panics_is_restarted_and_every_new_connection_is_served() {
    let demo = Demo::start("v1");
    let dir = windlass_testkit::tempdir();
    std::fs::write(dir.path().join("windlass.toml"), config(&demo)).unwrap();
    let mut command = Command::new(windlass_testkit::workspace_bin("windlass"));
    command
        .current_dir(dir.path())
        .args(["edge", "--env", "production", "--workers", "2"])
        .env_clear()
        .env("WINDLASS_EDGE_TOKEN", TOKEN)
        .env("WINDLASS_FAILPOINTS", "edge.worker.first_accept=panic");
    let edge = Process::start(command);
    let address: SocketAddr = edge.wait_for_address("edge listening on");
    let admin: SocketAddr = edge.wait_for_address("admin listening on");

    let mut first = TcpStream::connect(address).await.unwrap();
    assert!(request_on(&mut first).await.is_err(), "the connection that hit the failpoint was lost");
    for attempt in 0..50 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        // A connection queued on a dead worker's socket would wait forever: PATIENCE bounds it.
        let answer = tokio::time::timeout(PATIENCE, request_on(&mut stream)).await;
        let status = answer.as_ref().ok().and_then(|a| a.as_ref().ok()).map(|a| a.0);
        assert_eq!(status, Some(200), "connection {attempt} after the panic: {answer:?}");
    }
    let metrics = admin_get(admin, "/metrics").await;
    assert!(metrics.contains("windlass_edge_worker_restarts_total 1"), "{metrics}");
    let events = admin_get(admin, "/edge/events").await;
    assert!(events.contains("worker.restarted"), "{events}");
}

/// A stopping edge lets requests in flight finish, but a connection with no request (here half a
/// head) holds it for at most the close grace (5 s at most), not for the whole drain timeout.
#[tokio::test]
async fn a_stopping_edge_is_not_held_by_a_silent_connection() {
    let (_demo, edge) = edge_with(Limits::default());
    assert_eq!(edge.shared().settings.drain_timeout, Duration::from_secs(30));
    // Half a request head: past the protocol detection (which a stop cancels at once), so only
    // the draining sweep bounds it.
    let mut silent = TcpStream::connect(edge.address).await.unwrap();
    silent.write_all(b"GET /version HTTP/1.1\r\n").await.unwrap();
    eventually("the silent connection to be admitted", || async {
        metric(&edge, "windlass_edge_connections_open").await == 1
    })
    .await;
    let started = Instant::now();
    tokio::task::spawn_blocking(move || edge.stop()).await.unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "the stop waited {took:?} for a silent connection");
    assert!(is_closed_within(&mut silent, PATIENCE).await);
}

/// A read of a child edge's admin API with the admin token (reads need a token).
async fn admin_get(admin: std::net::SocketAddr, path: &str) -> String {
    let authorization = format!("Bearer {TOKEN}");
    let reply = windlass_testkit::http::request("GET", admin, path, &[("authorization", authorization.as_str())], "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    reply.body
}

/// The admin listener has limits of its own: with its few places taken by silent connections, a
/// control-plane call waits until the idle timeout closes one, and is then answered; a
/// half-sent request is cut the same way.
#[tokio::test]
async fn the_admin_listener_caps_its_connections_and_closes_idle_ones() {
    use windlass_edge::limits::AdminLimits;
    let idle = Duration::from_millis(400);
    let admin = AdminLimits { max_connections: 3, idle_timeout: idle, max_lifetime: Duration::from_secs(60) };
    let (_demo, edge) = edge_with(Limits { admin, ..Limits::default() });
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(edge.admin_address).await.unwrap());
    }
    let mut half = TcpStream::connect(edge.admin_address).await.unwrap();
    half.write_all(b"GET /edge/state HTTP/1.1\r\nHost: edge\r\n").await.unwrap();
    // Every place is taken: the call is answered only once one of them has been closed.
    let answered = crate::harness::admin_read(&edge, "/edge/state").await;
    assert!(answered.contains("services"), "{answered}");
    let waited = opened.elapsed();
    assert!(waited >= idle / 2, "answered after {waited:?}, before any idle connection was closed");
    for stream in &mut silent {
        let after = closed_after(stream, opened).await;
        assert!(after >= idle / 2, "a silent admin connection closed after {after:?}");
    }
    let after = closed_after(&mut half, opened).await;
    assert!(after >= idle / 2, "a half-sent admin request was cut after {after:?}");
    edge.stop();
}
