//! Deploys end to end, driving the real binaries: edge, server, shims, demo instances.

use serde_json::Value;
use windlass_testkit::workspace_bin;

use crate::platform::{Platform, body_json, config, demo};

fn live(status: &Value, service: &str) -> String {
    status["services"][service]["live"].as_str().unwrap_or("none").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn maily_deploys_whole_then_one_phase_then_rolls_back_warm() {
    let platform = Platform::maily("staging");
    let first = platform.deploy(&["--reason", "first"]);
    let status = platform.status();
    for service in ["api", "web", "ai-worker"] {
        assert_eq!(live(&status, service), "blue", "{service}: {status:#}");
        let instances = status["services"][service]["colors"]["blue"]["instances"].as_array().unwrap();
        assert_eq!(instances.len(), 2);
        assert!(instances.iter().all(|i| i["state"] == "running"), "{status:#}");
    }
    let reply = platform.get("api.maily.localhost", "/version").await;
    assert_eq!(reply.status, 200);
    assert_eq!(body_json(&reply)["version"], "api-1.4.2");
    // The database phase backed up the (empty) staging database, then applied the migration.
    let shown = platform.json(&["deploy", "show", &first]);
    let migrate = shown["steps"].as_array().unwrap().iter().find(|s| s["phase"] == "database").unwrap().clone();
    assert_eq!(migrate["status"], "succeeded", "{migrate:#}");
    let output = migrate["output"].as_str().unwrap();
    assert!(output.contains("backup ") && output.contains(&first), "named after the deploy: {output}");
    assert!(output.contains("applied 0001 users"), "{output}");
    // The deploy's end says where its time went: waiting on services, and Windlass's own share.
    let events = platform.json(&["events", "staging", "--kind", "deploy.succeeded"]);
    let timing = &events["events"][0]["data"];
    let (elapsed, waits, overhead) =
        (timing["elapsed_ms"].as_u64(), timing["service_waits_ms"].as_u64(), timing["overhead_ms"].as_u64());
    let (elapsed, waits, overhead) = (elapsed.unwrap(), waits.unwrap(), overhead.unwrap());
    assert!(waits > 0 && waits <= elapsed && overhead == elapsed - waits, "{timing}");
    // The api's failover secondary is an address Windlass does not deploy: said, not hidden.
    let build = status["services"]["api"]["colors"]["blue"]["build"].as_str().unwrap().to_owned();
    let text = platform.cli(&["status", "staging"]).stdout;
    assert!(
        text.contains(&format!("! the secondary (127.0.0.2:18000) is not deployed by Windlass: deploys do not update it, and failing over serves the code it runs, not build {build}")),
        "{text}"
    );

    // The seeds' spelling: only the backend changes; web and the AI workers stay as they were.
    let second = platform.deploy(&["--skip-frontend", "--skip", "ai", "--reason", "api fix"]);
    let status = platform.status();
    assert_eq!(live(&status, "api"), "green");
    assert_eq!(live(&status, "web"), "blue");
    assert!(status["services"]["api"]["colors"]["blue"]["retire_at"].is_string(), "blue stays warm: {status:#}");
    assert_eq!(body_json(&platform.get("api.maily.localhost", "/version").await)["color"], "green");
    let shown = platform.json(&["deploy", "show", &second]);
    let phases: Vec<(&str, &str)> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["phase"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert!(phases.contains(&("frontend", "skipped")) && phases.contains(&("ai", "skipped")), "{phases:?}");
    assert!(phases.contains(&("backend", "succeeded")), "{phases:?}");
    assert_eq!(shown["deploy"]["actor"], "alice");
    assert_eq!(shown["deploy"]["reason"], "api fix");

    // Rollback without an id: back to the deploy before the last, by a switch to warm blue.
    let run = platform.cli(&["rollback", "staging"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("switch api back to blue"), "{}", run.stdout);
    assert_eq!(body_json(&platform.get("api.maily.localhost", "/version").await)["color"], "blue");
    let deploys = platform.json(&["deploys", "staging"]);
    let reasons: Vec<&str> =
        deploys["deploys"].as_array().unwrap().iter().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, [format!("rollback to {first}").as_str(), "api fix", "first"]);
}

#[test]
fn dry_run_prints_the_plan_and_bad_phases_are_refused() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    let run = platform.cli(&["deploy", "production", "--only", "backend", "--dry-run"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("[backend]\n  - roll out api (blue-green, 2 instances)"), "{}", run.stdout);
    assert!(run.stdout.contains("[verification] skipped (not in --only)"), "{}", run.stdout);
    assert!(platform.status()["services"].as_object().is_none_or(|s| s.is_empty()), "a dry run starts nothing");

    for (args, expected) in [
        (vec!["--skip", "backnd"], "no phase `backnd`"),
        (vec!["--skip", "backnd"], "did you mean `backend`?"),
        (vec!["--skip", "backend", "--only", "backend"], "given to both --skip and --only"),
    ] {
        let mut all = vec!["deploy", "production"];
        all.extend(args);
        let run = platform.cli(&all);
        assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(expected), "{}", run.stderr);
    }
    let run = platform.cli(&["deploy", "prod"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("environment `prod` is not declared"), "{}", run.stderr);
    let run = platform.cli(&["deploy", "show", "production-20200101-000000"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no deploy `production-20200101-000000`"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_green_that_fails_its_smoke_check_never_takes_traffic() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    platform.deploy(&[]);
    // v2 answers its health check but fails every other request: the smoke check, sent to
    // green through the edge with the pinning header, must catch it before the switch.
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v2", FAULT_ERROR_RATE = "100%""#, "1m", ""));
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("green failed smoke check `api answers`"), "{}", run.stdout);
    assert!(run.stdout.contains("blue keeps serving"), "{}", run.stdout);
    for _ in 0..20 {
        let reply = platform.get("api.shop.localhost", "/version").await;
        assert_eq!(reply.status, 200);
        assert_eq!(body_json(&reply)["version"], "v1");
    }
    let status = platform.status();
    assert_eq!(live(&status, "api"), "blue");
    assert!(status["services"]["api"]["colors"].get("green").is_none(), "green is gone: {status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_by_id_runs_the_old_build_after_a_rebuild() {
    let platform = Platform::start(&config("./app", r#"VERSION = "v1""#, "0s", ""));
    // The service's binary lives beside the config; "rebuilding" it changes its bytes.
    let app = platform.path().join("app");
    std::fs::copy(workspace_bin("windlass-demo"), &app).unwrap();
    let first = platform.deploy(&[]);
    let first_build = body_json(&platform.get("api.shop.localhost", "/version").await)["build_id"].clone();

    let mut bytes = std::fs::read(&app).unwrap();
    bytes.extend_from_slice(b"rebuilt");
    std::fs::write(&app, bytes).unwrap();
    platform.deploy(&[]);
    let second_build = body_json(&platform.get("api.shop.localhost", "/version").await)["build_id"].clone();
    assert_ne!(first_build, second_build, "the rebuilt binary runs");

    // keep_warm is 0: the first color is gone, so the rollback redeploys the frozen artifact.
    let run = platform.cli(&["rollback", "production", &first, "--reason", "bad build"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("redeploy api as of {first}")), "{}", run.stdout);
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(body_json(&reply)["build_id"], first_build, "the old code runs, not today's binary");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_deploy_at_a_time_and_the_lock_is_inspectable_and_breakable() {
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", "").replace(
        "[edge]",
        "[[phases.traffic.steps]]\nname = \"wait for the CDN\"\nrun = \"sleep 3\"\ntimeout = \"30s\"\n\n[edge]",
    );
    let platform = Platform::start(&text);
    let run = platform.cli(&["deploy", "production", "--detach"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let running = crate::platform::deploy_id(&run);
    let second = platform.cli(&["deploy", "production"]);
    assert_eq!(second.code, 2, "{}{}", second.stdout, second.stderr);
    assert!(second.stderr.contains("is being deployed by"), "{}", second.stderr);
    assert!(second.stderr.contains("deploy requested by alice"), "{}", second.stderr);
    let shown = platform.cli(&["lock", "show", "production"]);
    assert!(shown.stdout.contains("production is locked by"), "{}", shown.stdout);
    let no_reason = platform.cli(&["lock", "break", "production", "--reason", " "]);
    assert_eq!(no_reason.code, 2, "{}", no_reason.stderr);
    let broken = platform.cli(&["lock", "break", "production", "--reason", "testing the lock"]);
    assert_eq!(broken.code, 0, "{}", broken.stderr);
    assert!(platform.cli(&["lock", "show", "production"]).stdout.contains("production is not locked"));
    let shown = platform.json(&["deploy", "show", &running]);
    assert_eq!(shown["deploy"]["id"], running.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn emergency_commands_are_applied_and_recorded() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    platform.deploy(&[]);
    let run = platform.cli(&["maintenance", "on", "production", "api", "--reason", "database upgrade"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(platform.get("api.shop.localhost", "/version").await.status, 503);
    assert!(platform.cli(&["status"]).stdout.contains("api: live blue (maintenance)"));
    assert_eq!(platform.cli(&["maintenance", "off", "production", "api"]).code, 0);
    assert_eq!(platform.get("api.shop.localhost", "/version").await.status, 200);

    let run = platform.cli(&["scale", "production", "api", "3", "--reason", "launch day"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let status = platform.status();
    assert_eq!(status["services"]["api"]["colors"]["blue"]["instances"].as_array().unwrap().len(), 3);
    let run = platform.cli(&["scale", "production", "nope", "3"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("`nope` does not run in `production`"), "{}", run.stderr);
    // A scale whose new instance cannot start changes nothing, and is recorded as failed.
    for entry in std::fs::read_dir(platform.state_dir().join("artifacts")).unwrap() {
        let _ = std::fs::remove_file(entry.unwrap().path().join("windlass-demo"));
    }
    let run = platform.cli(&["scale", "production", "api", "5", "--reason", "more"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let status = platform.status();
    assert_eq!(status["services"]["api"]["colors"]["blue"]["instances"].as_array().unwrap().len(), 3);
    assert_eq!(platform.alive_instances(), 3);
    let failed = platform.json(&["events", "production", "--kind", "scale.failed"]);
    let failed = failed["events"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["message"].as_str().unwrap().starts_with("api not scaled to 5: more: "), "{failed:?}");
    assert_eq!(platform.get("api.shop.localhost", "/version").await.status, 200);

    // No secondary is configured: failover is refused with the edge's reason.
    let run = platform.cli(&["failover", "production", "api", "--to", "secondary"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("no secondary pool"), "{}", run.stderr);
    let run = platform.cli(&["failover", "production", "api", "--to", "sideways"]);
    assert_eq!(run.code, 2);

    let logs = platform.cli(&["logs", "production", "api", "--tail", "5"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(logs.stdout.contains("| "), "{}", logs.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_services_and_steps_fail_the_deploy_clearly_and_blue_keeps_serving() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    platform.deploy(&[]);
    let cases = [
        (config("/bin/false", "", "1m", ""), "stopped before it became healthy"),
        (
            config(&demo(), r#"VERSION = "v2", FAULT_HEALTH = "fail""#, "1m", "")
                .replace("start_timeout = \"20s\"", "start_timeout = \"2s\""),
            "was not healthy within",
        ),
        (
            config(&demo(), r#"VERSION = "v2""#, "1m", "").replace(
                "[edge]",
                "[[phases.traffic.steps]]\nname = \"hangs\"\nrun = \"sleep 30\"\ntimeout = \"1s\"\n\n[edge]",
            ),
            "timed out after 1s",
        ),
    ];
    for (text, expected) in cases {
        platform.rewrite_config(&text);
        let run = platform.cli(&["deploy", "production"]);
        assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
        assert!(run.stdout.contains(expected), "expected `{expected}` in:\n{}", run.stdout);
        let reply = platform.get("api.shop.localhost", "/version").await;
        assert_eq!(body_json(&reply)["version"], "v1", "after `{expected}`");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_wants_a_valid_token_and_well_formed_bodies() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    let address: std::net::SocketAddr = platform.server_url.trim_start_matches("http://").parse().unwrap();
    let path = "/api/v1/environments/production/deploys";
    let none = windlass_testkit::http::request("POST", address, path, &[], "{}").await.unwrap();
    assert_eq!(none.status, 401);
    let wrong = windlass_testkit::http::request("POST", address, path, &[("authorization", "Bearer wl_nope")], "{}")
        .await
        .unwrap();
    assert_eq!(wrong.status, 403);
    let bearer = format!("Bearer {}", platform.token);
    let auth = [("authorization", bearer.as_str())];
    let malformed = windlass_testkit::http::request("POST", address, path, &auth, "{\"skip\": 3}").await.unwrap();
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(malformed.body.contains("invalid request body"), "{}", malformed.body);
    let unknown = windlass_testkit::http::request("POST", address, path, &auth, "{\"skp\": []}").await.unwrap();
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(platform.status()["services"].as_object().is_none_or(|s| s.is_empty()), "nothing started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_names_a_service_version_which_sticks_until_another_is_named() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "${WINDLASS_VERSION}""#, "1m", ""));
    // The config uses the version, and none is known yet: the deploy says how to name one.
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("name one with `--version api=<version>`"), "{}", run.stderr);

    platform.deploy(&["--version", "api=2.1.0"]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "2.1.0");
    let status = platform.status();
    assert_eq!(status["services"]["api"]["colors"]["blue"]["version"], "2.1.0", "{status:#}");
    assert!(platform.cli(&["status"]).stdout.contains("version 2.1.0"));

    // A later deploy that names no version keeps the one the service runs.
    platform.deploy(&[]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "2.1.0");
    let second = platform.deploy(&["--version", "api=2.2.0-rc.1"]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "2.2.0-rc.1");
    let shown = platform.json(&["deploy", "show", &second]);
    assert_eq!(shown["deploy"]["artifacts"]["services"]["api"]["artifact"]["version"], "2.2.0-rc.1");

    // Back to the deploy before: the version comes back with the build.
    let run = platform.cli(&["rollback", "production"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "2.1.0");

    for (args, expected) in [
        (vec!["--version", "apx=3"], "no service `apx` runs in `production`; did you mean `api`?"),
        (vec!["--version", "api=3 beta"], "a version is 1 to 64 letters"),
        (vec!["--version", "api"], "write SERVICE=VERSION"),
        (vec!["--version", "api=3", "--only", "verification"], "this deploy does not roll out `api`"),
    ] {
        let mut all = vec!["deploy", "production"];
        all.extend(args);
        let run = platform.cli(&all);
        assert_eq!(run.code, 2, "{all:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(expected), "{all:?}: {}", run.stderr);
    }
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "2.1.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_directory_is_frozen_so_a_cold_rollback_runs_the_old_files() {
    let text =
        config("sh start.sh", "", "0s", "").replace("run = \"sh start.sh\"", "run = \"sh start.sh\"\ndir = \"app\"");
    let platform = Platform::start(&text);
    let app = platform.path().join("app");
    std::fs::create_dir_all(app.join(".git")).unwrap();
    std::fs::write(app.join(".git/HEAD"), "ignored").unwrap();
    std::fs::write(app.join("start.sh"), format!("VERSION=$(cat version.txt) exec {}\n", demo())).unwrap();
    std::fs::write(app.join("version.txt"), "one").unwrap();
    let first = platform.deploy(&[]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "one");
    let build_one = platform.status()["services"]["api"]["colors"]["blue"]["build"].as_str().unwrap().to_owned();

    // A change to a data file is a new build, though the program (sh) is the same.
    std::fs::write(app.join("version.txt"), "two").unwrap();
    let second = platform.deploy(&[]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "two");
    let status = platform.status();
    assert_ne!(status["services"]["api"]["colors"]["green"]["build"].as_str().unwrap(), build_one);
    // Only .git changed: the same tree.
    std::fs::write(app.join(".git/HEAD"), "moved").unwrap();
    let third = platform.deploy(&[]);
    let tree = |id: &str| {
        let shown = platform.json(&["deploy", "show", id]);
        shown["deploy"]["artifacts"]["services"]["api"]["artifact"]["tree_sha256"].as_str().unwrap().to_owned()
    };
    assert_eq!(tree(&second), tree(&third));
    assert_ne!(tree(&first), tree(&second));

    // Nothing stays warm (keep_warm 0s): the rollback redeploys blue from the frozen tree, which
    // still says "one" although the directory now says "two".
    let run = platform.cli(&["rollback", "production", &first]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("redeploy api"), "{}", run.stdout);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "one");
    assert_eq!(std::fs::read_to_string(app.join("version.txt")).unwrap(), "two", "the source is untouched");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_the_configured_probes_and_records_a_probe_going_down() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_address = closed.local_addr().unwrap();
    drop(closed);
    let probes = format!(
        r#"
[probes.cache]
type = "tcp"
address = "{closed_address}"
interval = "1s"
failure_threshold = 2
service = "api"
"#
    );
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", &probes));
    platform.deploy(&[]);
    let mut answer = Value::Null;
    for _ in 0..100 {
        // Exits 1 once a probe is down: read the JSON whatever the exit code.
        answer = serde_json::from_str(&platform.cli(&["probes", "production", "--output", "json"]).stdout).unwrap();
        let all = answer["probes"].as_array().cloned().unwrap_or_default();
        let cache_down = all.iter().any(|p| p["name"] == "cache" && p["health"] == "down");
        let instances = all.iter().filter(|p| p["name"].as_str().is_some_and(|n| n.starts_with("health/api/127.")));
        if cache_down && instances.count() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let all = answer["probes"].as_array().unwrap();
    let cache = all.iter().find(|p| p["name"] == "cache").expect("the configured probe runs");
    assert_eq!(cache["health"], "down", "{answer:#}");
    assert!(cache["last_reason"].as_str().unwrap().contains("connection refused"), "{cache:#}");
    // The live instances' health endpoints are probed too, one probe per instance.
    let health: Vec<&Value> =
        all.iter().filter(|p| p["name"].as_str().unwrap().starts_with("health/api/127.0.0.1:")).collect();
    assert_eq!(health.len(), 2, "{answer:#}");

    let run = platform.cli(&["probes", "production"]);
    assert_eq!(run.code, 1, "a probe is down: {}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("cache") && run.stdout.contains("failed: connect"), "{}", run.stdout);
    let events = platform.cli(&["events", "production", "--kind", "probe.down"]);
    assert!(events.stdout.contains("cache is down after 2 failed checks"), "{}{}", events.stdout, events.stderr);
    // Rebuilding the probes for the deploy's instances did not record the same news twice.
    assert_eq!(events.stdout.matches("cache is down").count(), 1, "{}", events.stdout);
}

#[test]
fn two_environments_behind_one_edge_may_not_share_a_service_name() {
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", "")
        .replace("[environments.production]\n", "[environments.staging]\n\n[environments.production]\n");
    let platform = Platform::start(&text);
    platform.deploy(&[]);
    let run = platform.cli(&["deploy", "staging"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("`api` of `production` runs behind this server's edge"), "{}", run.stderr);
    assert!(run.stderr.contains("windlass server --env staging"), "{}", run.stderr);
    // Nothing changed for production.
    let status = platform.status();
    assert_eq!(status["services"]["api"]["live"], "blue", "{status:#}");
}

/// A server that died holding the deploy lock on another host (no restart of it will release
/// the lock): once its heartbeat is older than the lock's TTL, the next deploy takes the lock
/// over and proceeds, and the audit trail says it did and from whom.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_takes_over_a_stale_lock_and_says_so() {
    use windlass_store::{Acquire, Holder, ManualClock};
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    // The dead server took the lock an hour ago by its clock and never renewed it.
    let location = platform.state_dir().join("windlass.db").display().to_string();
    let an_hour_ago = jiff::Timestamp::now().checked_sub(jiff::SignedDuration::from_hours(1)).unwrap();
    let store = windlass_store::open(&location, std::sync::Arc::new(ManualClock::new(an_hour_ago))).await.unwrap();
    let gone = Holder { id: "server-gone".into(), host: "host-gone".into(), pid: 4242 };
    let ttl = std::time::Duration::from_secs(30);
    let Acquire::Acquired(_) =
        store.acquire_lease("deploy/production", &gone, "deploy requested by bob", ttl).await.unwrap()
    else {
        panic!("the lock was free");
    };
    drop(store);
    let shown = platform.cli(&["lock", "show", "production"]);
    assert!(shown.stdout.contains("locked by server-gone"), "{}", shown.stdout);
    assert!(shown.stdout.contains("stale"), "{}", shown.stdout);

    let id = platform.deploy(&[]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
    assert!(platform.cli(&["lock", "show", "production"]).stdout.contains("production is not locked"));
    let events = platform.json(&["events", "production", "--kind", "deploy.started"]);
    let started = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subject"] == id.as_str())
        .unwrap_or_else(|| panic!("no deploy.started for {id}: {events:#}"));
    let message = started["message"].as_str().unwrap();
    assert!(
        message
            .contains("took over the stale lock held by server-gone (pid 4242 on host-gone) (deploy requested by bob)"),
        "{message}"
    );
    let takeovers = platform.json(&["events", "--kind", "lease.taken_over"]);
    let takeovers = takeovers["events"].as_array().unwrap();
    assert_eq!(takeovers.len(), 1, "{takeovers:#?}");
    assert_eq!(takeovers[0]["subject"], "deploy/production");
    assert_eq!(takeovers[0]["data"]["previous"]["holder"], "server-gone");
    assert!(takeovers[0]["message"].as_str().unwrap().contains("took over stale lease"), "{takeovers:#?}");
}

/// A client that asks for a scale and goes away (Ctrl-C, its timeout) while the new instances
/// start slowly: the scale is the server's to finish. It ends on its own, releases the lock, and
/// every instance that runs is one the state records (none is left running unrecorded).
#[tokio::test(flavor = "multi_thread")]
async fn a_scale_whose_client_disconnects_still_ends_cleanly_and_releases_the_lock() {
    use std::io::Write as _;
    let text =
        config(&demo(), r#"VERSION = "v1", SLOW_START = "2s""#, "1m", "").replace("instances = 2", "instances = 1");
    let platform = Platform::start(&text);
    platform.deploy(&[]);
    assert_eq!(platform.alive_instances(), 1);

    // A raw request, so that the test decides when its socket closes.
    let address = platform.server_url.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut socket = std::net::TcpStream::connect(&address).unwrap();
    let body = r#"{"instances":3,"reason":"launch day"}"#;
    write!(
        socket,
        "PUT /api/v1/environments/production/services/api/scale HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        platform.token,
        body.len()
    )
    .unwrap();
    socket.flush().unwrap();
    // Mid-way: the first new instance runs but is still starting (slowly); the scale waits on it.
    for _ in 0..200 {
        if platform.alive_instances() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(platform.alive_instances() >= 2, "the scale started a new instance");
    socket.shutdown(std::net::Shutdown::Both).unwrap();
    drop(socket);

    let mut shown = platform.cli(&["lock", "show", "production"]);
    for _ in 0..300 {
        if shown.stdout.contains("production is not locked") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        shown = platform.cli(&["lock", "show", "production"]);
    }
    assert!(shown.stdout.contains("production is not locked"), "the scale released the lock: {}", shown.stdout);
    let status = platform.status();
    let recorded = status["services"]["api"]["colors"]["blue"]["instances"].as_array().unwrap().clone();
    assert_eq!(recorded.len(), 3, "the scale finished without its client: {status:#}");
    for instance in &recorded {
        assert_eq!(instance["state"], "running", "{status:#}");
    }
    assert_eq!(platform.alive_instances(), recorded.len(), "no instance runs unrecorded: {status:#}");
    let events = platform.json(&["events", "production", "--kind", "scale"]);
    assert_eq!(events["events"][0]["message"], "api scaled to 3: launch day", "{events:#}");
    // The edge routes to all three.
    for _ in 0..10 {
        assert_eq!(platform.get("api.shop.localhost", "/version").await.status, 200);
    }
}
