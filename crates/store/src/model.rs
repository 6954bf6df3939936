//! The records the control plane keeps. Times are [`jiff::Timestamp`]s, stored as Unix
//! milliseconds so that both backends compare them the same way.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// `<env>-YYYYMMDD-HHMMSS` in UTC (the seeds' form), with `-2`, `-3`... for further deploys
/// of the same environment in the same second.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeployId(pub(crate) String);

impl DeployId {
    /// Reads an id given by a user; only its shape is checked, not that it exists.
    pub fn parse(text: &str) -> Option<Self> {
        let shaped = text.len() <= 100
            && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && text.matches('-').count() >= 2;
        shaped.then(|| DeployId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The base id for a deploy of `environment` starting at `at`.
    pub(crate) fn base(environment: &str, at: Timestamp) -> String {
        format!("{environment}-{}", at.strftime("%Y%m%d-%H%M%S"))
    }
}

impl fmt::Display for DeployId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),* }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            pub(crate) fn parse(text: &str) -> crate::Result<Self> {
                match text {
                    $($text => Ok($name::$variant),)*
                    other => Err(crate::StoreError::Corrupt { what: stringify!($name), value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Where a deploy stands. `Running` is the only state that is not final.
    pub enum DeployStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        /// The server stopped (crash, kill -9) while the deploy ran; found on restart.
        Interrupted => "interrupted",
        RolledBack => "rolled_back",
    }
}

text_enum! {
    pub enum StepStatus {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        Skipped => "skipped",
        Interrupted => "interrupted",
    }
}

/// What is known when a deploy starts.
#[derive(Debug, Clone)]
pub struct NewDeploy {
    pub environment: String,
    /// Who asked for it (a token's name).
    pub actor: String,
    pub reason: Option<String>,
    /// The config as it was when the deploy started (TOML text).
    pub config_snapshot: String,
    /// What each service runs, as JSON (content hashes of artifacts).
    pub artifacts: String,
    /// The server that runs the deploy; only that server marks it interrupted on restart.
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deploy {
    pub id: DeployId,
    pub environment: String,
    pub status: DeployStatus,
    pub actor: String,
    pub reason: Option<String>,
    pub config_snapshot: String,
    pub artifacts: String,
    pub owner: String,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    /// The step running now, or the one that was running when the deploy ended.
    pub current_step: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub deploy_id: DeployId,
    pub seq: i64,
    pub phase: String,
    pub name: String,
    pub status: StepStatus,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub output: String,
    pub error: Option<String>,
}

/// A deploy that was running when its server stopped, found by [`crate::Store::interrupt_running`].
#[derive(Debug, Clone, PartialEq)]
pub struct Interrupted {
    pub deploy_id: DeployId,
    pub environment: String,
    pub step: Option<String>,
}

/// Who holds a lease: a server (by its stable id), on a host, in a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// This process, acting as `id`.
    pub fn this_process(id: impl Into<String>) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown-host".into());
        Holder { id: id.into(), host, pid: std::process::id() }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {} on {})", self.id, self.pid, self.host)
    }
}

/// A lease this process holds. Every renewal and release names its fencing token, so a holder
/// whose lease was broken and taken by someone else cannot touch the new holder's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: Holder,
    /// Rises with every acquisition of this lease name, never reused.
    pub token: i64,
    pub ttl: Duration,
    /// The stale lease this acquisition took over (its holder stopped renewing it), as it was.
    pub taken_over: Option<LeaseInfo>,
}

/// A lease as anyone can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub name: String,
    pub holder: Holder,
    pub purpose: String,
    pub acquired_at: Timestamp,
    pub heartbeat_at: Timestamp,
    pub ttl: Duration,
    pub token: i64,
    /// The heartbeat is older than the TTL (by the store's clock): the holder has probably died.
    /// The next [`crate::Store::acquire_lease`] takes a stale lease over, with a higher token,
    /// and records the takeover (with this holder) in the audit log.
    pub stale: bool,
}

/// The answer to an attempt to take a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquire {
    Acquired(Lease),
    Held(LeaseInfo),
}

/// An entry for the audit log.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub actor: String,
    pub environment: Option<String>,
    /// A dotted kind such as `deploy.started` or `lease.broken`.
    pub kind: String,
    pub subject: Option<String>,
    pub message: String,
    /// Details as JSON.
    pub data: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub environment: Option<String>,
    pub kind: String,
    pub subject: Option<String>,
    pub message: String,
    pub data: String,
}

text_enum! {
    /// Who a token belongs to: a person declared in `[access]`, or a named robot (CI).
    pub enum TokenOwnerKind {
        Person => "person",
        Robot => "robot",
    }
}

/// A token to record: only its hash is kept.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Unique among all tokens: what `token list` and `token revoke` name, and what audit records
    /// say the caller authenticated with.
    pub name: String,
    /// The person or robot it belongs to.
    pub owner: String,
    pub kind: TokenOwnerKind,
    /// A bootstrap admin token: every permission everywhere, whatever `[access]` says.
    pub admin: bool,
    pub hash: String,
    /// After this the token answers 401; `None`: never (only tokens from before expiry existed).
    pub expires_at: Option<Timestamp>,
}

/// A personal token as anyone may list it (never the token itself).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub name: String,
    pub owner: String,
    pub kind: TokenOwnerKind,
    pub admin: bool,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    /// Updated at most once a minute (see [`crate::Store::token_used`]).
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
}
