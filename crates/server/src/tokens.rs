//! Personal and robot tokens: 256 random bits, shown once, kept only as a SHA-256 hash.
//!
//! A token reads `wl_<64 hex digits><8 hex digits>`: the prefix lets secret scanners find one,
//! and the last 8 digits are a checksum of the 64 before (the first 4 bytes of their SHA-256),
//! so a scanner can tell a real token from a look-alike without asking the store. Tokens from
//! before the checksum (`wl_` and 64 digits) keep working.
//!
//! A token belongs to a person or a robot declared in `[access]`, or is a bootstrap admin token
//! (every permission; made only on the server's machine, with access to its state). It expires
//! (90 days unless told otherwise) and records when it was last used, to the minute.

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use windlass_store::{NewToken, Store, TokenInfo, TokenOwnerKind};

pub const PREFIX: &str = "wl_";

/// How long a token lives unless `--expires` says otherwise.
pub const DEFAULT_LIFETIME: std::time::Duration = std::time::Duration::from_secs(90 * 24 * 3600);

/// The longest lifetime a token may be given: long-lived secrets are the ones that leak.
pub const MAX_LIFETIME: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// Why a token could not be made or looked up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no randomness for a token: {0}")]
    Randomness(#[source] getrandom::Error),
    #[error("`{0}` is not a token name: use 1-64 letters, digits, `.`, `-`, `_` or `@`")]
    BadName(String),
    #[error("a token cannot live longer than 366 days (asked: {0})")]
    TooLong(String),
    #[error("a token's lifetime must be positive")]
    NoLifetime,
    #[error(transparent)]
    Store(#[from] windlass_store::StoreError),
}

/// Why a presented token lets nobody in.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Not a token this store issued (or one whose checksum is wrong).
    #[error("this token is unknown")]
    Unknown,
    #[error("this token was revoked at {at}")]
    Revoked { at: Timestamp },
    #[error("this token expired at {at}: create a new one with `windlass token create`")]
    Expired { at: Timestamp },
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn checksum(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..4])
}

/// A new random token (not yet recorded).
pub fn generate() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(TokenError::Randomness)?;
    let body = hex::encode(bytes);
    Ok(format!("{PREFIX}{body}{}", checksum(&body)))
}

/// The token's shape is right: the prefix, hex digits, and (for new tokens) a matching checksum.
pub fn well_formed(token: &str) -> bool {
    let Some(rest) = token.strip_prefix(PREFIX) else { return false };
    if !rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return false;
    }
    match rest.len() {
        // From before the checksum.
        64 => true,
        72 => checksum(&rest[..64]) == rest[64..],
        _ => false,
    }
}

/// A token name: what audit records will say; letters, digits, `.`, `-`, `_`, `@`.
pub fn check_name(name: &str) -> Result<(), TokenError> {
    if windlass_config::is_access_name(name) { Ok(()) } else { Err(TokenError::BadName(name.to_owned())) }
}

/// What a new token is for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub name: String,
    pub owner: String,
    pub robot: bool,
    pub admin: bool,
    pub lifetime: std::time::Duration,
}

/// Creates and records a token; returns the token, the only time it is seen.
pub async fn create(store: &dyn Store, request: &TokenRequest) -> Result<String, TokenError> {
    check_name(&request.name)?;
    check_name(&request.owner)?;
    if request.lifetime > MAX_LIFETIME {
        return Err(TokenError::TooLong(format!("{} days", request.lifetime.as_secs() / 86_400)));
    }
    if request.lifetime.is_zero() {
        return Err(TokenError::NoLifetime);
    }
    let lifetime = SignedDuration::try_from(request.lifetime).map_err(|_| TokenError::NoLifetime)?;
    let expires_at = store.now().checked_add(lifetime).map_err(|_| TokenError::NoLifetime)?;
    let token = generate()?;
    store
        .create_token(&NewToken {
            name: request.name.clone(),
            owner: request.owner.clone(),
            kind: if request.robot { TokenOwnerKind::Robot } else { TokenOwnerKind::Person },
            admin: request.admin,
            hash: hash(&token),
            expires_at: Some(expires_at),
        })
        .await?;
    Ok(token)
}

/// The live token `presented` is, or why it is refused (by the store's clock). A use is
/// recorded at most once a minute per token: the check on the record read here avoids even
/// the conditional write on most requests.
pub async fn authenticate(store: &dyn Store, presented: &str) -> Result<Result<TokenInfo, Refused>, TokenError> {
    if presented.len() > 200 || !well_formed(presented) {
        return Ok(Err(Refused::Unknown));
    }
    let Some(token) = store.token_by_hash(&hash(presented)).await? else {
        return Ok(Err(Refused::Unknown));
    };
    if let Some(at) = token.revoked_at {
        return Ok(Err(Refused::Revoked { at }));
    }
    let now = store.now();
    if let Some(at) = token.expires_at
        && at <= now
    {
        return Ok(Err(Refused::Expired { at }));
    }
    let stale = token.last_used_at.is_none_or(|at| now.duration_since(at) >= SignedDuration::from_secs(60));
    if stale && let Err(err) = store.token_used(&token.name).await {
        // The last-used time is a convenience: a failure to write it must not refuse the caller.
        tracing::warn!(%err, token = token.name, "cannot record a token's use");
    }
    Ok(Ok(token))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use windlass_store::ManualClock;

    use super::*;

    #[test]
    fn tokens_carry_a_checksum_scanners_can_verify() {
        let token = generate().unwrap();
        assert!(token.starts_with("wl_") && token.len() == 3 + 72, "{token}");
        assert!(well_formed(&token));
        let mut altered = token.clone().into_bytes();
        altered[10] = if altered[10] == b'0' { b'1' } else { b'0' };
        assert!(!well_formed(&String::from_utf8(altered).unwrap()), "one changed digit breaks the checksum");
        assert!(well_formed(&format!("wl_{}", "ab".repeat(32))), "tokens from before the checksum still read");
        assert!(!well_formed("wl_xyz"));
        assert!(!well_formed(&format!("gh_{}", &token[3..])));
    }

    async fn store_at(clock: &ManualClock) -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = windlass_store::open(&dir.path().join("state.db").to_string_lossy(), Arc::new(clock.clone()))
            .await
            .unwrap();
        (dir, store)
    }

    fn alice(lifetime: Duration) -> TokenRequest {
        TokenRequest { name: "alice-laptop".into(), owner: "alice".into(), robot: false, admin: false, lifetime }
    }

    #[tokio::test]
    async fn a_token_expires_by_the_stores_clock() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let (_dir, store) = store_at(&clock).await;
        let token = create(&*store, &alice(DEFAULT_LIFETIME)).await.unwrap();
        let found = authenticate(&*store, &token).await.unwrap().expect("live");
        assert_eq!((found.owner.as_str(), found.kind), ("alice", TokenOwnerKind::Person));
        assert_eq!(found.expires_at, Some("2026-04-01T00:00:00Z".parse().unwrap()), "90 days by default");
        clock.advance(Duration::from_secs(90 * 24 * 3600 - 1));
        assert!(authenticate(&*store, &token).await.unwrap().is_ok(), "a second before expiry");
        clock.advance(Duration::from_secs(1));
        let refused = authenticate(&*store, &token).await.unwrap().unwrap_err();
        assert_eq!(refused, Refused::Expired { at: "2026-04-01T00:00:00Z".parse().unwrap() });
        assert!(refused.to_string().contains("expired at 2026-04-01T00:00:00Z"), "{refused}");
    }

    #[tokio::test]
    async fn a_revoked_or_unknown_token_is_refused_and_use_is_recorded_to_the_minute() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let (_dir, store) = store_at(&clock).await;
        let token = create(&*store, &alice(Duration::from_secs(30 * 86_400))).await.unwrap();
        authenticate(&*store, &token).await.unwrap().unwrap();
        clock.advance(Duration::from_secs(30));
        let used = authenticate(&*store, &token).await.unwrap().unwrap();
        assert_eq!(used.last_used_at, Some("2026-01-01T00:00:00Z".parse().unwrap()), "not rewritten within a minute");
        clock.advance(Duration::from_secs(30));
        authenticate(&*store, &token).await.unwrap().unwrap();
        let listed = store.tokens().await.unwrap();
        assert_eq!(listed[0].last_used_at, Some("2026-01-01T00:01:00Z".parse().unwrap()));

        assert!(store.revoke_token("alice-laptop").await.unwrap());
        let refused = authenticate(&*store, &token).await.unwrap().unwrap_err();
        assert_eq!(refused, Refused::Revoked { at: "2026-01-01T00:01:00Z".parse().unwrap() });
        let other = generate().unwrap();
        assert_eq!(authenticate(&*store, &other).await.unwrap().unwrap_err(), Refused::Unknown);
        assert_eq!(authenticate(&*store, "Bearer nonsense").await.unwrap().unwrap_err(), Refused::Unknown);
    }

    #[tokio::test]
    async fn lifetimes_are_bounded() {
        let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
        let (_dir, store) = store_at(&clock).await;
        let long = create(&*store, &alice(Duration::from_secs(400 * 86_400))).await.unwrap_err();
        assert!(long.to_string().contains("366 days"), "{long}");
        assert!(matches!(create(&*store, &alice(Duration::ZERO)).await, Err(TokenError::NoLifetime)));
        assert!(store.tokens().await.unwrap().is_empty(), "nothing was written");
    }
}
