//! `windlass slo <env>`: each service's objectives, SLI, error budget left, burn rates, latency
//! against its targets and the burn-rate alerts firing now (`GET /api/v1/slo/{env}`). Exits 1
//! while a burn-rate alert fires, so a script can gate on it.

use windlass_monitor::slo::{render, report::Report};

use crate::client::{self, Client, Connection};
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
    let answer = client::runtime()?.block_on(client.call("GET", &format!("/slo/{}", args.environment), None))?;
    let report: Report = serde_json::from_value(answer.clone())
        .map_err(|err| anyhow::anyhow!("the server's SLO report is unreadable: {err}"))?;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        OutputFormat::Text => print!("{}", render::render(&report)),
    }
    let firing = report.services.iter().any(|s| !s.alerts.is_empty());
    Ok(if firing { Outcome::NotOk } else { Outcome::Ok })
}
