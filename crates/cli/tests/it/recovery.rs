//! kill -9 of the server during a deploy, at named failpoints: on restart the deploy is marked
//! interrupted at its step, the lock is free, the edge serves a healthy known version and only
//! the instances the state records still run. The edge and the instances serve throughout.

use serde_json::Value;

use crate::platform::{Platform, body_json, config, demo};

fn instance_count(platform: &Platform) -> usize {
    platform.alive_instances()
}

/// Deploys v1, then v2 with the server set to abort at `failpoint`; restarts the server.
/// Returns the recovery lines and the interrupted deploy's record.
async fn crash_at(failpoint: &str) -> (Platform, Vec<String>, Value) {
    let mut platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "10m", ""));
    platform.deploy(&[]);
    platform.kill_server();
    platform.start_server(&[("WINDLASS_FAILPOINTS", &format!("{failpoint}=abort"))]);
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v2""#, "10m", ""));
    let run = platform.cli(&["deploy", "production"]);
    assert_ne!(run.code, 0, "the server died mid-deploy: {}{}", run.stdout, run.stderr);
    let id = crate::platform::deploy_id(&run);
    // The server is gone; the edge still serves.
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(reply.status, 200, "the edge serves while the server is down");
    platform.kill_server();
    let recovered = platform.start_server(&[]);
    let shown = platform.json(&["deploy", "show", &id]);
    assert_eq!(shown["deploy"]["status"], "interrupted", "{shown:#}");
    assert!(platform.cli(&["lock", "show", "production"]).stdout.contains("production is not locked"));
    (platform, recovered, shown)
}

async fn wait_for_instances(platform: &Platform, expected: usize) {
    for _ in 0..200 {
        if instance_count(platform) == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("expected {expected} running instances, found {}", instance_count(platform));
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_starting_an_instance_the_orphan_is_stopped() {
    let (platform, recovered, _) = crash_at("pipeline.instance_started").await;
    assert!(recovered.iter().any(|l| l.contains("was interrupted at step `roll out api")), "{recovered:?}");
    assert!(recovered.iter().any(|l| l.contains("started by an interrupted deploy")), "{recovered:?}");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
    wait_for_instances(&platform, 2).await;
    assert_eq!(platform.status()["services"]["api"]["live"], "blue");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_before_the_switch_green_is_retired_and_blue_serves() {
    let (platform, recovered, _) = crash_at("pipeline.before_switch").await;
    assert!(recovered.iter().any(|l| l.contains("never took traffic; it is retired")), "{recovered:?}");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
    // The warm-color reaper stops green within a second or so, then forgets it.
    wait_for_instances(&platform, 2).await;
    let mut status = platform.status();
    for _ in 0..100 {
        if status["services"]["api"]["colors"].get("green").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status = platform.status();
    }
    assert_eq!(status["services"]["api"]["live"], "blue");
    assert!(status["services"]["api"]["colors"].get("green").is_none(), "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_after_the_switch_the_edge_decides_green_is_live() {
    let (platform, recovered, _) = crash_at("pipeline.after_switch").await;
    assert!(recovered.iter().any(|l| l.contains("the edge routes to green; recorded as live")), "{recovered:?}");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v2");
    let status = platform.status();
    assert_eq!(status["services"]["api"]["live"], "green");
    assert!(status["services"]["api"]["colors"]["blue"]["retire_at"].is_string(), "blue stays warm: {status:#}");
    // And the next deploy works from there.
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v3""#, "10m", ""));
    platform.deploy(&[]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v3");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_request_fails_through_a_server_kill_and_restart() {
    let mut platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "10m", ""));
    platform.deploy(&[]);
    let address = platform.edge_address;
    let load = tokio::spawn(async move {
        let mut failures = 0;
        for _ in 0..300 {
            match windlass_testkit::http::request("GET", address, "/version", &[("host", "api.shop.localhost")], "")
                .await
            {
                Ok(reply) if reply.status == 200 => {}
                _ => failures += 1,
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        failures
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    platform.kill_server();
    platform.start_server(&[]);
    assert_eq!(load.await.unwrap(), 0, "requests failed while the server was killed and restarted");
}

/// A server killed while a canary holds 60% of the traffic: on restart the canary, never
/// promoted, gives all of it back to the stable color (even though it had the larger share),
/// is recorded as aborted, and is retired.
#[tokio::test(flavor = "multi_thread")]
async fn killed_in_the_middle_of_a_canary_the_stable_color_takes_all_traffic_back() {
    let canary = |version: &str| {
        config(&demo(), &format!(r#"VERSION = "{version}""#), "0s", "").replace(
            r#"strategy = "blue-green""#,
            r#"strategy = { canary = [{ weight = 60, pause = "1h" }, { weight = 100 }] }"#,
        )
    };
    let mut platform = Platform::start(&canary("v1"));
    platform.deploy(&[]);
    platform.kill_server();
    platform.start_server(&[("WINDLASS_FAILPOINTS", "pipeline.canary.step_set=abort")]);
    platform.rewrite_config(&canary("v2"));
    let run = platform.cli(&["deploy", "production"]);
    assert_ne!(run.code, 0, "the server died at the canary's first step: {}{}", run.stdout, run.stderr);
    platform.kill_server();
    let recovered = platform.start_server(&[]);
    assert!(
        recovered
            .iter()
            .any(|l| l.contains("an interrupted canary had part of the traffic; all of it is back on blue")),
        "{recovered:?}"
    );
    let status = platform.status();
    assert_eq!(status["services"]["api"]["live"], "blue", "{status:#}");
    for _ in 0..20 {
        assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
    }
    let progress = platform.json(&["canary", "status", "production"]);
    assert_eq!(progress["canaries"][0]["outcome"], "aborted", "{progress:#}");
    wait_for_instances(&platform, 2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_between_recording_a_new_secondary_and_the_pool_swap_the_pool_gets_the_recorded_one() {
    let with_secondary = |version: &str| {
        let env = format!(r#"VERSION = "{version}""#);
        config(&demo(), &env, "10m", "\n[services.api.failover]\ninstances = 1\nmode = \"manual\"\n")
    };
    let mut platform = Platform::start(&with_secondary("v1"));
    platform.deploy(&[]);
    platform.kill_server();
    platform.start_server(&[("WINDLASS_FAILPOINTS", "pipeline.secondary.recorded=abort")]);
    platform.rewrite_config(&with_secondary("v2"));
    let run = platform.cli(&["deploy", "production"]);
    assert_ne!(run.code, 0, "the server died mid-deploy: {}{}", run.stdout, run.stderr);
    platform.kill_server();
    let recovered = platform.start_server(&[]);
    assert!(recovered.iter().any(|l| l.contains("the secondary pool holds the recorded instances")), "{recovered:?}");
    // The v1 standby, no longer recorded, is stopped: 2 green, 2 warm blue, the v2 standby.
    wait_for_instances(&platform, 5).await;
    let status = platform.status();
    assert_eq!(status["services"]["api"]["live"], "green", "{status:#}");
    assert_eq!(status["services"]["api"]["secondary"]["in_step"], true, "{status:#}");
    let instance = &status["services"]["api"]["colors"]["secondary"]["instances"][0];
    assert_eq!(instance["healthy"], true, "the recorded standby is the one routed: {status:#}");
    assert_eq!(platform.cli(&["failover", "production", "api", "--to", "secondary"]).code, 0);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v2");
}

/// A one-instance rolling service, the server killed after the edge's pool got the new instance
/// but before the state recorded it: recovery stops the unrecorded new instance, so it must put
/// the recorded (still running) one back in the pool first. The service answers after the
/// restart, and what the status records is what the edge routes to.
#[tokio::test(flavor = "multi_thread")]
async fn killed_between_a_rolling_pool_replacement_and_its_record_the_service_still_answers() {
    let rolling = |version: &str| {
        config(&demo(), &format!(r#"VERSION = "{version}""#), "0s", "")
            .replace(r#"strategy = "blue-green""#, r#"strategy = "rolling""#)
            .replace("instances = 2", "instances = 1")
    };
    let mut platform = Platform::start(&rolling("v1"));
    platform.deploy(&[]);
    platform.kill_server();
    platform.start_server(&[("WINDLASS_FAILPOINTS", "pipeline.rolling.pool_replaced=abort")]);
    platform.rewrite_config(&rolling("v2"));
    let run = platform.cli(&["deploy", "production"]);
    assert_ne!(run.code, 0, "the server died mid-rollout: {}{}", run.stdout, run.stderr);
    platform.kill_server();
    let recovered = platform.start_server(&[]);
    assert!(
        recovered.iter().any(|l| l.contains("api: blue's pool at the edge holds its recorded instances again")),
        "{recovered:?}"
    );
    assert!(recovered.iter().any(|l| l.contains("started by an interrupted deploy")), "{recovered:?}");
    wait_for_instances(&platform, 1).await;
    for _ in 0..20 {
        let reply = platform.get("api.shop.localhost", "/version").await;
        assert_eq!(reply.status, 200, "the service answers after recovery: {}", reply.body);
        assert_eq!(body_json(&reply)["version"], "v1");
    }
    let status = platform.status();
    let blue = &status["services"]["api"]["colors"]["blue"];
    assert_eq!(status["services"]["api"]["live"], "blue", "{status:#}");
    let instances = blue["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{status:#}");
    assert_eq!(instances[0]["state"], "running", "{status:#}");
    assert_eq!(instances[0]["healthy"], true, "the recorded instance is the one the edge routes to: {status:#}");
    // And the next deploy rolls from there.
    platform.rewrite_config(&rolling("v3"));
    platform.deploy(&[]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v3");
}
