//! SLO accounting against real parts: an in-process edge in front of a real demo instance, real
//! traffic (with injected 5xx and maintenance pages), the collector on a manual clock, and the
//! rollups in SQLite and in PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use windlass_edge::client::EdgeClient;
use windlass_edge::spec::{EdgeSpec, PoolSpec, RouteSpec, ServiceSpec};
use windlass_edge::{EdgeHandle, EdgeOptions, Settings};
use windlass_monitor::slo::collector::{Collected, Collector, CollectorSettings};
use windlass_monitor::slo::report::{self, Objective, Severity, Source};
use windlass_monitor::slo::{Counts, HOUR, MINUTE, render};
use windlass_store::{Clock, ManualClock, Store};
use windlass_testkit::TempDir;
use windlass_testkit::http;
use windlass_testkit::postgres::TestDatabase;
use windlass_testkit::process::{Process, loopback_listener};

const TOKEN: &str = "slo-test-admin-token-0123456789";
const HOST: &str = "api.test";
const ENV: &str = "production";

enum Place {
    Sqlite(TempDir),
    Postgres(TestDatabase),
}

impl Place {
    async fn open(&self, clock: &ManualClock) -> Arc<dyn Store> {
        let location = match self {
            Place::Sqlite(dir) => dir.path().join("windlass.db").display().to_string(),
            Place::Postgres(db) => db.url.clone(),
        };
        windlass_store::open(&location, Arc::new(clock.clone())).await.expect("open the store")
    }
}

struct Demo {
    _process: Process,
    address: SocketAddr,
    admin: SocketAddr,
}

fn start_demo() -> Demo {
    let (main, admin) = (loopback_listener(), loopback_listener());
    let mut command = Command::new(windlass_testkit::workspace_bin("windlass-demo"));
    command.env_clear().env("VERSION", "v1");
    let process = Process::start_with_listeners(command, &[&main, &admin]);
    process.wait_for_line("listening on");
    Demo { _process: process, address: main.local_addr().unwrap(), admin: admin.local_addr().unwrap() }
}

fn start_edge(demo: &Demo) -> EdgeHandle {
    let service = ServiceSpec {
        routes: vec![RouteSpec { host: Some(HOST.into()), path: "/".into() }],
        pools: [("blue".to_owned(), PoolSpec { instances: vec![demo.address], weight: 100 })].into_iter().collect(),
        ..ServiceSpec::default()
    };
    let settings = Settings {
        upstream_timeout: Duration::from_secs(5),
        // Injected 5xx must reach the counters, not eject the only instance.
        eject_after_errors: u32::MAX,
        ..Settings::new(TOKEN)
    };
    windlass_edge::start(EdgeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        workers: 1,
        settings,
        initial: EdgeSpec { services: [("api".to_owned(), service)].into_iter().collect(), maintenance_all: false },
        state_path: None,
        tls: None,
        admin_tls: None,
    })
    .expect("the edge starts")
}

fn collector(store: &Arc<dyn Store>, clock: &ManualClock, edge: &EdgeHandle) -> Collector {
    Collector {
        store: store.clone(),
        edge: Arc::new(EdgeClient::new(edge.admin_address, edge.address, TOKEN)),
        clock: Arc::new(clock.clone()),
        environment: ENV.into(),
        settings: CollectorSettings::default(),
    }
}

/// What the client saw: (answers, 5xx answers).
async fn send(edge: &EdgeHandle, count: u32, path: &str) -> (u64, u64) {
    let (mut answers, mut errors) = (0, 0);
    for _ in 0..count {
        let reply = http::request("GET", edge.address, path, &[("host", HOST)], "").await.unwrap();
        answers += 1;
        if reply.status >= 500 {
            errors += 1;
        }
    }
    (answers, errors)
}

async fn admin(edge: &EdgeHandle, method: &str, path: &str, body: &str) {
    let auth = format!("Bearer {TOKEN}");
    let reply = http::request(
        method,
        edge.admin_address,
        path,
        &[("authorization", &auth), ("content-type", "application/json")],
        body,
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
}

fn objective() -> Objective {
    Objective {
        service: "api".into(),
        availability: Some(0.999),
        error_rate: None,
        p95: Some(Duration::from_millis(300)),
        p99: Some(Duration::from_millis(40)),
        window: Duration::from_secs(30 * 86_400),
    }
}

fn settings() -> report::Settings {
    report::Settings { min_samples: 50, ..report::Settings::default() }
}

async fn minute_rows(store: &dyn Store, from: Timestamp, to: Timestamp) -> Vec<windlass_store::RollupRow> {
    store.rollups(ENV, Some("api"), Some(MINUTE), from, to).await.unwrap()
}

/// Real traffic through a real edge becomes minute rows that match what the client saw; the
/// report and the table show the burn; a restarted collector and a restarted edge count nothing
/// twice and nothing negative.
async fn traffic_becomes_rollups_and_a_report(place: Place) {
    let t0: Timestamp = "2026-11-23T15:00:30Z".parse().unwrap();
    let clock = ManualClock::new(t0);
    let store = place.open(&clock).await;
    let demo = start_demo();
    let edge = start_edge(&demo);
    let services = vec!["api".to_owned()];

    // The first reading is only a baseline: traffic before it is not this minute's.
    send(&edge, 20, "/version").await;
    let first = collector(&store, &clock, &edge);
    assert_eq!(first.collect(&services).await.unwrap(), Collected::Baseline);
    assert!(minute_rows(&*store, t0 - jiff::SignedDuration::from_hours(1), t0 + HOUR_SPAN).await.is_empty());

    // Minute 15:00: 200 answers, a fifth failing, and 20 slow ones.
    let reply = http::request("PUT", demo.admin, "/faults", &[], "{\"error_rate\": 0.2}").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (answers, errors) = send(&edge, 180, "/version").await;
    let reply = http::request("PUT", demo.admin, "/faults", &[], "{\"error_rate\": 0.0}").await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let (slow, slow_errors) = send(&edge, 20, "/sleep?ms=60").await;
    assert!(errors > 10, "the demo injected {errors} errors of {answers}");
    clock.advance(Duration::from_secs(60));
    let minute: Timestamp = "2026-11-23T15:00:00Z".parse().unwrap();
    assert_eq!(first.collect(&services).await.unwrap(), Collected::Rows { minute, services: services.clone() });
    let rows = minute_rows(&*store, minute, minute + HOUR_SPAN).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let counts = Counts::from_row(&rows[0]).unwrap();
    assert_eq!((rows[0].span_secs, counts.requests, counts.errors), (MINUTE, answers + slow, errors + slow_errors));
    assert_eq!(counts.histogram.iter().sum::<u64>(), answers + slow);
    assert!(counts.quantile_micros(0.99).unwrap() >= 60_000);

    // Minute 15:01: maintenance pages, which are counted apart and spend no budget.
    admin(&edge, "PUT", "/edge/services/api/maintenance", r#"{"enabled": true}"#).await;
    let mut pages: i64 = 0;
    for _ in 0..15 {
        let reply = http::request("GET", edge.address, "/version", &[("host", HOST)], "").await.unwrap();
        assert_eq!(reply.status, 503);
        pages += 1;
    }
    admin(&edge, "PUT", "/edge/services/api/maintenance", r#"{"enabled": false}"#).await;
    clock.advance(Duration::from_secs(60));
    first.collect(&services).await.unwrap();
    let rows = minute_rows(&*store, minute, minute + HOUR_SPAN).await;
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[1].requests, rows[1].errors, rows[1].maintenance), (0, 0, pages));

    // The report: 10% errors over every window with data is a 100× burn: all three rules fire.
    let now = clock.now();
    let report = report::load_report(&*store, ENV, &[objective()], &[], now, &settings()).await.unwrap();
    let api = &report.services[0];
    assert_eq!(
        (api.window.total, api.window.bad, api.window.source),
        (answers + slow, errors + slow_errors, Source::Edge)
    );
    assert_eq!(api.maintenance, pages as u64);
    let sli = api.sli.unwrap();
    assert!((sli - (1.0 - (errors + slow_errors) as f64 / (answers + slow) as f64)).abs() < 1e-12);
    let firing: Vec<(Severity, f64)> = api.alerts.iter().map(|a| (a.severity, a.factor)).collect();
    assert_eq!(firing, vec![(Severity::Critical, 14.4), (Severity::Critical, 6.0), (Severity::Warning, 1.0)]);
    assert_eq!(api.latency[1].met, Some(false), "p99 above 40 ms with 10% of answers at 60 ms");
    // The API answers this JSON.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["environment"], ENV);
    assert_eq!(json["services"][0]["objective"]["service"], "api");
    assert_eq!(json["services"][0]["alerts"][0]["severity"], "critical");
    assert_eq!(json["services"][0]["window"]["total"], answers + slow);
    let back: report::Report = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    // And the CLI prints this table.
    let table = render::render(&report);
    assert!(table.contains("api  availability 99.900% over 30d · p95 ≤ 300ms · p99 ≤ 40ms"), "{table}");
    assert!(table.contains(&format!("({} requests, {} errors)", answers + slow, errors + slow_errors)), "{table}");
    assert!(table.contains("CRITICAL 14.4×: 1h at"), "{table}");
    assert!(table.contains("1d exhausted ("), "{table}");
    assert!(table.contains(&format!("{pages} maintenance")), "{table}");
    assert!(table.contains("p99") && table.contains("MISSED"), "{table}");

    // A restarted server (a new collector on the same store) resumes from the stored reading.
    let restarted = collector(&store, &clock, &edge);
    let (more, _) = send(&edge, 7, "/version").await;
    clock.advance(Duration::from_secs(60));
    restarted.collect(&services).await.unwrap();
    let rows = minute_rows(&*store, minute, minute + HOUR_SPAN).await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2].requests as u64, more, "only the new answers, nothing counted twice");

    // A restarted edge starts its counters from zero: the next minute counts its answers, never
    // a negative difference.
    edge.stop();
    let edge = start_edge(&demo);
    let after_restart = collector(&store, &clock, &edge);
    let (fresh, _) = send(&edge, 5, "/version").await;
    clock.advance(Duration::from_secs(60));
    after_restart.collect(&services).await.unwrap();
    let rows = minute_rows(&*store, minute, minute + HOUR_SPAN).await;
    assert_eq!(rows.len(), 4);
    assert_eq!((rows[3].requests as u64, rows[3].errors), (fresh, 0));

    // Blue-green: green takes over, blue is removed, then blue comes back (the edge kept blue's
    // old counters). Green's first reading is its baseline; blue's return counts only its new
    // answers, never its history.
    let instances = format!("{{\"instances\": [\"{}\"]}}", demo.address);
    admin(&edge, "PUT", "/edge/services/api/pools/green", &instances).await;
    admin(&edge, "PUT", "/edge/services/api/weights", r#"{"blue": 0, "green": 100}"#).await;
    clock.advance(Duration::from_secs(60));
    after_restart.collect(&services).await.unwrap();
    let (on_green, _) = send(&edge, 6, "/version").await;
    clock.advance(Duration::from_secs(60));
    after_restart.collect(&services).await.unwrap();
    admin(&edge, "DELETE", "/edge/services/api/pools/blue", "").await;
    clock.advance(Duration::from_secs(60));
    after_restart.collect(&services).await.unwrap();
    admin(&edge, "PUT", "/edge/services/api/pools/blue", &instances).await;
    admin(&edge, "PUT", "/edge/services/api/weights", r#"{"blue": 100, "green": 0}"#).await;
    let (on_blue, _) = send(&edge, 4, "/version").await;
    clock.advance(Duration::from_secs(60));
    after_restart.collect(&services).await.unwrap();
    let rows = minute_rows(&*store, minute, minute + HOUR_SPAN).await;
    let counted: Vec<i64> = rows[4..].iter().map(|r| r.requests).collect();
    assert_eq!(counted, vec![on_green as i64, on_blue as i64], "{rows:?}");

    // After a long outage of the collector the gap is not pinned on one minute: a fresh baseline.
    send(&edge, 9, "/version").await;
    clock.advance(Duration::from_secs(3600));
    assert_eq!(after_restart.collect(&services).await.unwrap(), Collected::Baseline);
    edge.stop();
}

const HOUR_SPAN: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);

/// A minute of synthetic traffic whose latencies depend on the minute.
fn synthetic(i: u64) -> Counts {
    let mut counts = Counts { requests: 500 + i, errors: i % 7, client_errors: i % 3, ..Counts::default() };
    for r in 0..counts.requests {
        let micros = 2_000 + (r * 37 + i * 1_013) % 50_000 + if r % 100 == 0 { 900_000 } else { 0 };
        counts.histogram[windlass_edge::metrics::bucket_of(micros)] += 1;
        counts.latency_sum_micros += micros;
    }
    counts
}

/// Each complete hour becomes an hour row with the same totals and the same merged percentiles;
/// minute rows go after a week, hour rows after their retention; a report reads the same figures
/// before and after.
async fn downsampling_keeps_totals_and_percentiles(place: Place) {
    let start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
    let clock = ManualClock::new(start);
    let store = place.open(&clock).await;
    // Three hours of minutes for two services.
    let mut rows = Vec::new();
    for i in 0..180u64 {
        let at = start + jiff::SignedDuration::from_mins(i as i64);
        rows.push(synthetic(i).to_row(ENV, "api", at, MINUTE));
        rows.push(synthetic(i + 1000).to_row(ENV, "web", at, MINUTE));
    }
    store.put_rollups(&rows, None).await.unwrap();
    let end = start + jiff::SignedDuration::from_hours(3);
    let spans = |rows: &[windlass_store::RollupRow]| {
        rows.iter().fold(BTreeMap::<(String, i64), usize>::new(), |mut m, r| {
            *m.entry((r.service.clone(), r.span_secs)).or_default() += 1;
            m
        })
    };
    let expect = |api_minutes, api_hours, web_minutes, web_hours| -> BTreeMap<(String, i64), usize> {
        [
            (("api".to_owned(), MINUTE), api_minutes),
            (("api".to_owned(), HOUR), api_hours),
            (("web".to_owned(), MINUTE), web_minutes),
            (("web".to_owned(), HOUR), web_hours),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    };
    let collector = Collector {
        store: store.clone(),
        edge: Arc::new(EdgeClient::new("127.0.0.1:9".parse().unwrap(), "127.0.0.1:9".parse().unwrap(), TOKEN)),
        clock: Arc::new(clock.clone()),
        environment: ENV.into(),
        settings: CollectorSettings::default(),
    };

    // At 02:30 the first two hours are complete: merged, their minutes kept.
    clock.set(start + jiff::SignedDuration::from_mins(150));
    assert_eq!(collector.downsample(48).await.unwrap(), 0);
    assert_eq!(spans(&store.rollups(ENV, None, None, start, end).await.unwrap()), expect(180, 2, 180, 2));
    // At 03:10 the third one too (nothing is merged twice).
    clock.set(start + jiff::SignedDuration::from_mins(190));
    collector.downsample(48).await.unwrap();
    let at_three = clock.now();
    let before = report::load_report(&*store, ENV, &[objective()], &[], at_three, &settings()).await.unwrap();
    assert_eq!(spans(&store.rollups(ENV, None, None, start, end).await.unwrap()), expect(180, 3, 180, 3));

    // The hour rows hold exactly the minutes' totals and merged histograms.
    let hours = store.rollups(ENV, None, Some(HOUR), start, end).await.unwrap();
    for service in ["api", "web"] {
        let mut original = Counts::default();
        for row in rows.iter().filter(|r| r.service == service) {
            original.merge(&Counts::from_row(row).unwrap());
        }
        let mut kept = Counts::default();
        for row in hours.iter().filter(|r| r.service == service) {
            kept.merge(&Counts::from_row(row).unwrap());
        }
        assert_eq!(kept, original, "{service}");
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(kept.quantile_micros(q), original.quantile_micros(q));
        }
    }

    // A week and 2.5 hours on, the minutes of the first two hours are gone, the third's kept.
    clock.set(start + jiff::SignedDuration::from_hours(7 * 24 + 2) + jiff::SignedDuration::from_mins(30));
    assert_eq!(collector.downsample(48).await.unwrap(), 2 * 120);
    assert_eq!(spans(&store.rollups(ENV, None, None, start, end).await.unwrap()), expect(60, 3, 60, 3));
    // Reports over the long windows read the hour rows: the same figures as from the minutes.
    let again = report::load_report(&*store, ENV, &[objective()], &[], at_three, &settings()).await.unwrap();
    assert_eq!(again.services[0].window, before.services[0].window);
    assert_eq!(again.services[0].latency, before.services[0].latency);
    assert_eq!(
        before.services[0].window.total,
        rows.iter().filter(|r| r.service == "api").map(|r| r.requests as u64).sum::<u64>()
    );

    // 400 days on, the hour rows are gone too.
    clock.set(start + jiff::SignedDuration::from_hours(401 * 24));
    collector.downsample(48).await.unwrap();
    assert!(store.rollups(ENV, None, None, start, end).await.unwrap().is_empty());
}

/// The store's rollup methods as the collector relies on them: a row written again replaces
/// the first (no doubling), the cursor is written with the rows, reads filter by service and
/// time, and a replacement deletes only the span and times it names.
async fn the_store_keeps_rollups_and_the_cursor(place: Place) {
    let start: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
    let clock = ManualClock::new(start);
    let store = place.open(&clock).await;
    assert_eq!(store.slo_cursor(ENV).await.unwrap(), None);
    let at = |m: i64| start + jiff::SignedDuration::from_mins(m);
    let cursor = windlass_store::SloCursor { environment: ENV.into(), at: at(1), data: "{\"api\":{}}".into() };
    let first = synthetic(1).to_row(ENV, "api", at(0), MINUTE);
    store.put_rollups(&[first, synthetic(2).to_row(ENV, "web", at(0), MINUTE)], Some(&cursor)).await.unwrap();
    assert_eq!(store.slo_cursor(ENV).await.unwrap(), Some(cursor.clone()));
    assert_eq!(store.slo_cursor("staging").await.unwrap(), None);
    // The same key again: replaced, not added.
    let replaced = synthetic(3).to_row(ENV, "api", at(0), MINUTE);
    store.put_rollups(std::slice::from_ref(&replaced), None).await.unwrap();
    assert_eq!(store.rollups(ENV, Some("api"), None, at(0), at(1)).await.unwrap(), vec![replaced]);
    assert_eq!(store.rollups(ENV, None, None, at(0), at(1)).await.unwrap().len(), 2);
    assert!(store.rollups(ENV, None, None, at(1), at(2)).await.unwrap().is_empty());
    assert!(store.rollups("staging", None, None, at(0), at(1)).await.unwrap().is_empty());
    // An hour row beside the minutes; the first and last of each span.
    let hour = synthetic(4).to_row(ENV, "api", at(0), HOUR);
    store.put_rollups(&[hour, synthetic(5).to_row(ENV, "api", at(5), MINUTE)], None).await.unwrap();
    assert_eq!(store.first_rollup(ENV, MINUTE, Timestamp::MIN).await.unwrap(), Some(at(0)));
    assert_eq!(store.first_rollup(ENV, MINUTE, at(1)).await.unwrap(), Some(at(5)));
    assert_eq!(store.first_rollup(ENV, MINUTE, at(6)).await.unwrap(), None);
    assert_eq!(store.last_rollup(ENV, MINUTE).await.unwrap(), Some(at(5)));
    assert_eq!(store.last_rollup(ENV, HOUR).await.unwrap(), Some(at(0)));
    assert_eq!(store.last_rollup("staging", MINUTE).await.unwrap(), None);
    assert_eq!(store.rollups(ENV, None, Some(HOUR), at(0), at(60)).await.unwrap().len(), 1);
    assert_eq!(store.rollups(ENV, None, Some(MINUTE), at(0), at(60)).await.unwrap().len(), 3);
    // Replacing minutes before 00:05 deletes the two minute rows of 00:00 only.
    assert_eq!(store.replace_rollups(ENV, MINUTE, at(5), &[]).await.unwrap(), 2);
    let left = store.rollups(ENV, None, None, at(0), at(60)).await.unwrap();
    assert_eq!(left.iter().map(|r| (r.span_secs, r.start)).collect::<Vec<_>>(), vec![(MINUTE, at(5)), (HOUR, at(0))]);
    assert_eq!(Counts::from_row(&left[1]).unwrap(), synthetic(4));

    // Probe samples add up per service and minute, and old ones expire.
    let sample = |service: &str, m: i64, successes, failures| windlass_store::ProbeSampleRow {
        service: service.into(),
        minute: at(m),
        successes,
        failures,
    };
    store.add_probe_samples(ENV, &[sample("api", 0, 3, 1), sample("web", 0, 2, 0)]).await.unwrap();
    store.add_probe_samples(ENV, &[sample("api", 0, 1, 1), sample("api", 1, 4, 0)]).await.unwrap();
    let samples = store.probe_samples(ENV, at(0), at(60)).await.unwrap();
    assert_eq!(samples, vec![sample("api", 0, 4, 2), sample("web", 0, 2, 0), sample("api", 1, 4, 0)]);
    assert!(store.probe_samples("staging", at(0), at(60)).await.unwrap().is_empty());
    assert_eq!(store.forget_probe_samples(ENV, at(1)).await.unwrap(), 2);
    assert_eq!(store.probe_samples(ENV, at(0), at(60)).await.unwrap(), vec![sample("api", 1, 4, 0)]);
}

mod sqlite {
    #[tokio::test]
    async fn the_store_keeps_rollups_and_the_cursor() {
        super::the_store_keeps_rollups_and_the_cursor(super::Place::Sqlite(windlass_testkit::tempdir())).await;
    }

    #[tokio::test]
    async fn traffic_becomes_rollups_and_a_report() {
        super::traffic_becomes_rollups_and_a_report(super::Place::Sqlite(windlass_testkit::tempdir())).await;
    }

    #[tokio::test]
    async fn downsampling_keeps_totals_and_percentiles() {
        super::downsampling_keeps_totals_and_percentiles(super::Place::Sqlite(windlass_testkit::tempdir())).await;
    }
}

mod postgres {
    use windlass_testkit::postgres::TestDatabase;

    #[tokio::test]
    async fn the_store_keeps_rollups_and_the_cursor() {
        super::the_store_keeps_rollups_and_the_cursor(super::Place::Postgres(TestDatabase::create().await)).await;
    }

    #[tokio::test]
    async fn traffic_becomes_rollups_and_a_report() {
        super::traffic_becomes_rollups_and_a_report(super::Place::Postgres(TestDatabase::create().await)).await;
    }

    #[tokio::test]
    async fn downsampling_keeps_totals_and_percentiles() {
        super::downsampling_keeps_totals_and_percentiles(super::Place::Postgres(TestDatabase::create().await)).await;
    }
}
