//! `windlass`: the command line. A thin edge over the library crates: it parses arguments, calls
//! them, prints what they found and turns the outcome into an exit code.
//!
//! Exit codes: 0 success (deployable), 1 the thing checked is not in order, 2 usage error
//! (bad arguments, unreadable files, unknown environment).

mod edge;
mod init;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "windlass", version, about = "Deploy and operate a multi-service web platform from one binary.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check the config and an environment's variables; report every problem at once.
    Validate(validate::Args),
    /// Write a commented starter windlass.toml (never overwrites one).
    Init(init::Args),
    /// Run the edge proxy standalone with the config's routes and static upstreams.
    Edge(edge::Args),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// The outcome of a command, mapped to the exit code.
pub enum Outcome {
    Ok,
    /// What was checked is not in order (exit 1).
    NotOk,
}

/// An error in how the command was called or in reaching its inputs (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The config path: `--config`, or `windlass.toml` in the current directory.
pub fn config_path(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| PathBuf::from("windlass.toml"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Init(args) => init::run(args),
        Command::Edge(args) => edge::run(args),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::NotOk) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() { ExitCode::from(2) } else { ExitCode::from(1) }
        }
    }
}
