//! How the CLI reads the server and prints results: [`call`] reads an answer as its
//! `windlass-api` type (never by looking fields up in untyped JSON), [`print_json`] is what
//! `--output json` prints, and the commands whose results do not come from the server (tokens,
//! read from the store directly) get a small serializable view here, so their JSON never depends
//! on a library type's layout and never carries a secret.

use anyhow::Context as _;
use jiff::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Client;

use crate::table::Table;
use crate::{Outcome, OutputFormat};

/// Prints `value` as `--output json` does: pretty-printed.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<Outcome> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(Outcome::Ok)
}

/// A token as `token list` shows it: whose it is, when it was created, expires, was last used
/// and was revoked.
pub struct TokenRow {
    pub name: String,
    pub owner: String,
    pub robot: bool,
    pub admin: bool,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Expired by the store's clock.
    pub expired: bool,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}

/// `token list`: names, owners and dates, never the tokens themselves (only their hashes are
/// stored).
pub fn tokens(tokens: &[TokenRow], output: OutputFormat) -> anyhow::Result<Outcome> {
    #[derive(Serialize)]
    struct Listed<'a> {
        name: &'a str,
        owner: &'a str,
        /// `person` or `robot`.
        kind: &'a str,
        admin: bool,
        created_at: String,
        expires_at: Option<String>,
        expired: bool,
        last_used_at: Option<String>,
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
                owner: &t.owner,
                kind: if t.robot { "robot" } else { "person" },
                admin: t.admin,
                created_at: t.created_at.to_string(),
                expires_at: t.expires_at.map(|at| at.to_string()),
                expired: t.expired,
                last_used_at: t.last_used_at.map(|at| at.to_string()),
                revoked_at: t.revoked_at.map(|at| at.to_string()),
            })
            .collect();
        return print_json(&Tokens { tokens });
    }
    let mut table = Table::new();
    for token in tokens {
        let owner = match (token.robot, token.admin) {
            (true, _) => format!("robot {}", token.owner),
            (false, true) => format!("admin {}", token.owner),
            (false, false) => format!("person {}", token.owner),
        };
        let expires = match (token.expires_at, token.expired) {
            (Some(at), true) => format!("expired {at}"),
            (Some(at), false) => format!("expires {at}"),
            (None, _) => "never expires".to_owned(),
        };
        let used = token.last_used_at.map_or_else(|| "never used".to_owned(), |at| format!("used {at}"));
        let revoked = token.revoked_at.map(|at| format!("revoked {at}")).unwrap_or_default();
        table.row([token.name.clone(), owner, format!("created {}", token.created_at), expires, used, revoked]);
    }
    table.print();
    Ok(Outcome::Ok)
}

/// One call to the server, its answer read as the API's type `T` (the `windlass-api` crate the
/// server answers from), so a field the server renamed is an error here, not an empty column.
pub async fn call<T: DeserializeOwned>(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&impl Serialize>,
) -> anyhow::Result<T> {
    let body = body.map(serde_json::to_value).transpose()?;
    let answer = client.call(method, path, body.as_ref()).await?;
    serde_json::from_value(answer)
        .with_context(|| format!("the server's answer to {method} /api/v1{path} is not what this windlass understands"))
}

/// [`call`] without a body.
pub async fn get<T: DeserializeOwned>(client: &Client, path: &str) -> anyhow::Result<T> {
    call(client, "GET", path, None::<&()>).await
}
