//! `[database]`: the URL, migrations, the command timeout and the backup policy with its
//! schedules.
//!
//! It must not connect to a database; `windlass-db` does.

use crate::decode::{At, Cx, Decode, Spanned, Table, Value};
use crate::schedule::Schedule;
use crate::template::{CommandTemplate, Setting};
use crate::units::Duration;

#[derive(Debug, Clone)]
pub enum Migrate {
    /// Built-in versioned SQL migrations in this directory (relative to the config file).
    Dir(Spanned<String>),
    /// An external tool (`alembic upgrade head`).
    Command(CommandTemplate),
}

#[derive(Debug, Clone)]
pub struct Database {
    pub url: Setting,
    pub migrate: Option<Migrate>,
    pub backup: Backup,
    /// How long `pg_dump`, `pg_restore`, `psql` or a `migrate` command may run before its
    /// whole process group is killed.
    pub command_timeout: Duration,
}

/// `[database] command_timeout` when not set: one hour.
pub const DEFAULT_DATABASE_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Backup {
    pub before_migrate: bool,
    pub keep: u32,
    pub max_age: Duration,
    pub dir: Option<String>,
    /// When the server takes a scheduled backup (`daily 03:00` UTC, `every 6h`).
    pub schedule: Option<Schedule>,
    /// When the server verifies the newest backup.
    pub verify: Option<Schedule>,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            before_migrate: true,
            keep: 30,
            max_age: Duration::from_secs(30 * 86_400),
            dir: None,
            schedule: None,
            verify: None,
        }
    }
}

impl Decode for Database {
    fn expected() -> String {
        "a table with `url`".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let url = t.required(cx, "url");
        let migrate = t.get(cx, "migrate").and_then(|v| {
            let at = at.key("migrate");
            let mut m = Table::open(cx, v, &at)?;
            let dir = m.optional(cx, "dir");
            let command = m.optional(cx, "command");
            m.finish(cx);
            match (dir, command) {
                (Some(dir), None) => Some(Migrate::Dir(dir)),
                (None, Some(command)) => Some(Migrate::Command(command)),
                _ => {
                    cx.invalid(
                        v,
                        &at,
                        "either { dir = \"migrations\" } or { command = \"...\" }",
                        "give exactly one of `dir` and `command`",
                    );
                    None
                }
            }
        });
        let backup = t
            .get(cx, "backup")
            .and_then(|v| {
                let at = at.key("backup");
                let mut b = Table::open(cx, v, &at)?;
                let defaults = Backup::default();
                let before_migrate = b.or(cx, "before_migrate", defaults.before_migrate);
                let keep = b.or(cx, "keep", defaults.keep);
                let max_age = b.or(cx, "max_age", defaults.max_age);
                let dir = b.optional(cx, "dir");
                // Parsed here once; the server's scheduler works with the `Schedule`, never the text.
                let mut schedule = |cx: &mut Cx, key: &'static str| {
                    let text = b.optional::<Spanned<String>>(cx, key)?;
                    match Schedule::parse(&text.value) {
                        Ok(schedule) => Some(schedule),
                        Err(_) => {
                            cx.error(text.span.clone(), format!("`{}` is not a schedule", text.value)).help =
                                Some("write \"daily 03:00\" (UTC) or \"every 6h\" (m, h or d)".into());
                            None
                        }
                    }
                };
                let (schedule, verify) = (schedule(cx, "schedule"), schedule(cx, "verify"));
                let backup = Backup { before_migrate, keep, max_age, dir, schedule, verify };
                b.finish(cx);
                Some(backup)
            })
            .unwrap_or_default();
        let command_timeout = match t.optional::<Spanned<Duration>>(cx, "command_timeout") {
            Some(timeout) if timeout.value.as_std().is_zero() => {
                cx.error(timeout.span.clone(), "`command_timeout` must be more than zero").help =
                    Some("how long pg_dump, pg_restore, psql or a migrate command may run, such as \"1h\"".into());
                DEFAULT_DATABASE_COMMAND_TIMEOUT
            }
            Some(timeout) => timeout.value,
            None => DEFAULT_DATABASE_COMMAND_TIMEOUT,
        };
        t.finish(cx);
        Some(Database { url: url?, migrate, backup, command_timeout })
    }
}

#[cfg(test)]
mod backup_schedule_tests {
    use crate::schedule::Schedule;
    use crate::{Source, parse};

    const BASE: &str = "[project]\nname = \"shop\"\n[environments.production]\n[services.api]\nrun = \"api\"\n";

    fn database(backup: &str) -> crate::Parsed {
        parse(&Source::new(
            "windlass.toml",
            format!("{BASE}[database]\nurl = \"sqlite:///tmp/a.db\"\nbackup = {backup}\n"),
        ))
    }

    #[test]
    fn database_command_timeout_defaults_to_an_hour_and_refuses_zero() {
        let with = |extra: &str| {
            parse(&Source::new("windlass.toml", format!("{BASE}[database]\nurl = \"sqlite:///tmp/a.db\"\n{extra}")))
        };
        let default = with("").config.database.map(|d| d.command_timeout.as_std());
        assert_eq!(default, Some(std::time::Duration::from_secs(3600)));
        let set = with("command_timeout = \"90s\"\n").config.database.map(|d| d.command_timeout.as_std());
        assert_eq!(set, Some(std::time::Duration::from_secs(90)));
        let zero = with("command_timeout = \"0s\"\n");
        assert!(zero.has_errors());
        assert!(
            zero.diagnostics.iter().any(|d| d.message.contains("must be more than zero")),
            "{:?}",
            zero.diagnostics
        );
    }

    #[test]
    fn backup_schedules_are_read_and_checked() {
        let parsed = database("{ schedule = \"daily 03:00\", verify = \"every 6h\", keep = 7 }");
        assert!(!parsed.has_errors());
        let backup = parsed.config.database.map(|d| d.backup).unwrap_or_default();
        assert_eq!(backup.schedule, Some(Schedule::Daily { minute_of_day: 180 }));
        assert_eq!(backup.verify, Some(Schedule::Every { seconds: 6 * 3600 }));
        assert_eq!(backup.keep, 7);

        let parsed = database("{ schedule = \"nightly\" }");
        assert!(parsed.has_errors());
        let text: Vec<String> = parsed.diagnostics.iter().map(|d| d.render()).collect();
        assert!(text.join("\n").contains("`nightly` is not a schedule"), "{text:?}");
        assert!(database("{ verify = \"daily 24:00\" }").has_errors());
    }
}
