//! The commands that ask the server: deploy, deploys, rollback, status, lock, maintenance,
//! failover, scale, logs.

use std::collections::BTreeMap;

use windlass_api::deploys::{DeployDetail, DeployList, DeployRequest, DryRun, RollbackRequest, StepPlan};
use windlass_api::events::EventList;
use windlass_api::locks::{BreakLockRequest, LockBroken, LockShown};
use windlass_api::operations::{
    FailoverDone, FailoverRequest, Logs, MaintenanceDone, MaintenanceRequest, ScaleDone, ScaleRequest,
};
use windlass_api::status::Status;

use crate::client::{self, Client, Connection};
use crate::output::{call, get};
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
    let mut versions = BTreeMap::new();
    for pair in &args.versions {
        let Some((service, version)) = pair.split_once('=') else {
            return Err(UsageError(format!("`--version {pair}`: write SERVICE=VERSION, such as api=v2")).into());
        };
        if versions.insert(service.to_owned(), version.to_owned()).is_some() {
            return Err(UsageError(format!("`--version`: `{service}` is named twice")).into());
        }
    }
    let client = Client::new(&args.connection)?;
    client::runtime()?.block_on(async {
        let body = DeployRequest {
            versions,
            skip: args.skip,
            only: args.only,
            dry_run: args.dry_run,
            reason: args.reason,
            override_window: args.override_window,
            approve: args.approve,
        };
        let path = format!("/environments/{}/deploys", args.environment);
        if body.dry_run {
            let answer: DryRun = call(&client, "POST", &path, Some(&body)).await?;
            print_plan(&answer, args.output)?;
            return Ok(Outcome::Ok);
        }
        let answer: crate::release::StartAnswer = call(&client, "POST", &path, Some(&body)).await?;
        if let (true, crate::release::StartAnswer::Pending(pending)) = (args.detach, &answer) {
            match args.output {
                OutputFormat::Json => println!("{}", serde_json::to_string(&answer)?),
                OutputFormat::Text => eprintln!("{}", pending.message),
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
                println!("{}", serde_json::to_string(&answer)?);
            }
            return Ok(Outcome::Ok);
        }
        let done = crate::follow::watch(&client, &id, args.output).await?;
        crate::follow::finish(&done, args.output)
    })
}

fn print_plan(answer: &DryRun, output: OutputFormat) -> anyhow::Result<()> {
    if output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(answer)?);
        return Ok(());
    }
    let plan = &answer.plan;
    println!("plan for {} (dry run: nothing changes)", plan.environment);
    for phase in &plan.phases {
        let name = &phase.name;
        match &phase.skipped {
            Some(why) => println!("[{name}] skipped ({why})"),
            None if phase.steps.is_empty() => println!("[{name}] nothing to do"),
            None => {
                println!("[{name}]");
                for step in &phase.steps {
                    let text = match step {
                        StepPlan::Validate => "validate config and variables".to_owned(),
                        StepPlan::Rollout { service, strategy, instances } => {
                            format!("roll out {service} ({strategy}, {instances} instances)")
                        }
                        StepPlan::Smoke { name, .. } => format!("smoke check: {name}"),
                        StepPlan::Migrate { backup: true } => "back up the database, then migrate it".into(),
                        StepPlan::Migrate { backup: false } => "migrate the database (no backup)".into(),
                        StepPlan::Command { name, .. } => name.clone(),
                    };
                    println!("  - {text}");
                }
            }
        }
    }
    Ok(())
}

/// The builds a deploy record names, as far as `deploy show` prints them (the record's
/// `artifacts` are the pipeline's own layout, carried by the API as an object).
#[derive(serde::Deserialize, Default)]
struct RecordedArtifacts {
    #[serde(default)]
    services: BTreeMap<String, RecordedService>,
}

#[derive(serde::Deserialize)]
struct RecordedService {
    #[serde(default)]
    artifact: RecordedArtifact,
}

#[derive(serde::Deserialize, Default)]
struct RecordedArtifact {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    sha256: String,
}

fn show(connection: &Connection, id: &str, output: OutputFormat) -> anyhow::Result<Outcome> {
    let client = Client::new(connection)?;
    let answer: DeployDetail = client::runtime()?.block_on(get(&client, &format!("/deploys/{id}")))?;
    if output == OutputFormat::Json {
        return print_json(&answer);
    }
    let deploy = &answer.deploy;
    println!("deploy {}: {}", deploy.id, deploy.status);
    println!("  by {} at {}", deploy.actor, deploy.started_at);
    if let Some(reason) = &deploy.reason {
        println!("  why: {reason}");
    }
    if let Some(error) = &deploy.error {
        println!("  error: {error}");
    }
    let artifacts: RecordedArtifacts = serde_json::from_value(deploy.artifacts.clone()).unwrap_or_default();
    for (service, recorded) in &artifacts.services {
        let sha = &recorded.artifact.sha256;
        println!(
            "  {service}: {} (build {})",
            recorded.artifact.command.as_deref().unwrap_or(""),
            sha.get(..12).unwrap_or(sha)
        );
    }
    for step in &answer.steps {
        println!("[{}] {}: {}", step.phase, step.name, step.status);
        for line in step.output.lines() {
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
    let answer: DeployList = client::runtime()?.block_on(get(&client, &path))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    let mut table = Table::new();
    for deploy in &answer.deploys {
        table.row([&deploy.id, &deploy.status, &deploy.actor, deploy.reason.as_deref().unwrap_or("")]);
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
    let answer: EventList = client::runtime()?.block_on(get(&client, &path))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    let mut table = Table::new();
    for event in &answer.events {
        table.row([
            event.at.as_str(),
            event.environment.as_deref().unwrap_or("-"),
            &event.actor,
            &event.kind,
            // API calls' records say how they ended; the pipeline's own events do not.
            event.audit.as_ref().map_or("-", |audit| audit.outcome.as_str()),
            &event.message,
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
    /// Why (recorded with the rollback; required with --emergency and --override-window).
    #[arg(long)]
    reason: Option<String>,
    /// Also restore the database backup taken before the first migration after that deploy
    /// (writes are stopped while it runs; the state just before is kept as a backup).
    #[arg(long)]
    restore_database: bool,
    /// Roll back outside the environment's deploy window; needs --reason, which is recorded.
    #[arg(long)]
    override_window: bool,
    /// Approve your own rollback (only where the environment's approval is "anyone"); a
    /// rollback needs approval only when its target never passed approval in the environment.
    #[arg(long)]
    approve: bool,
    /// An operator's emergency rollback: no approval, no deploy window. Needs --reason; it is
    /// audited and announced to the deploy notification receivers.
    #[arg(long)]
    emergency: bool,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

/// `windlass rollback`: starts the rollback and follows it; where it needs approval, waits for
/// the decision first (the request stays open if the wait is stopped).
pub fn rollback(args: RollbackArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    client::runtime()?.block_on(async {
        let body = RollbackRequest {
            to: args.deploy_id,
            reason: args.reason,
            restore_database: args.restore_database,
            override_window: args.override_window,
            approve: args.approve,
            emergency: args.emergency,
        };
        let path = format!("/environments/{}/rollback", args.environment);
        let answer: crate::release::StartAnswer = call(&client, "POST", &path, Some(&body)).await?;
        let Some(id) = crate::release::started_deploy(&client, &args.environment, &answer).await? else {
            return Ok(Outcome::NotOk);
        };
        if args.output == OutputFormat::Text {
            println!("rollback {id} started");
        }
        let done = crate::follow::watch(&client, &id, args.output).await?;
        crate::follow::finish(&done, args.output)
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
    let answer: Status = client::runtime()?.block_on(get(&client, "/status"))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    if !answer.edge_reachable {
        println!("warning: the edge's admin API cannot be reached");
    }
    for (environment, env) in &answer.environments {
        if args.environment.as_ref().is_some_and(|e| e != environment) {
            continue;
        }
        println!("{environment}");
        if let Some(lock) = &env.lock {
            println!("  locked by {} since {}", lock.holder, lock.since);
        }
        if let Some(last) = &env.last_deploy {
            println!("  last deploy {} {}", last.id, last.status);
        }
        for (service, state) in &env.services {
            let live = state.live.as_deref().unwrap_or("none");
            let mut flags = Vec::new();
            if state.maintenance == Some(true) {
                flags.push("maintenance");
            }
            if state.failed_over == Some(true) {
                flags.push("failed over");
            }
            println!(
                "  {service}: live {live}{}",
                if flags.is_empty() { String::new() } else { format!(" ({})", flags.join(", ")) }
            );
            if let Some(warning) = state.secondary.as_ref().and_then(|s| s.warning()) {
                println!("    ! {warning}");
            }
            for (color, recorded) in &state.colors {
                let warm = recorded.retire_at.as_ref().map(|t| format!(", warm until {t}")).unwrap_or_default();
                let version = recorded.version.as_ref().map(|v| format!(" version {v}")).unwrap_or_default();
                println!("    {color}: deploy {} build {}{version}{warm}", recorded.deploy, recorded.build);
                for instance in &recorded.instances {
                    let health = match instance.healthy {
                        Some(true) => "healthy",
                        Some(false) => "unhealthy",
                        None => "not routed",
                    };
                    println!(
                        "      {} {} {} {health}",
                        instance.id,
                        instance.address,
                        instance.state.as_deref().unwrap_or("gone"),
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
            let answer: LockShown = rt.block_on(get(&client, &format!("/environments/{environment}/lock")))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            match &answer.lock {
                Some(lock) => println!(
                    "{environment} is locked by {} ({}) since {}{}",
                    lock.holder,
                    lock.purpose,
                    lock.since,
                    if lock.stale {
                        "; its holder stopped renewing it (stale): the next deploy takes it over"
                    } else {
                        ""
                    }
                ),
                None => println!("{environment} is not locked"),
            }
        }
        LockCommand::Break { environment, reason } => {
            let body = BreakLockRequest { reason: Some(reason) };
            let path = format!("/environments/{environment}/lock");
            let answer: LockBroken = rt.block_on(call(&client, "DELETE", &path, Some(&body)))?;
            if args.output == OutputFormat::Json {
                return print_json(&answer);
            }
            println!("broke the lock of {environment} held by {}", answer.broken.holder);
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
    let body = MaintenanceRequest { enabled: args.switch == Switch::On, service: args.service, reason: args.reason };
    let path = format!("/environments/{}/maintenance", args.environment);
    let answer: MaintenanceDone = client::runtime()?.block_on(call(&client, "PUT", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    println!("{}", answer.message);
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
    let body = FailoverRequest { to: args.to, reason: args.reason };
    let path = format!("/environments/{}/services/{}/failover", args.environment, args.service);
    let answer: FailoverDone = client::runtime()?.block_on(call(&client, "PUT", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    println!("{}", answer.message);
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
    let body = ScaleRequest { instances: args.instances as u64, reason: args.reason };
    let path = format!("/environments/{}/services/{}/scale", args.environment, args.service);
    let answer: ScaleDone = client::runtime()?.block_on(call(&client, "PUT", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    for line in &answer.output {
        println!("{line}");
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
    let answer: Logs = client::runtime()?.block_on(get(&client, &path))?;
    if args.output == OutputFormat::Json {
        return print_json(&answer);
    }
    for instance in &answer.instances {
        for line in &instance.lines {
            println!("{} | {line}", instance.id);
        }
    }
    Ok(Outcome::Ok)
}
