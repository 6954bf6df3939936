//! `windlass probes <env>`: what the monitor's probes see now (`GET /api/v1/environments/{env}/probes`).
//! Exits 1 while a probe is down, so a script can gate on it.

use serde_json::Value;

use crate::client::{self, Client, Connection};
use crate::table::Table;
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
    let path = format!("/environments/{}/probes", args.environment);
    let answer = client::runtime()?.block_on(client.call("GET", &path, None))?;
    let probes = answer["probes"].as_array().cloned().unwrap_or_default();
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&answer)?),
        OutputFormat::Text => print!("{}", table(&probes)),
    }
    let down = probes.iter().any(|p| p["health"] == "down");
    Ok(if down { Outcome::NotOk } else { Outcome::Ok })
}

fn table(probes: &[Value]) -> String {
    if probes.is_empty() {
        return "no probes: add [probes.<name>] or a service `health` table\n".into();
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let rows: Vec<[String; 5]> = probes
        .iter()
        .map(|p| {
            let last = match (p["last_ok"].as_bool(), p["last_reason"].as_str()) {
                (None, _) => "not checked yet".to_owned(),
                (Some(true), Some(reason)) if !reason.is_empty() => format!("ok: {reason}"),
                (Some(true), _) => "ok".to_owned(),
                (Some(false), reason) => format!("failed: {}", reason.unwrap_or("")),
            };
            let latency = p["last_latency_ms"].as_u64().map(|ms| format!("{ms} ms")).unwrap_or_default();
            let cert = p["cert_days_left"].as_i64().map(|d| format!(", certificate {d} days")).unwrap_or_default();
            [text(&p["name"]), text(&p["kind"]), text(&p["health"]), format!("{latency}{cert}"), last]
        })
        .collect();
    let mut table = Table::with_header(["PROBE", "KIND", "HEALTH", "LATENCY", "LAST RESULT"]);
    for row in rows {
        table.row(row);
    }
    table.render()
}
