//! What `--output json` prints, for the commands whose results do not come from the server's
//! API (tokens read from the store directly): a small serializable view of each, so JSON output
//! never depends on a library type's internal layout and never carries a secret.

use jiff::Timestamp;
use serde::Serialize;

use crate::table::Table;
use crate::{Outcome, OutputFormat};

/// Prints `value` as `--output json` does: pretty-printed.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<Outcome> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(Outcome::Ok)
}

/// A token as `token list` shows it: its name, when it was created and revoked.
pub struct TokenRow {
    pub name: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// `token list`: names and dates, never the tokens themselves (only their hashes are stored).
pub fn tokens(tokens: &[TokenRow], output: OutputFormat) -> anyhow::Result<Outcome> {
    #[derive(Serialize)]
    struct Listed<'a> {
        name: &'a str,
        created_at: String,
        revoked_at: Option<String>,
    }
    #[derive(Serialize)]
    struct Tokens<'a> {
        tokens: Vec<Listed<'a>>,
    }
    if output == OutputFormat::Json {
        let tokens = tokens
            .iter()
            .map(|t| Listed {
                name: &t.name,
                created_at: t.created_at.to_string(),
                revoked_at: t.revoked_at.map(|at| at.to_string()),
            })
            .collect();
        return print_json(&Tokens { tokens });
    }
    let mut table = Table::new();
    for token in tokens {
        let revoked = token.revoked_at.map(|at| format!("revoked {at}")).unwrap_or_default();
        table.row([token.name.clone(), format!("created {}", token.created_at), revoked]);
    }
    table.print();
    Ok(Outcome::Ok)
}
