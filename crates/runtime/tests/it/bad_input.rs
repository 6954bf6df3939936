//! Wrong ids, wrong programs, double starts: clear errors, nothing started.

use std::os::unix::fs::PermissionsExt;

use windlass_runtime::{InstanceSpec, InstanceState, Runtime, RuntimeError};

use crate::harness::*;

#[tokio::test]
async fn ids_that_could_leave_the_root_are_refused() {
    let root = Root::new();
    let runtime = root.runtime();
    for id in ["../x", "a/b", "", "Web", ".", "x".repeat(101).as_str()] {
        let spec = InstanceSpec::new(id, "/bin/sh");
        let err = runtime.start(&spec).await.unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidId { .. }), "{id:?}: {err}");
        assert!(matches!(runtime.get(id).await, Err(RuntimeError::InvalidId { .. })), "{id:?}");
        assert!(matches!(runtime.stop(id).await, Err(RuntimeError::InvalidId { .. })), "{id:?}");
        assert!(matches!(runtime.logs(id, 1).await, Err(RuntimeError::InvalidId { .. })), "{id:?}");
        assert!(matches!(runtime.remove(id).await, Err(RuntimeError::InvalidId { .. })), "{id:?}");
    }
    assert!(!root.path().exists(), "nothing was created");
    assert!(matches!(runtime.stop("nope").await, Err(RuntimeError::NotFound(_))));
    assert!(matches!(runtime.logs("nope", 1).await, Err(RuntimeError::NotFound(_))));
    assert!(runtime.get("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn a_program_that_cannot_run_is_named_in_the_error() {
    let root = Root::new();
    let runtime = root.runtime();
    let err = runtime.start(&InstanceSpec::new("web-1", "/nonexistent/windlass-nope")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Program { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/windlass-nope") && err.to_string().contains("does not exist"),
        "{err}"
    );

    // An executable whose interpreter is missing passes the checks; the shim's exec fails.
    let scripts = windlass_testkit::tempdir();
    let script = scripts.path().join("broken.sh");
    std::fs::write(&script, "#!/nonexistent/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = runtime.start(&InstanceSpec::new("web-2", &script)).await.unwrap_err();
    assert!(matches!(err, RuntimeError::StartFailed { .. }), "{err}");
    assert!(err.to_string().contains(script.to_str().unwrap()), "{err}");
    let instance = runtime.get("web-2").await.unwrap().unwrap();
    assert_eq!(instance.state, InstanceState::Exited);
    let shim_log = std::fs::read_to_string(root.instance_dir("web-2").join("shim.log")).unwrap();
    assert!(shim_log.contains("cannot start"), "{shim_log}");
}

#[tokio::test]
async fn a_running_id_cannot_be_started_twice_but_a_stopped_one_can() {
    let root = Root::new();
    let runtime = root.runtime();
    let spec = demo_spec("web-1", "v1");
    let first = runtime.start(&spec).await.unwrap();
    let err = runtime.start(&spec).await.unwrap_err();
    assert!(
        matches!(err, RuntimeError::AlreadyRunning { ref id, shim_pid } if id == "web-1" && shim_pid == first.shim_pid),
        "{err}"
    );
    assert_eq!(runtime.get("web-1").await.unwrap().unwrap().state, InstanceState::Running, "untouched");

    runtime.stop("web-1").await.unwrap();
    let second = runtime.start(&spec).await.unwrap();
    assert_eq!(second.state, InstanceState::Running);
    assert_ne!(second.shim_pid, first.shim_pid);
    assert_eq!(second.restarts, 0, "a fresh directory");
    runtime.stop("web-1").await.unwrap();
}

#[tokio::test]
async fn a_damaged_instance_directory_is_reported_skipped_by_list_and_removable() {
    let root = Root::new();
    let runtime = root.runtime();
    let dir = root.instance_dir("web-1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("spec.json"), "{ not json").unwrap();

    let err = runtime.get("web-1").await.unwrap_err();
    assert!(matches!(err, RuntimeError::Corrupt { .. }) && err.to_string().contains("spec.json"), "{err}");
    assert_eq!(runtime.list().await.unwrap(), vec![], "list carries on past it");
    let err = runtime.start(&demo_spec("web-1", "v1")).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Corrupt { .. }), "{err}");
    runtime.remove("web-1").await.unwrap();
    assert!(!dir.exists());
    assert_eq!(runtime.start(&demo_spec("web-1", "v1")).await.unwrap().state, InstanceState::Running);
    runtime.stop("web-1").await.unwrap();
}
