//! The config as a user meets it: the example platform, the errors bad input produces (their
//! wording snapshotted with insta, so changes are visible in review), and the documentation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod docs;
mod env_values;
mod example;

use windlass_config::{Parsed, Source, parse};

/// Parses `text` as if it were `windlass.toml` in the current directory.
pub fn parse_text(text: &str) -> Parsed {
    parse(&Source::new("windlass.toml", text))
}

/// Every problem, rendered as the user sees it.
pub fn rendered(parsed: &Parsed) -> String {
    parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
}

/// The smallest valid config; tests append to it.
pub const MINIMAL: &str = r#"
[project]
name = "shop"

[environments.production]

[services.api]
run = "api-server"
"#;
