//! The commands that ask the server: deploy, deploys, rollback, status, lock, maintenance,
//! failover, scale, logs.

use serde_json::{Value, json};

use crate::client::{self, Client, Connection};
use crate::table::Table;
use crate::{Outcome, OutputFormat, UsageError, print_json};

#[derive(clap::Args)]
pub struct DeployArgs {
    /// The environment to deploy (or `show <deploy-id>` to show a recorded deploy).
    environment: String,
    /// With `show`: the deploy to show.
    id: Option<String>,
    /// Skip a phase (repeatable); the seeds' `--skip-backend` works too.
    #[arg(long)]
    skip: Vec<String>,
    /// Run only this phase (repeatable); `validate` still runs unless skipped.
    #[arg(long)]
    only: Vec<String>,
    /// Print the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Why (recorded with the deploy).
    #[arg(long)]
    reason: Option<String>,
    /// Deploy outside the environment's deploy window; needs --reason, which is recorded.
    #[arg(long)]
    override_window: bool,
    /// Approve your own deploy (only where the environment's approval is "anyone").
    #[arg(long)]
    approve: bool,
    /// Roll SERVICE out at VERSION (repeatable): given to it as WINDLASS_VERSION and usable in
    /// its `run` as ${WINDLASS_VERSION}; it keeps that version until another is named.
    #[arg(long = "version", value_name = "SERVICE=VERSION")]
    versions: Vec<String>,
    /// Start the deploy and return its id without following it.
    #[arg(long)]
    detach: bool,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<Outcome> {
    if args.environment == "show" {
        let id = args.id.ok_or_else(|| UsageError("usage: windlass deploy show <deploy-id>".into()))?;
        return show(&args.connection, &id, args.output);
    }
    if let Some(extra) = &args.id {
        return Err(
            UsageError(format!("unexpected argument `{extra}`; did you mean `windlass deploy show {extra}`?")).into()
        );
    }
    let mut versions = serde_json::Map::new();
    for pair in &args.versions {
        let Some((service, version)) = pair.split_once('=') else {
            return Err(UsageError(format!("`--version {pair}`: write SERVICE=VERSION, such as api=v2")).into());
        };
        if versions.insert(service.to_owned(), Value::from(version)).is_some() {
            return Err(UsageError(format!("`--version`: `{service}` is named twice")).into());
        }
    }
    let client = Client::new(&args.connection)?;
    client::runtime()?.block_on(async {
        let body = json!({
            "versions": versions,
            "skip": args.skip,
            "only": args.only,
            "dry_run": args.dry_run,
            "reason": args.reason,
            "override_window": args.override_window,
            "approve": args.approve,
        });
        let answer = client.call("POST", &format!("/environments/{}/deploys", args.environment), Some(&body)).await?;
        if args.dry_run {
            print_plan(&answer, args.output)?;
            return Ok(Outcome::Ok);
        }
        if args.detach && answer.get("approval").is_some() {
            match args.output {
                OutputFormat::Json => println!("{answer}"),
                OutputFormat::Text => eprintln!("{}", answer["message"].as_str().unwrap_or_default()),
            }
            return Ok(Outcome::Ok);
        }
        let Some(id) = crate::release::started_deploy(&client, &args.environment, &answer).await? else {
            return Ok(Outcome::NotOk);
        };
        if args.output == OutputFormat::Text {
            println!("deploy {id} started");
        }
        if args.detach {
            if args.output == OutputFormat::Json {
                println!("{answer}");
            }
            return Ok(Outcome::Ok);
        }
        let done = client::watch(&client, &id, args.output).await?;
        client::finish(&done, args.output)
    })
}

fn print_plan(answer: &Value, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    }
    let plan = &answer["plan"];
    println!("plan for {} (dry run: nothing changes)", plan["environment"].as_str().unwrap_or(""));
    for phase in plan["phases"].as_array().into_iter().flatten() {
        let name = phase["name"].as_str().unwrap_or("");
        match phase["skipped"].as_str() {
            Some(why) => println!("[{name}] skipped ({why})"),
            None if phase["steps"].as_array().is_none_or(Vec::is_empty) => println!("[{name}] nothing to do"),
            None => {
                println!("[{name}]");
                for step in phase["steps"].as_array().into_iter().flatten() {
                    let text = match step["kind"].as_str() {
                        Some("validate") => "validate config and variables".to_owned(),
                        Some("rollout") => format!(
                            "roll out {} ({}, {} instances)",
                            step["service"].as_str().unwrap_or(""),
                            step["strategy"].as_str().unwrap_or(""),
                            step["instances"]
                        ),
                        Some("smoke") => format!("smoke check: {}", step["name"].as_str().unwrap_or("")),
                        Some("migrate") if step["backup"] == true => "back up the database, then migrate it".into(),
                        Some("migrate") => "migrate the database (no backup)".into(),
                        _ => step["name"].as_str().unwrap_or("").to_owned(),
                    };
                    println!("  - {text}");
                }
            }
        }
    }
    Ok(())
}

fn show(connection: &Connection, id: &str, output: OutputFormat) -> anyhow::Result<Outcome> {
    let client = Client::new(connection)?;
    let answer = client::runtime()?.block_on(client.call("GET", &format!("/deploys/{id}"), None))?;
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(Outcome::Ok);
    }
    let deploy = &answer["deploy"];
    println!("deploy {}: {}", deploy["id"].as_str().unwrap_or(""), deploy["status"].as_str().unwrap_or(""));
    println!("  by {} at {}", deploy["actor"].as_str().unwrap_or(""), deploy["started_at"].as_str().unwrap_or(""));
    if let Some(reason) = deploy["reason"].as_str() {
        println!("  why: {reason}");
    }
    if let Some(error) = deploy["error"].as_str() {
        println!("  error: {error}");
    }
    for (service, recorded) in deploy["artifacts"]["services"].as_object().into_iter().flatten() {
        let sha = recorded["artifact"]["sha256"].as_str().unwrap_or("");
        println!(
            "  {service}: {} (build {})",
            recorded["artifact"]["command"].as_str().unwrap_or(""),
            &sha[..12.min(sha.len())]
        );
    }
    for step in answer["steps"].as_array().into_iter().flatten() {
        println!(
            "[{}] {}: {}",
            step["phase"].as_str().unwrap_or(""),
            step["name"].as_str().unwrap_or(""),
            step["status"].as_str().unwrap_or("")
        );
        for line in step["output"].as_str().unwrap_or("").lines() {
            println!("    {line}");
        }
    }
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct DeploysArgs {
    environment: String,
    #[arg(long, default_value_t = 20)]
    limit: u32,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn deploys(args: DeploysArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let path = format!("/environments/{}/deploys?limit={}", args.environment, args.limit);
    let answer = client::runtime()?.block_on(client.call("GET", &path, None))?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(Outcome::Ok);
    }
    let mut table = Table::new();
    for deploy in answer["deploys"].as_array().into_iter().flatten() {
        table.row([
            deploy["id"].as_str().unwrap_or(""),
            deploy["status"].as_str().unwrap_or(""),
            deploy["actor"].as_str().unwrap_or(""),
            deploy["reason"].as_str().unwrap_or(""),
        ]);
    }
    table.print();
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Only this environment's events.
    environment: Option<String>,
    /// Only kinds starting with this: `deploy.`, `db.`, `notify.failed`, `canary-`...
    #[arg(long)]
    kind: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

/// `windlass events [env]`: the audit trail, newest first.
pub fn events(args: EventsArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let mut path = format!("/events?limit={}", args.limit);
    if let Some(environment) = &args.environment {
        path.push_str(&format!("&environment={}", windlass_http::percent::encode(environment)));
    }
    if let Some(kind) = &args.kind {
        path.push_str(&format!("&kind={}", windlass_http::percent::encode(kind)));
    }
    let answer = client::runtime()?.block_on(client.call("GET", &path, None))?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(Outcome::Ok);
    }
    let mut table = Table::new();
    for event in answer["events"].as_array().into_iter().flatten() {
        table.row([
            event["at"].as_str().unwrap_or(""),
            event["environment"].as_str().unwrap_or("-"),
            event["actor"].as_str().unwrap_or(""),
            event["kind"].as_str().unwrap_or(""),
            event["message"].as_str().unwrap_or(""),
        ]);
    }
    table.print();
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct RollbackArgs {
    environment: String,
    /// The deploy to return to [default: the one before the last successful deploy]
    deploy_id: Option<String>,
    #[arg(long)]
    reason: Option<String>,
    /// Also restore the database backup taken before the first migration after that deploy
    /// (writes are stopped while it runs; the state just before is kept as a backup).
    #[arg(long)]
    restore_database: bool,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn rollback(args: RollbackArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    client::runtime()?.block_on(async {
        let body = json!({ "to": args.deploy_id, "reason": args.reason, "restore_database": args.restore_database });
        let answer = client.call("POST", &format!("/environments/{}/rollback", args.environment), Some(&body)).await?;
        let id = answer.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        if args.output == OutputFormat::Text {
            println!("rollback {id} started");
        }
        let done = client::watch(&client, &id, args.output).await?;
        client::finish(&done, args.output)
    })
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Only this environment.
    environment: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn status(args: StatusArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let answer = client::runtime()?.block_on(client.call("GET", "/status", None))?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(Outcome::Ok);
    }
    if answer["edge_reachable"] == Value::Bool(false) {
        println!("warning: the edge's admin API cannot be reached");
    }
    for (environment, env) in answer["environments"].as_object().into_iter().flatten() {
        if args.environment.as_ref().is_some_and(|e| e != environment) {
            continue;
        }
        println!("{environment}");
        if let Some(lock) = env["lock"].as_object() {
            println!(
                "  locked by {} since {}",
                lock["holder"].as_str().unwrap_or(""),
                lock["since"].as_str().unwrap_or("")
            );
        }
        if let Some(last) = env["last_deploy"].as_object() {
            println!("  last deploy {} {}", last["id"].as_str().unwrap_or(""), last["status"].as_str().unwrap_or(""));
        }
        for (service, state) in env["services"].as_object().into_iter().flatten() {
            let live = state["live"].as_str().unwrap_or("none");
            let mut flags = Vec::new();
            if state["maintenance"] == Value::Bool(true) {
                flags.push("maintenance");
            }
            if state["failed_over"] == Value::Bool(true) {
                flags.push("failed over");
            }
            println!(
                "  {service}: live {live}{}",
                if flags.is_empty() { String::new() } else { format!(" ({})", flags.join(", ")) }
            );
            if let Some(warning) = state["secondary"]["warning"].as_str() {
                println!("    ! {warning}");
            }
            for (color, recorded) in state["colors"].as_object().into_iter().flatten() {
                let warm = recorded["retire_at"].as_str().map(|t| format!(", warm until {t}")).unwrap_or_default();
                let version = recorded["version"].as_str().map(|v| format!(" version {v}")).unwrap_or_default();
                println!(
                    "    {color}: deploy {} build {}{version}{warm}",
                    recorded["deploy"].as_str().unwrap_or(""),
                    recorded["build"].as_str().unwrap_or("")
                );
                for instance in recorded["instances"].as_array().into_iter().flatten() {
                    let health = match instance["healthy"].as_bool() {
                        Some(true) => "healthy",
                        Some(false) => "unhealthy",
                        None => "not routed",
                    };
                    println!(
                        "      {} {} {} {health}",
                        instance["id"].as_str().unwrap_or(""),
                        instance["address"].as_str().unwrap_or(""),
                        instance["state"].as_str().unwrap_or("gone"),
                    );
                }
            }
        }
    }
    Ok(Outcome::Ok)
}

#[derive(clap::Subcommand)]
pub enum LockCommand {
    /// Who holds the environment's deploy lock, since when.
    Show { environment: String },
    /// Break the lock (recorded with who and why).
    Break {
        environment: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(clap::Args)]
pub struct LockArgs {
    #[command(subcommand)]
    command: LockCommand,
    #[arg(long, value_enum, default_value_t, global = true)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn lock(args: LockArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let rt = client::runtime()?;
    match args.command {
        LockCommand::Show { environment } => {
            let answer = rt.block_on(client.call("GET", &format!("/environments/{environment}/lock"), None))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            match answer["lock"].as_object() {
                Some(lock) => println!(
                    "{environment} is locked by {} ({}) since {}{}",
                    lock["holder"].as_str().unwrap_or(""),
                    lock["purpose"].as_str().unwrap_or(""),
                    lock["since"].as_str().unwrap_or(""),
                    if lock["stale"] == Value::Bool(true) {
                        "; its holder stopped renewing it (stale): the next deploy takes it over"
                    } else {
                        ""
                    }
                ),
                None => println!("{environment} is not locked"),
            }
        }
        LockCommand::Break { environment, reason } => {
            let body = json!({ "reason": reason });
            let answer =
                rt.block_on(client.call("DELETE", &format!("/environments/{environment}/lock"), Some(&body)))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            println!("broke the lock of {environment} held by {}", answer["broken"]["holder"].as_str().unwrap_or(""));
        }
    }
    Ok(Outcome::Ok)
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    On,
    Off,
}

#[derive(clap::Args)]
pub struct MaintenanceArgs {
    switch: Switch,
    environment: String,
    /// One service [default: every service]
    service: Option<String>,
    #[arg(long)]
    reason: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn maintenance(args: MaintenanceArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let body = json!({ "enabled": args.switch == Switch::On, "service": args.service, "reason": args.reason });
    let path = format!("/environments/{}/maintenance", args.environment);
    let answer = client::runtime()?.block_on(client.call("PUT", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    println!("{}", answer["message"].as_str().unwrap_or(""));
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct FailoverArgs {
    environment: String,
    service: String,
    /// `secondary` or `primary`.
    #[arg(long)]
    to: String,
    #[arg(long)]
    reason: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn failover(args: FailoverArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let body = json!({ "to": args.to, "reason": args.reason });
    let path = format!("/environments/{}/services/{}/failover", args.environment, args.service);
    let answer = client::runtime()?.block_on(client.call("PUT", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    println!("{}", answer["message"].as_str().unwrap_or(""));
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct ScaleArgs {
    environment: String,
    service: String,
    instances: usize,
    #[arg(long)]
    reason: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn scale(args: ScaleArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let body = json!({ "instances": args.instances, "reason": args.reason });
    let path = format!("/environments/{}/services/{}/scale", args.environment, args.service);
    let answer = client::runtime()?.block_on(client.call("PUT", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    for line in answer["output"].as_array().into_iter().flatten() {
        println!("{}", line.as_str().unwrap_or(""));
    }
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct LogsArgs {
    environment: String,
    service: String,
    #[arg(long, default_value_t = 100)]
    tail: usize,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn logs(args: LogsArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let path = format!("/environments/{}/services/{}/logs?tail={}", args.environment, args.service, args.tail);
    let answer = client::runtime()?.block_on(client.call("GET", &path, None))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    for instance in answer["instances"].as_array().into_iter().flatten() {
        let id = instance["id"].as_str().unwrap_or("");
        for line in instance["lines"].as_array().into_iter().flatten() {
            println!("{id} | {}", line.as_str().unwrap_or(""));
        }
    }
    Ok(Outcome::Ok)
}
