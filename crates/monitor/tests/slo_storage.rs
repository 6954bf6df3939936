//! The storage measurement (not a CI test; `bench/slo-storage.sh` runs it in release): a year of
//! per-minute rollups for 100 services through the real store, with downsampling applied, and
//! the SQLite file it leaves.
//!
//! The last `SLO_BENCH_MINUTE_DAYS` days (default 8: the week kept as minutes plus one day whose
//! minutes the collector deletes) go the whole real way: minute rows written a day at a time, the
//! clock moved, `Collector::downsample` run (it merges each complete hour into an hour row and
//! deletes minutes past the week). The older days are written as the hour rows the
//! downsampler makes of them (60 generated minutes merged per hour, by the same `Counts::merge`),
//! since pushing 52 million minute rows through the downsampler takes hours; the minute path's
//! measured rate gives the extrapolation. Every figure printed is measured, none asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use windlass_edge::client::EdgeClient;
use windlass_edge::metrics::{BUCKETS, bucket_of};
use windlass_monitor::slo::collector::{Collector, CollectorSettings};
use windlass_monitor::slo::report::{self, Objective};
use windlass_monitor::slo::{Counts, HOUR, MINUTE};
use windlass_store::{Clock, ManualClock, Store};

const ENV: &str = "production";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// splitmix64: deterministic, good enough for shaping traffic.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One minute of a service: a daily traffic curve (20..~3000 requests a minute depending on the
/// service), errors around 0.05%, 4xx around 2%, and latencies spread log-normally-ish around
/// the service's own median (2..80 ms) with a slow tail: 15-30 non-zero buckets.
fn minute_counts(service: u64, minute: u64) -> Counts {
    let seed = mix(service.wrapping_mul(1_000_003) ^ minute);
    let size = 20 + mix(service) % 1500;
    let hour_of_day = (minute / 60) % 24;
    let daily = if (8..22).contains(&hour_of_day) { 2 } else { 1 };
    let requests = size * daily + seed % (size / 2 + 1);
    let mut counts = Counts {
        requests,
        errors: (requests / 2000) + u64::from(seed % 1000 < requests % 1000 / 2),
        client_errors: requests / 50,
        ..Counts::default()
    };
    let median_bucket = bucket_of(2_000 + mix(service + 7) % 78_000) as i64;
    let mut left = requests;
    // Weights of the buckets around the median: a bell, then a long thin tail.
    let offsets: [(i64, u64); 16] = [
        (-6, 1),
        (-5, 2),
        (-4, 4),
        (-3, 8),
        (-2, 14),
        (-1, 20),
        (0, 22),
        (1, 18),
        (2, 12),
        (3, 7),
        (4, 4),
        (5, 2),
        (7, 1),
        (9, 1),
        (12, 1),
        (16, 1),
    ];
    for (i, (offset, weight)) in offsets.iter().enumerate() {
        let jitter = mix(seed + i as u64) % 5;
        let share = (requests * weight * (8 + jitter) / 10 / 118).min(left);
        let bucket = (median_bucket + offset).clamp(0, BUCKETS as i64 - 1) as usize;
        counts.histogram[bucket] += share;
        counts.latency_sum_micros += share * windlass_edge::metrics::bucket_upper_bound(bucket);
        left -= share;
    }
    counts.histogram[median_bucket as usize] += left;
    counts
}

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a storage measurement: run bench/slo-storage.sh"]
async fn a_year_of_rollups_for_100_services() {
    let services = env_or("SLO_BENCH_SERVICES", 100);
    let days = env_or("SLO_BENCH_DAYS", 365);
    let minute_days = env_or("SLO_BENCH_MINUTE_DAYS", 8).min(days);
    let dir = windlass_testkit::tempdir();
    let path = dir.path().join("windlass.db");
    let start: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
    let clock = ManualClock::new(start);
    let store: Arc<dyn Store> =
        windlass_store::open(&path.display().to_string(), Arc::new(clock.clone())).await.unwrap();
    let name = |s: u64| format!("service-{s:03}");

    // The days older than the minute window: hour rows as the downsampler makes them.
    let hour_days = days - minute_days;
    let began = Instant::now();
    let mut hour_rows = 0u64;
    for day in 0..hour_days {
        let mut rows = Vec::with_capacity((services * 24) as usize);
        for s in 0..services {
            for hour in 0..24 {
                let first_minute = (day * 24 + hour) * 60;
                let mut merged = Counts::default();
                for m in first_minute..first_minute + 60 {
                    merged.merge(&minute_counts(s, m));
                }
                let at = start + SignedDuration::from_mins(first_minute as i64);
                rows.push(merged.to_row(ENV, &name(s), at, HOUR));
            }
        }
        hour_rows += rows.len() as u64;
        store.put_rollups(&rows, None).await.unwrap();
    }
    let hour_phase = began.elapsed();

    // The last days through the real path: minute rows a day at a time, then the downsampler.
    let collector = Collector {
        store: store.clone(),
        edge: Arc::new(EdgeClient::new("127.0.0.1:9".parse().unwrap(), "127.0.0.1:9".parse().unwrap(), String::new())),
        clock: Arc::new(clock.clone()),
        environment: ENV.into(),
        settings: CollectorSettings::default(),
    };
    let (mut write_time, mut downsample_time, mut minute_rows, mut merged_away) =
        (Duration::ZERO, Duration::ZERO, 0u64, 0);
    for day in hour_days..days {
        let mut rows = Vec::with_capacity((services * 1440) as usize);
        for s in 0..services {
            for m in day * 1440..(day + 1) * 1440 {
                let at = start + SignedDuration::from_mins(m as i64);
                rows.push(minute_counts(s, m).to_row(ENV, &name(s), at, MINUTE));
            }
        }
        minute_rows += rows.len() as u64;
        let began = Instant::now();
        for chunk in rows.chunks(1440) {
            store.put_rollups(chunk, None).await.unwrap();
        }
        write_time += began.elapsed();
        clock.set(start + SignedDuration::from_hours(((day + 1) * 24) as i64));
        let began = Instant::now();
        merged_away += collector.downsample(48).await.unwrap();
        downsample_time += began.elapsed();
    }

    // What reading it costs: the report of every service over the 30-day window.
    let objectives: Vec<Objective> = (0..services)
        .map(|s| Objective {
            service: name(s),
            availability: Some(0.999),
            error_rate: None,
            p95: Some(Duration::from_millis(300)),
            p99: Some(Duration::from_secs(1)),
            window: Duration::from_secs(30 * 86_400),
        })
        .collect();
    let began = Instant::now();
    let report =
        report::load_report(&*store, ENV, &objectives, &[], clock.now(), &report::Settings::default()).await.unwrap();
    let report_time = began.elapsed();
    assert_eq!(report.services.len() as u64, services);
    drop(store);

    let (db, wal) = (file_size(&path), file_size(&dir.path().join("windlass.db-wal")));
    let per_day_minutes = (services * 1440) as f64;
    let minute_rate = minute_rows as f64 / write_time.as_secs_f64();
    println!("SLO storage: {services} services, {days} days ({hour_days} as hour rows, {minute_days} through minutes)");
    println!("  hour rows written       {hour_rows} in {:.1}s", hour_phase.as_secs_f64());
    println!("  minute rows written     {minute_rows} in {:.1}s ({minute_rate:.0} rows/s)", write_time.as_secs_f64());
    println!(
        "  downsampling            {:.1}s (hours merged, {merged_away} minute rows past the week deleted)",
        downsample_time.as_secs_f64()
    );
    println!("  30-day report, all services: {:.2}s", report_time.as_secs_f64());
    println!("  SQLite file             {:.1} MB (+ WAL {:.1} MB)", db as f64 / 1e6, wal as f64 / 1e6);
    println!(
        "  a day of minutes costs  {:.1}s to write; the whole year through minutes ≈ {:.0} min",
        per_day_minutes / minute_rate,
        (days as f64 * per_day_minutes / minute_rate
            + downsample_time.as_secs_f64() * days as f64 / minute_days as f64)
            / 60.0
    );
}
