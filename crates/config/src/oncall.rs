//! `[oncall]`: who answers alerts. People (with their own receivers or an email address), weekly
//! rotation schedules with overrides, named escalation policies, and the business hours that
//! routes may depend on (`hours = "business"` or `"off"`).
//!
//! Also the checks on `[alerts]` that need these: every name a route or an escalation level
//! notifies is a receiver, a person or a schedule (never two of them), and no route is shadowed by
//! an earlier, broader one.

use indexmap::IndexMap;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, did_you_mean, named_entries};
use crate::model::{Config, EscalationLevel};
use crate::window::DeployWindow;

/// The whole `[oncall]` table.
#[derive(Debug, Clone, Default)]
pub struct OnCall {
    /// When business hours are; routes with `hours` need it.
    pub business_hours: Option<DeployWindow>,
    pub people: IndexMap<String, Person>,
    pub schedules: IndexMap<String, Schedule>,
    pub policies: IndexMap<String, EscalationPolicy>,
}

/// Someone who can be paged.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: Spanned<String>,
    pub email: Option<String>,
    /// Receivers of `[alerts.receivers]` that reach this person (their phone, their Slack DM).
    pub receivers: Vec<Spanned<String>>,
}

impl Person {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let email: Option<Spanned<String>> = t.optional(cx, "email");
        let receivers = t.or(cx, "receivers", Vec::new());
        let span = t.span();
        t.finish(cx);
        if let Some(email) = &email
            && !crate::formats::is_email(&email.value)
        {
            cx.error(email.span.clone(), format!("`{}` is not an email address", email.value));
        }
        if email.is_none() && receivers.is_empty() {
            cx.error(span, format!("person `{}` cannot be reached", name.value)).help =
                Some("give them an `email` or `receivers`".into());
        }
        Some(Person { name, email: email.map(|e| e.value), receivers })
    }
}

/// A moment written in a schedule's own time zone: `"2026-11-24 18:00"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDateTime(pub DateTime);

impl Decode for LocalDateTime {
    fn expected() -> String {
        "a local date and time such as \"2026-11-24 18:00\"".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let text = String::decode(cx, value, at)?;
        match DateTime::strptime("%Y-%m-%d %H:%M", &text) {
            Ok(dt) => Some(LocalDateTime(dt)),
            Err(_) => {
                cx.invalid(value, at, &Self::expected(), format!("`{text}` is not a date and time"));
                None
            }
        }
    }
}

/// A day of the calendar: `"2026-11-02"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day(pub Date);

impl Decode for Day {
    fn expected() -> String {
        "a date such as \"2026-11-02\"".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let text = String::decode(cx, value, at)?;
        match text.parse::<Date>() {
            Ok(date) => Some(Day(date)),
            Err(_) => {
                cx.invalid(value, at, &Self::expected(), format!("`{text}` is not a date"));
                None
            }
        }
    }
}

/// When the on-call duty changes hands each week: a weekday and a time, `"Mon 09:00"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    pub weekday: Weekday,
    pub time: Time,
}

impl Handoff {
    pub fn parse(text: &str) -> Result<Self, crate::InvalidValue> {
        const DAYS: [(&str, Weekday); 7] = [
            ("Mon", Weekday::Monday),
            ("Tue", Weekday::Tuesday),
            ("Wed", Weekday::Wednesday),
            ("Thu", Weekday::Thursday),
            ("Fri", Weekday::Friday),
            ("Sat", Weekday::Saturday),
            ("Sun", Weekday::Sunday),
        ];
        let (day, time) = text.split_once(' ').ok_or_else(|| format!("`{text}` needs a weekday and a time"))?;
        let weekday = DAYS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(day))
            .map(|(_, w)| *w)
            .ok_or_else(|| format!("`{day}` is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))?;
        let time = Time::strptime("%H:%M", time.trim()).map_err(|_| format!("`{time}` is not a time such as 09:00"))?;
        Ok(Handoff { weekday, time })
    }
}

impl Decode for Handoff {
    fn expected() -> String {
        "a weekday and a time, such as \"Mon 09:00\"".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let text = String::decode(cx, value, at)?;
        Handoff::parse(&text).map_err(|problem| cx.invalid(value, at, &Self::expected(), problem)).ok()
    }
}

/// Someone covering a schedule for a span of time (`from` inclusive, `until` exclusive), in the
/// schedule's time zone.
#[derive(Debug, Clone)]
pub struct Override {
    pub person: Spanned<String>,
    pub from: LocalDateTime,
    pub until: LocalDateTime,
}

impl Decode for Override {
    fn expected() -> String {
        "{ person = \"dave\", from = \"2026-11-24 18:00\", until = \"2026-11-25 09:00\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let person = t.required(cx, "person");
        let from: Option<LocalDateTime> = t.required(cx, "from");
        let until: Option<LocalDateTime> = t.required(cx, "until");
        t.finish(cx);
        let (from, until) = (from?, until?);
        if until.0 <= from.0 {
            cx.error(value.span(), format!("`{}`: `until` must come after `from`", at.path));
        }
        Some(Override { person: person?, from, until })
    }
}

/// A weekly rotation: participants take turns, handing over at `handoff` each week; the first
/// participant's week starts at the first hand-off on or after `start`.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: Spanned<String>,
    pub time_zone: TimeZone,
    pub participants: Vec<Spanned<String>>,
    pub handoff: Handoff,
    pub start: Date,
    pub overrides: Vec<Override>,
}

impl Schedule {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let zone: Option<Spanned<String>> = t.optional(cx, "time_zone");
        let participants: Option<Vec<Spanned<String>>> = t.required(cx, "participants");
        let handoff = t.required(cx, "handoff");
        let start: Option<Day> = t.required(cx, "start");
        let overrides = t.or(cx, "overrides", Vec::new());
        let span = t.span();
        t.finish(cx);
        let time_zone = match &zone {
            None => TimeZone::UTC,
            Some(zone) => match TimeZone::get(&zone.value) {
                Ok(tz) => tz,
                Err(_) => {
                    cx.error(zone.span.clone(), format!("`{}` is not a known time zone", zone.value)).expected =
                        Some("a time zone such as Europe/Berlin or UTC".into());
                    return None;
                }
            },
        };
        let participants = participants?;
        if participants.is_empty() {
            cx.error(span, format!("schedule `{}` has no participants", name.value));
            return None;
        }
        Some(Schedule { name, time_zone, participants, handoff: handoff?, start: start?.0, overrides })
    }
}

/// Levels of an escalation policy: who is told once an alert stays unacknowledged this long.
#[derive(Debug, Clone)]
pub struct EscalationPolicy {
    pub name: Spanned<String>,
    pub levels: Vec<EscalationLevel>,
}

impl EscalationPolicy {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let levels = t.required(cx, "levels");
        t.finish(cx);
        Some(EscalationPolicy { name, levels: levels? })
    }
}

impl Decode for OnCall {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let business_hours = t.optional(cx, "business_hours");
        let people = t
            .get(cx, "people")
            .map(|v| named_entries(cx, v, &at.key("people"), "<person>", Person::decode))
            .unwrap_or_default();
        let schedules = t
            .get(cx, "schedules")
            .map(|v| named_entries(cx, v, &at.key("schedules"), "<schedule>", Schedule::decode))
            .unwrap_or_default();
        let policies = t
            .get(cx, "policies")
            .map(|v| named_entries(cx, v, &at.key("policies"), "<policy>", EscalationPolicy::decode))
            .unwrap_or_default();
        t.finish(cx);
        Some(OnCall { business_hours, people, schedules, policies })
    }
}

/// Whether a route applies in business hours, off-hours, or always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hours {
    Business,
    Off,
}

impl Decode for Hours {
    fn expected() -> String {
        "\"business\" or \"off\"".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        crate::decode::one_of(cx, value, at, &[("business", Hours::Business), ("off", Hours::Off)])
    }
}

fn unknown_target(cx: &mut Cx, name: &Spanned<String>, known: &[&str], receivers_only: bool) {
    if receivers_only {
        return crate::check::unknown(cx, name, "receiver", known);
    }
    let diagnostic = cx.error(name.span.clone(), format!("unknown receiver, person or schedule `{}`", name.value));
    diagnostic.expected = Some(if known.is_empty() {
        "a receiver, person or schedule, but none is declared".into()
    } else {
        format!("one of {}", known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "))
    });
    if let Some(suggestion) = did_you_mean(&name.value, known.iter().copied()) {
        diagnostic.help = Some(format!("did you mean `{suggestion}`?"));
    }
}

fn check_levels(cx: &mut Cx, levels: &[EscalationLevel], known: &[&str], receivers_only: bool) {
    let mut previous: Option<&Spanned<crate::units::Duration>> = None;
    for level in levels {
        for target in &level.notify {
            if !known.contains(&target.value.as_str()) {
                unknown_target(cx, target, known, receivers_only);
            }
        }
        if let Some(previous) = previous
            && level.after.value <= previous.value
        {
            cx.error(
                level.after.span.clone(),
                format!(
                    "escalation levels must come later and later: {} is not after {}",
                    level.after.value, previous.value
                ),
            );
        }
        previous = Some(&level.after);
    }
}

/// The checks of `[alerts]` routes and escalation and of `[oncall]` that need the whole config.
pub(crate) fn check(cx: &mut Cx, config: &Config) {
    let oncall = &config.oncall;
    let receivers = &config.alerts.receivers;
    // One namespace for everything a route or level can notify.
    for (name, person) in &oncall.people {
        if receivers.contains_key(name) {
            cx.error(person.name.span.clone(), format!("person `{name}` has the name of a receiver")).help =
                Some("routes and escalation levels name receivers, people and schedules alike".into());
        }
    }
    for (name, schedule) in &oncall.schedules {
        if receivers.contains_key(name) || oncall.people.contains_key(name) {
            cx.error(schedule.name.span.clone(), format!("schedule `{name}` has the name of a receiver or person"))
                .help = Some("routes and escalation levels name receivers, people and schedules alike".into());
        }
    }
    let receiver_names: Vec<&str> = receivers.keys().map(String::as_str).collect();
    let people: Vec<&str> = oncall.people.keys().map(String::as_str).collect();
    let known: Vec<&str> = receiver_names
        .iter()
        .chain(people.iter())
        .copied()
        .chain(oncall.schedules.keys().map(String::as_str))
        .collect();
    // Without people or schedules, the messages speak of receivers only, as they always did.
    let receivers_only = oncall.people.is_empty() && oncall.schedules.is_empty();
    for person in oncall.people.values() {
        for receiver in &person.receivers {
            if !receivers.contains_key(&receiver.value) {
                crate::check::unknown(cx, receiver, "receiver", &receiver_names);
            }
        }
    }
    for schedule in oncall.schedules.values() {
        for participant in schedule.participants.iter().chain(schedule.overrides.iter().map(|o| &o.person)) {
            if !oncall.people.contains_key(&participant.value) {
                crate::check::unknown(cx, participant, "person", &people);
            }
        }
    }
    for route in &config.alerts.routes {
        for target in &route.to {
            if !known.contains(&target.value.as_str()) {
                unknown_target(cx, target, &known, receivers_only);
            }
        }
        if let Some(policy) = &route.escalation
            && !oncall.policies.contains_key(&policy.value)
        {
            let policies: Vec<&str> = oncall.policies.keys().map(String::as_str).collect();
            crate::check::unknown(cx, policy, "escalation policy", &policies);
        }
        if route.hours.is_some() && oncall.business_hours.is_none() {
            cx.error(route.span.clone(), "a route with `hours` needs `oncall.business_hours`").help =
                Some("such as `[oncall] business_hours = \"Mon-Fri 09:00-18:00 Europe/Berlin\"`".into());
        }
    }
    check_levels(cx, &config.alerts.escalation, &known, receivers_only);
    for policy in oncall.policies.values() {
        if policy.levels.is_empty() {
            cx.error(policy.name.span.clone(), format!("escalation policy `{}` has no levels", policy.name.value));
        }
        check_levels(cx, &policy.levels, &known, receivers_only);
    }
    check_shadowed_routes(cx, config);
}

/// A route that an earlier route without `continue` matches whenever it would match is never
/// reached.
fn check_shadowed_routes(cx: &mut Cx, config: &Config) {
    let routes = &config.alerts.routes;
    for (j, later) in routes.iter().enumerate() {
        let shadow = routes[..j].iter().find(|earlier| {
            !earlier.continue_
                && covers(earlier.severity.as_ref(), later.severity.as_ref())
                && covers(earlier.service.as_ref().map(|s| &s.value), later.service.as_ref().map(|s| &s.value))
                && covers(earlier.environment.as_ref().map(|s| &s.value), later.environment.as_ref().map(|s| &s.value))
                && covers(earlier.hours.as_ref(), later.hours.as_ref())
        });
        if let Some(earlier) = shadow {
            let line = cx.source.position(earlier.span.start).line;
            cx.error(later.span.clone(), "this alert route is never used").help = Some(format!(
                "the route on line {line} comes first and matches every alert this one matches; \
                     put the narrower route first, or give the earlier one `continue = true`"
            ));
        }
    }
}

/// Whether a matcher (absent: anything) matches everything another matcher matches.
fn covers<T: PartialEq>(broad: Option<&T>, narrow: Option<&T>) -> bool {
    match (broad, narrow) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoffs_read_a_weekday_and_a_time() {
        let handoff = Handoff::parse("mon 09:30").unwrap();
        assert_eq!(handoff.weekday, Weekday::Monday);
        assert_eq!(handoff.time, Time::constant(9, 30, 0, 0));
        assert!(Handoff::parse("Monday").unwrap_err().to_string().contains("needs a weekday and a time"));
        assert!(Handoff::parse("Mnd 09:00").unwrap_err().to_string().contains("`Mnd` is not a day"));
        assert!(Handoff::parse("Mon 9h").unwrap_err().to_string().contains("not a time"));
    }

    #[test]
    fn a_broad_matcher_covers_a_narrow_one_only() {
        assert!(covers::<u8>(None, None));
        assert!(covers(None, Some(&1)));
        assert!(covers(Some(&1), Some(&1)));
        assert!(!covers(Some(&1), Some(&2)));
        assert!(!covers(Some(&1), None));
    }
}
