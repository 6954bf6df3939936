//! Alerting from the command line, through the server: `ack`, `silence add|list|expire`,
//! `alerts`, `incident list|show|note|resolve|postmortem|stats`.

use serde_json::{Value, json};

use crate::client::{self, Client, Connection};
use crate::table::Table;
use crate::{Outcome, OutputFormat, UsageError, print_json};

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

#[derive(clap::Args)]
pub struct AckArgs {
    /// The alert's id (as `windlass alerts` shows it).
    alert: String,
    /// A note for the incident's timeline.
    #[arg(long)]
    note: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn ack(args: AckArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let body = json!({ "note": args.note, "via": "cli" });
    let answer =
        client::runtime()?.block_on(client.call("POST", &format!("/alerts/{}/ack", args.alert), Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    println!("alert {}: {}", args.alert, text(&answer["message"]));
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct AlertsArgs {
    /// Only this environment's alerts.
    environment: Option<String>,
    /// Resolved alerts too.
    #[arg(long)]
    all: bool,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn alerts(args: AlertsArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let mut path = format!("/alerts?status={}", if args.all { "all" } else { "firing" });
    if let Some(environment) = &args.environment {
        path.push_str(&format!("&environment={environment}"));
    }
    let answer = client::runtime()?.block_on(client.call("GET", &path, None))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    let alerts = answer["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        println!("no {}alerts", if args.all { "" } else { "firing " });
    }
    let mut table = Table::new();
    for alert in &alerts {
        let state = if alert["status"] == "resolved" {
            "resolved".to_owned()
        } else if let Some(by) = alert["ack"]["by"].as_str() {
            format!("acked by {by}")
        } else if let Some(silence) = alert["silenced_by"].as_str() {
            format!("silenced ({silence})")
        } else {
            "firing".to_owned()
        };
        table.row([
            text(&alert["id"]).to_owned(),
            text(&alert["severity"]).to_owned(),
            state,
            format!("{}/{}", text(&alert["environment"]), text(&alert["service"])),
            text(&alert["name"]).to_owned(),
            format!("since {}", text(&alert["fired_at"])),
            text(&alert["summary"]).to_owned(),
        ]);
    }
    table.print();
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct SilenceArgs {
    #[command(subcommand)]
    command: SilenceCommand,
    #[arg(long, value_enum, default_value_t, global = true)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Subcommand)]
enum SilenceCommand {
    /// Silence an environment's alerts (of a service, an alert name, a severity) for a while.
    Add {
        environment: String,
        #[arg(long)]
        service: Option<String>,
        /// The alert's name (a probe's name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        severity: Option<String>,
        /// How long, such as 2h or 30m.
        #[arg(long = "for")]
        duration: String,
        #[arg(long)]
        reason: String,
    },
    /// Silences, active and ended.
    List { environment: Option<String> },
    /// End a silence now.
    Expire { id: String },
}

pub fn silence(args: SilenceArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let runtime = client::runtime()?;
    match args.command {
        SilenceCommand::Add { environment, service, name, severity, duration, reason } => {
            let body = json!({
                "environment": environment,
                "service": service,
                "name": name,
                "severity": severity,
                "for": duration,
                "reason": reason,
            });
            let answer = runtime.block_on(client.call("POST", "/silences", Some(&body)))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            println!("silence {} until {}", text(&answer["id"]), text(&answer["ends_at"]));
        }
        SilenceCommand::List { environment } => {
            let path = match environment {
                Some(environment) => format!("/silences?environment={environment}"),
                None => "/silences".into(),
            };
            let answer = runtime.block_on(client.call("GET", &path, None))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            let mut table = Table::new();
            for silence in answer["silences"].as_array().into_iter().flatten() {
                let matchers: Vec<String> = silence["matchers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| format!("{k}={}", text(v)))
                    .collect();
                table.row([
                    text(&silence["id"]).to_owned(),
                    if silence["active"] == true { "active" } else { "ended" }.to_owned(),
                    matchers.join(","),
                    format!("until {}", silence["ends_at"].as_str().unwrap_or("closed")),
                    format!("by {}: {}", text(&silence["author"]), text(&silence["reason"])),
                ]);
            }
            table.print();
        }
        SilenceCommand::Expire { id } => {
            let answer = runtime.block_on(client.call("DELETE", &format!("/silences/{id}"), None))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            println!("silence {id} ended at {}", text(&answer["ends_at"]));
        }
    }
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct IncidentArgs {
    #[command(subcommand)]
    command: IncidentCommand,
    #[arg(long, value_enum, default_value_t, global = true)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

#[derive(clap::Subcommand)]
enum IncidentCommand {
    /// Incidents, newest first.
    List {
        environment: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// An incident and its timeline.
    Show { id: String },
    /// Add a note to an open incident's timeline.
    Note { id: String, text: String },
    /// Close an incident.
    Resolve {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// A Markdown post-mortem filled from the timeline.
    Postmortem { id: String },
    /// MTTR and MTBF of a service over the last days.
    Stats {
        environment: String,
        service: String,
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

pub fn incident(args: IncidentArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let runtime = client::runtime()?;
    let json_output = args.output == OutputFormat::Json;
    match args.command {
        IncidentCommand::List { environment, limit } => {
            let mut path = format!("/incidents?limit={limit}");
            if let Some(environment) = environment {
                path.push_str(&format!("&environment={environment}"));
            }
            let answer = runtime.block_on(client.call("GET", &path, None))?;
            if json_output {
                return print_json(&answer);
            }
            let mut table = Table::new();
            for incident in answer["incidents"].as_array().into_iter().flatten() {
                table.row([
                    incident["id"].to_string(),
                    text(&incident["status"]).to_owned(),
                    format!("{}/{}", text(&incident["environment"]), text(&incident["service"])),
                    format!("opened {}", text(&incident["opened_at"])),
                    text(&incident["title"]).to_owned(),
                ]);
            }
            table.print();
        }
        IncidentCommand::Show { id } => {
            let answer = runtime.block_on(client.call("GET", &format!("/incidents/{id}"), None))?;
            if json_output {
                return print_json(&answer);
            }
            println!("incident {}: {} ({})", answer["id"], text(&answer["title"]), text(&answer["status"]));
            let mut timeline = Table::new();
            for entry in answer["timeline"].as_array().into_iter().flatten() {
                let who = entry["actor"].as_str().map(|a| format!("[{a}]")).unwrap_or_default();
                timeline.row([
                    format!("  {}", text(&entry["at"])),
                    text(&entry["kind"]).to_owned(),
                    who,
                    text(&entry["message"]).to_owned(),
                ]);
            }
            timeline.print();
        }
        IncidentCommand::Note { id, text: note } => {
            let body = json!({ "text": note });
            let answer = runtime.block_on(client.call("POST", &format!("/incidents/{id}/notes"), Some(&body)))?;
            if json_output {
                return print_json(&answer);
            }
            println!("noted on incident {id}");
        }
        IncidentCommand::Resolve { id, note } => {
            let body = json!({ "note": note });
            let answer = runtime.block_on(client.call("POST", &format!("/incidents/{id}/resolve"), Some(&body)))?;
            if json_output {
                return print_json(&answer);
            }
            println!("incident {id} resolved");
        }
        IncidentCommand::Postmortem { id } => {
            if id.parse::<u64>().is_err() {
                return Err(UsageError(format!("`{id}` is not an incident number")).into());
            }
            let answer = runtime.block_on(client.call("GET", &format!("/incidents/{id}/postmortem"), None))?;
            if json_output {
                return print_json(&answer);
            }
            print!("{}", text(&answer["markdown"]));
        }
        IncidentCommand::Stats { environment, service, days } => {
            let path = format!("/reliability?environment={environment}&service={service}&days={days}");
            let answer = runtime.block_on(client.call("GET", &path, None))?;
            if json_output {
                return print_json(&answer);
            }
            let or_none = |v: &Value| v.as_str().unwrap_or("—").to_owned();
            println!(
                "{service} in {environment}, last {days} days: {} incidents, MTTR {}, MTBF {}",
                answer["incidents"],
                or_none(&answer["mttr"]),
                or_none(&answer["mtbf"])
            );
        }
    }
    Ok(Outcome::Ok)
}
