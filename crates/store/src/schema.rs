//! The store's own schema, versioned. Each migration has a SQLite and a PostgreSQL form (they
//! differ only where the dialects do: identity columns); both are applied in order on open,
//! under a lock so that two servers opening one database at once migrate it once.

use std::sync::LazyLock;

use crate::alerts::ALERTS_V4;

pub(crate) struct Migration {
    pub version: i64,
    pub sqlite: String,
    pub postgres: String,
}

/// Tables shared verbatim by both dialects (only portable types: TEXT and BIGINT).
const PORTABLE_V1: &str = "
CREATE TABLE deploys (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    status TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    config_snapshot TEXT NOT NULL,
    artifacts TEXT NOT NULL,
    owner TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    current_step TEXT,
    error TEXT
);
CREATE INDEX deploys_by_environment ON deploys (environment, started_at);
CREATE INDEX deploys_running ON deploys (status, owner);
CREATE TABLE deploy_steps (
    deploy_id TEXT NOT NULL REFERENCES deploys (id),
    seq BIGINT NOT NULL,
    phase TEXT NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    output TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (deploy_id, seq)
);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder_id TEXT NOT NULL,
    holder_host TEXT NOT NULL,
    holder_pid BIGINT NOT NULL,
    purpose TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    ttl_ms BIGINT NOT NULL,
    token BIGINT NOT NULL
);
CREATE TABLE lease_tokens (
    name TEXT PRIMARY KEY,
    last_token BIGINT NOT NULL
);
CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
";

const EVENTS_COLUMNS: &str = "
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    environment TEXT,
    kind TEXT NOT NULL,
    subject TEXT,
    message TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_by_environment ON events (environment, id);
";

/// Personal API tokens: only a SHA-256 of each is kept (tokens are 256 random bits, so a plain
/// hash is enough: nothing to brute-force), so a copy of the database grants nothing.
const TOKENS_V2: &str = "
CREATE TABLE tokens (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
";

/// SLO rollups: per service, one row per minute (`span_secs` 60) of the edge's answers, with the
/// latency histogram of that minute (sparse, encoded by the monitor); minutes older than a week
/// are merged into hourly rows (`span_secs` 3600). Keyed by time first so that a window of all
/// services is one range scan. `slo_cursors` keeps the edge's counters as last read, per
/// environment, written in the same transaction as the rows they produced.
const SLO_ROLLUPS_COLUMNS: &str = "
    environment TEXT NOT NULL,
    span_secs BIGINT NOT NULL,
    start_ms BIGINT NOT NULL,
    service TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    client_errors BIGINT NOT NULL,
    maintenance BIGINT NOT NULL,
    rate_limited BIGINT NOT NULL,
    latency_sum_micros BIGINT NOT NULL,
    histogram TEXT NOT NULL,
    PRIMARY KEY (environment, span_secs, start_ms, service)
)";

/// The monitor's probe results per service and minute: an idle service's SLO counts these.
const PROBE_SAMPLES_V5: &str = "
CREATE TABLE probe_samples (
    environment TEXT NOT NULL,
    service TEXT NOT NULL,
    minute_ms BIGINT NOT NULL,
    successes BIGINT NOT NULL,
    failures BIGINT NOT NULL,
    PRIMARY KEY (environment, service, minute_ms)
);
";

/// Tokens belong to people or robots (`[access]`), expire, and record when they were last used.
/// Tokens from before keep working as their name's person's, without an expiry.
const TOKEN_OWNERS_V7: &str = "
ALTER TABLE tokens ADD COLUMN owner TEXT;
ALTER TABLE tokens ADD COLUMN owner_kind TEXT NOT NULL DEFAULT 'person';
ALTER TABLE tokens ADD COLUMN admin BIGINT NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at BIGINT;
UPDATE tokens SET owner = name;
";

const SLO_CURSORS_V3: &str = "
CREATE TABLE slo_cursors (
    environment TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    data TEXT NOT NULL
);
";

/// Every migration, oldest first. Built once from the shared parts above, so that the two
/// dialects cannot drift apart.
pub(crate) static MIGRATIONS: LazyLock<Vec<Migration>> = LazyLock::new(|| {
    vec![
        Migration {
            version: 1,
            sqlite: format!(
                "{PORTABLE_V1}CREATE TABLE events (\n    id INTEGER PRIMARY KEY AUTOINCREMENT,{EVENTS_COLUMNS}"
            ),
            postgres: format!(
                "{PORTABLE_V1}CREATE TABLE events (\n    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,{EVENTS_COLUMNS}"
            ),
        },
        Migration { version: 2, sqlite: TOKENS_V2.to_owned(), postgres: TOKENS_V2.to_owned() },
        Migration {
            version: 3,
            // Without a rowid the primary key is the table: a row costs its bytes once.
            sqlite: format!("CREATE TABLE slo_rollups ({SLO_ROLLUPS_COLUMNS} WITHOUT ROWID;{SLO_CURSORS_V3}"),
            postgres: format!("CREATE TABLE slo_rollups ({SLO_ROLLUPS_COLUMNS};{SLO_CURSORS_V3}"),
        },
        Migration { version: 4, sqlite: ALERTS_V4.to_owned(), postgres: ALERTS_V4.to_owned() },
        Migration { version: 5, sqlite: PROBE_SAMPLES_V5.to_owned(), postgres: PROBE_SAMPLES_V5.to_owned() },
        Migration { version: 7, sqlite: TOKEN_OWNERS_V7.to_owned(), postgres: TOKEN_OWNERS_V7.to_owned() },
    ]
});

pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
