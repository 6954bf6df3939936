//! The API under abuse, through the real server: names that try to leave their path segment,
//! overflowing durations, huge bodies and malformed queries each get the JSON error that names
//! what is wrong, and write nothing.

use std::io::{Read as _, Write as _};

use serde_json::Value;

use crate::platform::{Platform, config, demo};

/// One raw HTTP/1.1 exchange with the server: its status and its body as JSON (the test fails
/// if an error is not JSON).
fn raw(platform: &Platform, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let address = platform.server_url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: windlass\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    // A body the server refuses early may not all be taken: what matters is its answer.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    assert!(head.to_lowercase().contains("content-type: application/json"), "{method} {path}: {answer}");
    let value = serde_json::from_str(body).unwrap_or_else(|err| panic!("{method} {path}: {err}: {answer}"));
    (status, value)
}

fn message(value: &Value) -> &str {
    value["error"].as_str().unwrap_or_else(|| panic!("no error field: {value}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_names_durations_bodies_and_queries_are_refused_as_json_and_write_nothing() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    let token = platform.token.clone();
    let events_before = platform.json(&["events"]);

    // Names that would leave their segment reach their own route, answered for that name.
    for name in ["../../x", "..", "a b", "%2e%2e", "café", "what?#x", "../status"] {
        let run = platform.cli(&["ack", name]);
        assert_ne!(run.code, 0, "ack {name}: {}", run.stdout);
        assert!(run.stderr.contains(&format!("no alert `{name}`")), "ack {name}: {}", run.stderr);
        let run = platform.cli(&["silence", "expire", name]);
        assert!(run.stderr.contains(&format!("no silence `{name}`")), "silence expire {name}: {}", run.stderr);
        let run = platform.cli(&["logs", "production", name]);
        assert!(run.stderr.contains(&format!("`{name}` has never run in `production`")), "logs {name}: {}", run.stderr);
        let run = platform.cli(&["lock", "show", name]);
        assert_ne!(run.code, 0, "lock show {name}: {}", run.stdout);
        assert!(run.stderr.contains(name), "lock show {name}: {}", run.stderr);
    }

    // A silence for longer than jiff can count: 400 naming the field and the longest allowed.
    let silence = br#"{"for": "3000000d", "environment": "production", "reason": "forever"}"#;
    let (status, value) = raw(&platform, "POST", "/api/v1/silences", Some(&token), silence);
    assert_eq!(status, 400, "{value}");
    assert!(message(&value).contains("`for`") && message(&value).contains("36500d"), "{value}");
    let run = platform.cli(&["silence", "add", "production", "--for", "106751991167d", "--reason", "x"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("too long a duration"), "{}", run.stderr);
    let silences = platform.json(&["silence", "list"]);
    assert_eq!(silences["silences"].as_array().map(Vec::len), Some(0), "{silences}");

    // A body over the limit: 413, before the token is even looked at.
    let huge = vec![b' '; 2 * 1024 * 1024];
    let (status, value) = raw(&platform, "POST", "/api/v1/environments/production/deploys", Some(&token), &huge);
    assert_eq!(status, 413, "{value}");
    assert!(message(&value).contains("bytes at most"), "{value}");
    let (status, _) = raw(&platform, "POST", "/api/v1/environments/production/deploys", None, &huge);
    assert_eq!(status, 413);

    // axum's own rejections, each as JSON naming what is wrong.
    let cases: [(&str, &str, &[u8], u16, &str); 7] = [
        ("GET", "/api/v1/environments/production/deploys?limit=many", b"", 400, "limit"),
        ("GET", "/api/v1/events?limit=-1", b"", 400, "limit"),
        ("GET", "/api/v1/deploys/%FF%FE", b"", 400, "UTF-8"),
        ("DELETE", "/api/v1/status", b"", 405, "GET"),
        ("GET", "/api/v2/status", b"", 404, "/api/v1"),
        ("POST", "/api/v1/environments/production/deploys", b"{not json", 400, "invalid request body"),
        ("POST", "/api/v1/silences", br#"{"for": 5}"#, 400, "`for`: invalid type"),
    ];
    for (method, path, body, want_status, want_text) in cases {
        let (status, value) = raw(&platform, method, path, Some(&token), body);
        assert_eq!(status, want_status, "{method} {path}: {value}");
        assert!(message(&value).contains(want_text), "{method} {path}: {value}");
    }

    // Nothing of it was recorded.
    let events_after = platform.json(&["events"]);
    assert_eq!(events_before, events_after);
}
