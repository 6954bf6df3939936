//! Release control from the command line: `windlass canary status|promote|abort` and
//! `windlass promote <from> <to>`, and approvals: `windlass approve|reject <env>`.

use serde_json::{Value, json};

use crate::client::{self, Client, Connection};
use crate::{Outcome, OutputFormat, UsageError};

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
            let answer = client::runtime()?.block_on(client.call(
                "GET",
                &format!("/environments/{environment}/canary"),
                None,
            ))?;
            let canaries: Vec<&Value> = answer["canaries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| service.as_deref().is_none_or(|s| c["service"] == s))
                .collect();
            if output == OutputFormat::Json {
                println!("{}", serde_json::to_string_pretty(&json!({ "canaries": canaries }))?);
                return Ok(Outcome::Ok);
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
            decide(&connection, &environment, service, "promote")
        }
        CanaryAction::Abort { environment, service, connection } => decide(&connection, &environment, service, "abort"),
    }
}

fn print_canary(canary: &Value) {
    let text = |key: &str| canary[key].as_str().unwrap_or("?").to_owned();
    println!(
        "{}: {} ({}) in deploy {}; stable {}",
        text("service"),
        text("canary"),
        text("outcome"),
        text("deploy_id"),
        text("stable")
    );
    println!(
        "  step {}/{} at {}%; intervals passed {}, failed {}, inconclusive in a row {}",
        canary["step"], canary["steps"], canary["weight"], canary["passed"], canary["failed"], canary["inconclusive"]
    );
    if let Some(last) = canary["last"].as_object() {
        let verdict = canary["last_verdict"]["verdict"].as_str().unwrap_or("?");
        let ms = |key: &str| last.get(key).and_then(Value::as_f64).map_or("-".to_owned(), |v| format!("{v:.1} ms"));
        println!(
            "  last interval: {verdict}: {} requests, {} errors, p95 {}, p99 {}",
            last.get("requests").unwrap_or(&Value::Null),
            last.get("errors").unwrap_or(&Value::Null),
            ms("p95_ms"),
            ms("p99_ms")
        );
    }
    if let Some(reason) = canary["reason"].as_str() {
        println!("  reason: {reason}");
    }
}

/// Sends `promote` or `abort` to the running canary of `service` (or the only one running).
fn decide(
    connection: &Connection,
    environment: &str,
    service: Option<String>,
    action: &str,
) -> anyhow::Result<Outcome> {
    let client = Client::new(connection)?;
    let runtime = client::runtime()?;
    let service = match service {
        Some(service) => service,
        None => {
            let answer = runtime.block_on(client.call("GET", &format!("/environments/{environment}/canary"), None))?;
            let running: Vec<String> = answer["canaries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["outcome"] == "running")
                .filter_map(|c| c["service"].as_str().map(str::to_owned))
                .collect();
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
    let path = format!("/environments/{environment}/services/{service}/canary");
    let answer = runtime.block_on(client.call("POST", &path, Some(&json!({ "action": action }))))?;
    println!("{}", answer["message"].as_str().unwrap_or(""));
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
        let body = json!({
            "from": args.from,
            "services": args.services,
            "reason": args.reason,
            "override_window": args.override_window,
            "approve": args.approve,
        });
        let answer = client.call("POST", &format!("/environments/{}/promote", args.to), Some(&body)).await?;
        let Some(id) = started_deploy(&client, &args.to, &answer).await? else {
            return Ok(Outcome::NotOk);
        };
        if args.output == OutputFormat::Text {
            println!("deploy {id} started");
        }
        let done = client::watch(&client, &id, args.output).await?;
        client::finish(&done, args.output)
    })
}

/// The id of the deploy a request started: at once, or, for an environment with approvals,
/// once its approval request is decided (none when it was rejected, said on stderr).
pub async fn started_deploy(client: &Client, environment: &str, answer: &Value) -> anyhow::Result<Option<String>> {
    let Some(request) = answer.get("approval") else {
        return Ok(Some(answer.get("id").and_then(Value::as_str).unwrap_or_default().to_owned()));
    };
    eprintln!("{}", answer["message"].as_str().unwrap_or_default());
    await_approval(client, environment, request).await
}

/// Waits until the approval request `request` is decided: the id of the deploy it became, or
/// none when it was rejected (said on stderr).
async fn await_approval(client: &Client, environment: &str, request: &Value) -> anyhow::Result<Option<String>> {
    let id = request["id"].as_str().unwrap_or_default().to_owned();
    eprintln!("waiting for the decision on {id} (Ctrl-C stops waiting; the request stays open)");
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let answer = client.call("GET", &format!("/environments/{environment}/approval"), None).await?;
        let latest = &answer["approval"];
        if latest["id"] != id.as_str() {
            return Err(anyhow::anyhow!("approval request {id} was replaced by {}", latest["id"]));
        }
        match latest["status"].as_str() {
            Some("approved") => {
                eprintln!("approved by {}", latest["by"].as_str().unwrap_or("?"));
                return Ok(latest["deploy_id"].as_str().map(str::to_owned));
            }
            Some("rejected") => {
                let reason = latest["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
                eprintln!("rejected by {}{reason}", latest["by"].as_str().unwrap_or("?"));
                return Ok(None);
            }
            _ => {}
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
        let body = json!({ "decision": "approve", "reason": args.reason });
        let path = format!("/environments/{}/approval", args.environment);
        let answer = client.call("POST", &path, Some(&body)).await?;
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        if args.output == OutputFormat::Text {
            println!(
                "approved {} requested by {}",
                answer["approval"]["id"].as_str().unwrap_or("?"),
                answer["approval"]["requested_by"].as_str().unwrap_or("?")
            );
            println!("deploy {id} started");
        }
        let done = client::watch(&client, &id, args.output).await?;
        client::finish(&done, args.output)
    })
}

/// `windlass reject <env>`: the waiting deploy never runs.
pub fn reject(args: DecideArgs) -> anyhow::Result<Outcome> {
    let client = Client::new(&args.connection)?;
    let body = json!({ "decision": "reject", "reason": args.reason });
    let path = format!("/environments/{}/approval", args.environment);
    let answer = client::runtime()?.block_on(client.call("POST", &path, Some(&body)))?;
    if args.output == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        println!(
            "rejected {} requested by {}",
            answer["approval"]["id"].as_str().unwrap_or("?"),
            answer["approval"]["requested_by"].as_str().unwrap_or("?")
        );
    }
    Ok(Outcome::Ok)
}
