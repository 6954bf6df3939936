//! Start, serve, list, stop, and re-attach from a new runtime.

use windlass_runtime::{ExitInfo, InstanceState, Runtime};
use windlass_testkit::http;

use crate::harness::*;

#[tokio::test]
async fn a_started_instance_serves_on_its_sockets_and_is_listed_with_its_output() {
    let root = Root::new();
    let runtime = root.runtime();
    assert_eq!(runtime.kind(), "process");
    let instance = runtime.start(&demo_spec("web-1", "v1")).await.unwrap();
    assert_eq!(instance.state, InstanceState::Running);
    assert!(instance.shim_pid.is_some() && instance.child_pid.is_some(), "{instance:?}");
    let (web, admin) = (instance.addresses["http"], instance.addresses["admin"]);
    assert_ne!(web, admin);

    assert_eq!(http::get(web, "/health").await.unwrap().status, 200);
    let version = http::get(web, "/version").await.unwrap();
    assert!(version.body.contains("v1"), "{}", version.body);
    assert_eq!(http::get(admin, "/faults").await.unwrap().status, 200, "fd 4 is the admin API");

    let listed = runtime.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "web-1");
    assert_eq!(listed[0].state, InstanceState::Running);
    assert_eq!(listed[0].labels["service"], "web");
    assert_eq!(listed[0].addresses, instance.addresses);

    let runtime_ref = &runtime;
    let lines = eventually("the demo's start lines in the output log", || async move {
        let lines = runtime_ref.logs("web-1", 100).await.unwrap();
        lines.iter().any(|line| line.contains("admin listening on")).then_some(lines)
    })
    .await;
    let started = lines.iter().find(|line| line.contains("windlass-demo v1 listening on")).expect("the start line");
    assert!(started.contains(" stdout windlass-demo v1 listening on"), "{started}");
    assert!(started.contains(&web.to_string()), "the demo listens where the shim bound: {started}");

    runtime.stop("web-1").await.unwrap();
}

#[tokio::test]
async fn stop_terminates_gracefully_and_closes_the_port() {
    let root = Root::new();
    let runtime = root.runtime();
    let instance = runtime.start(&demo_spec("web-1", "v1")).await.unwrap();
    let web = instance.addresses["http"];
    let child = instance.child_pid.unwrap();
    assert_eq!(http::get(web, "/health").await.unwrap().status, 200);

    runtime.stop("web-1").await.unwrap();
    let stopped = runtime.get("web-1").await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert_eq!(stopped.last_exit, Some(ExitInfo { code: Some(0), signal: None }), "the demo drains and exits 0");
    assert_eq!((stopped.shim_pid, stopped.child_pid), (None, None));
    assert!(!alive(child));
    assert!(refuses(web).await, "nothing listens on {web} any more");

    // Stopping again is fine; the instance is still listed until removed.
    runtime.stop("web-1").await.unwrap();
    assert_eq!(runtime.list().await.unwrap().len(), 1);
    runtime.remove("web-1").await.unwrap();
    assert!(runtime.get("web-1").await.unwrap().is_none());
    assert!(!root.instance_dir("web-1").exists());
}

#[tokio::test]
async fn a_new_runtime_reattaches_to_running_instances() {
    let root = Root::new();
    let first = root.runtime();
    let instance = first.start(&demo_spec("web-1", "v1")).await.unwrap();
    drop(first);

    let second = root.runtime();
    let found = second.get("web-1").await.unwrap().unwrap();
    assert_eq!(found.state, InstanceState::Running);
    assert_eq!(found.shim_pid, instance.shim_pid);
    assert_eq!(found.child_pid, instance.child_pid);
    assert_eq!(found.addresses, instance.addresses);
    assert_eq!(second.list().await.unwrap(), vec![found.clone()]);
    let version = http::get(found.addresses["http"], "/version").await.unwrap();
    assert!(version.body.contains("v1"), "{}", version.body);

    second.stop("web-1").await.unwrap();
    let stopped = second.get("web-1").await.unwrap().unwrap();
    assert_eq!(stopped.state, InstanceState::Stopped);
    assert_eq!(stopped.last_exit.and_then(|exit| exit.code), Some(0));
}
