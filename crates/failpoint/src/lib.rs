//! Named failpoints: places in the code where a crash test can make the process stop exactly.
//!
//! Crash tests never kill a process "after a sleep": they set
//! `WINDLASS_FAILPOINTS=store.after_write=abort` (several separated by `;`) and the process aborts
//! the moment it reaches that point, as `kill -9` would, with no destructors and no flushing.
//!
//! Actions:
//! - `abort`: `std::process::abort()` (SIGABRT; nothing is flushed or cleaned up).
//! - `exit(N)`: exit at once with code N, skipping destructors.
//! - `panic`: panic with the failpoint's name (unwinds; for code that must survive a panic).
//! - `off`: no effect (lets a test switch one point off in a list).
//!
//! A failpoint costs one atomic load when `WINDLASS_FAILPOINTS` is unset. The variable is read
//! once per process; a malformed value is reported on stderr at the first failpoint and ignored,
//! so a typo in a test's environment can never silently crash a production process.

//!
//! [`private`] holds the private-file helpers (0700 directories, 0600 files written atomically)
//! that every crate writing under the state directory uses.

use std::collections::HashMap;
use std::sync::OnceLock;

pub mod private;

/// The environment variable that arms failpoints.
pub const ENV_VAR: &str = "WINDLASS_FAILPOINTS";

/// What to do when an armed failpoint is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Abort,
    Exit(i32),
    Panic,
    Off,
}

fn armed() -> &'static HashMap<String, Action> {
    static ARMED: OnceLock<HashMap<String, Action>> = OnceLock::new();
    ARMED.get_or_init(|| match std::env::var(ENV_VAR) {
        Ok(spec) => parse(&spec).unwrap_or_else(|err| {
            eprintln!("windlass: ignoring {ENV_VAR}: {err}");
            HashMap::new()
        }),
        Err(_) => HashMap::new(),
    })
}

/// Why a `WINDLASS_FAILPOINTS` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("`{entry}` is not of the form name=action")]
    NotNameAction { entry: String },
    #[error("unknown action `{action}` for `{name}` (expected abort, exit(N), panic or off)")]
    UnknownAction { name: String, action: String },
}

/// Parses `name=action;name=action`.
pub fn parse(spec: &str) -> Result<HashMap<String, Action>, SpecError> {
    let mut points = HashMap::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, action) =
            entry.split_once('=').ok_or_else(|| SpecError::NotNameAction { entry: entry.to_owned() })?;
        let action = parse_action(action.trim())
            .ok_or_else(|| SpecError::UnknownAction { name: name.to_owned(), action: action.to_owned() })?;
        points.insert(name.trim().to_owned(), action);
    }
    Ok(points)
}

fn parse_action(text: &str) -> Option<Action> {
    match text {
        "abort" => Some(Action::Abort),
        "panic" => Some(Action::Panic),
        "off" => Some(Action::Off),
        _ => {
            let code = text.strip_prefix("exit(")?.strip_suffix(')')?;
            code.trim().parse().ok().map(Action::Exit)
        }
    }
}

/// Reaches the failpoint `name`: does nothing unless a test armed it.
pub fn hit(name: &str) {
    let Some(action) = armed().get(name) else {
        return;
    };
    match *action {
        Action::Off => {}
        Action::Abort => {
            eprintln!("windlass: failpoint {name}: abort");
            std::process::abort();
        }
        Action::Exit(code) => {
            eprintln!("windlass: failpoint {name}: exit({code})");
            std::process::exit(code);
        }
        Action::Panic => panic!("failpoint {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_of_points() {
        let points = parse("store.after_write=abort; deploy.step=exit(3);x=off").unwrap_or_default();
        assert_eq!(points.get("store.after_write"), Some(&Action::Abort));
        assert_eq!(points.get("deploy.step"), Some(&Action::Exit(3)));
        assert_eq!(points.get("x"), Some(&Action::Off));
    }

    #[test]
    fn rejects_unknown_actions_and_missing_equals() {
        assert!(parse("a=explode").unwrap_err().to_string().contains("unknown action"));
        assert!(parse("just-a-name").unwrap_err().to_string().contains("name=action"));
    }

    #[test]
    fn unarmed_points_do_nothing() {
        hit("never.armed.in.this.process");
    }
}
