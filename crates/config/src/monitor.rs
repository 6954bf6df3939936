//! `[monitor]`: how SLOs are judged. The burn-rate alerts (Google SRE workbook defaults) and the
//! fewest requests a window needs before it counts.

use crate::decode::{At, Cx, Decode, Spanned, Table, Value};
use crate::model::{AlertSeverity, Config};
use crate::units::Duration;

/// The SLO accounting settings.
#[derive(Debug, Clone)]
pub struct Monitor {
    /// Multi-window burn-rate alerts: each fires when the burn rate over both its windows is above
    /// its factor.
    pub burn_alerts: Vec<BurnAlert>,
    /// Fewer requests (or probe samples) than this in a window make it "no data", never a burn.
    pub min_requests: u32,
}

#[derive(Debug, Clone)]
pub struct BurnAlert {
    pub factor: f64,
    pub long: Spanned<Duration>,
    pub short: Spanned<Duration>,
    pub severity: AlertSeverity,
}

impl Default for Monitor {
    fn default() -> Self {
        let rule = |factor, long: u64, short: u64, severity| BurnAlert {
            factor,
            long: Spanned::new(Duration::from_secs(long), 0..0),
            short: Spanned::new(Duration::from_secs(short), 0..0),
            severity,
        };
        Monitor {
            burn_alerts: vec![
                rule(14.4, 3600, 300, AlertSeverity::Critical),
                rule(6.0, 6 * 3600, 1800, AlertSeverity::Critical),
                rule(1.0, 3 * 86_400, 6 * 3600, AlertSeverity::Warning),
            ],
            min_requests: 100,
        }
    }
}

impl Decode for Monitor {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let defaults = Monitor::default();
        let burn_alerts = t.or(cx, "burn_alerts", defaults.burn_alerts);
        let min_requests = t.or(cx, "min_requests", defaults.min_requests);
        t.finish(cx);
        Some(Monitor { burn_alerts, min_requests })
    }
}

impl Decode for BurnAlert {
    fn expected() -> String {
        "{ factor = 14.4, long = \"1h\", short = \"5m\", severity = \"critical\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let factor = t.get(cx, "factor").and_then(|v| number(cx, v, &at.key("factor")));
        let long: Option<Spanned<Duration>> = t.required(cx, "long");
        let short: Option<Spanned<Duration>> = t.required(cx, "short");
        // A burn alert pages (critical) or opens a ticket (warning).
        let severity = t.get(cx, "severity").and_then(|v| {
            crate::decode::one_of(
                cx,
                v,
                &at.key("severity"),
                &[("critical", AlertSeverity::Critical), ("warning", AlertSeverity::Warning)],
            )
        });
        if t.get(cx, "factor").is_none() {
            cx.error(t.span(), format!("missing key `factor` in {}", at.table_name()));
        }
        t.finish(cx);
        let (factor, long, short) = (factor?, long?, short?);
        if long.value <= short.value {
            cx.error(
                long.span.clone(),
                format!(
                    "`{}`: the long window {} must be longer than the short window {}",
                    at.path, long.value, short.value
                ),
            );
        }
        Some(BurnAlert { factor, long, short, severity: severity.unwrap_or(AlertSeverity::Critical) })
    }
}

/// A positive number (integer or float).
fn number(cx: &mut Cx, value: &Value, at: &At) -> Option<f64> {
    use toml::de::DeValue;
    let n = match value.get_ref() {
        DeValue::Float(f) => f.to_string().parse::<f64>().ok(),
        DeValue::Integer(i) => i.to_string().parse::<f64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n > 0.0 && n.is_finite() => Some(n),
        _ => {
            cx.error(value.span(), format!("`{}` must be a number above 0, such as 14.4", at.path));
            None
        }
    }
}

/// A burn-rate window must hold whole samples: not shorter than the SLO collector's minute, nor
/// than the interval of a probe that stands in for a service's traffic.
pub(crate) fn check(cx: &mut Cx, config: &Config) {
    let collector = std::time::Duration::from_secs(60);
    for (index, rule) in config.monitor.burn_alerts.iter().enumerate() {
        for window in [&rule.long, &rule.short] {
            if window.value.as_std() < collector {
                cx.error(
                    window.span.clone(),
                    format!(
                        "`monitor.burn_alerts[{index}]`: the window {} is shorter than the SLO collection interval 1m",
                        window.value
                    ),
                );
                continue;
            }
            let slow = config.probes.iter().find(|(_, p)| {
                p.service.as_ref().is_some_and(|s| config.slo.contains_key(&s.value))
                    && p.interval.as_std() > window.value.as_std()
            });
            if let Some((name, probe)) = slow {
                cx.error(
                    window.span.clone(),
                    format!(
                        "`monitor.burn_alerts[{index}]`: the window {} is shorter than probe `{name}`'s interval {}: it could hold no probe sample",
                        window.value, probe.interval
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Source, parse};

    fn rendered(extra: &str) -> (bool, String) {
        let text = format!(
            "[project]\nname = \"shop\"\n[environments.production]\n[services.api]\nrun = \"api\"\n[slo.api]\navailability = \"99.9%\"\n{extra}"
        );
        let parsed = parse(&Source::new("windlass.toml", text));
        (parsed.has_errors(), parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n"))
    }

    #[test]
    fn burn_alerts_are_read_with_their_windows_checked() {
        let (errors, text) = rendered(
            "[monitor]\nmin_requests = 50\nburn_alerts = [{ factor = 10, long = \"2h\", short = \"10m\", severity = \"warning\" }]\n",
        );
        assert!(!errors, "{text}");

        let (_, text) = rendered("[monitor]\nburn_alerts = [{ factor = 2, long = \"5m\", short = \"1h\" }]\n");
        assert!(text.contains("the long window 5m must be longer than the short window 1h"), "{text}");
        assert!(text.contains("windlass.toml:9:"), "at the line of the rule: {text}");

        let (_, text) = rendered("[monitor]\nburn_alerts = [{ factor = 2, long = \"1h\", short = \"30s\" }]\n");
        assert!(text.contains("the window 30s is shorter than the SLO collection interval 1m"), "{text}");

        let probe =
            "[probes.home]\ntype = \"tcp\"\naddress = \"127.0.0.1:80\"\ninterval = \"10m\"\nservice = \"api\"\n";
        let (_, text) = rendered(&format!(
            "{probe}[monitor]\nburn_alerts = [{{ factor = 14.4, long = \"1h\", short = \"5m\" }}]\n"
        ));
        assert!(text.contains("shorter than probe `home`'s interval 10m"), "{text}");

        let (_, text) = rendered("[monitor]\nburn_alerts = [{ factor = \"fast\", long = \"1h\", short = \"5m\" }]\n");
        assert!(text.contains("must be a number above 0"), "{text}");
        let (_, text) =
            rendered("[monitor]\nburn_alerts = [{ factor = 2, long = \"1h\", short = \"5m\", severity = \"info\" }]\n");
        assert!(text.contains("severity"), "{text}");
    }
}
