//! Secrets stay hidden whatever their shape and whichever way they leave, through the real
//! binaries: a multi-line key printed by a step, a command probe's output on its way to events,
//! alerts and real webhook receivers, and user text on its way to Slack.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use windlass_testkit::receiver::{Answer, serve, slack_shape};

use crate::platform::{Platform, config, demo};

/// A PEM-like key, one line of it at least 8 characters.
const KEY_LINES: [&str; 4] = [
    "-----BEGIN PRIVATE KEY-----",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7wQ1xZ",
    "q1w2e3r4t5y6u7i8o9p0aZsXdCfVgBhNjMkLp",
    "-----END PRIVATE KEY-----",
];

const API_TOKEN: &str = "tok-3f9a1c77e2b54d08";

/// Every file under `dir`, read as bytes, with its path.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            found.push((path.display().to_string(), bytes));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    // Each probe runs the CLI: every 200 ms, not testkit's default 20 ms.
    windlass_testkit::Wait::every(Duration::from_millis(200)).until(what, || std::future::ready(probe())).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_line_key_printed_by_a_step_reaches_no_output_record_or_event() {
    // The step prints the key whole and line by line, then a byte that is not UTF-8 followed by
    // more than a pipe holds (a reader that gave up on the byte would kill the step by SIGPIPE).
    let step = r#"
[env]
TLS_KEY = { secret = true }

[[phases.validate.steps]]
name = "show the key"
run = 'printf "key: %s\n" "$TLS_KEY"; printf "%s\n" "$TLS_KEY" | while read -r l; do echo "line $l"; done; printf "bad \377 byte\n"; yes after-the-byte | head -n 10000; echo all-done'
"#;
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", step));
    let key = format!("{}\n", KEY_LINES.join("\n"));
    std::fs::write(platform.path().join(".env.production"), format!("TLS_KEY=\"{}\"\n", key.replace('\n', "\\n")))
        .unwrap();

    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(
        run.code,
        0,
        "the step ran to its end:\n{}",
        run.all_output().lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
    let id = crate::platform::deploy_id(&run);
    let shown = platform.json(&["deploy", "show", &id]);
    let steps = shown["steps"].as_array().unwrap();
    let output = steps.iter().find(|s| s["name"] == "show the key").unwrap()["output"].as_str().unwrap().to_owned();
    let events = platform.cli(&["events", "production", "--output", "json"]);
    for (what, text) in [
        ("the CLI's output (the deploy's event stream)", run.all_output()),
        ("the recorded output", output.clone()),
        ("the events", events.stdout.clone()),
    ] {
        for line in KEY_LINES {
            assert!(!text.contains(line), "{what} shows {line:?}");
        }
    }
    assert!(output.contains("key: [REDACTED:TLS_KEY]"), "{}", &output[..output.len().min(2000)]);
    assert!(output.contains("bad \u{fffd} byte"), "the bad byte is kept as U+FFFD");
    assert_eq!(output.matches("after-the-byte").count(), 10000, "every line after the byte is recorded");
    assert!(output.contains("all-done"));
    // Nor anywhere in the store or the state dir.
    for (path, bytes) in files_under(&platform.state_dir()) {
        for line in KEY_LINES {
            assert!(!contains(&bytes, line), "{path} holds {line:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_probes_secret_output_reaches_no_event_alert_or_receiver() {
    let slack = serve(vec![Answer::Check(Arc::new(slack_shape))], None).await;
    let hook = serve(vec![Answer::Status(200, &[])], None).await;
    let extra = format!(
        r#"
[env]
API_TOKEN = {{ secret = true }}

[probes.token-check]
type = "command"
command = "echo 'checking the token'; echo 'token ${{API_TOKEN}} was refused' >&2; exit 1"
interval = "1s"
failure_threshold = 1
service = "api"
severity = "critical"

[alerts]
group_wait = "1s"
routes = [{{ severity = "critical", to = ["slack", "ops"] }}]

[alerts.receivers.slack]
type = "slack"
webhook_url = "{slack_url}"

[alerts.receivers.ops]
type = "webhook"
url = "{hook_url}"
"#,
        slack_url = slack.url("http", "/services/T0/B0/XYZ"),
        hook_url = hook.url("http", "/ops"),
    );
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", &extra)
        .replace("[pipeline]\n", "[pipeline]\nauto_rollback = false\n");
    let platform = Platform::start(&text);
    std::fs::write(platform.path().join(".env.production"), format!("API_TOKEN={API_TOKEN}\n")).unwrap();
    platform.deploy(&[]);

    let bodies = |server: &windlass_testkit::receiver::Server| -> Vec<String> {
        server.requests().iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).collect()
    };
    let to_slack =
        eventually("the alert on Slack", || bodies(&slack).into_iter().find(|b| b.contains("token-check"))).await;
    let to_hook =
        eventually("the alert on the webhook", || bodies(&hook).into_iter().find(|b| b.contains("token-check"))).await;
    assert!(to_slack.contains("[REDACTED:API_TOKEN]"), "{to_slack}");
    let events = platform.cli(&["events", "production", "--kind", "probe.down", "--output", "json"]);
    assert!(events.stdout.contains("[REDACTED:API_TOKEN]"), "{}", events.stdout);
    let alerts = platform.cli(&["alerts", "production", "--output", "json"]);
    let probes = platform.cli(&["probes", "production", "--output", "json"]);
    let everything = [
        ("Slack", to_slack),
        ("the webhook", to_hook),
        ("the events", events.all_output()),
        ("the alerts", alerts.all_output()),
        ("the probes", probes.all_output()),
        ("every Slack request", bodies(&slack).join("\n")),
        ("every webhook request", bodies(&hook).join("\n")),
    ];
    for (what, text) in everything {
        assert!(!text.contains(API_TOKEN), "{what} shows the token: {text}");
    }
    let parsed: Value = serde_json::from_str(&probes.stdout).unwrap();
    let probe = parsed["probes"].as_array().unwrap().iter().find(|p| p["name"] == "token-check").unwrap().clone();
    assert_eq!(probe["last_reason"], "exit code 1: token [REDACTED:API_TOKEN] was refused", "{probe:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_text_reaches_slack_escaped_and_pings_nobody() {
    let slack = serve(vec![Answer::Check(Arc::new(slack_shape))], None).await;
    let extra = format!(
        "\n[alerts.receivers.slack]\ntype = \"slack\"\nwebhook_url = \"{}\"\n",
        slack.url("http", "/services/T0/B0/XYZ")
    );
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", &extra)
        .replace("[environments.production]\n", "[environments.production]\napproval = \"required\"\n")
        .replace("[pipeline]\n", "[pipeline]\nnotify = [\"slack\"]\n");
    let platform = Platform::start(&text);
    // The reason of a deploy that asks for approval goes to Slack.
    let asked = platform.cli(&[
        "deploy",
        "production",
        "--detach",
        "--reason",
        "<!channel> look & see <https://evil.example|here>",
    ]);
    assert_eq!(asked.code, 0, "{}", asked.all_output());
    let body = eventually("the approval request on Slack", || {
        slack.requests().iter().map(|(_, b)| String::from_utf8_lossy(b).into_owned()).find(|b| b.contains("asks to"))
    })
    .await;
    assert!(body.contains("&lt;!channel&gt; look &amp; see &lt;https://evil.example|here&gt;"), "{body}");
    assert!(!body.contains("<!channel>") && !body.contains("<https://evil"), "{body}");
}
