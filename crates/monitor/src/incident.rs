//! Incidents: opened by a critical alert for its service and environment (a second critical
//! alert there joins the open one), with a timeline of what happened (alerts firing and resolving,
//! acknowledgements, notes, deploys, failovers), closed by `resolve`. MTTR and MTBF per service
//! over a period, and a Markdown post-mortem filled from the timeline. All pure.

use std::fmt::Write as _;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentStatus {
    Open,
    Resolved,
}

impl IncidentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentStatus::Open => "open",
            IncidentStatus::Resolved => "resolved",
        }
    }
}

/// One line of an incident's timeline. `kind` is `alert.fired`, `alert.resolved`,
/// `alert.acknowledged`, `note`, `incident.opened`, `incident.resolved`, or what the caller feeds
/// (`deploy.started`, `failover`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Timestamp,
    pub kind: String,
    /// Who did it (a person, `windlass`, a token name).
    pub actor: Option<String>,
    pub message: String,
    /// The alert it is about, if any.
    pub alert: Option<String>,
}

impl TimelineEntry {
    pub fn new(at: Timestamp, kind: &str, message: impl Into<String>) -> Self {
        TimelineEntry { at, kind: kind.to_owned(), actor: None, message: message.into(), alert: None }
    }

    pub fn by(mut self, actor: &str) -> Self {
        self.actor = Some(actor.to_owned());
        self
    }

    pub fn about(mut self, alert: &str) -> Self {
        self.alert = Some(alert.to_owned());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub environment: String,
    pub service: String,
    pub title: String,
    pub status: IncidentStatus,
    pub opened_at: Timestamp,
    /// The first acknowledgement of one of its alerts.
    pub acknowledged_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub resolved_by: Option<String>,
    /// The alerts that joined it, in order.
    pub alerts: Vec<String>,
    /// In the order things happened (entries are inserted by time).
    pub timeline: Vec<TimelineEntry>,
}

impl Incident {
    pub fn open(id: u64, environment: &str, service: &str, title: &str, at: Timestamp) -> Self {
        Incident {
            id,
            environment: environment.to_owned(),
            service: service.to_owned(),
            title: title.to_owned(),
            status: IncidentStatus::Open,
            opened_at: at,
            acknowledged_at: None,
            resolved_at: None,
            resolved_by: None,
            alerts: Vec::new(),
            timeline: vec![TimelineEntry::new(at, "incident.opened", format!("incident opened: {title}"))],
        }
    }

    /// Adds an entry in time order (after entries of the same time).
    pub fn record(&mut self, entry: TimelineEntry) {
        let at = self.timeline.partition_point(|e| e.at <= entry.at);
        self.timeline.insert(at, entry);
    }

    /// How long it was (or has been, until `now`) open.
    pub fn duration(&self, now: Timestamp) -> Duration {
        span(self.opened_at, self.resolved_at.unwrap_or(now))
    }
}

fn span(from: Timestamp, to: Timestamp) -> Duration {
    Duration::from_millis(u64::try_from(to.as_millisecond() - from.as_millisecond()).unwrap_or(0))
}

/// Reliability of one service over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reliability {
    /// Incidents that opened in the period.
    pub incidents: usize,
    /// Mean time to resolve the resolved ones (opened to resolved).
    pub mttr: Option<Duration>,
    /// Mean time between failures: the time in the period not spent in an incident, divided by
    /// the number of incidents.
    pub mtbf: Option<Duration>,
    /// Time in the period spent in incidents (overlaps counted once).
    pub downtime: Duration,
}

/// MTTR and MTBF of `service` in `environment` over `[from, to)`. Incidents still open count
/// as down until `to`.
pub fn reliability(
    incidents: &[Incident],
    environment: &str,
    service: &str,
    from: Timestamp,
    to: Timestamp,
) -> Reliability {
    let mut mine: Vec<&Incident> = incidents
        .iter()
        .filter(|i| i.environment == environment && i.service == service)
        .filter(|i| i.opened_at < to && i.resolved_at.is_none_or(|r| r > from))
        .collect();
    mine.sort_by_key(|i| i.opened_at);
    let opened_in: Vec<&&Incident> = mine.iter().filter(|i| i.opened_at >= from).collect();
    let repairs: Vec<Duration> = opened_in.iter().filter_map(|i| i.resolved_at.map(|r| span(i.opened_at, r))).collect();
    let mttr = (!repairs.is_empty()).then(|| repairs.iter().sum::<Duration>() / count(repairs.len()));

    // Down time, clipped to the period, overlapping incidents merged.
    let mut downtime = Duration::ZERO;
    let mut cursor = from;
    for incident in &mine {
        let start = incident.opened_at.max(cursor);
        let end = incident.resolved_at.unwrap_or(to).min(to);
        if end > start {
            downtime += span(start, end);
            cursor = end;
        }
    }
    let up = span(from, to).saturating_sub(downtime);
    let mtbf = (!opened_in.is_empty()).then(|| up / count(opened_in.len()));
    Reliability { incidents: opened_in.len(), mttr, mtbf, downtime }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX).max(1)
}

/// A duration as people write it: `1h 05m`, `12m 30s`, `45s`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m"),
    }
}

fn time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Table cells must not break the Markdown table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The post-mortem of an incident, filled from its timeline; root cause, contributing factors
/// and action items are left for people to write.
pub fn postmortem(incident: &Incident, now: Timestamp) -> String {
    let mut md = String::new();
    let status = incident.status.as_str();
    let _ = writeln!(md, "# Post-mortem: incident {} — {}\n", incident.id, incident.title);
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "Service `{}` in `{}` was affected for {} ({} alert{}). Status: {status}.\n",
        incident.service,
        incident.environment,
        human(incident.duration(now)),
        incident.alerts.len(),
        if incident.alerts.len() == 1 { "" } else { "s" },
    );
    let _ = writeln!(md, "## Impact\n");
    let end = incident.resolved_at.map_or_else(|| "ongoing".to_owned(), time);
    let _ = writeln!(md, "- Impact window: {} → {end}", time(incident.opened_at));
    let _ = writeln!(md, "- Duration: {}", human(incident.duration(now)));
    let _ = writeln!(md, "- Users affected: _to be filled in_\n");
    let _ = writeln!(md, "## Response\n");
    let first_fired = incident.timeline.iter().find(|e| e.kind == "alert.fired").map_or(incident.opened_at, |e| e.at);
    let _ = writeln!(md, "| | when | after detection |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(md, "| Detected | {} | — |", time(first_fired));
    for (label, at) in [("Acknowledged", incident.acknowledged_at), ("Resolved", incident.resolved_at)] {
        match at {
            Some(at) => {
                let _ = writeln!(md, "| {label} | {} | {} |", time(at), human(span(first_fired, at)));
            }
            None => {
                let _ = writeln!(md, "| {label} | — | — |");
            }
        }
    }
    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(md, "| time (UTC) | event | who | what |");
    let _ = writeln!(md, "|---|---|---|---|");
    for entry in &incident.timeline {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            entry.at.strftime("%H:%M:%S"),
            cell(&entry.kind),
            cell(entry.actor.as_deref().unwrap_or("")),
            cell(&entry.message)
        );
    }
    let _ = writeln!(md, "\n## Root cause\n\n_To be filled in._\n");
    let _ = writeln!(md, "## Contributing factors\n\n_To be filled in._\n");
    let _ = writeln!(md, "## What went well\n\n_To be filled in._\n");
    let _ = writeln!(md, "## Action items\n\n| action | owner | due |\n|---|---|---|\n| | | |");
    md
}
