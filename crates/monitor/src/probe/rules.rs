//! Metric rules over scraped pages. A probe keeps the scrapes its rules' windows need (only the
//! series they name) in memory; `increase` and `rate` compare the newest scrape with the newest
//! one at least a window old, following counter resets in between.

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use windlass_config::probes::{MetricExpr, MetricRule, Selector};

use super::exposition::Sample;

/// Why an expression has no value now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoValue {
    /// Not enough history yet, or a ratio over nothing (0/0): the rule cannot hold yet.
    Pending(String),
    /// The page lacks what the rule names: the probe fails.
    Missing(String),
}

/// A series' identity: its labels, sorted.
type SeriesKey = Vec<(String, String)>;

#[derive(Debug)]
struct Scrape {
    at: Timestamp,
    /// Per metric name, per series: the value.
    series: BTreeMap<String, BTreeMap<SeriesKey, f64>>,
}

/// The scrapes of one metrics probe.
#[derive(Debug, Default)]
pub struct History {
    scrapes: VecDeque<Scrape>,
}

impl History {
    /// Records a scrape taken at `at`, keeping only the series `rules` name and only as far back
    /// as their longest window needs.
    pub fn record(&mut self, at: Timestamp, samples: &[Sample], rules: &[MetricRule]) {
        let names: Vec<&str> = rules.iter().flat_map(|r| r.expr.selectors()).map(|s| s.name.as_str()).collect();
        let mut series: BTreeMap<String, BTreeMap<SeriesKey, f64>> = BTreeMap::new();
        for sample in samples.iter().filter(|s| names.contains(&s.name.as_str())) {
            let mut key = sample.labels.clone();
            key.sort();
            series.entry(sample.name.clone()).or_default().insert(key, sample.value);
        }
        // A clock set back makes older scrapes meaningless for windows.
        self.scrapes.retain(|s| s.at < at);
        self.scrapes.push_back(Scrape { at, series });
        let window = rules.iter().filter_map(|r| r.expr.window()).max();
        match window {
            Some(window) => {
                let cutoff = at - jiff::SignedDuration::try_from(window.as_std()).unwrap_or(jiff::SignedDuration::MAX);
                while self.scrapes.len() >= 2 && self.scrapes[1].at <= cutoff {
                    self.scrapes.pop_front();
                }
            }
            None => {
                while self.scrapes.len() > 1 {
                    self.scrapes.pop_front();
                }
            }
        }
    }

    /// How many scrapes are kept (bounded by the longest window over the interval).
    pub fn len(&self) -> usize {
        self.scrapes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scrapes.is_empty()
    }

    /// The value of `expr` as of the newest scrape.
    pub fn evaluate(&self, expr: &MetricExpr) -> Result<f64, NoValue> {
        let latest = self.scrapes.back().ok_or_else(|| NoValue::Pending("nothing scraped yet".into()))?;
        match expr {
            MetricExpr::Value(selector) => {
                let values = matching(latest, selector);
                if values.is_empty() {
                    return Err(NoValue::Missing(format!("no series matches `{selector}`")));
                }
                Ok(values.values().sum())
            }
            MetricExpr::Increase(selector, window) | MetricExpr::Rate(selector, window) => {
                let increase = self.increase(selector, *window)?;
                Ok(match expr {
                    MetricExpr::Rate(..) => increase / window.as_std().as_secs_f64(),
                    _ => increase,
                })
            }
            MetricExpr::Ratio(numerator, denominator) => {
                let (top, bottom) = (self.evaluate(numerator)?, self.evaluate(denominator)?);
                if bottom == 0.0 {
                    return Err(NoValue::Pending(format!("`{denominator}` is 0, so the ratio is undefined")));
                }
                Ok(top / bottom)
            }
        }
    }

    fn increase(&self, selector: &Selector, window: windlass_config::units::Duration) -> Result<f64, NoValue> {
        let Some(latest) = self.scrapes.back() else {
            return Err(NoValue::Pending("nothing scraped yet".into()));
        };
        let cutoff = latest.at - jiff::SignedDuration::try_from(window.as_std()).unwrap_or(jiff::SignedDuration::MAX);
        let Some(base) = self.scrapes.iter().rposition(|s| s.at <= cutoff) else {
            let oldest = self.scrapes.front().map_or(latest.at, |s| s.at);
            let have = latest.at.duration_since(oldest).as_secs();
            return Err(NoValue::Pending(format!(
                "`{selector}` has {} of the {window} of history its window needs",
                windlass_config::units::Duration::from_secs(u64::try_from(have).unwrap_or(0)),
            )));
        };
        let current = matching(latest, selector);
        if current.is_empty() {
            return Err(NoValue::Missing(format!("no series matches `{selector}`")));
        }
        let mut total = 0.0;
        for key in current.keys() {
            let mut previous: Option<f64> = None;
            for scrape in self.scrapes.iter().skip(base) {
                let Some(value) = scrape.series.get(&selector.name).and_then(|s| s.get(*key)).copied() else {
                    continue;
                };
                if let Some(before) = previous {
                    // A counter that went down was reset: it counted `value` since.
                    total += if value >= before { value - before } else { value };
                }
                previous = Some(value);
            }
        }
        Ok(total)
    }
}

fn matching<'s>(scrape: &'s Scrape, selector: &Selector) -> BTreeMap<&'s SeriesKey, f64> {
    let Some(series) = scrape.series.get(&selector.name) else {
        return BTreeMap::new();
    };
    series
        .iter()
        .filter(|(key, _)| selector.matches(&selector.name, key.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
        .map(|(key, value)| (key, *value))
        .collect()
}

/// A value for people: whole numbers without decimals, others with up to six.
pub fn show(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.is_finite() {
        let text = format!("{value:.6}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        value.to_string()
    }
}

/// What the rules of one scrape say: the reason of a failure, or of a pass.
pub fn judge(history: &History, rules: &[MetricRule]) -> (bool, String) {
    let mut firing = Vec::new();
    let mut missing = Vec::new();
    let mut pending = Vec::new();
    let mut passing = Vec::new();
    for rule in rules {
        match history.evaluate(&rule.expr) {
            Ok(value) if rule.op.holds(value, rule.value) => {
                let what = rule.message.clone().unwrap_or_else(|| rule.expr.to_string());
                firing.push(format!("{what}: {} {} {}", show(value), rule.op.as_str(), show(rule.value)));
            }
            Ok(value) => passing.push(format!("{} = {}", rule.expr, show(value))),
            Err(NoValue::Missing(problem)) => missing.push(problem),
            Err(NoValue::Pending(problem)) => pending.push(problem),
        }
    }
    if !firing.is_empty() || !missing.is_empty() {
        firing.extend(missing);
        return (false, firing.join("; "));
    }
    let mut reason = passing.join("; ");
    if !pending.is_empty() {
        if !reason.is_empty() {
            reason.push_str("; ");
        }
        reason.push_str(&format!("waiting: {}", pending.join("; ")));
    }
    (true, reason)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use windlass_config::probes::CompareOp;

    fn rule(expr: &str, op: CompareOp, value: f64) -> MetricRule {
        MetricRule { expr: MetricExpr::parse(expr).unwrap(), op, value, message: None }
    }

    fn page(text: &str) -> Vec<Sample> {
        super::super::exposition::parse(text).unwrap()
    }

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minutes * 60).unwrap()
    }

    #[test]
    fn increase_needs_a_full_window_follows_resets_and_forgets_old_scrapes() {
        let rules = [rule("increase(sent_total[10m])", CompareOp::Equal, 0.0)];
        let mut history = History::default();
        history.record(at(0), &page("sent_total 5\nother 1"), &rules);
        assert!(matches!(history.evaluate(&rules[0].expr), Err(NoValue::Pending(p)) if p.contains("0s of the 10m")));
        history.record(at(5), &page("sent_total 9"), &rules);
        history.record(at(10), &page("sent_total 2"), &rules); // restarted: counted 2 since
        assert_eq!(history.evaluate(&rules[0].expr), Ok(4.0 + 2.0));
        history.record(at(20), &page("sent_total 2"), &rules);
        assert_eq!(history.evaluate(&rules[0].expr), Ok(0.0), "stalled for the whole window");
        assert!(!judge(&history, &rules).0);
        assert_eq!(history.len(), 2, "only the base scrape and the newest are kept");
        let rate = MetricExpr::parse("rate(sent_total[10m])").unwrap();
        history.record(at(30), &page("sent_total 62"), &rules);
        assert_eq!(history.evaluate(&rate), Ok(0.1));
    }

    #[test]
    fn ratios_sum_matching_series_and_missing_series_fail() {
        let rules = [rule(r#"ratio(payments_total{result="success"}, payments_total)"#, CompareOp::Less, 0.998)];
        let mut history = History::default();
        history.record(
            at(0),
            &page("payments_total{result=\"success\"} 0\npayments_total{result=\"failure\"} 0"),
            &rules,
        );
        let (ok, reason) = judge(&history, &rules);
        assert!(ok && reason.contains("ratio is undefined"), "{reason}");
        history.record(
            at(1),
            &page("payments_total{result=\"success\"} 997\npayments_total{result=\"failure\"} 3"),
            &rules,
        );
        let (ok, reason) = judge(&history, &rules);
        assert!(!ok);
        assert_eq!(reason, "ratio(payments_total{result=\"success\"}, payments_total): 0.997 < 0.998");
        let missing = [rule("nope_total", CompareOp::Greater, 1.0)];
        history.record(at(2), &page("payments_total 1"), &missing);
        assert_eq!(judge(&history, &missing), (false, "no series matches `nope_total`".to_owned()));
        assert_eq!((show(3.0), show(0.25), show(f64::INFINITY)), ("3".into(), "0.25".into(), "inf".into()));
    }
}
