//! The alert engine: it decides, and returns what to send; it never sends anything itself.
//!
//! An alert is identified by a stable fingerprint of its source, name, service and environment;
//! it fires and resolves (and may fire again: a new *occurrence* of the same alert). When it
//! fires it is routed (`[alerts] routes`, first match wins unless a route says `continue`; a
//! route's `hours` is judged when it fires) and joins one group per matched route, keyed by
//! service and environment. A group's first notification waits `group_wait`, later ones
//! `group_interval`; a firing alert is notified once, repeated every `repeat_interval` while it
//! fires unacknowledged, and its resolution is notified to whoever was told it fired.
//!
//! Silences (and maintenance windows, which are silences opened and closed by the edge's
//! maintenance switch) keep an alert from being sent; it is still recorded, and sent at the next
//! flush if it is still firing when the silence ends. A resolution is always sent to whoever was
//! told the alert fired: a silence mutes news, it never leaves a page open.
//!
//! Escalation: an alert whose route names a policy (or a critical alert, under the default
//! `[alerts] escalation` ladder) climbs a level each time the time since its first notification
//! passes the level's `after`, until it is acknowledged or resolved.
//!
//! Every time comes from the caller (`now`); tests drive the engine with a `ManualClock`.
//! [`Engine::take_changes`] hands over what changed, for the store.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use windlass_config::oncall::OnCall;
use windlass_config::{AlertSeverity, Alerts, EscalationLevel};

use crate::incident::{Incident, IncidentStatus, TimelineEntry};
use crate::oncall::{self, Recipient};

pub mod persist;

/// Why the engine refused an operation; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("no alert `{0}`")]
    UnknownAlert(String),
    #[error("alert `{id}` was already resolved at {at}")]
    AlreadyResolved { id: String, at: Timestamp },
    #[error("alert `{id}` was already acknowledged by {by} at {at}")]
    AlreadyAcknowledged { id: String, by: String, at: Timestamp },
    #[error("the acknowledgement link is not valid: {0}")]
    BadLink(&'static str),
    #[error("the acknowledgement link has expired")]
    LinkExpired,
    #[error("the acknowledgement link is for an earlier firing of alert `{0}`, which has resolved")]
    LinkForEarlierFiring(String),
    #[error("no silence `{0}`")]
    UnknownSilence(String),
    #[error("a silence needs at least one matcher (name, service, environment or severity)")]
    SilenceMatchesEverything,
    #[error("a silence must end after it starts")]
    SilenceEndsBeforeStart,
    #[error("no incident {0}")]
    UnknownIncident(u64),
    #[error("incident {id} was already resolved at {at}")]
    IncidentAlreadyResolved { id: u64, at: Timestamp },
}

/// `AlertSeverity` as a word, for JSON.
pub mod severity {
    use serde::{Deserialize, Deserializer, Serializer};
    use windlass_config::AlertSeverity;

    pub fn as_str(severity: AlertSeverity) -> &'static str {
        match severity {
            AlertSeverity::Critical => "critical",
            AlertSeverity::Warning => "warning",
            AlertSeverity::Info => "info",
            AlertSeverity::Business => "business",
        }
    }

    pub fn parse(word: &str) -> Option<AlertSeverity> {
        [AlertSeverity::Critical, AlertSeverity::Warning, AlertSeverity::Info, AlertSeverity::Business]
            .into_iter()
            .find(|s| as_str(*s) == word)
    }

    pub fn serialize<S: Serializer>(severity: &AlertSeverity, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(as_str(*severity))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<AlertSeverity, D::Error> {
        let word = String::deserialize(deserializer)?;
        parse(&word).ok_or_else(|| serde::de::Error::custom(format!("unknown severity `{word}`")))
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(severity: &Option<AlertSeverity>, serializer: S) -> Result<S::Ok, S::Error> {
            match severity {
                Some(severity) => serializer.serialize_some(as_str(*severity)),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<AlertSeverity>, D::Error> {
            let word = Option::<String>::deserialize(deserializer)?;
            word.map(|word| parse(&word).ok_or_else(|| serde::de::Error::custom(format!("unknown severity `{word}`"))))
                .transpose()
        }
    }
}

/// Something that fires: a probe that went down, a burn-rate alert, a failed backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// What raised it: `probe`, `slo`, `backup`, ...
    pub source: String,
    pub name: String,
    pub service: String,
    pub environment: String,
    pub severity: AlertSeverity,
    /// One line for people.
    pub summary: String,
}

/// The stable id of an alert: 16 hex digits of SHA-256 over source, name, service and
/// environment.
pub fn fingerprint(source: &str, name: &str, service: &str, environment: &str) -> String {
    let mut hash = Sha256::new();
    for part in [source, name, service, environment] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hex::encode(&hash.finalize()[..8])
}

impl Signal {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.source, &self.name, &self.service, &self.environment)
    }

    /// A probe's transition as a signal: Down fires, Up resolves (`Some(true)` fires,
    /// `Some(false)` resolves, `None` for a change to Unknown).
    pub fn from_transition(transition: &crate::probe::Transition) -> (Signal, Option<bool>) {
        let signal = Signal {
            source: "probe".into(),
            name: transition.probe.clone(),
            service: transition.service.clone().unwrap_or_default(),
            environment: transition.environment.clone().unwrap_or_default(),
            severity: transition.severity,
            summary: transition.reason.clone(),
        };
        let fires = match transition.to {
            crate::probe::Health::Down => Some(true),
            crate::probe::Health::Up => Some(false),
            crate::probe::Health::Unknown => None,
        };
        (signal, fires)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// How an acknowledgement arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckVia {
    Cli,
    Api,
    /// A signed link from a notification.
    Link,
    /// Another system (`pagerduty`, ...).
    External(String),
}

impl std::fmt::Display for AckVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckVia::Cli => f.write_str("the CLI"),
            AckVia::Api => f.write_str("the API"),
            AckVia::Link => f.write_str("a signed link"),
            AckVia::External(system) => write!(f, "{system}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub via: AckVia,
    pub at: Timestamp,
    pub note: Option<String>,
}

/// Which ladder an alert climbs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ladder {
    /// `[alerts] escalation`.
    Default,
    /// `[oncall.policies.<policy>]`.
    Policy(String),
}

/// An alert as the engine keeps it (and the store records it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub source: String,
    pub name: String,
    pub service: String,
    pub environment: String,
    #[serde(with = "severity")]
    pub severity: AlertSeverity,
    pub summary: String,
    pub status: AlertStatus,
    /// How many times it fired (this is the `occurrence`-th).
    pub occurrence: u32,
    pub fired_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    /// The routes it matched when it fired (indexes into `[alerts] routes`).
    pub routes: Vec<usize>,
    pub ladder: Option<Ladder>,
    /// When it was first notified (escalation counts from here).
    pub notified_at: Option<Timestamp>,
    /// The escalation levels already notified.
    pub level: usize,
    pub ack: Option<Ack>,
    /// Everyone told it fired this time: they are told of its acknowledgement and resolution.
    pub told: BTreeSet<Recipient>,
    /// The incident it joined, if critical.
    pub incident: Option<u64>,
    /// The silence that held it back at the last look (for display).
    pub silenced_by: Option<String>,
}

impl Alert {
    pub fn is_firing(&self) -> bool {
        self.status == AlertStatus::Firing
    }
}

/// What a silence matches: every given field must be equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matchers {
    pub name: Option<String>,
    pub service: Option<String>,
    pub environment: Option<String>,
    #[serde(with = "severity::option", default)]
    pub severity: Option<AlertSeverity>,
}

impl Matchers {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.service.is_none() && self.environment.is_none() && self.severity.is_none()
    }

    pub fn matches(&self, alert: &Alert) -> bool {
        self.name.as_ref().is_none_or(|n| *n == alert.name)
            && self.service.as_ref().is_none_or(|s| *s == alert.service)
            && self.environment.as_ref().is_none_or(|e| *e == alert.environment)
            && self.severity.is_none_or(|s| s == alert.severity)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceKind {
    Manual,
    /// Opened while the edge keeps a service in maintenance.
    Maintenance,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub kind: SilenceKind,
    pub matchers: Matchers,
    pub starts_at: Timestamp,
    /// None: until closed (maintenance).
    pub ends_at: Option<Timestamp>,
    pub author: String,
    pub reason: String,
}

impl Silence {
    pub fn is_active(&self, now: Timestamp) -> bool {
        self.starts_at <= now && self.ends_at.is_none_or(|end| now < end)
    }
}

/// A silence to add.
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub matchers: Matchers,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub author: String,
    pub reason: String,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// New firing alerts of a group.
    Trigger,
    Acknowledge,
    Resolve,
    /// Still firing, unacknowledged, after `repeat_interval`.
    Repeat,
    /// An escalation level was reached.
    Escalate,
}

/// One alert as a notification shows it. `dedup_key` is the alert's id: PagerDuty events of one
/// alert share it, and PagerDuty's acknowledgement webhook names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertView {
    pub id: String,
    pub dedup_key: String,
    pub name: String,
    pub source: String,
    pub service: String,
    pub environment: String,
    #[serde(with = "severity")]
    pub severity: AlertSeverity,
    pub summary: String,
    pub status: AlertStatus,
    pub fired_at: Timestamp,
    pub resolved_at: Option<Timestamp>,
    pub ack: Option<Ack>,
}

impl From<&Alert> for AlertView {
    fn from(a: &Alert) -> Self {
        AlertView {
            id: a.id.clone(),
            dedup_key: a.id.clone(),
            name: a.name.clone(),
            source: a.source.clone(),
            service: a.service.clone(),
            environment: a.environment.clone(),
            severity: a.severity,
            summary: a.summary.clone(),
            status: a.status,
            fired_at: a.fired_at,
            resolved_at: a.resolved_at,
            ack: a.ack.clone(),
        }
    }
}

/// What to send: the engine's answer, for the caller to hand to `windlass-notify`. Slack and
/// webhooks send one message per dispatch; PagerDuty one event per alert (by its `dedup_key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dispatch {
    pub to: Recipient,
    pub action: Action,
    /// The group: `<route>/<environment>/<service>`; for acknowledgements and escalations the
    /// alert's id.
    pub group: String,
    pub environment: String,
    pub service: String,
    /// The escalation level reached (1 is the first), for `Escalate`.
    pub level: Option<usize>,
    pub alerts: Vec<AlertView>,
}

/// A notification group: the alerts one route matched for one service and environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub key: String,
    pub route: usize,
    pub environment: String,
    pub service: String,
    pub created_at: Timestamp,
    pub last_flush: Option<Timestamp>,
    pub last_repeat: Option<Timestamp>,
    /// Alert id → what this group told about it.
    pub members: BTreeMap<String, Member>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub occurrence: u32,
    pub sent_firing: bool,
    pub sent_resolved: bool,
}

/// What changed since the last [`Engine::take_changes`], for the store.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub alerts: Vec<Alert>,
    pub groups: Vec<Group>,
    pub removed_groups: Vec<String>,
    pub silences: Vec<Silence>,
    pub incidents: Vec<Incident>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
            && self.groups.is_empty()
            && self.removed_groups.is_empty()
            && self.silences.is_empty()
            && self.incidents.is_empty()
    }
}

/// Everything the engine keeps, as loaded back from the store.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub alerts: Vec<Alert>,
    pub groups: Vec<Group>,
    pub silences: Vec<Silence>,
    /// At least the open incidents.
    pub incidents: Vec<Incident>,
    /// The highest incident id ever given.
    pub last_incident_id: u64,
}

/// The alert engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    alerts_config: Alerts,
    oncall: OnCall,
    alerts: BTreeMap<String, Alert>,
    groups: BTreeMap<String, Group>,
    silences: BTreeMap<String, Silence>,
    incidents: BTreeMap<u64, Incident>,
    last_incident_id: u64,
    last_silence_id: u64,
    dirty_alerts: BTreeSet<String>,
    dirty_groups: BTreeSet<String>,
    removed_groups: BTreeSet<String>,
    dirty_silences: BTreeSet<String>,
    dirty_incidents: BTreeSet<u64>,
}

fn add(at: Timestamp, duration: windlass_config::units::Duration) -> Timestamp {
    let millis = i64::try_from(duration.as_std().as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(at.as_millisecond().saturating_add(millis)).unwrap_or(Timestamp::MAX)
}

fn maintenance_id(environment: &str, service: &str) -> String {
    format!("maintenance/{environment}/{service}")
}

impl Engine {
    pub fn new(alerts: &Alerts, oncall: &OnCall) -> Self {
        Engine::restore(alerts, oncall, Snapshot::default())
    }

    /// An engine that goes on from what the store recorded: firing alerts stay firing and what
    /// was sent is not sent again.
    pub fn restore(alerts: &Alerts, oncall: &OnCall, snapshot: Snapshot) -> Self {
        let last_silence_id = snapshot
            .silences
            .iter()
            .filter_map(|s| s.id.strip_prefix('s').and_then(|n| n.parse::<u64>().ok()))
            .max()
            .unwrap_or(0);
        let last_incident_id =
            snapshot.incidents.iter().map(|i| i.id).max().unwrap_or(0).max(snapshot.last_incident_id);
        Engine {
            alerts_config: alerts.clone(),
            oncall: oncall.clone(),
            alerts: snapshot.alerts.into_iter().map(|a| (a.id.clone(), a)).collect(),
            groups: snapshot.groups.into_iter().map(|g| (g.key.clone(), g)).collect(),
            silences: snapshot.silences.into_iter().map(|s| (s.id.clone(), s)).collect(),
            incidents: snapshot.incidents.into_iter().map(|i| (i.id, i)).collect(),
            last_incident_id,
            last_silence_id,
            dirty_alerts: BTreeSet::new(),
            dirty_groups: BTreeSet::new(),
            removed_groups: BTreeSet::new(),
            dirty_silences: BTreeSet::new(),
            dirty_incidents: BTreeSet::new(),
        }
    }

    /// Hands over what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        let alerts = std::mem::take(&mut self.dirty_alerts);
        let groups = std::mem::take(&mut self.dirty_groups);
        let silences = std::mem::take(&mut self.dirty_silences);
        let incidents = std::mem::take(&mut self.dirty_incidents);
        Changes {
            alerts: alerts.iter().filter_map(|id| self.alerts.get(id).cloned()).collect(),
            groups: groups.iter().filter_map(|key| self.groups.get(key).cloned()).collect(),
            // A group emptied and then started again since the last call is saved, not removed.
            removed_groups: std::mem::take(&mut self.removed_groups)
                .into_iter()
                .filter(|key| !self.groups.contains_key(key))
                .collect(),
            silences: silences.iter().filter_map(|id| self.silences.get(id).cloned()).collect(),
            incidents: incidents.iter().filter_map(|id| self.incidents.get(id).cloned()).collect(),
        }
    }

    /// Puts back changes that could not be saved, to be handed over again by the next
    /// [`Engine::take_changes`].
    pub fn keep_changes(&mut self, changes: Changes) {
        self.dirty_alerts.extend(changes.alerts.into_iter().map(|a| a.id));
        for group in changes.groups {
            if self.groups.contains_key(&group.key) {
                self.dirty_groups.insert(group.key);
            }
        }
        for key in changes.removed_groups {
            if !self.groups.contains_key(&key) {
                self.removed_groups.insert(key);
            }
        }
        self.dirty_silences.extend(changes.silences.into_iter().map(|s| s.id));
        self.dirty_incidents.extend(changes.incidents.into_iter().map(|i| i.id));
    }

    pub fn alert(&self, id: &str) -> Option<&Alert> {
        self.alerts.get(id)
    }

    /// Every alert the engine knows, firing and resolved.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    pub fn silences(&self) -> impl Iterator<Item = &Silence> {
        self.silences.values()
    }

    pub fn incidents(&self) -> impl Iterator<Item = &Incident> {
        self.incidents.values()
    }

    pub fn incident(&self, id: u64) -> Option<&Incident> {
        self.incidents.get(&id)
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The routes an alert matches at `at`: first match wins, unless it says `continue`.
    pub fn route(&self, severity: AlertSeverity, service: &str, environment: &str, at: Timestamp) -> Vec<usize> {
        let mut matched = Vec::new();
        for (index, route) in self.alerts_config.routes.iter().enumerate() {
            let hit = route.severity.is_none_or(|s| s == severity)
                && route.service.as_ref().is_none_or(|s| s.value == service)
                && route.environment.as_ref().is_none_or(|e| e.value == environment)
                && oncall::hours_match(&self.oncall, route.hours, at);
            if hit {
                matched.push(index);
                if !route.continue_ {
                    break;
                }
            }
        }
        matched
    }

    /// Records that a signal fires. Nothing is sent before its group's wait; the answer holds
    /// what is due now (with `group_wait = "0s"`, the alert itself).
    pub fn fire(&mut self, signal: &Signal, now: Timestamp) -> Vec<Dispatch> {
        let id = signal.fingerprint();
        if let Some(alert) = self.alerts.get_mut(&id)
            && alert.is_firing()
        {
            // Already firing: de-duplicated; only the wording may change.
            if alert.summary != signal.summary {
                alert.summary = signal.summary.clone();
                self.dirty_alerts.insert(id);
            }
            return self.tick(now);
        }
        let routes = self.route(signal.severity, &signal.service, &signal.environment, now);
        let ladder = routes
            .iter()
            .find_map(|&r| self.alerts_config.routes[r].escalation.as_ref().map(|p| Ladder::Policy(p.value.clone())))
            .or_else(|| {
                (signal.severity == AlertSeverity::Critical && !self.alerts_config.escalation.is_empty())
                    .then_some(Ladder::Default)
            });
        let occurrence = self.alerts.get(&id).map_or(1, |a| a.occurrence + 1);
        let alert = Alert {
            id: id.clone(),
            source: signal.source.clone(),
            name: signal.name.clone(),
            service: signal.service.clone(),
            environment: signal.environment.clone(),
            severity: signal.severity,
            summary: signal.summary.clone(),
            status: AlertStatus::Firing,
            occurrence,
            fired_at: now,
            resolved_at: None,
            routes: routes.clone(),
            ladder,
            notified_at: None,
            level: 0,
            ack: None,
            told: BTreeSet::new(),
            incident: None,
            silenced_by: None,
        };
        tracing::info!(alert = %id, name = %alert.name, service = %alert.service, environment = %alert.environment, "alert fires");
        self.alerts.insert(id.clone(), alert);
        self.dirty_alerts.insert(id.clone());
        for route in routes {
            let key = format!("{route}/{}/{}", signal.environment, signal.service);
            let group = self.groups.entry(key.clone()).or_insert_with(|| Group {
                key: key.clone(),
                route,
                environment: signal.environment.clone(),
                service: signal.service.clone(),
                created_at: now,
                last_flush: None,
                last_repeat: None,
                members: BTreeMap::new(),
            });
            group.members.insert(id.clone(), Member { occurrence, ..Member::default() });
            self.dirty_groups.insert(key);
        }
        if signal.severity == AlertSeverity::Critical {
            self.join_incident(&id, now);
        }
        self.tick(now)
    }

    fn join_incident(&mut self, id: &str, now: Timestamp) {
        let Some(alert) = self.alerts.get(id) else { return };
        let (environment, service) = (alert.environment.clone(), alert.service.clone());
        let open = self
            .incidents
            .values()
            .find(|i| i.status == IncidentStatus::Open && i.environment == environment && i.service == service)
            .map(|i| i.id);
        let incident_id = match open {
            Some(open) => open,
            None => {
                self.last_incident_id += 1;
                let title = format!("{} down in {}: {}", alert.service, alert.environment, alert.name);
                let incident = Incident::open(self.last_incident_id, &environment, &service, &title, now);
                self.incidents.insert(incident.id, incident);
                self.last_incident_id
            }
        };
        let entry =
            TimelineEntry::new(now, "alert.fired", format!("{} fired: {}", alert.name, alert.summary)).about(id);
        if let Some(incident) = self.incidents.get_mut(&incident_id) {
            if !incident.alerts.iter().any(|a| a == id) {
                incident.alerts.push(id.to_owned());
            }
            incident.record(entry);
        }
        if let Some(alert) = self.alerts.get_mut(id) {
            alert.incident = Some(incident_id);
        }
        self.dirty_incidents.insert(incident_id);
    }

    /// Records that a signal stopped firing; unknown or resolved alerts are left alone.
    pub fn resolve(&mut self, signal: &Signal, now: Timestamp) -> Vec<Dispatch> {
        self.resolve_id(&signal.fingerprint(), now)
    }

    /// [`Engine::resolve`] by alert id.
    pub fn resolve_id(&mut self, id: &str, now: Timestamp) -> Vec<Dispatch> {
        let Some(alert) = self.alerts.get_mut(id).filter(|a| a.is_firing()) else {
            return self.tick(now);
        };
        alert.status = AlertStatus::Resolved;
        alert.resolved_at = Some(now);
        tracing::info!(alert = %id, name = %alert.name, "alert resolves");
        let entry = TimelineEntry::new(now, "alert.resolved", format!("{} resolved", alert.name)).about(id);
        if let Some(incident) =
            alert.incident.and_then(|i| self.incidents.get_mut(&i)).filter(|i| i.status == IncidentStatus::Open)
        {
            incident.record(entry);
            self.dirty_incidents.insert(incident.id);
        }
        self.dirty_alerts.insert(id.to_owned());
        self.tick(now)
    }

    /// A probe's change: Down fires, Up resolves.
    pub fn observe(&mut self, transition: &crate::probe::Transition) -> Vec<Dispatch> {
        match Signal::from_transition(transition) {
            (signal, Some(true)) => self.fire(&signal, transition.at),
            (signal, Some(false)) => self.resolve(&signal, transition.at),
            (_, None) => self.tick(transition.at),
        }
    }

    fn silence_for(&self, alert: &Alert, now: Timestamp) -> Option<String> {
        self.silences.values().find(|s| s.is_active(now) && s.matchers.matches(alert)).map(|s| s.id.clone())
    }

    /// Does what time has made due: group notifications, repeats, escalations.
    pub fn tick(&mut self, now: Timestamp) -> Vec<Dispatch> {
        // Silences first: every alert notes what holds it back now.
        let silenced: BTreeMap<String, Option<String>> =
            self.alerts.values().map(|a| (a.id.clone(), self.silence_for(a, now))).collect();
        for (id, silence) in &silenced {
            if let Some(alert) = self.alerts.get_mut(id)
                && alert.silenced_by != *silence
            {
                alert.silenced_by = silence.clone();
                self.dirty_alerts.insert(id.clone());
            }
        }
        let mut out = Vec::new();
        let keys: Vec<String> = self.groups.keys().cloned().collect();
        for key in keys {
            self.flush_group(&key, now, &mut out);
        }
        self.escalate(now, &mut out);
        out
    }

    fn flush_group(&mut self, key: &str, now: Timestamp, out: &mut Vec<Dispatch>) {
        let Some(group) = self.groups.get(key) else { return };
        let config = &self.alerts_config;
        let due = match group.last_flush {
            None => now >= add(group.created_at, config.group_wait),
            Some(last) => now >= add(last, config.group_interval),
        };
        let current = |id: &str, member: &Member| self.alerts.get(id).filter(|a| a.occurrence == member.occurrence);
        let mut new = Vec::new();
        let mut resolved = Vec::new();
        let mut still = Vec::new();
        for (id, member) in &group.members {
            let Some(alert) = current(id, member) else { continue };
            let silenced = alert.silenced_by.is_some();
            match alert.status {
                AlertStatus::Firing if !member.sent_firing && !silenced => new.push(id.clone()),
                AlertStatus::Firing if member.sent_firing && !silenced && alert.ack.is_none() => still.push(id.clone()),
                AlertStatus::Firing => {}
                AlertStatus::Resolved if member.sent_firing && !member.sent_resolved => resolved.push(id.clone()),
                AlertStatus::Resolved => {}
            }
        }
        let Some(route) = config.routes.get(group.route) else {
            // The config lost this route: nothing can be sent; forget the group.
            self.groups.remove(key);
            self.removed_groups.insert(key.to_owned());
            return;
        };
        let recipients = oncall::resolve_all(config, &self.oncall, &route.to, now);
        let (environment, service) = (group.environment.clone(), group.service.clone());
        let repeat_due = group.last_repeat.is_some_and(|last| now >= add(last, config.repeat_interval));
        let mut dispatch = |action: Action, ids: &[String], alerts: &BTreeMap<String, Alert>| {
            let mut views: Vec<AlertView> = ids.iter().filter_map(|id| alerts.get(id)).map(AlertView::from).collect();
            views.sort_by(|a, b| (a.fired_at, &a.name).cmp(&(b.fired_at, &b.name)));
            for to in &recipients {
                out.push(Dispatch {
                    to: to.clone(),
                    action,
                    group: key.to_owned(),
                    environment: environment.clone(),
                    service: service.clone(),
                    level: None,
                    alerts: views.clone(),
                });
            }
        };
        let sent = due && (!new.is_empty() || !resolved.is_empty());
        if sent {
            if !new.is_empty() {
                dispatch(Action::Trigger, &new, &self.alerts);
            }
            if !resolved.is_empty() {
                dispatch(Action::Resolve, &resolved, &self.alerts);
            }
        }
        let repeated = repeat_due && !still.is_empty();
        if repeated {
            dispatch(Action::Repeat, &still, &self.alerts);
        }
        if let Some(group) = self.groups.get_mut(key)
            && (sent || repeated)
        {
            if repeated || group.last_repeat.is_none() {
                group.last_repeat = Some(now);
            }
            self.dirty_groups.insert(key.to_owned());
        }
        if sent {
            for id in &new {
                if let Some(alert) = self.alerts.get_mut(id) {
                    alert.notified_at.get_or_insert(now);
                    alert.told.extend(recipients.iter().cloned());
                    self.dirty_alerts.insert(id.clone());
                }
            }
            if let Some(group) = self.groups.get_mut(key) {
                group.last_flush = Some(now);
                for id in &new {
                    if let Some(member) = group.members.get_mut(id) {
                        member.sent_firing = true;
                    }
                }
                for id in &resolved {
                    if let Some(member) = group.members.get_mut(id) {
                        member.sent_resolved = true;
                    }
                }
                self.dirty_groups.insert(key.to_owned());
            }
        }
        // Resolved alerts whose end was told (or that were never told) leave the group; an
        // empty group is forgotten, so the next alert starts a new one with `group_wait`.
        let Some(group) = self.groups.get_mut(key) else { return };
        let before = group.members.len();
        let alerts = &self.alerts;
        group.members.retain(|id, member| {
            let alert = alerts.get(id).filter(|a| a.occurrence == member.occurrence);
            match alert {
                None => false,
                Some(a) if a.is_firing() => true,
                Some(_) => member.sent_firing && !member.sent_resolved,
            }
        });
        if group.members.is_empty() {
            self.groups.remove(key);
            self.dirty_groups.remove(key);
            self.removed_groups.insert(key.to_owned());
        } else if group.members.len() != before {
            self.dirty_groups.insert(key.to_owned());
        }
    }

    fn levels(&self, ladder: &Ladder) -> &[EscalationLevel] {
        match ladder {
            Ladder::Default => &self.alerts_config.escalation,
            Ladder::Policy(name) => self.oncall.policies.get(name).map_or(&[], |p| p.levels.as_slice()),
        }
    }

    fn escalate(&mut self, now: Timestamp, out: &mut Vec<Dispatch>) {
        let ids: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.is_firing() && a.ack.is_none() && a.silenced_by.is_none() && a.ladder.is_some())
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            let Some(alert) = self.alerts.get(&id) else { continue };
            let (Some(notified_at), Some(ladder)) = (alert.notified_at, alert.ladder.clone()) else { continue };
            let levels = self.levels(&ladder).to_vec();
            let mut level = alert.level;
            let mut told = Vec::new();
            while let Some(next) = levels.get(level) {
                if now < add(notified_at, next.after.value) {
                    break;
                }
                level += 1;
                let recipients = oncall::resolve_all(&self.alerts_config, &self.oncall, &next.notify, now);
                let view = AlertView::from(alert);
                tracing::info!(alert = %id, level, "alert escalates");
                for to in recipients {
                    out.push(Dispatch {
                        to: to.clone(),
                        action: Action::Escalate,
                        group: id.clone(),
                        environment: alert.environment.clone(),
                        service: alert.service.clone(),
                        level: Some(level),
                        alerts: vec![view.clone()],
                    });
                    told.push(to);
                }
            }
            if level != alert.level
                && let Some(alert) = self.alerts.get_mut(&id)
            {
                alert.level = level;
                alert.told.extend(told);
                self.dirty_alerts.insert(id);
            }
        }
    }

    /// Acknowledges a firing alert: escalation stops, repeats stop, and everyone told of it is
    /// told of the acknowledgement. An unknown, resolved or already acknowledged alert is an
    /// error and nothing changes.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        via: AckVia,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<Dispatch>, AlertError> {
        let alert = self.alerts.get(id).ok_or_else(|| AlertError::UnknownAlert(id.to_owned()))?;
        if let (AlertStatus::Resolved, Some(at)) = (alert.status, alert.resolved_at) {
            return Err(AlertError::AlreadyResolved { id: id.to_owned(), at });
        }
        if let Some(ack) = &alert.ack {
            return Err(AlertError::AlreadyAcknowledged { id: id.to_owned(), by: ack.by.clone(), at: ack.at });
        }
        let ack = Ack { by: by.to_owned(), via: via.clone(), at: now, note: note.map(str::to_owned) };
        let alert = match self.alerts.get_mut(id) {
            Some(alert) => alert,
            None => return Err(AlertError::UnknownAlert(id.to_owned())),
        };
        alert.ack = Some(ack);
        self.dirty_alerts.insert(id.to_owned());
        tracing::info!(alert = %id, by, via = %via, "alert acknowledged");
        let view = AlertView::from(&*alert);
        let out: Vec<Dispatch> = alert
            .told
            .iter()
            .map(|to| Dispatch {
                to: to.clone(),
                action: Action::Acknowledge,
                group: id.to_owned(),
                environment: alert.environment.clone(),
                service: alert.service.clone(),
                level: None,
                alerts: vec![view.clone()],
            })
            .collect();
        let mut message = format!("{} acknowledged {} via {via}", by, alert.name);
        if let Some(note) = note {
            message.push_str(&format!(": {note}"));
        }
        if let Some(incident) = alert.incident.and_then(|i| self.incidents.get_mut(&i)) {
            incident.acknowledged_at.get_or_insert(now);
            incident.record(TimelineEntry::new(now, "alert.acknowledged", message).by(by).about(id));
            self.dirty_incidents.insert(incident.id);
        }
        Ok(out)
    }

    /// Acknowledges through a signed link (see [`ack_token`]).
    pub fn acknowledge_link(
        &mut self,
        secret: &[u8],
        token: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<Vec<Dispatch>, AlertError> {
        let claim = verify_ack_token(secret, token, now)?;
        let alert = self.alerts.get(&claim.alert).ok_or_else(|| AlertError::UnknownAlert(claim.alert.clone()))?;
        if alert.fired_at != claim.fired_at {
            return Err(AlertError::LinkForEarlierFiring(claim.alert));
        }
        self.acknowledge(&claim.alert, by, AckVia::Link, None, now)
    }

    /// Adds a silence; it holds back matching alerts from its start to its end.
    pub fn add_silence(&mut self, new: NewSilence) -> Result<Silence, AlertError> {
        if new.matchers.is_empty() {
            return Err(AlertError::SilenceMatchesEverything);
        }
        if new.ends_at <= new.starts_at {
            return Err(AlertError::SilenceEndsBeforeStart);
        }
        self.last_silence_id += 1;
        let silence = Silence {
            id: format!("s{}", self.last_silence_id),
            kind: SilenceKind::Manual,
            matchers: new.matchers,
            starts_at: new.starts_at,
            ends_at: Some(new.ends_at),
            author: new.author,
            reason: new.reason,
        };
        self.silences.insert(silence.id.clone(), silence.clone());
        self.dirty_silences.insert(silence.id.clone());
        Ok(silence)
    }

    /// Ends a silence now; matching alerts still firing are sent at the next tick.
    pub fn expire_silence(&mut self, id: &str, now: Timestamp) -> Result<Silence, AlertError> {
        let silence = self.silences.get_mut(id).ok_or_else(|| AlertError::UnknownSilence(id.to_owned()))?;
        if silence.ends_at.is_none_or(|end| end > now) {
            silence.ends_at = Some(now.max(silence.starts_at));
            self.dirty_silences.insert(id.to_owned());
        }
        Ok(silence.clone())
    }

    /// The edge put a service (or, with `None`, every service of the environment) in
    /// maintenance (`on`) or took it out: matching alerts are silenced meanwhile.
    pub fn maintenance(&mut self, environment: &str, service: Option<&str>, on: bool, by: &str, now: Timestamp) {
        let id = maintenance_id(environment, service.unwrap_or("*"));
        if on {
            if self.silences.get(&id).is_some_and(|s| s.is_active(now)) {
                return;
            }
            let silence = Silence {
                id: id.clone(),
                kind: SilenceKind::Maintenance,
                matchers: Matchers {
                    service: service.map(str::to_owned),
                    environment: Some(environment.to_owned()),
                    ..Matchers::default()
                },
                starts_at: now,
                ends_at: None,
                author: by.to_owned(),
                reason: format!("{} in maintenance", service.unwrap_or("every service")),
            };
            self.silences.insert(id.clone(), silence);
            self.dirty_silences.insert(id);
        } else if let Some(silence) = self.silences.get_mut(&id)
            && silence.ends_at.is_none()
        {
            silence.ends_at = Some(now);
            self.dirty_silences.insert(id);
        }
    }

    /// Adds a note to an incident the engine holds: the open ones (and those resolved since it
    /// started).
    pub fn note(&mut self, incident: u64, by: &str, text: &str, now: Timestamp) -> Result<(), AlertError> {
        let incident = self.incidents.get_mut(&incident).ok_or(AlertError::UnknownIncident(incident))?;
        incident.record(TimelineEntry::new(now, "note", text).by(by));
        self.dirty_incidents.insert(incident.id);
        Ok(())
    }

    /// Feeds something that happened (a deploy, a failover) to the open incidents of its
    /// environment (and service, when it names one). Returns the incidents it joined.
    pub fn record(&mut self, environment: &str, service: Option<&str>, entry: TimelineEntry) -> Vec<u64> {
        let mut joined = Vec::new();
        for incident in self.incidents.values_mut() {
            if incident.status == IncidentStatus::Open
                && incident.environment == environment
                && service.is_none_or(|s| s == incident.service)
            {
                incident.record(entry.clone());
                joined.push(incident.id);
            }
        }
        self.dirty_incidents.extend(joined.iter().copied());
        joined
    }

    /// Closes an incident.
    pub fn resolve_incident(
        &mut self,
        id: u64,
        by: &str,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<&Incident, AlertError> {
        let incident = self.incidents.get_mut(&id).ok_or(AlertError::UnknownIncident(id))?;
        if let (IncidentStatus::Resolved, Some(at)) = (incident.status, incident.resolved_at) {
            return Err(AlertError::IncidentAlreadyResolved { id, at });
        }
        incident.status = IncidentStatus::Resolved;
        incident.resolved_at = Some(now);
        incident.resolved_by = Some(by.to_owned());
        let message = match note {
            Some(note) => format!("incident resolved: {note}"),
            None => "incident resolved".to_owned(),
        };
        incident.record(TimelineEntry::new(now, "incident.resolved", message).by(by));
        self.dirty_incidents.insert(id);
        Ok(incident)
    }
}

/// What a valid acknowledgement link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckClaim {
    pub alert: String,
    /// Which firing: a link of an earlier firing does not acknowledge a later one.
    pub fired_at: Timestamp,
    pub expires: Timestamp,
}

fn ack_message(alert: &str, fired_ms: i64, expires_s: i64) -> String {
    format!("windlass-ack.v1.{alert}.{fired_ms}.{expires_s}")
}

/// A token for a signed acknowledgement link: `<alert>.<fired ms>.<expires s>.<mac>`, where the
/// MAC is HMAC-SHA256 with the server's secret over `windlass-ack.v1.<alert>.<fired>.<expires>`,
/// in unpadded base64url. It acknowledges this firing of the alert only, until it expires.
pub fn ack_token(secret: &[u8], alert: &str, fired_at: Timestamp, expires: Timestamp) -> String {
    let (fired, expires) = (fired_at.as_millisecond(), expires.as_second());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, ack_message(alert, fired, expires).as_bytes());
    use base64::Engine as _;
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
    format!("{alert}.{fired}.{expires}.{mac}")
}

/// Checks a link's token: its MAC (in constant time) and its expiry.
pub fn verify_ack_token(secret: &[u8], token: &str, now: Timestamp) -> Result<AckClaim, AlertError> {
    let mut parts = token.split('.');
    let (Some(alert), Some(fired), Some(expires), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AlertError::BadLink("not four parts"));
    };
    let fired: i64 = fired.parse().map_err(|_| AlertError::BadLink("bad firing time"))?;
    let expires_s: i64 = expires.parse().map_err(|_| AlertError::BadLink("bad expiry"))?;
    use base64::Engine as _;
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| AlertError::BadLink("bad signature"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, ack_message(alert, fired, expires_s).as_bytes(), &mac)
        .map_err(|_| AlertError::BadLink("wrong signature"))?;
    let expires = Timestamp::from_second(expires_s).map_err(|_| AlertError::BadLink("bad expiry"))?;
    if now >= expires {
        return Err(AlertError::LinkExpired);
    }
    let fired_at = Timestamp::from_millisecond(fired).map_err(|_| AlertError::BadLink("bad firing time"))?;
    Ok(AckClaim { alert: alert.to_owned(), fired_at, expires })
}
