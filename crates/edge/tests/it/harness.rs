//! Demo instances, an in-process edge, the admin API, and a keep-alive load generator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use windlass_edge::spec::{EdgeSpec, PoolSpec, RouteSpec, ServiceSpec};
use windlass_edge::{EdgeHandle, EdgeOptions, Settings};
use windlass_testkit::http::{self, Reply};
use windlass_testkit::process::{Process, loopback_listener};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A running demo instance with its main and admin addresses.
pub struct Demo {
    /// Kept so the instance lives (and is killed) with the test.
    _process: Process,
    pub address: SocketAddr,
    pub admin: SocketAddr,
}

impl Demo {
    pub fn start(version: &str) -> Demo {
        let main = loopback_listener();
        let admin = loopback_listener();
        let mut command = Command::new(windlass_testkit::workspace_bin("windlass-demo"));
        command.env_clear().env("VERSION", version);
        let process = Process::start_with_listeners(command, &[&main, &admin]);
        process.wait_for_line("listening on");
        Demo { _process: process, address: main.local_addr().unwrap(), admin: admin.local_addr().unwrap() }
    }

    /// Kills the instance with SIGKILL: its sockets close at once, nothing is finished.
    pub fn kill(&self) {
        self._process.signal(libc::SIGKILL);
    }

    pub async fn faults(&self, json: &str) {
        let reply = http::request("PUT", self.admin, "/faults", &[], json).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
}

pub fn pool(instances: &[&Demo], weight: u8) -> PoolSpec {
    PoolSpec { instances: instances.iter().map(|d| d.address).collect(), weight }
}

pub fn service(host: &str, pools: Vec<(&str, PoolSpec)>) -> ServiceSpec {
    ServiceSpec {
        routes: vec![RouteSpec { host: Some(host.into()), path: "/".into() }],
        pools: pools.into_iter().map(|(n, p)| (n.to_owned(), p)).collect(),
        ..ServiceSpec::default()
    }
}

pub fn spec(services: Vec<(&str, ServiceSpec)>) -> EdgeSpec {
    EdgeSpec { services: services.into_iter().map(|(n, s)| (n.to_owned(), s)).collect(), maintenance_all: false }
}

/// Two demos, `v1` in pool `blue` and `v2` in pool `green`, behind one service `api` at `host`,
/// with blue at `blue_weight` and green at the rest.
pub fn blue_green(host: &str, blue_weight: u8, settings: Settings) -> (Demo, Demo, EdgeHandle) {
    let (blue, green) = (Demo::start("v1"), Demo::start("v2"));
    let pools = vec![("blue", pool(&[&blue], blue_weight)), ("green", pool(&[&green], 100 - blue_weight))];
    let edge = start_edge(spec(vec![("api", service(host, pools))]), settings, None);
    (blue, green, edge)
}

pub fn settings() -> Settings {
    Settings { upstream_timeout: Duration::from_secs(5), ..Settings::new(TOKEN) }
}

pub fn start_edge(initial: EdgeSpec, settings: Settings, state_path: Option<std::path::PathBuf>) -> EdgeHandle {
    windlass_edge::start(EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 2,
        settings,
        initial,
        state_path,
        tls: None,
        admin_tls: None,
    })
    .expect("the edge starts")
}

/// A request through the edge for `host`.
pub async fn get(edge: &EdgeHandle, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("host", host)];
    all.extend_from_slice(headers);
    http::request("GET", edge.address, path, &all, "").await.unwrap()
}

/// The `version` a demo reported through the edge.
pub fn version_of(reply: &Reply) -> String {
    let json: serde_json::Value =
        serde_json::from_str(&reply.body).unwrap_or_else(|_| panic!("not JSON: {} {}", reply.status, reply.body));
    json["version"].as_str().unwrap().to_owned()
}

pub async fn admin(edge: &EdgeHandle, method: &str, path: &str, body: &str) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    http::request(
        method,
        edge.admin_address,
        path,
        &[("authorization", &auth), ("content-type", "application/json")],
        body,
    )
    .await
    .unwrap()
}

pub async fn state(edge: &EdgeHandle) -> serde_json::Value {
    serde_json::from_str(&admin(edge, "GET", "/edge/state", "").await.body).unwrap()
}

/// A read of the admin API with the admin token (reads need a token too); the body.
pub async fn admin_read(edge: &EdgeHandle, path: &str) -> String {
    let reply = admin(edge, "GET", path, "").await;
    assert_eq!(reply.status, 200, "GET {path}: {}", reply.body);
    reply.body
}

// Polling until a condition holds: the one helper in testkit.
pub use windlass_testkit::eventually;

/// What a load generator saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub ok: u64,
    pub failures: Vec<String>,
    pub versions: BTreeMap<String, u64>,
}

/// `connections` keep-alive clients requesting `/version` for `host` until `stop` is set (and at
/// most `max_per_connection` requests each). Any non-2xx, reset or error is a failure.
pub fn start_load(
    address: SocketAddr,
    host: &'static str,
    connections: usize,
    max_per_connection: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<LoadReport> {
    tokio::spawn(async move {
        let clients: Vec<_> = (0..connections)
            .map(|_| {
                let stop = stop.clone();
                tokio::spawn(async move { keep_alive_client(address, host, max_per_connection, stop).await })
            })
            .collect();
        let mut report = LoadReport::default();
        for client in clients {
            let part = client.await.unwrap();
            report.ok += part.ok;
            report.failures.extend(part.failures);
            for (version, count) in part.versions {
                *report.versions.entry(version).or_default() += count;
            }
        }
        report
    })
}

async fn keep_alive_client(address: SocketAddr, host: &str, max: u64, stop: Arc<AtomicBool>) -> LoadReport {
    let mut report = LoadReport::default();
    let mut sender = None;
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) && sent < max {
        sent += 1;
        if sender.is_none() {
            match tokio::net::TcpStream::connect(address).await {
                Ok(stream) => {
                    let (s, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                    tokio::spawn(connection);
                    sender = Some(s);
                }
                Err(err) => {
                    report.failures.push(format!("connect: {err}"));
                    continue;
                }
            }
        }
        let s = sender.as_mut().unwrap();
        let request = hyper::Request::get("/version").header("host", host).body(Empty::<Bytes>::new()).unwrap();
        let outcome = async {
            s.ready().await.map_err(|e| format!("ready: {e}"))?;
            let response = s.send_request(request).await.map_err(|e| format!("send: {e}"))?;
            let status = response.status();
            let body = response.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
            if !status.is_success() {
                return Err(format!("status {status}: {}", String::from_utf8_lossy(&body)));
            }
            let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("json: {e}"))?;
            Ok(json["version"].as_str().unwrap_or("?").to_owned())
        }
        .await;
        match outcome {
            Ok(version) => {
                report.ok += 1;
                *report.versions.entry(version).or_default() += 1;
            }
            Err(failure) => {
                report.failures.push(failure);
                sender = None;
            }
        }
    }
    report
}
