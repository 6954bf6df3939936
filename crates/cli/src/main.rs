//! `windlass`: the command line. A thin edge over the library crates: it parses arguments, calls
//! them, prints what they found and turns the outcome into an exit code.
//!
//! Exit codes: 0 success (deployable), 1 the thing checked is not in order, 2 usage error
//! (bad arguments, unreadable files, unknown environment).

mod alerts;
mod client;
mod db;
mod edge;
mod follow;
mod init;
mod ops;
mod output;
mod probes;
mod release;
mod secrets;
mod server;
mod slo;
mod table;
mod up;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
pub use output::print_json;

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
    /// Start edge and server, deploy the platform, stay in the foreground (Ctrl-C stops all).
    Up(up::Args),
    /// Run the control plane: API, deploys, recovery.
    Server(server::ServerArgs),
    /// Personal API tokens.
    Token(server::TokenArgs),
    /// Deploy an environment (`deploy show <id>` shows a recorded deploy).
    Deploy(ops::DeployArgs),
    /// List an environment's deploys, newest first.
    Deploys(ops::DeploysArgs),
    /// Return to an earlier deploy: a warm color is switched back, otherwise redeployed.
    Rollback(ops::RollbackArgs),
    /// The audit trail: who deployed, approved, overrode, failed over; failed notifications and
    /// scheduled backups.
    Events(ops::EventsArgs),
    /// What runs where, which color is live, health.
    Status(ops::StatusArgs),
    /// Show or break an environment's deploy lock.
    Lock(ops::LockArgs),
    /// Maintenance mode on or off, for an environment or one service.
    Maintenance(ops::MaintenanceArgs),
    /// Move a service's traffic to its secondary or back to its primary.
    Failover(ops::FailoverArgs),
    /// Run N instances of a service's live version.
    Scale(ops::ScaleArgs),
    /// A service's instance logs.
    Logs(ops::LogsArgs),
    /// Deploy to one environment exactly the builds another runs (staging → production).
    Promote(release::PromoteArgs),
    /// Approve the deploy waiting for approval in an environment; it starts at once.
    Approve(release::DecideArgs),
    /// Reject the deploy waiting for approval in an environment.
    Reject(release::DecideArgs),
    /// A running canary: status, promote, abort.
    Canary(release::CanaryArgs),
    /// Encrypted secrets: init, set, get, list, rm, edit, import, recipients, rotate, exec.
    Secrets(secrets::Args),
    /// Database migrations, backups, restore and verification.
    Db(db::Args),
    /// Service-level objectives: SLI, error budget left, burn rates, latency, burn alerts.
    Slo(slo::Args),
    /// What the monitor's probes see now; exits 1 while one is down.
    Probes(probes::Args),
    /// Acknowledge a firing alert: its escalation and repeats stop.
    Ack(alerts::AckArgs),
    /// Firing alerts (`--all`: resolved ones too).
    Alerts(alerts::AlertsArgs),
    /// Silences: add, list, expire.
    Silence(alerts::SilenceArgs),
    /// Incidents: list, show, note, resolve, postmortem, stats (MTTR, MTBF).
    Incident(alerts::IncidentArgs),
    /// Print a shell completion script: `source <(windlass completions bash)`.
    Completions(CompletionsArgs),
}

#[derive(clap::Args)]
struct CompletionsArgs {
    /// The shell to complete in.
    shell: CompletionShell,
}

#[derive(Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// `windlass completions <shell>`: the script, generated from the same clap definition that
/// parses the arguments, so it never falls behind a new command or flag.
fn completions(args: CompletionsArgs) -> anyhow::Result<Outcome> {
    use clap::CommandFactory as _;
    let shell = match args.shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "windlass", &mut std::io::stdout());
    Ok(Outcome::Ok)
}

/// `--output text|json`, on every command that prints results: text is for people (tables
/// through [`table`]), JSON is the API's typed response, pretty-printed, for scripts.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

/// The outcome of a command, mapped to the exit code.
#[derive(PartialEq, Eq)]
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

/// The config at `path`; a broken one is a usage error listing its problems.
pub fn load_config(path: &std::path::Path) -> anyhow::Result<windlass_config::Config> {
    windlass_config::load(path).map_err(|err| match err {
        windlass_config::LoadError::Invalid { diagnostics, .. } => {
            let rendered: Vec<String> = diagnostics.iter().filter(|d| d.is_error()).map(|d| d.render()).collect();
            UsageError(format!("{} is not valid; run `windlass validate`:\n{}", path.display(), rendered.join("\n")))
                .into()
        }
        other => anyhow::Error::from(UsageError(other.to_string())),
    })
}

/// `windlass deploys staging | head -1`: when the reader goes away, end quietly as other
/// command-line tools do, instead of panicking in `println!` (Rust ignores SIGPIPE by default).
/// Not for the long-running roles (`up`, `server`, `edge`): losing their reader must not kill
/// them before they stop what they started.
fn die_quietly_on_broken_pipe() {
    #[allow(unsafe_code)]
    // SAFETY: setting a signal's disposition to SIG_DFL at the start of main, before any
    // thread exists, races with nothing and installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    // Defence in depth: every file Windlass writes is created private (0600, directories 0700)
    // through `windlass_failpoint::private`; the umask also covers what is created without an
    // explicit mode (SQLite's `-wal`/`-shm`, libraries, the shims and steps started from here).
    windlass_failpoint::private::restrict_umask();
    // The seeds' `--skip-backend` spelling is `--skip backend`.
    let cli = Cli::parse_from(windlass_pipeline::plan::rewrite_seed_flags(std::env::args()));
    if !matches!(cli.command, Command::Up(_) | Command::Server(_) | Command::Edge(_)) {
        die_quietly_on_broken_pipe();
    }
    let result = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Init(args) => init::run(args),
        Command::Edge(args) => edge::run(args),
        Command::Up(args) => up::run(args),
        Command::Server(args) => server::server(args),
        Command::Token(args) => server::token(args),
        Command::Deploy(args) => ops::deploy(args),
        Command::Deploys(args) => ops::deploys(args),
        Command::Rollback(args) => ops::rollback(args),
        Command::Status(args) => ops::status(args),
        Command::Events(args) => ops::events(args),
        Command::Lock(args) => ops::lock(args),
        Command::Maintenance(args) => ops::maintenance(args),
        Command::Failover(args) => ops::failover(args),
        Command::Scale(args) => ops::scale(args),
        Command::Logs(args) => ops::logs(args),
        Command::Canary(args) => release::canary(args),
        Command::Approve(args) => release::approve(args),
        Command::Reject(args) => release::reject(args),
        Command::Promote(args) => release::promote(args),
        Command::Secrets(args) => secrets::run(args),
        Command::Db(args) => db::run(args),
        Command::Slo(args) => slo::run(args),
        Command::Probes(args) => probes::run(args),
        Command::Ack(args) => alerts::ack(args),
        Command::Alerts(args) => alerts::alerts(args),
        Command::Silence(args) => alerts::silence(args),
        Command::Incident(args) => alerts::incident(args),
        Command::Completions(args) => completions(args),
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
