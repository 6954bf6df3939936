//! Release control around a deploy: deploy windows, approvals, promotion between environments
//! and undo steps, through the real server and edge.

use windlass_testkit::workspace_bin;

use crate::platform::{Platform, body_json, config, demo};

/// A weekday name `days` days from today (UTC), for windows that are certainly closed today.
fn weekday_in(days: i64) -> &'static str {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).weekday().to_monday_zero_offset();
    NAMES[(i64::from(today) + days).rem_euclid(7) as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_outside_the_window_is_refused_with_the_next_opening_unless_overridden_with_a_reason() {
    // Open only the day after tomorrow: closed all of today, whatever the hour.
    let window = format!("{} 00:00-23:59 UTC", weekday_in(2));
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", "")
        .replace("[environments.production]\n", &format!("[environments.production]\ndeploy_window = \"{window}\"\n"));
    let platform = Platform::start(&text);

    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&format!("accepts deploys only {window} and is closed now")), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("it opens next at {} ", weekday_in(2))), "{}", run.stderr);
    assert!(run.stderr.contains("--override-window --reason"), "{}", run.stderr);
    assert!(platform.status()["services"].as_object().is_none_or(|s| s.is_empty()), "nothing started");

    let run = platform.cli(&["deploy", "production", "--override-window"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--override-window needs --reason"), "{}", run.stderr);

    let id = platform.deploy(&["--override-window", "--reason", "security fix CVE-2026-1234"]);
    let shown = platform.json(&["deploy", "show", &id]);
    assert_eq!(shown["deploy"]["reason"], "security fix CVE-2026-1234 [deploy window overridden]");
    let events = platform.json(&["events", "production", "--kind", "deploy.window"]);
    let overridden = &events["events"][0];
    assert_eq!((overridden["actor"].as_str(), overridden["subject"].as_str()), (Some("alice"), Some(id.as_str())));
    let message = overridden["message"].as_str().unwrap();
    assert!(
        message.contains("deploy window overridden") && message.ends_with("security fix CVE-2026-1234"),
        "{message}"
    );
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
}

/// Custom steps in the `traffic` phase that append to `journal` and declare undo commands.
fn steps_with_undo(journal: &std::path::Path, third: &str, undo_b: &str) -> String {
    let journal = journal.display();
    format!(
        r#"
[[phases.traffic.steps]]
name = "step A"
run = "echo A >> {journal}"
undo = "echo undo-A >> {journal}"

[[phases.traffic.steps]]
name = "step B"
run = "echo B >> {journal}"
undo = "{undo_b}"

[[phases.traffic.steps]]
name = "step C"
run = "{third}"
"#
    )
}

fn step_statuses(shown: &serde_json::Value) -> Vec<(String, String)> {
    shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["status"].as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn a_failing_deploy_runs_the_undo_of_its_completed_steps_in_reverse_even_when_one_fails() {
    let dir = windlass_testkit::tempdir();
    let journal = dir.path().join("journal");
    // B's undo fails; A's must still run. C fails the deploy.
    let steps = steps_with_undo(&journal, "exit 3", &format!("echo undo-B >> {}; exit 4", journal.display()));
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", &steps));
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let journal_text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(journal_text, "A\nB\nundo-B\nundo-A\n");
    let id = crate::platform::deploy_id(&run);
    let shown = platform.json(&["deploy", "show", &id]);
    let statuses = step_statuses(&shown);
    let position = |name: &str| statuses.iter().position(|(n, _)| n == name).unwrap_or_else(|| panic!("{statuses:?}"));
    assert_eq!(statuses[position("step C")].1, "failed");
    assert_eq!(statuses[position("undo: step B")].1, "failed", "{statuses:?}");
    assert_eq!(statuses[position("undo: step A")].1, "succeeded", "{statuses:?}");
    assert!(position("undo: step B") < position("undo: step A"), "reverse order: {statuses:?}");
    assert_eq!(shown["deploy"]["status"], "failed", "an undo failed, so the deploy says so: {shown:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_undoes_the_completed_steps_of_the_deploys_it_leaves_behind() {
    let dir = windlass_testkit::tempdir();
    let journal = dir.path().join("journal");
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    let first = platform.deploy(&[]);
    let undo_b = format!("echo undo-B >> {}", journal.display());
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v2""#, "1m", &steps_with_undo(&journal, "true", &undo_b)));
    platform.deploy(&[]);
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "A\nB\n");
    let run = platform.cli(&["rollback", "production", &first]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "A\nB\nundo-B\nundo-A\n");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
    // Rolling back past the same deploy again does not undo its steps a second time.
    let run = platform.cli(&["rollback", "production", &first]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(std::fs::read_to_string(&journal).unwrap(), "A\nB\nundo-B\nundo-A\n");
}

/// Staging and production of one shop, each served by its own edge and server, sharing one
/// PostgreSQL store (the team setup). `api` runs the binary at `program`.
fn two_environments(program: &std::path::Path) -> String {
    config(&program.display().to_string(), r#"VERSION = "v1""#, "1m", "")
        .replace("[environments.production]\n", "[environments.staging]\n\n[environments.production]\n")
}

fn artifact_hash(shown: &serde_json::Value, service: &str) -> String {
    shown["deploy"]["artifacts"]["services"][service]["artifact"]["sha256"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn promotion_deploys_to_production_the_build_that_passed_in_staging_not_todays() {
    let database = windlass_testkit::postgres::TestDatabase::create().await;
    let bin = windlass_testkit::tempdir();
    let program = bin.path().join("shop-api");
    std::fs::copy(workspace_bin("windlass-demo"), &program).unwrap();
    let text = two_environments(&program);
    let staging = Platform::start_shared(&text, "staging", &database.url, "alice");
    let production = Platform::start_shared(&text, "production", &database.url, "bob");

    let run = production.cli(&["deploy", "staging"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("this server manages production, not `staging`"), "{}", run.stderr);
    let run = production.cli(&["promote", "staging", "production"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("nothing runs in `staging`: there is nothing to promote"), "{}", run.stderr);

    let tested = staging.deploy(&["--reason", "release candidate"]);
    let tested_hash = artifact_hash(&staging.json(&["deploy", "show", &tested]), "api");
    // Today's build differs from the one staging tested (a rebuild, a later commit...).
    let mut rebuilt = std::fs::read(&program).unwrap();
    rebuilt.extend_from_slice(b"\0rebuilt");
    std::fs::write(&program, rebuilt).unwrap();

    let run = production.cli(&["promote", "staging", "production", "--services", "web"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("`web` is not a service of the config"), "{}", run.stderr);

    let run = production.cli(&["promote", "staging", "production", "--reason", "weekly release"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let promoted = crate::platform::deploy_id(&run);
    let shown = production.json(&["deploy", "show", &promoted]);
    assert_eq!(artifact_hash(&shown, "api"), tested_hash, "the build staging ran: {shown:#}");
    assert_eq!(shown["deploy"]["actor"], "bob");
    let reason = shown["deploy"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("promote from staging: api ") && reason.contains(&tested), "{reason}");
    assert!(reason.ends_with("(weekly release)"), "{reason}");
    assert_eq!(body_json(&production.get("api.shop.localhost", "/version").await)["version"], "v1");

    // A plain deploy of production freezes today's build: a different hash.
    let fresh = production.deploy(&[]);
    assert_ne!(artifact_hash(&production.json(&["deploy", "show", &fresh]), "api"), tested_hash);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_to_an_environment_with_approval_waits_for_someone_else_and_runs_what_was_approved() {
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", "")
        .replace("[environments.production]\n", "[environments.production]\napproval = \"required\"\n");
    let platform = Platform::start(&text);
    let bob = platform.add_user("bob");

    let run = platform.cli(&["deploy", "production", "--detach", "--reason", "v1"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("`production` needs approval: request approval-"), "{}", run.stderr);
    assert!(platform.status()["services"].as_object().is_none_or(|s| s.is_empty()), "nothing runs before approval");
    for (args, expected) in [
        (vec!["approve", "production"], "needs approval by someone other than the requester (alice)"),
        (vec!["deploy", "production", "--approve"], "needs approval by someone other than the requester (alice)"),
        (vec!["deploy", "production"], "awaits approval"),
    ] {
        let run = platform.cli(&args);
        assert_ne!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
    }
    let run = platform.cli_as(&bob, &["approve", "production", "--reason", "looks good"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let id = crate::platform::deploy_id(&run);
    let shown = platform.json(&["deploy", "show", &id]);
    assert_eq!(shown["deploy"]["status"], "succeeded");
    assert_eq!(shown["deploy"]["actor"], "alice", "the requester's deploy");
    assert_eq!(shown["deploy"]["reason"], "v1 (approved by bob: looks good)");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");

    // A waiting `windlass deploy` follows its request: rejected here, after a change to the
    // config made the request stale (approving it would ship something else).
    let waiting = platform
        .command_as(&platform.token, &["deploy", "production"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let server: std::net::SocketAddr = platform.server_url.trim_start_matches("http://").parse().unwrap();
    let authorization = format!("Bearer {}", platform.token);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let path = "/api/v1/environments/production/approval";
        let reply = windlass_testkit::http::request("GET", server, path, &[("authorization", &authorization)], "")
            .await
            .unwrap();
        if body_json(&reply)["approval"]["status"] == "pending" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the waiting deploy never asked: {}", reply.body);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    platform.rewrite_config(&text.replace(r#"VERSION = "v1""#, r#"VERSION = "v2""#));
    let run = platform.cli_as(&bob, &["approve", "production"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("the config changed since the deploy was requested"), "{}", run.stderr);
    let run = platform.cli_as(&bob, &["reject", "production", "--reason", "stale"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let output = waiting.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rejected by bob: stale"), "{stderr}");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
}

/// The secrets of a deploy reach its steps and services, and no form of them reaches the
/// deploy's output, the API's answers or the store's files: a step that prints its environment
/// and a Basic-auth header, one that prints the URL-encoded secret, and a step that fails
/// printing it.
#[test]
fn a_deploy_with_stored_secrets_never_shows_them_anywhere() {
    use crate::secrets::{PASS, forbidden, keygen};
    let steps = r#"
[[phases.traffic.steps]]
name = "show env"
run = "env; printf 'Authorization: Basic %s\n' \"$(printf 'user:%s' \"$DB_PASSWORD\" | base64)\"; python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ[\"DB_PASSWORD\"], safe=\"\"))'"

[[phases.traffic.steps]]
name = "fail loudly"
run = "echo \"cannot connect with password $DB_PASSWORD\" >&2; exit 7"
"#;
    let text = config(&demo(), r#"VERSION = "v1", DB_PASSWORD = { secret = "DB_PASSWORD" }"#, "1m", steps)
        .replace("[pipeline]", "[env]\nDB_PASSWORD = { secret = true, min_length = 12 }\n\n[pipeline]");
    let mut platform = Platform::start(&text);
    let (key, public) = keygen(platform.path(), "age-key.txt");
    let key_var = ("WINDLASS_AGE_KEY_FILE", key.to_str().unwrap());
    for (args, stdin) in [
        (vec!["secrets", "init", "production", "--recipient", &public], ""),
        (vec!["secrets", "set", "production", "DB_PASSWORD"], PASS),
    ] {
        let mut command = std::process::Command::new(workspace_bin("windlass"));
        command.args(&args).current_dir(platform.path()).env(key_var.0, key_var.1);
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    platform.kill_server();
    platform.start_server(&[key_var]);

    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 1, "the last step fails: {}{}", run.stdout, run.stderr);
    let id = crate::platform::deploy_id(&run);
    let shown = platform.cli(&["deploy", "show", &id, "--output", "json"]);
    let logs = platform.cli(&["logs", "production", "api"]);
    let mut store = Vec::new();
    for entry in std::fs::read_dir(platform.state_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("windlass.db")) {
            store.extend(std::fs::read(&path).unwrap());
        }
    }
    let store = String::from_utf8_lossy(&store).into_owned();
    // The secret was there to hide: the steps printed it, redacted.
    assert!(shown.stdout.contains("DB_PASSWORD=[REDACTED:DB_PASSWORD]"), "{}", shown.stdout);
    assert!(shown.stdout.contains("Authorization: Basic dXNlcjp[REDACTED:DB_PASSWORD]"), "{}", shown.stdout);
    assert!(shown.stdout.contains("cannot connect with password [REDACTED:DB_PASSWORD]"), "{}", shown.stdout);
    for (what, text) in [
        ("deploy output", run.all_output()),
        ("deploy show", shown.all_output()),
        ("logs", logs.all_output()),
        ("the store's files", store),
    ] {
        for form in forbidden(PASS) {
            assert!(!text.contains(&form), "{what} shows `{form}`, a form of the secret");
        }
    }
}

/// The webhook bodies (JSON) a receiver got, in order.
fn received(server: &windlass_testkit::receiver::Server) -> Vec<serde_json::Value> {
    server.requests().iter().map(|(_, body)| serde_json::from_slice(body).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_are_announced_to_slack_and_to_a_signed_webhook() {
    use windlass_testkit::receiver::{Answer, serve, signed_with, slack_shape};
    const SIGNING: &str = "whsec-windlass-test-signing-key";
    let slack = serve(vec![Answer::Check(std::sync::Arc::new(slack_shape))], None).await;
    let hook = serve(vec![Answer::Check(signed_with(SIGNING))], None).await;
    let receivers = format!(
        "\n[alerts.receivers.slack]\ntype = \"slack\"\nwebhook_url = \"{}\"\n\n[alerts.receivers.ops]\ntype = \"webhook\"\nurl = \"{}\"\nsigning_secret = \"{SIGNING}\"\n",
        slack.url("http", "/services/T0/B0/XYZ"),
        hook.url("http", "/windlass")
    );
    let failing_step = "\n[[phases.traffic.steps]]\nname = \"purge CDN\"\nrun = \"exit 3\"\n";
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", &receivers)
        .replace("[pipeline]\n", "[pipeline]\nnotify = [\"slack\", \"ops\"]\n");
    let platform = Platform::start(&text);
    let id = platform.deploy(&["--reason", "first"]);
    platform.rewrite_config(&format!("{text}{failing_step}"));
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let failed = crate::platform::deploy_id(&run);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while slack.requests().len() < 4 || hook.requests().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "slack {:?}, hook {:?}", received(&slack), received(&hook));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mut events: Vec<(String, String)> = received(&hook)
        .iter()
        .map(|m| (m["event"].as_str().unwrap().to_owned(), m["deploy_id"].as_str().unwrap().to_owned()))
        .collect();
    events.sort();
    let mut expected = vec![
        ("deploy.started".to_owned(), id.clone()),
        ("deploy.succeeded".to_owned(), id.clone()),
        ("deploy.started".to_owned(), failed.clone()),
        ("deploy.rolled_back".to_owned(), failed.clone()),
    ];
    expected.sort();
    assert_eq!(events, expected);
    let texts: Vec<String> = received(&slack).iter().map(|m| m["text"].as_str().unwrap().to_owned()).collect();
    assert!(texts.iter().any(|t| t.starts_with(&format!("shop production: deploy {failed} rolled_back"))), "{texts:?}");
    assert!(texts.iter().any(|t| t.contains("purge CDN")), "the failure says which step: {texts:?}");
    // Every request was accepted: Slack's shape checks and the signature checks passed.
    let show = platform.cli(&["deploy", "show", &failed]);
    assert!(!show.stdout.contains("notify.failed"), "{}", show.stdout);
}

/// Promotion into an environment with approvals is a request like any deploy: it runs when
/// someone else approves it, and only if staging still runs the builds that were asked for.
#[tokio::test(flavor = "multi_thread")]
async fn a_promotion_into_production_waits_for_approval() {
    let database = windlass_testkit::postgres::TestDatabase::create().await;
    let bin = windlass_testkit::tempdir();
    let program = bin.path().join("shop-api");
    std::fs::copy(workspace_bin("windlass-demo"), &program).unwrap();
    let text = two_environments(&program)
        .replace("[environments.production]\n", "[environments.production]\napproval = \"required\"\n");
    let staging = Platform::start_shared(&text, "staging", &database.url, "alice");
    let production = Platform::start_shared(&text, "production", &database.url, "bob");
    let carol = production.add_user("carol");
    let tested = staging.deploy(&[]);
    let tested_hash = artifact_hash(&staging.json(&["deploy", "show", &tested]), "api");

    let waiting = production
        .command_as(&production.token, &["promote", "staging", "production", "--reason", "release 42"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut waiting = waiting;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(Some(status)) = waiting.try_wait() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut waiting.stderr.take().unwrap(), &mut stderr).unwrap();
            panic!("the promotion ended before its approval ({status}): {stderr}");
        }
        let run = production.cli_as(&carol, &["approve", "production", "--reason", "staging is green"]);
        if run.code == 0 {
            break;
        }
        assert!(run.stderr.contains("no deploy of `production` awaits approval"), "{}", run.stderr);
        assert!(std::time::Instant::now() < deadline, "the promotion never asked for approval");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let output = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let promoted = stdout
        .lines()
        .find_map(|l| l.strip_prefix("deploy ").and_then(|r| r.strip_suffix(" started")))
        .unwrap()
        .to_owned();
    let shown = production.json(&["deploy", "show", &promoted]);
    assert_eq!(artifact_hash(&shown, "api"), tested_hash);
    assert_eq!(shown["deploy"]["actor"], "bob");
    let reason = shown["deploy"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("promote from staging") && reason.contains("approved by carol: staging is green"),
        "{reason}"
    );
}

/// `api` with a managed secondary: one standby instance Windlass runs and deploys itself.
fn with_managed_secondary(version: &str) -> String {
    config(
        &demo(),
        &format!(r#"VERSION = "{version}""#),
        "1m",
        "\n[services.api.failover]\ninstances = 1\nmode = \"manual\"\n",
    )
}

/// What a client gets from the api through the edge: (version, color).
async fn served(platform: &Platform) -> (String, String) {
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = body_json(&reply);
    (body["version"].as_str().unwrap().to_owned(), body["color"].as_str().unwrap().to_owned())
}

/// Fails over by hand, checks what the secondary serves, and fails back.
async fn served_by_secondary(platform: &Platform) -> (String, String) {
    let run = platform.cli(&["failover", "production", "api", "--to", "secondary"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("warning"), "an in-step secondary gives no warning: {}", run.stdout);
    let answer = served(platform).await;
    let run = platform.cli(&["failover", "production", "api", "--to", "primary"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    answer
}

#[tokio::test(flavor = "multi_thread")]
async fn deploys_and_rollbacks_bring_a_managed_secondary_to_the_live_build() {
    let platform = Platform::start(&with_managed_secondary("v1"));
    let first = platform.deploy(&[]);
    let status = platform.status();
    let api = &status["services"]["api"];
    let blue = api["colors"]["blue"]["build"].as_str().unwrap().to_owned();
    assert_eq!(api["colors"]["secondary"]["build"], blue.as_str(), "{status:#}");
    assert_eq!(api["colors"]["secondary"]["instances"].as_array().unwrap().len(), 1);
    assert_eq!(api["secondary"]["in_step"], true, "{status:#}");
    assert!(api["secondary"]["warning"].is_null(), "{status:#}");
    assert_eq!(served(&platform).await, ("v1".to_owned(), "blue".to_owned()));
    assert_eq!(served_by_secondary(&platform).await, ("v1".to_owned(), "secondary".to_owned()));

    // A new version: the secondary follows the primary, after it, in the same deploy.
    platform.rewrite_config(&with_managed_secondary("v2"));
    let second = platform.deploy(&[]);
    let shown = platform.json(&["deploy", "show", &second]);
    let output: String =
        shown["steps"].as_array().unwrap().iter().filter_map(|s| s["output"].as_str()).collect::<Vec<_>>().join("\n");
    let switched = output.find("traffic switched to green").expect(&output);
    let secondary = output.find("api: the secondary runs build").expect(&output);
    assert!(switched < secondary, "the secondary is updated after the primary: {output}");
    let old_secondary = status["services"]["api"]["colors"]["secondary"]["instances"][0]["id"].as_str().unwrap();
    let status = platform.status();
    let api = &status["services"]["api"];
    let green = api["colors"]["green"]["build"].as_str().unwrap().to_owned();
    assert_eq!(api["colors"]["secondary"]["build"], green.as_str(), "{status:#}");
    assert_eq!(api["colors"]["secondary"]["deploy"], second.as_str());
    assert_eq!(api["secondary"]["in_step"], true);
    assert_ne!(api["colors"]["secondary"]["instances"][0]["id"].as_str().unwrap(), old_secondary);
    assert_eq!(served_by_secondary(&platform).await, ("v2".to_owned(), "secondary".to_owned()));
    assert_eq!(served(&platform).await, ("v2".to_owned(), "green".to_owned()));
    // 2 green + 2 warm blue + 1 secondary: the old standby was stopped.
    assert_eq!(platform.alive_instances(), 5);

    // A rollback switches the primary back at once, then brings the secondary back too.
    let run = platform.cli(&["rollback", "production", &first]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("bring api's secondary to"), "{}", run.stdout);
    assert_eq!(served(&platform).await, ("v1".to_owned(), "blue".to_owned()));
    assert_eq!(served_by_secondary(&platform).await, ("v1".to_owned(), "secondary".to_owned()));
    let status = platform.status();
    assert_eq!(status["services"]["api"]["secondary"]["in_step"], true, "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_failing_after_the_secondary_was_updated_takes_it_back_to_the_old_build() {
    let platform = Platform::start(&with_managed_secondary("v1"));
    platform.deploy(&[]);
    let blue = platform.status()["services"]["api"]["colors"]["blue"]["build"].as_str().unwrap().to_owned();
    let failing = "\n[[phases.traffic.steps]]\nname = \"purge the CDN\"\nrun = \"exit 3\"\n";
    platform.rewrite_config(&format!("{}{failing}", with_managed_secondary("v2")));
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let shown = platform.json(&["deploy", "show", &crate::platform::deploy_id(&run)]);
    let statuses = step_statuses(&shown);
    let position = |name: &str| statuses.iter().position(|(n, _)| n == name).unwrap_or_else(|| panic!("{statuses:?}"));
    assert_eq!(statuses[position("roll back api's secondary")].1, "succeeded", "{statuses:?}");
    assert!(position("roll back api's secondary") < position("roll back api"), "newest change first: {statuses:?}");
    let status = platform.status();
    let api = &status["services"]["api"];
    assert_eq!(api["live"], "blue", "{status:#}");
    assert_eq!(api["colors"]["secondary"]["build"], blue.as_str(), "{status:#}");
    assert_eq!(api["secondary"]["in_step"], true, "{status:#}");
    assert_eq!(served_by_secondary(&platform).await, ("v1".to_owned(), "secondary".to_owned()));
}
