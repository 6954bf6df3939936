//! The docker runtime against the real Docker Engine of this machine, with the demo service
//! built static (`scripts/build-static-demo`, or the binary `WINDLASS_TEST_STATIC_DEMO` names).
//! Every test has its own scope and service name; its containers and images are removed by
//! those labels when it ends, also when it fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use windlass_runtime::{DockerRuntime, InstanceSpec, InstanceState, RestartPolicy, Runtime, RuntimeError, RuntimeKind};

/// The static demo: `$WINDLASS_TEST_STATIC_DEMO`, or what `scripts/build-static-demo` builds.
fn static_demo() -> PathBuf {
    if let Some(path) = std::env::var_os("WINDLASS_TEST_STATIC_DEMO") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "WINDLASS_TEST_STATIC_DEMO={} is not a file", path.display());
        return path;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-static-demo");
    let output = std::process::Command::new(&script).output().expect("run scripts/build-static-demo");
    assert!(output.status.success(), "build-static-demo failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(stdout.lines().last().expect("build-static-demo printed no path").trim())
}

/// A scope and a service name of this test's own, purged on drop.
struct Sandbox {
    runtime: DockerRuntime,
    service: String,
}

impl Sandbox {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let scope = format!("t{tag}-{}-{:x}", std::process::id(), nanos % (1 << 40));
        let runtime = DockerRuntime::new(&scope).unwrap();
        Sandbox { runtime, service: format!("{scope}-svc") }
    }

    /// What a restarted server would make: a new runtime with the same scope.
    fn restarted(&self) -> DockerRuntime {
        DockerRuntime::new(self.runtime.scope()).unwrap()
    }

    fn demo_spec(&self, id: &str, version: &str) -> InstanceSpec {
        let mut spec = InstanceSpec::new(id, static_demo());
        spec.runtime = RuntimeKind::Docker;
        spec.env.insert("VERSION".into(), version.into());
        spec.sockets = vec!["http".into()];
        spec.labels.insert("service".into(), self.service.clone());
        spec.labels.insert("color".into(), "blue".into());
        spec.stop_grace = Duration::from_secs(5);
        spec
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let runtime = self.runtime.clone();
        let service = self.service.clone();
        // Drop may run inside the test's runtime: clean up on a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Err(err) = runtime.purge().await {
                    eprintln!("cleanup: cannot remove the containers: {err}");
                }
                if let Err(err) = runtime.remove_images(&service).await {
                    eprintln!("cleanup: cannot remove the images: {err}");
                }
            });
        });
        let _ = cleanup.join();
    }
}

// Polling until a condition holds: the one helper in testkit.
use windlass_testkit::eventually;

/// The demo's build id for an executable: FNV-1a of its bytes (see `crates/demo`).
fn demo_build_id(program: &Path) -> String {
    let bytes = std::fs::read(program).unwrap();
    let hash =
        bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

#[tokio::test]
async fn an_image_is_built_once_per_executable_and_reused() {
    let sandbox = Sandbox::new("img");
    let demo = static_demo();
    let sha = hex::encode(Sha256::digest(std::fs::read(&demo).unwrap()));
    let first = sandbox.runtime.image_for(Some(&sandbox.service), &demo).await.unwrap();
    assert!(first.built, "a new service's image is built");
    assert_eq!(first.tag, format!("windlass/{}:{}", sandbox.service, &sha[..12]));
    let second = sandbox.runtime.image_for(Some(&sandbox.service), &demo).await.unwrap();
    assert!(!second.built, "the second time the image is reused");
    assert_eq!(second.id, first.id);
    // Another server (a new runtime) reuses it too.
    let third = sandbox.restarted().image_for(Some(&sandbox.service), &demo).await.unwrap();
    assert_eq!((third.built, third.id), (false, first.id));
}

#[tokio::test]
async fn a_dynamically_linked_program_is_refused_with_how_to_build_a_static_one() {
    let sandbox = Sandbox::new("dyn");
    // The normal build of the demo is dynamically linked against glibc.
    let dynamic = windlass_testkit::workspace_bin("windlass-demo");
    let mut spec = sandbox.demo_spec("dyn-1", "v1");
    spec.program = dynamic.clone();
    let err = sandbox.runtime.start(&spec).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, RuntimeError::Program { .. }), "{message}");
    assert!(message.contains("dynamically linked"), "{message}");
    assert!(message.contains("RUSTFLAGS='-C target-feature=+crt-static'"), "{message}");
    assert!(message.contains("--target x86_64-unknown-linux-gnu"), "{message}");
    // A script has no interpreter in a scratch image either.
    let dir = windlass_testkit::tempdir();
    let script = dir.path().join("serve.sh");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 100\n").unwrap();
    spec.program = script;
    let message = sandbox.runtime.start(&spec).await.unwrap_err().to_string();
    assert!(message.contains("script") && message.contains("crt-static"), "{message}");
    // Nothing was built or started.
    assert!(sandbox.runtime.list().await.unwrap().is_empty());
    assert_eq!(sandbox.runtime.remove_images(&sandbox.service).await.unwrap(), 0);
}

#[tokio::test]
async fn an_instance_serves_survives_a_server_restart_and_stops_gracefully() {
    let sandbox = Sandbox::new("life");
    let runtime = &sandbox.runtime;
    let spec = sandbox.demo_spec("web-blue-1", "v7");
    let started = runtime.start(&spec).await.unwrap();
    assert_eq!(started.state, InstanceState::Running);
    assert_eq!(started.labels["service"], sandbox.service);
    assert_eq!(started.labels["color"], "blue");
    let address = started.addresses["http"];
    assert!(address.ip().is_loopback(), "{address}");

    // Healthy over HTTP on the reported address, answering with this very build.
    let health = windlass_testkit::http::get(address, "/health").await.unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    let version: serde_json::Value =
        serde_json::from_str(&windlass_testkit::http::get(address, "/version").await.unwrap().body).unwrap();
    assert_eq!(version["version"], "v7");
    assert_eq!(version["build_id"], demo_build_id(&static_demo()));

    // Its output is read back, demultiplexed, with the stream named.
    let logs = eventually("the listening line in the logs", || async {
        let lines = runtime.logs("web-blue-1", 10).await.unwrap();
        lines.iter().any(|l| l.contains("stdout windlass-demo v7 listening on")).then_some(lines)
    })
    .await;
    assert!(logs.len() <= 10);

    // A restarted server finds the same container, and does not start a second one.
    let restarted = sandbox.restarted();
    let found = restarted.get("web-blue-1").await.unwrap().expect("the container is found again");
    assert_eq!(
        (found.state, found.addresses.clone(), found.child_pid),
        (InstanceState::Running, started.addresses.clone(), started.child_pid)
    );
    assert_eq!(restarted.list().await.unwrap().iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["web-blue-1"]);
    let again = restarted.start(&spec).await.unwrap_err();
    assert!(matches!(again, RuntimeError::AlreadyRunning { .. }), "{again}");
    assert_eq!(restarted.list().await.unwrap().len(), 1);
    assert_eq!(windlass_testkit::http::get(address, "/health").await.unwrap().status, 200);

    // Another scope (another server's state directory) does not see it.
    let stranger = Sandbox::new("other");
    assert!(stranger.runtime.get("web-blue-1").await.unwrap().is_none());

    // A graceful stop: SIGTERM, and the demo drains and exits 0 (SIGKILL would be 137).
    restarted.stop("web-blue-1").await.unwrap();
    let stopped = runtime.get("web-blue-1").await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert_eq!(stopped.last_exit.and_then(|exit| exit.code), Some(0));
    assert!(windlass_testkit::http::get(address, "/health").await.is_err(), "nothing listens after the stop");
    // Stopping what is stopped is fine; the logs stay until the instance is removed.
    runtime.stop("web-blue-1").await.unwrap();
    assert!(!runtime.logs("web-blue-1", 100).await.unwrap().is_empty());
    runtime.remove("web-blue-1").await.unwrap();
    assert!(runtime.get("web-blue-1").await.unwrap().is_none());
    assert!(matches!(runtime.stop("web-blue-1").await, Err(RuntimeError::NotFound(_))));
    assert!(matches!(runtime.logs("web-blue-1", 1).await, Err(RuntimeError::NotFound(_))));

    // A finished instance's id can be started again.
    let second = runtime.start(&spec).await.unwrap();
    assert_eq!(second.state, InstanceState::Running);
    runtime.remove("web-blue-1").await.unwrap();
}

#[tokio::test]
async fn a_program_that_exits_at_once_ends_as_a_crash_loop() {
    let sandbox = Sandbox::new("crash");
    let mut spec = sandbox.demo_spec("boom-1", "v1");
    // The demo refuses to start with a SLOW_START it cannot read.
    spec.env.insert("SLOW_START".into(), "soon".into());
    spec.restart = RestartPolicy { max_restarts: 2, ..RestartPolicy::default() };
    let started = sandbox.runtime.start(&spec).await.unwrap();
    assert_ne!(started.state, InstanceState::Running);
    let over = eventually("the crash loop", || async {
        let instance = sandbox.runtime.get("boom-1").await.unwrap().unwrap();
        instance.state.is_final().then_some(instance)
    })
    .await;
    assert_eq!(over.state, InstanceState::CrashLoop);
    assert_eq!(over.restarts, 2, "restarted as often as the policy allows, then given up");
    assert_eq!(over.last_exit.and_then(|exit| exit.code), Some(1));
    let logs = sandbox.runtime.logs("boom-1", 50).await.unwrap();
    assert!(logs.iter().any(|line| line.contains("stderr windlass-demo: SLOW_START")), "{logs:?}");
    // And it stays over: not restarted any more.
    let later = sandbox.restarted().get("boom-1").await.unwrap().unwrap();
    assert_eq!((later.state, later.restarts), (InstanceState::CrashLoop, 2));
}

#[tokio::test]
async fn an_unreachable_daemon_is_reported_with_what_to_check() {
    let dir = windlass_testkit::tempdir();
    let runtime = DockerRuntime::with_socket(dir.path().join("docker.sock"), "nowhere").unwrap();
    let err = runtime.list().await.unwrap_err().to_string();
    assert!(err.contains("Is Docker running?") && err.contains("docker.sock"), "{err}");
}

/// The process runtime of a temporary root; its instances are removed on drop.
struct ProcessRoot {
    dir: windlass_testkit::TempDir,
}

impl ProcessRoot {
    fn runtime(&self) -> windlass_runtime::ProcessRuntime {
        windlass_runtime::ProcessRuntime::new(
            self.dir.path().join("instances"),
            windlass_testkit::workspace_bin("windlass-shim"),
        )
    }
}

impl Drop for ProcessRoot {
    fn drop(&mut self) {
        let runtime = self.runtime();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                for instance in runtime.list().await.unwrap_or_default() {
                    let _ = runtime.remove(&instance.id).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn runtimes_start_each_instance_where_its_spec_says_and_find_it_there() {
    use std::sync::Arc;
    use windlass_runtime::Runtimes;

    let sandbox = Sandbox::new("both");
    let root = ProcessRoot { dir: windlass_testkit::tempdir() };
    let runtimes = Runtimes::new(Arc::new(root.runtime()), Some(sandbox.runtime.clone()));

    let in_docker = sandbox.demo_spec("web-docker", "in-docker");
    let mut as_process = sandbox.demo_spec("web-process", "as-process");
    as_process.runtime = RuntimeKind::Process;
    as_process.program = windlass_testkit::workspace_bin("windlass-demo");
    let docker_instance = runtimes.start(&in_docker).await.unwrap();
    let process_instance = runtimes.start(&as_process).await.unwrap();
    assert!(process_instance.shim_pid.is_some(), "a process instance has a shim");
    assert!(docker_instance.shim_pid.is_none());
    for (instance, version) in [(&docker_instance, "in-docker"), (&process_instance, "as-process")] {
        let reply = windlass_testkit::http::get(instance.addresses["http"], "/version").await.unwrap();
        assert!(reply.body.contains(version), "{}", reply.body);
    }
    // Each runtime has its own instance, and the dispatcher lists both.
    assert_eq!(sandbox.runtime.list().await.unwrap().len(), 1);
    assert_eq!(root.runtime().list().await.unwrap().len(), 1);
    let ids: Vec<String> = runtimes.list().await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, ["web-docker", "web-process"]);
    assert_eq!(runtimes.get("web-docker").await.unwrap().unwrap().addresses, docker_instance.addresses);
    assert!(runtimes.get("web-nope").await.unwrap().is_none());

    // One id runs in one place: a docker start of the process instance's id is refused.
    let mut twin = sandbox.demo_spec("web-process", "twin");
    twin.runtime = RuntimeKind::Docker;
    assert!(matches!(runtimes.start(&twin).await, Err(RuntimeError::AlreadyRunning { .. })));
    assert_eq!(sandbox.runtime.list().await.unwrap().len(), 1);

    // Logs, stop and remove reach the right runtime.
    let logs = eventually("the docker instance's output", || async {
        let lines = runtimes.logs("web-docker", 5).await.unwrap();
        lines.iter().any(|l| l.contains("in-docker listening")).then_some(())
    });
    logs.await;
    runtimes.stop("web-docker").await.unwrap();
    assert_eq!(sandbox.runtime.get("web-docker").await.unwrap().unwrap().state, InstanceState::Stopped);
    assert!(!root.runtime().get("web-process").await.unwrap().unwrap().state.is_final());
    runtimes.remove("web-process").await.unwrap();
    runtimes.remove("web-docker").await.unwrap();
    assert!(runtimes.list().await.unwrap().is_empty());
    assert!(matches!(runtimes.stop("web-docker").await, Err(RuntimeError::NotFound(_))));
}

#[tokio::test]
async fn without_a_daemon_only_process_instances_exist() {
    use std::sync::Arc;
    use windlass_runtime::Runtimes;

    let root = ProcessRoot { dir: windlass_testkit::tempdir() };
    let nowhere = DockerRuntime::with_socket(root.dir.path().join("no-docker.sock"), "nowhere").unwrap();
    let runtimes = Runtimes::new(Arc::new(root.runtime()), Some(nowhere));
    let mut spec = InstanceSpec::new("web-1", windlass_testkit::workspace_bin("windlass-demo"));
    spec.sockets = vec!["http".into()];
    runtimes.start(&spec).await.unwrap();
    // Listing, getting and stopping never need Docker here.
    assert_eq!(runtimes.list().await.unwrap().len(), 1);
    assert!(runtimes.get("web-2").await.unwrap().is_none());
    assert!(matches!(runtimes.logs("web-2", 1).await, Err(RuntimeError::NotFound(_))));
    runtimes.remove("web-1").await.unwrap();
    // A docker instance says what is missing.
    spec.runtime = RuntimeKind::Docker;
    spec.program = static_demo();
    let err = runtimes.start(&spec).await.unwrap_err().to_string();
    assert!(err.contains("Is Docker running?"), "{err}");
    let without = Runtimes::new(Arc::new(root.runtime()), None);
    let err = without.start(&spec).await.unwrap_err().to_string();
    assert!(err.contains("does not offer"), "{err}");
}
