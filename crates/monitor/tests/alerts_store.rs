//! The alert engine over a real store, SQLite and PostgreSQL: a restarted server (a new engine
//! over the same database) resumes its firing alerts, silences and incidents, and sends nothing
//! twice. Time moves by a manual clock only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use windlass_config::{AlertSeverity, Source};
use windlass_monitor::alert::persist::{Alerting, incident_from};
use windlass_monitor::alert::{AckVia, Action, Dispatch, Matchers, NewSilence, Signal};
use windlass_monitor::incident::IncidentStatus;
use windlass_store::{ManualClock, Store};
use windlass_testkit::postgres::TestDatabase;

const CONFIG: &str = r#"
[project]
name = "maily"

[environments.production]

[services.api]
run = "api"
phase = "backend"

[services.web]
run = "web"
phase = "frontend"

[alerts]
group_wait = "0s"
routes = [
  { severity = "critical", to = ["pagerduty"], escalation = "seeds" },
  { severity = "warning", to = ["slack"] },
]

[alerts.receivers.pagerduty]
type = "pagerduty"
routing_key = "k"

[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/x"

[oncall.people.alice]
email = "alice@maily.example"

[oncall.people.carol]
email = "carol@maily.example"

[oncall.schedules.primary]
participants = ["alice"]
handoff = "Mon 09:00"
start = "2026-11-02"

[oncall.policies.seeds]
levels = [{ after = "5m", notify = ["primary"] }, { after = "15m", notify = ["carol"] }]
"#;

fn names(dispatches: &[Dispatch]) -> Vec<String> {
    dispatches.iter().map(|d| format!("{:?} {}", d.action, d.to)).collect()
}

async fn restart_resumes_without_resending(location: String) {
    let config = windlass_config::parse(&Source::new("windlass.toml", CONFIG));
    assert!(!config.has_errors(), "{:?}", config.diagnostics);
    let config = config.config;
    let clock = ManualClock::new("2026-11-03T02:00:00Z".parse().unwrap());
    let open_store =
        || async { windlass_store::open(&location, Arc::new(clock.clone())).await.expect("open the store") };
    let down = Signal {
        source: "probe".into(),
        name: "api-down".into(),
        service: "api".into(),
        environment: "production".into(),
        severity: AlertSeverity::Critical,
        summary: "connection refused".into(),
    };
    let slow =
        Signal { name: "web-slow".into(), service: "web".into(), severity: AlertSeverity::Warning, ..down.clone() };
    let id = down.fingerprint();

    {
        let store = open_store().await;
        let alerting = Alerting::open(store, Arc::new(clock.clone()), &config.alerts, &config.oncall).await.unwrap();
        assert_eq!(names(&alerting.with(|e, now| e.fire(&down, now)).await.unwrap()), ["Trigger pagerduty"]);
        let silence = alerting
            .with(|e, now| {
                e.add_silence(NewSilence {
                    matchers: Matchers { service: Some("web".into()), ..Default::default() },
                    starts_at: now,
                    ends_at: now + jiff::SignedDuration::from_hours(2),
                    author: "ops".into(),
                    reason: "load test".into(),
                })
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(silence.id, "s1");
        assert!(alerting.with(|e, now| e.fire(&slow, now)).await.unwrap().is_empty(), "silenced");
        clock.advance(Duration::from_secs(5 * 60));
        assert_eq!(
            names(&alerting.with(|e, now| e.tick(now)).await.unwrap()),
            ["Escalate alice <alice@maily.example>"]
        );
        // The server stops here.
    }

    let store: Arc<dyn Store> = open_store().await;
    let alerting =
        Alerting::open(store.clone(), Arc::new(clock.clone()), &config.alerts, &config.oncall).await.unwrap();
    assert!(alerting.with(|e, now| e.tick(now)).await.unwrap().is_empty(), "nothing is sent again");
    assert!(alerting.with(|e, now| e.fire(&down, now)).await.unwrap().is_empty(), "still firing: de-duplicated");
    let (firing, silenced_by) = alerting
        .with(|e, _| {
            let alert = e.alert(&id).unwrap();
            let slow = e.alert(&slow.fingerprint()).unwrap();
            (alert.is_firing() && alert.level == 1, slow.silenced_by.clone())
        })
        .await
        .unwrap();
    assert!(firing, "the firing alert and its escalation level survive");
    assert_eq!(silenced_by.as_deref(), Some("s1"), "and the silence");

    clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(
        names(&alerting.with(|e, now| e.tick(now)).await.unwrap()),
        ["Escalate carol <carol@maily.example>"],
        "the ladder goes on where it was"
    );
    let acks = alerting.with(|e, now| e.acknowledge(&id, "carol", AckVia::Api, None, now)).await.unwrap().unwrap();
    assert!(acks.iter().all(|d| d.action == Action::Acknowledge));
    assert_eq!(acks.len(), 3, "pagerduty, alice and carol were told");

    // A new silence after the restart does not reuse an id.
    let next = alerting
        .with(|e, now| {
            e.add_silence(NewSilence {
                matchers: Matchers { name: Some("x".into()), ..Default::default() },
                starts_at: now,
                ends_at: now + jiff::SignedDuration::from_hours(1),
                author: "ops".into(),
                reason: "x".into(),
            })
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, "s2");

    // The silence ends while web-slow still fires: it is sent now.
    clock.advance(Duration::from_secs(2 * 3600));
    let after = alerting.with(|e, now| e.tick(now)).await.unwrap();
    assert_eq!(names(&after), ["Trigger slack"]);

    // The incident, its timeline and the ack are in the store for the CLI and API.
    let incidents = store.incident_records(Some("production"), 10).await.unwrap();
    assert_eq!(incidents.len(), 1);
    let incident = incident_from(&incidents[0]).unwrap();
    assert_eq!(incident.status, IncidentStatus::Open);
    let kinds: Vec<&str> = incident.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["incident.opened", "alert.fired", "alert.acknowledged"]);
    let records = store.alert_records(Some("production")).await.unwrap();
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r.status == "firing"));
    assert_eq!(store.silence_records(Some("production")).await.unwrap().len(), 2);
    assert!(store.alert_records(Some("staging")).await.unwrap().is_empty());

    // Resolving after another restart tells pagerduty, once.
    drop(alerting);
    let alerting =
        Alerting::open(open_store().await, Arc::new(clock.clone()), &config.alerts, &config.oncall).await.unwrap();
    let resolved = alerting.with(|e, now| e.resolve(&down, now)).await.unwrap();
    assert_eq!(names(&resolved), ["Resolve pagerduty"]);
    let incident_id = incident.id;
    alerting.with(|e, now| e.resolve_incident(incident_id, "carol", None, now).map(drop)).await.unwrap().unwrap();
    let stored =
        incident_from(&store.incident_record(i64::try_from(incident_id).unwrap()).await.unwrap().unwrap()).unwrap();
    assert_eq!(stored.status, IncidentStatus::Resolved);
    drop(alerting);
    let alerting =
        Alerting::open(open_store().await, Arc::new(clock.clone()), &config.alerts, &config.oncall).await.unwrap();
    assert!(alerting.with(|e, now| e.tick(now)).await.unwrap().is_empty());
    // A new critical alert opens incident 2, not 1 again.
    alerting.with(|e, now| e.fire(&down, now)).await.unwrap();
    let ids: Vec<u64> = alerting.with(|e, _| e.incidents().map(|i| i.id).collect()).await.unwrap();
    assert_eq!(ids, [2]);
}

#[tokio::test]
async fn sqlite_restart_resumes_without_resending() {
    let dir = windlass_testkit::tempdir();
    restart_resumes_without_resending(dir.path().join("windlass.db").display().to_string()).await;
}

#[tokio::test]
async fn postgres_restart_resumes_without_resending() {
    let db = TestDatabase::create().await;
    restart_resumes_without_resending(db.url.clone()).await;
}
