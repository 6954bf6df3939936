//! A service with `runtime = "docker"` deployed end to end through the real binaries: edge,
//! server, and containers on this machine's Docker Engine, from the demo built static
//! (`WINDLASS_TEST_STATIC_DEMO`, or `scripts/build-static-demo`).

use std::path::PathBuf;

use windlass_runtime::{DockerRuntime, InstanceState, Runtime as _};

use crate::harness::repo_root;
use crate::platform::{Platform, body_json};

fn static_demo() -> PathBuf {
    if let Some(path) = std::env::var_os("WINDLASS_TEST_STATIC_DEMO") {
        return PathBuf::from(path);
    }
    let output = std::process::Command::new(repo_root().join("scripts/build-static-demo")).output().unwrap();
    assert!(output.status.success(), "build-static-demo failed: {}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8(output.stdout).unwrap().lines().last().expect("a path").trim())
}

fn config(service: &str, demo: &str, version: &str) -> String {
    format!(
        r#"[project]
name = "shop"

[environments.production]

[pipeline]
phases = ["validate", "backend", "verification", "traffic"]

[services.{service}]
phase = "backend"
runtime = "docker"
run = "{demo}"
instances = 1
strategy = "blue-green"
keep_warm = "10m"
stop_timeout = "5s"
route = {{ host = "api.shop.localhost", path = "/" }}
health = {{ path = "/health", interval = "100ms", timeout = "1s", healthy_after = 1, start_timeout = "30s" }}
env = {{ VERSION = "{version}" }}

[[smoke]]
name = "api answers"
url = "http://api.shop.localhost/version"
service = "{service}"
expect = {{ status = 200, body_contains = "\"version\"" }}

[edge]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
"#
    )
}

/// The platform, then (after the server is gone) every container of its state directory and
/// every image of its service.
struct DockerPlatform {
    platform: Option<Platform>,
    docker: DockerRuntime,
    service: String,
}

impl Drop for DockerPlatform {
    fn drop(&mut self) {
        drop(self.platform.take());
        let (docker, service) = (self.docker.clone(), self.service.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Err(err) = docker.purge().await {
                    eprintln!("cleanup: {err}");
                }
                if let Err(err) = docker.remove_images(&service).await {
                    eprintln!("cleanup: {err}");
                }
            });
        })
        .join()
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_service_deploys_blue_green_through_the_edge() {
    let demo = static_demo().display().to_string();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let service = format!("dk-{}-{:x}", std::process::id(), nanos % (1 << 32));
    let platform = Platform::start(&config(&service, &demo, "v1"));
    let docker = DockerRuntime::for_state_dir(&platform.state_dir());
    let mut guard = DockerPlatform { platform: Some(platform), docker: docker.clone(), service: service.clone() };
    let platform = guard.platform.as_mut().unwrap();

    platform.deploy(&["--reason", "first"]);
    let status = platform.status();
    assert_eq!(status["services"][&service]["live"], "blue", "{status:#}");
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let first = body_json(&reply);
    assert_eq!((first["version"].as_str(), first["color"].as_str()), (Some("v1"), Some("blue")));

    // The instance is a container of this server's scope, labelled with its deploy and color.
    let containers = docker.list().await.unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let blue = &containers[0];
    assert_eq!((blue.state, blue.labels["color"].as_str()), (InstanceState::Running, "blue"));
    assert_eq!(blue.labels["service"], service);
    assert_eq!(first["instance"].as_str(), Some(blue.id.as_str()), "the edge reached the container");

    // A second deploy starts a new container as green and switches the edge to it.
    platform.rewrite_config(&config(&service, &demo, "v2"));
    platform.deploy(&["--reason", "second"]);
    let status = platform.status();
    assert_eq!(status["services"][&service]["live"], "green", "{status:#}");
    for _ in 0..10 {
        let reply = platform.get("api.shop.localhost", "/version").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let body = body_json(&reply);
        assert_eq!((body["version"].as_str(), body["color"].as_str()), (Some("v2"), Some("green")));
        assert_eq!(body["build_id"], first["build_id"], "the same executable, from the same image");
    }
    let containers = docker.list().await.unwrap();
    let running: Vec<(&str, &str)> = containers
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .map(|i| (i.labels["color"].as_str(), i.id.as_str()))
        .collect();
    assert_eq!(running.len(), 2, "green serves, blue stays warm: {containers:?}");
    let green = running.iter().find(|(color, _)| *color == "green").expect("a green container");
    assert_ne!(green.1, blue.id, "a new container");
    // Both colors run one image: it was built once.
    let image = docker.image_for(Some(&service), std::path::Path::new(&demo)).await.unwrap();
    assert!(!image.built);

    // The containers outlive a killed server; the restarted one adopts them (recovery stops
    // only instances no record names) and green keeps serving.
    platform.kill_server();
    platform.start_server(&[]);
    let status = platform.status();
    assert_eq!(status["services"][&service]["live"], "green", "{status:#}");
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(body_json(&reply)["version"], "v2");
    let after: Vec<_> =
        docker.list().await.unwrap().into_iter().filter(|i| i.state == InstanceState::Running).collect();
    assert_eq!(after.len(), 2, "nothing stopped, nothing started twice: {after:?}");
}
