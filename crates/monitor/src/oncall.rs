//! Who is on call, and who a name in a route or escalation level reaches at a given moment.
//!
//! Pure functions of the config and a time: a weekly rotation hands over at a weekday and time
//! in the schedule's zone (so a hand-off stays at 09:00 local across daylight saving), overrides
//! win over the rotation (the last matching override wins), and business hours come from
//! `[oncall] business_hours`.

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::{Deserialize, Serialize};
use windlass_config::oncall::{Hours, OnCall, Schedule};
use windlass_config::{Alerts, ReceiverKind, Spanned};

/// Where one notification goes: a configured receiver (possibly on someone's behalf), or a
/// person's own email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Recipient {
    /// A receiver of `[alerts.receivers]`; `person` when it was reached through a person or a
    /// schedule.
    Receiver { name: String, person: Option<String> },
    /// A person's `email`: sent through an email receiver's SMTP settings with this address.
    Email { person: String, address: String },
}

impl Recipient {
    pub fn receiver(name: &str) -> Self {
        Recipient::Receiver { name: name.to_owned(), person: None }
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Receiver { name, person: None } => write!(f, "{name}"),
            Recipient::Receiver { name, person: Some(person) } => write!(f, "{name} ({person})"),
            Recipient::Email { person, address } => write!(f, "{person} <{address}>"),
        }
    }
}

/// The local time of `at` as a civil date-time in the schedule's zone, and the instant of a
/// local date-time (a time skipped by daylight saving is moved forward, a repeated one takes
/// the earlier instant).
fn instant(schedule: &Schedule, date: Date, time: jiff::civil::Time) -> Option<Timestamp> {
    date.to_datetime(time).to_zoned(schedule.time_zone.clone()).ok().map(|z| z.timestamp())
}

/// The first hand-off of the rotation: the hand-off weekday on or after `start`.
fn first_handoff_date(schedule: &Schedule) -> Date {
    let mut date = schedule.start;
    for _ in 0..7 {
        if date.weekday() == schedule.handoff.weekday {
            break;
        }
        date = date.tomorrow().unwrap_or(date);
    }
    date
}

/// Who the rotation alone (without overrides) puts on call at `at`; none before it starts.
pub fn rotation_at(schedule: &Schedule, at: Timestamp) -> Option<&str> {
    let first = first_handoff_date(schedule);
    let local: Zoned = at.to_zoned(schedule.time_zone.clone());
    // The most recent hand-off day at or before the local date.
    let back = (local.date().weekday().to_monday_zero_offset() - schedule.handoff.weekday.to_monday_zero_offset())
        .rem_euclid(7);
    let mut day = local.date().checked_sub(i64::from(back).days()).ok()?;
    if instant(schedule, day, schedule.handoff.time)? > at {
        day = day.checked_sub(7.days()).ok()?;
    }
    if day < first {
        return None;
    }
    let weeks = (day - first).get_days() / 7;
    let index = usize::try_from(weeks).ok()? % schedule.participants.len();
    schedule.participants.get(index).map(|p| p.value.as_str())
}

/// Who is on call for `schedule` at `at`: the last override covering `at`, else the rotation.
pub fn on_call_at(schedule: &Schedule, at: Timestamp) -> Option<&str> {
    let covering = schedule.overrides.iter().rev().find(|o| {
        let zone = schedule.time_zone.clone();
        let from = o.from.0.to_zoned(zone.clone()).ok().map(|z| z.timestamp());
        let until = o.until.0.to_zoned(zone).ok().map(|z| z.timestamp());
        matches!((from, until), (Some(from), Some(until)) if from <= at && at < until)
    });
    match covering {
        Some(o) => Some(o.person.value.as_str()),
        None => rotation_at(schedule, at),
    }
}

/// Whether `at` is in business hours; always true without `[oncall] business_hours`.
pub fn is_business_hours(oncall: &OnCall, at: Timestamp) -> bool {
    oncall.business_hours.as_ref().is_none_or(|window| window.is_open(at))
}

/// Whether a route's `hours` lets it match at `at`.
pub fn hours_match(oncall: &OnCall, hours: Option<Hours>, at: Timestamp) -> bool {
    match hours {
        None => true,
        Some(Hours::Business) => is_business_hours(oncall, at),
        Some(Hours::Off) => !is_business_hours(oncall, at),
    }
}

/// Who a name of a route or escalation level reaches at `at`: a receiver itself, a person's
/// receivers and email, or whoever a schedule puts on call. Unknown names reach nobody (the
/// config check refuses them).
pub fn resolve(alerts: &Alerts, oncall: &OnCall, name: &str, at: Timestamp) -> Vec<Recipient> {
    if alerts.receivers.contains_key(name) {
        return vec![Recipient::receiver(name)];
    }
    if let Some(schedule) = oncall.schedules.get(name) {
        return match on_call_at(schedule, at) {
            Some(person) => person_recipients(oncall, person),
            None => {
                tracing::warn!(schedule = name, "nobody is on call: the rotation has not started");
                Vec::new()
            }
        };
    }
    person_recipients(oncall, name)
}

fn person_recipients(oncall: &OnCall, name: &str) -> Vec<Recipient> {
    let Some(person) = oncall.people.get(name) else {
        return Vec::new();
    };
    let mut out: Vec<Recipient> = person
        .receivers
        .iter()
        .map(|r| Recipient::Receiver { name: r.value.clone(), person: Some(name.to_owned()) })
        .collect();
    if let Some(address) = &person.email {
        out.push(Recipient::Email { person: name.to_owned(), address: address.clone() });
    }
    out
}

/// Every recipient of a list of names, each once, in order.
pub fn resolve_all(alerts: &Alerts, oncall: &OnCall, names: &[Spanned<String>], at: Timestamp) -> Vec<Recipient> {
    let mut out: Vec<Recipient> = Vec::new();
    for name in names {
        for recipient in resolve(alerts, oncall, &name.value, at) {
            if !out.contains(&recipient) {
                out.push(recipient);
            }
        }
    }
    out
}

/// The email receiver whose SMTP settings carry a person's `email` (the first of type email).
pub fn email_receiver(alerts: &Alerts) -> Option<&str> {
    alerts.receivers.iter().find(|(_, r)| matches!(r.kind, ReceiverKind::Email { .. })).map(|(name, _)| name.as_str())
}
