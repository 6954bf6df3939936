//! Escalation ladders: an unacknowledged alert climbs a level each time the time since its first
//! notification passes the level's `after` (its route's policy, or `[alerts] escalation` for
//! critical alerts).
//!
//! It must not escalate an acknowledged or resolved alert, and must not reach a recipient
//! except through a returned dispatch.

use jiff::Timestamp;
use windlass_config::EscalationLevel;

use super::{Action, AlertView, Dispatch, Engine, Ladder, add};
use crate::oncall;

impl Engine {
    pub(super) fn levels(&self, ladder: &Ladder) -> &[EscalationLevel] {
        match ladder {
            Ladder::Default => &self.alerts_config.escalation,
            Ladder::Policy(name) => self.oncall.policies.get(name).map_or(&[], |p| p.levels.as_slice()),
        }
    }

    pub(super) fn escalate(&mut self, now: Timestamp, out: &mut Vec<Dispatch>) {
        let ids: Vec<String> = self
            .alerts
            .values()
            .filter(|a| a.is_firing() && a.ack.is_none() && a.silenced_by.is_none() && a.ladder.is_some())
            .map(|a| a.id.clone())
            .collect();
        for id in ids {
            let _span = tracing::info_span!("alert", id = %id).entered();
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
}
