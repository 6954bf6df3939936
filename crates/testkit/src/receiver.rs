//! Receivers of outgoing HTTP (webhooks) for tests: real servers on loopback, plain or TLS, that
//! answer from a script and record every request, and the checks the services they stand for
//! make (Slack's payload shape, our webhook signature, PagerDuty's Events API v2 with its
//! incidents).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Checks a request as the real receiver would: (status, body) to answer.
pub type Check = Arc<dyn Fn(&hyper::HeaderMap, &[u8]) -> (u16, String) + Send + Sync>;

/// A check that also sees the request's path (a service with several endpoints).
pub type RouteCheck = Arc<dyn Fn(&str, &hyper::HeaderMap, &[u8]) -> (u16, String) + Send + Sync>;

/// What a scripted answer is.
#[derive(Clone)]
pub enum Answer {
    Status(u16, &'static [(&'static str, &'static str)]),
    /// Never answers (the client must time out).
    Hang,
    /// Answers by checking the request (the real receiver's validation).
    Check(Check),
    /// Answers by checking the request and its path.
    Route(RouteCheck),
}

#[derive(Default)]
struct Seen {
    requests: Vec<(hyper::HeaderMap, Vec<u8>)>,
}

/// A receiver on loopback answering from `script` (the last answer repeats).
pub struct Server {
    pub address: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

pub async fn serve(script: Vec<Answer>, tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let script = Arc::new(Mutex::new(VecDeque::from(script)));
    let (recorded, answers) = (seen.clone(), script.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (recorded, answers, tls) = (recorded.clone(), answers.clone(), tls.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let (recorded, answers) = (recorded.clone(), answers.clone());
                    async move {
                        let headers = request.headers().clone();
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes().to_vec();
                        let answer = {
                            let mut answers = answers.lock().unwrap();
                            if answers.len() > 1 { answers.pop_front().unwrap() } else { answers[0].clone() }
                        };
                        recorded.lock().unwrap().requests.push((headers.clone(), body.clone()));
                        let (status, extra, text) = match answer {
                            Answer::Status(status, extra) => (status, extra, "ok".to_owned()),
                            Answer::Hang => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                (200, &[][..], String::new())
                            }
                            Answer::Check(check) => {
                                let (status, text) = check(&headers, &body);
                                (status, &[][..], text)
                            }
                            Answer::Route(check) => {
                                let (status, text) = check(&path, &headers, &body);
                                (status, &[][..], text)
                            }
                        };
                        let mut response = hyper::Response::builder().status(status);
                        for (name, value) in extra {
                            response = response.header(*name, *value);
                        }
                        Ok::<_, std::convert::Infallible>(response.body(Full::new(Bytes::from(text))).unwrap())
                    }
                });
                match tls {
                    Some(config) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await else { return };
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    Server { address, seen }
}

impl Server {
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.address)
    }

    pub fn requests(&self) -> Vec<(hyper::HeaderMap, Vec<u8>)> {
        self.seen.lock().unwrap().requests.clone()
    }
}

/// What Slack's incoming webhooks accept: a `text` string and well-formed Block Kit blocks
/// (they answer 400 `invalid_blocks` otherwise).
pub fn slack_shape(headers: &hyper::HeaderMap, body: &[u8]) -> (u16, String) {
    let bad = |why: &str| (400, format!("invalid_blocks: {why}"));
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return bad("content-type");
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else { return (400, "invalid_payload".into()) };
    if payload["text"].as_str().is_none_or(str::is_empty) {
        return (400, "no_text".into());
    }
    let Some(blocks) = payload["blocks"].as_array() else { return bad("no blocks") };
    if blocks.is_empty() || blocks.len() > 50 {
        return bad("count");
    }
    for block in blocks {
        match block["type"].as_str() {
            Some("header") => {
                let text = &block["text"];
                if text["type"] != "plain_text" || text["text"].as_str().is_none_or(|t| t.chars().count() > 150) {
                    return bad("header");
                }
            }
            Some("section") => {
                let text_ok = block["text"]["type"] == "mrkdwn"
                    && block["text"]["text"].as_str().is_some_and(|t| t.chars().count() <= 3000);
                let fields_ok = block["fields"].as_array().is_some_and(|f| {
                    f.len() <= 10
                        && f.iter()
                            .all(|f| f["type"] == "mrkdwn" && f["text"].as_str().is_some_and(|t| t.len() <= 2000))
                });
                if !(text_ok || fields_ok) {
                    return bad("section");
                }
            }
            Some("context") => {
                if !block["elements"].as_array().is_some_and(|e| !e.is_empty() && e.len() <= 10) {
                    return bad("context");
                }
            }
            _ => return bad("block type"),
        }
    }
    (200, "ok".into())
}

/// What a receiver of our webhooks does, written independently of the crate: HMAC-SHA256 over
/// `<timestamp>.<body>`, and a timestamp within five minutes.
pub fn signed_with(secret: &'static str) -> Check {
    Arc::new(move |headers: &hyper::HeaderMap, body: &[u8]| {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let timestamp = header("x-windlass-timestamp");
        let Ok(sent_at) = timestamp.parse::<i64>() else { return (401, "no timestamp".into()) };
        if (jiff::Timestamp::now().as_second() - sent_at).abs() > 300 {
            return (401, "stale".into());
        }
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(body);
        let expected = format!("v1={}", hex::encode(ring::hmac::sign(&key, &signed).as_ref()));
        if header("x-windlass-signature") != expected {
            return (401, "bad signature".into());
        }
        (200, "ok".into())
    })
}

/// One PagerDuty incident as the Events API v2 keeps it: opened by a trigger, then acknowledged
/// and resolved by events with its `dedup_key` (only while it is open).
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    pub dedup_key: String,
    /// `triggered`, `acknowledged` or `resolved`.
    pub status: &'static str,
    /// Every action applied to it, in order (`trigger`, `trigger`, `acknowledge`, `resolve`).
    pub actions: Vec<String>,
    /// The body of the trigger that opened it.
    pub opened_by: Value,
}

#[derive(Default)]
struct PagerDutyState {
    incidents: Vec<Incident>,
    change_events: Vec<Value>,
    /// Events answered 202 but applied to nothing (an ack or resolve with no open incident).
    dropped: Vec<Value>,
    generated: u64,
}

/// PagerDuty's Events API v2 (`/v2/enqueue`) and Change Events (`/v2/change/enqueue`), with the
/// field rules PagerDuty documents ("Send an Alert Event", "Send a Change Event"): it answers 202
/// `{"status":"success","message":"Event processed","dedup_key":...}` or 400 `{"status":"invalid
/// event","message":"Event object is invalid","errors":[...]}`, and keeps incidents by
/// `dedup_key` as PagerDuty does.
#[derive(Clone, Default)]
pub struct PagerDutyEvents {
    state: Arc<Mutex<PagerDutyState>>,
}

fn invalid(errors: Vec<String>) -> (u16, String) {
    let body = serde_json::json!({ "status": "invalid event", "message": "Event object is invalid", "errors": errors });
    (400, body.to_string())
}

fn check_string(value: &Value, name: &str, required: bool, max: Option<usize>, errors: &mut Vec<String>) {
    match value {
        Value::Null if !required => {}
        Value::Null => errors.push(format!("'{name}' is missing or blank")),
        Value::String(text) if required && text.trim().is_empty() => {
            errors.push(format!("'{name}' is missing or blank"))
        }
        Value::String(text) => {
            if let Some(max) = max
                && text.chars().count() > max
            {
                errors.push(format!("'{name}' is too long (maximum is {max} characters)"));
            }
        }
        _ => errors.push(format!("'{name}' must be a string")),
    }
}

fn check_common(body: &Value, errors: &mut Vec<String>) {
    match body["routing_key"].as_str() {
        Some(key) if key.chars().count() == 32 => {}
        Some(_) => errors.push("Length of 'routing_key' is incorrect (should be 32 characters)".into()),
        None => errors.push("'routing_key' is missing or blank".into()),
    }
    if let Some(at) = body["payload"].get("timestamp")
        && at.as_str().is_none_or(|at| at.parse::<jiff::Timestamp>().is_err())
    {
        errors.push("'payload.timestamp' is not a valid ISO 8601 timestamp".into());
    }
    if let Some(details) = body["payload"].get("custom_details")
        && !details.is_object()
    {
        errors.push("'payload.custom_details' must be an object".into());
    }
    if let Some(links) = body.get("links") {
        let ok = links.as_array().is_some_and(|links| {
            links.iter().all(|l| {
                l["href"].as_str().is_some_and(|h| !h.is_empty()) && l.get("text").is_none_or(Value::is_string)
            })
        });
        if !ok {
            errors.push("'links' must be a list of objects with an 'href'".into());
        }
    }
}

impl PagerDutyEvents {
    pub fn new() -> Self {
        Self::default()
    }

    /// The scripted answer that serves both endpoints.
    pub fn answer(&self) -> Answer {
        let this = self.clone();
        Answer::Route(Arc::new(move |path: &str, headers: &hyper::HeaderMap, body: &[u8]| {
            this.handle(path, headers, body)
        }))
    }

    fn handle(&self, path: &str, headers: &hyper::HeaderMap, body: &[u8]) -> (u16, String) {
        if !matches!(path, "/v2/enqueue" | "/v2/change/enqueue") {
            return (404, "not found".into());
        }
        if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
            return invalid(vec!["Content-Type must be application/json".into()]);
        }
        let Ok(body) = serde_json::from_slice::<Value>(body) else {
            return invalid(vec!["Event object is not valid JSON".into()]);
        };
        if !body.is_object() {
            return invalid(vec!["Event object must be a JSON object".into()]);
        }
        if path == "/v2/change/enqueue" {
            return self.change(body);
        }
        let mut errors = Vec::new();
        check_common(&body, &mut errors);
        let action = body["event_action"].as_str().unwrap_or("");
        if !matches!(action, "trigger" | "acknowledge" | "resolve") {
            errors.push("'event_action' is invalid (must be one of trigger, acknowledge, resolve)".into());
        }
        let dedup_key = &body["dedup_key"];
        check_string(dedup_key, "dedup_key", action != "trigger", Some(255), &mut errors);
        if action == "trigger" {
            let payload = &body["payload"];
            if !payload.is_object() {
                errors.push("'payload' is missing".into());
            }
            check_string(&payload["summary"], "payload.summary", true, Some(1024), &mut errors);
            check_string(&payload["source"], "payload.source", true, None, &mut errors);
            if !matches!(payload["severity"].as_str(), Some("critical" | "error" | "warning" | "info")) {
                errors.push("'payload.severity' is invalid (must be one of critical, error, warning, info)".into());
            }
            for optional in ["component", "group", "class"] {
                check_string(&payload[optional], &format!("payload.{optional}"), false, None, &mut errors);
            }
        }
        if !errors.is_empty() {
            return invalid(errors);
        }
        let mut state = self.state.lock().unwrap();
        let key = match dedup_key.as_str() {
            Some(key) => key.to_owned(),
            None => {
                state.generated += 1;
                format!("{:032x}", state.generated)
            }
        };
        let open = state.incidents.iter_mut().rev().find(|i| i.dedup_key == key && i.status != "resolved");
        match (action, open) {
            ("trigger", Some(incident)) => incident.actions.push("trigger".into()),
            ("trigger", None) => state.incidents.push(Incident {
                dedup_key: key.clone(),
                status: "triggered",
                actions: vec!["trigger".into()],
                opened_by: body.clone(),
            }),
            (action, Some(incident)) => {
                incident.status = if action == "acknowledge" { "acknowledged" } else { "resolved" };
                incident.actions.push(action.into());
            }
            (_, None) => state.dropped.push(body.clone()),
        }
        let answer = serde_json::json!({ "status": "success", "message": "Event processed", "dedup_key": key });
        (202, answer.to_string())
    }

    fn change(&self, body: Value) -> (u16, String) {
        let mut errors = Vec::new();
        check_common(&body, &mut errors);
        let payload = &body["payload"];
        if !payload.is_object() {
            errors.push("'payload' is missing".into());
        }
        check_string(&payload["summary"], "payload.summary", true, Some(1024), &mut errors);
        check_string(&payload["source"], "payload.source", false, None, &mut errors);
        if !errors.is_empty() {
            return invalid(errors);
        }
        self.state.lock().unwrap().change_events.push(body);
        (202, serde_json::json!({ "status": "success", "message": "Change event processed" }).to_string())
    }

    /// Every incident ever opened under `dedup_key`, oldest first.
    pub fn incidents(&self, dedup_key: &str) -> Vec<Incident> {
        self.state.lock().unwrap().incidents.iter().filter(|i| i.dedup_key == dedup_key).cloned().collect()
    }

    /// Every incident, oldest first.
    pub fn all_incidents(&self) -> Vec<Incident> {
        self.state.lock().unwrap().incidents.clone()
    }

    /// The accepted change events, in order.
    pub fn change_events(&self) -> Vec<Value> {
        self.state.lock().unwrap().change_events.clone()
    }

    /// Acknowledge and resolve events that found no open incident (PagerDuty drops them).
    pub fn dropped(&self) -> Vec<Value> {
        self.state.lock().unwrap().dropped.clone()
    }

    /// Incidents by status, for a quick look in assertions.
    pub fn statuses(&self) -> HashMap<String, &'static str> {
        let state = self.state.lock().unwrap();
        state.incidents.iter().map(|i| (i.dedup_key.clone(), i.status)).collect()
    }
}
