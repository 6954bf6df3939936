//! The unauthenticated ways into the server, attacked through the real binaries: PagerDuty's
//! webhook (replays, stale events, forged signatures, and what a forged one may cost: no read of
//! the secrets backend, counted by a real OpenBao's audit log) and the signed acknowledgement
//! links (their key outside the store, moved out of an older store with links already sent
//! still working, and no copy of the database holding it).

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use std::sync::Arc;

use serde_json::{Value, json};
use windlass_testkit::receiver::{Answer, serve, slack_shape};
use windlass_testkit::{tools, workspace_bin};

use crate::alerting::{acknowledged_in_pagerduty_at, eventually, post_pagerduty_webhook, shop, signed};
use crate::platform::{EDGE_TOKEN, Platform};

const PD_WEBHOOK_SECRET: &str = "pd-webhook-secret-for-hook-tests";

/// A critical TCP probe of `api` at a port nothing listens on (yet): (the probe's config, the
/// address, to bring it up by listening there).
fn toggled_probe() -> (String, SocketAddr) {
    let address = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let probe = format!(
        "\n[probes.cache]\ntype = \"tcp\"\naddress = \"{address}\"\ninterval = \"1s\"\nfailure_threshold = 1\n\
         success_threshold = 1\nservice = \"api\"\nseverity = \"critical\"\n"
    );
    (probe, address)
}

/// The firing alert of the probe `cache`, once it fires with `occurrence` at least `at_least`.
async fn firing_alert(platform: &Platform, at_least: u64) -> Value {
    eventually("the alert firing", || {
        let run = platform.cli(&["alerts", "production", "--output", "json"]);
        let value: Value = serde_json::from_str(&run.stdout).ok()?;
        let alerts = value["alerts"].as_array()?.clone();
        alerts.into_iter().find(|a| {
            a["name"].as_str().is_some_and(|n| n.contains("cache")) && a["occurrence"].as_u64() >= Some(at_least)
        })
    })
    .await
}

fn alert_now(platform: &Platform, id: &str) -> Option<Value> {
    let run = platform.cli(&["alerts", "production", "--output", "json"]);
    let value: Value = serde_json::from_str(&run.stdout).ok()?;
    value["alerts"].as_array()?.iter().find(|a| a["id"] == id).cloned()
}

/// One captured body acknowledges one firing, once: a replay of it (the same event id) does
/// nothing to a later firing of the same alert; events dated too far from now either way are
/// ignored; a genuine new event still acknowledges.
#[tokio::test(flavor = "multi_thread")]
async fn a_pagerduty_event_acts_once_and_only_while_fresh() {
    let (probe, address) = toggled_probe();
    let extra = format!("{probe}\n[alerts]\ngroup_wait = \"1s\"\npagerduty_webhook_secret = \"{PD_WEBHOOK_SECRET}\"\n");
    let platform = Platform::start(&shop(&extra));
    let hook = format!("{}/hooks/pagerduty", platform.server_url);
    let first = firing_alert(&platform, 1).await;
    let id = first["id"].as_str().unwrap().to_owned();

    // Stale both ways: signed, but dated an hour ago or an hour ahead. Ignored (2xx: PagerDuty
    // would only retry), and the alert stays unacknowledged.
    let now = jiff::Timestamp::now();
    for (event, at) in [("E-OLD", now - Duration::from_secs(3600)), ("E-AHEAD", now + Duration::from_secs(3600))] {
        let body = acknowledged_in_pagerduty_at(&id, event, at);
        let (status, answer) = post_pagerduty_webhook(&hook, &signed(PD_WEBHOOK_SECRET, &body), &body).await;
        assert_eq!(status, 202, "{answer}");
        assert!(answer.contains("freshness window") && answer.contains(event), "{answer}");
        assert!(!answer.contains(PD_WEBHOOK_SECRET), "{answer}");
    }
    assert!(alert_now(&platform, &id).unwrap()["ack"].is_null(), "a stale event acknowledged nothing");

    // A fresh event acknowledges; the same body again is a replay: 200, nothing done.
    let captured = acknowledged_in_pagerduty_at(&id, "E-1", jiff::Timestamp::now());
    let signature = signed(PD_WEBHOOK_SECRET, &captured);
    let (status, answer) = post_pagerduty_webhook(&hook, &signature, &captured).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("Alice Oncall"), "{answer}");
    let (status, answer) = post_pagerduty_webhook(&hook, &signature, &captured).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("event E-1 was already received"), "{answer}");

    // The alert recovers and fires again: the captured body must not acknowledge the new firing.
    let up = TcpListener::bind(address).unwrap();
    eventually("the alert resolving", || alert_now(&platform, &id).is_none().then_some(())).await;
    drop(up);
    let second = firing_alert(&platform, 2).await;
    assert!(second["ack"].is_null(), "{second:#}");
    let (status, answer) = post_pagerduty_webhook(&hook, &signature, &captured).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("already received"), "{answer}");
    assert!(alert_now(&platform, &id).unwrap()["ack"].is_null(), "the replay acknowledged the new firing");

    // A genuine new event does.
    let body = acknowledged_in_pagerduty_at(&id, "E-2", jiff::Timestamp::now());
    let (status, answer) = post_pagerduty_webhook(&hook, &signed(PD_WEBHOOK_SECRET, &body), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(alert_now(&platform, &id).unwrap()["ack"]["by"], "Alice Oncall");

    // Signed but without a date: refused as malformed.
    let mut undated: Value = serde_json::from_slice(&body).unwrap();
    undated["event"]["id"] = "E-3".into();
    undated["event"].as_object_mut().unwrap().remove("occurred_at");
    let undated = undated.to_string().into_bytes();
    let (status, answer) = post_pagerduty_webhook(&hook, &signed(PD_WEBHOOK_SECRET, &undated), &undated).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("occurred_at"), "{answer}");
}

/// An OpenBao dev server of this test's own, with a file audit device: every request it serves
/// is a line of `audit.log`. Killed when dropped.
struct AuditedBao {
    child: std::process::Child,
    address: SocketAddr,
    audit_log: std::path::PathBuf,
    _dir: windlass_testkit::TempDir,
}

const BAO_TOKEN: &str = "hooks-test-root";

impl Drop for AuditedBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AuditedBao {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let dir = windlass_testkit::tempdir();
        let audit_log = dir.path().join("audit.log");
        // OpenBao takes audit devices from its config only (not through the API).
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"to-file\" {{\n  options {{\n    file_path = \"{}\"\n  }}\n}}\n",
                audit_log.display()
            ),
        )
        .unwrap();
        let child = Command::new(tools::bao_bin())
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={BAO_TOKEN}"),
                &format!("-dev-listen-address={address}"),
                &format!("-config={}", config.display()),
            ])
            .env("HOME", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let bao = AuditedBao { child, address, audit_log, _dir: dir };
        eventually("the OpenBao dev server", || {
            let reply = futures_block(bao.call("GET", "/v1/sys/health", ""));
            reply.filter(|r| r.status == 200).map(|_| ())
        })
        .await;
        bao
    }

    async fn call(&self, method: &str, path: &str, body: &str) -> Option<windlass_testkit::http::Reply> {
        let headers = [("x-vault-token", BAO_TOKEN), ("content-type", "application/json")];
        windlass_testkit::http::request(method, self.address, path, &headers, body).await.ok()
    }

    /// How many requests for the secrets under `prefix` the server has answered.
    fn reads_under(&self, prefix: &str) -> usize {
        let log = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["type"] == "response")
            .filter(|entry| entry["request"]["path"].as_str().is_some_and(|p| p.contains(prefix)))
            .count()
    }
}

/// Runs a future to completion from inside a synchronous probe closure.
fn futures_block<F: std::future::Future>(future: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(future))
}

/// The webhook's secret is resolved by the server ahead of requests: unsigned, forged and
/// malformed webhooks are refused without one read of the secrets backend (counted by OpenBao's
/// own audit log), while a config change does read it (so the count is a real one).
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_webhook_reads_no_secret() {
    let bao = AuditedBao::start().await;
    let prefix = tools::unique("whook");
    let extra = format!(
        "\n[env]\nPD_WEBHOOK_SECRET = {{ secret = true }}\n\n[alerts]\npagerduty_webhook_secret = {{ secret = \"PD_WEBHOOK_SECRET\" }}\n\n[secrets]\nbackend = \"openbao\"\n\
         address = \"http://{}\"\nprefix = \"{prefix}\"\n",
        bao.address
    );
    let mut platform = Platform::start(&shop(&extra));
    let mut set = Command::new(workspace_bin("windlass"));
    set.args(["secrets", "set", "production", "PD_WEBHOOK_SECRET"])
        .current_dir(platform.dir.path())
        .env("BAO_TOKEN", BAO_TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = set.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), PD_WEBHOOK_SECRET.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // The server as an operator runs it, with its OpenBao token.
    platform.kill_server();
    platform.start_server(&[("BAO_TOKEN", BAO_TOKEN)]);
    let hook = format!("{}/hooks/pagerduty", platform.server_url);

    // A genuine event is accepted once the server has resolved the secret (it does not act:
    // PagerDuty's `incident.triggered` is only noted).
    let triggered = |event: &str| {
        json!({ "event": {
            "id": event, "event_type": "incident.triggered", "resource_type": "incident",
            "occurred_at": jiff::Timestamp::now().to_string(),
            "data": { "id": "PGR0VU2", "type": "incident", "incident_key": "k" }
        }})
        .to_string()
        .into_bytes()
    };
    let mut n = 0;
    eventually("the webhook's secret resolved", || {
        n += 1;
        let body = triggered(&format!("E-{n}"));
        let (status, _) = futures_block(post_pagerduty_webhook(&hook, &signed(PD_WEBHOOK_SECRET, &body), &body));
        (status == 202).then_some(())
    })
    .await;
    // The server's own start-up reads (probes, the first resolution) are over when the count
    // holds still.
    let mut before = bao.reads_under(&prefix);
    assert!(before > 0, "the audit log counts the server's reads");
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = bao.reads_under(&prefix);
        if now == before {
            break;
        }
        before = now;
    }

    let body = triggered("E-forged");
    let attempts: Vec<(String, Vec<u8>)> = vec![
        (String::new(), body.clone()),
        ("v1=".to_owned(), body.clone()),
        ("v1=zz-not-hex".to_owned(), body.clone()),
        (signed("a-guessed-secret", &body), body.clone()),
        (signed("a-guessed-secret", b"{}"), b"{}".to_vec()),
        (format!("{},{}", signed("one", &body), signed("two", &body)), body.clone()),
        (signed(PD_WEBHOOK_SECRET, b"{\"other\":1}"), body.clone()),
    ];
    for _ in 0..5 {
        for (signature, body) in &attempts {
            let (status, answer) = post_pagerduty_webhook(&hook, signature, body).await;
            assert_eq!(status, 401, "{signature}: {answer}");
            assert!(!answer.contains(PD_WEBHOOK_SECRET), "{answer}");
        }
    }
    // Two turns of the server's webhook-secrets loop, which is where the secret would be read again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(bao.reads_under(&prefix), before, "a refused webhook read the secrets backend");

    // The count is real: a changed config is resolved again, by the server's own loop.
    let config = std::fs::read_to_string(&platform.config).unwrap();
    std::fs::write(&platform.config, format!("{config}\n# changed\n")).unwrap();
    let base = before;
    eventually("the secret read again after the config changed", || (bao.reads_under(&prefix) > base).then_some(()))
        .await;
}

/// The key that signs acknowledgement links: made 0600 in the state directory on first start,
/// moved out of a store an older Windlass kept it in (crash-safely: the file first, then the
/// setting), links signed with it before the move still acknowledge after, and no copy of the
/// database holds it.
#[tokio::test(flavor = "multi_thread")]
async fn the_ack_link_key_lives_outside_the_store() {
    let (probe, _) = toggled_probe();
    let slack = serve(vec![Answer::Check(Arc::new(slack_shape))], None).await;
    let extra = format!(
        "{probe}\n[alerts]\ngroup_wait = \"1s\"\npublic_url = \"https://windlass.shop.example\"\n\
         routes = [{{ severity = \"critical\", to = [\"slack\"] }}]\n\n[alerts.receivers.slack]\ntype = \"slack\"\n\
         webhook_url = \"{}\"\n",
        slack.url("http", "/services/T0/B0/XYZ")
    );
    // No probe at first: the alert (and the link sent for it) come after the key has moved.
    let mut platform = Platform::start(&shop(""));
    let state = platform.state_dir();
    let key_file = state.join("ack-link.key");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&state), 0o700);
    let made = std::fs::read_to_string(&key_file).unwrap().trim().to_owned();
    assert_eq!(made.len(), 64, "{} hex digits", made.len());

    // An older Windlass's store: the key in its settings, no file.
    platform.kill_server();
    std::fs::write(&platform.config, shop(&extra)).unwrap();
    let old_key = "0123456789abcdef0123456789abcdeffedcba9876543210fedcba9876543210";
    std::fs::remove_file(&key_file).unwrap();
    let database = state.join("windlass.db").display().to_string();
    let setting = |database: String| async move {
        let store = windlass_store::open(&database, std::sync::Arc::new(windlass_store::SystemClock)).await.unwrap();
        store.setting("alerts.link_secret").await.unwrap()
    };
    {
        let store = windlass_store::open(&database, std::sync::Arc::new(windlass_store::SystemClock)).await.unwrap();
        store.set_setting("alerts.link_secret", old_key).await.unwrap();
    }

    // A crash between writing the file and deleting the setting leaves both, holding one key.
    let crashed = Command::new(workspace_bin("windlass"))
        .args(["server", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&platform.config)
        .arg("--state")
        .arg(&state)
        .arg("--edge-admin")
        .arg(platform.edge_admin.to_string())
        .arg("--edge-listen")
        .arg(platform.edge_address.to_string())
        .env("WINDLASS_EDGE_TOKEN", EDGE_TOKEN)
        .env("WINDLASS_FAILPOINTS", "ack_key.after_write=abort")
        .output()
        .unwrap();
    assert!(!crashed.status.success(), "the failpoint stopped the server");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), old_key);
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(setting(database.clone()).await.as_deref(), Some(old_key));

    // The next start finishes the move.
    platform.start_server(&[]);
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), old_key);
    assert_eq!(setting(database.clone()).await, None);

    // A link signed with the old key (as the older server sent it) acknowledges the alert; one
    // signed with another key does not.
    let alert = firing_alert(&platform, 1).await;
    let id = alert["id"].as_str().unwrap();
    let fired_at: jiff::Timestamp = alert["fired_at"].as_str().unwrap().parse().unwrap();
    let expires = jiff::Timestamp::now() + Duration::from_secs(3600);
    let server: SocketAddr = platform.server_url.trim_start_matches("http://").parse().unwrap();
    // The links the server sends now are signed with the same (moved) key (waited for first: an
    // acknowledged alert is not notified).
    let link = eventually("a Slack message with a link", || {
        slack.requests().iter().find_map(|(_, body)| {
            let body = String::from_utf8_lossy(body);
            let start = body.find("https://windlass.shop.example/ack/")? + "https://windlass.shop.example/ack/".len();
            let token: String =
                body[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c)).collect();
            token.starts_with(id).then_some(token)
        })
    })
    .await;
    let parts: Vec<&str> = link.split('.').collect();
    let sent_expires = jiff::Timestamp::from_second(parts[2].parse().unwrap()).unwrap();
    assert_eq!(link, windlass_monitor::alert::ack_token(&hex::decode(old_key).unwrap(), id, fired_at, sent_expires));
    // The key the server made before the move is not the key any more.
    let forged = windlass_monitor::alert::ack_token(&hex::decode(&made).unwrap(), id, fired_at, expires);
    let reply = windlass_testkit::http::request("POST", server, &format!("/ack/{forged}"), &[], "").await.unwrap();
    assert_eq!(reply.status, 403, "{}", reply.body);
    let old_bytes = hex::decode(old_key).unwrap();
    let token = windlass_monitor::alert::ack_token(&old_bytes, id, fired_at, expires);
    let reply = windlass_testkit::http::request("POST", server, &format!("/ack/{token}"), &[], "").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(alert_now(&platform, id).unwrap()["ack"]["by"], "signed link");

    // A copy of the database (its file and WAL) holds neither key, in hex or in bytes.
    for file in [database.clone(), format!("{database}-wal"), format!("{database}-shm")] {
        let bytes = std::fs::read(&file).unwrap_or_default();
        for needle in [old_key.as_bytes(), &old_bytes, made.as_bytes()] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{file} holds an ack-link key");
        }
    }

    // A key file others may read stops the server before it serves, saying how to fix it.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    platform.kill_server();
    let refused = Command::new(workspace_bin("windlass"))
        .args(["server", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&platform.config)
        .arg("--state")
        .arg(&state)
        .arg("--edge-admin")
        .arg(platform.edge_admin.to_string())
        .arg("--edge-listen")
        .arg(platform.edge_address.to_string())
        .env("WINDLASS_EDGE_TOKEN", EDGE_TOKEN)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&format!("chmod 600 {}", key_file.display())), "{stderr}");
    assert!(!stderr.contains(old_key), "{stderr}");
}
