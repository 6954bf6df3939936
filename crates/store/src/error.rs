use crate::model::LeaseInfo;

/// What can go wrong when reading or writing the control plane's state.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {location}: {source}")]
    Open { location: String, source: sqlx::Error },
    #[error("state store: {operation} failed: {source}")]
    Query { operation: &'static str, source: sqlx::Error },
    #[error(
        "the state store at {location} has schema version {found}, newer than this windlass knows ({known}); upgrade windlass"
    )]
    SchemaTooNew { location: String, found: i64, known: i64 },
    #[error("`{0}` is not a state store location: use a file path, sqlite://PATH or postgres://...")]
    BadLocation(String),
    #[error("lease `{name}` is no longer held by this process (it was broken or expired and taken)")]
    LeaseLost { name: String },
    #[error("lease `{name}` is held by {}", .holder.holder)]
    LeaseHeld { name: String, holder: Box<LeaseInfo> },
    #[error("a token named `{0}` already exists")]
    TokenExists(String),
    #[error("no deploy `{0}`")]
    DeployNotFound(String),
    #[error("state store holds an unreadable value in {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) trait QueryContext<T> {
    fn during(self, operation: &'static str) -> Result<T>;
}

impl<T> QueryContext<T> for std::result::Result<T, sqlx::Error> {
    fn during(self, operation: &'static str) -> Result<T> {
        self.map_err(|source| StoreError::Query { operation, source })
    }
}
