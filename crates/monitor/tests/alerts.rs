//! The alert engine, on-call and incidents, driven by a manual clock: nothing here sleeps, and
//! every time-based behaviour (group waits, repeats, escalation delays, rotations) is reached by
//! moving the clock. Configs are real `windlass.toml` text through the real parser and checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use jiff::Timestamp;
use windlass_config::{AlertSeverity, Config, Source};
use windlass_monitor::alert::{
    AckVia, Action, AlertError, Dispatch, Engine, Matchers, NewSilence, Signal, ack_token, fingerprint,
};
use windlass_monitor::incident::{Incident, IncidentStatus, TimelineEntry, postmortem, reliability};
use windlass_monitor::oncall::{is_business_hours, on_call_at, rotation_at};
use windlass_store::{Clock, ManualClock};

const BASE: &str = r#"
[project]
name = "maily"

[environments.production]
[environments.staging]

[services.api]
run = "api"
phase = "backend"

[services.web]
run = "web"
phase = "frontend"
"#;

fn parse(extra: &str) -> windlass_config::Parsed {
    windlass_config::parse(&Source::new("windlass.toml", format!("{BASE}{extra}")))
}

fn config(extra: &str) -> Config {
    let parsed = parse(extra);
    assert!(!parsed.has_errors(), "{}", parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n"));
    parsed.config
}

fn engine(config: &Config) -> Engine {
    Engine::new(&config.alerts, &config.oncall)
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn mins(n: u64) -> Duration {
    Duration::from_secs(60 * n)
}

fn signal(name: &str, service: &str, severity: AlertSeverity) -> Signal {
    Signal {
        source: "probe".into(),
        name: name.into(),
        service: service.into(),
        environment: "production".into(),
        severity,
        summary: format!("{name} failed"),
    }
}

/// What was sent, as `action receiver [alert names]` lines, easy to compare.
fn sent(dispatches: &[Dispatch]) -> Vec<String> {
    dispatches
        .iter()
        .map(|d| {
            let names: Vec<&str> = d.alerts.iter().map(|a| a.name.as_str()).collect();
            let level = d.level.map(|l| format!(" L{l}")).unwrap_or_default();
            format!("{:?}{level} {} {}", d.action, d.to, names.join(","))
        })
        .collect()
}

const SLACK: &str = r#"
[alerts]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"
routes = [{ to = ["slack"] }]

[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/x"
"#;

#[test]
fn alerts_are_grouped_deduplicated_repeated_and_resolved() {
    let config = config(SLACK);
    let clock = ManualClock::new(at("2026-11-29T10:00:00Z"));
    let mut engine = engine(&config);
    let db = signal("db-down", "api", AlertSeverity::Warning);
    let latency = signal("latency", "api", AlertSeverity::Warning);

    // Two alerts of one service within group_wait: one notification listing both.
    assert!(engine.fire(&db, clock.now()).is_empty(), "group_wait holds the first notification");
    clock.advance(Duration::from_secs(10));
    assert!(engine.fire(&latency, clock.now()).is_empty());
    assert!(engine.fire(&db, clock.now()).is_empty(), "a firing alert is de-duplicated");
    clock.advance(Duration::from_secs(19));
    assert!(engine.tick(clock.now()).is_empty(), "29s: still waiting");
    clock.advance(Duration::from_secs(1));
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack db-down,latency"]);
    assert!(engine.tick(clock.now()).is_empty(), "sent once");

    // A new alert in the notified group waits for group_interval after the last notification.
    clock.advance(mins(1));
    let errors = signal("errors", "api", AlertSeverity::Warning);
    assert!(engine.fire(&errors, clock.now()).is_empty());
    clock.advance(mins(3));
    assert!(engine.tick(clock.now()).is_empty(), "4m after the api flush");
    clock.advance(mins(1));
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack errors"]);

    // Resolution is told to whoever was told of the firing, at the next group interval.
    engine.resolve(&db, clock.now());
    clock.advance(mins(5));
    assert_eq!(sent(&engine.tick(clock.now())), ["Resolve slack db-down"]);
    assert!(engine.tick(clock.now()).is_empty());

    // Still firing after repeat_interval: sent again (the repeat clock started at the first flush).
    clock.set(at("2026-11-29T14:00:30Z"));
    assert_eq!(sent(&engine.tick(clock.now())), ["Repeat slack latency,errors"]);
    assert!(engine.tick(clock.now()).is_empty());

    // Everything resolves: the group goes away, and the next alert waits group_wait again.
    // (The group's last notification was hours ago: the first resolution goes out at once, the
    // second waits group_interval.)
    assert_eq!(sent(&engine.resolve(&latency, clock.now())), ["Resolve slack latency"]);
    assert!(engine.resolve(&errors, clock.now()).is_empty());
    clock.advance(mins(5));
    assert_eq!(sent(&engine.tick(clock.now())), ["Resolve slack errors"]);
    assert!(!engine.groups().any(|g| g.service == "api"), "an empty group is forgotten");
    assert!(engine.fire(&db, clock.now()).is_empty(), "a new firing waits group_wait again");
    assert_eq!(engine.alert(&db.fingerprint()).unwrap().occurrence, 2);
    clock.advance(Duration::from_secs(30));
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack db-down"]);
}

#[test]
fn the_web_group_was_flushed_on_its_own_schedule() {
    let config = config(SLACK);
    let clock = ManualClock::new(at("2026-11-29T10:00:00Z"));
    let mut engine = engine(&config);
    engine.fire(&signal("a", "api", AlertSeverity::Warning), clock.now());
    clock.advance(Duration::from_secs(20));
    engine.fire(&signal("w", "web", AlertSeverity::Warning), clock.now());
    clock.advance(Duration::from_secs(10));
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack a"]);
    clock.advance(Duration::from_secs(20));
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack w"]);
}

#[test]
fn a_silenced_alert_is_recorded_not_sent_and_sent_after_the_silence_if_still_firing() {
    let config = config(SLACK);
    let clock = ManualClock::new(at("2026-11-29T10:00:00Z"));
    let mut engine = engine(&config);
    let silence = engine
        .add_silence(NewSilence {
            matchers: Matchers {
                service: Some("api".into()),
                environment: Some("production".into()),
                ..Default::default()
            },
            starts_at: clock.now(),
            ends_at: clock.now() + jiff::SignedDuration::from_hours(1),
            author: "ops".into(),
            reason: "migrating the database".into(),
        })
        .unwrap();
    let db = signal("db-down", "api", AlertSeverity::Warning);
    let web = signal("web-down", "web", AlertSeverity::Warning);
    engine.fire(&db, clock.now());
    engine.fire(&web, clock.now());
    clock.advance(mins(1));
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack web-down"], "only the unsilenced one");
    let recorded = engine.alert(&db.fingerprint()).unwrap();
    assert!(recorded.is_firing(), "the silenced alert is recorded");
    assert_eq!(recorded.silenced_by.as_deref(), Some(silence.id.as_str()));

    clock.advance(mins(30));
    assert!(engine.tick(clock.now()).is_empty());
    clock.advance(mins(28));
    assert!(engine.tick(clock.now()).is_empty(), "10:59: the silence ends at 11:00");
    clock.advance(mins(1));
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack db-down"], "still firing after the silence");

    // An expired-by-hand silence lets alerts through at once.
    let later = signal("disk", "web", AlertSeverity::Warning);
    let hush = engine
        .add_silence(NewSilence {
            matchers: Matchers { name: Some("disk".into()), ..Default::default() },
            starts_at: clock.now(),
            ends_at: clock.now() + jiff::SignedDuration::from_hours(8),
            author: "ops".into(),
            reason: "known".into(),
        })
        .unwrap();
    engine.fire(&later, clock.now());
    clock.advance(mins(10));
    assert!(engine.tick(clock.now()).is_empty());
    engine.expire_silence(&hush.id, clock.now()).unwrap();
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack disk"]);
    assert_eq!(engine.expire_silence("s99", clock.now()).unwrap_err(), AlertError::UnknownSilence("s99".into()));
    assert_eq!(
        engine
            .add_silence(NewSilence {
                matchers: Matchers::default(),
                starts_at: clock.now(),
                ends_at: clock.now() + jiff::SignedDuration::from_hours(1),
                author: "ops".into(),
                reason: "everything".into(),
            })
            .unwrap_err(),
        AlertError::SilenceMatchesEverything
    );
}

#[test]
fn a_maintenance_window_silences_its_service_until_it_closes() {
    let config = config(SLACK);
    let clock = ManualClock::new(at("2026-11-29T10:00:00Z"));
    let mut engine = engine(&config);
    engine.maintenance("production", Some("api"), true, "edge", clock.now());
    let health = signal("api-health", "api", AlertSeverity::Warning);
    let blip = signal("api-blip", "api", AlertSeverity::Warning);
    engine.fire(&health, clock.now());
    engine.fire(&blip, clock.now());
    clock.advance(mins(2));
    assert!(engine.tick(clock.now()).is_empty(), "in maintenance");
    engine.resolve(&blip, clock.now());
    clock.advance(mins(10));
    assert!(engine.tick(clock.now()).is_empty(), "never told, so no resolution either");
    engine.maintenance("production", Some("api"), false, "edge", clock.now());
    assert_eq!(sent(&engine.tick(clock.now())), ["Trigger slack api-health"]);
}

fn errors_of(parsed: &windlass_config::Parsed) -> Vec<String> {
    parsed.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.render()).collect()
}

#[test]
fn validate_refuses_a_shadowed_route_and_an_unknown_receiver() {
    let parsed = parse(
        r#"
[alerts]
routes = [
  { severity = "critical", to = ["pager"] },
  { severity = "critical", service = "api", to = ["slack"] },
  { severity = "warning", to = ["slak"] },
]

[alerts.receivers.pager]
type = "pagerduty"
routing_key = "k"

[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/x"
"#,
    );
    let errors = errors_of(&parsed);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let shadowed = errors.iter().find(|e| e.contains("this alert route is never used")).expect("shadowed route");
    // The route on line 18 of the file shadows the one on line 19.
    assert!(shadowed.contains("windlass.toml:19:3"), "{shadowed}");
    assert!(shadowed.contains("the route on line 18 comes first"), "{shadowed}");
    let unknown = errors.iter().find(|e| e.contains("unknown receiver `slak`")).expect("unknown receiver");
    assert!(unknown.contains("windlass.toml:20:"), "{unknown}");
    assert!(unknown.contains("did you mean `slack`?"), "{unknown}");

    // `continue` on the broader route makes the narrower one reachable.
    let fine = parse(
        r#"
[alerts]
routes = [
  { severity = "critical", to = ["pager"], continue = true },
  { severity = "critical", service = "api", to = ["slack"] },
]

[alerts.receivers.pager]
type = "pagerduty"
routing_key = "k"

[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/x"
"#,
    );
    assert!(errors_of(&fine).is_empty(), "{:#?}", errors_of(&fine));
}

#[test]
fn validate_checks_people_schedules_and_policies() {
    let parsed = parse(
        r#"
[alerts]
routes = [{ severity = "warning", hours = "off", to = ["primary"], escalation = "nope" }]

[oncall.people.alice]
email = "alice@maily.example"

[oncall.people.nobody]

[oncall.schedules.primary]
participants = ["alice", "bob"]
handoff = "Mon 09:00"
start = "2026-10-19"
"#,
    );
    let errors = errors_of(&parsed).join("\n");
    assert!(errors.contains("person `nobody` cannot be reached"), "{errors}");
    assert!(errors.contains("unknown person `bob`"), "{errors}");
    assert!(errors.contains("unknown escalation policy `nope`"), "{errors}");
    assert!(errors.contains("a route with `hours` needs `oncall.business_hours`"), "{errors}");
}

const ONCALL: &str = r#"
[oncall]
business_hours = "Mon-Fri 09:00-18:00 Europe/Berlin"

[oncall.people.alice]
email = "alice@maily.example"
receivers = ["alice-pager"]

[oncall.people.bob]
email = "bob@maily.example"

[oncall.people.carol]
email = "carol@maily.example"

[oncall.people.dave]
email = "dave@maily.example"

[oncall.people.cto]
receivers = ["cto-pager"]

[oncall.schedules.primary]
time_zone = "Europe/Berlin"
participants = ["alice", "bob"]
handoff = "Mon 09:00"
start = "2026-10-19"
overrides = [{ person = "carol", from = "2026-10-28 18:00", until = "2026-10-29 09:00" }]

[oncall.policies.seeds]
levels = [
  { after = "5m", notify = ["primary"] },
  { after = "15m", notify = ["carol"] },
  { after = "30m", notify = ["dave"] },
  { after = "1h", notify = ["cto"] },
]

[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/x"

[alerts.receivers.pagerduty]
type = "pagerduty"
routing_key = "k"

[alerts.receivers.alice-pager]
type = "pagerduty"
routing_key = "alice"

[alerts.receivers.cto-pager]
type = "pagerduty"
routing_key = "cto"
"#;

fn oncall_config(alerts: &str) -> Config {
    config(&format!("{ONCALL}\n[alerts]\n{alerts}"))
}

#[test]
fn who_is_on_call_across_a_handoff_a_daylight_saving_change_and_an_override() {
    let config = oncall_config("");
    let primary = &config.oncall.schedules["primary"];
    // Monday 19 October 2026, 09:00 in Berlin is 07:00Z (summer time).
    assert_eq!(on_call_at(primary, at("2026-10-19T06:59:59Z")), None, "before the rotation starts");
    assert_eq!(on_call_at(primary, at("2026-10-19T07:00:00Z")), Some("alice"));
    // Summer time ends on Sunday 25 October: Monday 26 October 09:00 Berlin is 08:00Z.
    assert_eq!(on_call_at(primary, at("2026-10-26T07:30:00Z")), Some("alice"), "08:30 local: alice still");
    assert_eq!(on_call_at(primary, at("2026-10-26T07:59:59Z")), Some("alice"));
    assert_eq!(on_call_at(primary, at("2026-10-26T08:00:00Z")), Some("bob"), "09:00 local: bob");
    // Carol covers Wednesday 18:00 to Thursday 09:00 local (UTC+1 now).
    assert_eq!(on_call_at(primary, at("2026-10-28T16:59:00Z")), Some("bob"));
    assert_eq!(on_call_at(primary, at("2026-10-28T17:00:00Z")), Some("carol"));
    assert_eq!(on_call_at(primary, at("2026-10-29T07:59:00Z")), Some("carol"));
    assert_eq!(on_call_at(primary, at("2026-10-29T08:00:00Z")), Some("bob"));
    assert_eq!(rotation_at(primary, at("2026-10-28T17:00:00Z")), Some("bob"), "the rotation is unchanged");
    // The turns go round: alice again from 2 November, bob from 9 November.
    assert_eq!(on_call_at(primary, at("2026-11-02T08:00:00Z")), Some("alice"));
    assert_eq!(on_call_at(primary, at("2026-11-15T12:00:00Z")), Some("bob"), "Sunday of bob's week");
    // And across the spring change: Monday 29 March 2027 09:00 Berlin is 07:00Z again.
    let week = on_call_at(primary, at("2027-03-29T06:59:00Z")).unwrap();
    let next = on_call_at(primary, at("2027-03-29T07:00:00Z")).unwrap();
    assert_ne!(week, next, "the hand-off stays at 09:00 local after the change");
}

#[test]
fn warnings_go_to_slack_in_business_hours_and_page_on_call_off_hours() {
    let config = oncall_config(
        r#"
group_wait = "0s"
routes = [
  { severity = "warning", hours = "business", to = ["slack"] },
  { severity = "warning", hours = "off", to = ["primary"] },
]
"#,
    );
    // Monday 2 November 2026, 10:00 Berlin (09:00Z): business hours.
    let monday = at("2026-11-02T09:00:00Z");
    assert!(is_business_hours(&config.oncall, monday));
    let mut engine = engine(&config);
    assert_eq!(sent(&engine.fire(&signal("slow", "api", AlertSeverity::Warning), monday)), ["Trigger slack slow"]);
    // Resolutions go to whoever was told, whatever the hour.
    let evening = at("2026-11-02T20:00:00Z");
    assert_eq!(sent(&engine.resolve(&signal("slow", "api", AlertSeverity::Warning), evening)), ["Resolve slack slow"]);
    // Saturday 7 November, 03:00 Berlin: off-hours, alice's week.
    let saturday = at("2026-11-07T02:00:00Z");
    assert!(!is_business_hours(&config.oncall, saturday));
    assert_eq!(
        sent(&engine.fire(&signal("slow", "web", AlertSeverity::Warning), saturday)),
        ["Trigger alice-pager (alice) slow", "Trigger alice <alice@maily.example> slow"]
    );
}

const PAGING: &str = r#"
group_wait = "0s"
routes = [{ severity = "critical", to = ["pagerduty"], escalation = "seeds" }]
"#;

#[test]
fn an_unacknowledged_alert_climbs_the_ladder_and_stops_at_an_ack() {
    let config = oncall_config(PAGING);
    // Tuesday 3 November 2026: alice's week.
    let clock = ManualClock::new(at("2026-11-03T02:00:00Z"));
    let mut engine = engine(&config);
    let down = signal("api-down", "api", AlertSeverity::Critical);
    assert_eq!(sent(&engine.fire(&down, clock.now())), ["Trigger pagerduty api-down"]);
    clock.advance(Duration::from_secs(299));
    assert!(engine.tick(clock.now()).is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        sent(&engine.tick(clock.now())),
        ["Escalate L1 alice-pager (alice) api-down", "Escalate L1 alice <alice@maily.example> api-down"],
        "5 minutes: on call"
    );
    clock.advance(mins(10));
    assert_eq!(sent(&engine.tick(clock.now())), ["Escalate L2 carol <carol@maily.example> api-down"], "15 minutes");
    clock.advance(mins(15));
    assert_eq!(sent(&engine.tick(clock.now())), ["Escalate L3 dave <dave@maily.example> api-down"], "30 minutes");
    assert!(engine.tick(clock.now()).is_empty());

    clock.advance(mins(5));
    let id = down.fingerprint();
    let acks = engine.acknowledge(&id, "dave", AckVia::Cli, Some("on it"), clock.now()).unwrap();
    assert!(acks.iter().all(|d| d.action == Action::Acknowledge));
    let mut told: Vec<String> = acks.iter().map(|d| d.to.to_string()).collect();
    told.sort();
    assert_eq!(
        told,
        [
            "alice <alice@maily.example>",
            "alice-pager (alice)",
            "carol <carol@maily.example>",
            "dave <dave@maily.example>",
            "pagerduty"
        ],
        "everyone told of the alert is told of the ack"
    );
    clock.advance(mins(60));
    assert!(engine.tick(clock.now()).is_empty(), "no CTO page, no repeat after the ack");
    assert_eq!(engine.alert(&id).unwrap().level, 3);

    // Resolution still reaches the route's receivers.
    assert_eq!(sent(&engine.resolve(&down, clock.now())), ["Resolve pagerduty api-down"]);
}

#[test]
fn an_external_ack_stops_escalation_too() {
    let config = oncall_config(PAGING);
    let clock = ManualClock::new(at("2026-11-03T02:00:00Z"));
    let mut engine = engine(&config);
    let down = signal("api-down", "api", AlertSeverity::Critical);
    engine.fire(&down, clock.now());
    clock.advance(mins(6));
    assert_eq!(engine.tick(clock.now()).len(), 2, "level 1");
    // PagerDuty's webhook names the dedup key, which is the alert id.
    let dedup_key = engine.alert(&down.fingerprint()).map(|a| a.id.clone()).unwrap();
    engine.acknowledge(&dedup_key, "alice", AckVia::External("pagerduty".into()), None, clock.now()).unwrap();
    clock.advance(mins(120));
    assert!(engine.tick(clock.now()).is_empty());
    let ack = engine.alert(&dedup_key).unwrap().ack.clone().unwrap();
    assert_eq!((ack.by.as_str(), ack.via), ("alice", AckVia::External("pagerduty".into())));
}

#[test]
fn an_ack_of_an_unknown_resolved_or_acknowledged_alert_is_refused_and_changes_nothing() {
    let config = oncall_config(PAGING);
    let clock = ManualClock::new(at("2026-11-03T02:00:00Z"));
    let mut engine = engine(&config);
    let down = signal("api-down", "api", AlertSeverity::Critical);
    engine.fire(&down, clock.now());
    engine.resolve(&down, clock.now());
    engine.take_changes();

    assert_eq!(
        engine.acknowledge("0123456789abcdef", "bob", AckVia::Api, None, clock.now()).unwrap_err(),
        AlertError::UnknownAlert("0123456789abcdef".into())
    );
    let error = engine.acknowledge(&down.fingerprint(), "bob", AckVia::Api, None, clock.now()).unwrap_err();
    assert!(matches!(error, AlertError::AlreadyResolved { .. }), "{error}");
    assert!(error.to_string().contains("already resolved"));
    assert!(engine.take_changes().is_empty(), "nothing changed");
    assert!(engine.alert(&down.fingerprint()).unwrap().ack.is_none());

    engine.fire(&down, clock.now());
    engine.acknowledge(&down.fingerprint(), "bob", AckVia::Api, None, clock.now()).unwrap();
    let again = engine.acknowledge(&down.fingerprint(), "carol", AckVia::Cli, None, clock.now()).unwrap_err();
    assert!(matches!(again, AlertError::AlreadyAcknowledged { ref by, .. } if by == "bob"), "{again}");
}

#[test]
fn a_signed_link_acknowledges_its_own_firing_only_until_it_expires() {
    let config = oncall_config(PAGING);
    let clock = ManualClock::new(at("2026-11-03T02:00:00Z"));
    let secret = b"server secret of the test";
    let mut engine = engine(&config);
    let down = signal("api-down", "api", AlertSeverity::Critical);
    engine.fire(&down, clock.now());
    let id = down.fingerprint();
    let fired_at = engine.alert(&id).unwrap().fired_at;
    let expires = clock.now() + jiff::SignedDuration::from_hours(1);
    let token = ack_token(secret, &id, fired_at, expires);

    let forged = token.replacen(&id, &fingerprint("probe", "other", "api", "production"), 1);
    assert!(matches!(engine.acknowledge_link(secret, &forged, "eve", clock.now()), Err(AlertError::BadLink(_))));
    assert!(matches!(
        engine.acknowledge_link(b"another secret", &token, "eve", clock.now()),
        Err(AlertError::BadLink(_))
    ));
    assert!(matches!(engine.acknowledge_link(secret, "garbage", "eve", clock.now()), Err(AlertError::BadLink(_))));
    assert_eq!(
        engine.acknowledge_link(secret, &token, "alice", expires).unwrap_err(),
        AlertError::LinkExpired,
        "expired at its expiry"
    );
    // A link of an earlier firing does not acknowledge a new one.
    engine.resolve(&down, clock.now());
    clock.advance(mins(1));
    // Fired at a time finer than the link's milliseconds, as the system clock gives.
    let refired_at = clock.now() + jiff::SignedDuration::from_nanos(456_789);
    engine.fire(&down, refired_at);
    assert_eq!(
        engine.acknowledge_link(secret, &token, "alice", clock.now()).unwrap_err(),
        AlertError::LinkForEarlierFiring(id.clone())
    );
    let fresh = ack_token(secret, &id, refired_at, expires);
    engine.acknowledge_link(secret, &fresh, "alice", clock.now()).unwrap();
    assert_eq!(engine.alert(&id).unwrap().ack.as_ref().unwrap().via, AckVia::Link);
}

#[test]
fn critical_alerts_open_and_join_an_incident_with_a_timeline_mttr_and_post_mortem() {
    let config = oncall_config(PAGING);
    let clock = ManualClock::new(at("2026-11-03T02:00:00Z"));
    let mut engine = engine(&config);
    let down = signal("api-down", "api", AlertSeverity::Critical);
    let errors = signal("api-errors", "api", AlertSeverity::Critical);
    let warning = signal("api-slow", "api", AlertSeverity::Warning);

    engine.fire(&down, clock.now());
    engine.fire(&warning, clock.now());
    let opened = clock.now();
    clock.advance(mins(2));
    engine.fire(&errors, clock.now());
    let incidents: Vec<&Incident> = engine.incidents().collect();
    assert_eq!(incidents.len(), 1, "the second critical alert joins the open incident");
    let id = incidents[0].id;
    assert_eq!(incidents[0].alerts, [down.fingerprint(), errors.fingerprint()], "warnings open no incident");

    clock.advance(mins(1));
    engine.record(
        "production",
        Some("api"),
        TimelineEntry::new(clock.now(), "deploy.started", "deploy production-20261103-020300 started").by("ci"),
    );
    assert!(engine.record("staging", None, TimelineEntry::new(clock.now(), "failover", "x")).is_empty());
    clock.advance(mins(3));
    engine.acknowledge(&down.fingerprint(), "alice", AckVia::Cli, Some("looking"), clock.now()).unwrap();
    clock.advance(mins(2));
    engine.note(id, "alice", "rolled back the deploy", clock.now()).unwrap();
    clock.advance(mins(1));
    engine.resolve(&down, clock.now());
    engine.resolve(&errors, clock.now());
    clock.advance(mins(3));
    engine.resolve_incident(id, "alice", Some("rollback fixed it"), clock.now()).unwrap();
    assert!(matches!(
        engine.resolve_incident(id, "bob", None, clock.now()),
        Err(AlertError::IncidentAlreadyResolved { .. })
    ));

    let incident = engine.incident(id).unwrap().clone();
    assert_eq!(incident.status, IncidentStatus::Resolved);
    let kinds: Vec<&str> = incident.timeline.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "incident.opened",
            "alert.fired",
            "alert.fired",
            "deploy.started",
            "alert.acknowledged",
            "note",
            "alert.resolved",
            "alert.resolved",
            "incident.resolved"
        ]
    );
    assert!(incident.timeline.windows(2).all(|w| w[0].at <= w[1].at));

    let stats = reliability(
        std::slice::from_ref(&incident),
        "production",
        "api",
        opened,
        opened + jiff::SignedDuration::from_hours(24),
    );
    assert_eq!(stats.incidents, 1);
    assert_eq!(stats.mttr, Some(mins(12)));

    let md = postmortem(&incident, clock.now());
    assert!(md.starts_with(&format!("# Post-mortem: incident {id} — api down in production: api-down")), "{md}");
    assert!(md.contains("- Impact window: 2026-11-03 02:00:00 UTC → 2026-11-03 02:12:00 UTC"), "{md}");
    assert!(md.contains("- Duration: 12m 00s"), "{md}");
    assert!(md.contains("| Acknowledged | 2026-11-03 02:06:00 UTC | 6m 00s |"), "{md}");
    assert!(md.contains("| Resolved | 2026-11-03 02:12:00 UTC | 12m 00s |"), "{md}");
    assert!(md.contains("## Root cause") && md.contains("## Action items"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 02:")).collect();
    assert_eq!(rows.len(), 9, "{md}");
    assert!(rows[1].contains("api-down fired") && rows[2].contains("api-errors fired"), "{rows:#?}");
    assert!(rows[3].contains("| deploy.started | ci |"), "{rows:#?}");
    assert!(rows[4].contains("alice acknowledged api-down via the CLI: looking"), "{rows:#?}");

    // A new critical alert after the incident is resolved opens a new one.
    engine.fire(&signal("api-down-again", "api", AlertSeverity::Critical), clock.now());
    assert_eq!(engine.incidents().filter(|i| i.status == IncidentStatus::Open).count(), 1);
    assert_eq!(engine.incidents().count(), 2);
}

#[test]
fn mttr_and_mtbf_over_a_synthetic_history() {
    let start = at("2026-11-01T00:00:00Z");
    let hour = jiff::SignedDuration::from_hours(1);
    let incident = |id: u64, service: &str, open_h: i32, minutes: i64| {
        let opened = start + hour * open_h;
        let mut i = Incident::open(id, "production", service, "x", opened);
        i.status = IncidentStatus::Resolved;
        i.resolved_at = Some(opened + jiff::SignedDuration::from_mins(minutes));
        i
    };
    let history = vec![
        incident(1, "api", 10, 10),
        incident(2, "api", 100, 20),
        incident(3, "web", 50, 600),
        incident(4, "api", 200, 30),
        // Before the period: its tail inside the period still counts as down time.
        Incident { resolved_at: Some(start + jiff::SignedDuration::from_mins(15)), ..incident(5, "api", -1, 0) },
    ];
    let end = start + hour * 240;
    let stats = reliability(&history, "production", "api", start, end);
    assert_eq!(stats.incidents, 3);
    assert_eq!(stats.mttr, Some(mins(20)), "(10 + 20 + 30) / 3");
    assert_eq!(stats.downtime, mins(75), "60 in the period plus the 15-minute tail");
    assert_eq!(stats.mtbf, Some((Duration::from_secs(240 * 3600) - mins(75)) / 3));
    assert_eq!(reliability(&history, "production", "db", start, end).mttr, None);
}

#[test]
fn a_probe_transition_fires_and_resolves_and_continue_routes_reach_every_match() {
    let config = config(
        r#"
[alerts]
group_wait = "0s"
routes = [
  { severity = "critical", to = ["pagerduty"], continue = true },
  { service = "api", to = ["slack"] },
  { to = ["email"] },
]
escalation = [{ after = "10m", notify = ["email"] }]

[alerts.receivers.pagerduty]
type = "pagerduty"
routing_key = "k"

[alerts.receivers.slack]
type = "slack"
webhook_url = "https://hooks.slack.example/x"

[alerts.receivers.email]
type = "email"
to = ["devops@maily.example"]
"#,
    );
    let mut engine = engine(&config);
    let down = windlass_monitor::probe::Transition {
        probe: "api-public".into(),
        from: windlass_monitor::probe::Health::Up,
        to: windlass_monitor::probe::Health::Down,
        at: at("2026-11-29T10:00:00Z"),
        reason: "connection refused".into(),
        after: 3,
        service: Some("api".into()),
        environment: Some("production".into()),
        severity: AlertSeverity::Critical,
    };
    // Critical: pagerduty (continue), then the first of the rest that matches: slack.
    assert_eq!(sent(&engine.observe(&down)), ["Trigger pagerduty api-public", "Trigger slack api-public"]);
    let id = fingerprint("probe", "api-public", "api", "production");
    assert_eq!(engine.alert(&id).unwrap().summary, "connection refused");
    // A critical alert without a policy climbs the default ladder.
    assert_eq!(sent(&engine.tick(at("2026-11-29T10:10:00Z"))), ["Escalate L1 email api-public"]);
    let up = windlass_monitor::probe::Transition {
        from: windlass_monitor::probe::Health::Down,
        to: windlass_monitor::probe::Health::Up,
        at: at("2026-11-29T10:12:00Z"),
        ..down.clone()
    };
    assert_eq!(sent(&engine.observe(&up)), ["Resolve pagerduty api-public", "Resolve slack api-public"]);
    // A warning of another service: only the catch-all route, and no escalation.
    let web = signal("web-slow", "web", AlertSeverity::Warning);
    assert_eq!(sent(&engine.fire(&web, at("2026-11-29T11:00:00Z"))), ["Trigger email web-slow"]);
    assert!(engine.tick(at("2026-11-29T12:00:00Z")).is_empty());
}
