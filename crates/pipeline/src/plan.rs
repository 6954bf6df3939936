//! What a deploy will do, decided before anything changes: the config's phases in order, which
//! run and which are skipped (and why), and the steps of each. `--dry-run` prints exactly this.

use serde::Serialize;

use windlass_config::{Config, Strategy};

/// How the user narrowed a deploy.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployOptions {
    pub skip: Vec<String>,
    pub only: Vec<String>,
    pub dry_run: bool,
    pub reason: Option<String>,
    /// Deploy outside the environment's deploy window (needs a reason, which is recorded).
    pub override_window: bool,
    /// The requester approves their own deploy (only where `approval = "anyone"`).
    pub approve: bool,
    /// `--version api=v2`: the version each named service rolls out at.
    #[serde(default)]
    pub versions: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub environment: String,
    pub phases: Vec<PhasePlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhasePlan {
    pub name: String,
    /// Why this phase does not run (`--skip`, `--only`), or none when it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub steps: Vec<StepPlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepPlan {
    /// The config and the environment's variables, checked again at deploy time.
    Validate,
    /// A service rolled out with its strategy, which moves its own traffic.
    Rollout { service: String, strategy: String, instances: u32 },
    /// A custom step from `[[phases.<phase>.steps]]`, by its index there.
    Command { name: String, index: usize },
    /// A smoke check from `[[smoke]]`, by its index there.
    Smoke { name: String, index: usize },
    /// The database's pending migrations (`[database] migrate`), after a backup when
    /// `backup.before_migrate` is on.
    Migrate { backup: bool },
}

impl StepPlan {
    pub fn title(&self) -> String {
        match self {
            StepPlan::Validate => "validate config and variables".into(),
            StepPlan::Rollout { service, strategy, instances } => {
                format!(
                    "roll out {service} ({strategy}, {instances} instance{})",
                    if *instances == 1 { "" } else { "s" }
                )
            }
            StepPlan::Command { name, .. } => name.clone(),
            StepPlan::Smoke { name, .. } => format!("smoke check: {name}"),
            StepPlan::Migrate { backup: true } => "back up the database, then migrate it".into(),
            StepPlan::Migrate { backup: false } => "migrate the database (no backup)".into(),
        }
    }
}

impl Plan {
    /// The services this plan rolls out, in order.
    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.phases.iter().filter(|p| p.skipped.is_none()).flat_map(|p| {
            p.steps.iter().filter_map(|s| match s {
                StepPlan::Rollout { service, .. } => Some(service.as_str()),
                _ => None,
            })
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("environment `{name}` is not declared (declared: {declared}){}", suggest(.suggestion))]
    UnknownEnvironment { name: String, declared: String, suggestion: Option<String> },
    #[error("`--{flag} {name}`: no phase `{name}` (phases: {phases}){}", suggest(.suggestion))]
    UnknownPhase { flag: &'static str, name: String, phases: String, suggestion: Option<String> },
    #[error("phase `{0}` is given to both --skip and --only")]
    SkipAndOnly(String),
    #[error("`--version {service}={version}`: {problem}")]
    BadVersion { service: String, version: String, problem: String },
}

fn suggest(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
}

pub fn strategy_name(strategy: &Strategy) -> &'static str {
    match strategy {
        Strategy::Rolling => "rolling",
        Strategy::BlueGreen => "blue-green",
        Strategy::Canary(_) => "canary",
    }
}

/// That `environment` is declared, or which are (with a suggestion).
pub fn check_environment(config: &Config, environment: &str) -> Result<(), PlanError> {
    if config.environments.contains_key(environment) {
        return Ok(());
    }
    let declared: Vec<&str> = config.environments.keys().map(String::as_str).collect();
    Err(PlanError::UnknownEnvironment {
        name: environment.into(),
        declared: declared.join(", "),
        suggestion: windlass_config::did_you_mean(environment, declared.iter().copied()).map(str::to_owned),
    })
}

/// Why a deploy is refused by its environment's `deploy_window`.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// `closed` says when the window is and when it opens next.
    #[error("{closed}. To deploy anyway: --override-window --reason \"why\"")]
    Closed { closed: String },
    #[error("--override-window needs --reason \"why\": the reason is recorded with the deploy")]
    NoReason,
}

/// Refuses a deploy outside the environment's `deploy_window`, saying when it next opens, unless
/// the window is overridden with a reason. Returns the override to record, if one was used.
pub fn check_window(
    config: &Config,
    environment: &str,
    options: &DeployOptions,
    now: jiff::Timestamp,
) -> Result<Option<String>, WindowError> {
    let Some(window) = config.environments.get(environment).and_then(|e| e.deploy_window.as_ref()) else {
        return Ok(None);
    };
    if window.is_open(now) {
        return Ok(None);
    }
    let next = match window.next_open(now) {
        Some(opens) => {
            let local = opens.to_zoned(window.time_zone.clone());
            let wait = opens.duration_since(now).as_secs().max(0) as u64;
            format!(
                "it opens next at {} ({})",
                local.strftime("%a %Y-%m-%d %H:%M %Z"),
                crate::plan::human_wait(std::time::Duration::from_secs(wait))
            )
        }
        None => "it never opens".to_owned(),
    };
    let closed = format!("`{environment}` accepts deploys only {} and is closed now: {next}", window.text);
    if !options.override_window {
        return Err(WindowError::Closed { closed });
    }
    match options.reason.as_deref().map(str::trim) {
        Some(reason) if !reason.is_empty() => Ok(Some(format!("deploy window overridden ({closed}): {reason}"))),
        _ => Err(WindowError::NoReason),
    }
}

/// "in 2d 13h", "in 45m", "in 30s".
pub fn human_wait(wait: std::time::Duration) -> String {
    let seconds = wait.as_secs();
    let (days, hours, minutes) = (seconds / 86_400, seconds % 86_400 / 3600, seconds % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("in {seconds}s"),
        (0, 0, m) => format!("in {m}m"),
        (0, h, m) => format!("in {h}h {m}m"),
        (d, h, _) => format!("in {d}d {h}h"),
    }
}

/// The plan for deploying `environment` with `options`.
pub fn plan(config: &Config, environment: &str, options: &DeployOptions) -> Result<Plan, PlanError> {
    check_environment(config, environment)?;
    let phases: Vec<&str> = config.pipeline.phases.iter().map(|p| p.value.as_str()).collect();
    for (flag, names) in [("skip", &options.skip), ("only", &options.only)] {
        for name in names {
            if !phases.contains(&name.as_str()) {
                return Err(PlanError::UnknownPhase {
                    flag,
                    name: name.clone(),
                    phases: phases.join(", "),
                    suggestion: windlass_config::did_you_mean(name, phases.iter().copied()).map(str::to_owned),
                });
            }
        }
    }
    if let Some(both) = options.skip.iter().find(|s| options.only.contains(s)) {
        return Err(PlanError::SkipAndOnly(both.clone()));
    }

    let mut planned = Vec::new();
    for &phase in &phases {
        let skipped = if options.skip.iter().any(|s| s == phase) {
            Some("skipped with --skip".to_owned())
        } else if !options.only.is_empty() && !options.only.iter().any(|s| s == phase) && phase != "validate" {
            // `validate` is a guard, not work: it runs unless skipped by name.
            Some("not in --only".to_owned())
        } else {
            None
        };
        let mut steps = Vec::new();
        if phase == "validate" {
            steps.push(StepPlan::Validate);
        }
        if phase == "database"
            && let Some(database) = config.database.as_ref().filter(|d| d.migrate.is_some())
        {
            steps.push(StepPlan::Migrate { backup: database.backup.before_migrate });
        }
        for name in config.services.keys() {
            let Some(service) = config.service_in(environment, name) else { continue };
            if service.phase.value == phase && service.run.is_some() {
                steps.push(StepPlan::Rollout {
                    service: name.clone(),
                    strategy: strategy_name(&service.strategy).into(),
                    instances: service.instances,
                });
            }
        }
        if let Some(custom) = config.phases.get(phase) {
            for (index, step) in custom.steps.iter().enumerate() {
                let name = step.name.clone().unwrap_or_else(|| format!("{phase} step {}", index + 1));
                steps.push(StepPlan::Command { name, index });
            }
        }
        if phase == "verification" {
            for (index, check) in config.smoke.iter().enumerate() {
                steps.push(StepPlan::Smoke { name: check.name.clone(), index });
            }
        }
        planned.push(PhasePlan { name: phase.to_owned(), skipped, steps });
    }
    let plan = Plan { environment: environment.into(), phases: planned };
    check_versions(config, environment, &plan, &options.versions)?;
    Ok(plan)
}

/// A version names a service this deploy rolls out, in a form safe to put in a path or an
/// environment variable.
fn check_versions(
    config: &Config,
    environment: &str,
    plan: &Plan,
    versions: &std::collections::BTreeMap<String, String>,
) -> Result<(), PlanError> {
    for (service, version) in versions {
        let bad =
            |problem: String| PlanError::BadVersion { service: service.clone(), version: version.clone(), problem };
        let Some(spec) = config.service_in(environment, service) else {
            let known: Vec<&str> = config.services.keys().map(String::as_str).collect();
            let hint = windlass_config::did_you_mean(service, known.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(bad(format!("no service `{service}` runs in `{environment}`{hint}")));
        };
        let valid = !version.is_empty()
            && version.len() <= 64
            && version.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
        if !valid {
            return Err(bad("a version is 1 to 64 letters, digits, `.`, `-`, `_` or `+`".into()));
        }
        if !plan.services().any(|s| s == service) {
            return Err(bad(format!(
                "this deploy does not roll out `{service}` (its phase `{}` does not run)",
                spec.phase.value
            )));
        }
    }
    Ok(())
}

/// The seeds' spellings: `--skip-backend` is `--skip backend`. Returns the arguments rewritten.
pub fn rewrite_seed_flags(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    for arg in args {
        match arg.strip_prefix("--skip-") {
            Some(phase) if !phase.is_empty() && !phase.contains('=') => {
                out.push("--skip".to_owned());
                out.push(phase.to_owned());
            }
            _ => out.push(arg),
        }
    }
    out
}
