//! The store's own schema, versioned. Each migration has a SQLite and a PostgreSQL form (they
//! differ only where the dialects do: identity columns); both are applied in order on open,
//! under a lock so that two servers opening one database at once migrate it once.

use std::sync::LazyLock;

use crate::alerts::ALERTS_V3;

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
        Migration { version: 3, sqlite: ALERTS_V3.to_owned(), postgres: ALERTS_V3.to_owned() },
    ]
});

pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}
