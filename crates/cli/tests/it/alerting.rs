//! The monitor end to end, through the real binaries: a probe goes down, the alert engine routes
//! it to Slack and PagerDuty (real local servers that check each vendor's payload rules), and an
//! acknowledgement made in PagerDuty comes back through its signed webhook and reaches Slack.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use windlass_testkit::receiver::{Answer, PagerDutyEvents, serve, slack_shape};

use crate::platform::{Platform, config, demo};

const PD_WEBHOOK_SECRET: &str = "pd-webhook-secret-for-windlass-tests";
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789abcdefABCDEF";

/// What PagerDuty's v3 webhook sends when someone acknowledges the incident `incident_key`, just
/// now (a webhook event is acted on only within minutes of its `occurred_at`).
pub(crate) fn acknowledged_in_pagerduty(incident_key: &str) -> Vec<u8> {
    acknowledged_in_pagerduty_at(incident_key, "01DEN1HNLBC1VITK192ETJ1MPJ", jiff::Timestamp::now())
}

/// [`acknowledged_in_pagerduty`] as event `event_id`, occurred at `occurred_at`.
pub(crate) fn acknowledged_in_pagerduty_at(
    incident_key: &str,
    event_id: &str,
    occurred_at: jiff::Timestamp,
) -> Vec<u8> {
    json!({ "event": {
        "id": event_id,
        "event_type": "incident.acknowledged",
        "resource_type": "incident",
        "occurred_at": occurred_at.to_string(),
        "agent": { "id": "PXPGF42", "summary": "Alice Oncall", "type": "user_reference" },
        "data": { "id": "PGR0VU2", "type": "incident", "status": "acknowledged", "incident_key": incident_key }
    }})
    .to_string()
    .into_bytes()
}

pub(crate) fn signed(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("v1={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

/// The shop with `extra`, its deploys not stopped by alerts (the probes here are down from the
/// start, which is not what a deploy should answer for).
pub(crate) fn shop(extra: &str) -> String {
    config(&demo(), r#"VERSION = "v1""#, "1m", extra).replace("[pipeline]\n", "[pipeline]\nauto_rollback = false\n")
}

/// A critical probe of `api` that fails at once (a closed port) and goes down after two checks.
pub(crate) fn cache_probe() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!(
        "\n[probes.cache]\ntype = \"tcp\"\naddress = \"{closed}\"\ninterval = \"1s\"\nfailure_threshold = 2\nservice = \"api\"\nseverity = \"critical\"\n"
    )
}

pub(crate) async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    // Each probe runs the CLI: every 200 ms, not testkit's default 20 ms.
    windlass_testkit::Wait::every(Duration::from_millis(200)).until(what, || std::future::ready(probe())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_down_pages_slack_and_pagerduty_and_a_pagerduty_ack_stops_it() {
    let slack = serve(vec![Answer::Check(Arc::new(slack_shape))], None).await;
    let pagerduty = PagerDutyEvents::new();
    let pd_server = serve(vec![pagerduty.answer()], None).await;
    let extra = format!(
        r#"{cache}
[alerts]
group_wait = "1s"
pagerduty_webhook_secret = "{PD_WEBHOOK_SECRET}"
public_url = "https://windlass.shop.example"
routes = [{{ severity = "critical", to = ["slack", "pagerduty"] }}]

[alerts.receivers.slack]
type = "slack"
webhook_url = "{slack_url}"

[alerts.receivers.pagerduty]
type = "pagerduty"
routing_key = "{ROUTING_KEY}"
url = "{pd_url}"
"#,
        cache = cache_probe(),
        slack_url = slack.url("http", "/services/T0/B0/XYZ"),
        pd_url = pd_server.url("http", ""),
    );
    let platform = Platform::start(&shop(&extra));
    platform.deploy(&[]);

    // The probe goes down: one alert, sent to both receivers.
    let listed = eventually("the alert", || {
        let run = platform.cli(&["alerts", "production", "--output", "json"]);
        let value: Value = serde_json::from_str(&run.stdout).ok()?;
        let alerts = value["alerts"].as_array()?.clone();
        alerts.into_iter().find(|a| a["name"].as_str().is_some_and(|n| n.contains("cache")))
    })
    .await;
    let id = listed["id"].as_str().unwrap().to_owned();
    let incident = eventually("a PagerDuty incident", || pagerduty.incidents(&id).into_iter().next()).await;
    assert_eq!(incident.status, "triggered", "{incident:?}");
    assert_eq!(incident.opened_by["payload"]["severity"], "critical", "{:#}", incident.opened_by);
    let to_slack = eventually("a Slack message", || {
        let bodies: Vec<String> =
            slack.requests().iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect();
        bodies.into_iter().find(|b| b.contains("cache"))
    })
    .await;
    assert!(to_slack.contains("https://windlass.shop.example/ack/"), "a signed ack link: {to_slack}");

    // A forged acknowledgement changes nothing.
    let body = acknowledged_in_pagerduty(&id);
    let hook = format!("{}/hooks/pagerduty", platform.server_url);
    let forged = signed("not-the-secret", &body);
    let answer = post_pagerduty_webhook(&hook, &forged, &body).await;
    assert_eq!(answer.0, 401, "{}", answer.1);
    // PagerDuty's own acknowledgement, signed with the subscription's secret, acknowledges it.
    let answer = post_pagerduty_webhook(&hook, &signed(PD_WEBHOOK_SECRET, &body), &body).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    assert!(answer.1.contains("Alice Oncall"), "{}", answer.1);
    let run = platform.cli(&["alerts", "production", "--output", "json"]);
    let value: Value = serde_json::from_str(&run.stdout).unwrap();
    let alert = value["alerts"].as_array().unwrap().iter().find(|a| a["id"] == id.as_str()).unwrap().clone();
    assert_eq!(alert["ack"]["by"], "Alice Oncall", "{alert:#}");
    // Slack hears of the acknowledgement; acking again from the CLI is refused as already done.
    eventually("the acknowledgement on Slack", || {
        slack.requests().iter().any(|(_, b)| String::from_utf8_lossy(b).contains("ACKNOWLEDGED")).then_some(())
    })
    .await;
    let run = platform.cli(&["ack", &id]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("already acknowledged"), "{}", run.stderr);
}

/// POSTs a PagerDuty webhook to the server; (status, body).
pub(crate) async fn post_pagerduty_webhook(url: &str, signature: &str, body: &[u8]) -> (u16, String) {
    let address: std::net::SocketAddr = url.trim_start_matches("http://").split('/').next().unwrap().parse().unwrap();
    let path = format!("/{}", url.trim_start_matches("http://").split_once('/').unwrap().1);
    let body = String::from_utf8(body.to_vec()).unwrap();
    let headers = [("x-pagerduty-signature", signature), ("content-type", "application/json")];
    let reply = windlass_testkit::http::request("POST", address, &path, &headers, &body).await.unwrap();
    (reply.status, reply.body)
}

/// `api` without the smoke check (a build that fails only under real traffic passes it), with
/// `api_env`, and a critical probe of `/echo` through the edge at `edge`.
fn failing_after_release(api_env: &str, edge: std::net::SocketAddr) -> String {
    let probe = format!(
        "\n[probes.api-echo]\ntype = \"http\"\nurl = \"http://api.shop.localhost:{}/echo\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nfailure_threshold = 2\nservice = \"api\"\nseverity = \"critical\"\n",
        edge.port()
    );
    let text = config(&demo(), api_env, "1m", &probe);
    let smoke_start = text.find("[[smoke]]").unwrap();
    let smoke_end = text[smoke_start..].find("\n\n").unwrap() + smoke_start + 2;
    format!("{}{}", &text[..smoke_start], &text[smoke_end..])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_whose_new_version_starts_failing_is_rolled_back_automatically() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    platform.rewrite_config(&failing_after_release(r#"VERSION = "v1""#, platform.edge_address));
    let first = platform.deploy(&[]);
    let version = || async { crate::platform::body_json(&platform.get("api.shop.localhost", "/version").await) };
    assert_eq!(version().await["version"], "v1");

    // v2 answers its health checks but fails every real request: it passes the health gate and
    // takes the traffic, then the probe through the edge fires a critical alert.
    platform.rewrite_config(&failing_after_release(r#"VERSION = "v2", FAULT_ERROR_RATE = "1""#, platform.edge_address));
    let run = platform.cli(&["deploy", "production"]);
    let second = crate::platform::deploy_id(&run);
    let served_by_v1 = eventually("v1 to serve again", || {
        let reply = block_on(platform.get("api.shop.localhost", "/version"));
        (reply.status == 200 && crate::platform::body_json(&reply)["version"] == "v1").then_some(())
    });
    served_by_v1.await;
    // Whether the alert came while the deploy ran (stopped and undone) or after it (rolled back
    // to the warm v1), it is recorded with the alert that caused it.
    let events = platform.json(&["events", "production", "--kind", "deploy.auto"]);
    let event = &events["events"][0];
    assert_eq!(event["subject"], second.as_str(), "{events:#}");
    assert!(event["message"].as_str().unwrap().contains("critical alert `"), "{events:#}");
    assert!(event["message"].as_str().unwrap().contains("api-echo"), "{events:#}");
    let deploys = platform.json(&["deploys", "production"]);
    let reasons: Vec<String> =
        deploys["deploys"].as_array().unwrap().iter().map(|d| format!("{} {}", d["id"], d["status"])).collect();
    assert!(reasons.iter().any(|r| r.contains(&first)), "{reasons:?}");
}

/// Runs a future to completion from synchronous test code inside the runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_fails_raises_its_own_alert_through_the_others() {
    use windlass_testkit::receiver::signed_with;
    const SIGNING: &str = "whsec-windlass-alerting-test";
    // Slack refuses everything (a revoked webhook answers 4xx); the ops webhook works.
    let slack = serve(vec![Answer::Status(404, &[])], None).await;
    let ops = serve(vec![Answer::Check(signed_with(SIGNING))], None).await;
    let extra = format!(
        r#"{cache}
[alerts]
group_wait = "1s"
routes = [{{ severity = "critical", to = ["slack"] }}, {{ severity = "warning", to = ["ops"] }}]

[alerts.receivers.slack]
type = "slack"
webhook_url = "{slack_url}"

[alerts.receivers.ops]
type = "webhook"
url = "{ops_url}"
signing_secret = "{SIGNING}"
"#,
        cache = cache_probe(),
        slack_url = slack.url("http", "/services/T0/B0/XYZ"),
        ops_url = ops.url("http", "/alerts"),
    );
    let platform = Platform::start(&shop(&extra));
    platform.deploy(&[]);
    let told = eventually("the ops webhook to hear that Slack fails", || {
        let bodies: Vec<Value> = ops.requests().iter().filter_map(|(_, b)| serde_json::from_slice(b).ok()).collect();
        bodies.into_iter().find(|b| b.to_string().contains("receiver slack failing"))
    })
    .await;
    assert_eq!(told["alert"]["action"], "trigger", "{told:#}");
    assert!(!slack.requests().is_empty(), "Slack was tried");
    let events = platform.cli(&["events", "production", "--kind", "notify.failed"]);
    assert!(events.stdout.contains("not delivered"), "{}{}", events.stdout, events.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn incidents_silences_and_acks_from_the_command_line() {
    let platform = Platform::start(&shop(&cache_probe()));
    platform.deploy(&[]);
    // A critical alert opens an incident for its service.
    let incident = eventually("an incident", || {
        let value: Value =
            serde_json::from_str(&platform.cli(&["incident", "list", "--output", "json"]).stdout).ok()?;
        value["incidents"].as_array()?.first().cloned()
    })
    .await;
    let id = incident["id"].to_string();
    let run = platform.cli(&["incident", "note", &id, "the cache host is rebooting"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let run = platform.cli(&["incident", "resolve", &id, "--note", "cache is back"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let postmortem = platform.cli(&["incident", "postmortem", &id]);
    assert_eq!(postmortem.code, 0, "{}", postmortem.stderr);
    let text = postmortem.stdout;
    assert!(text.starts_with("# "), "Markdown: {text}");
    for expected in ["cache", "the cache host is rebooting", "cache is back", "api", "production"] {
        assert!(text.contains(expected), "`{expected}` in the post-mortem:\n{text}");
    }
    let again = platform.cli(&["incident", "resolve", &id]);
    assert_ne!(again.code, 0, "resolving twice is refused: {}", again.stdout);

    // Silences: added with an expiry, listed as active, ended by hand.
    let run =
        platform.cli(&["silence", "add", "production", "--service", "api", "--for", "2h", "--reason", "db migration"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let silence = run.stdout.split_whitespace().nth(1).unwrap().to_owned();
    let listed = platform.cli(&["silence", "list", "--output", "json"]);
    assert!(listed.stdout.contains("db migration"), "{}", listed.stdout);
    let run = platform.cli(&["silence", "expire", &silence]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let listed = platform.cli(&["silence", "list", "--output", "json"]);
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["silences"][0]["active"], false, "{listed:#}");
    let run = platform.cli(&["silence", "add", "production", "--service", "api", "--for", "forever", "--reason", "x"]);
    assert_ne!(run.code, 0, "a duration that is not one is refused: {}", run.stdout);
    assert!(run.stderr.contains("forever"), "{}", run.stderr);

    // Acknowledging an alert that does not exist is an error that says so.
    let run = platform.cli(&["ack", "0123456789abcdef"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("0123456789abcdef"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_during_a_deploy_stops_it_and_it_undoes_itself() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    platform.rewrite_config(&failing_after_release(r#"VERSION = "v1""#, platform.edge_address));
    platform.deploy(&[]);
    // The traffic phase's first step lasts until the test lets it end: after the alert fired
    // and the guard asked the deploy to stop.
    let released = platform.path().join("released");
    let waiting = format!(
        "\n[[phases.traffic.steps]]\nname = \"purge the CDN\"\nrun = \"until [ -e {} ]; do sleep 0.1; done\"\ntimeout = \"60s\"\n\n[[phases.traffic.steps]]\nname = \"warm the caches\"\nrun = \"true\"\n",
        released.display()
    );
    let text = failing_after_release(r#"VERSION = "v2", FAULT_ERROR_RATE = "1""#, platform.edge_address);
    platform.rewrite_config(&format!("{text}{waiting}"));
    let mut deploy = platform.command_as(&platform.token, &["deploy", "production"]);
    let deploy = deploy.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    eventually("the guard to stop the deploy", || {
        let events = platform.cli(&["events", "production", "--kind", "deploy.auto_abort"]);
        events.stdout.contains("stopped").then_some(())
    })
    .await;
    std::fs::write(&released, "").unwrap();
    let output = deploy.wait_with_output().unwrap();
    let run = crate::harness::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let id = crate::platform::deploy_id(&run);
    let shown = platform.json(&["deploy", "show", &id]);
    assert_eq!(shown["deploy"]["status"], "rolled_back", "{shown:#}");
    let error = shown["deploy"]["error"].as_str().unwrap();
    assert!(error.contains("stopped before `warm the caches`: critical alert `api-echo`"), "{error}");
    let statuses: Vec<(String, String)> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect();
    assert!(statuses.contains(&("roll back api".to_owned(), "succeeded".to_owned())), "{statuses:?}");
    assert_eq!(crate::platform::body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_service_slo_counts_its_probes() {
    let extra = format!("{}\n[slo.api]\navailability = \"99.9%\"\n\n[monitor]\nmin_requests = 3\n", cache_probe());
    let platform = Platform::start(&shop(&extra));
    platform.deploy(&[]);
    // No request reaches api through the edge: its SLO is judged on its probe's results.
    let report = eventually("the probes to count", || {
        let run = platform.cli(&["slo", "production", "--output", "json"]);
        let report: Value = serde_json::from_str(&run.stdout).ok()?;
        let api = report["services"].as_array()?.iter().find(|s| s["objective"]["service"] == "api")?.clone();
        (api["window"]["source"] == "probes" && api["window"]["bad"].as_u64()? >= 3).then_some(api)
    })
    .await;
    assert_eq!(report["window"]["total"], report["window"]["bad"], "every probe failed: {report:#}");
    let text = platform.cli(&["slo", "production"]);
    assert_eq!(text.code, 1, "a burn alert fires: {}{}", text.stdout, text.stderr);
}
