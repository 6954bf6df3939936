//! The state every part of the edge shares: the current table, the registry behind it, the
//! desired spec (changed only through [`Shared::update`]), settings and the event log.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::spec::{EdgeSpec, SpecError};
use crate::table::{Registry, Table};

/// How the edge behaves, from `[edge]` in the config.
/// `Debug` is written by hand so that the tokens never reach a log line or a panic message.
#[derive(Clone)]
pub struct Settings {
    /// Bearer token for the admin API (reads and writes), accepted only there. The pin secret
    /// is derived from it ([`pin_token`]); so is the bypass secret unless `bypass_token` is set.
    pub admin_token: String,
    pub sticky_cookie: String,
    pub sticky_header: Option<String>,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub maintenance_html: String,
    pub maintenance_message: String,
    pub retry_after: Duration,
    pub allow_header: Option<String>,
    pub allow_cookie: Option<String>,
    pub allow_networks: Vec<(IpAddr, u8)>,
    /// Connect or 5xx errors in a row that eject an instance, and for how long.
    pub eject_after_errors: u32,
    pub eject_for: Duration,
    /// How long a pool out of rotation (or a stopping edge) may take to finish its requests and
    /// WebSocket sessions before they are cut.
    pub drain_timeout: Duration,
    /// Write a JSON line per request to stdout.
    pub access_log: bool,
    /// Hot-path features that can be switched off to measure what each costs.
    pub hot_path: HotPath,
    /// Upstream connections one downstream connection may have open to one instance; an HTTP/2
    /// client's further concurrent requests wait for one to free up (within the upstream timeout).
    pub max_upstream_per_connection: usize,
    /// Connection limits and timeouts (`[edge]` connection keys and `[edge.http2]`).
    pub limits: crate::limits::Limits,
    // Admin API and data-plane secrets (#18), each good for one purpose only.
    /// A bearer token that may read the admin API (state, events, counters, metrics) but not
    /// change anything.
    pub read_token: Option<String>,
    /// The value of the maintenance bypass header or cookie; `None`: derived from the admin
    /// token ([`derived_bypass_token`]).
    pub bypass_token: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |set: bool| if set { "<hidden>" } else { "<none>" };
        f.debug_struct("Settings")
            .field("admin_token", &hidden(!self.admin_token.is_empty()))
            .field("read_token", &hidden(self.read_token.is_some()))
            .field("bypass_token", &hidden(self.bypass_token.is_some()))
            .field("sticky_cookie", &self.sticky_cookie)
            .field("sticky_header", &self.sticky_header)
            .field("connect_timeout", &self.connect_timeout)
            .field("upstream_timeout", &self.upstream_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .field("max_headers", &self.max_headers)
            .field("retry_after", &self.retry_after)
            .field("allow_header", &self.allow_header)
            .field("allow_cookie", &self.allow_cookie)
            .field("allow_networks", &self.allow_networks)
            .field("eject_after_errors", &self.eject_after_errors)
            .field("eject_for", &self.eject_for)
            .field("drain_timeout", &self.drain_timeout)
            .field("access_log", &self.access_log)
            .field("hot_path", &self.hot_path)
            .field("max_upstream_per_connection", &self.max_upstream_per_connection)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The per-request features a benchmark can switch off one at a time
/// (`WINDLASS_EDGE_DISABLE=metrics,request-id,forwarded-headers`). Hop-by-hop stripping and the
/// framing checks are never optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HotPath {
    pub metrics: bool,
    pub request_id: bool,
    pub forwarded_headers: bool,
}

/// A name in the list of hot-path features to switch off that is not one of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a hot-path feature (metrics, request-id, forwarded-headers)")]
pub struct UnknownFeature(pub String);

impl Default for HotPath {
    fn default() -> Self {
        HotPath { metrics: true, request_id: true, forwarded_headers: true }
    }
}

impl HotPath {
    /// Reads a comma-separated list of features to switch off.
    pub fn without(list: &str) -> Result<Self, UnknownFeature> {
        let mut features = HotPath::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "metrics" => features.metrics = false,
                "request-id" => features.request_id = false,
                "forwarded-headers" => features.forwarded_headers = false,
                other => return Err(UnknownFeature(other.to_owned())),
            }
        }
        Ok(features)
    }
}

impl Settings {
    pub fn new(admin_token: impl Into<String>) -> Self {
        let message = "This service is down for maintenance. Please try again shortly.".to_owned();
        Settings {
            admin_token: admin_token.into(),
            sticky_cookie: "windlass_cohort".into(),
            sticky_header: None,
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            maintenance_html: default_page(&message),
            maintenance_message: message,
            retry_after: Duration::from_secs(300),
            allow_header: None,
            allow_cookie: None,
            allow_networks: Vec::new(),
            eject_after_errors: 5,
            eject_for: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            access_log: false,
            hot_path: HotPath::default(),
            max_upstream_per_connection: 8,
            limits: crate::limits::Limits::default(),
            read_token: None,
            bypass_token: None,
        }
    }
}

/// What the purpose labels below make of the admin token: a value that proves nothing but that
/// its holder was given it for that purpose. HMAC-SHA256 is one-way: neither value reveals the
/// admin token, and each changes when the admin token is rotated.
fn derive(admin_token: &str, purpose: &str) -> Option<String> {
    if admin_token.is_empty() {
        return None;
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, admin_token.as_bytes());
    let tag = ring::hmac::sign(&key, purpose.as_bytes());
    Some(tag.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// The purpose label of the pin secret (documented: operators may compute it with `openssl`).
pub const PIN_PURPOSE: &str = "windlass-edge-pin-v1";
/// The purpose label of the derived maintenance bypass secret.
pub const BYPASS_PURPOSE: &str = "windlass-edge-maintenance-bypass-v1";

/// The secret that pins a request to a pool (`X-Windlass-Token`): HMAC-SHA256 of
/// [`PIN_PURPOSE`] keyed with the admin token, in lowercase hex. The control plane computes it
/// from the admin token it holds; it cannot call the admin API. `None` without an admin token.
pub fn pin_token(admin_token: &str) -> Option<String> {
    derive(admin_token, PIN_PURPOSE)
}

/// The maintenance bypass secret when none is configured: HMAC-SHA256 of [`BYPASS_PURPOSE`]
/// keyed with the admin token, in lowercase hex.
pub fn derived_bypass_token(admin_token: &str) -> Option<String> {
    derive(admin_token, BYPASS_PURPOSE)
}

/// What a bearer token presented to the admin API may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The admin token: everything.
    Admin,
    /// The read token: `GET` and `HEAD` only.
    Read,
    /// Neither (the pin or bypass secret, or anything else).
    Denied,
}

/// The secrets of one edge, kept apart from [`Settings`] once derived (so the hot path compares
/// ready bytes) and swapped whole when they are rotated ([`Shared::rotate_secrets`]).
#[derive(Clone)]
struct Secrets {
    admin: String,
    read: Option<String>,
    pin: Option<String>,
    bypass: Option<String>,
}

/// By hand: secrets never reach a log line.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<hidden>)")
    }
}

impl Secrets {
    fn of(settings: &Settings) -> Secrets {
        let bypass = match &settings.bypass_token {
            Some(explicit) => Some(explicit.clone()).filter(|t| !t.is_empty()),
            None => derived_bypass_token(&settings.admin_token),
        };
        Secrets {
            admin: settings.admin_token.clone(),
            read: settings.read_token.clone().filter(|t| !t.is_empty()),
            pin: pin_token(&settings.admin_token),
            bypass,
        }
    }
}

/// Constant-time equality with a configured secret; an absent or empty secret matches nothing.
fn matches(presented: &[u8], expected: Option<&str>) -> bool {
    expected
        .is_some_and(|expected| !expected.is_empty() && windlass_http::constant_time_eq(presented, expected.as_bytes()))
}

pub(crate) fn default_page(message: &str) -> String {
    let escaped = message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Maintenance</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:4em auto\"><h1>Down for maintenance</h1><p>{escaped}</p></body></html>\n"
    )
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Something the edge did on its own or was told to do, for the monitor and for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct EdgeEvent {
    pub at_unix_ms: u64,
    pub service: String,
    pub kind: String,
    pub message: String,
}

const EVENTS_KEPT: usize = 1000;

#[derive(Debug)]
pub struct Shared {
    pub table: ArcSwap<Table>,
    pub registry: Registry,
    pub settings: Settings,
    spec: Mutex<EdgeSpec>,
    state_path: Option<PathBuf>,
    events: Mutex<VecDeque<EdgeEvent>>,
    started: Instant,
    pub access_log: Option<crate::access_log::AccessLog>,
    /// Open downstream connections and their limits (per worker, merged when read).
    pub connections: Arc<crate::limits::Connections>,
    secrets: ArcSwap<Secrets>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error("cannot persist the edge state to {path}: {source}")]
    Persist { path: String, source: std::io::Error },
}

impl Shared {
    pub fn new(spec: EdgeSpec, settings: Settings, state_path: Option<PathBuf>) -> Result<Arc<Self>, SpecError> {
        spec.check()?;
        let registry = Registry::default();
        let table = registry.compile(Arc::new(spec.clone()));
        // Without a writer thread the log is off; the edge still serves.
        let access_log = if settings.access_log { crate::access_log::AccessLog::start().ok() } else { None };
        let secrets = ArcSwap::from_pointee(Secrets::of(&settings));
        Ok(Arc::new(Shared {
            connections: Arc::new(crate::limits::Connections::new(&settings.limits)),
            secrets,
            access_log,
            table: ArcSwap::from_pointee(table),
            registry,
            settings,
            spec: Mutex::new(spec),
            state_path,
            events: Mutex::new(VecDeque::new()),
            started: Instant::now(),
        }))
    }

    /// Milliseconds since the edge started (the clock of ejections).
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// [`Shared::now_ms`] at a moment already read from the clock (a request's start).
    pub fn ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_millis()).unwrap_or(u64::MAX)
    }

    pub fn spec(&self) -> EdgeSpec {
        self.spec.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies a change: on a copy, checked, persisted, then swapped in as one new table.
    /// On any error nothing has changed.
    pub fn update(
        &self,
        change: impl FnOnce(&mut EdgeSpec) -> Result<(), SpecError>,
    ) -> Result<Arc<EdgeSpec>, UpdateError> {
        let mut current = self.spec.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = current.clone();
        change(&mut next)?;
        next.check()?;
        if let Some(path) = &self.state_path {
            next.save(path).map_err(|source| UpdateError::Persist { path: path.display().to_string(), source })?;
        }
        let next = Arc::new(next);
        self.table.store(Arc::new(self.registry.compile(next.clone())));
        *current = (*next).clone();
        Ok(next)
    }

    pub fn record_event(&self, service: &str, kind: &str, message: String) {
        tracing::info!(service, kind, "{message}");
        let at_unix_ms = unix_millis();
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(EdgeEvent { at_unix_ms, service: service.into(), kind: kind.into(), message });
    }

    pub fn events(&self) -> Vec<EdgeEvent> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// What a bearer token presented to the admin API may do; every comparison is constant-time.
    pub fn admin_access(&self, presented: &[u8]) -> Access {
        let secrets = self.secrets.load();
        if matches(presented, Some(&secrets.admin)) {
            Access::Admin
        } else if matches(presented, secrets.read.as_deref()) {
            Access::Read
        } else {
            Access::Denied
        }
    }

    /// Whether a presented `X-Windlass-Token` is the pin secret (never the admin token).
    pub fn pin_is_valid(&self, presented: &[u8]) -> bool {
        matches(presented, self.secrets.load().pin.as_deref())
    }

    /// Whether a presented bypass header or cookie value is the bypass secret (never the admin
    /// token, unless someone configured it as the bypass secret too, which `windlass edge`
    /// refuses).
    pub fn bypass_is_valid(&self, presented: &[u8]) -> bool {
        matches(presented, self.secrets.load().bypass.as_deref())
    }

    /// Replaces the admin, read and bypass secrets (and the pin secret derived from the admin
    /// token) at once, for the next request and admin call: rotation without a restart
    /// (`windlass edge` does it on SIGHUP). `None` for the bypass secret derives it.
    pub fn rotate_secrets(&self, admin_token: String, read_token: Option<String>, bypass_token: Option<String>) {
        let settings = Settings { read_token, bypass_token, ..Settings::new(admin_token) };
        self.secrets.store(Arc::new(Secrets::of(&settings)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived secrets are what the documented `openssl dgst -sha256 -hmac` command prints,
    /// differ from each other and from the admin token, and each is good for its purpose only.
    #[test]
    fn settings_never_print_their_tokens() {
        let settings = Settings {
            read_token: Some("read-token-0123456789".into()),
            bypass_token: Some("bypass-token-0123456789".into()),
            ..Settings::new("admin-token-0123456789")
        };
        let printed = format!("{settings:?}");
        for secret in ["read-token-0123456789", "bypass-token-0123456789", "admin-token-0123456789"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("<hidden>") && printed.contains("upstream_timeout"), "{printed}");
    }

    #[test]
    fn derived_secrets_are_scoped_and_match_the_documented_command() {
        let admin = "test-admin-token-0123456789";
        let pin = pin_token(admin).unwrap();
        let bypass = derived_bypass_token(admin).unwrap();
        assert_eq!(pin, "8a2ac61aaa28670161ae2ec763475389007ca30e367771e5af7a0c87622c4f45");
        assert_eq!(bypass, "f4559b0874726a1b7457ee36941ace8dcf020d1143b38c2f286ee57364cc6a4d");
        assert_eq!(pin_token(""), None, "no admin token, no pin secret");

        let settings = Settings { read_token: Some("a-read-token-0123456789".into()), ..Settings::new(admin) };
        let shared = Shared::new(EdgeSpec::default(), settings, None).unwrap();
        assert_eq!(shared.admin_access(admin.as_bytes()), Access::Admin);
        assert_eq!(shared.admin_access(b"a-read-token-0123456789"), Access::Read);
        for other in [pin.as_bytes(), bypass.as_bytes(), b"", b"nope"] {
            assert_eq!(shared.admin_access(other), Access::Denied);
        }
        assert!(shared.pin_is_valid(pin.as_bytes()));
        assert!(!shared.pin_is_valid(admin.as_bytes()) && !shared.pin_is_valid(bypass.as_bytes()));
        assert!(shared.bypass_is_valid(bypass.as_bytes()));
        assert!(!shared.bypass_is_valid(admin.as_bytes()) && !shared.bypass_is_valid(pin.as_bytes()));

        // An explicit bypass secret replaces the derived one.
        let settings = Settings { bypass_token: Some("staff-bypass-secret-42".into()), ..Settings::new(admin) };
        let shared = Shared::new(EdgeSpec::default(), settings, None).unwrap();
        assert!(shared.bypass_is_valid(b"staff-bypass-secret-42"));
        assert!(!shared.bypass_is_valid(bypass.as_bytes()));

        // Rotated: the old values stop working at once, the new ones work.
        let rotated = "rotated-admin-token-0123456789";
        shared.rotate_secrets(rotated.into(), Some("rotated-read-token-01234".into()), None);
        assert_eq!(shared.admin_access(admin.as_bytes()), Access::Denied);
        assert_eq!(shared.admin_access(rotated.as_bytes()), Access::Admin);
        assert_eq!(shared.admin_access(b"rotated-read-token-01234"), Access::Read);
        assert!(!shared.pin_is_valid(pin.as_bytes()));
        assert!(shared.pin_is_valid(pin_token(rotated).unwrap().as_bytes()));
        assert!(!shared.bypass_is_valid(b"staff-bypass-secret-42"), "None derives the bypass secret anew");
        assert!(shared.bypass_is_valid(derived_bypass_token(rotated).unwrap().as_bytes()));
    }

    #[test]
    fn hot_path_features_switch_off_by_name() {
        let features = HotPath::without("metrics, request-id").unwrap();
        assert_eq!(features, HotPath { metrics: false, request_id: false, forwarded_headers: true });
        assert_eq!(HotPath::without("").unwrap(), HotPath::default());
        assert!(HotPath::without("routing").unwrap_err().to_string().contains("not a hot-path feature"));
    }
}
