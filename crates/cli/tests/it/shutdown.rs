//! `windlass server` stopping on SIGTERM in the middle of a deploy, and its logs: each deploy's
//! lines carry its spans (`deploy{id,env}`, `phase{name}`, `step{name}`, `rollout{...}`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use windlass_testkit::process::Process;
use windlass_testkit::workspace_bin;

use crate::harness::Run;
use crate::platform::{EDGE_TOKEN, Platform, body_json, config, demo};

/// Starts the platform's server again with `env` and `args` added, its log (stderr) written to
/// `log`; returns what it printed before announcing its address.
fn start_server_logging(platform: &mut Platform, env: &[(&str, &str)], args: &[&str], log: &Path) -> Vec<String> {
    let mut server = Command::new(workspace_bin("windlass"));
    server
        .args(["server", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&platform.config)
        .arg("--state")
        .arg(platform.state_dir())
        .arg("--edge-admin")
        .arg(platform.edge_admin.to_string())
        .arg("--edge-listen")
        .arg(platform.edge_address.to_string())
        .args(args)
        .env("WINDLASS_EDGE_TOKEN", EDGE_TOKEN)
        .stderr(std::fs::File::create(log).unwrap());
    for (name, value) in env {
        server.env(name, value);
    }
    let server = Process::start(server);
    let mut printed = Vec::new();
    loop {
        let line = server.wait_for_line("");
        if let Some(url) = line.strip_prefix("server listening on ") {
            platform.server_url = url.to_owned();
            break;
        }
        printed.push(line);
    }
    platform.server = Some(server);
    printed
}

/// Waits (at most a minute) until `path` exists.
async fn wait_for_file(path: &Path) {
    for _ in 0..600 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never appeared", path.display());
}

/// Requests through the edge, one every 5 ms until stopped: the number that failed.
fn load(platform: &Platform) -> (Arc<AtomicBool>, tokio::task::JoinHandle<(usize, usize)>) {
    let address = platform.edge_address;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let (mut sent, mut failures) = (0, 0);
        while !stopped.load(Ordering::SeqCst) {
            sent += 1;
            match windlass_testkit::http::request("GET", address, "/version", &[("host", "api.shop.localhost")], "")
                .await
            {
                Ok(reply) if reply.status == 200 => {}
                _ => failures += 1,
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (sent, failures)
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_deploy_stops_at_the_next_step_and_the_next_start_recovers_it() {
    let mut platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "10m", ""));
    platform.deploy(&[]);
    // The traffic phase's first step says it started, then lasts until the test lets it end.
    let (started, released) = (platform.path().join("started"), platform.path().join("released"));
    let waiting = format!(
        "\n[[phases.traffic.steps]]\nname = \"purge the CDN\"\nrun = \"touch {}; until [ -e {} ]; do sleep 0.1; done\"\ntimeout = \"120s\"\n\n[[phases.traffic.steps]]\nname = \"warm the caches\"\nrun = \"true\"\n",
        started.display(),
        released.display()
    );
    platform.rewrite_config(&format!("{}{waiting}", config(&demo(), r#"VERSION = "v2""#, "10m", "")));
    let (stop_load, load) = load(&platform);
    let mut deploy = platform.command_as(&platform.token, &["deploy", "production"]);
    let deploy = deploy.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_file(&started).await;

    let server = platform.server.as_ref().unwrap();
    let asked = Instant::now();
    server.signal(libc::SIGTERM);
    server.wait_for_line("server stopping");
    // New work is refused while the server stops; reads are still served.
    let refused = platform.cli(&["deploy", "production"]);
    assert_ne!(refused.code, 0, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("shutting down"), "{}", refused.stderr);
    assert_eq!(platform.status()["services"]["api"]["live"], "green");
    // The running step ends; the deploy stops before the next one and the server exits, well
    // within the grace period (30 s by default): it did not wait for the grace to run out.
    std::fs::write(&released, "").unwrap();
    let server = platform.server.as_mut().unwrap();
    server.wait_for_line("left unfinished");
    server.wait_for_line("server stopped");
    let status = server.wait();
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() < Duration::from_secs(30), "the server waited out its grace: {:?}", asked.elapsed());
    platform.server = None;
    let output = deploy.wait_with_output().unwrap();
    let run = Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let id = crate::platform::deploy_id(&run);

    // The edge serves the new version the deploy switched to while no server runs.
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v2");
    // The next start finds the deploy as a crash would have left it, and recovers it.
    let recovered = platform.start_server(&[]);
    assert!(recovered.iter().any(|l| l.contains(&id) && l.contains("interrupted")), "{recovered:?}");
    let shown = platform.json(&["deploy", "show", &id]);
    assert_eq!(shown["deploy"]["status"], "interrupted", "{shown:#}");
    let steps: Vec<(&str, &str)> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["status"].as_str().unwrap()))
        .collect();
    assert!(steps.contains(&("purge the CDN", "succeeded")), "{steps:?}");
    assert!(!steps.iter().any(|(name, _)| *name == "warm the caches"), "it stopped before the next step: {steps:?}");
    assert!(platform.cli(&["lock", "show", "production"]).stdout.contains("production is not locked"));
    assert_eq!(platform.status()["services"]["api"]["live"], "green");
    // The edge and the instances served every request throughout.
    stop_load.store(true, Ordering::SeqCst);
    let (sent, failures) = load.await.unwrap();
    assert!(sent > 0);
    assert_eq!(failures, 0, "{failures} of {sent} requests through the edge failed");
    // And the next deploy works from there.
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v3""#, "10m", ""));
    platform.deploy(&[]);
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploys_log_lines_carry_its_spans() {
    let mut platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "10m", ""));
    platform.kill_server();
    let log = platform.path().join("server.log");
    start_server_logging(&mut platform, &[("RUST_LOG", "windlass=debug")], &[], &log);
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let id = crate::platform::deploy_id(&run);
    platform.kill_server();
    let log = std::fs::read_to_string(&log).unwrap();
    let deploy = format!("deploy{{id={id} env=production}}");
    let lines: Vec<&str> = log.lines().filter(|line| line.contains(&deploy)).collect();
    assert!(lines.iter().any(|l| l.contains("deploy ran")), "{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{deploy}:phase{{name=backend}}:step{{name=roll out api (blue-green"))),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.contains("rollout{service=api strategy=blue-green}")), "{log}");
}
