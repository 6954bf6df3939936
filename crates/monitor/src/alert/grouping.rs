//! Notification groups over time: `group_wait` before a group's first notification,
//! `group_interval` between later ones, `repeat_interval` for a firing alert nobody acknowledged,
//! and every resolution sent to whoever was told the alert fired.
//!
//! It turns due groups into [`super::Dispatch`]es for the caller to send; it must not send them
//! itself, and must not mute a resolution (silences mute news, never leave a page open).

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{Action, Alert, AlertStatus, AlertView, Dispatch, Engine, Member, add};
use crate::oncall;

impl Engine {
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

    pub(super) fn flush_group(&mut self, key: &str, now: Timestamp, out: &mut Vec<Dispatch>) {
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
}
