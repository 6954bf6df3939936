//! `windlass slo <env>`: each service's objectives, SLI, error budget left, burn rates, latency
//! against its targets and the burn-rate alerts firing now (`GET /api/v1/slo/{env}`). Exits 1
//! while a burn-rate alert fires, so a script can gate on it.

use std::time::Duration;

use windlass_api::slo as wire;
use windlass_monitor::slo::{render, report};

use crate::client::{self, Client, Connection};
use crate::output::get;
use crate::{Outcome, OutputFormat};

#[derive(clap::Args)]
pub struct Args {
    environment: String,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let answer: wire::SloReport =
        client::runtime()?.block_on(get(&client, &format!("/slo/{}", client::segment(&args.environment))))?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        OutputFormat::Text => print!("{}", render::render(&for_render(&answer)?)),
    }
    let firing = answer.services.iter().any(|s| !s.alerts.is_empty());
    Ok(if firing { Outcome::NotOk } else { Outcome::Ok })
}

// The table is the monitor's renderer (its own tests cover it), which takes the monitor's report:
// the API's report converts back into it field by field.

fn duration(span: wire::Span) -> Duration {
    Duration::new(span.secs, span.nanos)
}

fn counts(counts: &wire::WindowCounts) -> report::WindowCounts {
    report::WindowCounts {
        window_secs: counts.window_secs,
        source: match counts.source {
            wire::Source::Edge => report::Source::Edge,
            wire::Source::Probes => report::Source::Probes,
            wire::Source::None => report::Source::None,
        },
        total: counts.total,
        bad: counts.bad,
    }
}

fn service(service: &wire::ServiceReport) -> report::ServiceReport {
    let o = &service.objective;
    report::ServiceReport {
        objective: report::Objective {
            service: o.service.clone(),
            availability: o.availability,
            error_rate: o.error_rate,
            p95: o.p95.map(duration),
            p99: o.p99.map(duration),
            window: duration(o.window),
        },
        sli: service.sli,
        window: counts(&service.window),
        maintenance: service.maintenance,
        rate_limited: service.rate_limited,
        budget: service
            .budget
            .iter()
            .map(|b| report::BudgetLeft {
                window_secs: b.window_secs,
                budget_minutes: b.budget_minutes,
                share_left: b.share_left,
                minutes_left: b.minutes_left,
                counts: counts(&b.counts),
            })
            .collect(),
        burn_rates: service
            .burn_rates
            .iter()
            .map(|b| report::BurnRate { window_secs: b.window_secs, rate: b.rate, counts: counts(&b.counts) })
            .collect(),
        latency: service
            .latency
            .iter()
            .map(|l| report::LatencyFigure {
                quantile: l.quantile.clone(),
                target_ms: l.target_ms,
                observed_ms: l.observed_ms,
                met: l.met,
                slower_share: l.slower_share,
            })
            .collect(),
        alerts: service
            .alerts
            .iter()
            .map(|a| report::Alert {
                severity: match a.severity {
                    wire::BurnSeverity::Critical => report::Severity::Critical,
                    wire::BurnSeverity::Warning => report::Severity::Warning,
                },
                factor: a.factor,
                long_secs: a.long_secs,
                short_secs: a.short_secs,
                long_rate: a.long_rate,
                short_rate: a.short_rate,
            })
            .collect(),
    }
}

fn for_render(answer: &wire::SloReport) -> anyhow::Result<report::Report> {
    let at = answer
        .at
        .parse()
        .map_err(|err| anyhow::anyhow!("the server's SLO report has an unreadable time `{}`: {err}", answer.at))?;
    Ok(report::Report {
        environment: answer.environment.clone(),
        at,
        services: answer.services.iter().map(service).collect(),
    })
}
