//! The alert engine's data: signals, alerts and their acknowledgements, the notifications it
//! hands back (dispatches) and what it records (groups, changes, snapshots).
//!
//! Plain data with serde shapes the store and the API rely on; it must not decide anything (no
//! routing, timing or silencing here) and must not do I/O.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use windlass_config::AlertSeverity;

use super::Silence;
use crate::incident::Incident;
use crate::oncall::Recipient;

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
