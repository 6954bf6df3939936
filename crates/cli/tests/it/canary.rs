//! Canary releases judged on real traffic through the real edge: a load thread sends requests
//! while the canary steps run, and the analysis reads the edge's own counters of the canary pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use windlass_testkit::workspace_bin;

use crate::platform::{Platform, body_json, config, demo, deploy_id};

/// `api` as a canary: two steps below 100% and one-second analysis intervals. `api_env` is
/// spliced into the service's env, `analysis` into its analysis table.
fn canary_config(api_env: &str, analysis: &str) -> String {
    format!(
        r#"[project]
name = "shop"

[environments.production]

[pipeline]
phases = ["validate", "backend", "verification", "traffic"]

[services.api]
phase = "backend"
run = "{demo}"
instances = 1
strategy = {{ canary = [{{ weight = 30, pause = "1s" }}, {{ weight = 60, pause = "1s" }}, {{ weight = 100 }}] }}
analysis = {{ interval = "1s", max_error_rate = "5%", min_requests = 10, {analysis} }}
keep_warm = "0s"
route = {{ host = "api.shop.localhost", path = "/" }}
health = {{ path = "/health", interval = "100ms", timeout = "1s", healthy_after = 1, start_timeout = "20s" }}
env = {{ {api_env} }}

[edge]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
"#,
        demo = workspace_bin("windlass-demo").display()
    )
}

/// Requests through the edge on a thread of their own until stopped (bounded in count and time).
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(edge: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let started = Instant::now();
                while !flag.load(Ordering::Relaxed)
                    && count.load(Ordering::Relaxed) < 50_000
                    && started.elapsed() < Duration::from_secs(180)
                {
                    let _ =
                        windlass_testkit::http::request("GET", edge, "/version", &[("host", "api.shop.localhost")], "")
                            .await;
                    count.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            });
        });
        Load { stop, sent, thread: Some(thread) }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn canary(platform: &Platform) -> Value {
    let all = platform.json(&["canary", "status", "production"]);
    all["canaries"].as_array().unwrap().iter().find(|c| c["service"] == "api").cloned().unwrap_or(Value::Null)
}

/// Deploys v1 (the first rollout of a canary service takes all traffic at once), then writes
/// the config for the next deploy.
fn platform_on_v1(next_env: &str, next_analysis: &str) -> Platform {
    let platform = Platform::start(&canary_config(r#"VERSION = "v1""#, "failure_limit = 1, inconclusive_limit = 2"));
    platform.deploy(&["--reason", "v1"]);
    platform.rewrite_config(&canary_config(next_env, next_analysis));
    platform
}

#[tokio::test(flavor = "multi_thread")]
async fn a_healthy_canary_passes_every_step_on_real_traffic() {
    let platform = platform_on_v1(r#"VERSION = "v2""#, "failure_limit = 1, inconclusive_limit = 5");
    let load = Load::start(platform.edge_address);
    let id = platform.deploy(&["--reason", "v2"]);
    drop(load);
    let shown = platform.json(&["deploy", "show", &id]);
    let output = shown["steps"].to_string();
    assert!(output.contains("step 1/2: 30% of traffic on green"), "{output}");
    assert!(output.contains("step 2/2: 60% of traffic on green"), "{output}");
    assert!(output.contains("analysis passed"), "{output}");
    let progress = canary(&platform);
    assert_eq!(progress["outcome"], "promoted", "{progress:#}");
    assert!(progress["passed"].as_u64().unwrap() >= 2, "one passed interval per step at least: {progress:#}");
    assert_eq!(progress["failed"], 0, "{progress:#}");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_answering_errors_is_aborted_and_the_stable_color_keeps_serving() {
    // Half of the canary's answers are 500s from its first request on.
    let platform =
        platform_on_v1(r#"VERSION = "v2", FAULT_ERROR_RATE = "0.5""#, "failure_limit = 1, inconclusive_limit = 5");
    let load = Load::start(platform.edge_address);
    let run = platform.cli(&["deploy", "production", "--reason", "bad v2"]);
    let sent = load.sent.load(Ordering::Relaxed);
    drop(load);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let id = deploy_id(&run);
    let shown = platform.json(&["deploy", "show", &id]);
    // Only the canary changed anything, and it was taken out: the deploy failed.
    assert_eq!(shown["deploy"]["status"], "failed", "{shown:#}");
    let error = shown["deploy"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("canary green aborted") && error.contains("error rate"), "{error}");
    let progress = canary(&platform);
    assert_eq!(progress["outcome"], "aborted", "{progress:#}");
    // Aborted at the first failed interval: nothing passed before it, the step never advanced.
    assert_eq!((progress["failed"].as_u64(), progress["passed"].as_u64()), (Some(1), Some(0)), "{progress:#}");
    assert_eq!(progress["step"], 1, "{progress:#}");
    let last = &progress["last"];
    assert!(last["errors"].as_u64().unwrap() > 0 && last["requests"].as_u64().unwrap() >= 10, "{progress:#}");
    assert!(sent > 0);
    let status = platform.status();
    assert_eq!(status["services"]["api"]["live"], "blue", "{status:#}");
    assert!(status["services"]["api"]["colors"]["green"].is_null(), "the canary is stopped: {status:#}");
    for _ in 0..20 {
        let reply = platform.get("api.shop.localhost", "/version").await;
        assert_eq!((reply.status, body_json(&reply)["version"].as_str()), (200, Some("v1")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_without_traffic_is_inconclusive_and_aborts_instead_of_passing() {
    let platform = platform_on_v1(r#"VERSION = "v2""#, "failure_limit = 1, inconclusive_limit = 2");
    let run = platform.cli(&["deploy", "production", "--reason", "nobody is looking"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let progress = canary(&platform);
    assert_eq!(progress["outcome"], "aborted", "{progress:#}");
    assert_eq!(progress["passed"], 0, "{progress:#}");
    let reason = progress["reason"].as_str().unwrap();
    assert!(
        reason.contains("inconclusive 2 times in a row") && reason.contains("fewer than min_requests = 10"),
        "{reason}"
    );
    assert_eq!(platform.status()["services"]["api"]["live"], "blue");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_canary_can_be_promoted_by_hand_and_bad_requests_are_refused() {
    // A long first pause: only a manual promote ends it within the test.
    let platform = Platform::start(&canary_config(r#"VERSION = "v1""#, "failure_limit = 1"));
    platform.deploy(&[]);
    platform.rewrite_config(
        &canary_config(r#"VERSION = "v2""#, "failure_limit = 1")
            .replace(r#"pause = "1s""#, r#"pause = "1h""#)
            .replace(r#"interval = "1s", max_error_rate = "5%", min_requests = 10, "#, r#"interval = "1h", "#),
    );
    let run = platform.cli(&["canary", "promote", "production"]);
    assert_eq!(run.code, 2, "nothing runs yet: {}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("no canary is running in production"), "{}", run.stderr);

    let run = platform.cli(&["deploy", "production", "--detach"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let id = deploy_id(&run);
    let deadline = Instant::now() + Duration::from_secs(60);
    while canary(&platform)["outcome"] != "running" || canary(&platform)["deploy_id"] != id.as_str() {
        assert!(Instant::now() < deadline, "the canary never started: {:#}", canary(&platform));
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = platform.cli(&["canary", "status", "production"]);
    assert!(text.stdout.contains("step 1/2 at 30%"), "{}", text.stdout);
    let run = platform.cli(&["canary", "promote", "production", "api"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    while platform.json(&["deploy", "show", &id])["deploy"]["status"] == "running" {
        assert!(Instant::now() < deadline, "the promoted deploy never finished");
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = platform.json(&["deploy", "show", &id]);
    assert_eq!(shown["deploy"]["status"], "succeeded", "{shown:#}");
    assert!(shown["steps"].to_string().contains("promoted by alice"), "{shown:#}");
    assert_eq!(canary(&platform)["outcome"], "promoted");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v2");
    let run = platform.cli(&["canary", "abort", "production", "api"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("has no running canary"), "{}", run.stderr);
}

/// Outside a deploy the edge sends traffic to the live color only: a split left behind (a
/// canary abort whose reset failed, or weights set at the edge around the control plane) is
/// returned by the server, and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn traffic_left_on_a_non_live_color_outside_a_deploy_is_returned_to_the_live_one() {
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "10m", ""));
    platform.deploy(&[]);
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v2""#, "10m", ""));
    platform.deploy(&[]);
    let authorization = format!("Bearer {}", crate::platform::EDGE_TOKEN);
    let weights = |body: &'static str| {
        let authorization = authorization.clone();
        async move {
            let headers = [("authorization", authorization.as_str())];
            windlass_testkit::http::request("PUT", platform.edge_admin, "/edge/services/api/weights", &headers, body)
                .await
                .unwrap()
        }
    };
    assert_eq!(weights(r#"{"blue": 50, "green": 50}"#).await.status, 200);
    let mut returned = false;
    for _ in 0..100 {
        let headers = [("authorization", authorization.as_str())];
        let state =
            windlass_testkit::http::request("GET", platform.edge_admin, "/edge/state", &headers, "").await.unwrap();
        assert_eq!(state.status, 200, "{}", state.body);
        let state: Value = serde_json::from_str(&state.body).unwrap();
        let pools = &state["services"]["api"]["pools"];
        if pools["green"]["weight"] == 100 && pools["blue"]["weight"] == 0 {
            returned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(returned, "the split was not returned to green");
    let events = platform.cli(&["events", "production", "--kind", "edge.traffic_returned"]);
    assert!(events.stdout.contains("all of it is back on green"), "{}{}", events.stdout, events.stderr);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v2");
}
