//! What the control plane records, told as stories; each runs on SQLite and PostgreSQL.

use std::time::Duration;

use windlass_store::*;

use crate::backends::{Place, start_time, stories};

stories!(
    a_deploy_records_its_steps_and_outcome,
    deploys_in_the_same_second_get_distinct_ids,
    a_restarted_server_marks_its_running_deploys_interrupted,
    one_holder_per_lease_and_fencing_tokens_rise,
    a_stale_lease_is_taken_over_by_the_next_acquirer_and_audited,
    two_acquirers_of_a_stale_lease_one_takes_it_over,
    breaking_a_lease_is_deliberate_and_recorded,
    the_audit_log_and_settings,
    unknown_deploys_are_errors_not_silence,
    state_survives_reopening_and_migrations_run_once,
    a_store_from_a_newer_windlass_is_refused,
    tokens_are_found_by_hash_named_once_and_revocable,
    a_tokens_last_use_is_written_at_most_once_a_minute,
);

fn new_deploy(environment: &str, owner: &str) -> NewDeploy {
    NewDeploy {
        environment: environment.into(),
        actor: "alice".into(),
        reason: Some("ship the new editor".into()),
        config_snapshot: "[project]\nname = \"maily\"\n".into(),
        artifacts: r#"{"api":"sha256:ab12"}"#.into(),
        owner: owner.into(),
    }
}

async fn a_deploy_records_its_steps_and_outcome(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let id = store.create_deploy(&new_deploy("production", "server-1")).await.unwrap();
    assert_eq!(id.as_str(), "production-20261123-150000", "the seeds' id form, in UTC");

    let migrate = store.start_step(&id, "database", "migrate").await.unwrap();
    store.append_step_output(&id, migrate, "applying 0001_users.sql\n").await.unwrap();
    store.append_step_output(&id, migrate, "done\n").await.unwrap();
    clock.advance(Duration::from_secs(2));
    store.finish_step(&id, migrate, StepStatus::Succeeded, None).await.unwrap();
    let rollout = store.start_step(&id, "backend", "roll out api").await.unwrap();
    assert_eq!((migrate, rollout), (1, 2));
    store.finish_step(&id, rollout, StepStatus::Failed, Some("health check never passed")).await.unwrap();
    clock.advance(Duration::from_secs(1));
    store.finish_deploy(&id, DeployStatus::Failed, Some("api did not become healthy")).await.unwrap();

    let deploy = store.deploy(&id).await.unwrap().expect("the deploy exists");
    assert_eq!(deploy.status, DeployStatus::Failed);
    assert_eq!(deploy.actor, "alice");
    assert_eq!(deploy.reason.as_deref(), Some("ship the new editor"));
    assert_eq!(deploy.current_step.as_deref(), Some("roll out api"));
    assert_eq!(deploy.error.as_deref(), Some("api did not become healthy"));
    assert_eq!(deploy.started_at, start_time());
    assert_eq!(deploy.finished_at, Some(start_time() + Duration::from_secs(3)));
    assert_eq!(deploy.artifacts, r#"{"api":"sha256:ab12"}"#);

    let steps = store.steps(&id).await.unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].output, "applying 0001_users.sql\ndone\n");
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    assert_eq!(steps[0].finished_at, Some(start_time() + Duration::from_secs(2)));
    assert_eq!(steps[1].status, StepStatus::Failed);
    assert_eq!(steps[1].error.as_deref(), Some("health check never passed"));

    // A final deploy keeps its outcome even if someone tries to finish it again.
    store.finish_deploy(&id, DeployStatus::Succeeded, None).await.unwrap();
    assert_eq!(store.deploy(&id).await.unwrap().unwrap().status, DeployStatus::Failed);
}

async fn deploys_in_the_same_second_get_distinct_ids(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let creations = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.create_deploy(&new_deploy("staging", "server-1")).await.unwrap() })
    });
    let mut ids: Vec<String> = Vec::new();
    for creation in creations {
        ids.push(creation.await.unwrap().to_string());
    }
    ids.sort();
    let base = "staging-20261123-150000";
    let mut expected: Vec<String> =
        std::iter::once(base.to_owned()).chain((2..=8).map(|n| format!("{base}-{n}"))).collect();
    expected.sort();
    assert_eq!(ids, expected);

    clock.advance(Duration::from_secs(1));
    let later = store.create_deploy(&new_deploy("staging", "server-1")).await.unwrap();
    assert_eq!(later.as_str(), "staging-20261123-150001");
    let listed: Vec<String> =
        store.deploys("staging", 3).await.unwrap().into_iter().map(|d| d.id.to_string()).collect();
    assert_eq!(listed[0], "staging-20261123-150001", "newest first");
    assert_eq!(listed.len(), 3);
    assert!(store.deploys("production", 10).await.unwrap().is_empty());
}

async fn a_restarted_server_marks_its_running_deploys_interrupted(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let mine = store.create_deploy(&new_deploy("production", "server-a")).await.unwrap();
    let step = store.start_step(&mine, "backend", "roll out api").await.unwrap();
    let done = store.create_deploy(&new_deploy("staging", "server-a")).await.unwrap();
    store.finish_deploy(&done, DeployStatus::Succeeded, None).await.unwrap();
    let theirs = store.create_deploy(&new_deploy("preview", "server-b")).await.unwrap();

    let interrupted = store.interrupt_running("server-a").await.unwrap();
    assert_eq!(
        interrupted,
        vec![Interrupted {
            deploy_id: mine.clone(),
            environment: "production".into(),
            step: Some("roll out api".into())
        }]
    );
    let deploy = store.deploy(&mine).await.unwrap().unwrap();
    assert_eq!(deploy.status, DeployStatus::Interrupted);
    assert!(deploy.error.unwrap().contains("server stopped"));
    let steps = store.steps(&mine).await.unwrap();
    assert_eq!(steps[(step - 1) as usize].status, StepStatus::Interrupted);
    assert_eq!(
        store.deploy(&done).await.unwrap().unwrap().status,
        DeployStatus::Succeeded,
        "finished deploys are untouched"
    );
    assert_eq!(
        store.deploy(&theirs).await.unwrap().unwrap().status,
        DeployStatus::Running,
        "another server's deploy is untouched"
    );
    assert!(store.interrupt_running("server-a").await.unwrap().is_empty(), "reconciling twice finds nothing new");
}

async fn one_holder_per_lease_and_fencing_tokens_rise(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let alice = Holder { id: "server-alice".into(), host: "host-a".into(), pid: 101 };
    let bob = Holder { id: "server-bob".into(), host: "host-b".into(), pid: 202 };
    let ttl = Duration::from_secs(30);

    let Acquire::Acquired(lease) =
        store.acquire_lease("deploy/production", &alice, "deploy production-1", ttl).await.unwrap()
    else {
        panic!("the first holder gets the lease");
    };
    assert_eq!(lease.taken_over, None, "a free lease is simply taken");
    let Acquire::Held(held) = store.acquire_lease("deploy/production", &bob, "deploy production-2", ttl).await.unwrap()
    else {
        panic!("a second holder must not get a held lease");
    };
    assert_eq!(held.holder, alice);
    assert_eq!(held.purpose, "deploy production-1");
    assert_eq!(held.acquired_at, start_time());
    assert!(!held.stale);

    clock.advance(Duration::from_secs(20));
    store.renew_lease(&lease).await.unwrap();
    clock.advance(Duration::from_secs(20));
    let info = store.lease("deploy/production").await.unwrap().unwrap();
    assert!(!info.stale, "renewed 20 s ago with a 30 s TTL");
    assert_eq!(info.heartbeat_at, start_time() + Duration::from_secs(20));
    let Acquire::Held(_) = store.acquire_lease("deploy/production", &bob, "deploy", ttl).await.unwrap() else {
        panic!("a renewed lease is never taken over");
    };

    store.release_lease(&lease).await.unwrap();
    assert!(store.lease("deploy/production").await.unwrap().is_none());
    let Acquire::Acquired(bobs) = store.acquire_lease("deploy/production", &bob, "deploy", ttl).await.unwrap() else {
        panic!("a released lease can be taken");
    };
    assert!(bobs.token > lease.token, "fencing tokens rise with every acquisition");
    assert!(
        matches!(store.release_lease(&lease).await, Err(StoreError::LeaseLost { .. })),
        "an old lease cannot release the new one"
    );
    assert_eq!(store.leases().await.unwrap().len(), 1);
}

async fn a_stale_lease_is_taken_over_by_the_next_acquirer_and_audited(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let crashed = Holder { id: "server-crashed".into(), host: "host-a".into(), pid: 4242 };
    let bob = Holder { id: "server-bob".into(), host: "host-b".into(), pid: 202 };
    let carol = Holder { id: "server-carol".into(), host: "host-c".into(), pid: 303 };
    let ttl = Duration::from_secs(30);
    let Acquire::Acquired(old) =
        store.acquire_lease("deploy/production", &crashed, "deploy requested by alice", ttl).await.unwrap()
    else {
        panic!("free lease");
    };

    clock.advance(ttl);
    let Acquire::Held(held) = store.acquire_lease("deploy/production", &bob, "deploy", ttl).await.unwrap() else {
        panic!("a lease whose heartbeat is exactly its TTL old is not stale yet");
    };
    assert!(!held.stale);
    assert!(store.events(None, 10).await.unwrap().is_empty(), "nothing was taken over");

    clock.advance(Duration::from_millis(1));
    let Acquire::Acquired(bobs) =
        store.acquire_lease("deploy/production", &bob, "deploy requested by bob", ttl).await.unwrap()
    else {
        panic!("a stale lease is taken over by the next acquirer");
    };
    assert!(bobs.token > old.token, "the fencing token rises: {} after {}", bobs.token, old.token);
    let previous = bobs.taken_over.as_ref().expect("the new lease says which lease it took over");
    assert_eq!(previous.holder, crashed);
    assert_eq!(previous.token, old.token);
    assert_eq!(previous.purpose, "deploy requested by alice");
    assert!(previous.stale);

    let now = store.lease("deploy/production").await.unwrap().unwrap();
    assert_eq!((now.holder.clone(), now.token), (bob.clone(), bobs.token));
    assert_eq!(now.acquired_at, start_time() + ttl + Duration::from_millis(1));
    assert!(!now.stale);
    assert!(
        matches!(store.renew_lease(&old).await, Err(StoreError::LeaseLost { .. })),
        "the old holder is fenced off: it learns it lost the lease"
    );
    assert!(matches!(store.release_lease(&old).await, Err(StoreError::LeaseLost { .. })));
    store.renew_lease(&bobs).await.unwrap();

    let events = store.events(None, 10).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, "lease.taken_over");
    assert_eq!(events[0].actor, "server-bob");
    assert_eq!(events[0].subject.as_deref(), Some("deploy/production"));
    for part in ["took over", "server-crashed (pid 4242 on host-a)", "deploy requested by alice"] {
        assert!(events[0].message.contains(part), "`{part}` in: {}", events[0].message);
    }
    assert!(events[0].data.contains(&format!("\"token\":{}", old.token)), "{}", events[0].data);
    assert!(events[0].data.contains(&format!("\"token\":{}", bobs.token)), "{}", events[0].data);

    let Acquire::Held(held) = store.acquire_lease("deploy/production", &carol, "deploy", ttl).await.unwrap() else {
        panic!("the lease taken over is held like any other");
    };
    assert_eq!(held.holder, bob);
}

async fn two_acquirers_of_a_stale_lease_one_takes_it_over(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let crashed = Holder { id: "server-crashed".into(), host: "host-a".into(), pid: 4242 };
    let ttl = Duration::from_secs(10);
    let Acquire::Acquired(_) = store.acquire_lease("deploy/staging", &crashed, "deploy", ttl).await.unwrap() else {
        panic!("free lease");
    };
    clock.advance(Duration::from_secs(60));
    let holders: Vec<Holder> =
        (0..4).map(|n| Holder { id: format!("server-{n}"), host: format!("host-{n}"), pid: 100 + n }).collect();
    let attempts = holders.iter().map(|h| store.acquire_lease("deploy/staging", h, "deploy", ttl));
    let outcomes = futures_util::future::join_all(attempts).await;
    let winners: Vec<&Lease> = outcomes
        .iter()
        .filter_map(|o| match o.as_ref().unwrap() {
            Acquire::Acquired(lease) => Some(lease),
            Acquire::Held(_) => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one acquirer takes a stale lease over: {outcomes:?}");
    assert_eq!(winners[0].taken_over.as_ref().map(|p| p.holder.clone()), Some(crashed));
    for outcome in &outcomes {
        if let Acquire::Held(held) = outcome.as_ref().unwrap() {
            assert_eq!(held.holder, winners[0].holder, "the others find the winner's lease");
            assert!(!held.stale);
        }
    }
    let events = store.events(None, 10).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "lease.taken_over").count(), 1, "{events:?}");
}

async fn breaking_a_lease_is_deliberate_and_recorded(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let crashed = Holder { id: "server-crashed".into(), host: "host-a".into(), pid: 4242 };
    let Acquire::Acquired(old) =
        store.acquire_lease("deploy/staging", &crashed, "deploy", Duration::from_secs(10)).await.unwrap()
    else {
        panic!("free lease");
    };
    clock.advance(Duration::from_secs(60));
    let info = store.lease("deploy/staging").await.unwrap().unwrap();
    assert!(info.stale);

    assert_eq!(
        store.break_lease("deploy/staging", info.token + 1, "bob", "wrong token").await.unwrap(),
        None,
        "only the inspected lease is broken"
    );
    let broken =
        store.break_lease("deploy/staging", info.token, "bob", "server-crashed died in the night").await.unwrap();
    assert_eq!(broken.map(|b| b.holder), Some(crashed));
    assert!(store.lease("deploy/staging").await.unwrap().is_none());
    assert!(
        matches!(store.renew_lease(&old).await, Err(StoreError::LeaseLost { .. })),
        "the old holder learns it lost the lease"
    );

    let events = store.events(None, 10).await.unwrap();
    assert_eq!(events[0].kind, "lease.broken");
    assert_eq!(events[0].actor, "bob");
    assert_eq!(events[0].subject.as_deref(), Some("deploy/staging"));
    assert!(events[0].message.contains("server-crashed died in the night"), "{}", events[0].message);
    assert!(events[0].message.contains("pid 4242"), "{}", events[0].message);
}

async fn the_audit_log_and_settings(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    for (environment, kind) in
        [(Some("production"), "deploy.started"), (Some("staging"), "deploy.started"), (None, "token.created")]
    {
        store
            .record_event(&NewEvent {
                actor: "alice".into(),
                environment: environment.map(Into::into),
                kind: kind.into(),
                subject: None,
                message: format!("{kind} in {environment:?}"),
                data: "{}".into(),
            })
            .await
            .unwrap();
        clock.advance(Duration::from_millis(5));
    }
    let all = store.events(None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["token.created", "deploy.started", "deploy.started"]
    );
    assert!(all[0].id > all[1].id);
    let production = store.events(Some("production"), 10).await.unwrap();
    assert_eq!(production.len(), 1);
    assert_eq!(production[0].at, start_time());

    assert_eq!(store.setting("server.id").await.unwrap(), None);
    store.set_setting("server.id", "s-1").await.unwrap();
    store.set_setting("server.id", "s-2").await.unwrap();
    assert_eq!(store.setting("server.id").await.unwrap().as_deref(), Some("s-2"));
}

async fn unknown_deploys_are_errors_not_silence(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let ghost = DeployId::parse("production-20250101-120000").unwrap();
    assert_eq!(store.deploy(&ghost).await.unwrap(), None);
    assert!(matches!(
        store.finish_deploy(&ghost, DeployStatus::Succeeded, None).await,
        Err(StoreError::DeployNotFound(_))
    ));
    assert!(matches!(store.start_step(&ghost, "backend", "x").await, Err(StoreError::DeployNotFound(_))));
    assert!(store.steps(&ghost).await.unwrap().is_empty());
    assert!(DeployId::parse("../../etc/passwd").is_none());
}

async fn state_survives_reopening_and_migrations_run_once(place: Place) {
    let clock = ManualClock::new(start_time());
    let id = {
        let store = place.open(&clock).await;
        store.create_deploy(&new_deploy("production", "server-1")).await.unwrap()
    };
    let store = place.open(&clock).await;
    assert_eq!(store.deploy(&id).await.unwrap().map(|d| d.status), Some(DeployStatus::Running));
    // Opening twice at once must not apply the schema twice.
    let (a, b) = tokio::join!(place.open(&clock), place.open(&clock));
    assert_eq!(a.deploys("production", 10).await.unwrap().len(), 1);
    assert_eq!(b.deploys("production", 10).await.unwrap().len(), 1);
}

async fn a_store_from_a_newer_windlass_is_refused(place: Place) {
    let clock = ManualClock::new(start_time());
    drop(place.open(&clock).await);
    sqlx::any::install_default_drivers();
    let url = match &place {
        Place::Sqlite(_) => format!("sqlite://{}", place.location()),
        Place::Postgres(db) => db.url.clone(),
    };
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO windlass_schema (version, applied_at) VALUES (999, 0)").execute(&pool).await.unwrap();
    pool.close().await;
    let err = windlass_store::open(&place.location(), std::sync::Arc::new(clock)).await.unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found: 999, .. }), "{err}");
    assert!(err.to_string().contains("upgrade windlass"), "{err}");
}

fn new_token(name: &str, owner: &str, hash: &str, expires_at: Option<jiff::Timestamp>) -> NewToken {
    NewToken {
        name: name.into(),
        owner: owner.into(),
        kind: TokenOwnerKind::Person,
        admin: false,
        hash: hash.into(),
        expires_at,
    }
}

async fn tokens_are_found_by_hash_named_once_and_revocable(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    let expires = start_time() + jiff::SignedDuration::from_hours(24 * 90);
    store.create_token(&new_token("alice", "alice", "hash-a", Some(expires))).await.unwrap();
    let mut robot = new_token("ci-main", "ci", "hash-b", None);
    robot.kind = TokenOwnerKind::Robot;
    store.create_token(&robot).await.unwrap();
    let again = store.create_token(&new_token("alice", "bob", "hash-c", None)).await.unwrap_err();
    assert!(matches!(again, StoreError::TokenExists(ref name) if name == "alice"), "{again}");
    let alice = store.token_by_hash("hash-a").await.unwrap().expect("alice's token");
    assert_eq!((alice.owner.as_str(), alice.kind, alice.expires_at), ("alice", TokenOwnerKind::Person, Some(expires)));
    assert_eq!(store.token_by_hash("hash-c").await.unwrap(), None);
    assert_eq!(store.token_by_hash("hash-b").await.unwrap().unwrap().kind, TokenOwnerKind::Robot);

    assert!(store.revoke_token("alice").await.unwrap());
    assert!(!store.revoke_token("alice").await.unwrap(), "a second revoke finds no live token");
    let revoked = store.token_by_hash("hash-a").await.unwrap().expect("a revoked token is still found");
    assert_eq!(revoked.revoked_at, Some(start_time()), "and says when it was revoked");
    let listed = store.tokens().await.unwrap();
    assert_eq!(listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["alice", "ci-main"]);
    assert_eq!(listed[0].revoked_at, Some(start_time()));
    assert_eq!(listed[1].revoked_at, None);
}

async fn a_tokens_last_use_is_written_at_most_once_a_minute(place: Place) {
    let clock = ManualClock::new(start_time());
    let store = place.open(&clock).await;
    store.create_token(&new_token("alice", "alice", "hash-a", None)).await.unwrap();
    assert_eq!(store.token_by_hash("hash-a").await.unwrap().unwrap().last_used_at, None);
    assert!(store.token_used("alice").await.unwrap(), "the first use is written");
    clock.advance(Duration::from_secs(59));
    assert!(!store.token_used("alice").await.unwrap(), "a use within the minute is not");
    assert_eq!(store.token_by_hash("hash-a").await.unwrap().unwrap().last_used_at, Some(start_time()));
    clock.advance(Duration::from_secs(1));
    assert!(store.token_used("alice").await.unwrap(), "a use a minute later is");
    assert_eq!(store.token_by_hash("hash-a").await.unwrap().unwrap().last_used_at, Some(store.now()));
    assert_eq!(store.now(), start_time() + jiff::SignedDuration::from_secs(60), "the store tells time by its clock");
}
