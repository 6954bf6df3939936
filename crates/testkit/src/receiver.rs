//! Receivers of outgoing HTTP (webhooks) for tests: real servers on loopback, plain or TLS, that
//! answer from a script and record every request, and the checks the services they stand for
//! make (Slack's payload shape, our webhook signature).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Checks a request as the real receiver would: (status, body) to answer.
pub type Check = Arc<dyn Fn(&hyper::HeaderMap, &[u8]) -> (u16, String) + Send + Sync>;

/// What a scripted answer is.
#[derive(Clone)]
pub enum Answer {
    Status(u16, &'static [(&'static str, &'static str)]),
    /// Never answers (the client must time out).
    Hang,
    /// Answers by checking the request (the real receiver's validation).
    Check(Check),
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
