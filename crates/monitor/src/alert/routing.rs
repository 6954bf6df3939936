//! Firing and resolving: a signal becomes an alert (or a new occurrence of one), is routed
//! (`[alerts] routes`, first match wins unless a route says `continue`, `hours` judged at the
//! moment it fires) and joins one group per matched route.
//!
//! It decides where an alert goes; it must not send (the first notification waits for the group,
//! see `grouping`) and must not read a clock: every time is the caller's `now`.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use windlass_config::AlertSeverity;

use super::{Alert, AlertStatus, Dispatch, Engine, Group, Ladder, Member, Signal};
use crate::incident::{IncidentStatus, TimelineEntry};
use crate::oncall;

impl Engine {
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
        let _span = tracing::info_span!("alert", id = %id).entered();
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

    /// Records that a signal stopped firing; unknown or resolved alerts are left alone.
    pub fn resolve(&mut self, signal: &Signal, now: Timestamp) -> Vec<Dispatch> {
        self.resolve_id(&signal.fingerprint(), now)
    }

    /// [`Engine::resolve`] by alert id.
    pub fn resolve_id(&mut self, id: &str, now: Timestamp) -> Vec<Dispatch> {
        let _span = tracing::info_span!("alert", id).entered();
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
}
