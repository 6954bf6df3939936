//! The typed model of `windlass.toml`, and how each section is read.
//!
//! Each type's `decode` lists the keys it knows; `docs/config.md` documents the same keys (a test
//! checks that the two agree). Defaults live here, next to the key they belong to.

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, integer_in, named_entries, one_of};
use crate::source::Source;
use crate::template::{CommandTemplate, Setting, Template};
use crate::units::{ByteSize, Duration, Percent, Rate};
use crate::window::DeployWindow;

/// The phases of a deploy when the config does not list its own (the seeds' order).
pub const DEFAULT_PHASES: [&str; 9] =
    ["validate", "infrastructure", "database", "backend", "frontend", "ai", "monitoring", "verification", "traffic"];

/// A whole `windlass.toml`.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: Source,
    pub project: Project,
    pub environments: IndexMap<String, Environment>,
    /// The declared variables (`[env]`), the schema a `.env.<environment>` file must satisfy.
    pub env: IndexMap<String, VarSpec>,
    pub pipeline: Pipeline,
    pub phases: IndexMap<String, Phase>,
    pub services: IndexMap<String, Service>,
    pub smoke: Vec<SmokeCheck>,
    pub database: Option<Database>,
    pub slo: IndexMap<String, Slo>,
    pub alerts: Alerts,
    pub oncall: crate::oncall::OnCall,
    /// `[monitor]`: burn-rate alerts and the fewest requests a window needs.
    pub monitor: crate::monitor::Monitor,
    pub edge: Edge,
    pub secrets: SecretsBackend,
    pub probes: IndexMap<String, crate::probes::Probe>,
    /// `[server]`: how `windlass server` serves its API (TLS).
    pub server: crate::server::Server,
}

impl Config {
    pub(crate) fn decode(cx: &mut Cx, root: &Value) -> Self {
        let at = At::default();
        let mut top = Table::open(cx, root, &at);
        let mut section = |cx: &mut Cx, key: &'static str| top.as_mut().and_then(|t| t.get(cx, key));

        let project = section(cx, "project").and_then(|v| Project::decode(cx, v, &at.key("project")));
        let environments = section(cx, "environments")
            .map(|v| named_entries(cx, v, &at.key("environments"), "<env>", Environment::decode))
            .unwrap_or_default();
        let env = section(cx, "env")
            .map(|v| named_entries(cx, v, &at.key("env"), "<VAR>", VarSpec::decode))
            .unwrap_or_default();
        let pipeline =
            section(cx, "pipeline").and_then(|v| Pipeline::decode(cx, v, &at.key("pipeline"))).unwrap_or_default();
        let phases = section(cx, "phases")
            .map(|v| named_entries(cx, v, &at.key("phases"), "<phase>", Phase::decode))
            .unwrap_or_default();
        let services = section(cx, "services")
            .map(|v| named_entries(cx, v, &at.key("services"), "<service>", Service::decode))
            .unwrap_or_default();
        let smoke = section(cx, "smoke").and_then(|v| Vec::<SmokeCheck>::decode(cx, v, &at.key("smoke")));
        let database = section(cx, "database").and_then(|v| Database::decode(cx, v, &at.key("database")));
        let slo = section(cx, "slo")
            .map(|v| named_entries(cx, v, &at.key("slo"), "<service>", Slo::decode))
            .unwrap_or_default();
        let alerts = section(cx, "alerts").and_then(|v| Alerts::decode(cx, v, &at.key("alerts")));
        let oncall = section(cx, "oncall").and_then(|v| crate::oncall::OnCall::decode(cx, v, &at.key("oncall")));
        let monitor = section(cx, "monitor").and_then(|v| crate::monitor::Monitor::decode(cx, v, &at.key("monitor")));
        let edge = section(cx, "edge").and_then(|v| Edge::decode(cx, v, &at.key("edge")));
        let secrets = section(cx, "secrets").and_then(|v| SecretsBackend::decode(cx, v, &at.key("secrets")));
        let probes = section(cx, "probes").map(|v| crate::probes::decode_probes(cx, v, &at.key("probes")));
        let server = section(cx, "server").and_then(|v| crate::server::Server::decode(cx, v, &at.key("server")));
        if let Some(top) = top {
            top.finish(cx);
        }

        check_docker_services(cx, &services, &environments);
        let project = project.unwrap_or_else(|| {
            cx.error(0..0, "missing [project] table").expected = Some("[project] with name = \"...\"".into());
            Project { name: String::new(), state_dir: None }
        });
        Config {
            source: cx.source.clone(),
            project,
            environments,
            env,
            pipeline,
            phases,
            services,
            smoke: smoke.unwrap_or_default(),
            database,
            slo,
            alerts: alerts.unwrap_or_default(),
            oncall: oncall.unwrap_or_default(),
            monitor: monitor.unwrap_or_default(),
            edge: edge.unwrap_or_default(),
            secrets: secrets.unwrap_or_default(),
            probes: probes.unwrap_or_default(),
            server: server.unwrap_or_default(),
        }
    }
}

/// Reads a name the user gives to an environment or service: lowercase letters, digits and `-`,
/// since it ends up in deploy ids, host names and file names.
pub(crate) fn check_slug(cx: &mut Cx, name: &Spanned<String>, what: &str) -> bool {
    let ok = name.value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.value.len() <= 63;
    if !ok {
        cx.error(name.span.clone(), format!("invalid {what} name `{}`", name.value)).expected =
            Some("lowercase letters, digits and `-`, starting with a letter or digit, at most 63 characters".into());
    }
    ok
}

#[derive(Debug, Clone)]
pub struct Project {
    pub name: String,
    /// Where Windlass keeps its state (database, artifacts, logs), relative to the config file.
    pub state_dir: Option<String>,
}

impl Decode for Project {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let name: Option<Spanned<String>> = t.required(cx, "name");
        let state_dir = t.optional(cx, "state_dir");
        t.finish(cx);
        let name = name?;
        check_slug(cx, &name, "project");
        Some(Project { name: name.value, state_dir })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Approval {
    #[default]
    None,
    /// Someone other than the requester approves each deploy.
    Required,
    /// Anyone with a token approves, the requester too (`windlass deploy <env> --approve`).
    Anyone,
}

#[derive(Debug, Clone)]
pub struct Environment {
    pub name: Spanned<String>,
    pub approval: Approval,
    pub deploy_window: Option<DeployWindow>,
    /// The env file read for this environment, relative to the config file
    /// (default `.env.<env>`).
    pub env_file: Option<String>,
    /// Per-environment changes to services (`[environments.production.services.api]`).
    pub services: IndexMap<String, ServiceOverride>,
    pub secrets: Option<SecretsBackend>,
}

impl Environment {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        check_slug(cx, &name, "environment");
        let mut t = Table::open(cx, value, at)?;
        let approval = t
            .get(cx, "approval")
            .and_then(|v| {
                one_of(
                    cx,
                    v,
                    &at.key("approval"),
                    &[("required", Approval::Required), ("anyone", Approval::Anyone), ("none", Approval::None)],
                )
            })
            .unwrap_or_default();
        let deploy_window = t.optional(cx, "deploy_window");
        let env_file = t.optional(cx, "env_file");
        let services = t
            .get(cx, "services")
            .map(|v| named_entries(cx, v, &at.key("services"), "<service>", ServiceOverride::decode))
            .unwrap_or_default();
        let secrets = t.optional(cx, "secrets");
        t.finish(cx);
        Some(Environment { name, approval, deploy_window, env_file, services, secrets })
    }
}

/// The format a variable's value must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarFormat {
    Url,
    Int,
    Port,
    Bool,
    Duration,
    Email,
}

/// One declared variable in `[env]`.
#[derive(Debug, Clone)]
pub struct VarSpec {
    pub name: Spanned<String>,
    pub required: bool,
    pub default: Option<String>,
    pub secret: bool,
    /// A secret value shorter than the redactor can find reliably is accepted (it is hidden only
    /// where it stands as a whole word).
    pub allow_short: bool,
    pub format: Option<VarFormat>,
    pub one_of: Option<Vec<String>>,
    pub regex: Option<Spanned<String>>,
    pub min_length: Option<u32>,
    pub max_length: Option<u32>,
    pub description: Option<String>,
    /// The environments this variable applies to; all when absent.
    pub environments: Option<Vec<Spanned<String>>>,
}

impl VarSpec {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let valid_name = name.value.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            cx.error(name.span.clone(), format!("invalid variable name `{}`", name.value)).expected =
                Some("letters, digits and `_`, not starting with a digit".into());
        }
        let mut t = Table::open(cx, value, at)?;
        let required: Option<bool> = t.optional(cx, "required");
        let default: Option<String> = t.optional(cx, "default");
        let secret = t.or(cx, "secret", false);
        let allow_short: Option<Spanned<bool>> = t.optional(cx, "allow_short");
        if let Some(allow) = &allow_short
            && allow.value
            && !secret
        {
            cx.warning(
                allow.span.clone(),
                format!("`allow_short` is for secret variables; `{}` is not one", name.value),
            );
        }
        let format = t.get(cx, "format").and_then(|v| {
            use VarFormat::*;
            let choices =
                [("url", Url), ("int", Int), ("port", Port), ("bool", Bool), ("duration", Duration), ("email", Email)];
            one_of(cx, v, &at.key("format"), &choices)
        });
        let one_of_values = t.optional(cx, "one_of");
        let regex: Option<Spanned<String>> = t.optional(cx, "regex");
        if let Some(pattern) = &regex
            && let Err(err) = regex_lite::Regex::new(pattern)
        {
            cx.error(pattern.span.clone(), format!("invalid regular expression in `{}.regex`: {err}", at.path));
        }
        let min_length = t.optional(cx, "min_length");
        let max_length = t.optional(cx, "max_length");
        let description = t.optional(cx, "description");
        let environments = t.optional(cx, "environments");
        t.finish(cx);
        if required == Some(true) && default.is_some() {
            cx.warning(
                name.span.clone(),
                format!("`{}` is required but has a default; the default always satisfies it", name.value),
            );
        }
        Some(VarSpec {
            required: required.unwrap_or(default.is_none()),
            name,
            default,
            secret,
            allow_short: allow_short.is_some_and(|a| a.value),
            format,
            one_of: one_of_values,
            regex,
            min_length,
            max_length,
            description,
            environments,
        })
    }

    /// Whether the variable is declared for `environment`.
    pub fn applies_to(&self, environment: &str) -> bool {
        self.environments.as_ref().is_none_or(|envs| envs.iter().any(|e| e.value == environment))
    }
}

#[derive(Debug, Clone)]
pub struct Pipeline {
    /// Phase names in the order a deploy runs them.
    pub phases: Vec<Spanned<String>>,
    /// Receivers (of `[alerts.receivers]`, Slack or webhook) told when deploys start and end,
    /// roll back, canaries abort and approvals are requested.
    pub notify: Vec<Spanned<String>>,
    /// Critical alerts of a service, fired after a deploy started, stop that deploy (and undo
    /// it), or roll it back while its previous color is still warm.
    pub auto_rollback: bool,
}

impl Default for Pipeline {
    fn default() -> Self {
        Pipeline {
            phases: DEFAULT_PHASES.iter().map(|p| Spanned::new((*p).to_owned(), 0..0)).collect(),
            notify: Vec::new(),
            auto_rollback: true,
        }
    }
}

impl Decode for Pipeline {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let phases: Option<Vec<Spanned<String>>> = t.optional(cx, "phases");
        let notify: Vec<Spanned<String>> = t.optional(cx, "notify").unwrap_or_default();
        let auto_rollback = t.or(cx, "auto_rollback", true);
        t.finish(cx);
        let phases = phases.unwrap_or_else(|| Pipeline::default().phases);
        for (i, phase) in phases.iter().enumerate() {
            if phases[..i].iter().any(|p| p.value == phase.value) {
                cx.error(phase.span.clone(), format!("phase `{}` is listed twice in `pipeline.phases`", phase.value));
            }
        }
        Some(Pipeline { phases, notify, auto_rollback })
    }
}

/// Custom steps attached to a phase (`[[phases.infrastructure.steps]]`).
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: Spanned<String>,
    pub steps: Vec<Step>,
}

impl Phase {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let steps = t.or(cx, "steps", Vec::new());
        t.finish(cx);
        Some(Phase { name, steps })
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: Option<String>,
    pub run: CommandTemplate,
    pub timeout: Duration,
    pub retries: u32,
    /// A command that reverses this step, run when the deploy fails or is rolled back.
    pub undo: Option<CommandTemplate>,
    pub env: IndexMap<String, Setting>,
}

impl Decode for Step {
    fn expected() -> String {
        "a table with `run`".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let name = t.optional(cx, "name");
        let commands_from = cx.var_refs.len();
        let run = t.required(cx, "run");
        let timeout = t.or(cx, "timeout", Duration::from_secs(600));
        let retries = t.get(cx, "retries").and_then(|v| integer_in(cx, v, &at.key("retries"), 0..=10)).unwrap_or(0);
        let undo = t.optional(cx, "undo");
        let commands_to = cx.var_refs.len();
        let env = read_env_table(cx, &mut t);
        // `sh` expands the commands' references from the child's environment, which holds the
        // step's own `env`: a reference to one of those needs no declaration in `[env]`.
        let mut index = 0;
        cx.var_refs.retain(|reference| {
            let own = (commands_from..commands_to).contains(&index) && env.contains_key(&reference.value);
            index += 1;
            !own
        });
        t.finish(cx);
        Some(Step { name, run: run?, timeout, retries: retries as u32, undo, env })
    }
}

/// Reads a count of checks, requests or failures: at least 1 (a threshold of 0 would fire at
/// once or never), at most a million.
fn count(cx: &mut Cx, t: &mut Table, key: &'static str, default: u32) -> u32 {
    let at = t.at().key(key);
    t.get(cx, key).and_then(|v| integer_in(cx, v, &at, 1..=1_000_000)).map_or(default, |n| n as u32)
}

/// Reads a service's optional `run`, noting its references for the check that keeps secrets
/// off an instance's command line.
fn decode_run(cx: &mut Cx, t: &mut Table) -> Option<Template> {
    let run: Spanned<Template> = t.optional(cx, "run")?;
    for (index, var) in run.value.vars().enumerate() {
        let reference =
            crate::template::Reference { name: var.to_owned(), index, concern: crate::template::Concern::Unquoted };
        let span = crate::template::reference_span(cx, run.span.clone(), &reference);
        cx.run_refs.push(Spanned::new(var.to_owned(), span));
    }
    Some(run.value)
}

/// Reads an optional `env = { NAME = "value" | { secret = "NAME" } }` table.
fn read_env_table(cx: &mut Cx, t: &mut Table) -> IndexMap<String, Setting> {
    let at = t.at().key("env");
    t.get(cx, "env")
        .map(|v| named_entries(cx, v, &at, "<VAR>", |cx, _, v, at| Setting::decode(cx, v, at)))
        .unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryStep {
    /// Share of new clients sent to the canary, 1..=100.
    pub weight: u8,
    pub pause: Duration,
}

/// Where a service's instances run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceRuntime {
    /// Local processes, each under its own shim (the default).
    #[default]
    Process,
    /// Containers on the local Docker Engine, from an image `FROM scratch` holding the `run`
    /// program (which must be a static executable).
    Docker,
}

impl ServiceRuntime {
    fn decode_key(cx: &mut Cx, t: &mut Table, at: &At) -> Option<Self> {
        t.get(cx, "runtime").and_then(|v| {
            one_of(
                cx,
                v,
                &at.key("runtime"),
                &[("process", ServiceRuntime::Process), ("docker", ServiceRuntime::Docker)],
            )
        })
    }
}

/// A docker service needs `run`, and its program must be a file: the image is built from it.
fn check_docker_services(
    cx: &mut Cx,
    services: &IndexMap<String, Service>,
    environments: &IndexMap<String, Environment>,
) {
    let mut checks: Vec<(Spanned<String>, Option<Template>, String)> = Vec::new();
    for service in services.values().filter(|s| s.runtime == ServiceRuntime::Docker) {
        checks.push((service.name.clone(), service.run.clone(), format!("service `{}`", service.name.value)));
    }
    for environment in environments.values() {
        for (name, changes) in &environment.services {
            let Some(base) = services.get(name) else { continue };
            let merged = changes.apply(base);
            let changed = changes.runtime.is_some() || changes.run.is_some();
            if merged.runtime == ServiceRuntime::Docker && changed {
                let span = changes.name.clone().unwrap_or_else(|| base.name.clone());
                checks.push((
                    span,
                    merged.run,
                    format!("service `{name}` in environment `{}`", environment.name.value),
                ));
            }
        }
    }
    let config_dir = crate::config_dir(cx.source.path());
    for (name, run, what) in checks {
        let Some(run) = run else {
            cx.error(name.span.clone(), format!("{what} runs in docker but has no `run` command")).help =
                Some("`run` names the static executable that is put into the service's image".into());
            continue;
        };
        // The first word is the program; one with a variable or quotes is resolved at deploy time.
        let Some(program) = run.raw.split_whitespace().next() else { continue };
        if program.contains(['$', '\'', '"']) {
            continue;
        }
        if resolve_program(program, &config_dir).is_none() {
            let diagnostic = cx
                .error(name.span.clone(), format!("{what} runs in docker, but its program `{program}` is not a file"));
            diagnostic.help = Some(
                "the image is built from the executable itself: give its path (relative to the config), or put it \
                 on PATH or beside windlass; it must be static (see scripts/build-static-demo)"
                    .into(),
            );
        }
    }
}

/// The file a program names: a path (relative to the config's directory), or a name on PATH or
/// beside the running windlass (where `windlass-demo` is installed); how a deploy finds it too.
/// A path comes back absolute (instances run in other directories).
pub fn resolve_program(program: &str, config_dir: &std::path::Path) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        let path = config_dir.join(program);
        return path.is_file().then(|| std::path::absolute(&path).unwrap_or(path));
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join(program)).collect::<Vec<_>>())
        .unwrap_or_default();
    let beside_us = std::env::current_exe().ok().and_then(|exe| exe.parent().map(|dir| dir.join(program)));
    on_path.into_iter().chain(beside_us).find(|path| path.is_file())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    Rolling,
    BlueGreen,
    Canary(Vec<CanaryStep>),
}

impl Decode for Strategy {
    fn expected() -> String {
        "\"rolling\", \"blue-green\" or { canary = [ { weight = 10, pause = \"1m\" }, ... ] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        if value.get_ref().is_str() {
            let kind = one_of(cx, value, at, &[("rolling", 0), ("blue-green", 1), ("canary", 2)])?;
            return match kind {
                0 => Some(Strategy::Rolling),
                1 => Some(Strategy::BlueGreen),
                _ => {
                    cx.invalid(value, at, &Self::expected(), "a canary needs its steps");
                    None
                }
            };
        }
        if !value.get_ref().is_table() {
            cx.wrong_type(value, at, &Self::expected());
            return None;
        }
        let mut t = Table::open(cx, value, at)?;
        let steps_value = t.get(cx, "canary");
        let steps: Option<Vec<Spanned<CanaryStep>>> =
            steps_value.and_then(|v| Decode::decode(cx, v, &at.key("canary")));
        t.finish(cx);
        let Some(steps_value) = steps_value else {
            cx.invalid(value, at, &Self::expected(), "the table form names a canary");
            return None;
        };
        let steps = steps?;
        if steps.is_empty() {
            cx.invalid(steps_value, &at.key("canary"), "at least one step", "a canary needs at least one step");
            return None;
        }
        let mut ok = true;
        for pair in steps.windows(2) {
            if pair[1].weight <= pair[0].weight {
                ok = false;
                cx.error(
                    pair[1].span.clone(),
                    format!("canary weights must rise: {} comes after {}", pair[1].weight, pair[0].weight),
                )
                .expected = Some(format!("a weight above {}", pair[0].weight));
            }
        }
        ok.then(|| Strategy::Canary(steps.into_iter().map(|s| s.value).collect()))
    }
}

impl Decode for CanaryStep {
    fn expected() -> String {
        "{ weight = 1..100, pause = \"1m\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let weight = match t.get(cx, "weight") {
            Some(v) => integer_in(cx, v, &at.key("weight"), 1..=100),
            None => {
                cx.error(t.span(), format!("missing key `weight` in canary step `{}`", at.path)).expected =
                    Some("a weight from 1 to 100".into());
                None
            }
        };
        let pause = t.or(cx, "pause", Duration::from_secs(60));
        t.finish(cx);
        Some(CanaryStep { weight: weight? as u8, pause })
    }
}

/// Automatic canary analysis, read from the edge's live metrics of the canary pool.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub interval: Duration,
    pub max_error_rate: Option<Percent>,
    pub max_p95: Option<Duration>,
    pub max_p99: Option<Duration>,
    /// Fewer requests than this in an interval make it inconclusive, never a pass.
    pub min_requests: u32,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
    pub compare_to_stable: bool,
}

impl Decode for Analysis {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let analysis = Analysis {
            interval: t.or(cx, "interval", Duration::from_secs(10)),
            max_error_rate: t.optional(cx, "max_error_rate"),
            max_p95: t.optional(cx, "max_p95"),
            max_p99: t.optional(cx, "max_p99"),
            min_requests: count(cx, &mut t, "min_requests", 20),
            failure_limit: count(cx, &mut t, "failure_limit", 1),
            inconclusive_limit: count(cx, &mut t, "inconclusive_limit", 3),
            compare_to_stable: t.or(cx, "compare_to_stable", false),
        };
        t.finish(cx);
        Some(analysis)
    }
}

/// Where a service is reachable through the edge.
#[derive(Debug, Clone)]
pub struct Route {
    /// Exact (`api.maily.localhost`) or wildcard (`*.maily.localhost`); any host when absent.
    pub host: Option<String>,
    pub path: String,
    pub span: std::ops::Range<usize>,
}

impl Decode for Route {
    fn expected() -> String {
        "{ host = \"api.example.localhost\", path = \"/\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let host: Option<Spanned<String>> = t.optional(cx, "host");
        let path: Option<Spanned<String>> = t.optional(cx, "path");
        t.finish(cx);
        if let Some(host) = &host {
            let bare = host.value.strip_prefix("*.").unwrap_or(&host.value);
            let valid = !bare.is_empty()
                && bare.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                cx.error(host.span.clone(), format!("invalid host `{}` in `{}`", host.value, at.path)).expected =
                    Some("a host name such as \"api.example.com\" or \"*.example.com\"".into());
            }
        }
        if let Some(path) = &path
            && !path.value.starts_with('/')
        {
            cx.error(path.span.clone(), format!("route path `{}` must start with `/`", path.value));
        }
        Some(Route {
            host: host.map(|h| h.value.to_ascii_lowercase()),
            path: path.map_or_else(|| "/".to_owned(), |p| p.value),
            span: value.span(),
        })
    }
}

/// A route written as one table or an array of them (both documented as `route.host`, ...).
fn decode_routes(cx: &mut Cx, value: &Value, at: &At) -> Option<Vec<Route>> {
    let Some(items) = value.get_ref().as_array() else {
        return Route::decode(cx, value, at).map(|r| vec![r]);
    };
    let decoded: Vec<Option<Route>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| Route::decode(cx, item, &At { path: format!("{}[{i}]", at.path), schema: at.schema.clone() }))
        .collect();
    decoded.into_iter().collect()
}

#[derive(Debug, Clone)]
pub struct Health {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    /// How long a new instance may take to become healthy before its start counts as failed.
    pub start_timeout: Duration,
}

impl Decode for Health {
    fn expected() -> String {
        "{ path = \"/health\", interval = \"1s\", ... }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let path: Spanned<String> = t.or(cx, "path", Spanned::new("/health".to_owned(), 0..0));
        let health = Health {
            path: path.value.clone(),
            interval: t.or(cx, "interval", Duration::from_secs(1)),
            timeout: t.or(cx, "timeout", Duration::from_millis(500)),
            healthy_after: count(cx, &mut t, "healthy_after", 2),
            unhealthy_after: count(cx, &mut t, "unhealthy_after", 3),
            start_timeout: t.or(cx, "start_timeout", Duration::from_secs(60)),
        };
        t.finish(cx);
        if !path.value.starts_with('/') {
            cx.error(path.span, format!("health path `{}` must start with `/`", path.value));
        }
        if health.timeout > health.interval {
            cx.warning(
                value.span(),
                format!("`{}`: timeout {} is longer than interval {}", at.path, health.timeout, health.interval),
            );
        }
        Some(health)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailoverMode {
    #[default]
    Automatic,
    Manual,
}

/// A secondary pool that takes the traffic when the primary fails: either instances that run
/// elsewhere (another host or region, `secondary`), or standby instances Windlass runs itself
/// (`instances`), which every deploy updates to the primary's build.
#[derive(Debug, Clone)]
pub struct Failover {
    /// `address:port` of each secondary instance that runs outside Windlass (empty when managed).
    pub secondary: Vec<Spanned<String>>,
    /// How many secondary instances Windlass runs and deploys itself.
    pub managed: Option<u32>,
    pub after_failures: u32,
    pub failback_after: u32,
    pub mode: FailoverMode,
}

impl Decode for Failover {
    fn expected() -> String {
        "{ secondary = [\"127.0.0.2:8000\"], after_failures = 3 } or { instances = 1 }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let managed = t.get(cx, "instances").and_then(|v| integer_in(cx, v, &at.key("instances"), 1..=1000));
        let secondary: Option<Vec<Spanned<String>>> =
            if managed.is_some() { t.optional(cx, "secondary") } else { t.required(cx, "secondary") };
        let after_failures = count(cx, &mut t, "after_failures", 3);
        let failback_after = count(cx, &mut t, "failback_after", 5);
        let mode = t
            .get(cx, "mode")
            .and_then(|v| {
                one_of(
                    cx,
                    v,
                    &at.key("mode"),
                    &[("automatic", FailoverMode::Automatic), ("manual", FailoverMode::Manual)],
                )
            })
            .unwrap_or_default();
        t.finish(cx);
        if managed.is_some() && secondary.is_some() {
            cx.error(value.span(), format!("`{}` has both `secondary` and `instances`", at.path)).help = Some(
                "`secondary` names instances that run elsewhere; `instances` makes Windlass run and deploy them: choose one"
                    .into(),
            );
            return None;
        }
        let secondary = match (managed, secondary) {
            (Some(_), _) => Vec::new(),
            (None, secondary) => secondary?,
        };
        for address in &secondary {
            if address.value.parse::<std::net::SocketAddr>().is_err() {
                cx.error(address.span.clone(), format!("invalid secondary address `{}`", address.value)).expected =
                    Some("an IP address and port such as \"127.0.0.2:8000\" or \"[::1]:8000\"".into());
            }
        }
        if secondary.is_empty() && managed.is_none() {
            cx.error(value.span(), format!("`{}.secondary` is empty", at.path));
        }
        Some(Failover { secondary, managed: managed.map(|n| n as u32), after_failures, failback_after, mode })
    }
}

/// Token-bucket rate limits answered with 429 and `Retry-After`.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    /// Per client IP address.
    pub per_client: Option<Rate>,
    /// For the whole route, all clients together.
    pub per_route: Option<Rate>,
    /// Requests allowed in a burst above the rate (default: one second's worth).
    pub burst: Option<u32>,
}

impl Decode for RateLimit {
    fn expected() -> String {
        "{ per_client = \"100/s\", per_route = \"1000/s\", burst = 50 }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let limit = RateLimit {
            per_client: t.optional(cx, "per_client"),
            per_route: t.optional(cx, "per_route"),
            burst: t.optional(cx, "burst"),
        };
        t.finish(cx);
        Some(limit)
    }
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: Spanned<String>,
    pub phase: Spanned<String>,
    /// The command that runs one instance (process runtime). `$PORT` is set for it.
    pub run: Option<Template>,
    /// Working directory of the command, relative to the config file.
    pub dir: Option<String>,
    pub instances: u32,
    pub env: IndexMap<String, Setting>,
    pub strategy: Strategy,
    pub keep_warm: Duration,
    pub analysis: Option<Analysis>,
    pub routes: Vec<Route>,
    pub health: Option<Health>,
    pub depends_on: Vec<Spanned<String>>,
    pub failover: Option<Failover>,
    pub rate_limit: Option<RateLimit>,
    /// Instances that run outside Windlass (`"127.0.0.1:9000"`), served as pool `blue`.
    pub upstreams: Vec<Spanned<String>>,
    /// Time between SIGTERM and SIGKILL when an instance stops.
    pub stop_timeout: Duration,
    /// Where its instances run.
    pub runtime: ServiceRuntime,
}

impl Service {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        check_slug(cx, &name, "service");
        let mut t = Table::open(cx, value, at)?;
        let phase = t.or(cx, "phase", Spanned::new("backend".to_owned(), name.span.clone()));
        let run = decode_run(cx, &mut t);
        let dir = t.optional(cx, "dir");
        let instances = t.get(cx, "instances").and_then(|v| integer_in(cx, v, &at.key("instances"), 1..=1000));
        let env = read_env_table(cx, &mut t);
        let strategy = t.or(cx, "strategy", Strategy::Rolling);
        let keep_warm = t.or(cx, "keep_warm", Duration::from_secs(600));
        let analysis: Option<Analysis> = t.optional(cx, "analysis");
        let routes = t.get(cx, "route").and_then(|v| decode_routes(cx, v, &at.key("route"))).unwrap_or_default();
        let health = t.optional(cx, "health");
        let depends_on = t.or(cx, "depends_on", Vec::new());
        let failover: Option<Failover> = t.optional(cx, "failover");
        let rate_limit = t.optional(cx, "rate_limit");
        let upstreams: Vec<Spanned<String>> = t.or(cx, "upstreams", Vec::new());
        for address in &upstreams {
            if address.value.parse::<std::net::SocketAddr>().is_err() {
                cx.error(address.span.clone(), format!("invalid upstream address `{}`", address.value)).expected =
                    Some("an IP address and port such as \"127.0.0.1:9000\"".into());
            }
        }
        let stop_timeout = t.or(cx, "stop_timeout", Duration::from_secs(10));
        let runtime = ServiceRuntime::decode_key(cx, &mut t, at).unwrap_or_default();
        if run.is_none() && upstreams.is_empty() && t.get(cx, "run").is_none() {
            cx.error(t.span(), format!("service `{}` has neither `run` nor `upstreams`", name.value)).help =
                Some("`run` starts its instances; `upstreams` names instances that run elsewhere".into());
        }
        t.finish(cx);
        if let Some(failover) = &failover
            && failover.managed.is_some()
            && run.is_none()
        {
            cx.error(
                name.span.clone(),
                format!(
                    "service `{}` has managed secondary `instances` but no `run` command to start them",
                    name.value
                ),
            );
        }
        if analysis.is_some() && !matches!(strategy, Strategy::Canary(_)) {
            cx.warning(
                name.span.clone(),
                format!(
                    "service `{}` has `analysis` but its strategy is not a canary; analysis only runs for canaries",
                    name.value
                ),
            );
        }
        Some(Service {
            name,
            phase,
            run,
            dir,
            instances: instances.map_or(1, |n| n as u32),
            env,
            strategy,
            keep_warm,
            analysis,
            routes,
            health,
            depends_on,
            failover,
            rate_limit,
            upstreams,
            stop_timeout,
            runtime,
        })
    }
}

/// What an environment changes about a service; absent keys keep the service's own values.
#[derive(Debug, Clone, Default)]
pub struct ServiceOverride {
    pub name: Option<Spanned<String>>,
    pub instances: Option<u32>,
    pub run: Option<Template>,
    pub env: IndexMap<String, Setting>,
    pub strategy: Option<Strategy>,
    pub routes: Option<Vec<Route>>,
    pub runtime: Option<ServiceRuntime>,
}

impl ServiceOverride {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let instances = t.get(cx, "instances").and_then(|v| integer_in(cx, v, &at.key("instances"), 1..=1000));
        let run = decode_run(cx, &mut t);
        let env = read_env_table(cx, &mut t);
        let strategy = t.optional(cx, "strategy");
        let routes = t.get(cx, "route").and_then(|v| decode_routes(cx, v, &at.key("route")));
        let runtime = ServiceRuntime::decode_key(cx, &mut t, at);
        t.finish(cx);
        Some(ServiceOverride {
            name: Some(name),
            instances: instances.map(|n| n as u32),
            run,
            env,
            strategy,
            routes,
            runtime,
        })
    }

    /// The service as this environment runs it.
    pub fn apply(&self, service: &Service) -> Service {
        let mut merged = service.clone();
        if let Some(instances) = self.instances {
            merged.instances = instances;
        }
        if let Some(run) = &self.run {
            merged.run = Some(run.clone());
        }
        for (name, setting) in &self.env {
            merged.env.insert(name.clone(), setting.clone());
        }
        if let Some(strategy) = &self.strategy {
            merged.strategy = strategy.clone();
        }
        if let Some(routes) = &self.routes {
            merged.routes = routes.clone();
        }
        if let Some(runtime) = self.runtime {
            merged.runtime = runtime;
        }
        merged
    }
}

/// A platform-wide check run in the `verification` phase (and against a new color before it
/// gets traffic).
#[derive(Debug, Clone)]
pub struct SmokeCheck {
    pub name: String,
    pub url: Template,
    pub method: String,
    pub headers: IndexMap<String, String>,
    /// The service whose new color the check targets through the edge's pool pinning.
    pub service: Option<Spanned<String>>,
    pub expect: Expect,
    pub timeout: Duration,
    pub retries: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Expect {
    pub status: u16,
    pub body_contains: Option<String>,
    pub json: Option<JsonExpect>,
    pub max_latency: Option<Duration>,
}

/// A JSON field (by JSON pointer, RFC 6901) and the value it must hold.
#[derive(Debug, Clone)]
pub struct JsonExpect {
    pub pointer: String,
    pub equals: serde_json::Value,
}

impl Decode for SmokeCheck {
    fn expected() -> String {
        "a table with `name` and `url`".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let name = t.required(cx, "name");
        let url = t.required(cx, "url");
        let method = t
            .get(cx, "method")
            .and_then(|v| {
                let methods = [
                    ("GET", "GET"),
                    ("HEAD", "HEAD"),
                    ("POST", "POST"),
                    ("PUT", "PUT"),
                    ("DELETE", "DELETE"),
                    ("OPTIONS", "OPTIONS"),
                ];
                one_of(cx, v, &at.key("method"), &methods)
            })
            .unwrap_or("GET");
        let headers = t
            .get(cx, "headers")
            .map(|v| named_entries(cx, v, &at.key("headers"), "<header>", |cx, _, v, at| String::decode(cx, v, at)))
            .unwrap_or_default();
        let service = t.optional(cx, "service");
        let expect = t.optional(cx, "expect").unwrap_or(Expect { status: 200, ..Expect::default() });
        let timeout = t.or(cx, "timeout", Duration::from_secs(5));
        let retries = t.or(cx, "retries", 2);
        t.finish(cx);
        Some(SmokeCheck {
            name: name?,
            url: url?,
            method: method.to_owned(),
            headers,
            service,
            expect,
            timeout,
            retries,
        })
    }
}

impl Decode for Expect {
    fn expected() -> String {
        "{ status = 200, body_contains = \"ok\", max_latency = \"300ms\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let status = t.get(cx, "status").and_then(|v| integer_in(cx, v, &at.key("status"), 100..=599)).unwrap_or(200);
        let body_contains = t.optional(cx, "body_contains");
        let json = t.optional(cx, "json");
        let max_latency = t.optional(cx, "max_latency");
        t.finish(cx);
        Some(Expect { status: status as u16, body_contains, json, max_latency })
    }
}

impl Decode for JsonExpect {
    fn expected() -> String {
        "{ pointer = \"/status\", equals = \"ok\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let pointer: Option<Spanned<String>> = t.required(cx, "pointer");
        let equals = match t.get(cx, "equals") {
            Some(v) => crate::template::to_json(v.get_ref()),
            None => {
                cx.error(t.span(), format!("missing key `equals` in `{}`", at.path));
                None
            }
        };
        t.finish(cx);
        let pointer = pointer?;
        if !(pointer.value.is_empty() || pointer.value.starts_with('/')) {
            cx.error(pointer.span.clone(), format!("JSON pointer `{}` must start with `/`", pointer.value)).help =
                Some("for the field `status` of the top object, write \"/status\"".into());
        }
        Some(JsonExpect { pointer: pointer.value, equals: equals? })
    }
}

#[derive(Debug, Clone)]
pub enum Migrate {
    /// Built-in versioned SQL migrations in this directory (relative to the config file).
    Dir(Spanned<String>),
    /// An external tool (`alembic upgrade head`).
    Command(CommandTemplate),
}

#[derive(Debug, Clone)]
pub struct Database {
    pub url: Setting,
    pub migrate: Option<Migrate>,
    pub backup: Backup,
    /// How long `pg_dump`, `pg_restore`, `psql` or a `migrate` command may run before its
    /// whole process group is killed.
    pub command_timeout: Duration,
}

/// `[database] command_timeout` when not set: one hour.
pub const DEFAULT_DATABASE_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Backup {
    pub before_migrate: bool,
    pub keep: u32,
    pub max_age: Duration,
    pub dir: Option<String>,
    /// When the server takes a scheduled backup (`daily 03:00` UTC, `every 6h`).
    pub schedule: Option<Spanned<String>>,
    /// When the server verifies the newest backup.
    pub verify: Option<Spanned<String>>,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            before_migrate: true,
            keep: 30,
            max_age: Duration::from_secs(30 * 86_400),
            dir: None,
            schedule: None,
            verify: None,
        }
    }
}

impl Decode for Database {
    fn expected() -> String {
        "a table with `url`".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let url = t.required(cx, "url");
        let migrate = t.get(cx, "migrate").and_then(|v| {
            let at = at.key("migrate");
            let mut m = Table::open(cx, v, &at)?;
            let dir = m.optional(cx, "dir");
            let command = m.optional(cx, "command");
            m.finish(cx);
            match (dir, command) {
                (Some(dir), None) => Some(Migrate::Dir(dir)),
                (None, Some(command)) => Some(Migrate::Command(command)),
                _ => {
                    cx.invalid(
                        v,
                        &at,
                        "either { dir = \"migrations\" } or { command = \"...\" }",
                        "give exactly one of `dir` and `command`",
                    );
                    None
                }
            }
        });
        let backup = t
            .get(cx, "backup")
            .and_then(|v| {
                let at = at.key("backup");
                let mut b = Table::open(cx, v, &at)?;
                let defaults = Backup::default();
                let backup = Backup {
                    before_migrate: b.or(cx, "before_migrate", defaults.before_migrate),
                    keep: b.or(cx, "keep", defaults.keep),
                    max_age: b.or(cx, "max_age", defaults.max_age),
                    dir: b.optional(cx, "dir"),
                    schedule: b.optional(cx, "schedule"),
                    verify: b.optional(cx, "verify"),
                };
                for schedule in [&backup.schedule, &backup.verify].into_iter().flatten() {
                    if !valid_schedule(&schedule.value) {
                        cx.error(schedule.span.clone(), format!("`{}` is not a schedule", schedule.value)).help =
                            Some("write \"daily 03:00\" (UTC) or \"every 6h\" (m, h or d)".into());
                    }
                }
                b.finish(cx);
                Some(backup)
            })
            .unwrap_or_default();
        let command_timeout = match t.optional::<Spanned<Duration>>(cx, "command_timeout") {
            Some(timeout) if timeout.value.as_std().is_zero() => {
                cx.error(timeout.span.clone(), "`command_timeout` must be more than zero").help =
                    Some("how long pg_dump, pg_restore, psql or a migrate command may run, such as \"1h\"".into());
                DEFAULT_DATABASE_COMMAND_TIMEOUT
            }
            Some(timeout) => timeout.value,
            None => DEFAULT_DATABASE_COMMAND_TIMEOUT,
        };
        t.finish(cx);
        Some(Database { url: url?, migrate, backup, command_timeout })
    }
}

/// `daily HH:MM` or `every N(m|h|d)`, as windlass-db's schedule parser reads them.
fn valid_schedule(text: &str) -> bool {
    if let Some(time) = text.trim().strip_prefix("daily ") {
        let Some((h, m)) = time.trim().split_once(':') else { return false };
        return matches!((h.parse::<u32>(), m.parse::<u32>()), (Ok(h), Ok(m)) if h < 24 && m < 60);
    }
    if let Some(interval) = text.trim().strip_prefix("every ") {
        let interval = interval.trim();
        let Some(unit) = interval.chars().last() else { return false };
        return matches!(unit, 'm' | 'h' | 'd')
            && matches!(interval[..interval.len() - 1].parse::<u64>(), Ok(n) if n > 0);
    }
    false
}

#[cfg(test)]
mod backup_schedule_tests {
    use crate::{Source, parse};

    const BASE: &str = "[project]\nname = \"shop\"\n[environments.production]\n[services.api]\nrun = \"api\"\n";

    fn database(backup: &str) -> crate::Parsed {
        parse(&Source::new(
            "windlass.toml",
            format!("{BASE}[database]\nurl = \"sqlite:///tmp/a.db\"\nbackup = {backup}\n"),
        ))
    }

    #[test]
    fn database_command_timeout_defaults_to_an_hour_and_refuses_zero() {
        let with = |extra: &str| {
            parse(&Source::new("windlass.toml", format!("{BASE}[database]\nurl = \"sqlite:///tmp/a.db\"\n{extra}")))
        };
        let default = with("").config.database.map(|d| d.command_timeout.as_std());
        assert_eq!(default, Some(std::time::Duration::from_secs(3600)));
        let set = with("command_timeout = \"90s\"\n").config.database.map(|d| d.command_timeout.as_std());
        assert_eq!(set, Some(std::time::Duration::from_secs(90)));
        let zero = with("command_timeout = \"0s\"\n");
        assert!(zero.has_errors());
        assert!(
            zero.diagnostics.iter().any(|d| d.message.contains("must be more than zero")),
            "{:?}",
            zero.diagnostics
        );
    }

    #[test]
    fn backup_schedules_are_read_and_checked() {
        let parsed = database("{ schedule = \"daily 03:00\", verify = \"every 6h\", keep = 7 }");
        assert!(!parsed.has_errors());
        let backup = parsed.config.database.map(|d| d.backup).unwrap_or_default();
        assert_eq!(backup.schedule.map(|s| s.value).as_deref(), Some("daily 03:00"));
        assert_eq!(backup.verify.map(|s| s.value).as_deref(), Some("every 6h"));
        assert_eq!(backup.keep, 7);

        let parsed = database("{ schedule = \"nightly\" }");
        assert!(parsed.has_errors());
        let text: Vec<String> = parsed.diagnostics.iter().map(|d| d.render()).collect();
        assert!(text.join("\n").contains("`nightly` is not a schedule"), "{text:?}");
        assert!(database("{ verify = \"daily 24:00\" }").has_errors());
    }
}

#[cfg(test)]
mod failover_tests {
    use crate::{Source, parse};

    fn service(body: &str) -> crate::Parsed {
        let text = format!("[project]\nname = \"shop\"\n[environments.production]\n[services.api]\n{body}\n");
        parse(&Source::new("windlass.toml", text))
    }

    fn rendered(parsed: &crate::Parsed) -> String {
        parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn a_secondary_is_either_static_addresses_or_managed_instances() {
        let managed = service("run = \"api\"\nfailover = { instances = 2, mode = \"manual\" }");
        assert!(!managed.has_errors(), "{}", rendered(&managed));
        let failover = managed.config.services["api"].failover.clone().unwrap();
        assert_eq!((failover.managed, failover.secondary.len()), (Some(2), 0));

        let both = service("run = \"api\"\nfailover = { instances = 1, secondary = [\"127.0.0.2:80\"] }");
        assert!(rendered(&both).contains("has both `secondary` and `instances`"), "{}", rendered(&both));
        let neither = service("run = \"api\"\nfailover = { mode = \"manual\" }");
        assert!(rendered(&neither).contains("missing key `secondary`"), "{}", rendered(&neither));
        let unmanaged = service("upstreams = [\"127.0.0.1:9000\"]\nfailover = { instances = 1 }");
        assert!(rendered(&unmanaged).contains("no `run` command to start them"), "{}", rendered(&unmanaged));
        let zero = service("run = \"api\"\nfailover = { instances = 0 }");
        assert!(zero.has_errors(), "0 standby instances is no secondary");
    }
}

#[cfg(test)]
mod runtime_tests {
    use super::ServiceRuntime;
    use crate::{Source, parse};

    fn config(dir: &std::path::Path, services: &str) -> crate::Parsed {
        let text = format!("[project]\nname = \"shop\"\n[environments.production]\n{services}\n");
        parse(&Source::new(dir.join("windlass.toml"), text))
    }

    fn rendered(parsed: &crate::Parsed) -> String {
        parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn docker_services_need_a_program_that_is_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-static"), b"\x7fELF").unwrap();
        let default = config(dir.path(), "[services.api]\nrun = \"./api-static\"");
        assert_eq!(default.config.services["api"].runtime, ServiceRuntime::Process);
        let docker = config(dir.path(), "[services.api]\nrun = \"./api-static --flag\"\nruntime = \"docker\"");
        assert!(!docker.has_errors(), "{}", rendered(&docker));
        assert_eq!(docker.config.services["api"].runtime, ServiceRuntime::Docker);

        let missing = config(dir.path(), "[services.api]\nrun = \"./api-nope\"\nruntime = \"docker\"");
        assert!(
            rendered(&missing).contains("runs in docker, but its program `./api-nope` is not a file"),
            "{}",
            rendered(&missing)
        );
        let no_run = config(dir.path(), "[services.api]\nupstreams = [\"127.0.0.1:9000\"]\nruntime = \"docker\"");
        assert!(rendered(&no_run).contains("runs in docker but has no `run` command"), "{}", rendered(&no_run));
        let typo = config(dir.path(), "[services.api]\nrun = \"./api-static\"\nruntime = \"dokcer\"");
        assert!(rendered(&typo).contains("did you mean \"docker\"?"), "{}", rendered(&typo));
        // A program named by a variable is resolved at deploy time.
        let variable = config(
            dir.path(),
            "[services.api]\nrun = \"${API_BIN}\"\nruntime = \"docker\"\n[env.API_BIN]\ndefault = \"x\"",
        );
        assert!(!rendered(&variable).contains("runs in docker"), "{}", rendered(&variable));
    }

    #[test]
    fn an_environment_can_move_a_service_to_docker() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-static"), b"\x7fELF").unwrap();
        let moved = config(
            dir.path(),
            "[services.api]\nrun = \"./api-static\"\n[environments.production.services.api]\nruntime = \"docker\"",
        );
        assert!(!moved.has_errors(), "{}", rendered(&moved));
        assert_eq!(moved.config.service_in("production", "api").unwrap().runtime, ServiceRuntime::Docker);
        assert_eq!(moved.config.services["api"].runtime, ServiceRuntime::Process);
        let broken = config(
            dir.path(),
            "[services.api]\nrun = \"./api-static\"\n[environments.production.services.api]\nruntime = \"docker\"\nrun = \"./gone\"",
        );
        let text = rendered(&broken);
        assert!(
            text.contains("service `api` in environment `production` runs in docker, but its program `./gone`"),
            "{text}"
        );
    }
}

/// Service-level objectives, accounted from the edge's live traffic.
#[derive(Debug, Clone)]
pub struct Slo {
    pub service: Spanned<String>,
    pub availability: Option<Percent>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
    pub error_rate: Option<Percent>,
    pub window: Duration,
}

impl Slo {
    fn decode(cx: &mut Cx, service: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let availability = t.optional(cx, "availability");
        let (p95, p99) = t
            .get(cx, "latency")
            .and_then(|v| {
                let at = at.key("latency");
                let mut l = Table::open(cx, v, &at)?;
                let pair = (l.optional(cx, "p95"), l.optional(cx, "p99"));
                l.finish(cx);
                Some(pair)
            })
            .unwrap_or((None, None));
        let error_rate = t.optional(cx, "error_rate");
        let window = t.or(cx, "window", Duration::from_secs(30 * 86_400));
        t.finish(cx);
        if let (Some(p95), Some(p99)) = (p95, p99)
            && p99 < p95
        {
            cx.warning(
                value.span(),
                format!("`{at}`: the p99 target {p99} is below the p95 target {p95}", at = at.path),
            );
        }
        Some(Slo { service, availability, p95, p99, error_rate, window })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AlertSeverity {
    Critical,
    Warning,
    Info,
    Business,
}

#[derive(Debug, Clone)]
pub enum ReceiverKind {
    Slack {
        webhook_url: Setting,
    },
    /// `url`: the Events API's base (EU accounts: `https://events.eu.pagerduty.com`).
    PagerDuty {
        routing_key: Setting,
        url: Option<Setting>,
    },
    Email {
        to: Vec<String>,
        from: Option<String>,
        smtp_url: Option<Setting>,
    },
    Webhook {
        url: Setting,
        signing_secret: Option<Setting>,
    },
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: Spanned<String>,
    pub kind: ReceiverKind,
}

impl Receiver {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let kind = t.get(cx, "type").and_then(|v| {
            one_of(cx, v, &at.key("type"), &[("slack", 0), ("pagerduty", 1), ("email", 2), ("webhook", 3)])
        });
        // Every receiver key is asked for, so that a key of another receiver type reads as
        // unknown for this one only when it is truly nobody's.
        let webhook_url = t.optional(cx, "webhook_url");
        let routing_key = t.optional(cx, "routing_key");
        let to: Option<Vec<Spanned<String>>> = t.optional(cx, "to");
        let from = t.optional(cx, "from");
        let smtp_url = t.optional(cx, "smtp_url");
        let url = t.optional(cx, "url");
        let signing_secret = t.optional(cx, "signing_secret");
        if t.get(cx, "type").is_none() {
            cx.error(t.span(), format!("missing key `type` in {}", at.table_name())).expected =
                Some("type = \"slack\", \"pagerduty\", \"email\" or \"webhook\"".into());
        }
        let span = t.span();
        t.finish(cx);
        let need = |cx: &mut Cx, key: &str, present: bool| {
            if !present {
                cx.error(span.clone(), format!("missing key `{key}` in {}", at.table_name()));
            }
            present
        };
        // A receiver's URL is its secret (a Slack webhook's path, a token in a query): one written
        // out that cannot work is reported by key, never quoted, and its line is not shown.
        for (key, setting) in [("webhook_url", &webhook_url), ("url", &url)] {
            if let Some(Setting::Text(template)) = setting
                && template.vars().next().is_none()
                && let Some(wrong) = http_url_problem(&template.raw)
            {
                cx.error(
                    span.clone(),
                    format!("`{}.{key}` {wrong} (the URL is not shown: it holds the receiver's secret)", at.path),
                )
                .hide_line = true;
            }
        }
        let kind = match kind? {
            0 => {
                need(cx, "webhook_url", webhook_url.is_some());
                ReceiverKind::Slack { webhook_url: webhook_url? }
            }
            1 => {
                need(cx, "routing_key", routing_key.is_some());
                ReceiverKind::PagerDuty { routing_key: routing_key?, url }
            }
            2 => {
                need(cx, "to", to.is_some());
                let to = to?;
                for address in &to {
                    if !crate::formats::is_email(&address.value) {
                        cx.error(address.span.clone(), format!("`{}` is not an email address", address.value));
                    }
                }
                ReceiverKind::Email { to: to.into_iter().map(|a| a.value).collect(), from, smtp_url }
            }
            _ => {
                need(cx, "url", url.is_some());
                ReceiverKind::Webhook { url: url?, signing_secret }
            }
        };
        Some(Receiver { name, kind })
    }
}

/// What is wrong with a receiver's http(s) URL, in words that quote none of it.
fn http_url_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return Some("is not an http:// or https:// URL");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        Some("has no host")
    } else if authority.contains('@') {
        Some("has credentials before its host, which are not supported")
    } else if authority.chars().any(char::is_whitespace) {
        Some("has a space in its host")
    } else {
        None
    }
}

#[derive(Debug, Clone)]
pub struct AlertRoute {
    pub severity: Option<AlertSeverity>,
    pub service: Option<Spanned<String>>,
    pub environment: Option<Spanned<String>>,
    /// Only in business hours or only off-hours (`[oncall] business_hours`).
    pub hours: Option<crate::oncall::Hours>,
    /// Receivers, people or schedules.
    pub to: Vec<Spanned<String>>,
    /// Matching goes on with the next routes after this one.
    pub continue_: bool,
    /// The `[oncall.policies.<policy>]` unacknowledged alerts of this route climb.
    pub escalation: Option<Spanned<String>>,
    pub span: std::ops::Range<usize>,
}

pub(crate) fn decode_severity(cx: &mut Cx, value: &Value, at: &At) -> Option<AlertSeverity> {
    use AlertSeverity::*;
    one_of(cx, value, at, &[("critical", Critical), ("warning", Warning), ("info", Info), ("business", Business)])
}

impl Decode for AlertRoute {
    fn expected() -> String {
        "{ severity = \"critical\", to = [\"pagerduty\"] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let severity = t.get(cx, "severity").and_then(|v| decode_severity(cx, v, &at.key("severity")));
        let service = t.optional(cx, "service");
        let environment = t.optional(cx, "environment");
        let hours = t.optional(cx, "hours");
        let to = t.required(cx, "to");
        let continue_ = t.or(cx, "continue", false);
        let escalation = t.optional(cx, "escalation");
        t.finish(cx);
        Some(AlertRoute { severity, service, environment, hours, to: to?, continue_, escalation, span: value.span() })
    }
}

/// One rung of the escalation ladder: who is notified once an alert is unacknowledged this long.
#[derive(Debug, Clone)]
pub struct EscalationLevel {
    pub after: Spanned<Duration>,
    pub notify: Vec<Spanned<String>>,
}

impl Decode for EscalationLevel {
    fn expected() -> String {
        "{ after = \"5m\", notify = [\"oncall\"] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let after = t.required(cx, "after");
        let notify = t.required(cx, "notify");
        t.finish(cx);
        Some(EscalationLevel { after: after?, notify: notify? })
    }
}

#[derive(Debug, Clone)]
pub struct Alerts {
    pub receivers: IndexMap<String, Receiver>,
    pub routes: Vec<AlertRoute>,
    pub escalation: Vec<EscalationLevel>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    /// The secret of PagerDuty's v3 webhook subscription: its acknowledgements stop escalation.
    pub pagerduty_webhook_secret: Option<Setting>,
    /// Where people reach the server, for acknowledgement links in notifications.
    pub public_url: Option<String>,
}

impl Default for Alerts {
    fn default() -> Self {
        Alerts {
            receivers: IndexMap::new(),
            routes: Vec::new(),
            escalation: Vec::new(),
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            pagerduty_webhook_secret: None,
            public_url: None,
        }
    }
}

impl Decode for Alerts {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let defaults = Alerts::default();
        let receivers = t
            .get(cx, "receivers")
            .map(|v| named_entries(cx, v, &at.key("receivers"), "<receiver>", Receiver::decode))
            .unwrap_or_default();
        let alerts = Alerts {
            receivers,
            routes: t.or(cx, "routes", Vec::new()),
            escalation: t.or(cx, "escalation", Vec::new()),
            group_wait: t.or(cx, "group_wait", defaults.group_wait),
            group_interval: t.or(cx, "group_interval", defaults.group_interval),
            repeat_interval: t.or(cx, "repeat_interval", defaults.repeat_interval),
            pagerduty_webhook_secret: t.optional(cx, "pagerduty_webhook_secret"),
            public_url: t.optional(cx, "public_url"),
        };
        t.finish(cx);
        Some(alerts)
    }
}

#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

impl Decode for Tls {
    fn expected() -> String {
        "{ listen = \"127.0.0.1:8443\", cert = \"cert.pem\", key = \"key.pem\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let listen = t.get(cx, "listen").and_then(|v| socket_addr(cx, v, &at.key("listen")));
        let cert = t.required(cx, "cert");
        let key = t.required(cx, "key");
        t.finish(cx);
        Some(Tls { listen: listen.unwrap_or_else(|| "127.0.0.1:8443".into()), cert: cert?, key: key? })
    }
}

fn socket_addr(cx: &mut Cx, value: &Value, at: &At) -> Option<String> {
    let text = String::decode(cx, value, at)?;
    if text.parse::<std::net::SocketAddr>().is_err() {
        cx.invalid(value, at, "an IP address and port such as \"127.0.0.1:8080\"", "not an address and port");
        return None;
    }
    Some(text)
}

/// Who still reaches a service in maintenance mode.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceAllow {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub cidrs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Maintenance {
    /// An HTML page file (relative to the config file) served with the 503.
    pub page: Option<String>,
    pub message: String,
    pub retry_after: Duration,
    pub allow: MaintenanceAllow,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            page: None,
            message: "This service is down for maintenance. Please try again shortly.".into(),
            retry_after: Duration::from_secs(300),
            allow: MaintenanceAllow::default(),
        }
    }
}

impl Decode for Maintenance {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let defaults = Maintenance::default();
        let page = t.optional(cx, "page");
        let message = t.or(cx, "message", defaults.message);
        let retry_after = t.or(cx, "retry_after", defaults.retry_after);
        let allow = t
            .get(cx, "allow")
            .and_then(|v| {
                let at = at.key("allow");
                let mut a = Table::open(cx, v, &at)?;
                let header = a.optional(cx, "header");
                let cookie = a.optional(cx, "cookie");
                let cidrs: Vec<Spanned<String>> = a.or(cx, "cidrs", Vec::new());
                a.finish(cx);
                for cidr in &cidrs {
                    if !crate::formats::is_cidr(&cidr.value) {
                        cx.error(cidr.span.clone(), format!("`{}` is not an IP address or CIDR block", cidr.value))
                            .expected = Some("such as \"127.0.0.1/32\" or \"::1/128\"".into());
                    }
                }
                Some(MaintenanceAllow { header, cookie, cidrs: cidrs.into_iter().map(|c| c.value).collect() })
            })
            .unwrap_or_default();
        t.finish(cx);
        Some(Maintenance { page, message, retry_after, allow })
    }
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub listen: String,
    pub admin_listen: String,
    pub tls: Option<Tls>,
    pub maintenance: Maintenance,
    pub rate_limit: Option<RateLimit>,
    pub max_header_bytes: ByteSize,
    pub max_headers: u32,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub drain_timeout: Duration,
    /// Cookie that keeps a client in its cohort across weight changes.
    pub sticky_cookie: String,
    /// Optional header that identifies a client's cohort instead of the cookie.
    pub sticky_header: Option<String>,
    pub access_log: bool,
}

impl Default for Edge {
    fn default() -> Self {
        Edge {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            tls: None,
            maintenance: Maintenance::default(),
            rate_limit: None,
            max_header_bytes: ByteSize(64 * 1024),
            max_headers: 100,
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            sticky_cookie: "windlass_cohort".into(),
            sticky_header: None,
            access_log: false,
        }
    }
}

impl Decode for Edge {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let d = Edge::default();
        let edge = Edge {
            listen: t.get(cx, "listen").and_then(|v| socket_addr(cx, v, &at.key("listen"))).unwrap_or(d.listen),
            admin_listen: t
                .get(cx, "admin_listen")
                .and_then(|v| socket_addr(cx, v, &at.key("admin_listen")))
                .unwrap_or(d.admin_listen),
            tls: t.optional(cx, "tls"),
            maintenance: t.or(cx, "maintenance", d.maintenance),
            rate_limit: t.optional(cx, "rate_limit"),
            max_header_bytes: t.or(cx, "max_header_bytes", d.max_header_bytes),
            max_headers: t.or(cx, "max_headers", d.max_headers),
            connect_timeout: t.or(cx, "connect_timeout", d.connect_timeout),
            upstream_timeout: t.or(cx, "upstream_timeout", d.upstream_timeout),
            drain_timeout: t.or(cx, "drain_timeout", d.drain_timeout),
            sticky_cookie: t.or(cx, "sticky_cookie", d.sticky_cookie),
            sticky_header: t.optional(cx, "sticky_header"),
            access_log: t.or(cx, "access_log", d.access_log),
        };
        t.finish(cx);
        Some(edge)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaoAuth {
    #[default]
    Token,
    AppRole,
}

#[derive(Debug, Clone)]
pub enum SecretsBackend {
    /// SOPS-format encrypted files, one per environment, in this directory.
    Files { dir: String },
    /// OpenBao / HashiCorp Vault KV v2.
    OpenBao { address: Template, mount: String, prefix: String, auth: BaoAuth },
}

impl Default for SecretsBackend {
    fn default() -> Self {
        SecretsBackend::Files { dir: "secrets".into() }
    }
}

impl Decode for SecretsBackend {
    fn expected() -> String {
        "{ backend = \"files\", dir = \"secrets\" } or { backend = \"openbao\", address = \"...\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let backend = t
            .get(cx, "backend")
            .and_then(|v| one_of(cx, v, &at.key("backend"), &[("files", 0), ("openbao", 1), ("vault", 1)]))
            .unwrap_or(0);
        let dir: Option<String> = t.optional(cx, "dir");
        let address: Option<Template> = t.optional(cx, "address");
        let mount = t.or(cx, "mount", "secret".to_owned());
        let prefix = t.or(cx, "prefix", "windlass".to_owned());
        let auth = t
            .get(cx, "auth")
            .and_then(|v| one_of(cx, v, &at.key("auth"), &[("token", BaoAuth::Token), ("approle", BaoAuth::AppRole)]))
            .unwrap_or_default();
        let span = t.span();
        t.finish(cx);
        if backend == 0 {
            return Some(SecretsBackend::Files { dir: dir.unwrap_or_else(|| "secrets".into()) });
        }
        let Some(address) = address else {
            cx.error(span, format!("missing key `address` in {}", at.table_name())).expected =
                Some("the OpenBao/Vault address, such as \"http://127.0.0.1:8200\"".into());
            return None;
        };
        Some(SecretsBackend::OpenBao { address, mount, prefix, auth })
    }
}
