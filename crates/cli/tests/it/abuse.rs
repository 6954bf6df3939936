//! The API under abuse, through the real server: names that try to leave their path segment,
//! overflowing durations, huge bodies and malformed queries each get the JSON error that names
//! what is wrong, and write nothing.

use std::collections::BTreeMap;
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

    // Nothing of it was recorded but the audit record of each refused call (`request.failed`,
    // which the token check writes for every failed call that needed more than reading).
    let not_audit = |events: serde_json::Value| -> Vec<serde_json::Value> {
        events["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["kind"] != "request.failed")
            .collect()
    };
    let events_after = platform.json(&["events"]);
    assert_eq!(not_audit(events_before), not_audit(events_after));
}

/// A server-sent event stream read from a raw socket: the answer's head, then events.
struct Stream {
    reader: std::io::BufReader<std::net::TcpStream>,
    status: u16,
    head: String,
    /// Decoded body bytes not yet cut into events.
    pending: String,
}

impl Stream {
    fn open(platform: &Platform, path: &str) -> Stream {
        use std::io::BufRead as _;
        let address = platform.server_url.trim_start_matches("http://");
        let mut socket = std::net::TcpStream::connect(address).unwrap();
        socket.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: windlass\r\nAuthorization: Bearer {}\r\n\r\n", platform.token);
        socket.write_all(request.as_bytes()).unwrap();
        let mut reader = std::io::BufReader::new(socket);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Stream { reader, status, head, pending: String::new() }
    }

    /// The body of a non-streaming answer (it has a length).
    fn body(&mut self) -> String {
        let length: usize = self
            .head
            .lines()
            .find_map(|l| l.to_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
            .unwrap();
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }

    /// The next event (`event:` kind, `data:` JSON), or `None` at the stream's end.
    fn next(&mut self) -> Option<(String, Value)> {
        use std::io::BufRead as _;
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let kind = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("").to_owned();
                let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((kind, serde_json::from_str(&data).unwrap()));
            }
            // One chunk of the chunked body.
            let mut size = String::new();
            self.reader.read_line(&mut size).unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            if size == 0 {
                return None;
            }
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).unwrap();
            self.pending.push_str(std::str::from_utf8(&chunk[..size]).unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_streams_are_capped_per_token_and_send_a_steps_capped_output_as_stored() {
    let gate = windlass_testkit::tempdir();
    let gate = gate.path().join("go");
    let step = format!(
        "\n[[phases.validate.steps]]\nname = \"print a lot\"\nrun = \"echo started; until [ -e {} ]; do sleep 0.1; done; seq 1 300000; echo finished\"\ntimeout = \"120s\"\n",
        gate.display()
    );
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", &step));
    let (status, started) =
        raw(&platform, "POST", "/api/v1/environments/production/deploys", Some(&platform.token), b"{}");
    assert_eq!(status, 202, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/deploys/{id}/events");

    // Eight streams for one token; the ninth is refused with 429 and Retry-After.
    let mut streams: Vec<Stream> = (0..8).map(|_| Stream::open(&platform, &path)).collect();
    assert!(streams.iter().all(|s| s.status == 200), "{:?}", streams.iter().map(|s| &s.head).collect::<Vec<_>>());
    let mut ninth = Stream::open(&platform, &path);
    assert_eq!(ninth.status, 429, "{}", ninth.head);
    assert!(ninth.head.to_lowercase().contains("retry-after: 5"), "{}", ninth.head);
    let refused: Value = serde_json::from_str(&ninth.body()).unwrap();
    assert!(message(&refused).contains("at most 8"), "{refused}");

    // The step's first line arrives while it waits (told, not polled for).
    let mut first = streams.remove(0);
    let mut output: BTreeMap<i64, String> = BTreeMap::new();
    let mut step_seq = None;
    while !output.values().any(|text| text.contains("started")) {
        let (kind, data) = first.next().expect("the stream goes on");
        if kind == "step" && data["name"] == "print a lot" {
            step_seq = data["seq"].as_i64();
        }
        if kind == "output" {
            output.entry(data["seq"].as_i64().unwrap()).or_default().push_str(data["text"].as_str().unwrap());
        }
    }
    // A closed stream gives its place back.
    drop(streams.pop());
    let mut again = None;
    for _ in 0..100 {
        let stream = Stream::open(&platform, &path);
        if stream.status == 200 {
            again = Some(stream);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(again.is_some(), "the closed stream's place was not given back");

    std::fs::write(&gate, "").unwrap();
    loop {
        let (kind, data) = first.next().expect("the stream ends with done");
        match kind.as_str() {
            "output" => {
                output.entry(data["seq"].as_i64().unwrap()).or_default().push_str(data["text"].as_str().unwrap())
            }
            "done" => break,
            _ => {}
        }
    }
    assert!(first.next().is_none(), "the stream ends after done");
    // What the stream sent is what was stored: the head, the marker and the tail, once each.
    let (status, shown) = raw(&platform, "GET", &format!("/api/v1/deploys/{id}"), Some(&platform.token), b"");
    assert_eq!(status, 200, "{shown}");
    let stored = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "print a lot")
        .and_then(|s| s["output"].as_str())
        .unwrap()
        .to_owned();
    let sent = &output[&step_seq.unwrap()];
    assert_eq!(sent, &stored);
    assert!(stored.starts_with("started\n1\n2\n") && stored.ends_with("300000\nfinished\n"));
    assert!(stored.contains(" bytes of output dropped ...]\n"), "{} bytes", stored.len());
    assert!(stored.len() < 1100 * 1024, "{} bytes", stored.len());
}
