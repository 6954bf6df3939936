//! Approval decisions at the pipeline's level, on a real store (SQLite in a directory of the
//! test's own): they compare the names of people, whatever token each used, and a robot never
//! decides. Nothing here reaches an edge or starts an instance: a request is recorded and the
//! approved deploy only recorded as started.

// Tests: their tasks live as long as the test.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use windlass_pipeline::approval::{self, Decider, Decision};
use windlass_pipeline::deploy::{Recorded, StartRequest};
use windlass_pipeline::edge::EdgeClient;
use windlass_pipeline::supervisor::Supervisor;
use windlass_pipeline::{DeployError, Deployer};
use windlass_store::{Holder, SystemClock};

/// A deployer over `dir`: production needs approval; nothing to roll out (no services).
async fn deployer(dir: &std::path::Path) -> Deployer {
    let config = dir.join("windlass.toml");
    std::fs::write(
        &config,
        "[project]\nname = \"shop\"\n\n[environments.production]\napproval = \"required\"\n\n[pipeline]\nphases = []\n",
    )
    .unwrap();
    let store =
        windlass_store::open(&dir.join("windlass.db").display().to_string(), Arc::new(SystemClock)).await.unwrap();
    // Never reached: nothing here runs a deploy.
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    Deployer {
        store,
        runtime: Arc::new(windlass_runtime::ProcessRuntime::new(dir.join("instances"), dir.join("no-shim"))),
        edge: Arc::new(EdgeClient { admin: unused, public: unused, token: "unused".into(), tls: None }),
        config_path: config,
        artifacts_dir: dir.join("artifacts"),
        holder: Holder::this_process("test-server"),
        env_file: None,
        parsed: Default::default(),
        clock: Arc::new(SystemClock),
        tasks: Supervisor::new(),
    }
}

fn forbidden(result: Result<impl std::fmt::Debug, DeployError>) -> String {
    match result {
        Err(DeployError::Forbidden(why)) => why,
        other => panic!("not refused as forbidden: {other:?}"),
    }
}

#[tokio::test]
async fn the_requester_under_another_token_and_robots_cannot_decide_and_the_approval_is_recorded_with_the_deploy() {
    let dir = windlass_testkit::tempdir();
    let deployer = deployer(dir.path()).await;
    // Alice asks from her laptop's token: the request names her, not the token.
    let start = StartRequest {
        environment: "production".into(),
        actor: "alice".into(),
        options: Default::default(),
        expect: None,
        approved_by: None,
    };
    let request = approval::request(&deployer, &start).await.unwrap();
    assert_eq!(request.requested_by, "alice");

    // Her desktop's token is still Alice.
    let alice = Decider { name: "alice", robot: false };
    let why = forbidden(approval::approve(&deployer, "production", alice, None).await);
    assert!(why.contains("someone other than the requester (alice)"), "{why}");
    // A robot decides nothing, either way, even holding the permission.
    let ci = Decider { name: "ci", robot: true };
    let why = forbidden(approval::approve(&deployer, "production", ci, None).await);
    assert!(why.contains("`ci` is a robot, and robots never approve"), "{why}");
    let why = forbidden(approval::reject(&deployer, "production", ci, Some("no".into())).await);
    assert!(why.contains("`ci` is a robot, and robots never reject"), "{why}");
    let open = approval::latest(&deployer, "production").await.unwrap().unwrap();
    assert_eq!(open.decision, Decision::Pending, "nothing was decided");
    assert!(deployer.store.deploys("production", 10).await.unwrap().is_empty(), "nothing started");

    // Bob, another person, approves: the deploy is Alice's and records Bob's approval.
    let bob = Decider { name: "bob", robot: false };
    let (decided, prepared) = approval::approve(&deployer, "production", bob, None).await.unwrap();
    assert_eq!(decided.decision, Decision::Approved { by: "bob".into(), deploy_id: prepared.id.to_string() });
    let record = deployer.store.deploy(&prepared.id).await.unwrap().unwrap();
    assert_eq!(record.actor, "alice");
    let recorded: Recorded = serde_json::from_str(&record.artifacts).unwrap();
    assert_eq!(recorded.approved_by.as_deref(), Some("bob"));
}

/// A decision when nothing awaits one is refused and writes nothing: the approval's lease is
/// never taken, so its fencing counter (a row of its own in the store) is not started.
#[tokio::test]
async fn a_decision_on_nothing_is_refused_without_taking_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let deployer = deployer(dir.path()).await;
    let bob = Decider { name: "bob", robot: false };
    for refused in [
        approval::approve(&deployer, "production", bob, None).await.map(drop),
        approval::reject(&deployer, "production", bob, None).await.map(drop),
    ] {
        match refused {
            Err(DeployError::Conflict(why)) => assert!(why.contains("awaits approval"), "{why}"),
            other => panic!("not refused as a conflict: {other:?}"),
        }
    }
    // A lease name never taken starts its counter where a new name does: the refusals above
    // took no lease of `approval/production`.
    let take = |name: &'static str| {
        let store = deployer.store.clone();
        let holder = deployer.holder.clone();
        async move {
            match store.acquire_lease(name, &holder, "test", std::time::Duration::from_secs(30)).await.unwrap() {
                windlass_store::Acquire::Acquired(lease) => lease.token,
                windlass_store::Acquire::Held(info) => panic!("held by {info:?}"),
            }
        }
    };
    let fresh = take("never/taken").await;
    assert_eq!(take("approval/production").await, fresh, "a refused decision took the approval lease");
}
