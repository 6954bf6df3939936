//! The deploy's shape: `[pipeline]` (the phase order), `[phases.<phase>]` and their steps.
//!
//! It says what runs and in which order; it must not run anything.

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, integer_in, named_entries};
use crate::template::{CommandTemplate, Setting, Template};
use crate::units::Duration;

use super::DEFAULT_PHASES;

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
    pub(super) fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
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
pub(super) fn count(cx: &mut Cx, t: &mut Table, key: &'static str, default: u32) -> u32 {
    let at = t.at().key(key);
    t.get(cx, key).and_then(|v| integer_in(cx, v, &at, 1..=1_000_000)).map_or(default, |n| n as u32)
}

/// Reads a service's optional `run`, noting its references for the check that keeps secrets
/// off an instance's command line.
pub(super) fn decode_run(cx: &mut Cx, t: &mut Table) -> Option<Template> {
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
pub(super) fn read_env_table(cx: &mut Cx, t: &mut Table) -> IndexMap<String, Setting> {
    let at = t.at().key("env");
    t.get(cx, "env")
        .map(|v| named_entries(cx, v, &at, "<VAR>", |cx, _, v, at| Setting::decode(cx, v, at)))
        .unwrap_or_default()
}
