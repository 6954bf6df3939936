//! The plain-text table of `windlass slo <env>`: one block per service.

use std::fmt::Write as _;

use super::report::{Report, ServiceReport, Severity, Source};

/// `5m`, `1h`, `3d`.
pub fn window_name(secs: u64) -> String {
    if secs >= 86_400 && secs.is_multiple_of(86_400) {
        format!("{}d", secs / 86_400)
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

fn percent(share: f64) -> String {
    let digits = if share.abs() >= 0.999 && share.abs() < 1.0 { 3 } else { 2 };
    format!("{:.*}%", digits, share * 100.0)
}

fn ms(value: f64) -> String {
    if value >= 1000.0 { format!("{:.2}s", value / 1000.0) } else { format!("{value:.0}ms") }
}

fn objective_line(service: &ServiceReport) -> String {
    let o = &service.objective;
    let mut parts = Vec::new();
    if let Some(a) = o.availability {
        parts.push(format!("availability {} over {}", percent(a), window_name(o.window.as_secs())));
    } else if let Some(e) = o.error_rate {
        parts.push(format!("error rate ≤ {} over {}", percent(e), window_name(o.window.as_secs())));
    }
    if let Some(p95) = o.p95 {
        parts.push(format!("p95 ≤ {}", ms(p95.as_secs_f64() * 1000.0)));
    }
    if let Some(p99) = o.p99 {
        parts.push(format!("p99 ≤ {}", ms(p99.as_secs_f64() * 1000.0)));
    }
    if parts.is_empty() { "no objective".to_owned() } else { parts.join(" · ") }
}

fn service_block(out: &mut String, s: &ServiceReport) {
    let _ = writeln!(out, "{}  {}", s.objective.service, objective_line(s));
    let window = window_name(s.window.window_secs);
    let sli = match (s.sli, s.window.source) {
        (Some(sli), source) => format!(
            "{}  ({} requests, {} errors{})",
            percent(sli),
            s.window.total,
            s.window.bad,
            if source == Source::Probes { ", from probes" } else { "" }
        ),
        (None, _) => format!("no data ({} samples)", s.window.total),
    };
    let _ = writeln!(out, "  {:<14}{sli}", format!("SLI ({window})"));
    if !s.budget.is_empty() {
        let cells: Vec<String> = s
            .budget
            .iter()
            .map(|b| match (b.share_left, b.minutes_left) {
                (Some(share), Some(minutes)) if share < 0.0 => format!(
                    "{} exhausted ({:.1} min over its {:.1})",
                    window_name(b.window_secs),
                    -minutes,
                    b.budget_minutes
                ),
                (Some(share), Some(minutes)) => {
                    format!(
                        "{} {} ({minutes:.1} of {:.1} min)",
                        window_name(b.window_secs),
                        percent(share),
                        b.budget_minutes
                    )
                }
                _ => format!("{} no data", window_name(b.window_secs)),
            })
            .collect();
        let _ = writeln!(out, "  {:<14}{}", "budget left", cells.join("   "));
        let cells: Vec<String> = s
            .burn_rates
            .iter()
            .map(|b| match b.rate {
                Some(rate) => format!("{} {rate:.1}×", window_name(b.window_secs)),
                None => format!("{} no data", window_name(b.window_secs)),
            })
            .collect();
        let _ = writeln!(out, "  {:<14}{}", "burn rate", cells.join("   "));
    }
    if !s.latency.is_empty() {
        let cells: Vec<String> = s
            .latency
            .iter()
            .map(|l| match (l.observed_ms, l.met) {
                (Some(observed), Some(met)) => format!(
                    "{} {} vs {} {}{}",
                    l.quantile,
                    ms(observed),
                    ms(l.target_ms),
                    if met { "ok" } else { "MISSED" },
                    l.slower_share.map(|share| format!(" ({} slower)", percent(share))).unwrap_or_default()
                ),
                _ => format!("{} no data", l.quantile),
            })
            .collect();
        let _ = writeln!(out, "  {:<14}{}", "latency", cells.join("   "));
    }
    if s.maintenance > 0 || s.rate_limited > 0 {
        let _ = writeln!(
            out,
            "  {:<14}{} maintenance, {} rate-limited answers (no budget spent)",
            "not counted", s.maintenance, s.rate_limited
        );
    }
    let alerts: Vec<String> = s
        .alerts
        .iter()
        .map(|a| {
            format!(
                "{} {}×: {} at {:.1}× and {} at {:.1}×",
                match a.severity {
                    Severity::Critical => "CRITICAL",
                    Severity::Warning => "WARNING",
                },
                a.factor,
                window_name(a.long_secs),
                a.long_rate,
                window_name(a.short_secs),
                a.short_rate
            )
        })
        .collect();
    let _ =
        writeln!(out, "  {:<14}{}", "alerts", if alerts.is_empty() { "none".to_owned() } else { alerts.join("; ") });
}

/// The whole report as text.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    if report.services.is_empty() {
        let _ = writeln!(out, "{}: no service has an [slo] objective", report.environment);
        return out;
    }
    let _ = writeln!(out, "SLOs of {} at {}", report.environment, report.at.strftime("%Y-%m-%d %H:%M UTC"));
    for service in &report.services {
        out.push('\n');
        service_block(&mut out, service);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn window_names() {
        assert_eq!(super::window_name(300), "5m");
        assert_eq!(super::window_name(3600), "1h");
        assert_eq!(super::window_name(6 * 3600), "6h");
        assert_eq!(super::window_name(3 * 86_400), "3d");
        assert_eq!(super::window_name(90), "90s");
    }
}
