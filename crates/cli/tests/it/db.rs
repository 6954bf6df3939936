//! `windlass db ...` end to end: the real binary against SQLite files and a real PostgreSQL
//! (a database of its own per test).

use windlass_testkit::postgres::TestDatabase;

use crate::harness::{Run, Windlass};

const CONFIG: &str = r#"
[project]
name = "shop"

[environments.production]

[services.api]
run = "api-server"

[env]
DATABASE_URL = { secret = true }

[database]
url = { secret = "DATABASE_URL" }
migrate = { dir = "migrations" }
backup = { before_migrate = true, keep = 5, max_age = "30d" }
"#;

fn project(url: &str) -> Windlass {
    let test = Windlass::new().env("DATABASE_URL", url);
    test.write("windlass.toml", CONFIG);
    migration(&test, "0001_users.sql", "CREATE TABLE users (id integer PRIMARY KEY, email text NOT NULL);\n");
    migration(&test, "0002_seed.sql", "INSERT INTO users (id, email) VALUES (1, 'a@x'), (2, 'b@x');\n");
    test
}

fn migration(test: &Windlass, name: &str, sql: &str) {
    std::fs::create_dir_all(test.path().join("migrations")).unwrap();
    std::fs::write(test.path().join("migrations").join(name), sql).unwrap();
}

fn ok(run: &Run) {
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
}

fn pg() -> TestDatabase {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(TestDatabase::create())
}

#[test]
fn sqlite_migrate_status_backups_verify_and_restore() {
    let tmp = windlass_testkit::tempdir();
    let url = format!("sqlite://{}", tmp.path().join("app.db").display());
    let test = project(&url);

    let plan = test.run(&["db", "plan", "production"]);
    ok(&plan);
    assert!(plan.stdout.contains("pending 0001_users") && plan.stdout.contains("pending 0002_seed"), "{}", plan.stdout);

    let migrate = test.run(&["db", "migrate", "production", "--deploy-id", "d7"]);
    ok(&migrate);
    assert!(migrate.stdout.contains("applied 0002_seed"), "{}", migrate.stdout);
    assert!(migrate.stdout.contains("-d7 ("), "{}", migrate.stdout);

    let status = test.run(&["db", "status", "production"]);
    ok(&status);
    assert!(status.stdout.contains("deploy d7") && status.stdout.contains("nothing pending"), "{}", status.stdout);
    assert!(test.run(&["db", "migrate", "production"]).stdout.contains("up to date"));

    ok(&test.run(&["db", "backup", "production"]));
    let backups = test.run(&["db", "backups", "production", "--json"]);
    ok(&backups);
    let list: serde_json::Value = serde_json::from_str(&backups.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    let verify = test.run(&["db", "verify", "production", "--all"]);
    ok(&verify);
    assert_eq!(verify.stdout.matches(": ok").count(), 2, "{}", verify.stdout);

    let refused = test.run(&["db", "restore", "production"]);
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let restore = test.run(&["db", "restore", "production", "latest", "--yes"]);
    ok(&restore);
    assert!(restore.stdout.contains("backed up the current state"), "{}", restore.stdout);

    // An edited migration: status says so (exit 1), migrate refuses, repair fixes.
    migration(&test, "0002_seed.sql", "INSERT INTO users (id, email) VALUES (1, 'a@x');\n");
    assert_eq!(test.run(&["db", "status", "production"]).code, 1);
    let refused = test.run(&["db", "migrate", "production"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("checksum mismatch"), "{}", refused.stderr);
    let repair = test.run(&["db", "repair", "production"]);
    ok(&repair);
    assert!(repair.stdout.contains("repaired 0002_seed: checksum"), "{}", repair.stdout);
    ok(&test.run(&["db", "status", "production"]));
}

#[test]
fn usage_errors() {
    let test = project("sqlite:///nonexistent-dir/app.db");
    let unknown = test.run(&["db", "status", "staging"]);
    assert_eq!(unknown.code, 2);
    assert!(unknown.stderr.contains("environment `staging` is not declared"), "{}", unknown.stderr);
    let no_url = Windlass::new();
    no_url.write("windlass.toml", CONFIG);
    migration(&no_url, "0001_a.sql", "SELECT 1;");
    let run = no_url.run(&["db", "status", "production"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("DATABASE_URL"), "{}", run.stderr);
    std::fs::remove_dir_all(test.path().join("migrations")).unwrap();
    let missing = test.run(&["db", "plan", "production"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("migrations directory `migrations` does not exist"), "{}", missing.stderr);
    // A gap is the library's to find.
    migration(&test, "0001_a.sql", "SELECT 1;");
    migration(&test, "0003_c.sql", "SELECT 1;");
    let gap = test.run(&["db", "plan", "production"]);
    assert_eq!(gap.code, 1);
    assert!(gap.stderr.contains("expected 0002, found 0003"), "{}", gap.stderr);
}

#[test]
fn postgres_two_concurrent_migrate_processes_apply_the_schema_once() {
    let db = pg();
    let test = project(&db.url);
    migration(&test, "0003_slow.sql", "SELECT pg_sleep(0.5);\nCREATE TABLE slow (id int);\n");
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| test.run(&["db", "migrate", "production", "--deploy-id", "a"]));
        let b = scope.spawn(|| test.run(&["db", "migrate", "production", "--deploy-id", "b"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    ok(&a);
    ok(&b);
    let applied = a.stdout.matches("applied 000").count() + b.stdout.matches("applied 000").count();
    assert_eq!(applied, 3, "{}\n{}", a.stdout, b.stdout);
    let verify = test.run(&["db", "verify", "production"]);
    ok(&verify);
}

#[test]
fn postgres_a_crash_before_commit_leaves_the_database_as_it_was() {
    let db = pg();
    let test = project(&db.url).env("WINDLASS_FAILPOINTS", "db.migrate.before_commit=abort");
    let crashed = test.run(&["db", "migrate", "production"]);
    assert_ne!(crashed.code, 0);
    assert!(crashed.stderr.contains("failpoint db.migrate.before_commit"), "{}", crashed.stderr);
    let plain = project(&db.url);
    let status = plain.run(&["db", "status", "production"]);
    ok(&status);
    assert!(status.stdout.contains("pending 0001_users"), "{}", status.stdout);
    let migrate = plain.run(&["db", "migrate", "production"]);
    ok(&migrate);
    assert!(migrate.stdout.contains("applied 0002_seed"), "{}", migrate.stdout);
}

#[test]
fn postgres_a_failing_external_command_and_a_password_that_never_shows() {
    let db = pg();
    let test = project(&db.url);
    let config = CONFIG.replace(
        "migrate = { dir = \"migrations\" }",
        "migrate = { command = \"echo connecting to $DATABASE_URL; exit 2\" }",
    );
    test.write("windlass.toml", &config);
    let password_url = db.url.replacen("postgres@", "postgres:topsecretpw@", 1);
    let test = test.env("DATABASE_URL", &password_url);
    let run = test.run(&["db", "migrate", "production"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("migration command failed"), "{}", run.stderr);
    assert!(run.stderr.contains("connecting to postgresql://postgres:***@"), "{}", run.stderr);
    assert!(!run.all_output().contains("topsecretpw"));

    let unreachable = project("postgres://app:topsecretpw@127.0.0.1:1/app");
    let run = unreachable.run(&["db", "status", "production"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("cannot connect to postgres://app:***@127.0.0.1:1/app"), "{}", run.stderr);
    assert!(!run.all_output().contains("topsecretpw"));
}

#[test]
fn postgres_a_restore_killed_under_the_write_stop_is_finished_by_running_it_again() {
    let db = pg();
    let test = project(&db.url);
    ok(&test.run(&["db", "migrate", "production", "--deploy-id", "d1"]));
    let backup = test.run(&["db", "backup", "production"]);
    ok(&backup);
    let name = backup.stdout.split_whitespace().nth(1).unwrap().to_owned();
    migration(&test, "0003_more.sql", "INSERT INTO users (id, email) VALUES (3, 'c@x');\n");
    ok(&test.run(&["db", "migrate", "production", "--no-backup"]));

    // The same project, run with a failpoint armed.
    let config = test.path().join("windlass.toml");
    let crashing =
        Windlass::new().env("DATABASE_URL", &db.url).env("WINDLASS_FAILPOINTS", "db.restore.before_replace=abort");
    let crashed = crashing.run(&["db", "restore", "production", &name, "--yes", "--config", config.to_str().unwrap()]);
    assert_ne!(crashed.code, 0);
    assert!(crashed.stderr.contains("failpoint db.restore.before_replace"), "{}", crashed.stderr);
    // Writes are still stopped: new sessions are read-only.
    let read_only = std::process::Command::new("psql")
        .args(["-X", "-At", &db.url, "-c", "SHOW default_transaction_read_only"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&read_only.stdout).trim(), "on");

    let restore = test.run(&["db", "restore", "production", &name, "--yes"]);
    ok(&restore);
    let status = test.run(&["db", "status", "production"]);
    ok(&status);
    assert!(status.stdout.contains("pending 0003_more"), "{}", status.stdout);
    let read_only = std::process::Command::new("psql")
        .args(["-X", "-At", &db.url, "-c", "SHOW default_transaction_read_only"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&read_only.stdout).trim(), "off");
}

/// The rows of `notes` and whether the column `archived` exists, read with psql.
fn notes(url: &str) -> (String, bool) {
    let psql = |sql: &str| {
        let output = std::process::Command::new("psql").args(["-At", "-X", url, "-c", sql]).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let rows = psql("SELECT string_agg(body, ',' ORDER BY id) FROM notes");
    let column =
        psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'notes' AND column_name = 'archived'");
    (rows, column == "1")
}

/// The database phase of a deploy backs up and migrates; a failing migration fails the deploy
/// with the old version serving; `rollback --restore-database` brings the database back to the
/// state before the deploy that changed it, behind the edge's maintenance mode.
#[tokio::test(flavor = "multi_thread")]
async fn deploys_migrate_and_a_rollback_restores_the_database_taken_before_them() {
    use crate::platform::{Platform, body_json, config};
    let database = TestDatabase::create().await;
    let demo = windlass_testkit::workspace_bin("windlass-demo").display().to_string();
    let with_database = |version: &str| {
        config(&demo, &format!(r#"VERSION = "{version}""#), "1m", "")
            .replace(
                r#"phases = ["validate", "backend", "verification", "traffic"]"#,
                r#"phases = ["validate", "database", "backend", "verification", "traffic"]"#,
            )
            .replace(
                "[edge]\n",
                &format!("[database]\nurl = \"{}\"\nmigrate = {{ dir = \"migrations\" }}\n\n[edge]\n", database.url),
            )
    };
    let platform = Platform::start(&config(&demo, r#"VERSION = "v1""#, "1m", ""));
    let migrations = platform.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    platform.rewrite_config(&with_database("v1"));
    let write = |name: &str, sql: &str| std::fs::write(migrations.join(name), sql).unwrap();
    write(
        "0001_notes.sql",
        "CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\nINSERT INTO notes (body) VALUES ('first');\n",
    );
    let first = platform.deploy(&[]);
    assert_eq!(notes(&database.url), ("first".to_owned(), false));

    write(
        "0002_archive.sql",
        "ALTER TABLE notes ADD COLUMN archived boolean NOT NULL DEFAULT false;\nINSERT INTO notes (body) VALUES ('second');\n",
    );
    platform.rewrite_config(&with_database("v2"));
    let second = platform.deploy(&[]);
    assert_eq!(notes(&database.url), ("first,second".to_owned(), true));
    let shown = platform.json(&["deploy", "show", &second]);
    assert!(shown["steps"].to_string().contains("applied 0002 archive"), "{shown:#}");

    // A failing migration: the database rolls it back itself, the deploy fails, v2 serves on.
    write("0003_broken.sql", "INSERT INTO notes (body) VALUES ('third');\nSELEC 1;\n");
    platform.rewrite_config(&with_database("v3"));
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.all_output().contains("migration 3 (broken) failed"), "{}{}", run.stdout, run.stderr);
    assert_eq!(notes(&database.url), ("first,second".to_owned(), true), "nothing of 0003 stays");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v2");
    std::fs::remove_file(migrations.join("0003_broken.sql")).unwrap();

    // Back to the first deploy, database included: the backup taken before 0002 ran.
    let run = platform.cli(&["rollback", "production", &first, "--restore-database"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(notes(&database.url), ("first".to_owned(), false));
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
    let rollback = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("rollback ").and_then(|r| r.strip_suffix(" started")))
        .unwrap()
        .to_owned();
    let shown = platform.json(&["deploy", "show", &rollback]);
    let output = shown["steps"].to_string();
    assert!(output.contains("restore the database from backup") && output.contains(&second), "{output}");
    assert!(output.contains("the state just before the restore is kept as backup"), "{output}");
    let status = platform.status();
    assert_eq!(status["services"]["api"]["maintenance"], false, "maintenance mode is lifted: {status:#}");
}

/// `backup.schedule` and `backup.verify`: a server that starts with neither job ever run takes a
/// backup and verifies it on its own, and records both.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_scheduled_backups_and_verifies_them() {
    use crate::platform::{Platform, config};
    let database = TestDatabase::create().await;
    let demo = windlass_testkit::workspace_bin("windlass-demo").display().to_string();
    let platform = Platform::start(&config(&demo, r#"VERSION = "v1""#, "1m", ""));
    std::fs::create_dir_all(platform.path().join("migrations")).unwrap();
    std::fs::write(platform.path().join("migrations/0001_t.sql"), "CREATE TABLE t (id int);\n").unwrap();
    let section = format!(
        "[database]\nurl = \"{}\"\nmigrate = {{ dir = \"migrations\" }}\nbackup = {{ schedule = \"every 1h\", verify = \"every 1h\" }}\n\n[edge]\n",
        database.url
    );
    platform.rewrite_config(&config(&demo, r#"VERSION = "v1""#, "1m", "").replace("[edge]\n", &section));
    let mut platform = platform;
    platform.kill_server();
    platform.start_server(&[]);
    let config_path = platform.config.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let run = platform.cli_offline(&["db", "backups", "production", "--config", &config_path, "--json"]);
        assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
        let backups: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let verified =
            backups.as_array().unwrap().iter().any(|b| b["reason"] == "scheduled" && b["verification"]["ok"] == true);
        // The run is recorded as events once its result is in the manifest.
        let events = platform.json(&["events", "production", "--kind", "db."]);
        let kinds: Vec<&str> =
            events["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
        if verified && kinds.contains(&"db.backup") && kinds.contains(&"db.verify") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no verified scheduled backup: {backups:#} {events:#}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn psql(url: &str, sql: &str) -> std::process::Output {
    std::process::Command::new("psql").args(["-X", "-At", "-v", "ON_ERROR_STOP=1", url, "-c", sql]).output().unwrap()
}

fn read_only(url: &str) -> String {
    String::from_utf8_lossy(&psql(url, "SHOW default_transaction_read_only").stdout).trim().to_owned()
}

/// Every file under `dir` whose bytes contain `needle`, and every `.restore.sql`.
fn plaintext_under(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".restore.sql")
                || std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path);
            }
        }
    }
    found
}

/// A restore killed while pg_restore's SQL flows into psql: no plaintext of the data is left on
/// disk (the SQL never was), the replay never committed, and the next `windlass db` command
/// lets writes through again and says what was interrupted and what it did.
#[test]
fn postgres_a_restore_killed_mid_replay_leaves_no_plaintext_and_the_next_command_undoes_the_stop() {
    let db = pg();
    let test = project(&db.url);
    let marker = "plaintext-marker-5f1c0e";
    ok(&test.run(&["db", "migrate", "production", "--deploy-id", "d1"]));
    let insert = format!("INSERT INTO users (id, email) VALUES (3, '{marker}')");
    assert!(psql(&db.url, &insert).status.success());
    let backup = test.run(&["db", "backup", "production"]);
    ok(&backup);
    let name = backup.stdout.split_whitespace().nth(1).unwrap().to_owned();
    assert!(plaintext_under(test.path(), marker).is_empty(), "the archive is compressed: no plaintext yet");
    // Backups are private: the directory 0700, the archive and its manifest 0600.
    let mode = |path: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    };
    let dir = test.path().join(".windlass/backups/production");
    assert_eq!(mode(&dir), 0o700);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    assert!(psql(&db.url, "INSERT INTO users (id, email) VALUES (4, 'late@x')").status.success());

    let crashing = project(&db.url).env("WINDLASS_FAILPOINTS", "db.restore.during_replay=abort");
    let config = test.path().join("windlass.toml");
    let crashed = crashing.run(&["db", "restore", "production", &name, "--yes", "--config", config.to_str().unwrap()]);
    assert_ne!(crashed.code, 0, "{}{}", crashed.stdout, crashed.stderr);
    assert!(crashed.stderr.contains("failpoint db.restore.during_replay"), "{}", crashed.stderr);
    assert_eq!(plaintext_under(test.path(), marker), Vec::<std::path::PathBuf>::new(), "plaintext left on disk");
    assert_eq!(read_only(&db.url), "on", "the kill left the database read-only");

    let status = test.run(&["db", "status", "production"]);
    ok(&status);
    assert!(
        status.stderr.contains(&format!("an interrupted restore was found: backup {name} (an explicit restore)")),
        "{}",
        status.stderr
    );
    assert!(status.stderr.contains("stopped while replacing the database"), "{}", status.stderr);
    assert!(status.stderr.contains("writes are allowed again"), "{}", status.stderr);
    assert_eq!(read_only(&db.url), "off");
    // The replay was one transaction that never committed: the late row is still there.
    let rows = psql(&db.url, "SELECT string_agg(id::text, ',' ORDER BY id) FROM users");
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "1,2,3,4");
    assert!(psql(&db.url, "INSERT INTO users (id, email) VALUES (5, 'after@x')").status.success());
    // Told once: the intent is gone.
    let again = test.run(&["db", "status", "production"]);
    ok(&again);
    assert!(!again.stderr.contains("interrupted restore"), "{}", again.stderr);
}

/// The server is killed while a deploy restores the database after a failed non-transactional
/// migration (under the edge's maintenance mode and read-only sessions). On restart, recovery
/// lifts both and says so, in its notes and as a `db.restore_interrupted` event.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_restore_lifts_maintenance_and_read_only_at_start_up() {
    use crate::platform::{Platform, config};
    let database = TestDatabase::create().await;
    let demo = windlass_testkit::workspace_bin("windlass-demo").display().to_string();
    let with_database = |version: &str| {
        config(&demo, &format!(r#"VERSION = "{version}""#), "1m", "")
            .replace(
                r#"phases = ["validate", "backend", "verification", "traffic"]"#,
                r#"phases = ["validate", "database", "backend", "verification", "traffic"]"#,
            )
            .replace(
                "[edge]\n",
                &format!("[database]\nurl = \"{}\"\nmigrate = {{ dir = \"migrations\" }}\n\n[edge]\n", database.url),
            )
    };
    let mut platform = Platform::start(&config(&demo, r#"VERSION = "v1""#, "1m", ""));
    let migrations = platform.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(migrations.join("0001_notes.sql"), "CREATE TABLE notes (id serial PRIMARY KEY, body text);\n")
        .unwrap();
    platform.rewrite_config(&with_database("v1"));
    platform.deploy(&[]);

    std::fs::write(
        migrations.join("0002_index.sql"),
        "-- windlass:no-transaction\nCREATE INDEX CONCURRENTLY notes_missing ON notes (no_such_column);\n",
    )
    .unwrap();
    platform.rewrite_config(&with_database("v2"));
    platform.kill_server();
    platform.start_server(&[("WINDLASS_FAILPOINTS", "db.restore.before_replace=abort")]);
    let run = platform.cli(&["deploy", "production"]);
    assert_ne!(run.code, 0, "the server died mid-restore: {}{}", run.stdout, run.stderr);
    assert_eq!(read_only(&database.url), "on", "killed under the write stop");
    platform.kill_server();

    let recovered = platform.start_server(&[]);
    let note = recovered.iter().find(|l| l.contains("an interrupted restore was found")).cloned();
    let note = note.unwrap_or_else(|| panic!("recovery said nothing of the restore: {recovered:?}"));
    assert!(note.contains("undoing a failed migration"), "{note}");
    assert!(note.contains("writes are allowed again"), "{note}");
    assert!(note.contains("maintenance mode lifted at the edge for api"), "{note}");
    assert_eq!(read_only(&database.url), "off");
    assert!(psql(&database.url, "INSERT INTO notes (body) VALUES ('after')").status.success());
    let status = platform.status();
    assert_eq!(status["services"]["api"]["maintenance"], false, "{status:#}");
    let events = platform.json(&["events", "production", "--kind", "db."]);
    let event = events["events"].as_array().unwrap().iter().find(|e| e["kind"] == "db.restore_interrupted").cloned();
    let event = event.unwrap_or_else(|| panic!("no db.restore_interrupted event: {events:#}"));
    assert!(event["message"].as_str().unwrap().contains("writes are allowed again"), "{event:#}");
}

const CONCURRENT_INDEX: &str = "-- windlass:no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n";

fn backups(test: &Windlass) -> usize {
    let run = test.run(&["db", "backups", "production", "--json"]);
    ok(&run);
    serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap().as_array().unwrap().len()
}

/// A migration outside a transaction, killed after its statement and before its history row:
/// the next migrate neither runs it again nor restores a backup (which, before, it did on every
/// deploy); it refuses and tells the operator to check and `repair`. `repair --applied`
/// records it, with its reason, and migrations go on.
#[test]
fn postgres_a_migration_killed_before_its_record_is_left_to_the_operator() {
    let db = pg();
    let test = project(&db.url);
    ok(&test.run(&["db", "migrate", "production", "--deploy-id", "d1"]));
    migration(&test, "0003_index.sql", CONCURRENT_INDEX);
    let config = test.path().join("windlass.toml");
    let crashing = project(&db.url).env("WINDLASS_FAILPOINTS", "db.migrate.after_statement=abort");
    let crashed =
        crashing.run(&["db", "migrate", "production", "--deploy-id", "d2", "--config", config.to_str().unwrap()]);
    assert_ne!(crashed.code, 0);
    assert!(crashed.stderr.contains("failpoint db.migrate.after_statement"), "{}", crashed.stderr);
    let index = || {
        String::from_utf8_lossy(
            &psql(&db.url, "SELECT count(*) FROM pg_indexes WHERE indexname = 'users_email'").stdout,
        )
        .trim()
        .to_owned()
    };
    assert_eq!(index(), "1", "the statement took effect before the kill");
    assert!(psql(&db.url, "INSERT INTO users (id, email) VALUES (9, 'late@x')").status.success());
    let backups_before = backups(&test);

    for _ in 0..2 {
        let refused = test.run(&["db", "migrate", "production", "--deploy-id", "d3"]);
        assert_eq!(refused.code, 1, "{}{}", refused.stdout, refused.stderr);
        assert!(
            refused.stderr.contains("migration 3 (0003_index, outside a transaction) was started"),
            "{}",
            refused.stderr
        );
        assert!(refused.stderr.contains("for deploy d2"), "{}", refused.stderr);
        assert!(refused.stderr.contains("windlass db repair production --applied"), "{}", refused.stderr);
        assert!(!refused.stderr.contains("restored"), "{}", refused.stderr);
    }
    assert_eq!(backups(&test), backups_before, "nothing was backed up or restored");
    let rows = psql(&db.url, "SELECT count(*) FROM users");
    assert_eq!(String::from_utf8_lossy(&rows.stdout).trim(), "3", "the late row is still there");
    let status = test.run(&["db", "status", "production"]);
    assert_eq!(status.code, 1);
    assert!(status.stdout.contains("INTERRUPTED 0003_index"), "{}", status.stdout);

    let no_reason = test.run(&["db", "repair", "production", "--applied", "3"]);
    assert_eq!(no_reason.code, 2, "{}", no_reason.stderr);
    let wrong = test.run(&["db", "repair", "production", "--applied", "2", "--reason", "x"]);
    assert_eq!(wrong.code, 1);
    assert!(wrong.stderr.contains("no interrupted migration has version 2 (interrupted: 3)"), "{}", wrong.stderr);
    let repair = test.run(&["db", "repair", "production", "--applied", "3", "--reason", "the index is valid"]);
    ok(&repair);
    assert!(
        repair.stdout.contains("repaired 0003_index: recorded as applied (reason: the index is valid)"),
        "{}",
        repair.stdout
    );
    let recorded = psql(&db.url, "SELECT action || ': ' || reason FROM _windlass_migration_repairs");
    assert_eq!(String::from_utf8_lossy(&recorded.stdout).trim(), "applied: the index is valid");
    ok(&test.run(&["db", "status", "production"]));
    let migrate = test.run(&["db", "migrate", "production"]);
    ok(&migrate);
    assert!(migrate.stdout.contains("up to date"), "{}", migrate.stdout);
    assert_eq!(index(), "1");
}

/// The same on SQLite, decided the other way: `repair --clear` forgets the start and the next
/// migrate runs the statement again.
#[test]
fn sqlite_an_interrupted_migration_cleared_runs_again() {
    let tmp = windlass_testkit::tempdir();
    let url = format!("sqlite://{}", tmp.path().join("app.db").display());
    let test = project(&url);
    ok(&test.run(&["db", "migrate", "production"]));
    migration(&test, "0003_audit.sql", "-- windlass:no-transaction\nCREATE TABLE IF NOT EXISTS audit (id integer);\n");
    let config = test.path().join("windlass.toml");
    let crashing = project(&url).env("WINDLASS_FAILPOINTS", "db.migrate.after_statement=abort");
    assert_ne!(crashing.run(&["db", "migrate", "production", "--config", config.to_str().unwrap()]).code, 0);
    let refused = test.run(&["db", "migrate", "production"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("windlass db repair production --applied"), "{}", refused.stderr);
    let clear = test.run(&["db", "repair", "production", "--clear", "3", "--reason", "the statement is idempotent"]);
    ok(&clear);
    assert!(clear.stdout.contains("runs again on the next migrate"), "{}", clear.stdout);
    let migrate = test.run(&["db", "migrate", "production"]);
    ok(&migrate);
    assert!(
        migrate.stdout.contains("applied 0003_audit in") && migrate.stdout.contains("(no transaction)"),
        "{}",
        migrate.stdout
    );
}

/// `[database] command_timeout`: a pg_dump that hangs is killed with its process group once the
/// configured time is up; the backup fails saying so and leaves no partial file.
#[test]
fn postgres_a_hanging_pg_dump_is_killed_at_the_configured_timeout() {
    use std::os::unix::fs::PermissionsExt;
    let db = pg();
    let test = project(&db.url);
    ok(&test.run(&["db", "migrate", "production", "--no-backup"]));
    test.write("windlass.toml", &CONFIG.replace("[database]\n", "[database]\ncommand_timeout = \"1s\"\n"));
    let bin = test.path().join("slow-bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pid_file = test.path().join("sleeper.pid");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 99.0'; exit 0; fi\n\
         sleep 300 &\necho $! > {}\nwait\n",
        pid_file.display()
    );
    std::fs::write(bin.join("pg_dump"), script).unwrap();
    std::fs::set_permissions(bin.join("pg_dump"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = test.run(&["db", "backup", "production", "--pg-bin-dir", bin.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("pg_dump did not finish within 1s ([database] command_timeout)"), "{}", run.stderr);
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or_default().split_whitespace().next().unwrap_or("gone").to_owned();
    assert!(state == "gone" || state == "Z", "pg_dump's child still runs: {state}");
    let dir = test.path().join(".windlass/backups/production");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "nothing is left of the failed backup: {left:?}");
}

/// SQLite: a restore killed after its pre-restore backup; the next command says what was
/// interrupted and how far it got, and the restore can run again.
#[test]
fn sqlite_a_killed_restore_is_reported_by_the_next_command() {
    let tmp = windlass_testkit::tempdir();
    let url = format!("sqlite://{}", tmp.path().join("app.db").display());
    let test = project(&url);
    ok(&test.run(&["db", "migrate", "production"]));
    let config = test.path().join("windlass.toml");
    let crashing = project(&url).env("WINDLASS_FAILPOINTS", "db.restore.before_replace=abort");
    let crashed =
        crashing.run(&["db", "restore", "production", "latest", "--yes", "--config", config.to_str().unwrap()]);
    assert_ne!(crashed.code, 0);
    // A kill under an older version left the SQL of its restore behind: removed, and said.
    let leftover = test.path().join(".windlass/backups/production/.20260101T000000Z-manual.restore.sql");
    std::fs::write(&leftover, "INSERT INTO users VALUES (1, 'a@x');").unwrap();
    let backups = test.run(&["db", "backups", "production", "--json"]);
    ok(&backups);
    assert!(!leftover.exists());
    assert!(backups.stderr.contains("the plaintext SQL of a restore that was interrupted"), "{}", backups.stderr);
    assert!(backups.stderr.contains("an interrupted restore was found"), "{}", backups.stderr);
    assert!(backups.stderr.contains("stopped while replacing the database"), "{}", backups.stderr);
    assert!(backups.stderr.contains("The state just before the restore is backup"), "{}", backups.stderr);
    serde_json::from_str::<serde_json::Value>(&backups.stdout).expect("stdout stays JSON");
    let again = test.run(&["db", "backups", "production"]);
    assert!(!again.stderr.contains("interrupted restore"), "told once: {}", again.stderr);
    ok(&test.run(&["db", "restore", "production", "latest", "--yes"]));
}

/// Through deploys: the server is killed between a non-transactional migration's statement and
/// its record; after the restart, the next deploy fails at its database phase asking the operator
/// to `repair` (no second run of the statement, no restore), and after `repair --applied` it
/// deploys.
#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_after_a_migration_killed_before_its_record_asks_for_repair() {
    use crate::platform::{Platform, config};
    let database = TestDatabase::create().await;
    let demo = windlass_testkit::workspace_bin("windlass-demo").display().to_string();
    let with_database = |version: &str| {
        config(&demo, &format!(r#"VERSION = "{version}""#), "1m", "")
            .replace(
                r#"phases = ["validate", "backend", "verification", "traffic"]"#,
                r#"phases = ["validate", "database", "backend", "verification", "traffic"]"#,
            )
            .replace(
                "[edge]\n",
                &format!("[database]\nurl = \"{}\"\nmigrate = {{ dir = \"migrations\" }}\n\n[edge]\n", database.url),
            )
    };
    let mut platform = Platform::start(&config(&demo, r#"VERSION = "v1""#, "1m", ""));
    let migrations = platform.path().join("migrations");
    std::fs::create_dir_all(&migrations).unwrap();
    std::fs::write(migrations.join("0001_users.sql"), "CREATE TABLE users (id int, email text);\n").unwrap();
    std::fs::write(migrations.join("0002_index.sql"), CONCURRENT_INDEX).unwrap();
    platform.rewrite_config(&with_database("v1"));
    platform.kill_server();
    platform.start_server(&[("WINDLASS_FAILPOINTS", "db.migrate.after_statement=abort")]);
    let run = platform.cli(&["deploy", "production"]);
    assert_ne!(run.code, 0, "the server died mid-migration: {}{}", run.stdout, run.stderr);
    platform.kill_server();
    platform.start_server(&[]);

    let config_path = platform.config.display().to_string();
    let backups = || {
        let run = platform.cli_offline(&["db", "backups", "production", "--config", &config_path, "--json"]);
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap().as_array().unwrap().len()
    };
    let before = backups();
    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let output = run.all_output();
    assert!(output.contains("migration 2 (0002_index, outside a transaction) was started"), "{output}");
    assert!(output.contains("windlass db repair production --applied"), "{output}");
    assert!(!output.contains("restored"), "{output}");
    assert_eq!(backups(), before, "no backup taken, none restored");

    let repair = platform.cli_offline(&[
        "db",
        "repair",
        "production",
        "--config",
        &config_path,
        "--applied",
        "2",
        "--reason",
        "the index exists and is valid",
    ]);
    assert_eq!(repair.code, 0, "{}{}", repair.stdout, repair.stderr);
    platform.deploy(&[]);
}
