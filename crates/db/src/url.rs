//! Database URLs: which engine, the password kept out of every message and every child's
//! command line.

use std::path::PathBuf;

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A libpq URL (`postgres://` or `postgresql://`).
    Postgres { url: String },
    /// A SQLite file.
    Sqlite { path: PathBuf },
}

impl Target {
    pub fn parse(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres { url: url.to_owned() });
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            let path = rest.split('?').next().unwrap_or_default();
            if path.is_empty() || path == ":memory:" {
                return Err(Error::Config("a SQLite URL must name a file (sqlite:///path/to/app.db)".into()));
            }
            return Ok(Target::Sqlite { path: PathBuf::from(path) });
        }
        Err(Error::Config(format!(
            "the database URL `{}` is neither postgres:// nor sqlite:",
            redact_url(url).split("://").next().unwrap_or("?")
        )))
    }
}

/// The span of the password in a `scheme://user:password@host` URL.
fn password_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let authority_end = url[start..].find(['/', '?']).map_or(url.len(), |i| start + i);
    let at = url[start..authority_end].rfind('@')? + start;
    let colon = url[start..at].find(':')? + start;
    Some((colon + 1, at))
}

/// The URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match password_span(url) {
        Some((from, to)) => format!("{}***{}", &url[..from], &url[to..]),
        None => url.to_owned(),
    }
}

/// The URL without its password, and the password (for `PGPASSWORD`).
pub fn split_password(url: &str) -> (String, Option<String>) {
    match password_span(url) {
        Some((from, to)) => (format!("{}{}", &url[..from - 1], &url[to..]), Some(url[from..to].to_owned())),
        None => (url.to_owned(), None),
    }
}

/// `text` with the URL's password (raw and percent-decoded forms) replaced by `***`.
pub fn redact_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact_url(url));
    if let (_, Some(password)) = split_password(url)
        && password.len() >= 3
    {
        out = out.replace(&password, "***");
        let decoded = percent_decode(&password);
        if decoded != password && decoded.len() >= 3 {
            out = out.replace(&decoded, "***");
        }
    }
    out
}

/// `%XX` escapes decoded (a URL's password as the server sees it).
pub(crate) use windlass_http::percent::decode as percent_decode;

/// The URL with its database name replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (before_query, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = before_query.find("://").map_or(0, |i| i + 3);
    let base = match before_query[scheme_end..].find('/') {
        Some(slash) => &before_query[..scheme_end + slash],
        None => before_query,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let url = "postgres://app:s%40cret@db.example:5432/app?sslmode=require";
        assert_eq!(redact_url(url), "postgres://app:***@db.example:5432/app?sslmode=require");
        assert_eq!(
            split_password(url),
            ("postgres://app@db.example:5432/app?sslmode=require".into(), Some("s%40cret".into()))
        );
        assert_eq!(redact_in("failed: s@cret and s%40cret", url), "failed: *** and ***");
        assert_eq!(redact_url("postgres://app@h/db"), "postgres://app@h/db");
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse("sqlite:///tmp/a.db").ok(), Some(Target::Sqlite { path: "/tmp/a.db".into() }));
        assert_eq!(Target::parse("sqlite:app.db?mode=rwc").ok(), Some(Target::Sqlite { path: "app.db".into() }));
        assert!(Target::parse("mysql://x").is_err());
        assert_eq!(with_database("postgres://u:p@h/db?x=1", "s"), "postgres://u:p@h/s?x=1");
    }
}
