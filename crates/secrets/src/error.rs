//! The one error type of the crate. Every message names the file or backend it is about and
//! says what to do; none ever contains a secret value.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}")]
    BadKey(String),
    #[error("{0}")]
    Crypto(String),
    #[error(
        "no age identity found: pass --identity FILE, or set WINDLASS_AGE_KEY_FILE or SOPS_AGE_KEY_FILE, or put it in \
         ~/.config/sops/age/keys.txt (make one with `age-keygen -o FILE`)"
    )]
    NoIdentity,
    #[error(
        "the age identity file {} is accessible by other users (mode {mode:03o}): it holds your private key, so \
         Windlass refuses to use it; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    IdentityNotPrivate { path: PathBuf, mode: u32 },
    #[error(
        "{file}: cannot decrypt with your identity ({mine}); the file is encrypted to {recipients}. \
         Ask a teammate who can decrypt it to run `windlass secrets recipients add <env> <your age1... key>`"
    )]
    NotARecipient { file: String, mine: String, recipients: String },
    #[error(
        "{file}: {what} fails authentication: the file was changed by hand or is damaged (tampered or truncated); \
         restore it from version control"
    )]
    Tampered { file: String, what: String },
    #[error("{file}: {why}")]
    Malformed { file: String, why: String },
    #[error("invalid secret name {0:?}: use letters, digits and `_`, not starting with a digit (like DATABASE_URL)")]
    InvalidName(String),
    #[error(
        "the value of {name} is shorter than 8 characters: Windlass redacts secrets from all output by their value, \
         and a value this short would blank out ordinary text or slip through; use a longer secret, or pass \
         --allow-short if you accept that"
    )]
    TooShort { name: String },
    #[error("{place}: no secret named {name}")]
    NotFound { place: String, name: String },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot reach OpenBao at {address}: {why}; check the address and that the server is running")]
    BaoUnreachable { address: String, why: String },
    #[error("OpenBao at {address} is sealed: unseal it (`bao operator unseal`) and retry")]
    BaoSealed { address: String },
    #[error(
        "OpenBao at {address}: permission denied: the token may be expired or lack a policy for {path} \
         (needs read, create and update on it)"
    )]
    BaoPermissionDenied { address: String, path: String },
    #[error(
        "OpenBao at {address}: {path} was changed by someone else since it was read (check-and-set conflict); \
         run the command again to apply your change on top of theirs"
    )]
    BaoConflict { address: String, path: String },
    #[error(
        "OpenBao at {address}: mount `{mount}` is a KV version 1 engine; Windlass needs KV version 2 (versioned, \
         check-and-set): `bao secrets enable -version=2 -path={mount} kv` or `bao kv enable-versioning {mount}`"
    )]
    BaoKvV1 { address: String, mount: String },
    #[error("OpenBao at {address}: {what}")]
    Bao { address: String, what: String },
}

pub type Result<T, E = SecretsError> = std::result::Result<T, E>;
