//! The demo's HTTP surface: the application routes on the main port and the fault switches on the
//! admin port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::watch;

use crate::faults::{FaultState, Faults, FaultsPatch, ShareCounter};
use crate::listen::Listener;

/// Everything the handlers share.
pub struct Demo {
    pub version: String,
    pub build_id: String,
    pub instance: String,
    pub color: String,
    pub started: Instant,
    pub slow_start: Duration,
    pub faults: FaultState,
    /// The main port's socket, shut and reopened by the admin port itself (so that the admin
    /// answer comes after the change took effect).
    main_listener: Arc<Listener>,
    /// Tells the accept loop when the main socket is refusing or accepting again.
    pub refuse: watch::Sender<bool>,
    errors: ShareCounter,
    payment_failures: ShareCounter,
    metrics: Metrics,
}

impl Demo {
    pub fn new(
        version: String,
        build_id: String,
        faults: Faults,
        slow_start: Duration,
        main_listener: Arc<Listener>,
    ) -> std::io::Result<Arc<Self>> {
        let get = |name: &str| std::env::var(name).unwrap_or_default();
        if faults.refuse_connections {
            main_listener.refuse()?;
        }
        let (refuse, _) = watch::channel(faults.refuse_connections);
        Ok(Arc::new(Demo {
            version,
            build_id,
            instance: get("WINDLASS_INSTANCE"),
            color: get("WINDLASS_COLOR"),
            started: Instant::now(),
            slow_start,
            faults: FaultState { current: Mutex::new(faults) },
            main_listener,
            refuse,
            errors: ShareCounter::default(),
            payment_failures: ShareCounter::default(),
            metrics: Metrics::default(),
        }))
    }

    fn starting(&self) -> bool {
        self.started.elapsed() < self.slow_start
    }
}

#[derive(Default)]
struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    /// Requests being answered now, `/metrics` itself excluded (tests wait on it to know a
    /// request is inside the service).
    in_flight: AtomicU64,
    emails_sent: AtomicU64,
    payments_ok: AtomicU64,
    payments_failed: AtomicU64,
}

pub fn main_router(demo: Arc<Demo>) -> Router {
    let application = Router::new()
        .route("/", get(index))
        .route("/version", get(version))
        // Large enough for streaming tests through a proxy (axum's default is 2 MB).
        .route("/echo", any(echo).layer(DefaultBodyLimit::max(16 * 1024 * 1024)))
        .route("/sleep", get(sleep))
        .route("/ws", get(websocket))
        .route("/emails", post(send_email))
        .route("/payments", post(pay))
        .route_layer(middleware::from_fn_with_state(demo.clone(), inject_faults));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(health))
        .route("/metrics", get(metrics))
        .merge(application)
        .layer(middleware::from_fn_with_state(demo.clone(), count_requests))
        .with_state(demo)
}

pub fn admin_router(demo: Arc<Demo>) -> Router {
    Router::new().route("/faults", get(get_faults).put(put_faults).delete(reset_faults)).with_state(demo)
}

/// Added latency and injected 500s, for application routes only (health has its own switch).
async fn inject_faults(State(demo): State<Arc<Demo>>, request: Request, next: Next) -> Response {
    let faults = demo.faults.get();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if demo.errors.next_fails(faults.error_rate) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "injected fault", "version": demo.version })),
        )
            .into_response();
    }
    next.run(request).await
}

async fn count_requests(State(demo): State<Arc<Demo>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let counted = path != "/metrics";
    if counted {
        demo.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
    }
    let response = next.run(request).await;
    if counted {
        demo.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
    let route = match path.as_str() {
        "/" | "/version" | "/echo" | "/sleep" | "/ws" | "/emails" | "/payments" | "/health" | "/ready" | "/metrics" => {
            path
        }
        _ => "other".to_owned(),
    };
    if let Ok(mut requests) = demo.metrics.requests.lock() {
        *requests.entry((route, response.status().as_u16())).or_default() += 1;
    }
    response
}

async fn index(State(demo): State<Arc<Demo>>) -> String {
    format!("windlass demo {} ({})\n", demo.version, demo.build_id)
}

async fn health(State(demo): State<Arc<Demo>>) -> Response {
    let (status, state) = if demo.starting() {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if demo.faults.get().health_failing {
        (StatusCode::SERVICE_UNAVAILABLE, "failing")
    } else {
        (StatusCode::OK, "ok")
    };
    (status, Json(json!({ "status": state, "version": demo.version }))).into_response()
}

async fn version(State(demo): State<Arc<Demo>>) -> Json<serde_json::Value> {
    Json(json!({
        "version": demo.version,
        "build_id": demo.build_id,
        "instance": demo.instance,
        "color": demo.color,
        "pid": std::process::id(),
    }))
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Json<serde_json::Value> {
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

#[derive(serde::Deserialize)]
struct SleepQuery {
    ms: u64,
}

/// A long request, for draining tests: answers after `ms` milliseconds (at most a minute).
async fn sleep(Query(query): Query<SleepQuery>) -> Response {
    if query.ms > 60_000 {
        return (StatusCode::BAD_REQUEST, "ms must be at most 60000\n").into_response();
    }
    tokio::time::sleep(Duration::from_millis(query.ms)).await;
    format!("slept {} ms\n", query.ms).into_response()
}

async fn websocket(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo_socket)
}

async fn echo_socket(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Ping(payload) => Message::Pong(payload),
            Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

async fn send_email(State(demo): State<Arc<Demo>>) -> (StatusCode, Json<serde_json::Value>) {
    demo.metrics.emails_sent.fetch_add(1, Ordering::Relaxed);
    (StatusCode::ACCEPTED, Json(json!({ "queued": true })))
}

async fn pay(State(demo): State<Arc<Demo>>) -> (StatusCode, Json<serde_json::Value>) {
    if demo.payment_failures.next_fails(demo.faults.get().payment_failure_rate) {
        demo.metrics.payments_failed.fetch_add(1, Ordering::Relaxed);
        (StatusCode::PAYMENT_REQUIRED, Json(json!({ "paid": false })))
    } else {
        demo.metrics.payments_ok.fetch_add(1, Ordering::Relaxed);
        (StatusCode::OK, Json(json!({ "paid": true })))
    }
}

/// Prometheus text format (version 0.0.4).
async fn metrics(State(demo): State<Arc<Demo>>) -> impl IntoResponse {
    let m = &demo.metrics;
    let mut out = String::new();
    out.push_str("# HELP demo_http_requests_total HTTP requests answered, by route and status code.\n");
    out.push_str("# TYPE demo_http_requests_total counter\n");
    if let Ok(requests) = m.requests.lock() {
        for ((route, code), count) in requests.iter() {
            let _ = writeln!(out, "demo_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {count}");
        }
    }
    out.push_str("# HELP demo_http_requests_in_flight Requests being answered now.\n");
    out.push_str("# TYPE demo_http_requests_in_flight gauge\n");
    let _ = writeln!(out, "demo_http_requests_in_flight {}", m.in_flight.load(Ordering::SeqCst));
    out.push_str("# HELP demo_emails_sent_total Emails accepted for sending.\n# TYPE demo_emails_sent_total counter\n");
    let _ = writeln!(out, "demo_emails_sent_total {}", m.emails_sent.load(Ordering::Relaxed));
    out.push_str("# HELP demo_payments_total Payments attempted, by result.\n# TYPE demo_payments_total counter\n");
    let _ = writeln!(out, "demo_payments_total{{result=\"success\"}} {}", m.payments_ok.load(Ordering::Relaxed));
    let _ = writeln!(out, "demo_payments_total{{result=\"failure\"}} {}", m.payments_failed.load(Ordering::Relaxed));
    out.push_str("# HELP demo_build_info The running version.\n# TYPE demo_build_info gauge\n");
    let _ = writeln!(out, "demo_build_info{{version=\"{}\",build_id=\"{}\"}} 1", demo.version, demo.build_id);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out)
}

async fn get_faults(State(demo): State<Arc<Demo>>) -> Json<Faults> {
    Json(demo.faults.get())
}

/// Changes some faults; the body is JSON with any of the fields of [`Faults`].
async fn put_faults(State(demo): State<Arc<Demo>>, body: Bytes) -> Response {
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(patch) => patch,
        Err(err) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": format!("invalid faults: {err}") })))
                .into_response();
        }
    };
    set_faults(&demo, |current| current.apply(patch))
}

async fn reset_faults(State(demo): State<Arc<Demo>>) -> Response {
    set_faults(&demo, |_| Ok(Faults::default()))
}

fn set_faults(demo: &Demo, change: impl FnOnce(&Faults) -> Result<Faults, String>) -> Response {
    let Ok(mut current) = demo.faults.current.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    match change(&current) {
        Ok(next) => {
            if next.refuse_connections != current.refuse_connections {
                let switched =
                    if next.refuse_connections { demo.main_listener.refuse() } else { demo.main_listener.resume() };
                if let Err(err) = switched {
                    let error = format!("cannot switch the main port: {err}");
                    return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({ "error": error }))).into_response();
                }
                demo.refuse.send_replace(next.refuse_connections);
            }
            *current = next.clone();
            Json(next).into_response()
        }
        Err(problem) => (StatusCode::BAD_REQUEST, Json(json!({ "error": problem }))).into_response(),
    }
}
