//! Crashes and races with real processes: this test binary runs itself as the child, executing
//! one of the `child_*` tests (ignored in normal runs), with the store location in its
//! environment and failpoints armed.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use windlass_store::*;

use crate::backends::{Place, start_time};

const CHILD_STORE: &str = "WINDLASS_TEST_CHILD_STORE";
const CHILD_HOLDER: &str = "WINDLASS_TEST_CHILD_HOLDER";
const CHILD_GO: &str = "WINDLASS_TEST_CHILD_GO";
const RACE_ROUNDS: usize = 20;

fn child(test: &str, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", test, "--ignored", "--nocapture", "--test-threads", "1"]);
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
#[ignore = "runs as a child process of the crash tests"]
fn child_write_then_crash() {
    let Ok(location) = std::env::var(CHILD_STORE) else { return };
    runtime().block_on(async {
        let store = windlass_store::open(&location, Arc::new(SystemClock)).await.unwrap();
        let id = store
            .create_deploy(&NewDeploy {
                environment: "production".into(),
                actor: "alice".into(),
                reason: None,
                config_snapshot: String::new(),
                artifacts: "{}".into(),
                owner: "server-crash".into(),
            })
            .await
            .unwrap();
        // With `store.after_write=abort` armed, the process never gets here.
        println!("CREATED {id}");
    });
}

/// `kill -9` at the moment after a write committed: the write is there after the crash, and the
/// restarted server is told the deploy was interrupted.
async fn a_committed_write_survives_an_abort_right_after_it(place: Place) {
    // Create the schema first so the failpoint's first write is the deploy itself.
    drop(place.open(&ManualClock::new(start_time())).await);
    let output = child(
        "crash::child_write_then_crash",
        &[(CHILD_STORE, place.location()), ("WINDLASS_FAILPOINTS", "store.after_write=abort".into())],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the child must have crashed: {stderr}");
    assert!(stderr.contains("failpoint store.after_write: abort"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("CREATED"), "it crashed before going on");

    let store = place.open(&ManualClock::new(start_time())).await;
    let deploys = store.deploys("production", 10).await.unwrap();
    assert_eq!(deploys.len(), 1, "the committed deploy survived the crash");
    assert_eq!(deploys[0].status, DeployStatus::Running);
    let interrupted = store.interrupt_running("server-crash").await.unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(store.deploy(&deploys[0].id).await.unwrap().unwrap().status, DeployStatus::Interrupted);
}

#[test]
#[ignore = "runs as a child process of the lease race tests"]
fn child_race_for_leases() {
    let (Ok(location), Ok(holder), Ok(go)) =
        (std::env::var(CHILD_STORE), std::env::var(CHILD_HOLDER), std::env::var(CHILD_GO))
    else {
        return;
    };
    runtime().block_on(async {
        let store = windlass_store::open(&location, Arc::new(SystemClock)).await.unwrap();
        let holder = Holder::this_process(holder);
        println!("READY");
        // Both children start acquiring at the same moment: when the go file appears.
        while !std::path::Path::new(&go).exists() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for round in 0..RACE_ROUNDS {
            let name = format!("deploy/race-{round}");
            match store.acquire_lease(&name, &holder, "race", Duration::from_secs(60)).await.unwrap() {
                Acquire::Acquired(_) => println!("RESULT {name} WON"),
                Acquire::Held(info) => println!("RESULT {name} LOST-TO {}", info.holder.id),
            }
        }
    });
}

/// Two processes race for the same leases: for each lease exactly one wins, and the loser is told
/// who holds it. The processes also open (and migrate) a brand-new store at the same time.
async fn two_processes_racing_for_a_lease_have_one_winner(place: Place) {
    let go = windlass_testkit::tempdir();
    let go_file = go.path().join("go");
    let spawn = |holder: &str| {
        child(
            "crash::child_race_for_leases",
            &[
                (CHILD_STORE, place.location()),
                (CHILD_HOLDER, holder.to_owned()),
                (CHILD_GO, go_file.display().to_string()),
            ],
        )
        .spawn()
        .unwrap()
    };
    let children = [spawn("racer-a"), spawn("racer-b")];
    std::fs::write(&go_file, "go").unwrap();
    let outputs: Vec<(String, Output)> = ["racer-a", "racer-b"]
        .into_iter()
        .zip(children)
        .map(|(name, child)| (name.to_owned(), child.wait_with_output().unwrap()))
        .collect();

    let mut winners: HashMap<String, Vec<String>> = HashMap::new();
    for (name, output) in &outputs {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{name} failed: {}", String::from_utf8_lossy(&output.stderr));
        for line in stdout.lines().filter_map(|l| l.strip_prefix("RESULT ")) {
            let mut words = line.split_whitespace();
            let (lease, outcome) = (words.next().unwrap().to_owned(), words.next().unwrap());
            match outcome {
                "WON" => winners.entry(lease).or_default().push(name.clone()),
                "LOST-TO" => {
                    let holder = words.next().unwrap();
                    assert_ne!(holder, name, "{name} lost {lease} to itself");
                    winners.entry(lease).or_default();
                }
                other => panic!("unexpected outcome {other}"),
            }
        }
    }
    assert_eq!(winners.len(), RACE_ROUNDS, "every lease was raced for: {winners:?}");
    for (lease, won_by) in &winners {
        assert_eq!(won_by.len(), 1, "{lease} must have exactly one winner, had {won_by:?}");
    }
    let store = place.open(&ManualClock::new(start_time())).await;
    assert_eq!(store.leases().await.unwrap().len(), RACE_ROUNDS);
}

crate::backends::stories!(
    a_committed_write_survives_an_abort_right_after_it,
    two_processes_racing_for_a_lease_have_one_winner
);
