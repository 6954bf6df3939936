//! When a backup or verify job is due. The schedule itself (`daily 03:00` UTC, `every 6h`) is
//! parsed once by `windlass-config` ([`Schedule`]); the server asks [`next_due`] with its own
//! clock and runs what is due. This module must not read the schedule's text.

use jiff::Timestamp;

pub use windlass_config::schedule::Schedule;

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
