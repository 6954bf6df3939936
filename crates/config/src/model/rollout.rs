//! How a service's new version takes traffic: the rollout `strategy` (rolling, blue-green,
//! canary steps) and the canary's automatic `analysis`.
//!
//! It must not read metrics or decide a canary's verdict; the pipeline does.

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, integer_in, one_of};
use crate::units::{Duration, Percent};

use super::count;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryStep {
    /// Share of new clients sent to the canary, 1..=100.
    pub weight: u8,
    pub pause: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Rolling,
    BlueGreen,
    Canary(Vec<CanaryStep>),
}

impl Decode for Strategy {
    fn expected() -> String {
        "\"rolling\", \"blue-green\" or { canary = [ { weight = 10, pause = \"1m\" }, ... ] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        if value.get_ref().is_str() {
            let kind = one_of(cx, value, at, &[("rolling", 0), ("blue-green", 1), ("canary", 2)])?;
            return match kind {
                0 => Some(Strategy::Rolling),
                1 => Some(Strategy::BlueGreen),
                _ => {
                    cx.invalid(value, at, &Self::expected(), "a canary needs its steps");
                    None
                }
            };
        }
        if !value.get_ref().is_table() {
            cx.wrong_type(value, at, &Self::expected());
            return None;
        }
        let mut t = Table::open(cx, value, at)?;
        let steps_value = t.get(cx, "canary");
        let steps: Option<Vec<Spanned<CanaryStep>>> =
            steps_value.and_then(|v| Decode::decode(cx, v, &at.key("canary")));
        t.finish(cx);
        let Some(steps_value) = steps_value else {
            cx.invalid(value, at, &Self::expected(), "the table form names a canary");
            return None;
        };
        let steps = steps?;
        if steps.is_empty() {
            cx.invalid(steps_value, &at.key("canary"), "at least one step", "a canary needs at least one step");
            return None;
        }
        let mut ok = true;
        for pair in steps.windows(2) {
            if pair[1].weight <= pair[0].weight {
                ok = false;
                cx.error(
                    pair[1].span.clone(),
                    format!("canary weights must rise: {} comes after {}", pair[1].weight, pair[0].weight),
                )
                .expected = Some(format!("a weight above {}", pair[0].weight));
            }
        }
        ok.then(|| Strategy::Canary(steps.into_iter().map(|s| s.value).collect()))
    }
}

impl Decode for CanaryStep {
    fn expected() -> String {
        "{ weight = 1..100, pause = \"1m\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let weight = match t.get(cx, "weight") {
            Some(v) => integer_in(cx, v, &at.key("weight"), 1..=100),
            None => {
                cx.error(t.span(), format!("missing key `weight` in canary step `{}`", at.path)).expected =
                    Some("a weight from 1 to 100".into());
                None
            }
        };
        let pause = t.or(cx, "pause", Duration::from_secs(60));
        t.finish(cx);
        Some(CanaryStep { weight: weight? as u8, pause })
    }
}

/// Automatic canary analysis, read from the edge's live metrics of the canary pool.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub interval: Duration,
    pub max_error_rate: Option<Percent>,
    pub max_p95: Option<Duration>,
    pub max_p99: Option<Duration>,
    /// Fewer requests than this in an interval make it inconclusive, never a pass.
    pub min_requests: u32,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
    pub compare_to_stable: bool,
}

impl Decode for Analysis {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let analysis = Analysis {
            interval: t.or(cx, "interval", Duration::from_secs(10)),
            max_error_rate: t.optional(cx, "max_error_rate"),
            max_p95: t.optional(cx, "max_p95"),
            max_p99: t.optional(cx, "max_p99"),
            min_requests: count(cx, &mut t, "min_requests", 20),
            failure_limit: count(cx, &mut t, "failure_limit", 1),
            inconclusive_limit: count(cx, &mut t, "inconclusive_limit", 3),
            compare_to_stable: t.or(cx, "compare_to_stable", false),
        };
        t.finish(cx);
        Some(analysis)
    }
}
