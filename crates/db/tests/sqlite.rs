//! Migrations, backups, restore and verify against real SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use windlass_db::{
    BackupPolicy, BackupStore, Database, Error, MigrateRequest, NoWriteStop, Options, Retention, Source, files,
};

fn write(dir: &Path, name: &str, sql: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), sql).unwrap();
}

struct Fixture {
    _tmp: tempfile::TempDir,
    db_path: PathBuf,
    url: String,
    migrations: PathBuf,
    store: BackupStore,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let db_path = tmp.path().join("app.db");
    let url = format!("sqlite://{}", db_path.display());
    let migrations = tmp.path().join("migrations");
    write(&migrations, "0001_users.sql", "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL);\n");
    write(&migrations, "0001_users.down.sql", "DROP TABLE users;\n");
    write(&migrations, "0002_seed.sql", "INSERT INTO users (email) VALUES ('a@x'), ('b@x');\n");
    let store = BackupStore::new(tmp.path().join("backups"));
    Fixture { _tmp: tmp, db_path, url, migrations, store }
}

fn policy(store: &BackupStore) -> Option<BackupPolicy> {
    Some(BackupPolicy { store: store.clone(), retention: Retention { keep: 10, max_age: Duration::from_secs(86_400) } })
}

async fn migrate(f: &Fixture, deploy: &str) -> Result<windlass_db::MigrateReport, Error> {
    let db = Database::new(&f.url, Options::default()).unwrap();
    let mut stop = NoWriteStop;
    db.migrate(MigrateRequest {
        source: Source::Dir(f.migrations.clone()),
        deploy_id: Some(deploy.into()),
        backup: policy(&f.store),
        write_stop: &mut stop,
    })
    .await
}

async fn snapshot(path: &Path) -> (String, String) {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let schema: String =
        sqlx::query_scalar("SELECT group_concat(sql, ';') FROM (SELECT sql FROM sqlite_master ORDER BY name)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    let data: String = sqlx::query_scalar(
        "SELECT coalesce(group_concat(id || ':' || email, ','), '') FROM (SELECT * FROM users ORDER BY id)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    (schema, data)
}

#[tokio::test]
async fn applies_reports_status_and_reruns_idempotently() {
    let f = fixture();
    let report = migrate(&f, "d1").await.unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(report.applied[0].deploy_id.as_deref(), Some("d1"));
    let backup = report.backup.unwrap();
    assert_eq!(backup.reason, "before-migrate");
    assert!(backup.name.ends_with("-d1"));

    let db = Database::new(&f.url, Options::default()).unwrap();
    let status = db.status(&f.migrations).await.unwrap();
    assert_eq!(status.applied.len(), 2);
    assert!(status.pending.is_empty());

    let again = migrate(&f, "d2").await.unwrap();
    assert!(again.applied.is_empty());
    assert!(again.backup.is_none(), "nothing to apply: no backup");
    let (_, data) = snapshot(&f.db_path).await;
    assert_eq!(data, "1:a@x,2:b@x");
}

#[tokio::test]
async fn two_concurrent_runs_apply_the_schema_once() {
    let f = fixture();
    let (a, b) = tokio::join!(migrate(&f, "a"), migrate(&f, "b"));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.applied.len() + b.applied.len(), 2, "each migration applied exactly once");
    let (_, data) = snapshot(&f.db_path).await;
    assert_eq!(data, "1:a@x,2:b@x");
}

#[tokio::test]
async fn a_held_lock_names_its_holder() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    let lock_path = f.db_path.with_file_name("app.db.windlass-lock");
    let holder = std::fs::File::options().write(true).open(&lock_path).unwrap();
    holder.lock().unwrap();
    std::fs::write(&lock_path, "windlass pid 4242 on testhost").unwrap();
    write(&f.migrations, "0003_more.sql", "CREATE TABLE more (id INTEGER);");
    let db = Database::new(&f.url, Options { lock_timeout: Duration::from_millis(300), ..Options::default() }).unwrap();
    let err = db
        .migrate(MigrateRequest {
            source: Source::Dir(f.migrations.clone()),
            deploy_id: None,
            backup: None,
            write_stop: &mut NoWriteStop,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked(_)), "{err}");
    assert!(err.to_string().contains("pid 4242 on testhost"), "{err}");
    drop(holder);
}

#[tokio::test]
async fn an_edited_migration_is_refused_until_repaired() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    write(&f.migrations, "0002_seed.sql", "INSERT INTO users (email) VALUES ('a@x'), ('b@x'), ('c@x');\n");
    let err = migrate(&f, "d2").await.unwrap_err();
    assert!(matches!(&err, Error::ChecksumMismatch(v) if v == &["0002_seed".to_owned()]), "{err}");
    let db = Database::new(&f.url, Options::default()).unwrap();
    let changes = db.repair(&f.migrations).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert!(changes[0].starts_with("0002_seed: checksum"), "{changes:?}");
    assert!(migrate(&f, "d3").await.unwrap().applied.is_empty());
}

#[tokio::test]
async fn a_failing_transactional_migration_leaves_schema_and_data_identical() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    let before = snapshot(&f.db_path).await;
    write(
        &f.migrations,
        "0003_broken.sql",
        "ALTER TABLE users ADD COLUMN nickname TEXT;\nUPDATE users SET email = 'changed';\nINSERT INTO nowhere VALUES (1);\n",
    );
    let err = migrate(&f, "d2").await.unwrap_err();
    match &err {
        Error::MigrationFailed { version: 3, restored: None, reason, .. } => {
            assert!(reason.contains("nowhere"), "{reason}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(snapshot(&f.db_path).await, before);
    let db = Database::new(&f.url, Options::default()).unwrap();
    assert_eq!(db.status(&f.migrations).await.unwrap().pending.len(), 1);
}

#[tokio::test]
async fn backup_verify_restore_and_a_corrupt_backup() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    let db = Database::new(&f.url, Options::default()).unwrap();
    let backup = db.backup(&f.store, "manual", None).await.unwrap();
    assert_eq!(backup.tables.get("\"users\""), Some(&2));
    assert_eq!(backup.schema_version, Some(2));
    let verification = db.verify(&f.store, &backup.name).await.unwrap();
    assert!(verification.ok, "{}", verification.detail);
    assert!(f.store.get(&backup.name).unwrap().verification.unwrap().ok);

    // Later writes, then restore: the live file is the backup again; the writes are in the
    // pre-restore backup.
    let mut conn = SqliteConnection::connect(&f.url).await.unwrap();
    sqlx::query("INSERT INTO users (email) VALUES ('late@x')").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let report = db.restore(&f.store, &backup.name, &mut NoWriteStop).await.unwrap();
    assert_eq!(report.pre_restore.tables.get("\"users\""), Some(&3));
    assert_eq!(snapshot(&f.db_path).await.1, "1:a@x,2:b@x");

    // Corrupt the file: verify says so and records it; restore refuses it.
    let path = f.store.file_path(&backup);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let verification = db.verify(&f.store, &backup.name).await.unwrap();
    assert!(!verification.ok);
    assert!(verification.detail.contains("checksum"), "{}", verification.detail);
    assert!(!f.store.get(&backup.name).unwrap().verification.unwrap().ok);
    let err = db.restore(&f.store, &backup.name, &mut NoWriteStop).await.unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[tokio::test]
async fn retention_keeps_the_newest() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    let db = Database::new(&f.url, Options::default()).unwrap();
    for _ in 0..3 {
        db.backup(&f.store, "manual", None).await.unwrap();
    }
    let all = f.store.list().unwrap();
    assert_eq!(all.len(), 4);
    let removed =
        f.store.prune(Retention { keep: 2, max_age: Duration::from_secs(3600) }, jiff::Timestamp::now()).unwrap();
    assert_eq!(removed, vec![all[0].name.clone(), all[1].name.clone()]);
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2);
    let removed = f.store.prune(Retention { keep: 10, max_age: Duration::from_secs(3600) }, later).unwrap();
    assert_eq!(removed, vec![all[2].name.clone()], "too old, but the newest always stays");
    assert_eq!(f.store.list().unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(&f.store.dir).unwrap().count(), 2, "one file and its manifest");
}

#[test]
fn bad_migration_directories_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = files::load(&tmp.path().join("nope")).unwrap_err();
    assert!(err.to_string().contains("cannot read the directory"), "{err}");

    let dup = tmp.path().join("dup");
    write(&dup, "0001_a.sql", "SELECT 1;");
    write(&dup, "0001_b.sql", "SELECT 1;");
    assert!(files::load(&dup).unwrap_err().to_string().contains("duplicate version 1"));

    let gap = tmp.path().join("gap");
    write(&gap, "0001_a.sql", "SELECT 1;");
    write(&gap, "0003_c.sql", "SELECT 1;");
    assert!(files::load(&gap).unwrap_err().to_string().contains("expected 0002, found 0003"));

    let two = tmp.path().join("two");
    write(&two, "0001_a.sql", "-- windlass:no-transaction\nCREATE INDEX CONCURRENTLY a ON t (x);\nSELECT 1;\n");
    assert!(files::load(&two).unwrap_err().to_string().contains("exactly one statement"));

    let own = tmp.path().join("own");
    write(&own, "0001_a.sql", "BEGIN;\nCREATE TABLE t (x int);\nCOMMIT;\n");
    assert!(files::load(&own).unwrap_err().to_string().contains("`BEGIN` controls the transaction"));

    let named = tmp.path().join("named");
    write(&named, "users.sql", "SELECT 1;");
    assert!(files::load(&named).unwrap_err().to_string().contains("NNNN_name.sql"));
}

#[tokio::test]
async fn a_failing_command_that_changed_nothing_is_not_restored() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    let db = Database::new(&f.url, Options::default()).unwrap();
    let env = [("PATH".to_owned(), std::env::var("PATH").unwrap())].into();
    let err = db
        .migrate(MigrateRequest {
            source: Source::Command { command: "echo working; exit 3".into(), env, cwd: None },
            deploy_id: None,
            backup: policy(&f.store),
            write_stop: &mut NoWriteStop,
        })
        .await
        .unwrap_err();
    match err {
        Error::CommandFailed { restored: None, output, reason } => {
            assert!(output.contains("working"));
            assert!(reason.contains("exit status: 3"), "{reason}");
        }
        other => panic!("{other}"),
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Backups hold every row: whatever the umask, the directory is 0700 (also one an older version
/// made 0755) and every archive and manifest 0600, also after a verification rewrote it.
#[tokio::test]
async fn backups_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture();
    std::fs::create_dir_all(&f.store.dir).unwrap();
    std::fs::set_permissions(&f.store.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    migrate(&f, "d1").await.unwrap();
    let db = Database::new(&f.url, Options::default()).unwrap();
    let backup = db.backup(&f.store, "manual", None).await.unwrap();
    db.verify(&f.store, &backup.name).await.unwrap();
    assert_eq!(mode(&f.store.dir), 0o700);
    let files: Vec<PathBuf> = std::fs::read_dir(&f.store.dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 4, "two archives and their manifests: {files:?}");
    for file in &files {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    // A fresh directory (and its missing parents' last part) is made 0700 too.
    let fresh = BackupStore::new(f.store.dir.parent().unwrap().join("other/production"));
    db.backup(&fresh, "manual", None).await.unwrap();
    assert_eq!(mode(&fresh.dir), 0o700);
}

/// A planted manifest whose `file` points outside the backup directory (a path, `..`, an
/// absolute path or a symlink) is refused with a clear error; `prune` deletes nothing, and the
/// file outside survives.
#[tokio::test]
async fn a_planted_manifest_never_makes_prune_delete_outside() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    let db = Database::new(&f.url, Options::default()).unwrap();
    db.backup(&f.store, "manual", None).await.unwrap();
    let outside = f.store.dir.parent().unwrap().join("precious.txt");
    std::fs::write(&outside, "keep me").unwrap();
    let genuine = f.store.list().unwrap();
    assert_eq!(genuine.len(), 2);
    let link = f.store.dir.join("link.dump");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    for (name, file) in [
        ("00000000T000000Z-old", "../precious.txt".to_owned()),
        ("00000000T000000Z-old", outside.display().to_string()),
        ("00000000T000000Z-old", "link.dump".to_owned()),
        ("../precious", "x.dump".to_owned()),
    ] {
        let mut planted = genuine[0].clone();
        planted.name = name.to_owned();
        planted.file = file.clone();
        planted.created_at = "2001-01-01T00:00:00Z".into();
        std::fs::write(f.store.dir.join("planted.json"), serde_json::to_string(&planted).unwrap()).unwrap();
        let err = f.store.prune(Retention { keep: 1, max_age: Duration::from_secs(60) }, jiff::Timestamp::now());
        let err = err.expect_err(&file).to_string();
        assert!(err.contains("planted.json is refused") && err.contains("nothing was deleted"), "{err}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep me", "{file}");
        assert_eq!(std::fs::read_dir(&f.store.dir).unwrap().count(), 6, "{file}: nothing in the directory went");
    }
    std::fs::remove_file(f.store.dir.join("planted.json")).unwrap();
    std::fs::remove_file(&link).unwrap();
    assert_eq!(f.store.list().unwrap(), genuine);
}

/// A `migrate` command that runs past `command_timeout` is stopped with its whole process
/// group (the shell's background child too), and the error says so.
#[tokio::test]
async fn a_migrate_command_past_its_timeout_is_killed_with_its_group() {
    let f = fixture();
    migrate(&f, "d1").await.unwrap();
    let options = Options { command_timeout: Duration::from_millis(500), ..Options::default() };
    let db = Database::new(&f.url, options).unwrap();
    let pid_file = f.store.dir.parent().unwrap().join("child.pid");
    let env = [("PATH".to_owned(), std::env::var("PATH").unwrap())].into();
    let command = format!("sleep 300 & echo $! > {}; echo started; wait", pid_file.display());
    let err = db
        .migrate(MigrateRequest {
            source: Source::Command { command, env, cwd: None },
            deploy_id: None,
            backup: None,
            write_stop: &mut NoWriteStop,
        })
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("did not finish within 500ms ([database] command_timeout)"), "{message}");
    assert!(message.contains("process group killed"), "{message}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // The background sleep was killed with the group (a zombie at most, until its reaper runs).
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state.rsplit(')').next().unwrap_or_default().split_whitespace().next().unwrap_or("gone").to_owned();
    assert!(state == "gone" || state == "Z", "the shell's child still runs: state {state}");
}
