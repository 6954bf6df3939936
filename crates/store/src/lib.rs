//! The control plane's memory: deploys and their steps, leases (locks that survive crashes),
//! the audit log and settings, in embedded SQLite (the default) or PostgreSQL (for teams).
//!
//! Callers see one trait, [`Store`]; [`open`] picks the backend from a location. Both backends
//! run the same SQL through sqlx's `Any` driver; where the dialects differ (schema DDL, the
//! migration lock) [`schema`] says so explicitly. The same test stories run against both.
//!
//! Invariants:
//! - A write that returned `Ok` is committed: a crash right after it loses nothing
//!   (failpoint `store.after_write` proves it).
//! - Two processes racing for one lease: exactly one wins.
//! - A stale lease (its heartbeat older than its TTL by the injected clock) is taken over by
//!   the next acquirer: a new fencing token, and the takeover in the audit log with the
//!   previous holder, in one transaction. Never silently, never a fresh one.
//!
//! This crate knows nothing of how deploys run; it records what it is told.

mod alerts;
mod clock;
mod error;
mod model;
mod schema;
mod sql;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

pub use alerts::*;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Result, StoreError};
pub use model::*;
pub use sql::SqlStore;
pub use sql::rollups::{ProbeSampleRow, RollupRow, SloCursor};

/// Everything the control plane records.
#[async_trait::async_trait]
pub trait Store: AlertStore + Send + Sync + std::fmt::Debug {
    /// Which database holds the state: `sqlite` or `postgresql`.
    fn backend(&self) -> Backend;

    // Deploys.
    /// Records a new running deploy and gives it the next free id for its environment and second.
    async fn create_deploy(&self, deploy: &NewDeploy) -> Result<DeployId>;
    async fn deploy(&self, id: &DeployId) -> Result<Option<Deploy>>;
    /// The newest deploys of an environment first.
    async fn deploys(&self, environment: &str, limit: u32) -> Result<Vec<Deploy>>;
    async fn finish_deploy(&self, id: &DeployId, status: DeployStatus, error: Option<&str>) -> Result<()>;
    /// Starts the next step of a deploy; returns its sequence number.
    async fn start_step(&self, id: &DeployId, phase: &str, name: &str) -> Result<i64>;
    async fn append_step_output(&self, id: &DeployId, seq: i64, output: &str) -> Result<()>;
    async fn finish_step(&self, id: &DeployId, seq: i64, status: StepStatus, error: Option<&str>) -> Result<()>;
    async fn steps(&self, id: &DeployId) -> Result<Vec<StepRecord>>;
    /// On a server's start: marks the deploys it owned that were still running as interrupted,
    /// with the step they were at, and returns them so the user can be told.
    async fn interrupt_running(&self, owner: &str) -> Result<Vec<Interrupted>>;

    // Leases.
    /// Takes the lease if it is free or stale (a stale one is taken over: the new lease's
    /// `taken_over` says from whom, and `lease.taken_over` is recorded); otherwise says who
    /// holds it.
    async fn acquire_lease(&self, name: &str, holder: &Holder, purpose: &str, ttl: Duration) -> Result<Acquire>;
    /// Renews a held lease; [`StoreError::LeaseLost`] if it was broken or taken meanwhile.
    async fn renew_lease(&self, lease: &Lease) -> Result<()>;
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
    async fn lease(&self, name: &str) -> Result<Option<LeaseInfo>>;
    async fn leases(&self) -> Result<Vec<LeaseInfo>>;
    /// Breaks the lease with this token (the one the caller inspected, never a newer one) and
    /// records who broke it and why. Returns the broken lease, or `None` if it was already gone.
    async fn break_lease(&self, name: &str, token: i64, actor: &str, reason: &str) -> Result<Option<LeaseInfo>>;

    // Audit log.
    async fn record_event(&self, event: &NewEvent) -> Result<i64>;
    /// The newest events first, optionally of one environment.
    async fn events(&self, environment: Option<&str>, limit: u32) -> Result<Vec<Event>>;

    // Personal tokens.
    /// Records a token; [`StoreError::TokenExists`] if its name is taken.
    async fn create_token(&self, token: &NewToken) -> Result<()>;
    /// The token with this hash, live, expired or revoked alike (the caller tells them apart,
    /// by [`Store::now`]).
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenInfo>>;
    /// Records that the token `name` was used now, unless it was within the last minute: one
    /// write a minute per token at most, never one per request. True if it wrote.
    async fn token_used(&self, name: &str) -> Result<bool>;
    /// Revokes a token by name; false if there was no live token of that name.
    async fn revoke_token(&self, name: &str) -> Result<bool>;
    async fn tokens(&self) -> Result<Vec<TokenInfo>>;
    /// The time by the store's clock (the one expiry and last-used times are measured with).
    fn now(&self) -> Timestamp;

    // Settings.
    async fn setting(&self, key: &str) -> Result<Option<String>>;
    async fn set_setting(&self, key: &str, value: &str) -> Result<()>;

    // Probe results per service and minute (`rollups.rs`), for idle services' SLOs.
    /// Adds to the samples of each (service, minute).
    async fn add_probe_samples(&self, environment: &str, samples: &[ProbeSampleRow]) -> Result<()>;
    /// The samples of minutes in `[from, before)`, oldest first.
    async fn probe_samples(&self, environment: &str, from: Timestamp, before: Timestamp)
    -> Result<Vec<ProbeSampleRow>>;
    /// Deletes the samples of minutes before `before`; returns how many rows went.
    async fn forget_probe_samples(&self, environment: &str, before: Timestamp) -> Result<u64>;

    // SLO rollups (`rollups.rs`).
    /// Writes (replacing) rollup rows and, in the same transaction, the collector's cursor.
    async fn put_rollups(&self, rows: &[RollupRow], cursor: Option<&SloCursor>) -> Result<()>;
    async fn slo_cursor(&self, environment: &str) -> Result<Option<SloCursor>>;
    /// The rows of one span (60 or 3600 seconds; `None`: both) starting in `from..to`, of one
    /// service or all, by span, time and service.
    async fn rollups(
        &self,
        environment: &str,
        service: Option<&str>,
        span_secs: Option<i64>,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<RollupRow>>;
    /// The start of the first row of this span starting at `from` or later.
    async fn first_rollup(&self, environment: &str, span_secs: i64, from: Timestamp) -> Result<Option<Timestamp>>;
    /// The start of the last row of this span.
    async fn last_rollup(&self, environment: &str, span_secs: i64) -> Result<Option<Timestamp>>;
    /// In one transaction: deletes the rows of this span starting before `before`, and writes
    /// `replacements` (the downsampled rows). Returns how many rows were deleted.
    async fn replace_rollups(
        &self,
        environment: &str,
        span_secs: i64,
        before: Timestamp,
        replacements: &[RollupRow],
    ) -> Result<u64>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Opens (creating if needed) the store at `location`: a file path or `sqlite://PATH` for
/// SQLite, `postgres://...` / `postgresql://...` for PostgreSQL. Applies the store's own schema
/// migrations before returning.
pub async fn open(location: &str, clock: Arc<dyn Clock>) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(SqlStore::open(location, clock).await?))
}
