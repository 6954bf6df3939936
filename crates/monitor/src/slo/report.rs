//! The SLO figures, as pure functions of rollups, probe samples and a time: SLI and error budget
//! left over 1, 7 and 30 days, latency against its targets, burn rates, and the multi-window
//! burn-rate alerts of the Google SRE workbook (both windows must exceed the factor).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Counts, ProbeSample};

/// The objectives of one service (from `[slo.<service>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub service: String,
    /// The share of requests that must be answered without a server error (0.999).
    pub availability: Option<f64>,
    /// The highest acceptable share of errors; the budget when `availability` is not set.
    pub error_rate: Option<f64>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
    /// The period the error budget covers (30 days by default).
    pub window: Duration,
}

impl Objective {
    pub fn from_config(slo: &windlass_config::Slo) -> Self {
        Objective {
            service: slo.service.value.clone(),
            availability: slo.availability.map(|p| p.fraction()),
            error_rate: slo.error_rate.map(|p| p.fraction()),
            p95: slo.p95.map(|d| d.as_std()),
            p99: slo.p99.map(|d| d.as_std()),
            window: slo.window.as_std(),
        }
    }

    /// The share of requests allowed to fail: 1 - availability, else the error rate.
    pub fn budget_share(&self) -> Option<f64> {
        self.availability.map(|a| 1.0 - a).or(self.error_rate).filter(|b| *b > 0.0)
    }
}

/// One burn-rate alert rule: fires when the burn rate over *both* windows exceeds `factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnRule {
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
    pub severity: Severity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Page someone now.
    Critical,
    /// Open a ticket.
    Warning,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;

/// The workbook's table: 2% of a 30-day budget in an hour, 5% in six hours (pages), 10% in
/// three days (ticket).
impl Settings {
    /// The settings `[monitor]` asks for (the windows shown stay the defaults).
    pub fn from_config(monitor: &windlass_config::monitor::Monitor) -> Self {
        let rules = monitor
            .burn_alerts
            .iter()
            .map(|rule| BurnRule {
                long: rule.long.value.as_std(),
                short: rule.short.value.as_std(),
                factor: rule.factor,
                severity: match rule.severity {
                    windlass_config::AlertSeverity::Critical => Severity::Critical,
                    _ => Severity::Warning,
                },
            })
            .collect();
        Settings { min_samples: u64::from(monitor.min_requests), rules, ..Settings::default() }
    }
}

pub fn default_rules() -> Vec<BurnRule> {
    let rule = |long: u64, short: u64, factor: f64, severity| BurnRule {
        long: Duration::from_secs(long),
        short: Duration::from_secs(short),
        factor,
        severity,
    };
    vec![
        rule(HOUR, 5 * MINUTE, 14.4, Severity::Critical),
        rule(6 * HOUR, 30 * MINUTE, 6.0, Severity::Critical),
        rule(3 * DAY, 6 * HOUR, 1.0, Severity::Warning),
    ]
}

/// How the report is computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Fewer requests (or probe samples) than this in a window make it "no data", never a burn.
    pub min_samples: u64,
    pub rules: Vec<BurnRule>,
    /// The burn rates shown.
    pub burn_windows: Vec<Duration>,
    /// The windows the budget left is shown over.
    pub budget_windows: Vec<Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            min_samples: 100,
            rules: default_rules(),
            burn_windows: [5 * MINUTE, 30 * MINUTE, HOUR, 6 * HOUR, 3 * DAY].map(Duration::from_secs).to_vec(),
            budget_windows: [DAY, 7 * DAY, 30 * DAY].map(Duration::from_secs).to_vec(),
        }
    }
}

impl Settings {
    /// What is wrong with these settings when rows (or probe samples) come every `interval`: a
    /// window shorter than the interval can never hold a whole sample, and a rule's long window
    /// must be longer than its short one. For the config's checks, should the windows become
    /// configurable.
    pub fn problems(&self, interval: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        let name = |d: Duration| super::render::window_name(d.as_secs());
        let windows = self.burn_windows.iter().chain(&self.budget_windows);
        for window in windows.chain(self.rules.iter().flat_map(|r| [&r.long, &r.short])) {
            if *window < interval {
                problems.push(format!(
                    "the window {} is shorter than the collection interval {}",
                    name(*window),
                    name(interval)
                ));
            }
        }
        for rule in &self.rules {
            if rule.long <= rule.short {
                problems.push(format!(
                    "the long window {} of the {}× rule is not longer than its short window {}",
                    name(rule.long),
                    rule.factor,
                    name(rule.short)
                ));
            }
            if rule.factor <= 0.0 {
                problems.push(format!("the burn-rate factor {} is not above 0", rule.factor));
            }
        }
        problems
    }
}

/// A service's rollups in time order: `(start, span_secs, counts)`.
pub type Rows = [(Timestamp, i64, Counts)];

/// Where a window's good/bad counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Edge,
    Probes,
    /// Too few samples: neither a pass nor a burn.
    None,
}

/// Good and bad events over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    pub window_secs: u64,
    pub source: Source,
    pub total: u64,
    pub bad: u64,
}

impl WindowCounts {
    pub fn error_rate(&self) -> Option<f64> {
        (self.source != Source::None && self.total > 0).then(|| self.bad as f64 / self.total as f64)
    }
}

fn window_start(now: Timestamp, window: Duration) -> Timestamp {
    let ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    Timestamp::from_millisecond(now.as_millisecond().saturating_sub(ms)).unwrap_or(Timestamp::MIN)
}

/// The merged counts of the rows starting in `[now - window, now)`.
pub fn merged(rows: &Rows, now: Timestamp, window: Duration) -> Counts {
    let from = window_start(now, window);
    let mut total = Counts::default();
    for (start, _, counts) in rows {
        if *start >= from && *start < now {
            total.merge(counts);
        }
    }
    total
}

/// The good/bad counts of a window: the edge's requests; probe samples only when the edge saw
/// no request at all in the window; either only at `min_samples` or more.
pub fn window_counts(
    rows: &Rows,
    probes: &[ProbeSample],
    now: Timestamp,
    window: Duration,
    min_samples: u64,
) -> WindowCounts {
    let window_secs = window.as_secs();
    let from = window_start(now, window);
    // Counters only: merging histograms here would cost a pass over every bucket per window.
    let (mut requests, mut errors) = (0u64, 0u64);
    for (start, _, counts) in rows {
        if *start >= from && *start < now {
            requests += counts.requests;
            errors += counts.errors;
        }
    }
    if requests > 0 {
        let source = if requests >= min_samples { Source::Edge } else { Source::None };
        return WindowCounts { window_secs, source, total: requests, bad: errors };
    }
    let (mut good, mut bad) = (0u64, 0u64);
    for sample in probes.iter().filter(|s| s.minute >= from && s.minute < now) {
        good += sample.successes;
        bad += sample.failures;
    }
    let total = good + bad;
    let source = if total > 0 && total >= min_samples { Source::Probes } else { Source::None };
    WindowCounts { window_secs, source, total, bad }
}

/// The burn rate of a window: its error rate over the budget share (1× spends the budget exactly
/// over the SLO window). `None`: no data.
pub fn burn_rate(counts: &WindowCounts, budget_share: f64) -> Option<f64> {
    counts.error_rate().map(|rate| rate / budget_share)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetLeft {
    pub window_secs: u64,
    /// The whole budget of this window in minutes of full outage ((1 - target) × window).
    pub budget_minutes: f64,
    /// The share of the budget not yet spent (negative when overspent); `None`: no data.
    pub share_left: Option<f64>,
    pub minutes_left: Option<f64>,
    pub counts: WindowCounts,
}

/// The budget left over a window: 1 - bad / (budget share × total).
pub fn budget_left(counts: WindowCounts, budget_share: f64) -> BudgetLeft {
    let budget_minutes = budget_share * counts.window_secs as f64 / 60.0;
    let share_left = counts.error_rate().map(|rate| 1.0 - rate / budget_share);
    BudgetLeft {
        window_secs: counts.window_secs,
        budget_minutes,
        share_left,
        minutes_left: share_left.map(|s| s * budget_minutes),
        counts,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BurnRate {
    pub window_secs: u64,
    pub rate: Option<f64>,
    pub counts: WindowCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyFigure {
    /// `p95` or `p99`.
    pub quantile: String,
    pub target_ms: f64,
    /// Over the SLO window, from the merged histograms; `None`: no timed request.
    pub observed_ms: Option<f64>,
    pub met: Option<bool>,
    /// The share of requests slower than the target (at bucket resolution, ≤ 25%).
    pub slower_share: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub severity: Severity,
    pub factor: f64,
    pub long_secs: u64,
    pub short_secs: u64,
    pub long_rate: f64,
    pub short_rate: f64,
}

/// Everything `windlass slo` shows for a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub objective: Objective,
    /// Over the SLO window.
    pub sli: Option<f64>,
    pub window: WindowCounts,
    pub maintenance: u64,
    pub rate_limited: u64,
    pub budget: Vec<BudgetLeft>,
    pub burn_rates: Vec<BurnRate>,
    pub latency: Vec<LatencyFigure>,
    /// The burn-rate alerts firing now.
    pub alerts: Vec<Alert>,
}

/// An environment's report, what `GET /api/v1/slo/{env}` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub environment: String,
    pub at: Timestamp,
    pub services: Vec<ServiceReport>,
}

/// The burn-rate alerts that fire at `now`: both windows of a rule above its factor, neither
/// without data.
pub fn firing(
    rows: &Rows,
    probes: &[ProbeSample],
    now: Timestamp,
    budget_share: f64,
    settings: &Settings,
) -> Vec<Alert> {
    let rate = |window| burn_rate(&window_counts(rows, probes, now, window, settings.min_samples), budget_share);
    settings
        .rules
        .iter()
        .filter_map(|rule| {
            let long_rate = rate(rule.long)?;
            let short_rate = rate(rule.short)?;
            (long_rate > rule.factor && short_rate > rule.factor).then_some(Alert {
                severity: rule.severity,
                factor: rule.factor,
                long_secs: rule.long.as_secs(),
                short_secs: rule.short.as_secs(),
                long_rate,
                short_rate,
            })
        })
        .collect()
}

/// One service's report at `now`. `rows` are its rollups (any order), `probes` its probe samples.
pub fn service_report(
    objective: &Objective,
    rows: &Rows,
    probes: &[ProbeSample],
    now: Timestamp,
    settings: &Settings,
) -> ServiceReport {
    let counts = |window| window_counts(rows, probes, now, window, settings.min_samples);
    let window = counts(objective.window);
    let sli = window.error_rate().map(|rate| 1.0 - rate);
    let over_window = merged(rows, now, objective.window);
    let (budget, burn_rates, alerts) = match objective.budget_share() {
        Some(share) => (
            settings.budget_windows.iter().map(|w| budget_left(counts(*w), share)).collect(),
            settings
                .burn_windows
                .iter()
                .map(|w| {
                    let counts = counts(*w);
                    BurnRate { window_secs: w.as_secs(), rate: burn_rate(&counts, share), counts }
                })
                .collect(),
            firing(rows, probes, now, share, settings),
        ),
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let latency = [("p95", 0.95, objective.p95), ("p99", 0.99, objective.p99)]
        .into_iter()
        .filter_map(|(name, q, target)| {
            let target = target?;
            let target_micros = u64::try_from(target.as_micros()).unwrap_or(u64::MAX);
            let enough = over_window.requests >= settings.min_samples;
            let observed = over_window.quantile_micros(q).filter(|_| enough);
            Some(LatencyFigure {
                quantile: name.to_owned(),
                target_ms: target.as_secs_f64() * 1000.0,
                observed_ms: observed.map(|m| m as f64 / 1000.0),
                met: observed.map(|m| m <= target_micros),
                slower_share: over_window.share_slower_than(target_micros).filter(|_| enough),
            })
        })
        .collect();
    ServiceReport {
        objective: objective.clone(),
        sli,
        window,
        maintenance: over_window.maintenance,
        rate_limited: over_window.rate_limited,
        budget,
        burn_rates,
        latency,
        alerts,
    }
}

/// The report of every objective, from all rows and probe samples of the environment.
pub fn environment_report(
    environment: &str,
    objectives: &[Objective],
    rows: &BTreeMap<String, Vec<(Timestamp, i64, Counts)>>,
    probes: &[ProbeSample],
    now: Timestamp,
    settings: &Settings,
) -> Report {
    let services = objectives
        .iter()
        .map(|objective| {
            let service_rows = rows.get(&objective.service).map(Vec::as_slice).unwrap_or(&[]);
            let service_probes: Vec<ProbeSample> =
                probes.iter().filter(|p| p.service == objective.service).cloned().collect();
            service_report(objective, service_rows, &service_probes, now, settings)
        })
        .collect();
    Report { environment: environment.to_owned(), at: now, services }
}

/// Reads an environment's rollups from the store and reports on them at `now`.
///
/// Minute rows are read for the windows shorter than a day (and for the hours not merged yet),
/// hour rows before that: the rows never overlap, the short windows are exact to the minute and
/// the long ones to the hour, and a 30-day report reads about 1,100 rows a service.
pub async fn load_report(
    store: &dyn windlass_store::Store,
    environment: &str,
    objectives: &[Objective],
    probes: &[ProbeSample],
    now: Timestamp,
    settings: &Settings,
) -> Result<Report, super::SloError> {
    let windows = || {
        objectives
            .iter()
            .map(|o| o.window)
            .chain(settings.budget_windows.iter().copied())
            .chain(settings.burn_windows.iter().copied())
            .chain(settings.rules.iter().flat_map(|r| [r.long, r.short]))
    };
    let longest = windows().max().unwrap_or(Duration::from_secs(30 * DAY));
    let longest_short = windows().filter(|w| w.as_secs() < DAY).max().unwrap_or(Duration::ZERO);
    let from = window_start(now, longest);
    // Minutes from the hour before the longest short window, or from the first hour not merged.
    let merged_until = match store.last_rollup(environment, super::HOUR).await? {
        Some(last) => last.checked_add(jiff::SignedDuration::from_hours(1)).unwrap_or(Timestamp::MAX),
        None => Timestamp::MIN,
    };
    // ... and never before the first minute row still kept (older minutes live on as hours).
    let first_minute = store.first_rollup(environment, super::MINUTE, from).await?;
    let fine_from = super::floor_to(window_start(now, longest_short), super::HOUR)
        .max(first_minute.map_or(Timestamp::MIN, |m| super::floor_to(m, super::HOUR)))
        .min(merged_until)
        .max(from);
    let mut rows: BTreeMap<String, Vec<(Timestamp, i64, Counts)>> = BTreeMap::new();
    let hours = store.rollups(environment, None, Some(super::HOUR), from, fine_from).await?;
    let minutes = store.rollups(environment, None, Some(super::MINUTE), fine_from, now).await?;
    for row in hours.iter().chain(&minutes) {
        let counts = Counts::from_row(row)?;
        rows.entry(row.service.clone()).or_default().push((row.start, row.span_secs, counts));
    }
    Ok(environment_report(environment, objectives, &rows, probes, now, settings))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use windlass_edge::metrics::bucket_of;

    use super::*;

    fn start() -> Timestamp {
        "2026-11-01T00:00:00Z".parse().unwrap()
    }

    fn minute(i: i64) -> Timestamp {
        Timestamp::from_second(start().as_second() + i * 60).unwrap()
    }

    /// A minute of `requests` answers, `errors` of them 5xx, all at `micros`.
    fn counts(requests: u64, errors: u64, micros: u64) -> Counts {
        let mut c = Counts { requests, errors, ..Counts::default() };
        c.histogram[bucket_of(micros)] = requests;
        c
    }

    fn objective() -> Objective {
        Objective {
            service: "api".into(),
            availability: Some(0.999),
            error_rate: None,
            p95: Some(Duration::from_millis(300)),
            p99: None,
            window: Duration::from_secs(30 * DAY),
        }
    }

    /// `minutes` minutes of 1000 requests each ending at minute `end`, with `error_at(i)` errors
    /// in minute `i`.
    fn traffic(end: i64, minutes: i64, error_at: impl Fn(i64) -> u64) -> Vec<(Timestamp, i64, Counts)> {
        (end - minutes..end).map(|i| (minute(i), 60, counts(1000, error_at(i), 20_000))).collect()
    }

    fn severities(rows: &Rows, now: i64) -> Vec<(Severity, f64)> {
        firing(rows, &[], minute(now), 0.001, &Settings::default()).iter().map(|a| (a.severity, a.factor)).collect()
    }

    const NOW: i64 = 5 * 24 * 60; // five days of history before "now"

    #[test]
    fn a_fast_burn_over_both_windows_pages() {
        // 2% errors (20× the 0.1% budget) for the last 70 minutes.
        let rows = traffic(NOW, NOW, |i| if i >= NOW - 70 { 20 } else { 0 });
        assert_eq!(severities(&rows, NOW), vec![(Severity::Critical, 14.4)]);
    }

    #[test]
    fn a_burn_that_stopped_ten_minutes_ago_does_not_page() {
        // 3% errors for the 50 minutes before the last 10: the hour still exceeds 14.4× (25×),
        // the last 5 minutes are clean.
        let rows = traffic(NOW, NOW, |i| if (NOW - 60..NOW - 10).contains(&i) { 30 } else { 0 });
        let hour = burn_rate(&window_counts(&rows, &[], minute(NOW), Duration::from_secs(HOUR), 100), 0.001).unwrap();
        assert!(hour > 14.4, "{hour}");
        assert_eq!(severities(&rows, NOW), vec![]);
    }

    #[test]
    fn a_short_spike_does_not_page() {
        // Every request of the last 3 minutes failed: the 5m window burns 600×, the hour 50×...
        // so make the spike small enough that the hour stays below 14.4×: 10% for 3 minutes.
        let rows = traffic(NOW, NOW, |i| if i >= NOW - 3 { 100 } else { 0 });
        let rate = |w| burn_rate(&window_counts(&rows, &[], minute(NOW), Duration::from_secs(w), 100), 0.001).unwrap();
        assert!(rate(5 * MINUTE) > 14.4);
        assert!(rate(HOUR) < 14.4);
        assert_eq!(severities(&rows, NOW), vec![]);
    }

    #[test]
    fn a_slow_burn_opens_a_ticket() {
        // 0.15% errors (1.5×) for four days: the 3d and 6h windows exceed 1×, nothing else.
        let rows = traffic(NOW, NOW, |i| if i % 20 < 6 { 5 } else { 0 }); // 30 errors per 20000 requests
        assert_eq!(severities(&rows, NOW), vec![(Severity::Warning, 1.0)]);
    }

    #[test]
    fn too_few_requests_are_no_data_never_a_burn() {
        // 10 requests a minute, all failing, for two minutes: 20 < 100 samples in every window.
        let rows: Vec<_> = (NOW - 2..NOW).map(|i| (minute(i), 60, counts(10, 10, 1_000))).collect();
        let report = service_report(&objective(), &rows, &[], minute(NOW), &Settings::default());
        assert!(report.alerts.is_empty());
        assert!(report.burn_rates.iter().all(|b| b.rate.is_none() && b.counts.source == Source::None));
        assert_eq!(report.sli, None);
    }

    #[test]
    fn settings_are_checked_against_the_interval() {
        assert!(Settings::default().problems(Duration::from_secs(60)).is_empty());
        let mut settings = Settings::default();
        settings.rules[0].short = Duration::from_secs(30);
        settings.rules[2].long = Duration::from_secs(6 * HOUR);
        let problems = settings.problems(Duration::from_secs(60));
        assert_eq!(
            problems,
            vec![
                "the window 30s is shorter than the collection interval 1m".to_owned(),
                "the long window 6h of the 1× rule is not longer than its short window 6h".to_owned(),
            ]
        );
    }

    #[test]
    fn budget_left_arithmetic() {
        // 99.9% over 30 days allows 43.2 minutes.
        let o = objective();
        let full = budget_left(
            WindowCounts { window_secs: 30 * DAY, source: Source::Edge, total: 1_000_000, bad: 0 },
            o.budget_share().unwrap(),
        );
        assert!((full.budget_minutes - 43.2).abs() < 1e-9, "{}", full.budget_minutes);
        assert_eq!(full.share_left, Some(1.0));
        // A quarter of the allowed 1000 errors spent: 75% and 32.4 minutes left.
        let quarter = budget_left(
            WindowCounts { window_secs: 30 * DAY, source: Source::Edge, total: 1_000_000, bad: 250 },
            0.001,
        );
        assert!((quarter.share_left.unwrap() - 0.75).abs() < 1e-9);
        assert!((quarter.minutes_left.unwrap() - 32.4).abs() < 1e-9);
        // Overspent: negative.
        let over = budget_left(WindowCounts { window_secs: DAY, source: Source::Edge, total: 1000, bad: 2 }, 0.001);
        assert!((over.share_left.unwrap() + 1.0).abs() < 1e-9);
        assert!((over.budget_minutes - 1.44).abs() < 1e-9);
    }

    #[test]
    fn maintenance_answers_consume_no_budget() {
        // A day of maintenance pages (counted apart by the edge) and healthy traffic.
        let rows: Vec<_> = (NOW - 1440..NOW)
            .map(|i| {
                let mut c = counts(100, 0, 5_000);
                c.maintenance = 500;
                c.rate_limited = 50;
                (minute(i), 60, c)
            })
            .collect();
        let report = service_report(&objective(), &rows, &[], minute(NOW), &Settings::default());
        assert_eq!(report.sli, Some(1.0));
        assert_eq!(report.budget[0].share_left, Some(1.0));
        assert_eq!(report.maintenance, 500 * 1440);
        assert!(report.alerts.is_empty());
    }

    #[test]
    fn probes_count_only_without_edge_traffic_and_with_enough_samples() {
        let o = objective();
        // One failed probe of two per minute over 5 minutes: 10 samples, below 100: no data.
        let probes: Vec<_> = (NOW - 5..NOW)
            .map(|i| ProbeSample { service: "api".into(), minute: minute(i), successes: 1, failures: 1 })
            .collect();
        let report = service_report(&o, &[], &probes, minute(NOW), &Settings::default());
        assert!(report.alerts.is_empty());
        assert_eq!(report.burn_rates[0].counts.source, Source::None);
        // Three days of probes at 2 a minute with 1% failures: enough samples, from the probes.
        let probes: Vec<_> = (NOW - 3 * 1440..NOW)
            .map(|i| ProbeSample {
                service: "api".into(),
                minute: minute(i),
                successes: if i % 50 == 0 { 1 } else { 2 },
                failures: u64::from(i % 50 == 0),
            })
            .collect();
        let report = service_report(&o, &[], &probes, minute(NOW), &Settings::default());
        let three_days = report.burn_rates.iter().find(|b| b.window_secs == 3 * DAY).unwrap();
        assert_eq!(three_days.counts.source, Source::Probes);
        assert!((three_days.rate.unwrap() - 10.0).abs() < 0.1, "{:?}", three_days.rate);
        // With edge traffic in the window, the probes are ignored.
        let rows = traffic(NOW, 3 * 1440, |_| 0);
        let report = service_report(&o, &rows, &probes, minute(NOW), &Settings::default());
        let three_days = report.burn_rates.iter().find(|b| b.window_secs == 3 * DAY).unwrap();
        assert_eq!((three_days.counts.source, three_days.rate), (Source::Edge, Some(0.0)));
    }

    #[test]
    fn latency_from_merged_histograms() {
        // 97% at 20 ms, 3% at 800 ms: p95 meets 300 ms, p99 does not; 3% slower than 300 ms.
        let mut o = objective();
        o.p99 = Some(Duration::from_millis(500));
        let rows: Vec<_> = (NOW - 100..NOW)
            .map(|i| {
                let mut c = counts(97, 0, 20_000);
                c.requests = 100;
                c.histogram[bucket_of(800_000)] += 3;
                (minute(i), 60, c)
            })
            .collect();
        let report = service_report(&o, &rows, &[], minute(NOW), &Settings::default());
        let p95 = &report.latency[0];
        assert_eq!(p95.met, Some(true));
        assert!(p95.observed_ms.unwrap() <= 25.0);
        assert!((p95.slower_share.unwrap() - 0.03).abs() < 1e-9);
        let p99 = &report.latency[1];
        assert_eq!(p99.met, Some(false));
        assert!(p99.observed_ms.unwrap() >= 800.0);
    }
}
