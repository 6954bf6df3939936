//! The gates a rollout waits on: an instance's health check, and smoke checks through the edge.

use std::net::SocketAddr;
use std::time::Duration;

use windlass_config::{Health, SmokeCheck};
use windlass_runtime::{InstanceState, Runtime};

use crate::edge::EdgeControl;
use crate::http;
use crate::vars::Variables;

/// Why a new instance did not pass its health gate. Its last output may quote a secret: the
/// error is redacted when its step ends.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Runtime(#[from] windlass_runtime::RuntimeError),
    /// The instance's process exited or gave up; `exit` says how, `output` is its last lines.
    #[error("instance {id} stopped before it became healthy ({state:?}, {exit}){}", last_output(.output))]
    Stopped { id: String, state: InstanceState, exit: String, output: Vec<String> },
    #[error("instance {id} at {address} was not healthy within {timeout:?} (last: {last})")]
    Unhealthy { id: String, address: SocketAddr, timeout: Duration, last: String },
}

/// Why one smoke request did not pass (a check retries on it).
#[derive(Debug, thiserror::Error)]
enum Attempt {
    #[error(transparent)]
    Request(#[from] http::HttpError),
    #[error("status {got} (expected {expected})")]
    Status { got: u16, expected: u16 },
    #[error("the body does not contain `{needle}` (body: {shown:?})")]
    Body { needle: String, shown: String },
    #[error("the body is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    #[error("{pointer} is {found}, expected {expected}")]
    Json { pointer: String, found: serde_json::Value, expected: serde_json::Value },
    #[error("the JSON body has no {0}")]
    NoPointer(String),
    #[error("took {took_ms} ms (at most {max_ms} ms)")]
    Slow { took_ms: u128, max_ms: u128 },
}

fn last_output(lines: &[String]) -> String {
    if lines.is_empty() { String::new() } else { format!("; last output:\n{}", lines.join("\n")) }
}

/// Why a smoke check failed. A failed request's problem may quote the reply's body: the error
/// is redacted when its step ends.
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error(transparent)]
    Template(#[from] windlass_config::template::TemplateError),
    #[error(transparent)]
    Url(#[from] http::UrlError),
    #[error("cannot resolve `{host}`: {source}")]
    Resolve { host: String, source: std::io::Error },
    #[error("`{0}` resolves to no address")]
    NoAddress(String),
    /// The last attempt's problem, after the check's retries.
    #[error("{0}")]
    Failed(String),
}

/// Waits until a new instance passes its health check `healthy_after` times in a row, within
/// its `start_timeout`. Fails at once when the instance's process gives up (crash loop).
pub async fn wait_healthy(
    runtime: &dyn Runtime,
    id: &str,
    address: SocketAddr,
    health: Option<&Health>,
) -> Result<(), HealthError> {
    let start_timeout = health.map_or(Duration::from_secs(60), |h| h.start_timeout.as_std());
    // Checked: an `Instant` too far ahead panics; the config bounds durations (100 years), and
    // past that the wait is simply unbounded.
    let now = tokio::time::Instant::now();
    let deadline = now.checked_add(start_timeout).unwrap_or(now + windlass_config::units::MAX_DURATION.as_std());
    let mut passed = 0u32;
    let mut last_problem = String::from("no answer yet");
    loop {
        if let Some(instance) = runtime.get(id).await?
            && matches!(instance.state, InstanceState::CrashLoop | InstanceState::Exited | InstanceState::Lost)
        {
            let logs = runtime.logs(id, 5).await.unwrap_or_default();
            let exit = instance.last_exit.map(|e| match (e.code, e.signal) {
                (Some(code), _) => format!("exit code {code}"),
                (_, Some(signal)) => format!("signal {signal}"),
                _ => "unknown exit".into(),
            });
            return Err(HealthError::Stopped {
                id: id.to_owned(),
                state: instance.state,
                exit: exit.unwrap_or_else(|| "no exit status".into()),
                output: logs,
            });
        }
        let ok = match health {
            Some(health) => {
                let reply = http::send(http::Request {
                    method: "GET",
                    address,
                    host: "",
                    path: &health.path,
                    headers: &[],
                    body: None,
                    timeout: health.timeout.as_std(),
                })
                .await;
                match reply {
                    Ok(reply) if (200..300).contains(&reply.status) => true,
                    Ok(reply) => {
                        last_problem = format!("GET {} answered {}", health.path, reply.status);
                        false
                    }
                    Err(err) => {
                        last_problem = err.to_string();
                        false
                    }
                }
            }
            None => match tokio::net::TcpStream::connect(address).await {
                Ok(_) => true,
                Err(err) => {
                    last_problem = format!("cannot connect to {address}: {err}");
                    false
                }
            },
        };
        passed = if ok { passed + 1 } else { 0 };
        if passed >= health.map_or(1, |h| h.healthy_after.max(1)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HealthError::Unhealthy {
                id: id.to_owned(),
                address,
                timeout: start_timeout,
                last: last_problem,
            });
        }
        // Until the first success, poll briskly (a process takes a moment to listen); between
        // the successes that must follow, keep the configured interval.
        let pause = match (passed, health) {
            (0, Some(h)) => h.interval.as_std().min(Duration::from_millis(100)),
            (0, None) => Duration::from_millis(50),
            (_, Some(h)) => h.interval.as_std(),
            (_, None) => Duration::ZERO,
        };
        tokio::time::sleep(pause).await;
    }
}

/// Where a smoke check's request goes: hosts that are routes of this platform go to the edge
/// (with the URL's Host header), so the check sees what users see; `localhost` and names under
/// `.localhost` are loopback (RFC 6761) even where the system resolver does not know them.
async fn target(url_host: &str, port: u16, route_hosts: &[String], edge: SocketAddr) -> Result<SocketAddr, SmokeError> {
    if route_hosts.iter().any(|h| h.eq_ignore_ascii_case(url_host)) {
        return Ok(edge);
    }
    if url_host.eq_ignore_ascii_case("localhost") || url_host.to_ascii_lowercase().ends_with(".localhost") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(ip) = url_host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((url_host, port))
        .await
        .map_err(|source| SmokeError::Resolve { host: url_host.to_owned(), source })?
        .next()
        .ok_or_else(|| SmokeError::NoAddress(url_host.to_owned()))
}

/// Whether a request to `address` reaches the edge listening on `edge`: the same address, or
/// its port on a loopback address when the edge listens on every address.
fn reaches_edge(address: SocketAddr, edge: SocketAddr) -> bool {
    address == edge || (edge.ip().is_unspecified() && address.ip().is_loopback() && address.port() == edge.port())
}

/// Runs one smoke check (with its retries); `pin` sends it to one pool of its service through
/// the edge's pinning header. Returns a one-line summary of what passed.
pub async fn smoke(
    check: &SmokeCheck,
    variables: &Variables,
    route_hosts: &[String],
    edge: &dyn EdgeControl,
    pin: Option<&str>,
) -> Result<String, SmokeError> {
    let url = check.url.render(|name| variables.get(name))?;
    let (authority, host, port, path) = http::split_url(&url)?;
    let address = target(&host, port, route_hosts, edge.public_address()).await?;
    let mut headers: Vec<(&str, &str)> = check.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // The pin secret (derived from the admin token, good for pinning only) goes to the edge and
    // nowhere else: a smoke URL that does not resolve to the edge is checked unpinned.
    let pin_token = edge.pin_token();
    if let Some(pool) = pin {
        if reaches_edge(address, edge.public_address()) {
            headers.push(("x-windlass-pool", pool));
            headers.push(("x-windlass-token", &pin_token));
        } else {
            tracing::warn!(
                %address,
                pool,
                "smoke check `{}` does not go through the edge: sent without pinning it to the pool",
                check.name
            );
        }
    }
    let mut last = String::new();
    for attempt in 0..=check.retries {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let reply = http::send(http::Request {
            method: &check.method,
            address,
            host: &authority,
            path: &path,
            headers: &headers,
            body: None,
            timeout: check.timeout.as_std(),
        })
        .await;
        match reply.map_err(Attempt::from).and_then(|reply| expect(check, &reply).map(|()| reply)) {
            Ok(reply) => {
                return Ok(format!("{} {url}: {} in {} ms", check.method, reply.status, reply.elapsed.as_millis()));
            }
            Err(problem) => last = format!("{} {url}: {problem}", check.method),
        }
    }
    Err(SmokeError::Failed(last))
}

fn expect(check: &SmokeCheck, reply: &http::Reply) -> Result<(), Attempt> {
    let expect = &check.expect;
    if reply.status != expect.status {
        return Err(Attempt::Status { got: reply.status, expected: expect.status });
    }
    let text = reply.text();
    if let Some(needle) = &expect.body_contains
        && !text.contains(needle.as_str())
    {
        let shown: String = text.chars().take(200).collect();
        return Err(Attempt::Body { needle: needle.clone(), shown });
    }
    if let Some(json) = &expect.json {
        let value: serde_json::Value = serde_json::from_str(&text).map_err(Attempt::NotJson)?;
        match value.pointer(&json.pointer) {
            Some(found) if *found == json.equals => {}
            Some(found) => {
                return Err(Attempt::Json {
                    pointer: json.pointer.clone(),
                    found: found.clone(),
                    expected: json.equals.clone(),
                });
            }
            None => return Err(Attempt::NoPointer(json.pointer.clone())),
        }
    }
    if let Some(max) = expect.max_latency
        && reply.elapsed > max.as_std()
    {
        return Err(Attempt::Slow { took_ms: reply.elapsed.as_millis(), max_ms: max.as_std().as_millis() });
    }
    Ok(())
}
