//! Migrations, backups, restore under a write stop and verify against a real PostgreSQL, each
//! test in a database of its own.
// Tests: their tasks live as long as the test.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Connection, PgConnection};
use windlass_db::schedule::{Schedule, is_due};
use windlass_db::{
    BackupPolicy, BackupStore, Database, Error, MigrateRequest, NoWriteStop, Options, PgWriteStop, Retention,
    ScheduledJob, Source, run_scheduled,
};
use windlass_testkit::postgres::TestDatabase;

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), sql).unwrap();
}

struct Fixture {
    tmp: tempfile::TempDir,
    db: TestDatabase,
    migrations: PathBuf,
    store: BackupStore,
}

async fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let migrations = tmp.path().join("migrations");
    write(
        &migrations,
        "0001_users.sql",
        "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);\nCREATE TABLE events (id bigserial PRIMARY KEY, note text);\n",
    );
    write(&migrations, "0002_seed.sql", "INSERT INTO users (email) VALUES ('a@x'), ('b@x'), ('a@x');\n");
    let store = BackupStore::new(tmp.path().join("backups"));
    Fixture { tmp, db, migrations, store }
}

fn policy(store: &BackupStore) -> Option<BackupPolicy> {
    Some(BackupPolicy { store: store.clone(), retention: Retention { keep: 10, max_age: Duration::from_secs(86_400) } })
}

fn database(f: &Fixture) -> Database {
    Database::new(&f.db.url, Options::default()).unwrap()
}

async fn migrate_with(f: &Fixture, options: Options, deploy: &str) -> Result<windlass_db::MigrateReport, Error> {
    let db = Database::new(&f.db.url, options).unwrap();
    let mut stop = PgWriteStop::new(&f.db.url);
    db.migrate(MigrateRequest {
        source: Source::Dir(f.migrations.clone()),
        deploy_id: Some(deploy.into()),
        backup: policy(&f.store),
        write_stop: &mut stop,
    })
    .await
}

async fn migrate(f: &Fixture, deploy: &str) -> Result<windlass_db::MigrateReport, Error> {
    migrate_with(f, Options::default(), deploy).await
}

/// Schema, row counts and a content checksum of the users table.
async fn snapshot(url: &str) -> (Vec<String>, i64, String) {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let schema: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws(' ', table_name, column_name, data_type) FROM information_schema.columns \
         WHERE table_schema = 'public' UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&mut conn).await.unwrap();
    let sum: String = sqlx::query_scalar("SELECT coalesce(md5(string_agg(u::text, ',' ORDER BY id)), '') FROM users u")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    (schema, count, sum)
}

async fn scalar(url: &str, sql: &'static str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let value: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    value
}

#[tokio::test]
async fn applies_reports_status_and_reruns_idempotently() {
    let f = fixture().await;
    let report = migrate(&f, "d1").await.unwrap();
    assert_eq!(report.applied.iter().map(|a| a.version).collect::<Vec<_>>(), [1, 2]);
    let backup = report.backup.unwrap();
    assert_eq!(backup.engine, "postgres");
    assert!(backup.tool.contains("pg_dump"));
    let status = database(&f).status(&f.migrations).await.unwrap();
    assert_eq!(status.applied.len(), 2);
    assert_eq!(status.applied[1].deploy_id.as_deref(), Some("d1"));
    assert!(status.pending.is_empty());
    let again = migrate(&f, "d2").await.unwrap();
    assert!(again.applied.is_empty() && again.backup.is_none());
    assert_eq!(scalar(&f.db.url, "SELECT count(*) FROM users").await, 3);
}

#[tokio::test]
async fn two_concurrent_runs_apply_the_schema_once() {
    let f = fixture().await;
    write(&f.migrations, "0003_slow.sql", "SELECT pg_sleep(0.5);\nCREATE TABLE slow (id int);\n");
    let (a, b) = tokio::join!(migrate(&f, "a"), migrate(&f, "b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.applied.len() + b.applied.len(), 3);
    assert_eq!(scalar(&f.db.url, "SELECT count(*) FROM _windlass_migrations").await, 3);
    assert_eq!(scalar(&f.db.url, "SELECT count(*) FROM users").await, 3);
}

#[tokio::test]
async fn a_held_lock_names_its_holder() {
    let f = fixture().await;
    let mut holder = PgConnection::connect(&format!("{}?application_name=deploy-42-holder", f.db.url)).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(windlass_db::ADVISORY_KEY).execute(&mut holder).await.unwrap();
    let options = Options { lock_timeout: Duration::from_millis(400), ..Options::default() };
    let err = migrate_with(&f, options, "d1").await.unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    assert!(err.to_string().contains("deploy-42-holder"), "{err}");
    holder.close().await.unwrap();
    migrate(&f, "d1").await.unwrap();
}

#[tokio::test]
async fn an_edited_migration_is_refused_until_repaired() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    write(&f.migrations, "0002_seed.sql", "INSERT INTO users (email) VALUES ('a@x');\n");
    let err = migrate(&f, "d2").await.unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch(_)), "{err}");
    assert!(err.to_string().contains("0002_seed"));
    let changes = database(&f).repair(&f.migrations).await.unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(migrate(&f, "d3").await.unwrap().applied.is_empty());
}

#[tokio::test]
async fn a_failing_transactional_migration_leaves_schema_and_data_identical() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    let before = snapshot(&f.db.url).await;
    let backups_before = f.store.list().unwrap().len();
    write(
        &f.migrations,
        "0003_broken.sql",
        "ALTER TABLE users ADD COLUMN nickname text;\nUPDATE users SET email = 'lost';\nDELETE FROM users WHERE id = 1;\nSELEC 1;\n",
    );
    let err = migrate(&f, "d2").await.unwrap_err();
    match &err {
        Error::MigrationFailed { version: 3, restored: None, reason, .. } => {
            assert!(reason.contains("syntax error"), "{reason}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(snapshot(&f.db.url).await, before);
    assert_eq!(scalar(&f.db.url, "SELECT count(*) FROM _windlass_migrations").await, 2);
    // The backup was taken, but nothing was restored.
    let all = f.store.list().unwrap();
    assert_eq!(all.len(), backups_before + 1);
    assert!(all.iter().all(|m| m.reason != "pre-restore"));
}

#[tokio::test]
async fn create_index_concurrently_runs_alone_and_is_flagged() {
    let f = fixture().await;
    write(
        &f.migrations,
        "0003_index.sql",
        "-- windlass:no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    let status = database(&f).status(&f.migrations).await.unwrap();
    assert!(!status.pending[2].transactional);
    let report = migrate(&f, "d1").await.unwrap();
    assert_eq!(report.applied.len(), 3);
    assert!(!report.applied[2].transactional);
    assert_eq!(
        scalar(&f.db.url, "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'users_email' AND i.indisvalid").await,
        1
    );
}

/// A non-transactional migration fails after committing part of its work (CREATE UNIQUE INDEX
/// CONCURRENTLY over duplicates leaves an INVALID index) while a writer keeps inserting: writes
/// are stopped, the state is backed up, the pre-migration backup restored, writes resume.
#[tokio::test]
async fn a_committed_failure_is_restored_under_a_write_stop_with_a_concurrent_writer() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    write(
        &f.migrations,
        "0003_nickname.sql",
        "ALTER TABLE users ADD COLUMN nickname text;\nINSERT INTO events (note) VALUES ('from migration 3');\n",
    );
    write(
        &f.migrations,
        "0004_unique.sql",
        "-- windlass:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY users_email ON users (email);\n",
    );

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let writer = {
        let (url, stop, written, refused) = (f.db.url.clone(), stop.clone(), written.clone(), refused.clone());
        tokio::spawn(async move {
            let mut conn: Option<PgConnection> = None;
            for i in 0..20_000u32 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if conn.is_none() {
                    conn = PgConnection::connect(&url).await.ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                match sqlx::query("INSERT INTO events (note) VALUES ($1)")
                    .bind(format!("writer {i}"))
                    .execute(&mut *c)
                    .await
                {
                    Ok(_) => written.fetch_add(1, Ordering::SeqCst),
                    Err(_) => {
                        // The write stop ended this session: the writer stops here, so every
                        // row it wrote was written before the restore.
                        refused.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                };
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    while written.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = migrate(&f, "d2").await.unwrap_err();
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    let restored = match &err {
        Error::MigrationFailed { version: 4, restored: Some(name), .. } => name.clone(),
        other => panic!("{other}"),
    };
    let backups = f.store.list().unwrap();
    let before = backups.iter().find(|m| m.name == restored).unwrap();
    let pre_restore = backups.iter().find(|m| m.reason == "pre-restore").unwrap();
    // The live database is the pre-migration backup: no column, no index, history at 2.
    let (schema, users, _) = snapshot(&f.db.url).await;
    assert!(!schema.iter().any(|s| s.contains("nickname") || s.contains("users_email")), "{schema:?}");
    assert_eq!(users, 3);
    assert_eq!(scalar(&f.db.url, "SELECT max(version) FROM _windlass_migrations").await, 2);
    assert_eq!(refused.load(Ordering::SeqCst), 1, "the write stop ended the writer's session");
    let live_events = scalar(&f.db.url, "SELECT count(*) FROM events").await;
    assert_eq!(Some(&live_events), before.tables.get("public.events"));
    // Writes made between the backup and the restore (at least migration 3's row) are in the
    // pre-restore backup, not in the live database.
    assert!(pre_restore.tables["public.events"] > live_events, "{:?} vs {live_events}", pre_restore.tables);
    assert_eq!(pre_restore.schema_version, Some(3));
    // Writes are allowed again.
    let mut conn = PgConnection::connect(&f.db.url).await.unwrap();
    sqlx::query("INSERT INTO events (note) VALUES ('after')").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_failed_command_that_committed_is_restored_and_one_that_did_not_is_not() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    let before = snapshot(&f.db.url).await;
    let env = |url: &str| {
        [("PATH".to_owned(), std::env::var("PATH").unwrap()), ("DATABASE_URL".to_owned(), url.to_owned())].into()
    };
    let url = f.db.url.clone();
    let run = |command: &str| {
        let db = database(&f);
        let source = Source::Command { command: command.into(), env: env(&url), cwd: None };
        let store = f.store.clone();
        let url = url.clone();
        async move {
            let mut stop = PgWriteStop::new(&url);
            db.migrate(MigrateRequest { source, deploy_id: None, backup: policy(&store), write_stop: &mut stop }).await
        }
    };
    let err = run("echo nothing done; exit 4").await.unwrap_err();
    assert!(matches!(err, Error::CommandFailed { restored: None, .. }), "{err}");
    let err = run("psql -X -q \"$DATABASE_URL\" -c 'CREATE TABLE half (x int)' -c 'ALTER TABLE users ADD COLUMN y int' && echo half done && exit 1")
        .await
        .unwrap_err();
    match &err {
        Error::CommandFailed { restored: Some(_), output, .. } => assert!(output.contains("half done"), "{output}"),
        other => panic!("{other}"),
    }
    assert_eq!(snapshot(&f.db.url).await, before);
    assert_eq!(scalar(&f.db.url, "SELECT count(*) FROM pg_tables WHERE tablename = 'half'").await, 0);
    let ok = run("echo applied").await.unwrap();
    assert_eq!(ok.output.as_deref(), Some("applied\n"));
}

#[tokio::test]
async fn backup_counts_rows_in_its_snapshot_and_verify_catches_corruption() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    let db = database(&f);
    let backup = db.backup(&f.store, "manual", None).await.unwrap();
    assert_eq!(backup.tables.get("public.users"), Some(&3));
    assert_eq!(backup.schema_version, Some(2));
    let verification = db.verify(&f.store, "latest").await.unwrap();
    assert!(verification.ok, "{}", verification.detail);
    // This process's scratch databases (other tests verify at the same time) are gone.
    let ours =
        format!("SELECT count(*) FROM pg_database WHERE datname LIKE 'windlass_verify_{}_%'", std::process::id());
    let mut conn = PgConnection::connect(&f.db.url).await.unwrap();
    let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(ours)).fetch_one(&mut conn).await.unwrap();
    assert_eq!(left, 0);

    // A truncated archive whose manifest was (wrongly) written to match: pg_restore fails.
    let path = f.store.file_path(&backup);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let mut manifest = f.store.get(&backup.name).unwrap();
    manifest.size_bytes = (bytes.len() / 2) as u64;
    manifest.sha256 = windlass_db::backup::file_sha256(&path).unwrap();
    f.store.write_manifest(&manifest).unwrap();
    let verification = db.verify(&f.store, &backup.name).await.unwrap();
    assert!(!verification.ok);
    assert!(verification.detail.contains("pg_restore"), "{}", verification.detail);
    assert!(!f.store.get(&backup.name).unwrap().verification.unwrap().ok);

    // A flipped byte: the checksum catches it.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let verification = db.verify(&f.store, &backup.name).await.unwrap();
    assert!(!verification.ok && verification.detail.contains("checksum"), "{}", verification.detail);
}

#[tokio::test]
async fn a_full_disk_or_a_missing_pg_dump_refuses_to_migrate_and_changes_nothing() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    write(&f.migrations, "0003_more.sql", "ALTER TABLE users ADD COLUMN more int;\n");
    let before = snapshot(&f.db.url).await;

    let full = Options { dump_file_size_limit: Some(512), ..Options::default() };
    let err = migrate_with(&f, full, "d2").await.unwrap_err();
    assert!(matches!(err, Error::Backup(_)), "{err}");
    assert!(err.to_string().contains("File too large"), "{err}");

    let missing = Options { pg_bin_dir: Some(f.tmp.path().join("no-tools")), ..Options::default() };
    let err = migrate_with(&f, missing, "d3").await.unwrap_err();
    assert!(err.to_string().contains("pg_dump not found"), "{err}");

    assert_eq!(snapshot(&f.db.url).await, before);
    assert!(
        std::fs::read_dir(&f.store.dir).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial"))
    );
}

#[tokio::test]
async fn unreachable_databases_and_wrong_passwords_never_show_the_password() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    write(&dir, "0001_a.sql", "SELECT 1;");
    let db = Database::new("postgres://app:hunter2secret@127.0.0.1:1/app", Options::default()).unwrap();
    let err = db.status(&dir).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    assert!(!err.to_string().contains("hunter2secret"), "{err}");
    assert!(err.to_string().contains("app:***@127.0.0.1:1"), "{err}");

    let server = std::env::var(windlass_testkit::postgres::URL_VAR).unwrap();
    let wrong = server.replacen("postgres@", "nobody_here:hunter2secret@", 1);
    let db = Database::new(&wrong, Options::default()).unwrap();
    let err = db.status(&dir).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2secret"), "{err}");
}

#[tokio::test]
async fn a_due_schedule_runs_a_backup_and_a_verification() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    let schedule = Schedule::parse("daily 03:00").unwrap();
    let last: jiff::Timestamp = "2026-11-20T03:00:02Z".parse().unwrap();
    let now: jiff::Timestamp = "2026-11-21T03:00:00Z".parse().unwrap();
    assert!(is_due(schedule, Some(last), now));
    let policy = policy(&f.store).unwrap();
    let db = database(&f);
    let result = run_scheduled(&db, ScheduledJob::Backup, &policy).await;
    assert!(result.ok, "{}", result.message);
    assert_eq!(f.store.get("latest").unwrap().reason, "scheduled");
    let result = run_scheduled(&db, ScheduledJob::Verify, &policy).await;
    assert!(result.ok, "{}", result.message);
    assert!(f.store.get("latest").unwrap().verification.unwrap().ok);
}

#[tokio::test]
async fn an_explicit_restore_returns_to_the_backup() {
    let f = fixture().await;
    migrate(&f, "d1").await.unwrap();
    let db = database(&f);
    let backup = db.backup(&f.store, "manual", None).await.unwrap();
    let before = snapshot(&f.db.url).await;
    let mut conn = PgConnection::connect(&f.db.url).await.unwrap();
    sqlx::raw_sql("CREATE TABLE extra (x int); DELETE FROM users").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let report = db.restore(&f.store, &backup.name, &mut NoWriteStop).await.unwrap();
    assert_eq!(report.pre_restore.tables.get("public.users"), Some(&0));
    assert_eq!(snapshot(&f.db.url).await, before);
    assert_eq!(scalar(&f.db.url, "SELECT count(*) FROM pg_tables WHERE tablename = 'extra'").await, 0);
}

#[tokio::test]
async fn an_older_pg_dump_is_refused_with_a_clear_message() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture().await;
    let tools = f.tmp.path().join("old-tools");
    std::fs::create_dir_all(&tools).unwrap();
    let fake = tools.join("pg_dump");
    std::fs::write(&fake, "#!/bin/sh\necho 'pg_dump (PostgreSQL) 12.4'\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = migrate_with(&f, Options { pg_bin_dir: Some(tools), ..Options::default() }, "d1").await.unwrap_err();
    assert!(err.to_string().contains("pg_dump is version 12 but the server is version 15"), "{err}");
    assert_eq!(scalar(&f.db.url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").await, 0);
    // The rollback path finds a deploy's pre-migration backup by its id.
    migrate(&f, "d2").await.unwrap();
    assert_eq!(f.store.before_deploy("d2").unwrap().unwrap().deploy_id.as_deref(), Some("d2"));
    assert!(f.store.before_deploy("d1").unwrap().is_none());
}
