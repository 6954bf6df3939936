//! The edge's request path, through a real socket: the bytes a client can send to `windlass edge`.
//!
//! Once per process, a Windlass edge starts in-process (`windlass_edge::start`, one worker, one
//! service routed for every host at `/` to one pool) in front of a recording upstream: a thread
//! on a std `TcpListener` that reads each request the edge forwards (head and body, framed as the
//! head says) and answers `200 ok`. Each input is written to a fresh loopback connection to the
//! edge, which is then half-closed (once the edge has acted on the input: see [`exchange`]), and
//! the answer is read with a short timeout.
//!
//! A finding is a panic, and libfuzzer-sys turns a panic in any thread (the edge's own, the
//! upstream's) into an abort, so each of these is one:
//! - the edge's threads panic, or it stops accepting or answering (a valid request is sent
//!   every [`HEALTH_EVERY`] inputs and must get a 200);
//! - an answer that does not start with a valid `HTTP/1.x NNN ` status line (or, after a whole
//!   HTTP/2 preface, with a SETTINGS frame);
//! - a request head reaching the upstream that httparse rejects, that carries both
//!   Content-Length and Transfer-Encoding, no Host or more than one, or the edge's own
//!   `x-windlass-token` / `x-windlass-pool` headers (they must never leave the edge).
//!
//! The upstream checks each head as it arrives, while the fuzzer's thread is still waiting for
//! the answer to the input that caused it, so the input libFuzzer saves is the one at fault.
#![no_main]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use windlass_edge::spec::{EdgeSpec, PoolSpec, RouteSpec, ServiceSpec};
use windlass_edge::{EdgeHandle, EdgeOptions, Settings};

/// A valid request every this many inputs proves the edge still serves.
const HEALTH_EVERY: u64 = 256;
/// How long an answer may take before the input is left (not a finding: a slow answer is not a
/// wrong one, and the health check catches an edge that stopped answering).
const ANSWER_TIMEOUT: Duration = Duration::from_millis(500);
/// The health check's request must be answered within this (a busy machine is slow).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an h2c input may take to bring a request to the upstream before it is half-closed.
const H2_WAIT: Duration = Duration::from_millis(50);
/// The largest request head the upstream accepts; the edge's own limit is 64 KiB.
const MAX_HEAD: usize = 128 * 1024;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct World {
    edge: SocketAddr,
    /// Kept so the edge lives as long as the process.
    _handle: EdgeHandle,
}

static WORLD: OnceLock<World> = OnceLock::new();
static INPUTS: AtomicU64 = AtomicU64::new(0);
/// Request heads the upstream has received, all connections together.
static UPSTREAM_HEADS: AtomicU64 = AtomicU64::new(0);

fn world() -> &'static World {
    WORLD.get_or_init(|| {
        let upstream = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
        let upstream_address = upstream.local_addr().expect("the upstream's address");
        std::thread::spawn(move || {
            for connection in upstream.incoming() {
                let Ok(connection) = connection else { continue };
                std::thread::spawn(move || serve_upstream(connection));
            }
        });
        let service = ServiceSpec {
            routes: vec![RouteSpec { host: None, path: "/".into() }],
            pools: [("main".to_owned(), PoolSpec { instances: vec![upstream_address], weight: 100 })].into(),
            ..ServiceSpec::default()
        };
        let spec = EdgeSpec { services: [("app".to_owned(), service)].into(), maintenance_all: false };
        let settings = Settings {
            // An incomplete body from a half-closed client ends its request quickly either way;
            // this bounds anything else waiting on the upstream.
            upstream_timeout: Duration::from_secs(2),
            ..Settings::new("fuzz-admin-token-0123456789")
        };
        let handle = windlass_edge::start(EdgeOptions {
            listen: "127.0.0.1:0".parse().expect("an address"),
            admin_listen: "127.0.0.1:0".parse().expect("an address"),
            workers: 1,
            settings,
            initial: spec,
            state_path: None,
            tls: None,
            admin_tls: None,
        })
        .expect("the edge starts");
        World { edge: handle.address, _handle: handle }
    })
}

/// One upstream connection: each request's head is checked, its body read as the head frames it,
/// and `200 ok` answered, until the edge closes the connection or sends what cannot be framed.
fn serve_upstream(connection: TcpStream) {
    let Ok(write_half) = connection.try_clone() else { return };
    let mut writer = write_half;
    let mut reader = BufReader::new(connection);
    loop {
        let Some(head) = read_head(&mut reader) else { return };
        let framing = check_head(&head);
        UPSTREAM_HEADS.fetch_add(1, Ordering::SeqCst);
        let body_read = match framing.body {
            Body::None => true,
            Body::Length(n) => {
                std::io::copy(&mut (&mut reader).take(n), &mut std::io::sink()).is_ok_and(|got| got == n)
            }
            Body::Chunked => read_chunked(&mut reader),
        };
        if !body_read {
            return;
        }
        let answer: &[u8] = if framing.head_method {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

/// The bytes up to and including the blank line ending a head; `None` at EOF or an error.
fn read_head(reader: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader.read_until(b'\n', &mut head).ok()?;
        if n == 0 {
            return None;
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            return Some(head);
        }
        assert!(head.len() <= MAX_HEAD, "the edge sent a request head of more than {MAX_HEAD} bytes");
    }
}

enum Body {
    None,
    Length(u64),
    Chunked,
}

struct Framing {
    body: Body,
    head_method: bool,
}

/// The invariants of a request head the edge forwards; panics (a finding) on a violation.
fn check_head(head: &[u8]) -> Framing {
    let shown = String::from_utf8_lossy(head);
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => panic!("the edge forwarded an incomplete request head:\n{shown}"),
        Err(err) => panic!("the edge forwarded a request head httparse rejects ({err}):\n{shown}"),
    }
    let named = |name: &str| request.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
    let hosts = named("host");
    assert!(hosts == 1, "the edge forwarded a request with {hosts} Host headers:\n{shown}");
    let lengths = named("content-length");
    let transfer_encodings = named("transfer-encoding");
    assert!(
        lengths == 0 || transfer_encodings == 0,
        "the edge forwarded a request with both Content-Length and Transfer-Encoding:\n{shown}"
    );
    for secret in ["x-windlass-token", "x-windlass-pool"] {
        assert!(named(secret) == 0, "the edge forwarded its own `{secret}` header upstream:\n{shown}");
    }
    let head_method = request.method == Some("HEAD");
    let value = |name: &str| {
        request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| String::from_utf8_lossy(h.value))
    };
    let body = if let Some(te) = value("transfer-encoding") {
        // The edge's client frames every body it forwards; chunked must be the last coding.
        assert!(
            te.trim().to_ascii_lowercase().ends_with("chunked"),
            "the edge forwarded Transfer-Encoding `{te}` that does not end in chunked:\n{shown}"
        );
        Body::Chunked
    } else if let Some(length) = value("content-length") {
        match length.trim().parse::<u64>() {
            Ok(n) => Body::Length(n),
            Err(_) => panic!("the edge forwarded Content-Length `{length}`, not a number:\n{shown}"),
        }
    } else {
        Body::None
    };
    Framing { body, head_method }
}

/// Reads a chunked body to its end (trailers included); false if the connection ends first.
fn read_chunked(reader: &mut BufReader<TcpStream>) -> bool {
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_or(true, |n| n == 0) {
            return false;
        }
        let text = String::from_utf8_lossy(&line);
        let size = text.split(';').next().unwrap_or("").trim();
        let Ok(size) = u64::from_str_radix(size, 16) else {
            panic!("the edge forwarded a chunk size line it cannot have written: {text:?}")
        };
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                line.clear();
                if reader.read_until(b'\n', &mut line).map_or(true, |n| n == 0) {
                    return false;
                }
                if line == b"\r\n" || line == b"\n" {
                    return true;
                }
            }
        }
        let want = size + 2; // the data and its CRLF
        if !std::io::copy(&mut reader.take(want), &mut std::io::sink()).is_ok_and(|got| got == want) {
            return false;
        }
    }
}

/// What the input's first request looks like to httparse: whether the edge will have a whole
/// head, and whether its body is all there.
struct FirstRequest {
    head_method: bool,
    body_complete: bool,
}

fn first_request(data: &[u8]) -> Option<FirstRequest> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = request.parse(data) else { return None };
    let rest = &data[head_len..];
    let value = |name: &str| request.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let body_complete = if value("transfer-encoding").is_some() {
        rest.starts_with(b"0\r\n\r\n") || rest.windows(7).any(|w| w == b"\r\n0\r\n\r\n")
    } else if let Some(length) = value("content-length") {
        std::str::from_utf8(length).ok().and_then(|l| l.trim().parse::<usize>().ok()).is_none_or(|n| rest.len() >= n)
    } else {
        true
    };
    Some(FirstRequest { head_method: request.method == Some("HEAD"), body_complete })
}

/// Whether `answer` holds one whole response (1xx interim ones skipped); false when its end can
/// only be told by the connection closing.
fn complete_response(mut answer: &[u8], head_method: bool) -> bool {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = response.parse(answer) else { return false };
        let code = response.code.unwrap_or(0);
        if (100..200).contains(&code) && code != 101 {
            answer = &answer[head_len..];
            continue;
        }
        if head_method || code == 101 || code == 204 || code == 304 {
            return true;
        }
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok());
        return length.is_some_and(|n| answer.len() >= head_len + n);
    }
}

/// Sends `data` on a fresh connection, half-closes it, and returns what the edge answered
/// within `timeout`.
///
/// The half-close cannot come at once: hyper's server reads an end of file while a request is in
/// flight as the client going away (its `half_close` is off) and drops the request before the
/// edge's handler runs, so nothing would reach the upstream. So when the input starts with a
/// whole head, the write side stays open until the answer is in, or (when its body is short, and
/// the edge would wait for the rest) until the upstream has the head, or (an h2c preface) until
/// the upstream has a request or a moment has passed, or at most `timeout`.
fn exchange(edge: SocketAddr, data: &[u8], timeout: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(edge).unwrap_or_else(|err| panic!("the edge stopped accepting: {err}"));
    let _ = stream.set_nodelay(true);
    // Closed with a reset, not a FIN: this side closes first, and a few hundred connections a
    // second left in TIME_WAIT would use up the ephemeral ports within a minute.
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    // The edge may answer and close before reading everything (a 400 or 431): a failed write
    // or a reset is an answer too.
    let _ = stream.write_all(data);
    let mut answer = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let started = Instant::now();
    let heads_before = UPSTREAM_HEADS.load(Ordering::SeqCst);
    let upstream_moved = move || UPSTREAM_HEADS.load(Ordering::SeqCst) != heads_before;
    let wait: Option<Box<dyn Fn(&[u8]) -> bool>> = if let Some(first) = first_request(data) {
        Some(Box::new(move |answer: &[u8]| {
            complete_response(answer, first.head_method) || (!first.body_complete && upstream_moved())
        }))
    } else if data.starts_with(PREFACE) {
        Some(Box::new(move |_: &[u8]| upstream_moved() || started.elapsed() > H2_WAIT))
    } else {
        None
    };
    if let Some(done) = wait {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(2)));
        while !done(&answer) && started.elapsed() < timeout {
            match stream.read(&mut buffer) {
                Ok(0) => return answer,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(err) if matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return answer,
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    answer
}

/// `HTTP/1.0 ` or `HTTP/1.1 `, three digits from 100 to 599, a space.
fn valid_status_line(answer: &[u8]) -> bool {
    answer.len() >= 13
        && (answer.starts_with(b"HTTP/1.1 ") || answer.starts_with(b"HTTP/1.0 "))
        && (b'1'..=b'5').contains(&answer[9])
        && answer[10].is_ascii_digit()
        && answer[11].is_ascii_digit()
        && answer[12] == b' '
}

fn health(edge: SocketAddr) {
    let answer = exchange(edge, b"GET /health HTTP/1.1\r\nhost: fuzz.example\r\n\r\n", HEALTH_TIMEOUT);
    assert!(
        answer.starts_with(b"HTTP/1.1 200 "),
        "the edge no longer answers a valid request with 200: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    if INPUTS.fetch_add(1, Ordering::Relaxed) % HEALTH_EVERY == 0 {
        health(world.edge);
    }
    let answer = exchange(world.edge, data, ANSWER_TIMEOUT);
    if answer.is_empty() {
        return;
    }
    if data.starts_with(PREFACE) {
        // HTTP/2 with prior knowledge: the server's first frame is its SETTINGS (type 4, stream 0).
        assert!(
            answer.len() >= 9 && answer[3] == 4 && answer[5..9] == [0, 0, 0, 0],
            "the edge's first HTTP/2 frame is not SETTINGS: {:02x?}",
            &answer[..answer.len().min(32)]
        );
    } else {
        assert!(
            valid_status_line(&answer),
            "the edge answered without a valid status line: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(200)])
        );
    }
});
