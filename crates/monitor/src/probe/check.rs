//! Running one probe once: each kind's exchange, its expectations, and a short reason.

use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use windlass_http::{HttpError, Url, UrlRequest};
use windlass_secrets::Redactor;

use super::rules::{History, judge};
use super::{HttpTarget, MetricsTarget, Outcome, ProbeError, ProbeSpec, SecretText, Target, cert};

/// A probe ready to run: its spec, its compiled body regex and its scrape history.
#[derive(Debug)]
pub struct Probe {
    spec: ProbeSpec,
    body_regex: Option<regex_lite::Regex>,
    history: Mutex<History>,
}

impl Probe {
    /// Fails only on a body regex that does not compile (the config checks it first).
    pub fn new(spec: ProbeSpec) -> Result<Self, ProbeError> {
        let body_regex = match &spec.target {
            Target::Http(http) => http
                .expect
                .body_regex
                .as_deref()
                .map(regex_lite::Regex::new)
                .transpose()
                .map_err(|err| ProbeError::BadRegex { probe: spec.name.clone(), message: err.to_string() })?,
            _ => None,
        };
        Ok(Probe { spec, body_regex, history: Mutex::new(History::default()) })
    }

    pub fn spec(&self) -> &ProbeSpec {
        &self.spec
    }

    /// Runs the probe once. `now` dates the run (certificate days, metric windows); the probe's
    /// timeout bounds it, and a command still running then is killed.
    pub async fn run(&self, now: Timestamp) -> Outcome {
        self.run_redacted(now, &Redactor::default()).await
    }

    /// [`Probe::run`], with every secret `redactor` knows hidden from the reason: a command's
    /// output is redacted whole before its last line is taken, and the reason once more after.
    pub async fn run_redacted(&self, now: Timestamp, redactor: &Redactor) -> Outcome {
        let started = Instant::now();
        let timeout = self.spec.timeout;
        let span = tracing::info_span!("probe", name = %self.spec.name);
        let run = tracing::Instrument::instrument(self.run_inner(now, started, redactor), span);
        let mut outcome = match tokio::time::timeout(timeout, run).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::fail(format!("no answer within {}", show_duration(timeout)), started.elapsed()),
        };
        if !redactor.is_empty() {
            outcome.reason = redactor.redact(&outcome.reason);
        }
        outcome
    }

    async fn run_inner(&self, now: Timestamp, started: Instant, redactor: &Redactor) -> Outcome {
        let timeout = self.spec.timeout;
        match &self.spec.target {
            Target::Http(http) => self.http(http, now, started).await,
            Target::Tcp { address } => match connect(address).await {
                Ok(_) => Outcome::pass(format!("connected in {} ms", started.elapsed().as_millis()), started.elapsed()),
                Err(reason) => Outcome::fail(reason, started.elapsed()),
            },
            Target::Postgres { url } => postgres(url, started).await,
            Target::Redis { url } => match redis(url).await {
                Ok(()) => Outcome::pass("PONG", started.elapsed()),
                Err(reason) => Outcome::fail(reason, started.elapsed()),
            },
            Target::Command { command, env } => run_command(command, env, timeout, started, redactor).await,
            Target::Metrics(metrics) => self.metrics(metrics, now, started).await,
        }
    }

    async fn http(&self, http: &HttpTarget, now: Timestamp, started: Instant) -> Outcome {
        let url = match Url::parse(&http.url) {
            Ok(url) => url,
            Err(problem) => return Outcome::fail(problem, started.elapsed()),
        };
        let headers: Vec<(&str, &str)> = http.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let reply = windlass_http::send_url(UrlRequest {
            method: &http.method,
            url: &url,
            headers: &headers,
            body: None,
            timeout: self.spec.timeout,
            ca_file: http.ca_file.as_deref(),
        })
        .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => return Outcome::fail(http_reason(&err), started.elapsed()),
        };
        let latency = reply.elapsed;
        let mut outcome = match self.judge_http(http, &reply) {
            Ok(summary) => Outcome::pass(summary, latency),
            Err(problem) => Outcome::fail(problem, latency),
        };
        if let Some(der) = &reply.peer_certificate {
            match cert::not_after(der) {
                Ok(not_after) => {
                    let days = cert::days_left(not_after, now);
                    outcome.cert_days_left = Some(days);
                    outcome.cert_not_after = Some(not_after);
                    let wanted = i64::from(http.expect.cert_days);
                    if outcome.ok && wanted > 0 && days < wanted {
                        outcome.ok = false;
                        outcome.reason = format!("certificate expires in {days} days, expected at least {wanted}");
                    }
                }
                Err(problem) if outcome.ok && http.expect.cert_days > 0 => {
                    outcome.ok = false;
                    outcome.reason = format!("cannot read the certificate's expiry: {problem}");
                }
                Err(_) => {}
            }
        }
        outcome
    }

    fn judge_http(&self, http: &HttpTarget, reply: &windlass_http::Reply) -> Result<String, String> {
        let expect = &http.expect;
        match expect.status {
            Some(status) if reply.status != status => {
                return Err(format!("status {}, expected {status}", reply.status));
            }
            None if !(200..300).contains(&reply.status) => {
                return Err(format!("status {}, expected 2xx", reply.status));
            }
            _ => {}
        }
        let text = reply.text();
        if let Some(needle) = &expect.body_contains
            && !text.contains(needle.as_str())
        {
            return Err(format!("the body does not contain {needle:?}"));
        }
        if let Some(regex) = &self.body_regex
            && !regex.is_match(&text)
        {
            return Err(format!("the body does not match /{}/", regex.as_str()));
        }
        if let Some(json) = &expect.json {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|err| format!("the body is not JSON ({err})"))?;
            let found = value.pointer(&json.pointer);
            match (found, json.exists) {
                (None, Some(false)) => {}
                (Some(_), Some(false)) => return Err(format!("{} is present, expected absent", json.pointer)),
                (None, _) => return Err(format!("the JSON body has no {}", json.pointer)),
                (Some(_), _) => {}
            }
            if let (Some(found), Some(equals)) = (found, &json.equals)
                && found != equals
            {
                return Err(format!("{} is {found}, expected {equals}", json.pointer));
            }
        }
        if let Some(max) = expect.max_latency
            && reply.elapsed > max.as_std()
        {
            return Err(format!(
                "took {} ms, expected at most {} ms",
                reply.elapsed.as_millis(),
                max.as_std().as_millis()
            ));
        }
        Ok(format!("status {} in {} ms", reply.status, reply.elapsed.as_millis()))
    }

    async fn metrics(&self, metrics: &MetricsTarget, now: Timestamp, started: Instant) -> Outcome {
        let url = match Url::parse(&metrics.url) {
            Ok(url) => url,
            Err(problem) => return Outcome::fail(problem, started.elapsed()),
        };
        let headers: Vec<(&str, &str)> = metrics.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let reply = windlass_http::send_url(UrlRequest {
            method: "GET",
            url: &url,
            headers: &headers,
            body: None,
            timeout: self.spec.timeout,
            ca_file: metrics.ca_file.as_deref(),
        })
        .await;
        let reply = match reply {
            Ok(reply) if (200..300).contains(&reply.status) => reply,
            Ok(reply) => return Outcome::fail(format!("status {}, expected 2xx", reply.status), reply.elapsed),
            Err(err) => return Outcome::fail(http_reason(&err), started.elapsed()),
        };
        let samples = match super::exposition::parse(&reply.text()) {
            Ok(samples) => samples,
            Err(err) => return Outcome::fail(err.to_string(), reply.elapsed),
        };
        let Ok(mut history) = self.history.lock() else {
            return Outcome::fail("the scrape history is unusable", reply.elapsed);
        };
        history.record(now, &samples, &metrics.rules);
        let (ok, reason) = judge(&history, &metrics.rules);
        if ok { Outcome::pass(reason, reply.elapsed) } else { Outcome::fail(reason, reply.elapsed) }
    }
}

fn show_duration(duration: Duration) -> String {
    windlass_config::units::Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)).to_string()
}

/// An I/O error as a short phrase: "connection refused", "connection reset".
fn io_reason(err: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        _ => {
            let text = err.to_string();
            // "Broken pipe (os error 32)" → "broken pipe"
            let text = text.split(" (os error").next().unwrap_or(&text);
            let mut chars = text.chars();
            chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
    }
}

fn http_reason(err: &HttpError) -> String {
    match err {
        HttpError::Connect { source, .. } => format!("connect: {}", io_reason(source)),
        HttpError::Resolve { host, message } => format!("cannot resolve {host}: {message}"),
        HttpError::Tls { message, .. } => format!("TLS: {message}"),
        HttpError::Timeout { timeout, .. } | HttpError::TimeoutAt { timeout, .. } => {
            format!("no answer within {}", show_duration(*timeout))
        }
        HttpError::Protocol { message, .. } => message.clone(),
        HttpError::BadUrl(message) => message.clone(),
    }
}

/// Splits `host:port` (`[::1]:80` too).
fn host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address.rsplit_once(':').ok_or_else(|| format!("`{address}` is not host:port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("`{address}` has a bad port"))?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    Ok((host.to_owned(), port))
}

async fn connect(address: &str) -> Result<tokio::net::TcpStream, String> {
    let (host, port) = host_port(address)?;
    let socket = windlass_http::resolve(&host, port).await.map_err(|err| http_reason(&err))?;
    tokio::net::TcpStream::connect(socket).await.map_err(|err| format!("connect: {}", io_reason(&err)))
}

/// Every way a secret URL's password could appear in a message, hidden.
fn redact(text: &str, url: &SecretText) -> String {
    let mut out = text.replace(url.expose(), "<url>");
    if let Some(password) = password_of(url.expose()) {
        out = out.replace(&password, "***");
        let decoded = percent_decode(&password);
        if !decoded.is_empty() {
            out = out.replace(&decoded, "***");
        }
    }
    out
}

/// The password in `scheme://user:password@host...`, as written.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_owned())
}

use windlass_http::percent::decode as percent_decode;

async fn postgres(url: &SecretText, started: Instant) -> Outcome {
    use sqlx::Connection;
    let options: sqlx::postgres::PgConnectOptions = match url.expose().parse() {
        Ok(options) => options,
        Err(err) => return Outcome::fail(redact(&format!("bad PostgreSQL URL: {err}"), url), started.elapsed()),
    };
    let mut connection = match sqlx::PgConnection::connect_with(&options).await {
        Ok(connection) => connection,
        Err(err) => return Outcome::fail(redact(&format!("connect: {}", sql_reason(&err)), url), started.elapsed()),
    };
    let answer: Result<i32, sqlx::Error> = sqlx::query_scalar("SELECT 1").fetch_one(&mut connection).await;
    let latency = started.elapsed();
    let _ = connection.close().await;
    match answer {
        Ok(1) => Outcome::pass(format!("SELECT 1 in {} ms", latency.as_millis()), latency),
        Ok(other) => Outcome::fail(format!("SELECT 1 returned {other}"), latency),
        Err(err) => Outcome::fail(redact(&format!("SELECT 1: {}", sql_reason(&err)), url), latency),
    }
}

fn sql_reason(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Io(io) => io_reason(io),
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// `redis://[user[:password]@]host[:port][/db]` → (host:port, user, password).
fn redis_parts(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    if url.starts_with("rediss://") {
        return Err("TLS Redis (rediss://) is not supported".into());
    }
    let rest = url.strip_prefix("redis://").ok_or("the URL does not start with redis://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority),
    };
    let (user, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, password)) => {
            ((!user.is_empty()).then(|| percent_decode(user)), (!password.is_empty()).then(|| percent_decode(password)))
        }
        None => (None, None),
    };
    let host = if host.is_empty() { "127.0.0.1:6379".to_owned() } else { host.to_owned() };
    let address = if host.starts_with('[') && !host.contains("]:") || !host.starts_with('[') && !host.contains(':') {
        format!("{host}:6379")
    } else {
        host
    };
    // `redis://password@host` is how some write a password alone.
    let (user, password) = match (user, password) {
        (Some(user), None) => (None, Some(user)),
        pair => pair,
    };
    Ok((address, user, password))
}

fn resp_command(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn redis(url: &SecretText) -> Result<(), String> {
    let (address, user, password) = redis_parts(url.expose()).map_err(|problem| redact(&problem, url))?;
    let stream = connect(&address).await?;
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let mut exchange = async |words: &[&str], line: &mut String| -> Result<(), String> {
        stream.get_mut().write_all(&resp_command(words)).await.map_err(|e| format!("send: {}", io_reason(&e)))?;
        line.clear();
        let mut limited = (&mut stream).take(4096);
        limited.read_line(line).await.map_err(|e| format!("read: {}", io_reason(&e)))?;
        if line.is_empty() {
            return Err("the server closed the connection".into());
        }
        Ok(())
    };
    if let Some(password) = &password {
        let mut words = vec!["AUTH"];
        if let Some(user) = &user {
            words.push(user);
        }
        words.push(password);
        exchange(&words, &mut line).await?;
        if !line.starts_with("+OK") {
            return Err(redact(&format!("AUTH refused: {}", line.trim_end().trim_start_matches('-')), url));
        }
    }
    exchange(&["PING"], &mut line).await?;
    match line.trim_end() {
        "+PONG" => Ok(()),
        other => Err(redact(&format!("PING answered {other}"), url)),
    }
}

async fn run_command(
    command: &str,
    variables: &std::collections::BTreeMap<String, super::SecretText>,
    timeout: Duration,
    started: Instant,
    redactor: &Redactor,
) -> Outcome {
    let mut env: std::collections::BTreeMap<String, String> = ["PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), std::env::var(name).ok()?)))
        .collect();
    env.extend(variables.iter().map(|(name, value)| (name.clone(), value.expose().to_owned())));
    let spawned = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => return Outcome::fail(format!("cannot start /bin/sh: {err}"), started.elapsed()),
    };
    // Scoped: reads one stream of the probe's command, ends with it.
    #[allow(clippy::disallowed_methods)]
    let read = |stream: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
        tokio::spawn(async move {
            let mut bytes = Vec::new();
            if let Some(mut stream) = stream {
                let _ = (&mut stream).take(1 << 20).read_to_end(&mut bytes).await;
            }
            bytes
        })
    };
    let stdout = read(child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>));
    let stderr = read(child.stderr.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>));
    let pid = child.id();
    // The probe's own timeout is the outer bound; stop a little earlier to kill and report.
    let limit = timeout.saturating_sub(Duration::from_millis(50)).max(Duration::from_millis(1));
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => Some(status),
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.wait().await;
            None
        }
    };
    let latency = started.elapsed();
    let collect = async |task: tokio::task::JoinHandle<Vec<u8>>| {
        tokio::time::timeout(Duration::from_millis(20), task).await.ok().and_then(Result::ok).unwrap_or_default()
    };
    // Redacted whole, before a line is picked or cut: a secret of several lines, or one that a
    // cut at 200 characters would split, is hidden all the same.
    let (out, err) = (redactor.redact_bytes(&collect(stdout).await), redactor.redact_bytes(&collect(stderr).await));
    let last = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes).lines().rev().map(str::trim).find(|l| !l.is_empty()).map(|l| {
            let mut short: String = l.chars().take(200).collect();
            if short.len() < l.len() {
                short.push('…');
            }
            short
        })
    };
    let (last_out, last_err) = (last(&out), last(&err));
    let with = |head: String, line: Option<String>| match line {
        Some(line) => format!("{head}: {line}"),
        None => head,
    };
    match status {
        None => Outcome::fail(
            with(format!("timed out after {} (killed)", show_duration(timeout)), last_err.or(last_out)),
            latency,
        ),
        Some(Err(err)) => Outcome::fail(format!("cannot wait for the command: {err}"), latency),
        Some(Ok(status)) if status.success() => Outcome::pass(with("exit 0".into(), last_out.or(last_err)), latency),
        Some(Ok(status)) => {
            let head = match status.code() {
                Some(code) => format!("exit code {code}"),
                None => "killed by a signal".into(),
            };
            Outcome::fail(with(head, last_err.or(last_out)), latency)
        }
    }
}

fn kill_group(pid: u32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: killpg only sends a signal; the group id is the child's pid, set with
    // process_group(0) at spawn, and the child has not been reaped yet, so it is still ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::killpg(pid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn redis_urls_and_secrets_in_messages() {
        assert_eq!(redis_parts("redis://127.0.0.1:6380/0").unwrap(), ("127.0.0.1:6380".into(), None, None));
        assert_eq!(redis_parts("redis://:s%40cret@cache").unwrap(), ("cache:6379".into(), None, Some("s@cret".into())));
        assert_eq!(
            redis_parts("redis://app:pw@[::1]:7000").unwrap(),
            ("[::1]:7000".into(), Some("app".into()), Some("pw".into()))
        );
        assert!(redis_parts("rediss://x").unwrap_err().contains("not supported"));
        let url = SecretText::new("postgres://app:s%40cret@db/x");
        assert_eq!(redact("failed for postgres://app:s%40cret@db/x with s@cret", &url), "failed for <url> with ***");
        assert_eq!(format!("{url:?}"), "SecretText(…)");
        assert_eq!(host_port("[::1]:80").unwrap(), ("::1".into(), 80));
        assert_eq!(resp_command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
    }
}
