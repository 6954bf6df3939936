//! The collector: once a minute it reads every pool of each routed service at the edge,
//! subtracts the previous reading pool by pool, and stores one minute row per service (all pools
//! summed). The reading is stored with the rows in one transaction (the *cursor*), so a restarted
//! server resumes where the last write left off and never counts a minute twice.
//!
//! - An edge restart resets its counters: a pool whose reading fell below the previous one counts
//!   from zero (its whole new reading), never negative.
//! - A pool or service that was not in the previous reading only starts its baseline, as a new
//!   Prometheus series does: the edge keeps a removed pool's counters, so a color that comes back
//!   (blue after green after blue) would otherwise bring its whole history into one minute. The
//!   cursor keeps the last reading of pools that went away for the same reason.
//! - A cursor older than `max_gap` (the server was down) starts a fresh baseline: the gap's
//!   traffic is not known by minute, so it is not attributed to one.
//! - Each complete hour is merged into an hour row as soon as it is over (a few minutes after, so
//!   the minute that straddles it has landed); minute rows older than `keep_minutes` are then
//!   deleted, and hour rows older than `keep_hours`. Reports read minutes only for the last hours
//!   and hour rows before, so a 30-day report reads about 100 rows a service, not 43,200.
//!
//! One collector per environment at a time: the caller holds the store's lease
//! `slo-collector/<env>` (see `windlass-server`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use windlass_edge::client::EdgeControl;
use windlass_edge::metrics::Snapshot;
use windlass_store::{Clock, SloCursor, Store};

use super::{Counts, HOUR, MINUTE, SloError, floor_to};

/// Per service, per pool: the edge's cumulative counters as last read.
pub type Readings = BTreeMap<String, BTreeMap<String, Snapshot>>;

#[derive(Debug, Clone, PartialEq)]
pub struct CollectorSettings {
    /// How often the edge is read (the loop's cadence; rows are per minute).
    pub interval: Duration,
    /// A stored reading older than this is not resumed from: a fresh baseline starts.
    pub max_gap: Duration,
    /// Minute rows older than this are merged into hour rows.
    pub keep_minutes: Duration,
    /// Hour rows older than this are deleted.
    pub keep_hours: Duration,
}

impl Default for CollectorSettings {
    fn default() -> Self {
        CollectorSettings {
            interval: Duration::from_secs(60),
            max_gap: Duration::from_secs(10 * 60),
            keep_minutes: Duration::from_secs(7 * 86_400),
            keep_hours: Duration::from_secs(400 * 86_400),
        }
    }
}

/// What one collection did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Collected {
    /// Nothing to resume from: the readings were stored as the baseline.
    Baseline,
    /// Rows written for the minute starting at `minute`.
    Rows { minute: Timestamp, services: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Collector {
    pub store: Arc<dyn Store>,
    pub edge: Arc<dyn EdgeControl>,
    pub clock: Arc<dyn Clock>,
    pub environment: String,
    pub settings: CollectorSettings,
}

/// The pseudo-pool under which a reading keeps a service's maintenance and rate-limited answers
/// (the name the edge's `/metrics` gives them; stored cursors use it too).
pub const SERVICE_POOL: &str = "-";

fn shift(at: Timestamp, by: Duration, forward: bool) -> Timestamp {
    let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
    let shifted = if forward { at.as_millisecond().saturating_add(ms) } else { at.as_millisecond().saturating_sub(ms) };
    Timestamp::from_millisecond(shifted).unwrap_or(if forward { Timestamp::MAX } else { Timestamp::MIN })
}

/// True if any counter of `now` is below the same counter of `before`: the edge restarted.
fn was_reset(now: &Snapshot, before: &Snapshot) -> bool {
    now.by_class.iter().zip(&before.by_class).any(|(n, b)| n < b)
        || now.maintenance < before.maintenance
        || now.rate_limited < before.rate_limited
        || now.latency_sum_micros < before.latency_sum_micros
        || before.latency_buckets.iter().enumerate().any(|(i, b)| now.latency_buckets.get(i).copied().unwrap_or(0) < *b)
}

/// What a pool answered since `before` (all of `now` after a reset).
pub fn pool_interval(now: &Snapshot, before: &Snapshot) -> Snapshot {
    if was_reset(now, before) { now.clone() } else { now.since(before) }
}

/// The per-service counts between two readings. Services absent from `before` are left out
/// (their baseline starts now).
pub fn intervals(now: &Readings, before: &Readings) -> BTreeMap<String, Counts> {
    let mut out = BTreeMap::new();
    for (service, pools) in now {
        let Some(previous) = before.get(service) else { continue };
        let mut total = Counts::default();
        for (pool, snapshot) in pools {
            if let Some(before) = previous.get(pool) {
                total.merge(&Counts::from_interval(&pool_interval(snapshot, before)));
            }
        }
        out.insert(service.clone(), total);
    }
    out
}

impl Collector {
    /// Reads the counters of every pool of `services` that the edge routes, and each service's
    /// maintenance and rate-limited answers (as pool [`SERVICE_POOL`]), in one read of the edge's
    /// typed counters.
    pub async fn read_edge(&self, services: &[String]) -> Result<Readings, SloError> {
        let mut counters = self.edge.counters().await?;
        let mut readings = Readings::new();
        for service in services {
            let Some(routed) = counters.services.remove(service) else { continue };
            let mut pools = routed.pools;
            let own =
                Snapshot { maintenance: routed.maintenance, rate_limited: routed.rate_limited, ..Snapshot::default() };
            pools.insert(SERVICE_POOL.to_owned(), own);
            readings.insert(service.clone(), pools);
        }
        Ok(readings)
    }

    async fn cursor(&self) -> Result<Option<(Timestamp, Readings)>, SloError> {
        let Some(cursor) = self.store.slo_cursor(&self.environment).await? else { return Ok(None) };
        match serde_json::from_str::<Readings>(&cursor.data) {
            Ok(readings) => Ok(Some((cursor.at, readings))),
            Err(err) => {
                tracing::warn!(environment = self.environment, %err, "unreadable SLO cursor: starting a fresh baseline");
                Ok(None)
            }
        }
    }

    /// One collection: reads the edge, stores the minute rows since the last reading and the new
    /// reading, in one transaction.
    pub async fn collect(&self, services: &[String]) -> Result<Collected, SloError> {
        let readings = self.read_edge(services).await?;
        let now = self.clock.now();
        let stored = self.cursor().await?;
        // The new cursor: this reading, and the last one of every pool not read now.
        let mut carried = stored.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
        for (service, pools) in &readings {
            carried.entry(service.clone()).or_default().extend(pools.iter().map(|(p, s)| (p.clone(), s.clone())));
        }
        let data = serde_json::to_string(&carried)
            .map_err(|source| SloError::Cursor { environment: self.environment.clone(), source })?;
        let cursor = SloCursor { environment: self.environment.clone(), at: now, data };
        let previous = stored.filter(|(at, _)| *at <= now && shift(*at, self.settings.max_gap, true) >= now);
        let Some((previous_at, before)) = previous else {
            self.store.put_rollups(&[], Some(&cursor)).await?;
            return Ok(Collected::Baseline);
        };
        let minute = floor_to(previous_at, MINUTE);
        let mut intervals = intervals(&readings, &before);
        intervals.retain(|_, counts| !counts.is_empty());
        let mut rows = Vec::new();
        if !intervals.is_empty() {
            // A second collection within one minute (a restart) adds to that minute's row, and a
            // minute of an hour already merged adds to its hour row too.
            let next = shift(minute, Duration::from_secs(60), true);
            let hour = floor_to(minute, HOUR);
            let merged_hour = self.store.last_rollup(&self.environment, HOUR).await?.is_some_and(|last| last >= hour);
            let mut hours: BTreeMap<String, Counts> = BTreeMap::new();
            if merged_hour {
                let end = shift(hour, Duration::from_secs(3600), true);
                for row in self.store.rollups(&self.environment, None, Some(HOUR), hour, end).await? {
                    if let Some(counts) = intervals.get(&row.service) {
                        let mut total = Counts::from_row(&row)?;
                        total.merge(counts);
                        hours.insert(row.service.clone(), total);
                    }
                }
                for (service, counts) in &intervals {
                    hours.entry(service.clone()).or_insert_with(|| counts.clone());
                }
            }
            for row in self.store.rollups(&self.environment, None, Some(MINUTE), minute, next).await? {
                if let Some(counts) = intervals.get_mut(&row.service) {
                    counts.merge(&Counts::from_row(&row)?);
                }
            }
            rows.extend(hours.iter().map(|(service, counts)| counts.to_row(&self.environment, service, hour, HOUR)));
        }
        rows.extend(
            intervals.iter().map(|(service, counts)| counts.to_row(&self.environment, service, minute, MINUTE)),
        );
        self.store.put_rollups(&rows, Some(&cursor)).await?;
        Ok(Collected::Rows { minute, services: intervals.into_keys().collect() })
    }

    /// Merges every complete hour of minute rows not merged yet into hour rows (at most
    /// `max_hours` of them per call, oldest first), then deletes the minute rows older than
    /// `keep_minutes` (only hours already merged) and the hour rows older than `keep_hours`.
    /// Returns how many minute rows were deleted.
    pub async fn downsample(&self, max_hours: u32) -> Result<u64, SloError> {
        let now = self.clock.now();
        let store = &self.store;
        let env = &self.environment;
        // An hour is merged once it is over and its last minute's collection surely landed.
        let complete_before = floor_to(shift(now, MERGE_LAG, false), HOUR);
        let mut merged_until = match store.last_rollup(env, HOUR).await? {
            Some(last) => shift(last, Duration::from_secs(3600), true),
            None => Timestamp::MIN,
        };
        for _ in 0..max_hours {
            let Some(first) = store.first_rollup(env, MINUTE, merged_until).await? else { break };
            let hour = floor_to(first, HOUR);
            let end = shift(hour, Duration::from_secs(3600), true);
            if end > complete_before {
                break;
            }
            let mut hours: BTreeMap<String, Counts> = BTreeMap::new();
            for row in store.rollups(env, None, Some(MINUTE), hour, end).await? {
                hours.entry(row.service.clone()).or_default().merge(&Counts::from_row(&row)?);
            }
            let rows: Vec<_> = hours.iter().map(|(service, counts)| counts.to_row(env, service, hour, HOUR)).collect();
            store.put_rollups(&rows, None).await?;
            merged_until = end;
        }
        let expired_minutes = floor_to(shift(now, self.settings.keep_minutes, false), HOUR).min(merged_until);
        let deleted = store.replace_rollups(env, MINUTE, expired_minutes, &[]).await?;
        store.replace_rollups(env, HOUR, shift(now, self.settings.keep_hours, false), &[]).await?;
        Ok(deleted)
    }
}

/// How long after an hour ends its minutes are merged: the collection of its last minute runs
/// up to a minute after it.
const MERGE_LAG: Duration = Duration::from_secs(5 * 60);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn snapshot(ok: u64, errors: u64, maintenance: u64) -> Snapshot {
        let mut buckets = vec![0; windlass_edge::metrics::BUCKETS];
        buckets[40] = ok + errors;
        Snapshot {
            by_class: [0, ok, 0, 0, errors],
            maintenance,
            rate_limited: 0,
            latency_buckets: buckets,
            latency_sum_micros: (ok + errors) * 1000,
        }
    }

    fn readings(pools: &[(&str, Snapshot)]) -> Readings {
        let mut r = Readings::new();
        r.insert("api".into(), pools.iter().map(|(p, s)| ((*p).to_owned(), s.clone())).collect());
        r
    }

    #[test]
    fn an_edge_restart_counts_from_zero_never_negative() {
        let before = readings(&[("blue", snapshot(1000, 10, 5))]);
        let after_restart = readings(&[("blue", snapshot(30, 1, 0))]);
        let counts = &intervals(&after_restart, &before)["api"];
        assert_eq!((counts.requests, counts.errors, counts.maintenance), (31, 1, 0));
        assert_eq!(counts.histogram.iter().sum::<u64>(), 31);
    }

    #[test]
    fn pools_are_subtracted_one_by_one_and_summed() {
        // Green appears (a deploy): its first reading is its baseline; blue's interval counts.
        let before = readings(&[("blue", snapshot(1000, 10, 0))]);
        let now = readings(&[("blue", snapshot(1100, 12, 0)), ("green", snapshot(50, 3, 0))]);
        let counts = &intervals(&now, &before)["api"];
        assert_eq!((counts.requests, counts.errors), (102, 2));
        // Both pools known: both intervals, summed.
        let next = readings(&[("blue", snapshot(1150, 12, 0)), ("green", snapshot(90, 4, 0))]);
        let counts = &intervals(&next, &now)["api"];
        assert_eq!((counts.requests, counts.errors), (50 + 41, 1));
        // Blue retired: its counters vanish without turning into a negative or a reset.
        let later = readings(&[("green", snapshot(120, 4, 0))]);
        let counts = &intervals(&later, &next)["api"];
        assert_eq!((counts.requests, counts.errors), (30, 0));
        // A service not read before only starts its baseline.
        assert!(intervals(&now, &Readings::new()).is_empty());
    }
}
