//! `windlass probes <env>`: what the monitor's probes see now (`GET /api/v1/environments/{env}/probes`).
//! Exits 1 while a probe is down, so a script can gate on it.

use windlass_api::probes::{ProbeList, ProbeStatus};

use crate::client::{self, Client, Connection};
use crate::output::get;
use crate::table::Table;
use crate::{Outcome, OutputFormat, print_json};

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
    let path = format!("/environments/{}/probes", client::segment(&args.environment));
    let answer: ProbeList = client::runtime()?.block_on(get(&client, &path))?;
    match args.output {
        OutputFormat::Json => {
            print_json(&answer)?;
        }
        OutputFormat::Text => print!("{}", table(&answer.probes)),
    }
    let down = answer.probes.iter().any(|p| p.health == "down");
    Ok(if down { Outcome::NotOk } else { Outcome::Ok })
}

fn table(probes: &[ProbeStatus]) -> String {
    if probes.is_empty() {
        return "no probes: add [probes.<name>] or a service `health` table\n".into();
    }
    let rows: Vec<[String; 5]> = probes
        .iter()
        .map(|p| {
            let last = match (p.last_ok, p.last_reason.as_str()) {
                (None, _) => "not checked yet".to_owned(),
                (Some(true), "") => "ok".to_owned(),
                (Some(true), reason) => format!("ok: {reason}"),
                (Some(false), reason) => format!("failed: {reason}"),
            };
            let latency = format!("{} ms", p.last_latency_ms);
            let cert = p.cert_days_left.map(|d| format!(", certificate {d} days")).unwrap_or_default();
            [p.name.clone(), p.kind.clone(), p.health.clone(), format!("{latency}{cert}"), last]
        })
        .collect();
    let mut table = Table::with_header(["PROBE", "KIND", "HEALTH", "LATENCY", "LAST RESULT"]);
    for row in rows {
        table.row(row);
    }
    table.render()
}
