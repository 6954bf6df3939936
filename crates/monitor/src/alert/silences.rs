//! Silences and maintenance windows (silences the edge's maintenance switch opens and closes):
//! a silenced alert is recorded but not sent, and is sent at the next flush if it still fires
//! when the silence ends.
//!
//! A silence mutes news only: it must not swallow a resolution owed to someone already paged, and
//! must not match everything (a silence needs at least one matcher).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use windlass_config::AlertSeverity;

use super::{Alert, AlertError, Engine, severity};

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

pub(super) fn maintenance_id(environment: &str, service: &str) -> String {
    format!("maintenance/{environment}/{service}")
}

impl Engine {
    pub(super) fn silence_for(&self, alert: &Alert, now: Timestamp) -> Option<String> {
        self.silences.values().find(|s| s.is_active(now) && s.matchers.matches(alert)).map(|s| s.id.clone())
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
}
