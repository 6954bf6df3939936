//! Deploy windows: `"Mon-Fri 08:00-18:00 Europe/Berlin"` — the days and hours in which an
//! environment accepts deploys, in a named time zone (daylight saving included).

use jiff::Timestamp;
use jiff::civil::Time;
use jiff::tz::TimeZone;

use crate::decode::{At, Cx, Decode, Value};

#[derive(Debug, Clone)]
pub struct DeployWindow {
    pub text: String,
    /// Monday first.
    pub days: [bool; 7],
    pub start: Time,
    /// When `end <= start` the window runs past midnight into the next day.
    pub end: Time,
    pub time_zone: TimeZone,
}

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

impl DeployWindow {
    pub fn parse(text: &str) -> Result<Self, crate::InvalidValue> {
        let mut parts = text.split_whitespace();
        let (Some(days), Some(hours)) = (parts.next(), parts.next()) else {
            return Err(format!("`{text}` needs days and hours, as in \"Mon-Fri 08:00-18:00 Europe/Berlin\"").into());
        };
        let zone_name = parts.next().unwrap_or("UTC");
        if parts.next().is_some() {
            return Err(format!("`{text}` has more than days, hours and a time zone").into());
        }
        let days = parse_days(days)?;
        let (start, end) =
            hours.split_once('-').ok_or_else(|| format!("`{hours}` is not an hour range such as 08:00-18:00"))?;
        let parse_time =
            |t: &str| Time::strptime("%H:%M", t).map_err(|_| format!("`{t}` is not a time of day such as 08:00"));
        let time_zone = TimeZone::get(zone_name)
            .map_err(|_| format!("`{zone_name}` is not a known time zone (such as Europe/Berlin or UTC)"))?;
        Ok(DeployWindow { text: text.to_owned(), days, start: parse_time(start)?, end: parse_time(end)?, time_zone })
    }

    /// Whether a deploy at `at` falls inside the window.
    pub fn is_open(&self, at: Timestamp) -> bool {
        let local = at.to_zoned(self.time_zone.clone());
        let time = local.time();
        let weekday = local.weekday().to_monday_zero_offset() as usize;
        if self.start < self.end {
            self.days[weekday] && time >= self.start && time < self.end
        } else {
            // Overnight: the part after midnight belongs to the previous day's window.
            let previous = (weekday + 6) % 7;
            (self.days[weekday] && time >= self.start) || (self.days[previous] && time < self.end)
        }
    }
}

impl DeployWindow {
    /// When the window next opens at or after `at` (`at` itself when it is open); none for a
    /// window with no days.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        if self.is_open(at) {
            return Some(at);
        }
        let today = at.to_zoned(self.time_zone.clone()).date();
        (0..=7)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter(|date| self.days[date.weekday().to_monday_zero_offset() as usize])
            .filter_map(|date| date.to_datetime(self.start).to_zoned(self.time_zone.clone()).ok())
            .map(|zoned| zoned.timestamp())
            .find(|&opens| opens > at)
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let index = |name: &str| {
        DAYS.iter()
            .position(|d| d.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("`{name}` is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
    };
    let mut days = [false; 7];
    if text.eq_ignore_ascii_case("daily") {
        return Ok([true; 7]);
    }
    for part in text.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (index(from)?, index(to)?);
                let mut day = from;
                loop {
                    days[day] = true;
                    if day == to {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
            None => days[index(part)?] = true,
        }
    }
    Ok(days)
}

impl Decode for DeployWindow {
    fn expected() -> String {
        "days, hours and a time zone, such as \"Mon-Fri 08:00-18:00 Europe/Berlin\"".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let text = String::decode(cx, value, at)?;
        DeployWindow::parse(&text).map_err(|problem| cx.invalid(value, at, &Self::expected(), problem)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn office_hours_in_berlin() {
        let window = DeployWindow::parse("Mon-Fri 08:00-18:00 Europe/Berlin").unwrap();
        // 2026-11-23 is a Monday; Berlin is UTC+1 in November.
        assert!(window.is_open(at("2026-11-23T07:30:00Z")));
        assert!(!window.is_open(at("2026-11-23T06:30:00Z")));
        assert!(!window.is_open(at("2026-11-28T10:00:00Z")), "Saturday");
        // In July Berlin is UTC+2: 06:30Z is 08:30 local.
        assert!(window.is_open(at("2026-07-06T06:30:00Z")));
    }

    #[test]
    fn overnight_and_lists() {
        let window = DeployWindow::parse("Fri,Sat 22:00-02:00 UTC").unwrap();
        assert!(window.is_open(at("2026-11-27T23:00:00Z")), "Friday night");
        assert!(window.is_open(at("2026-11-28T01:00:00Z")), "after midnight belongs to Friday");
        assert!(!window.is_open(at("2026-11-27T01:00:00Z")), "Friday 01:00 belongs to Thursday");
    }

    #[test]
    fn the_next_opening_is_found_across_weekends_and_daylight_saving() {
        let window = DeployWindow::parse("Mon-Fri 08:00-18:00 Europe/Berlin").unwrap();
        let open = at("2026-11-23T09:00:00Z");
        assert_eq!(window.next_open(open), Some(open), "open now");
        // Friday evening: Monday 08:00 Berlin (UTC+1).
        assert_eq!(window.next_open(at("2026-11-27T19:00:00Z")), Some(at("2026-11-30T07:00:00Z")));
        // Saturday 28 March 2026: Monday 30 March is already summer time (UTC+2).
        assert_eq!(window.next_open(at("2026-03-28T12:00:00Z")), Some(at("2026-03-30T06:00:00Z")));
        let never = DeployWindow { days: [false; 7], ..window };
        assert_eq!(never.next_open(open), None);
    }

    #[test]
    fn bad_windows_say_why() {
        assert!(DeployWindow::parse("Mon-Fri").unwrap_err().to_string().contains("needs days and hours"));
        assert!(DeployWindow::parse("Mon-Fry 08:00-18:00").unwrap_err().to_string().contains("`Fry` is not a day"));
        assert!(DeployWindow::parse("Mon 8-18").unwrap_err().to_string().contains("not a time of day"));
        assert!(DeployWindow::parse("Mon 08:00-18:00 Mars/Olympus").unwrap_err().to_string().contains("time zone"));
    }
}
