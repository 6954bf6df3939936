//! Backup and verify schedules (`[database] backup.schedule|verify`): `daily HH:MM` (UTC) or
//! `every N` with N in `m`, `h` or `d` (`every 6h`), parsed once here into a [`Schedule`].
//!
//! This module only reads the grammar; when a job is due is `windlass-db`'s `schedule` (with the
//! server's clock), which takes the parsed type and never sees the text.

use std::fmt;
use std::str::FromStr;

/// When a scheduled database job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every day at this minute of the day, UTC (`daily 03:00`).
    Daily { minute_of_day: u32 },
    /// At this interval after the last run (`every 6h`).
    Every { seconds: u64 },
}

/// A text that is not a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a schedule; write `daily 03:00` (UTC) or `every 6h` (m, h or d)")]
pub struct ScheduleError {
    /// The text as given, trimmed.
    pub text: String,
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        let text = text.trim();
        let bad = || ScheduleError { text: text.to_owned() };
        if let Some(time) = text.strip_prefix("daily ") {
            let (h, m) = time.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            return Ok(Schedule::Daily { minute_of_day: h * 60 + m });
        }
        if let Some(interval) = text.strip_prefix("every ") {
            let interval = interval.trim();
            let unit = interval.chars().last().ok_or_else(bad)?;
            let unit_seconds = match unit {
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            let count: u64 = interval[..interval.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
            if count == 0 {
                return Err(bad());
            }
            return Ok(Schedule::Every { seconds: count.saturating_mul(unit_seconds) });
        }
        Err(bad())
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Schedule::parse(text)
    }
}

/// The schedule as it would be written (`daily 03:00`, `every 6h`), in the largest whole unit.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Schedule::Daily { minute_of_day } => write!(f, "daily {:02}:{:02}", minute_of_day / 60, minute_of_day % 60),
            Schedule::Every { seconds } if seconds % 86_400 == 0 => write!(f, "every {}d", seconds / 86_400),
            Schedule::Every { seconds } if seconds % 3600 == 0 => write!(f, "every {}h", seconds / 3600),
            Schedule::Every { seconds } => write!(f, "every {}m", seconds / 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn parses_schedules() {
        assert_eq!(Schedule::parse("daily 03:00").ok(), Some(Schedule::Daily { minute_of_day: 180 }));
        assert_eq!(Schedule::parse(" daily  23:59 ").ok(), Some(Schedule::Daily { minute_of_day: 23 * 60 + 59 }));
        assert_eq!(Schedule::parse("every 6h").ok(), Some(Schedule::Every { seconds: 21_600 }));
        assert_eq!(Schedule::parse("every 30m").ok(), Some(Schedule::Every { seconds: 1800 }));
        assert_eq!(Schedule::parse("every 2d").ok(), Some(Schedule::Every { seconds: 172_800 }));
        for bad in [
            "daily 25:00",
            "daily 24:00",
            "daily 03:60",
            "every 0h",
            "every 6x",
            "every h",
            "every 6é",
            "weekly",
            "daily 3",
            "",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_schedule_is_written_back_as_read() {
        for text in ["daily 03:00", "daily 23:59", "every 6h", "every 90m", "every 2d"] {
            assert_eq!(Schedule::parse(text).map(|s| s.to_string()).as_deref(), Ok(text));
        }
    }

    #[test]
    fn the_error_names_the_text_and_the_grammar() {
        let err = Schedule::parse(" nightly ").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("`nightly` is not a schedule; write `daily 03:00` (UTC) or `every 6h` (m, h or d)")
        );
    }
}
