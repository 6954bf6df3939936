//! Backup and verify schedules: `daily HH:MM` (UTC) or `every N` with N in `m`, `h` or `d`
//! (`every 6h`). The server asks [`next_due`] with its own clock and runs what is due.

use jiff::Timestamp;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every day at this minute of the day, UTC (`daily 03:00`).
    Daily { minute_of_day: u32 },
    /// At this interval after the last run (`every 6h`).
    Every { seconds: u64 },
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        let bad = || {
            Error::Schedule(format!("`{text}` is not a schedule; write `daily 03:00` (UTC) or `every 6h` (m, h or d)"))
        };
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
            let count: u64 = interval[..interval.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
            let unit_seconds = match unit {
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            if count == 0 {
                return Err(bad());
            }
            return Ok(Schedule::Every { seconds: count.saturating_mul(unit_seconds) });
        }
        Err(bad())
    }
}

/// When the scheduled job is next due. After a run: the first slot after `last_run` (a slot
/// missed while the server was down is due at once, and runs once). Never run: the next slot
/// from `now` (`every`: now).
pub fn next_due(schedule: Schedule, last_run: Option<Timestamp>, now: Timestamp) -> Timestamp {
    let clamp = |secs: i64| Timestamp::from_second(secs).unwrap_or(Timestamp::MAX);
    match schedule {
        Schedule::Every { seconds } => match last_run {
            Some(last) => clamp(last.as_second().saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX))),
            None => now,
        },
        Schedule::Daily { minute_of_day } => {
            let (from, strictly_after) = match last_run {
                Some(last) => (last.as_second(), true),
                None => (now.as_second(), false),
            };
            let slot = from.div_euclid(86_400) * 86_400 + i64::from(minute_of_day) * 60;
            let slot = if slot < from || (strictly_after && slot == from) { slot + 86_400 } else { slot };
            clamp(slot)
        }
    }
}

/// Whether the job is due at `now`.
pub fn is_due(schedule: Schedule, last_run: Option<Timestamp>, now: Timestamp) -> bool {
    next_due(schedule, last_run, now) <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn parses_schedules() {
        assert_eq!(Schedule::parse("daily 03:00").ok(), Some(Schedule::Daily { minute_of_day: 180 }));
        assert_eq!(Schedule::parse("every 6h").ok(), Some(Schedule::Every { seconds: 21_600 }));
        assert_eq!(Schedule::parse("every 30m").ok(), Some(Schedule::Every { seconds: 1800 }));
        for bad in ["daily 25:00", "every 0h", "every 6x", "weekly", "daily 3"] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn daily_fires_once_per_day_at_its_time() {
        let daily = Schedule::parse("daily 03:00").unwrap_or(Schedule::Every { seconds: 1 });
        let last = ts("2026-11-20T03:00:05Z");
        assert_eq!(next_due(daily, Some(last), ts("2026-11-20T12:00:00Z")), ts("2026-11-21T03:00:00Z"));
        assert!(!is_due(daily, Some(last), ts("2026-11-21T02:59:59Z")));
        assert!(is_due(daily, Some(last), ts("2026-11-21T03:00:00Z")));
        // Missed two days while down: due at once, and once.
        assert!(is_due(daily, Some(last), ts("2026-11-23T10:00:00Z")));
        // Never run: the next 03:00.
        assert_eq!(next_due(daily, None, ts("2026-11-20T04:00:00Z")), ts("2026-11-21T03:00:00Z"));
        assert_eq!(next_due(daily, None, ts("2026-11-20T02:00:00Z")), ts("2026-11-20T03:00:00Z"));
    }

    #[test]
    fn every_counts_from_the_last_run() {
        let every = Schedule::parse("every 6h").unwrap_or(Schedule::Every { seconds: 1 });
        let last = ts("2026-11-20T01:30:00Z");
        assert_eq!(next_due(every, Some(last), ts("2026-11-20T02:00:00Z")), ts("2026-11-20T07:30:00Z"));
        assert!(is_due(every, None, ts("2026-11-20T02:00:00Z")));
    }
}
