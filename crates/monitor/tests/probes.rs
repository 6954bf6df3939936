//! Probes against real targets: the demo service (with faults switched at run time), an HTTPS
//! server with certificates made by the real `openssl`, real TCP ports, the test PostgreSQL, real
//! `redis-server`s, real commands, and the demo's real `/metrics`. Results are driven one check at
//! a time through the prober with a manual clock, so thresholds are counted exactly.

// Tests: their tasks live as long as the test.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use windlass_config::probes::{CompareOp, MetricExpr, MetricRule};
use windlass_config::template::Setting;
use windlass_monitor::probe::{
    Health, HttpTarget, MetricsTarget, Outcome, Probe, ProbeExpect, ProbeJson, ProbeSpec, Prober, SecretText, Target,
    Transition, probes_for,
};
use windlass_store::{Clock, ManualClock};
use windlass_testkit::http;
use windlass_testkit::process::{Process, loopback_listener};

fn clock() -> ManualClock {
    ManualClock::new("2026-11-29T10:00:00Z".parse().unwrap())
}

async fn run_once(spec: ProbeSpec) -> Outcome {
    Probe::new(spec).unwrap().run(Timestamp::now()).await
}

struct Demo {
    _process: Process,
    main: SocketAddr,
    admin: SocketAddr,
}

fn start_demo() -> Demo {
    let (main, admin) = (loopback_listener(), loopback_listener());
    let mut command = Command::new(windlass_testkit::workspace_bin("windlass-demo"));
    command.env_clear();
    let process = Process::start_with_listeners(command, &[&main, &admin]);
    let main_address = process.wait_for_address("listening on");
    let admin_address = process.wait_for_address("admin listening on");
    Demo { _process: process, main: main_address, admin: admin_address }
}

impl Demo {
    async fn faults(&self, json: &str) {
        let reply =
            http::request("PUT", self.admin, "/faults", &[("content-type", "application/json")], json).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
    }

    async fn post(&self, path: &str, times: usize) {
        for _ in 0..times {
            assert!(http::request("POST", self.main, path, &[], "").await.unwrap().status < 500);
        }
    }
}

/// One check through the prober, after moving the clock by the probe's interval.
async fn step(prober: &Prober, clock: &ManualClock, name: &str) -> (Outcome, Option<Transition>) {
    clock.advance(Duration::from_secs(30));
    prober.check_now(name).await.unwrap()
}

#[tokio::test]
async fn an_http_probe_follows_the_demo_down_after_n_failures_and_up_after_m_successes() {
    let demo = start_demo();
    // A name under .localhost reaches loopback without the system resolver.
    let mut spec = ProbeSpec::http("api", format!("http://demo.localhost:{}/health", demo.main.port()));
    if let Target::Http(http) = &mut spec.target {
        http.expect.json = Some(ProbeJson { pointer: "/status".into(), equals: Some("ok".into()), exists: None });
    }
    (spec.failure_threshold, spec.success_threshold) = (3, 2);
    spec.service = Some("api".into());
    let clock = clock();
    let (prober, mut events) = Prober::new(vec![spec], Arc::new(clock.clone())).unwrap();

    let (first, change) = step(&prober, &clock, "api").await;
    assert!(first.ok, "{first:?}");
    assert!(first.reason.starts_with("status 200 in "), "{}", first.reason);
    assert_eq!(change, None, "one success of two");
    let (_, change) = step(&prober, &clock, "api").await;
    assert_eq!(change.map(|t| (t.from, t.to)), Some((Health::Unknown, Health::Up)));

    demo.faults(r#"{"health_failing": true}"#).await;
    let (failed, change) = step(&prober, &clock, "api").await;
    assert_eq!((failed.ok, failed.reason.as_str(), change), (false, "status 503, expected 2xx", None));
    let (_, change) = step(&prober, &clock, "api").await;
    assert_eq!(change, None, "two failures of three");
    demo.faults(r#"{"health_failing": false, "refuse_connections": true}"#).await;
    let (refused, change) = step(&prober, &clock, "api").await;
    assert_eq!(refused.reason, "connect: connection refused");
    let down = change.expect("Down after exactly three failures");
    assert_eq!((down.from, down.to, down.after), (Health::Up, Health::Down, 3));
    assert_eq!(down.reason, "connect: connection refused");
    assert_eq!(down.at, clock.now());
    assert_eq!(down.service.as_deref(), Some("api"));
    let status = prober.status("api").unwrap();
    assert_eq!((status.health, status.consecutive_failures, status.since), (Health::Down, 3, Some(clock.now())));

    demo.faults(r#"{"refuse_connections": false}"#).await;
    let (_, change) = step(&prober, &clock, "api").await;
    assert_eq!(change, None, "one success of two");
    let (_, change) = step(&prober, &clock, "api").await;
    let up = change.expect("Up after exactly two successes");
    assert_eq!((up.from, up.to, up.after), (Health::Down, Health::Up, 2));

    let sent: Vec<(Health, Health)> = std::iter::from_fn(|| events.try_recv().ok()).map(|t| (t.from, t.to)).collect();
    assert_eq!(sent, [(Health::Unknown, Health::Up), (Health::Up, Health::Down), (Health::Down, Health::Up)]);
    assert_eq!(prober.status("api").unwrap().checks, 7);
}

#[tokio::test]
async fn http_expectations_name_what_was_wrong() {
    let demo = start_demo();
    let url = format!("http://{}/version", demo.main);
    let with = |expect: ProbeExpect| {
        let mut spec = ProbeSpec::http("version", url.clone());
        if let Target::Http(http) = &mut spec.target {
            http.expect = expect;
        }
        spec
    };
    let ok =
        run_once(with(ProbeExpect { body_regex: Some(r#""version":\s*"dev""#.into()), ..Default::default() })).await;
    assert!(ok.ok, "{ok:?}");
    let status = run_once(with(ProbeExpect { status: Some(201), ..Default::default() })).await;
    assert_eq!(status.reason, "status 200, expected 201");
    let contains = run_once(with(ProbeExpect { body_contains: Some("nope".into()), ..Default::default() })).await;
    assert_eq!(contains.reason, "the body does not contain \"nope\"");
    let regex = run_once(with(ProbeExpect { body_regex: Some("^v2".into()), ..Default::default() })).await;
    assert_eq!(regex.reason, "the body does not match /^v2/");
    let json = ProbeJson { pointer: "/version".into(), equals: Some("v9".into()), exists: None };
    let wrong = run_once(with(ProbeExpect { json: Some(json), ..Default::default() })).await;
    assert_eq!(wrong.reason, "/version is \"dev\", expected \"v9\"");
    let json = ProbeJson { pointer: "/database".into(), equals: None, exists: Some(true) };
    let absent = run_once(with(ProbeExpect { json: Some(json), ..Default::default() })).await;
    assert_eq!(absent.reason, "the JSON body has no /database");

    demo.faults(r#"{"latency_ms": 300}"#).await;
    let slow =
        ProbeExpect { max_latency: Some(windlass_config::units::Duration::from_millis(100)), ..Default::default() };
    let slow = run_once(with(slow)).await;
    assert!(!slow.ok);
    assert!(slow.reason.starts_with("took ") && slow.reason.ends_with("expected at most 100 ms"), "{}", slow.reason);
    let mut timing_out = with(ProbeExpect::default());
    timing_out.timeout = Duration::from_millis(100);
    assert_eq!(run_once(timing_out).await.reason, "no answer within 100ms");
}

fn openssl(args: &[&str], dir: &Path) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A CA (`<name>-ca.pem`) made by the real openssl.
fn make_ca(dir: &Path, name: &str) {
    let key = format!("{name}-ca.key");
    let pem = format!("{name}-ca.pem");
    let subject = format!("/CN={name}-test-ca");
    openssl(
        &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "90"]
            .into_iter()
            .chain(["-subj", &subject, "-keyout", &key, "-out", &pem])
            .collect::<Vec<_>>(),
        dir,
    );
}

/// A leaf for `probe.localhost` and 127.0.0.1, valid for `days`, signed by the `good` CA.
fn tls_server_config(dir: &Path, days: u32) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    make_ca(dir, "good");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        &["req"]
            .into_iter()
            .chain(ec)
            .chain(["-subj", "/CN=probe.localhost", "-keyout", "leaf.key", "-out", "leaf.csr"])
            .collect::<Vec<_>>(),
        dir,
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:probe.localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let days = days.to_string();
    openssl(
        &["x509", "-req", "-in", "leaf.csr", "-CA", "good-ca.pem", "-CAkey", "good-ca.key", "-CAcreateserial"]
            .into_iter()
            .chain(["-days", &days, "-extfile", "leaf.ext", "-out", "leaf.pem"])
            .collect::<Vec<_>>(),
        dir,
    );
    let chain = rustls_pki_types::CertificateDer::pem_file_iter(dir.join("leaf.pem"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// The leaf's notAfter as openssl prints it (`notAfter=Dec 29 10:00:00 2026 GMT`).
fn openssl_not_after(dir: &Path) -> Timestamp {
    let output = Command::new("openssl")
        .args(["x509", "-in", "leaf.pem", "-noout", "-enddate", "-dateopt", "iso_8601"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // notAfter=2026-12-29 10:00:00Z
    let text = String::from_utf8(output.stdout).unwrap();
    let value = text.trim().strip_prefix("notAfter=").unwrap().replace(' ', "T");
    value.parse().unwrap_or_else(|err| panic!("{value}: {err}"))
}

fn https_spec(url: String, ca: PathBuf) -> ProbeSpec {
    let mut spec = ProbeSpec::http("site", url);
    if let Target::Http(http) = &mut spec.target {
        http.ca_file = Some(ca);
    }
    spec
}

#[tokio::test]
async fn https_probes_read_the_certificates_days_left_and_refuse_an_untrusted_one() {
    use windlass_testkit::receiver::{Answer, serve};
    let dir = windlass_testkit::tempdir();
    let server = serve(vec![Answer::Status(200, &[])], Some(tls_server_config(dir.path(), 30))).await;
    let url = format!("https://probe.localhost:{}/health", server.address.port());
    let not_after = openssl_not_after(dir.path());
    let probe = Probe::new(https_spec(url.clone(), dir.path().join("good-ca.pem"))).unwrap();

    let now = Timestamp::now();
    let fresh = probe.run(now).await;
    assert!(fresh.ok, "{fresh:?}");
    assert_eq!(fresh.cert_not_after, Some(not_after), "notAfter as openssl reads it");
    assert_eq!(fresh.cert_days_left, Some(not_after.duration_since(now).as_secs() / 86_400));
    assert!(matches!(fresh.cert_days_left, Some(29 | 30)), "{fresh:?}");

    // Five days and an hour before the end, as the clock says.
    let late = not_after - jiff::SignedDuration::from_hours(5 * 24 + 1);
    let expiring = probe.run(late).await;
    assert!(!expiring.ok);
    assert_eq!(expiring.reason, "certificate expires in 5 days, expected at least 14");
    assert_eq!(expiring.cert_days_left, Some(5));

    make_ca(dir.path(), "other");
    let untrusted = run_once(https_spec(url, dir.path().join("other-ca.pem"))).await;
    assert!(!untrusted.ok);
    assert!(untrusted.reason.starts_with("TLS: ") && untrusted.reason.contains("certificate"), "{}", untrusted.reason);
}

#[tokio::test]
async fn unresolvable_names_and_closed_ports_fail_with_a_clear_reason() {
    let unresolvable = run_once(ProbeSpec::http("x", "http://no-such-host.invalid/health")).await;
    assert!(!unresolvable.ok);
    assert!(unresolvable.reason.starts_with("cannot resolve no-such-host.invalid"), "{}", unresolvable.reason);
    let tcp = |address: String| ProbeSpec::new("tcp", Target::Tcp { address });
    let unresolvable = run_once(tcp("no-such-host.invalid:5432".into())).await;
    assert!(unresolvable.reason.starts_with("cannot resolve no-such-host.invalid"), "{}", unresolvable.reason);

    let open = loopback_listener();
    let open_port = open.local_addr().unwrap().port();
    let ok = run_once(tcp(format!("localhost:{open_port}"))).await;
    assert!(ok.ok && ok.reason.starts_with("connected in "), "{ok:?}");
    let closed_port = loopback_listener().local_addr().unwrap().port();
    let closed = run_once(tcp(format!("127.0.0.1:{closed_port}"))).await;
    assert_eq!((closed.ok, closed.reason.as_str()), (false, "connect: connection refused"));
}

#[tokio::test]
async fn postgres_probes_run_select_1_and_never_show_the_password() {
    let database = windlass_testkit::postgres::TestDatabase::create().await;
    let ok = run_once(ProbeSpec::new("db", Target::Postgres { url: SecretText::new(database.url.clone()) })).await;
    assert!(ok.ok && ok.reason.starts_with("SELECT 1 in "), "{ok:?}");

    // The test server trusts every local user, so a bad password alone cannot fail: the URL
    // names a user that does not exist, with a password that must not appear anywhere.
    let password = "hunter2-s3cret";
    let bad = database.url.replacen("://postgres@", &format!("://nobody_probe:{password}@"), 1);
    assert!(bad.contains(password), "{bad}");
    let spec = ProbeSpec::new("db", Target::Postgres { url: SecretText::new(bad) });
    assert!(!format!("{spec:?}").contains(password));
    let failed = run_once(spec).await;
    assert!(!failed.ok);
    assert!(failed.reason.contains("nobody_probe"), "{}", failed.reason);
    assert!(!failed.reason.contains(password), "{}", failed.reason);

    let closed_port = loopback_listener().local_addr().unwrap().port();
    let url = SecretText::new(format!("postgresql://app:{password}@127.0.0.1:{closed_port}/x"));
    let refused = run_once(ProbeSpec::new("db", Target::Postgres { url })).await;
    assert!(refused.reason.contains("connection refused") && !refused.reason.contains(password), "{}", refused.reason);
}

#[tokio::test]
async fn redis_probes_ping_and_authenticate_first_when_the_url_has_a_password() {
    let open = windlass_testkit::redis::start(None);
    let redis = |url: String| ProbeSpec::new("cache", Target::Redis { url: SecretText::new(url) });
    let pong = run_once(redis(open.url())).await;
    assert_eq!((pong.ok, pong.reason.as_str()), (true, "PONG"));

    let guarded = windlass_testkit::redis::start(Some("s3cret-pass"));
    let pong = run_once(redis(guarded.url())).await;
    assert!(pong.ok, "{pong:?}");
    let no_auth = run_once(redis(format!("redis://{}", guarded.address))).await;
    assert_eq!((no_auth.ok, no_auth.reason.as_str()), (false, "PING answered -NOAUTH Authentication required."));
    let wrong = run_once(redis(format!("redis://:wrong-pass-123@{}", guarded.address))).await;
    assert!(!wrong.ok);
    assert!(wrong.reason.starts_with("AUTH refused: WRONGPASS"), "{}", wrong.reason);
    assert!(!wrong.reason.contains("wrong-pass-123"), "{}", wrong.reason);
}

#[tokio::test]
async fn command_probes_pass_on_exit_0_and_are_killed_on_timeout() {
    let command =
        |command: &str| ProbeSpec::new("cmd", Target::Command { command: command.into(), env: Default::default() });
    let ok = run_once(command("echo checking; echo all good")).await;
    assert_eq!((ok.ok, ok.reason.as_str()), (true, "exit 0: all good"));
    let failed = run_once(command("echo working; echo 'disk 97% full' >&2; exit 3")).await;
    assert_eq!((failed.ok, failed.reason.as_str()), (false, "exit code 3: disk 97% full"));

    let dir = windlass_testkit::tempdir();
    let pid_file = dir.path().join("pid");
    let mut slow = command(&format!("echo started; sleep 30 & echo $! > {}; wait", pid_file.display()));
    slow.timeout = Duration::from_millis(500);
    let timed_out = run_once(slow).await;
    assert_eq!((timed_out.ok, timed_out.reason.as_str()), (false, "timed out after 500ms (killed): started"));
    // What the command started was killed with it.
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    let gone = (0..500).any(|_| {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let dead = state.is_empty() || state.split(") ").nth(1).is_some_and(|s| s.starts_with('Z'));
        if !dead {
            std::thread::sleep(Duration::from_millis(10));
        }
        dead
    });
    assert!(gone, "the command's `sleep` (pid {pid}) still runs");
}

fn rule(expr: &str, op: CompareOp, value: f64, message: Option<&str>) -> MetricRule {
    MetricRule { expr: MetricExpr::parse(expr).unwrap(), op, value, message: message.map(str::to_owned) }
}

fn metrics_spec(name: &str, demo: &Demo, rules: Vec<MetricRule>) -> ProbeSpec {
    let url = format!("http://{}/metrics", demo.main);
    let mut spec =
        ProbeSpec::new(name, Target::Metrics(MetricsTarget { url, headers: Vec::new(), ca_file: None, rules }));
    (spec.failure_threshold, spec.interval) = (1, Duration::from_secs(300));
    spec.severity = windlass_monitor::probe::AlertSeverity::Business;
    spec
}

#[tokio::test]
async fn metrics_rules_on_the_demos_page_catch_failing_payments_and_stalled_emails() {
    let demo = start_demo();
    let payments = rule(
        r#"ratio(demo_payments_total{result="success"}, demo_payments_total)"#,
        CompareOp::Less,
        0.998,
        Some("payment success below 99.8%"),
    );
    let emails = rule("increase(demo_emails_sent_total[10m])", CompareOp::Equal, 0.0, Some("email sends stalled"));
    let specs = vec![metrics_spec("payments", &demo, vec![payments]), metrics_spec("emails", &demo, vec![emails])];
    let clock = clock();
    let (prober, _events) = Prober::new(specs, Arc::new(clock.clone())).unwrap();
    let five_minutes = || clock.advance(Duration::from_secs(300));

    // 10:00 — payments all succeed; emails have no 10 minutes of history yet.
    demo.post("/payments", 10).await;
    demo.post("/emails", 2).await;
    let (paid, _) = prober.check_now("payments").await.unwrap();
    assert!(paid.ok, "{paid:?}");
    assert!(paid.reason.contains("= 1"), "{}", paid.reason);
    let (waiting, _) = prober.check_now("emails").await.unwrap();
    assert!(waiting.ok && waiting.reason.contains("waiting"), "{waiting:?}");

    // 10:05 one more email; 10:10 the window is full and one email was sent in it.
    five_minutes();
    demo.post("/emails", 1).await;
    assert!(prober.check_now("emails").await.unwrap().0.ok);
    five_minutes();
    let (sending, _) = prober.check_now("emails").await.unwrap();
    assert!(sending.ok, "{sending:?}");

    // 10:20 nothing sent since 10:10: stalled.
    five_minutes();
    five_minutes();
    let (stalled, change) = prober.check_now("emails").await.unwrap();
    assert_eq!((stalled.ok, stalled.reason.as_str()), (false, "email sends stalled: 0 == 0"));
    let down = change.unwrap();
    assert_eq!((down.to, down.severity), (Health::Down, windlass_monitor::probe::AlertSeverity::Business));

    // One payment in ten fails from now: 19 of 20 succeeded overall.
    demo.faults(r#"{"payment_failure_rate": 0.1}"#).await;
    demo.post("/payments", 10).await;
    let (failing, change) = prober.check_now("payments").await.unwrap();
    assert_eq!((failing.ok, failing.reason.as_str()), (false, "payment success below 99.8%: 0.95 < 0.998"));
    assert_eq!(change.map(|t| t.to), Some(Health::Down));

    // Emails flow again: the stalled rule clears.
    demo.post("/emails", 1).await;
    five_minutes();
    let (flowing, change) = prober.check_now("emails").await.unwrap();
    assert!(flowing.ok, "{flowing:?}");
    assert_eq!(change.map(|t| t.to), Some(Health::Up));
}

/// A configured command probe gets the variables it references in its environment, never in
/// its text: a hostile value is printed as it is and runs nothing; an unset one leaves the probe
/// out, named.
#[tokio::test]
async fn command_probes_see_variables_as_data() {
    let dir = windlass_testkit::tempdir();
    let out = dir.path().join("out");
    let marker = dir.path().join("pwned");
    let text = format!(
        "[project]\nname = \"shop\"\n\n[environments.production]\n\n[env]\nGREETING = {{ required = true }}\n\n\
         [probes.greet]\ntype = \"command\"\ncommand = '''printf '%s' \"${{GREETING}}\" > {}'''\n",
        out.display()
    );
    let parsed = windlass_config::parse(&windlass_config::Source::new("windlass.toml", text));
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let value = format!("hi; touch {m} & $(touch {m}) `touch {m}` '\"\ntouch {m}", m = marker.display());
    let resolve = |setting: &Setting| match setting {
        Setting::Text(template) => {
            template.render(|name| (name == "GREETING").then(|| value.clone())).map_err(String::from)
        }
        Setting::Secret(name) => Err(format!("no {name}")),
    };
    let list = probes_for(&parsed.config, "production", &BTreeMap::new(), &resolve);
    assert!(list.problems.is_empty(), "{:?}", list.problems);
    let Target::Command { command, .. } = &list.probes[0].target else { panic!("{:?}", list.probes[0]) };
    assert!(!command.contains("touch"), "the value is not in the command's text: {command}");
    assert!(!format!("{:?}", list.probes[0]).contains("touch"), "nor in its Debug");
    let outcome = run_once(list.probes[0].clone()).await;
    assert!(outcome.ok, "{}", outcome.reason);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), value);
    assert!(!marker.exists(), "the value ran as shell code");

    let nothing_set = |setting: &Setting| match setting {
        Setting::Text(template) => template.render(|_| None).map_err(String::from),
        Setting::Secret(name) => Err(format!("no {name}")),
    };
    let unset = probes_for(&parsed.config, "production", &BTreeMap::new(), &nothing_set);
    assert_eq!(unset.problems, ["probe `greet`: variable `GREETING` is not set"]);
}

#[tokio::test]
async fn the_timer_loop_runs_every_probe_and_reports_changes() {
    let open = loopback_listener();
    let mut up = ProbeSpec::new("port", Target::Tcp { address: open.local_addr().unwrap().to_string() });
    let mut down =
        ProbeSpec::new("broken", Target::Command { command: "echo broken; exit 1".into(), env: Default::default() });
    for spec in [&mut up, &mut down] {
        (spec.interval, spec.timeout, spec.failure_threshold) = (Duration::from_millis(200), Duration::from_secs(1), 2);
    }
    // Many more probes on the same loop, far from due.
    let mut specs: Vec<ProbeSpec> = (0..2000)
        .map(|i| {
            let mut spec = ProbeSpec::new(format!("idle-{i}"), Target::Tcp { address: "127.0.0.1:9".into() });
            spec.interval = Duration::from_secs(3600);
            spec
        })
        .collect();
    specs.extend([up, down]);
    let (prober, mut events) = Prober::new(specs, Arc::new(windlass_store::SystemClock)).unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runner = prober.clone();
    let task = tokio::spawn(async move { runner.run(stopped).await });

    let mut seen = BTreeMap::new();
    while seen.len() < 2 {
        let change =
            tokio::time::timeout(Duration::from_secs(30), events.recv()).await.expect("changes arrive").unwrap();
        seen.insert(change.probe.clone(), (change.to, change.reason));
    }
    assert_eq!(seen["port"].0, Health::Up);
    assert_eq!(seen["broken"], (Health::Down, "exit code 1: broken".to_owned()));
    stop.send(true).unwrap();
    task.await.unwrap();
    let broken = prober.status("broken").unwrap();
    assert!(broken.checks >= 2 && broken.consecutive_failures >= 2, "{broken:?}");
    assert_eq!(prober.statuses().len(), 2002);
    let twice = vec![ProbeSpec::http("a", "http://x/"), ProbeSpec::http("a", "http://y/")];
    assert_eq!(Prober::new(twice, Arc::new(clock())).unwrap_err().to_string(), "two probes are named `a`");
}

#[test]
fn services_get_health_probes_and_configured_probes_are_resolved() {
    let text = r#"
[project]
name = "shop"

[environments.production]
[environments.staging]

[env]
DATABASE_URL = { secret = true }
API_HOST = { default = "127.0.0.1:7000" }

[services.api]
run = "api"
health = { path = "/ready", interval = "5s", timeout = "2s", healthy_after = 2, unhealthy_after = 4 }
route = { host = "api.shop.localhost" }

[services.web]
run = "web"
health = {}
route = [{ host = "shop.localhost" }, { host = "*.shop.localhost" }, { host = "docs.shop.localhost", path = "/docs" }]

[services.worker]
run = "worker"

[probes.db]
type = "postgres"
url = { secret = "DATABASE_URL" }
environment = "production"

[probes.api-port]
type = "tcp"
address = "${API_HOST}"

[probes.staging-only]
type = "command"
command = "true"
environment = "staging"
"#;
    let parsed = windlass_config::parse(&windlass_config::Source::new("windlass.toml", text));
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let config = parsed.config;
    let values = BTreeMap::from([("DATABASE_URL", "postgres://app:pw@db/shop"), ("API_HOST", "127.0.0.1:7000")]);
    let resolve = |setting: &Setting| match setting {
        Setting::Text(template) => {
            template.render(|name| values.get(name).map(|v| (*v).to_owned())).map_err(String::from)
        }
        Setting::Secret(name) => values.get(name.as_str()).map(|v| (*v).to_owned()).ok_or_else(|| format!("no {name}")),
    };
    let instances = BTreeMap::from([(
        "api".to_owned(),
        vec!["127.0.0.1:9001".parse().unwrap(), "127.0.0.1:9002".parse().unwrap()],
    )]);
    let list = probes_for(&config, "production", &instances, &resolve);
    assert!(list.problems.is_empty(), "{:?}", list.problems);
    let names: Vec<&str> = list.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["db", "api-port", "health/api/127.0.0.1:9001", "health/api/127.0.0.1:9002", "health/web/shop.localhost"]
    );
    let api = &list.probes[2];
    let Target::Http(HttpTarget { url, .. }) = &api.target else { panic!("{api:?}") };
    assert_eq!(url, "http://127.0.0.1:9001/ready");
    assert_eq!((api.failure_threshold, api.success_threshold, api.timeout), (4, 2, Duration::from_secs(2)));
    assert_eq!((api.service.as_deref(), api.environment.as_deref()), (Some("api"), Some("production")));
    let Target::Http(HttpTarget { url, .. }) = &list.probes[4].target else { panic!() };
    assert_eq!(url, "http://shop.localhost:8080/health", "through the edge, by the route's host");
    let Target::Tcp { address } = &list.probes[1].target else { panic!() };
    assert_eq!(address, "127.0.0.1:7000");
    assert!(!format!("{:?}", list.probes[0]).contains("pw@"), "the database URL stays hidden");

    let nothing_set = |setting: &Setting| match setting {
        Setting::Text(template) => template.render(|_| None).map_err(String::from),
        Setting::Secret(name) => Err(format!("secret `{name}` has no value")),
    };
    let staging = probes_for(&config, "staging", &BTreeMap::new(), &nothing_set);
    assert_eq!(staging.problems, ["probe `api-port`: variable `API_HOST` is not set"]);
    let names: Vec<&str> = staging.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["staging-only", "health/api/api.shop.localhost", "health/web/shop.localhost"]);
}

#[tokio::test]
async fn a_command_probes_reason_never_shows_a_secret_whole_split_or_cut() {
    let token = "tok-3f9a1c77e2b54d08";
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
    let redactor = windlass_secrets::Redactor::new([("API_TOKEN", token), ("TLS_KEY", key)]);
    // The last line is the secret; the last line is one line of a multi-line secret; a long last
    // line that the 200-character cut would split in the middle of the secret.
    let long = format!("{}{token}", "x".repeat(190));
    let commands = [
        format!("echo 'checking'; echo 'auth failed for {token}' >&2; exit 1"),
        format!("printf '%s' '{key}'; exit 2"),
        format!("echo '{long}'; exit 3"),
    ];
    let specs: Vec<ProbeSpec> = commands
        .iter()
        .enumerate()
        .map(|(i, command)| {
            let mut spec = ProbeSpec::new(
                format!("cmd-{i}"),
                Target::Command { command: command.clone(), env: Default::default() },
            );
            spec.failure_threshold = 1;
            spec
        })
        .collect();
    let clock = clock();
    let (prober, _events) = Prober::redacting(specs, Arc::new(clock.clone()), redactor).unwrap();
    let leaks = |text: &str| {
        text.contains(token)
            || text.contains(&token[..8])
            || key.lines().any(|line| text.contains(line))
            || text.contains("MIIEvQIBADANBgkq")
    };
    for i in 0..3 {
        let name = format!("cmd-{i}");
        let (outcome, change) = step(&prober, &clock, &name).await;
        assert!(!outcome.ok);
        assert!(!leaks(&outcome.reason), "{name}: {}", outcome.reason);
        let change = change.expect("down at the first failure");
        assert!(!leaks(&change.reason), "{name}: {}", change.reason);
        assert!(!leaks(&prober.status(&name).unwrap().last_reason));
    }
    assert_eq!(prober.status("cmd-0").unwrap().last_reason, "exit code 1: auth failed for [REDACTED:API_TOKEN]");
}
