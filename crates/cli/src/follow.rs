//! Following a deploy the CLI started: its server-sent events (`GET /deploys/{id}/events`) read
//! as `windlass-api` types and printed as plain lines, and how it ended mapped to the exit code.

use serde::Deserialize;
use windlass_api::ErrorBody;
use windlass_api::deploys::{Deploy, StepOutput};

use crate::client::Client;
use crate::{Outcome, OutputFormat, print_json};

/// A `step` event: a step starting (`StepStarted`) or ended (the whole `Step`); the fields both
/// carry, and the error of one that failed.
#[derive(Deserialize)]
struct StepEvent {
    seq: i64,
    phase: String,
    name: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
}

/// Prints a deploy's progress as plain lines: `[phase] step`, its output indented, and how
/// it ended. Returns the deploy's final record (none when the stream ended without one).
pub async fn watch(client: &Client, id: &str, output: OutputFormat) -> anyhow::Result<Option<Deploy>> {
    let mut done = None;
    let mut started = std::collections::HashMap::new();
    let mut unreadable = None;
    client
        .follow(&format!("/deploys/{}/events", crate::client::segment(id)), |kind, data| {
            let read = |what: &str| {
                let what = what.to_owned();
                move |err: serde_json::Error| format!("the server's `{what}` event is unreadable: {err}")
            };
            match kind {
                "step" if output == OutputFormat::Text => match serde_json::from_value::<StepEvent>(data.clone()) {
                    Ok(step) => {
                        let line = format!("[{}] {}", step.phase, step.name);
                        let elapsed =
                            started.get(&step.seq).map_or(0.0, |at: &std::time::Instant| at.elapsed().as_secs_f64());
                        match step.status.as_str() {
                            "running" => {
                                started.insert(step.seq, std::time::Instant::now());
                                println!("{line}");
                            }
                            "succeeded" => println!("  ✓ {} ({elapsed:.1}s)", step.name),
                            "skipped" => println!("  - skipped"),
                            other => {
                                println!("  ✗ {} {other}: {}", step.name, step.error.as_deref().unwrap_or(""))
                            }
                        }
                    }
                    Err(err) => unreadable = Some(read("step")(err)),
                },
                "output" if output == OutputFormat::Text => match serde_json::from_value::<StepOutput>(data.clone()) {
                    Ok(step) => {
                        for line in step.text.lines() {
                            println!("    {line}");
                        }
                    }
                    Err(err) => unreadable = Some(read("output")(err)),
                },
                "done" => match serde_json::from_value::<Deploy>(data.clone()) {
                    Ok(deploy) => done = Some(deploy),
                    Err(err) => unreadable = Some(read("done")(err)),
                },
                "error" => {
                    let message =
                        serde_json::from_value::<ErrorBody>(data.clone()).map(|e| e.error).unwrap_or_default();
                    eprintln!("error following the deploy: {message}");
                }
                _ => {}
            }
        })
        .await?;
    if let Some(problem) = unreadable {
        anyhow::bail!(problem);
    }
    Ok(done)
}

/// Prints how a deploy ended and maps it to the outcome.
pub fn finish(done: &Option<Deploy>, output: OutputFormat) -> anyhow::Result<Outcome> {
    let status = done.as_ref().map_or("", |d| d.status.as_str());
    match output {
        OutputFormat::Json => {
            print_json(done)?;
        }
        OutputFormat::Text => {
            let id = done.as_ref().map_or("", |d| d.id.as_str());
            match done.as_ref().and_then(|d| d.error.as_deref()) {
                Some(error) => println!("deploy {id} {status}: {error}"),
                None => println!("deploy {id} {status}"),
            }
        }
    }
    Ok(if status == "succeeded" { Outcome::Ok } else { Outcome::NotOk })
}
