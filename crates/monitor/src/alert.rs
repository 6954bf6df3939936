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
//!
//! The engine is one struct ([`Engine`], here) whose decisions are split by idea: `types` (the
//! data), `routing` (fire, resolve, which routes and groups), `grouping` (when a group is sent),
//! `escalation` (ladders), `acks` (acknowledgements and signed links), `silences` (silences and
//! maintenance windows), `incidents` (the incidents alerts join), `persist` (the store's side).
//! Each decision on one alert runs in a tracing span `alert{id}`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use windlass_config::Alerts;
use windlass_config::oncall::OnCall;

use crate::incident::Incident;

mod acks;
mod escalation;
mod grouping;
mod incidents;
pub mod persist;
mod routing;
mod silences;
mod types;

pub use acks::{AckClaim, ack_token, verify_ack_token};
pub use silences::{Matchers, NewSilence, Silence, SilenceKind};
pub use types::{
    Ack, AckVia, Action, Alert, AlertStatus, AlertView, Changes, Dispatch, Group, Ladder, Member, Signal, Snapshot,
    fingerprint, severity,
};

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
}
