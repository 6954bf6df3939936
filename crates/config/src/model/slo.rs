//! `[slo.<service>]`: service-level objectives accounted from the edge's live traffic.
//!
//! It must not compute burn rates; the monitor does.

use crate::decode::{At, Cx, Spanned, Table, Value};
use crate::units::{Duration, Percent};

/// Service-level objectives, accounted from the edge's live traffic.
#[derive(Debug, Clone)]
pub struct Slo {
    pub service: Spanned<String>,
    pub availability: Option<Percent>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
    pub error_rate: Option<Percent>,
    pub window: Duration,
}

impl Slo {
    pub(super) fn decode(cx: &mut Cx, service: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let availability = t.optional(cx, "availability");
        let (p95, p99) = t
            .get(cx, "latency")
            .and_then(|v| {
                let at = at.key("latency");
                let mut l = Table::open(cx, v, &at)?;
                let pair = (l.optional(cx, "p95"), l.optional(cx, "p99"));
                l.finish(cx);
                Some(pair)
            })
            .unwrap_or((None, None));
        let error_rate = t.optional(cx, "error_rate");
        let window = t.or(cx, "window", Duration::from_secs(30 * 86_400));
        t.finish(cx);
        if let (Some(p95), Some(p99)) = (p95, p99)
            && p99 < p95
        {
            cx.warning(
                value.span(),
                format!("`{at}`: the p99 target {p99} is below the p95 target {p95}", at = at.path),
            );
        }
        Some(Slo { service, availability, p95, p99, error_rate, window })
    }
}
