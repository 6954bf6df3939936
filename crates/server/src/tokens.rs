//! Personal tokens: 256 random bits, shown once, kept only as a SHA-256 hash.

use sha2::{Digest, Sha256};
use windlass_store::Store;

pub const PREFIX: &str = "wl_";

/// Why a token could not be made or looked up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no randomness for a token: {0}")]
    Randomness(#[source] getrandom::Error),
    #[error("`{0}` is not a token name: use 1-64 letters, digits, `.`, `-`, `_` or `@`")]
    BadName(String),
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (not yet recorded).
pub fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(TokenError::Randomness)?;
    Ok(format!("{PREFIX}{}", hex::encode(bytes)))
}

/// A token name: what audit records will say; letters, digits, `.`, `-`, `_`, `@`.
pub fn check_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok { Ok(()) } else { Err(TokenError::BadName(name.to_owned())) }
}

/// Creates and records a token named `name`; returns the token, the only time it is seen.
pub async fn create(store: &dyn Store, name: &str) -> Result<String, TokenError> {
    check_name(name)?;
    let token = generate()?;
    store.create_token(name, &hash(&token)).await?;
    Ok(token)
}

/// Who a presented token belongs to.
pub async fn actor(store: &dyn Store, token: &str) -> Result<Option<String>, TokenError> {
    if !token.starts_with(PREFIX) || token.len() > 200 {
        return Ok(None);
    }
    Ok(store.token_name(&hash(token)).await?)
}
