//! What the shim does when the child or the shim itself dies.

use std::time::Duration;

use windlass_runtime::{InstanceSpec, InstanceState, RestartPolicy, Runtime};
use windlass_testkit::http;

use crate::harness::*;

#[tokio::test]
async fn a_killed_child_is_restarted_on_the_same_sockets() {
    let root = Root::new();
    let runtime = root.runtime();
    let instance = runtime.start(&demo_spec("web-1", "v1")).await.unwrap();
    let first_child = instance.child_pid.unwrap();

    signal(first_child, libc::SIGKILL);
    let runtime_ref = &runtime;
    let restarted = eventually("the child restarted", || async move {
        let now = runtime_ref.get("web-1").await.unwrap().unwrap();
        (now.state == InstanceState::Running && now.child_pid.is_some_and(|pid| pid != first_child)).then_some(now)
    })
    .await;
    assert_eq!(restarted.restarts, 1);
    assert_eq!(restarted.last_exit.and_then(|exit| exit.signal), Some(libc::SIGKILL));
    assert_eq!(restarted.shim_pid, instance.shim_pid);
    assert_eq!(restarted.addresses, instance.addresses);
    assert_eq!(http::get(instance.addresses["http"], "/health").await.unwrap().status, 200);

    runtime.stop("web-1").await.unwrap();
}

#[tokio::test]
async fn a_child_that_keeps_failing_ends_in_a_crash_loop() {
    let root = Root::new();
    let runtime = root.runtime();
    let mut spec = InstanceSpec::new("boom", "/bin/sh");
    spec.args = vec!["-c".into(), "echo boom >&2; exit 3".into()];
    spec.restart = RestartPolicy {
        max_restarts: 2,
        window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
    };
    runtime.start(&spec).await.unwrap();

    let runtime_ref = &runtime;
    let instance = eventually("the crash loop", || async move {
        let now = runtime_ref.get("boom").await.unwrap().unwrap();
        (now.state == InstanceState::CrashLoop).then_some(now)
    })
    .await;
    assert_eq!(instance.last_exit.and_then(|exit| exit.code), Some(3));
    assert_eq!(instance.restarts, 2);
    let logs = runtime.logs("boom", 10).await.unwrap();
    assert_eq!(logs.iter().filter(|line| line.ends_with(" stderr boom")).count(), 3, "{logs:?}");

    // The shim gave up and exits; stopping an instance that is over is fine.
    runtime.stop("boom").await.unwrap();
    assert_eq!(runtime.get("boom").await.unwrap().unwrap().shim_pid, None);
}

#[tokio::test]
async fn a_killed_shim_takes_its_child_along_and_reads_lost() {
    let root = Root::new();
    let runtime = root.runtime();
    let instance = runtime.start(&demo_spec("web-1", "v1")).await.unwrap();
    let (shim, child) = (instance.shim_pid.unwrap(), instance.child_pid.unwrap());
    let web = instance.addresses["http"];

    signal(shim, libc::SIGKILL);
    eventually("the child to die with its shim", || async move { (!alive(child)).then_some(()) }).await;
    eventually("the port to refuse connections", || async move { refuses(web).await.then_some(()) }).await;
    let lost = runtime.get("web-1").await.unwrap().unwrap();
    assert_eq!(lost.state, InstanceState::Lost);
    assert_eq!((lost.shim_pid, lost.child_pid), (None, None));
    runtime.stop("web-1").await.unwrap();
}
