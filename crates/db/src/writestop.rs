//! Stopping writes while a database is restored.

use crate::conn::{Conn, quote_ident, sql_error};
use crate::error::Result;
use crate::intent::StopPlan;

/// Stops writes to the database for the time of a restore, and lets them through again.
///
/// The database-level stop for PostgreSQL is [`PgWriteStop`]; the deploy pipeline puts the
/// edge's maintenance mode on top (a composite calling both).
#[async_trait::async_trait]
pub trait WriteStop: Send {
    /// Adds what `begin` will stop to `plan`, which the restore records durably before it calls
    /// `begin`: a recovery after a kill undoes exactly that.
    async fn plan(&mut self, _plan: &mut StopPlan) -> Result<()> {
        Ok(())
    }
    async fn begin(&mut self) -> Result<()>;
    async fn end(&mut self) -> Result<()>;
}

/// No stop (SQLite: the restore replaces the file with a rename; or a caller that stopped
/// writes itself).
pub struct NoWriteStop;

#[async_trait::async_trait]
impl WriteStop for NoWriteStop {
    async fn begin(&mut self) -> Result<()> {
        Ok(())
    }
    async fn end(&mut self) -> Result<()> {
        Ok(())
    }
}

/// PostgreSQL: `ALTER DATABASE .. SET default_transaction_read_only = on`, so every new
/// session is read-only, then terminates the database's other sessions (all but Windlass's
/// own, whose application_name starts with `windlass`). `end` resets the setting.
///
/// Needs the database's owner (or a superuser) and the right to terminate the sessions
/// (`pg_signal_backend` or the same role).
pub struct PgWriteStop {
    url: String,
    database: Option<String>,
}

impl PgWriteStop {
    pub fn new(url: &str) -> Self {
        PgWriteStop { url: url.to_owned(), database: None }
    }

    /// Lets writes through again on the URL's database, whoever stopped them (recovery after a
    /// run killed under the stop).
    pub async fn lift(url: &str) -> Result<()> {
        let mut conn = Conn::open(url, "windlass write-stop").await?;
        conn.exec("SET default_transaction_read_only = off").await.map_err(|err| sql_error(url, &err))?;
        let name = conn
            .strings("SELECT current_database()::text")
            .await
            .map_err(|err| sql_error(url, &err))?
            .pop()
            .unwrap_or_default();
        let result = conn
            .exec(&format!("ALTER DATABASE {} RESET default_transaction_read_only", quote_ident(&name)))
            .await
            .map_err(|err| sql_error(url, &err));
        conn.close().await;
        result
    }
}

#[async_trait::async_trait]
impl WriteStop for PgWriteStop {
    async fn plan(&mut self, plan: &mut StopPlan) -> Result<()> {
        plan.database_read_only = true;
        Ok(())
    }

    async fn begin(&mut self) -> Result<()> {
        let mut conn = Conn::open(&self.url, "windlass write-stop").await?;
        let url = self.url.clone();
        // Already stopped by a run that was killed: this session starts read-only too.
        conn.exec("SET default_transaction_read_only = off").await.map_err(|err| sql_error(&url, &err))?;
        let name = conn
            .strings("SELECT current_database()::text")
            .await
            .map_err(|err| sql_error(&url, &err))?
            .pop()
            .unwrap_or_default();
        conn.exec(&format!("ALTER DATABASE {} SET default_transaction_read_only = on", quote_ident(&name)))
            .await
            .map_err(|err| sql_error(&url, &err))?;
        self.database = Some(name);
        let terminated = conn
            .scalar_i64(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() \
                 AND pid <> pg_backend_pid() AND application_name NOT LIKE 'windlass%'",
            )
            .await
            .map_err(|err| sql_error(&url, &err))?;
        tracing::info!(terminated = terminated.unwrap_or(0), "writes stopped: database read-only, sessions ended");
        conn.close().await;
        Ok(())
    }

    async fn end(&mut self) -> Result<()> {
        let Some(name) = self.database.take() else { return Ok(()) };
        let mut conn = Conn::open(&self.url, "windlass write-stop").await?;
        // This session started read-only like every new one: lift that for itself first.
        conn.exec("SET default_transaction_read_only = off").await.map_err(|err| sql_error(&self.url, &err))?;
        let result = conn
            .exec(&format!("ALTER DATABASE {} RESET default_transaction_read_only", quote_ident(&name)))
            .await
            .map_err(|err| sql_error(&self.url, &err));
        conn.close().await;
        tracing::info!("writes allowed again");
        result
    }
}

/// Two stops: `begin` starts the first then the second, `end` ends them in reverse order (the
/// pipeline's edge maintenance mode, then [`PgWriteStop`]).
pub struct Both<A, B>(pub A, pub B);

#[async_trait::async_trait]
impl<A: WriteStop, B: WriteStop> WriteStop for Both<A, B> {
    async fn plan(&mut self, plan: &mut StopPlan) -> Result<()> {
        self.0.plan(plan).await?;
        self.1.plan(plan).await
    }
    async fn begin(&mut self) -> Result<()> {
        self.0.begin().await?;
        if let Err(err) = self.1.begin().await {
            let _ = self.0.end().await;
            return Err(err);
        }
        Ok(())
    }
    async fn end(&mut self) -> Result<()> {
        let second = self.1.end().await;
        let first = self.0.end().await;
        second.and(first)
    }
}
