//! Incidents as the engine keeps them: alerts of one service and environment join its open
//! incident, people add notes and resolve it, and edge and deploy events are recorded on the
//! timeline.
//!
//! It records and returns what changed; it must not notify anyone.

use jiff::Timestamp;

use super::{AlertError, Engine};
use crate::incident::{Incident, IncidentStatus, TimelineEntry};

impl Engine {
    pub(super) fn join_incident(&mut self, id: &str, now: Timestamp) {
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
