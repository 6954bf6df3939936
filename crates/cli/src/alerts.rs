//! Alerting from the command line, through the server: `ack`, `silence add|list|expire`,
//! `alerts`, `incident list|show|note|resolve|postmortem|stats`.

use windlass_api::alerts::{
    AckRequest, Acknowledged, AlertList, AlertStatus, Incident, IncidentList, IncidentResolved, NoteRequest, Noted,
    Postmortem, Reliability, Silence, SilenceList, SilenceRequest,
};

use crate::client::{self, Client, Connection};
use crate::output::{call, get};
use crate::table::Table;
use crate::{Outcome, OutputFormat, UsageError, print_json};

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
    let body = AckRequest { note: args.note, via: Some("cli".into()) };
    let path = format!("/alerts/{}/ack", client::segment(&args.alert));
    let answer: Acknowledged = client::runtime()?.block_on(call(&client, "POST", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    println!("alert {}: {}", args.alert, answer.message);
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
        path.push_str(&format!("&environment={}", client::query_value(environment)));
    }
    let answer: AlertList = client::runtime()?.block_on(get(&client, &path))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    let alerts = answer.alerts;
    if alerts.is_empty() {
        println!("no {}alerts", if args.all { "" } else { "firing " });
    }
    let mut table = Table::new();
    for alert in alerts {
        let state = if alert.status == AlertStatus::Resolved {
            "resolved".to_owned()
        } else if let Some(ack) = &alert.ack {
            format!("acked by {}", ack.by)
        } else if let Some(silence) = &alert.silenced_by {
            format!("silenced ({silence})")
        } else {
            "firing".to_owned()
        };
        table.row([
            alert.id,
            alert.severity.to_string(),
            state,
            format!("{}/{}", alert.environment, alert.service),
            alert.name,
            format!("since {}", alert.fired_at),
            alert.summary,
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
            let body = SilenceRequest { environment: Some(environment), service, name, severity, duration, reason };
            let silence: Silence = runtime.block_on(call(&client, "POST", "/silences", Some(&body)))?;
            if args.output == OutputFormat::Json {
                return print_json(&silence);
            }
            println!("silence {} until {}", silence.id, silence.ends_at.unwrap_or_default());
        }
        SilenceCommand::List { environment } => {
            let path = match environment {
                Some(environment) => format!("/silences?environment={}", client::query_value(&environment)),
                None => "/silences".into(),
            };
            let answer: SilenceList = runtime.block_on(get(&client, &path))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            let mut table = Table::new();
            for listed in answer.silences {
                let silence = listed.silence;
                let m = &silence.matchers;
                let severity = m.severity.map(|s| s.to_string());
                let matchers: Vec<String> = [
                    ("environment", &m.environment),
                    ("name", &m.name),
                    ("service", &m.service),
                    ("severity", &severity),
                ]
                .into_iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
                .collect();
                table.row([
                    silence.id,
                    if listed.active { "active" } else { "ended" }.to_owned(),
                    matchers.join(","),
                    format!("until {}", silence.ends_at.as_deref().unwrap_or("closed")),
                    format!("by {}: {}", silence.author, silence.reason),
                ]);
            }
            table.print();
        }
        SilenceCommand::Expire { id } => {
            let silence: Silence = runtime.block_on(call(
                &client,
                "DELETE",
                &format!("/silences/{}", client::segment(&id)),
                None::<&()>,
            ))?;
            if args.output == OutputFormat::Json {
                return print_json(&silence);
            }
            println!("silence {id} ended at {}", silence.ends_at.unwrap_or_default());
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
                path.push_str(&format!("&environment={}", client::query_value(environment)));
            }
            let answer: IncidentList = runtime.block_on(get(&client, &path))?;
            if json_output {
                return print_json(&answer);
            }
            let mut table = Table::new();
            for incident in answer.incidents {
                table.row([
                    incident.id.to_string(),
                    incident.status.as_str().to_owned(),
                    format!("{}/{}", incident.environment, incident.service),
                    format!("opened {}", incident.opened_at),
                    incident.title,
                ]);
            }
            table.print();
        }
        IncidentCommand::Show { id } => {
            let incident: Incident = runtime.block_on(get(&client, &format!("/incidents/{}", client::segment(&id))))?;
            if json_output {
                return print_json(&incident);
            }
            println!("incident {}: {} ({})", incident.id, incident.title, incident.status.as_str());
            let mut timeline = Table::new();
            for entry in incident.timeline {
                let who = entry.actor.map(|a| format!("[{a}]")).unwrap_or_default();
                timeline.row([format!("  {}", entry.at), entry.kind, who, entry.message]);
            }
            timeline.print();
        }
        IncidentCommand::Note { id, text: note } => {
            let body = NoteRequest { text: Some(note), note: None };
            let path = format!("/incidents/{}/notes", client::segment(&id));
            let answer: Noted = runtime.block_on(call(&client, "POST", &path, Some(&body)))?;
            if json_output {
                return print_json(&answer);
            }
            println!("noted on incident {id}");
        }
        IncidentCommand::Resolve { id, note } => {
            let body = NoteRequest { text: None, note };
            let path = format!("/incidents/{}/resolve", client::segment(&id));
            let answer: IncidentResolved = runtime.block_on(call(&client, "POST", &path, Some(&body)))?;
            if json_output {
                return print_json(&answer);
            }
            println!("incident {id} resolved");
        }
        IncidentCommand::Postmortem { id } => {
            if id.parse::<u64>().is_err() {
                return Err(UsageError(format!("`{id}` is not an incident number")).into());
            }
            let answer: Postmortem =
                runtime.block_on(get(&client, &format!("/incidents/{}/postmortem", client::segment(&id))))?;
            if json_output {
                return print_json(&answer);
            }
            print!("{}", answer.markdown);
        }
        IncidentCommand::Stats { environment, service, days } => {
            let path = format!(
                "/reliability?environment={}&service={}&days={days}",
                client::query_value(&environment),
                client::query_value(&service)
            );
            let answer: Reliability = runtime.block_on(get(&client, &path))?;
            if json_output {
                return print_json(&answer);
            }
            println!(
                "{service} in {environment}, last {days} days: {} incidents, MTTR {}, MTBF {}",
                answer.incidents,
                answer.mttr.as_deref().unwrap_or("—"),
                answer.mtbf.as_deref().unwrap_or("—")
            );
        }
    }
    Ok(Outcome::Ok)
}
