//! One connection to PostgreSQL or SQLite, with the few operations Windlass needs of either.

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};

use crate::error::{Error, Result};
use crate::url::{Target, redact_in, redact_url};

pub(crate) const HISTORY: &str = "_windlass_migrations";
/// A migration run outside a transaction is recorded here before its statement runs, and
/// removed in the transaction that records it in the history: a row here with no history row
/// is a run killed in between, whose statement may or may not have taken effect.
pub(crate) const INTENTS: &str = "_windlass_migration_intents";
/// What `windlass db repair` decided about interrupted migrations, and why.
pub(crate) const REPAIRS: &str = "_windlass_migration_repairs";

pub(crate) enum Conn {
    Pg(PgConnection),
    Lite(SqliteConnection),
}

/// A migration recorded in the history table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub version: u64,
    pub name: String,
    pub checksum: String,
    pub applied_at: String,
    pub duration_ms: u64,
    pub deploy_id: Option<String>,
    pub transactional: bool,
}

type HistoryRow = (i64, String, String, String, i64, Option<String>, bool);

/// A migration started outside a transaction whose run ended before it was recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Started {
    pub version: u64,
    pub name: String,
    pub checksum: String,
    pub started_at: String,
    pub deploy_id: Option<String>,
    /// `windlass migrate <host> pid <pid>`.
    pub by: String,
}

type StartedRow = (i64, String, String, String, Option<String>, String);

pub(crate) fn sql_error(url: &str, err: &sqlx::Error) -> Error {
    Error::Sql(redact_in(&err.to_string(), url))
}

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Conn {
    pub(crate) async fn open(url: &str, application: &str) -> Result<Conn> {
        let connect_error =
            |err: sqlx::Error| Error::Connect { url: redact_url(url), reason: redact_in(&err.to_string(), url) };
        match Target::parse(url)? {
            Target::Postgres { .. } => {
                let options = PgConnectOptions::from_str(url).map_err(connect_error)?.application_name(application);
                Ok(Conn::Pg(PgConnection::connect_with(&options).await.map_err(connect_error)?))
            }
            Target::Sqlite { path } => {
                let options = SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .busy_timeout(std::time::Duration::from_secs(30));
                Ok(Conn::Lite(SqliteConnection::connect_with(&options).await.map_err(connect_error)?))
            }
        }
    }

    pub(crate) async fn close(self) {
        let _ = match self {
            Conn::Pg(c) => c.close().await,
            Conn::Lite(c) => c.close().await,
        };
    }

    /// Runs SQL text (one or several statements) as it is.
    pub(crate) async fn exec(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Conn::Pg(c) => sqlx::raw_sql(sql).execute(c).await.map(|_| ()),
            Conn::Lite(c) => sqlx::raw_sql(sql).execute(c).await.map(|_| ()),
        }
    }

    pub(crate) async fn scalar_i64(&mut self, sql: &str) -> Result<Option<i64>, sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Conn::Pg(c) => sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(c).await,
            Conn::Lite(c) => sqlx::query_scalar::<_, Option<i64>>(sql).fetch_one(c).await,
        }
    }

    pub(crate) async fn strings(&mut self, sql: &str) -> Result<Vec<String>, sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        match self {
            Conn::Pg(c) => sqlx::query_scalar::<_, String>(sql).fetch_all(c).await,
            Conn::Lite(c) => sqlx::query_scalar::<_, String>(sql).fetch_all(c).await,
        }
    }

    pub(crate) async fn ensure_history(&mut self) -> Result<(), sqlx::Error> {
        let sql = match self {
            Conn::Pg(_) => format!(
                "CREATE TABLE IF NOT EXISTS {HISTORY} (version BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                 checksum TEXT NOT NULL, applied_at TEXT NOT NULL, duration_ms BIGINT NOT NULL, deploy_id TEXT, \
                 transactional BOOLEAN NOT NULL)"
            ),
            Conn::Lite(_) => format!(
                "CREATE TABLE IF NOT EXISTS {HISTORY} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                 checksum TEXT NOT NULL, applied_at TEXT NOT NULL, duration_ms INTEGER NOT NULL, deploy_id TEXT, \
                 transactional BOOLEAN NOT NULL)"
            ),
        };
        self.exec(&sql).await
    }

    pub(crate) async fn has_history(&mut self) -> Result<bool, sqlx::Error> {
        self.has_table(HISTORY).await
    }

    async fn has_table(&mut self, table: &str) -> Result<bool, sqlx::Error> {
        let sql = match self {
            Conn::Pg(_) => format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'"),
            Conn::Lite(_) => format!("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '{table}'"),
        };
        Ok(self.scalar_i64(&sql).await?.unwrap_or(0) > 0)
    }

    /// `$1`, `$2`, ... as the engine writes them (SQLite: `?`, in order).
    fn placeholders(&self, sql: AssertSqlSafe<String>) -> AssertSqlSafe<String> {
        match self {
            Conn::Pg(_) => sql,
            Conn::Lite(_) => {
                let mut text = sql.0;
                for n in (1..=9).rev() {
                    text = text.replace(&format!("${n}"), "?");
                }
                AssertSqlSafe(text)
            }
        }
    }

    pub(crate) async fn ensure_intents(&mut self) -> Result<(), sqlx::Error> {
        let int = match self {
            Conn::Pg(_) => "BIGINT",
            Conn::Lite(_) => "INTEGER",
        };
        self.exec(&format!(
            "CREATE TABLE IF NOT EXISTS {INTENTS} (version {int} PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
             started_at TEXT NOT NULL, deploy_id TEXT, started_by TEXT NOT NULL); \
             CREATE TABLE IF NOT EXISTS {REPAIRS} (at TEXT NOT NULL, version {int} NOT NULL, action TEXT NOT NULL, \
             reason TEXT NOT NULL, by TEXT NOT NULL)"
        ))
        .await
    }

    /// Migrations started outside a transaction and not (yet) recorded in the history.
    pub(crate) async fn started(&mut self) -> Result<Vec<Started>, sqlx::Error> {
        if !self.has_table(INTENTS).await? {
            return Ok(Vec::new());
        }
        let sql = AssertSqlSafe(format!(
            "SELECT version, name, checksum, started_at, deploy_id, started_by FROM {INTENTS} ORDER BY version"
        ));
        let rows: Vec<StartedRow> = match self {
            Conn::Pg(c) => sqlx::query_as(sql).fetch_all(c).await?,
            Conn::Lite(c) => sqlx::query_as(sql).fetch_all(c).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(version, name, checksum, started_at, deploy_id, by)| Started {
                version: u64::try_from(version).unwrap_or(0),
                name,
                checksum,
                started_at,
                deploy_id,
                by,
            })
            .collect())
    }

    /// Records (durably: autocommit) that `started` is about to run outside a transaction.
    pub(crate) async fn record_started(&mut self, started: &Started) -> Result<(), sqlx::Error> {
        let version = i64::try_from(started.version).unwrap_or(i64::MAX);
        let sql = AssertSqlSafe(format!(
            "INSERT INTO {INTENTS} (version, name, checksum, started_at, deploy_id, started_by) VALUES ($1, $2, $3, $4, $5, $6)"
        ));
        let sql = self.placeholders(sql);
        macro_rules! insert {
            ($c:expr) => {
                sqlx::query(sql)
                    .bind(version)
                    .bind(&started.name)
                    .bind(&started.checksum)
                    .bind(&started.started_at)
                    .bind(&started.deploy_id)
                    .bind(&started.by)
                    .execute($c)
                    .await
                    .map(|_| ())
            };
        }
        match self {
            Conn::Pg(c) => insert!(c),
            Conn::Lite(c) => insert!(c),
        }
    }

    pub(crate) async fn forget_started(&mut self, version: u64) -> Result<(), sqlx::Error> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let sql = self.placeholders(AssertSqlSafe(format!("DELETE FROM {INTENTS} WHERE version = $1")));
        match self {
            Conn::Pg(c) => sqlx::query(sql).bind(version).execute(c).await.map(|_| ()),
            Conn::Lite(c) => sqlx::query(sql).bind(version).execute(c).await.map(|_| ()),
        }
    }

    pub(crate) async fn record_repair(
        &mut self,
        version: u64,
        action: &str,
        reason: &str,
        by: &str,
    ) -> Result<(), sqlx::Error> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        let sql = AssertSqlSafe(format!(
            "INSERT INTO {REPAIRS} (at, version, action, reason, by) VALUES ($1, $2, $3, $4, $5)"
        ));
        let sql = self.placeholders(sql);
        let at = jiff::Timestamp::now().to_string();
        macro_rules! insert {
            ($c:expr) => {
                sqlx::query(sql)
                    .bind(&at)
                    .bind(version)
                    .bind(action)
                    .bind(reason)
                    .bind(by)
                    .execute($c)
                    .await
                    .map(|_| ())
            };
        }
        match self {
            Conn::Pg(c) => insert!(c),
            Conn::Lite(c) => insert!(c),
        }
    }

    pub(crate) async fn history(&mut self) -> Result<Vec<Applied>, sqlx::Error> {
        if !self.has_history().await? {
            return Ok(Vec::new());
        }
        let sql = AssertSqlSafe(format!(
            "SELECT version, name, checksum, applied_at, duration_ms, deploy_id, transactional FROM {HISTORY} ORDER BY version"
        ));
        let rows: Vec<HistoryRow> = match self {
            Conn::Pg(c) => sqlx::query_as(sql).fetch_all(c).await?,
            Conn::Lite(c) => sqlx::query_as(sql).fetch_all(c).await?,
        };
        Ok(rows
            .into_iter()
            .map(|(version, name, checksum, applied_at, duration_ms, deploy_id, transactional)| Applied {
                version: u64::try_from(version).unwrap_or(0),
                name,
                checksum,
                applied_at,
                duration_ms: u64::try_from(duration_ms).unwrap_or(0),
                deploy_id,
                transactional,
            })
            .collect())
    }

    pub(crate) async fn record(&mut self, applied: &Applied) -> Result<(), sqlx::Error> {
        let version = i64::try_from(applied.version).unwrap_or(i64::MAX);
        let duration = i64::try_from(applied.duration_ms).unwrap_or(i64::MAX);
        macro_rules! insert {
            ($c:expr, $sql:expr) => {
                sqlx::query(AssertSqlSafe($sql))
                    .bind(version)
                    .bind(&applied.name)
                    .bind(&applied.checksum)
                    .bind(&applied.applied_at)
                    .bind(duration)
                    .bind(&applied.deploy_id)
                    .bind(applied.transactional)
                    .execute($c)
                    .await
                    .map(|_| ())
            };
        }
        match self {
            Conn::Pg(c) => insert!(
                c,
                format!(
                    "INSERT INTO {HISTORY} (version, name, checksum, applied_at, duration_ms, deploy_id, transactional) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)"
                )
            ),
            Conn::Lite(c) => insert!(
                c,
                format!(
                    "INSERT INTO {HISTORY} (version, name, checksum, applied_at, duration_ms, deploy_id, transactional) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)"
                )
            ),
        }
    }

    pub(crate) async fn set_checksum(&mut self, version: u64, checksum: &str) -> Result<(), sqlx::Error> {
        let version = i64::try_from(version).unwrap_or(i64::MAX);
        match self {
            Conn::Pg(c) => sqlx::query(AssertSqlSafe(format!("UPDATE {HISTORY} SET checksum = $1 WHERE version = $2")))
                .bind(checksum)
                .bind(version)
                .execute(c)
                .await
                .map(|_| ())?,
            Conn::Lite(c) => sqlx::query(AssertSqlSafe(format!("UPDATE {HISTORY} SET checksum = ? WHERE version = ?")))
                .bind(checksum)
                .bind(version)
                .execute(c)
                .await
                .map(|_| ())?,
        }
        Ok(())
    }

    /// The user tables, quoted and qualified as the engine writes them.
    pub(crate) async fn tables(&mut self) -> Result<Vec<String>, sqlx::Error> {
        let sql = match self {
            Conn::Pg(_) => {
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            }
            Conn::Lite(_) => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
        };
        let names = self.strings(sql).await?;
        Ok(match self {
            Conn::Pg(_) => names,
            Conn::Lite(_) => names.iter().map(|n| quote_ident(n)).collect(),
        })
    }

    /// Row counts of every user table.
    pub(crate) async fn row_counts(&mut self) -> Result<BTreeMap<String, i64>, sqlx::Error> {
        let mut counts = BTreeMap::new();
        for table in self.tables().await? {
            let count = self.scalar_i64(&format!("SELECT count(*) FROM {table}")).await?.unwrap_or(0);
            counts.insert(table, count);
        }
        Ok(counts)
    }

    pub(crate) async fn schema_version(&mut self) -> Result<Option<i64>, sqlx::Error> {
        if !self.has_history().await? {
            return Ok(None);
        }
        self.scalar_i64(&format!("SELECT max(version) FROM {HISTORY}")).await
    }

    /// A fingerprint of the schema (columns and indexes): changes when a DDL change committed.
    pub(crate) async fn fingerprint(&mut self) -> Result<String, sqlx::Error> {
        let schema = match self {
            Conn::Pg(_) => {
                self.strings(
                    "SELECT concat_ws(' ', table_schema, table_name, column_name, data_type, is_nullable, column_default) \
                     FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
                     UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema') \
                     ORDER BY 1",
                )
                .await?
            }
            Conn::Lite(_) => {
                self.strings("SELECT coalesce(sql, name) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY 1")
                    .await?
            }
        };
        Ok(schema.join("\n"))
    }
}
