//! Release control from the command line: `windlass canary status|promote|abort` and
//! `windlass promote <from> <to>`, and approvals: `windlass approve|reject <env>`.

use serde::{Deserialize, Serialize};
use windlass_api::Started;
use windlass_api::approval::{ApprovalPending, ApprovalShown, Approved, Decision, DecisionRequest, Verdict};
use windlass_api::canary::{
    CanaryAction as Action, CanaryDecided, CanaryList, CanaryProgress, CanaryRequest, IntervalVerdict,
};
use windlass_api::deploys::PromoteRequest;

use crate::client::{self, Client, Connection};
use crate::output::{call, get};
use crate::{Outcome, OutputFormat, UsageError, print_json};

#[derive(clap::Args)]
pub struct CanaryArgs {
    #[command(subcommand)]
    action: CanaryAction,
}

#[derive(clap::Subcommand)]
enum CanaryAction {
    /// Where each canary of the environment stands: step, weight, intervals and the last figures.
    Status {
        environment: String,
        service: Option<String>,
        #[arg(long, value_enum, default_value_t)]
        output: OutputFormat,
        #[command(flatten)]
        connection: Connection,
    },
    /// Give the running canary all traffic now, skipping its remaining steps.
    Promote {
        environment: String,
        service: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Send the running canary's traffic back to the stable color and stop it.
    Abort {
        environment: String,
        service: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

pub fn canary(args: CanaryArgs) -> anyhow::Result<Outcome> {
    match args.action {
        CanaryAction::Status { environment, service, output, connection } => {
            let client = Client::new(&connection)?;
            let answer: CanaryList = client::runtime()?
                .block_on(get(&client, &format!("/environments/{}/canary", client::segment(&environment))))?;
            let canaries: Vec<&CanaryProgress> =
                answer.canaries.iter().filter(|c| service.as_deref().is_none_or(|s| c.service == s)).collect();
            if output == OutputFormat::Json {
                #[derive(Serialize)]
                struct Shown<'a> {
                    canaries: Vec<&'a CanaryProgress>,
                }
                return print_json(&Shown { canaries });
            }
            if canaries.is_empty() {
                println!("no canary in {environment}");
            }
            for canary in canaries {
                print_canary(canary);
            }
            Ok(Outcome::Ok)
        }
        CanaryAction::Promote { environment, service, connection } => {
            decide(&connection, &environment, service, Action::Promote)
        }
        CanaryAction::Abort { environment, service, connection } => {
            decide(&connection, &environment, service, Action::Abort)
        }
    }
}

fn print_canary(canary: &CanaryProgress) {
    println!(
        "{}: {} ({}) in deploy {}; stable {}",
        canary.service, canary.canary, canary.outcome, canary.deploy_id, canary.stable
    );
    println!(
        "  step {}/{} at {}%; intervals passed {}, failed {}, inconclusive in a row {}",
        canary.step, canary.steps, canary.weight, canary.passed, canary.failed, canary.inconclusive
    );
    if let Some(last) = &canary.last {
        let verdict = match &canary.last_verdict {
            Some(IntervalVerdict::Passed) => "passed",
            Some(IntervalVerdict::Failed { .. }) => "failed",
            Some(IntervalVerdict::Inconclusive { .. }) => "inconclusive",
            None => "?",
        };
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        println!(
            "  last interval: {verdict}: {} requests, {} errors, p95 {}, p99 {}",
            last.requests,
            last.errors,
            ms(last.p95_ms),
            ms(last.p99_ms)
        );
    }
    if let Some(reason) = &canary.reason {
        println!("  reason: {reason}");
    }
}

/// Sends `promote` or `abort` to the running canary of `service` (or the only one running).
fn decide(
    connection: &Connection,
    environment: &str,
    service: Option<String>,
    action: Action,
) -> anyhow::Result<Outcome> {
    let client = Client::new(connection)?;
    let runtime = client::runtime()?;
    let service = match service {
        Some(service) => service,
        None => {
            let answer: CanaryList =
                runtime.block_on(get(&client, &format!("/environments/{}/canary", client::segment(environment))))?;
            let running: Vec<String> =
                answer.canaries.into_iter().filter(|c| c.outcome == "running").map(|c| c.service).collect();
            match running.as_slice() {
                [one] => one.clone(),
                [] => return Err(UsageError(format!("no canary is running in {environment}")).into()),
                many => {
                    return Err(UsageError(format!(
                        "several canaries run in {environment} ({}); name the service",
                        many.join(", ")
                    ))
                    .into());
                }
            }
        }
    };
    let path = format!("/environments/{}/services/{}/canary", client::segment(environment), client::segment(service));
    let answer: CanaryDecided = runtime.block_on(call(&client, "POST", &path, Some(&CanaryRequest { action })))?;
    println!("{}", answer.message);
    Ok(Outcome::Ok)
}

#[derive(clap::Args)]
pub struct PromoteArgs {
    /// The environment whose builds are promoted (such as staging).
    from: String,
    /// The environment that gets them (such as production).
    to: String,
    /// Only these services (comma-separated or repeated) [default: every service live in <from>]
    #[arg(long, value_delimiter = ',')]
    services: Vec<String>,
    /// Why (recorded with the deploy).
    #[arg(long)]
    reason: Option<String>,
    /// Deploy outside the target's deploy window; needs --reason.
    #[arg(long)]
    override_window: bool,
    /// Approve your own promotion (only where the target's approval is "anyone").
    #[arg(long)]
    approve: bool,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

pub fn promote(args: PromoteArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    client::runtime()?.block_on(async {
        let body = PromoteRequest {
            from: args.from,
            services: args.services,
            reason: args.reason,
            override_window: args.override_window,
            approve: args.approve,
        };
        let path = format!("/environments/{}/promote", client::segment(&args.to));
        let answer: StartAnswer = call(&client, "POST", &path, Some(&body)).await?;
        let Some(id) = started_deploy(&client, &args.to, &answer).await? else {
            return Ok(Outcome::NotOk);
        };
        if args.output == OutputFormat::Text {
            println!("deploy {id} started");
        }
        let done = crate::follow::watch(&client, &id, args.output).await?;
        crate::follow::finish(&done, args.output)
    })
}

/// The answer to a request that starts a deploy (deploy, promote): started at once, or recorded
/// as an approval request when the environment needs one.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
pub enum StartAnswer {
    // First: a pending request has no `id` of its own at the top, a started deploy has nothing else.
    Pending(Box<ApprovalPending>),
    Started(Started),
}

/// The id of the deploy a request started: at once, or, for an environment with approvals,
/// once its approval request is decided (none when it was rejected, said on stderr).
pub async fn started_deploy(
    client: &Client,
    environment: &str,
    answer: &StartAnswer,
) -> anyhow::Result<Option<String>> {
    match answer {
        StartAnswer::Started(started) => Ok(Some(started.id.clone())),
        StartAnswer::Pending(pending) => {
            eprintln!("{}", pending.message);
            await_approval(client, environment, &pending.approval.id).await
        }
    }
}

/// Waits until the approval request `id` is decided: the id of the deploy it became, or none
/// when it was rejected (said on stderr).
async fn await_approval(client: &Client, environment: &str, id: &str) -> anyhow::Result<Option<String>> {
    eprintln!("waiting for the decision on {id} (Ctrl-C stops waiting; the request stays open)");
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let answer: ApprovalShown =
            get(client, &format!("/environments/{}/approval", client::segment(environment))).await?;
        let latest = answer.approval;
        if latest.id != id {
            return Err(anyhow::anyhow!("approval request {id} was replaced by \"{}\"", latest.id));
        }
        match latest.decision {
            Decision::Approved { by, deploy_id } => {
                eprintln!("approved by {by}");
                return Ok(Some(deploy_id));
            }
            Decision::Rejected { by, reason } => {
                let reason = reason.map(|r| format!(": {r}")).unwrap_or_default();
                eprintln!("rejected by {by}{reason}");
                return Ok(None);
            }
            Decision::Pending => {}
        }
    }
}

#[derive(clap::Args)]
pub struct DecideArgs {
    environment: String,
    /// Why (recorded with the decision).
    #[arg(long)]
    reason: Option<String>,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
    #[command(flatten)]
    connection: Connection,
}

/// `windlass approve <env>`: starts the waiting deploy and follows it.
pub fn approve(args: DecideArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    client::runtime()?.block_on(async {
        let body = DecisionRequest { decision: Verdict::Approve, reason: args.reason };
        let path = format!("/environments/{}/approval", client::segment(&args.environment));
        let answer: Approved = call(&client, "POST", &path, Some(&body)).await?;
        let id = answer.id;
        if args.output == OutputFormat::Text {
            println!("approved {} requested by {}", answer.approval.id, answer.approval.requested_by);
            println!("deploy {id} started");
        }
        let done = crate::follow::watch(&client, &id, args.output).await?;
        crate::follow::finish(&done, args.output)
    })
}

/// `windlass reject <env>`: the waiting deploy never runs.
pub fn reject(args: DecideArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let body = DecisionRequest { decision: Verdict::Reject, reason: args.reason };
    let path = format!("/environments/{}/approval", client::segment(&args.environment));
    let answer: ApprovalShown = client::runtime()?.block_on(call(&client, "POST", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        print_json(&answer)?;
    } else {
        println!("rejected {} requested by {}", answer.approval.id, answer.approval.requested_by);
    }
    Ok(Outcome::Ok)
}
