//! SLO rollups: the per-minute (and, once old, per-hour) counts of a service's answers at the
//! edge, and the cursor the collector resumes from. The histogram is opaque text here (the monitor
//! encodes and merges it); the store only keeps rows and replaces them whole.
//!
//! A child module of `sql`, so the queries reach the pool directly; [`Store`](crate::Store)
//! delegates here.

use jiff::Timestamp;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{SqlStore, committed, get, millis, timestamp};
use crate::error::{QueryContext, Result};

/// One rollup row: what the edge answered for a service during `span_secs` from `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    pub environment: String,
    pub service: String,
    pub start: Timestamp,
    /// 60 for a minute row, 3600 for an hour row.
    pub span_secs: i64,
    /// Answers from upstreams (every status class; not maintenance or rate-limit answers).
    pub requests: i64,
    /// 5xx answers.
    pub errors: i64,
    /// 4xx answers.
    pub client_errors: i64,
    /// Maintenance pages served (never an error).
    pub maintenance: i64,
    /// Rate-limited answers (never an error).
    pub rate_limited: i64,
    pub latency_sum_micros: i64,
    /// The latency histogram, encoded by the monitor.
    pub histogram: String,
}

/// The edge's counters as the collector last read them for an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloCursor {
    pub environment: String,
    pub at: Timestamp,
    /// The collector's own encoding of the readings.
    pub data: String,
}

macro_rules! rollup_columns {
    () => {
        "environment, service, start_ms, span_secs, requests, errors, client_errors, maintenance, rate_limited, latency_sum_micros, histogram"
    };
}

/// One service's probe results in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSampleRow {
    pub service: String,
    /// The start of the minute.
    pub minute: Timestamp,
    pub successes: u64,
    pub failures: u64,
}

fn rollup_from_row(row: &AnyRow) -> Result<RollupRow> {
    Ok(RollupRow {
        environment: get(row, "environment")?,
        service: get(row, "service")?,
        start: timestamp(get(row, "start_ms")?)?,
        span_secs: get(row, "span_secs")?,
        requests: get(row, "requests")?,
        errors: get(row, "errors")?,
        client_errors: get(row, "client_errors")?,
        maintenance: get(row, "maintenance")?,
        rate_limited: get(row, "rate_limited")?,
        latency_sum_micros: get(row, "latency_sum_micros")?,
        histogram: row.try_get("histogram").during("histogram")?,
    })
}

async fn upsert<'e, E>(executor: E, row: &RollupRow) -> Result<()>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(concat!(
        "INSERT INTO slo_rollups (",
        rollup_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (environment, span_secs, start_ms, service) DO UPDATE SET
            requests = excluded.requests, errors = excluded.errors, client_errors = excluded.client_errors,
            maintenance = excluded.maintenance, rate_limited = excluded.rate_limited,
            latency_sum_micros = excluded.latency_sum_micros, histogram = excluded.histogram"
    ))
    .bind(&row.environment)
    .bind(&row.service)
    .bind(millis(row.start))
    .bind(row.span_secs)
    .bind(row.requests)
    .bind(row.errors)
    .bind(row.client_errors)
    .bind(row.maintenance)
    .bind(row.rate_limited)
    .bind(row.latency_sum_micros)
    .bind(&row.histogram)
    .execute(executor)
    .await
    .during("writing a rollup")?;
    Ok(())
}

impl SqlStore {
    pub(super) async fn put_rollups_impl(&self, rows: &[RollupRow], cursor: Option<&SloCursor>) -> Result<()> {
        if rows.is_empty() && cursor.is_none() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.during("writing rollups")?;
        if let Some(cursor) = cursor {
            sqlx::query(
                "INSERT INTO slo_cursors (environment, at, data) VALUES ($1, $2, $3)
                 ON CONFLICT (environment) DO UPDATE SET at = excluded.at, data = excluded.data",
            )
            .bind(&cursor.environment)
            .bind(millis(cursor.at))
            .bind(&cursor.data)
            .execute(&mut *tx)
            .await
            .during("writing the SLO cursor")?;
        }
        for row in rows {
            upsert(&mut *tx, row).await?;
        }
        tx.commit().await.during("writing rollups")?;
        committed();
        Ok(())
    }

    pub(super) async fn add_probe_samples_impl(&self, environment: &str, samples: &[ProbeSampleRow]) -> Result<()> {
        if samples.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.during("writing probe samples")?;
        for sample in samples {
            sqlx::query(
                "INSERT INTO probe_samples (environment, service, minute_ms, successes, failures)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (environment, service, minute_ms) DO UPDATE SET
                   successes = probe_samples.successes + excluded.successes,
                   failures = probe_samples.failures + excluded.failures",
            )
            .bind(environment)
            .bind(&sample.service)
            .bind(millis(sample.minute))
            .bind(i64::try_from(sample.successes).unwrap_or(i64::MAX))
            .bind(i64::try_from(sample.failures).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await
            .during("writing a probe sample")?;
        }
        tx.commit().await.during("writing probe samples")?;
        committed();
        Ok(())
    }

    pub(super) async fn probe_samples_impl(
        &self,
        environment: &str,
        from: Timestamp,
        before: Timestamp,
    ) -> Result<Vec<ProbeSampleRow>> {
        let rows = sqlx::query(
            "SELECT service, minute_ms, successes, failures FROM probe_samples
             WHERE environment = $1 AND minute_ms >= $2 AND minute_ms < $3 ORDER BY minute_ms, service",
        )
        .bind(environment)
        .bind(millis(from))
        .bind(millis(before))
        .fetch_all(&self.pool)
        .await
        .during("reading probe samples")?;
        rows.iter()
            .map(|row| {
                Ok(ProbeSampleRow {
                    service: get(row, "service")?,
                    minute: timestamp(get(row, "minute_ms")?)?,
                    successes: u64::try_from(get::<i64>(row, "successes")?).unwrap_or(0),
                    failures: u64::try_from(get::<i64>(row, "failures")?).unwrap_or(0),
                })
            })
            .collect()
    }

    pub(super) async fn forget_probe_samples_impl(&self, environment: &str, before: Timestamp) -> Result<u64> {
        let done = sqlx::query("DELETE FROM probe_samples WHERE environment = $1 AND minute_ms < $2")
            .bind(environment)
            .bind(millis(before))
            .execute(&self.pool)
            .await
            .during("expiring probe samples")?;
        committed();
        Ok(done.rows_affected())
    }

    pub(super) async fn slo_cursor_impl(&self, environment: &str) -> Result<Option<SloCursor>> {
        let row = sqlx::query("SELECT environment, at, data FROM slo_cursors WHERE environment = $1")
            .bind(environment)
            .fetch_optional(&self.pool)
            .await
            .during("reading the SLO cursor")?;
        row.map(|row| {
            Ok(SloCursor {
                environment: get(&row, "environment")?,
                at: timestamp(get(&row, "at")?)?,
                data: get(&row, "data")?,
            })
        })
        .transpose()
    }

    pub(super) async fn rollups_impl(
        &self,
        environment: &str,
        service: Option<&str>,
        span_secs: Option<i64>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupRow>> {
        // In key order (span, time, service): no sort, whatever the number of rows.
        let rows = sqlx::query(concat!(
            "SELECT ",
            rollup_columns!(),
            " FROM slo_rollups WHERE environment = $1 AND span_secs IN ($2, $3)
              AND start_ms >= $4 AND start_ms < $5 AND ($6 = '' OR service = $6)
              ORDER BY span_secs, start_ms, service"
        ))
        .bind(environment)
        .bind(span_secs.unwrap_or(60))
        .bind(span_secs.unwrap_or(3600))
        .bind(millis(from))
        .bind(millis(to))
        .bind(service.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .during("reading rollups")?;
        rows.iter().map(rollup_from_row).collect()
    }

    pub(super) async fn first_rollup_impl(
        &self,
        environment: &str,
        span_secs: i64,
        from: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let first: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(start_ms) FROM slo_rollups WHERE environment = $1 AND span_secs = $2 AND start_ms >= $3",
        )
        .bind(environment)
        .bind(span_secs)
        .bind(millis(from))
        .fetch_one(&self.pool)
        .await
        .during("finding the first rollup")?;
        first.map(timestamp).transpose()
    }

    pub(super) async fn last_rollup_impl(&self, environment: &str, span_secs: i64) -> Result<Option<Timestamp>> {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT MAX(start_ms) FROM slo_rollups WHERE environment = $1 AND span_secs = $2")
                .bind(environment)
                .bind(span_secs)
                .fetch_one(&self.pool)
                .await
                .during("finding the last rollup")?;
        last.map(timestamp).transpose()
    }

    pub(super) async fn replace_rollups_impl(
        &self,
        environment: &str,
        span_secs: i64,
        before: Timestamp,
        replacements: &[RollupRow],
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await.during("downsampling rollups")?;
        let deleted =
            sqlx::query("DELETE FROM slo_rollups WHERE environment = $1 AND span_secs = $2 AND start_ms < $3")
                .bind(environment)
                .bind(span_secs)
                .bind(millis(before))
                .execute(&mut *tx)
                .await
                .during("deleting downsampled rollups")?
                .rows_affected();
        for row in replacements {
            upsert(&mut *tx, row).await?;
        }
        tx.commit().await.during("downsampling rollups")?;
        committed();
        Ok(deleted)
    }
}
