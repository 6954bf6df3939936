//! Versioned migration files: `0001_users.sql`, optional `0001_users.down.sql`.
//!
//! A file whose first line is `-- windlass:no-transaction` runs outside a transaction (for
//! `CREATE INDEX CONCURRENTLY`); it must hold exactly one statement.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The marker (first line) of a migration that runs outside a transaction.
pub const NO_TRANSACTION: &str = "-- windlass:no-transaction";

#[derive(Debug, Clone)]
pub struct Migration {
    pub version: u64,
    pub name: String,
    pub path: PathBuf,
    pub sql: String,
    /// sha256 of the file's bytes, hex.
    pub checksum: String,
    pub transactional: bool,
    pub down: Option<PathBuf>,
}

pub fn checksum(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads and checks a migrations directory: every `.sql` file must be `NNNN_name.sql` or
/// `NNNN_name.down.sql`, versions unique and consecutive from 1.
pub fn load(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| Error::Migrations(format!("cannot read the directory {}: {err}", dir.display())))?;
    let mut ups: BTreeMap<u64, Migration> = BTreeMap::new();
    let mut downs: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| Error::Migrations(format!("{}: {err}", dir.display())))?;
        let Some(file) = entry.file_name().to_str().map(str::to_owned) else { continue };
        if file.ends_with(".sql") {
            names.push(file);
        }
    }
    names.sort();
    for file in names {
        let path = dir.join(&file);
        let (stem, down) = match file.strip_suffix(".down.sql") {
            Some(stem) => (stem, true),
            None => (file.trim_end_matches(".sql"), false),
        };
        let digits: String = stem.chars().take_while(char::is_ascii_digit).collect();
        let rest = &stem[digits.len()..];
        let (Ok(version), Some(name)) = (digits.parse::<u64>(), rest.strip_prefix('_')) else {
            return Err(Error::Migrations(format!(
                "{}: a migration file is named NNNN_name.sql (or NNNN_name.down.sql)",
                path.display()
            )));
        };
        if down {
            if downs.insert(version, path.clone()).is_some() {
                return Err(Error::Migrations(format!("two down migrations have version {version}")));
            }
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|err| Error::Migrations(format!("{}: {err}", path.display())))?;
        let sql = String::from_utf8(bytes.clone())
            .map_err(|_| Error::Migrations(format!("{}: not UTF-8 text", path.display())))?;
        let transactional = sql.lines().next().map(str::trim) != Some(NO_TRANSACTION);
        if let Some(statement) = split_statements(&sql).into_iter().find(|s| controls_transaction(s)) {
            return Err(Error::Migrations(format!(
                "{}: `{}` controls the transaction; Windlass runs each file in one (mark a file that must run \
                 outside a transaction with `{NO_TRANSACTION}`)",
                path.display(),
                statement.lines().last().unwrap_or_default().trim()
            )));
        }
        if !transactional {
            let count = split_statements(&sql).len();
            if count != 1 {
                return Err(Error::Migrations(format!(
                    "{} is marked `{NO_TRANSACTION}` and must hold exactly one statement (it holds {count})",
                    path.display()
                )));
            }
        }
        let migration = Migration {
            version,
            name: name.to_owned(),
            path: path.clone(),
            sql,
            checksum: checksum(&bytes),
            transactional,
            down: None,
        };
        if let Some(other) = ups.insert(version, migration) {
            return Err(Error::Migrations(format!(
                "duplicate version {version}: {} and {}",
                other.path.display(),
                path.display()
            )));
        }
    }
    for (version, path) in downs {
        match ups.get_mut(&version) {
            Some(up) => up.down = Some(path),
            None => {
                return Err(Error::Migrations(format!("{} has no matching up migration", path.display())));
            }
        }
    }
    for (expected, version) in (1u64..).zip(ups.keys()) {
        if *version != expected {
            return Err(Error::Migrations(format!(
                "a gap in the versions: expected {expected:04}, found {version:04} (versions run 1, 2, 3, ... without gaps)"
            )));
        }
    }
    Ok(ups.into_values().collect())
}

/// `BEGIN`, `COMMIT`, `ROLLBACK`, `START TRANSACTION`, `END` (comments before it skipped).
fn controls_transaction(statement: &str) -> bool {
    let code: String = statement
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("--") && !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let mut words = code.split_whitespace().map(str::to_ascii_uppercase);
    match words.next().as_deref() {
        Some("BEGIN" | "COMMIT" | "ROLLBACK" | "END" | "ABORT") => true,
        Some("START") => words.next().as_deref() == Some("TRANSACTION"),
        _ => false,
    }
}

/// Splits SQL into its statements, minding quotes, dollar quotes and comments; empty
/// statements and comment-only pieces are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut meaningful = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '-' && next == Some('-') {
            while i < chars.len() && chars[i] != '\n' {
                current.push(chars[i]);
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                current.push(chars[i]);
                i += 1;
            }
            current.push_str("*/");
            i += 2;
            continue;
        }
        if c == '\'' || c == '"' {
            meaningful = true;
            current.push(c);
            i += 1;
            while i < chars.len() {
                current.push(chars[i]);
                if chars[i] == c {
                    i += 1;
                    break;
                }
                i += 1;
            }
            continue;
        }
        if c == '$' {
            let tag_end = chars[i + 1..].iter().position(|&ch| ch == '$').map(|p| i + 1 + p);
            if let Some(end) = tag_end
                && chars[i + 1..end].iter().all(|ch| ch.is_alphanumeric() || *ch == '_')
            {
                let tag: String = chars[i..=end].iter().collect();
                meaningful = true;
                current.push_str(&tag);
                i = end + 1;
                let rest: String = chars[i..].iter().collect();
                let close = rest.find(&tag).map_or(rest.len(), |p| p + tag.len());
                current.push_str(&rest[..close]);
                i += rest[..close].chars().count();
                continue;
            }
        }
        if c == ';' {
            if meaningful {
                statements.push(current.trim().to_owned());
            }
            current.clear();
            meaningful = false;
            i += 1;
            continue;
        }
        if !c.is_whitespace() {
            meaningful = true;
        }
        current.push(c);
        i += 1;
    }
    if meaningful {
        statements.push(current.trim().to_owned());
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements() {
        let sql = "-- a; comment\nCREATE TABLE t (a text default 'x;y');\n/* ; */\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\n";
        assert_eq!(split_statements(sql).len(), 2);
        assert_eq!(split_statements("-- windlass:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);").len(), 1);
        assert_eq!(split_statements("-- only a comment\n").len(), 0);
    }

    #[test]
    fn transaction_control_is_recognised() {
        assert!(controls_transaction("-- x\nCOMMIT"));
        assert!(controls_transaction("begin"));
        assert!(controls_transaction("start transaction isolation level serializable"));
        assert!(!controls_transaction("CREATE FUNCTION f() RETURNS void AS $$ BEGIN END $$ LANGUAGE plpgsql"));
        assert!(!controls_transaction("START_SOMETHING"));
    }
}
