//! Checks the variables an environment declares (`[env]`) against what it will actually get:
//! the process environment first, then the env file, then the environment's secrets store, then
//! the declared default.
//!
//! A value marked `secret = true` is never printed, not even in part: problems with it say what
//! is wrong and where, and describe the value only by its length where length is the problem.

use std::collections::BTreeMap;

use crate::decode::did_you_mean;
use crate::diagnostic::Diagnostic;
use crate::dotenv::EnvFile;
use crate::formats;
use crate::model::{Config, VarSpec};

/// The shortest secret value the redactor finds reliably (`windlass_secrets::MIN_LEN`): a shorter
/// one is an error unless its variable says `allow_short = true`.
pub const SECRET_MIN_LEN: usize = 8;

/// Where the values for an environment come from.
pub struct EnvInputs<'a> {
    pub process_env: &'a BTreeMap<String, String>,
    pub env_file: Option<&'a EnvFile>,
    /// The environment's secrets (the encrypted file or OpenBao), when they could be read.
    pub secrets: Option<&'a SecretInputs>,
}

/// Values from the environment's secrets store, and where they are kept (for messages).
#[derive(Default)]
pub struct SecretInputs {
    pub place: String,
    pub values: BTreeMap<String, String>,
}

enum Origin<'a> {
    Process,
    File(&'a crate::dotenv::EnvEntry),
    Secret(&'a str),
    Default,
}

/// Every problem with the variables of `environment`.
pub fn check_env(config: &Config, environment: &str, inputs: &EnvInputs) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    for spec in config.env.values().filter(|s| s.applies_to(environment)) {
        let name = &spec.name.value;
        let (value, origin) = if let Some(value) = inputs.process_env.get(name) {
            (value.as_str(), Origin::Process)
        } else if let Some(entry) = inputs.env_file.and_then(|f| f.get(name)) {
            (entry.value.as_str(), Origin::File(entry))
        } else if let Some((value, place)) = inputs.secrets.and_then(|s| Some((s.values.get(name)?, s.place.as_str())))
        {
            (value.as_str(), Origin::Secret(place))
        } else if let Some(default) = &spec.default {
            (default.as_str(), Origin::Default)
        } else {
            if spec.required {
                diagnostics.push(missing(config, spec, environment, inputs));
            }
            continue;
        };
        for problem in value_problems(spec, value) {
            diagnostics.push(locate(config, spec, &origin, inputs.env_file, problem));
        }
    }
    if let Some(file) = inputs.env_file {
        let declared: Vec<&str> = config.env.keys().map(String::as_str).collect();
        for entry in &file.entries {
            let applies = config.env.get(&entry.key).is_some_and(|spec| spec.applies_to(environment));
            if applies {
                continue;
            }
            let located =
                |message: String| Diagnostic::warning(message).at(&file.source, entry.key_span.clone()).hide_line();
            if let Some(spec) = config.env.get(&entry.key) {
                let elsewhere: Vec<&str> = spec.environments.iter().flatten().map(|e| e.value.as_str()).collect();
                diagnostics.push(
                    located(format!("`{}` is set but not declared for environment `{environment}`", entry.key))
                        .help(format!("it is declared for: {}", elsewhere.join(", "))),
                );
                continue;
            }
            let mut warning = located(format!("`{}` is set but not declared in [env]", entry.key));
            if let Some(suggestion) = did_you_mean(&entry.key, declared.iter().copied()) {
                warning = warning.help(format!("did you mean `{suggestion}`?"));
            } else {
                warning = warning.help(format!(
                    "declare it in [env] of {} if it is meant to be used",
                    config.source.path().display()
                ));
            }
            diagnostics.push(warning);
        }
    }
    diagnostics
}

fn missing(config: &Config, spec: &VarSpec, environment: &str, inputs: &EnvInputs) -> Diagnostic {
    let name = &spec.name.value;
    let place = inputs.env_file.map_or_else(
        || "the process environment".to_owned(),
        |f| format!("{} or the process environment", f.source.path().display()),
    );
    let help = if spec.secret {
        format!("store it with `windlass secrets set {environment} {name}`, or set it in {place}")
    } else {
        format!("set {name} in {place}")
    };
    Diagnostic::error(format!("`{name}` is required for environment `{environment}` but is not set"))
        .at(&config.source, spec.name.span.clone())
        .expected(spec.format.map_or("a value", formats::describe))
        .found("nothing")
        .help(help)
}

/// A value problem before it is placed: the message, what was expected, and what was found
/// (already safe to print: secret values are described, never shown).
struct Problem {
    message: String,
    expected: String,
    found: String,
}

fn value_problems(spec: &VarSpec, value: &str) -> Vec<Problem> {
    let name = &spec.name.value;
    let shown = |value: &str| if spec.secret { "a secret value (not shown)".to_owned() } else { format!("{value:?}") };
    let mut problems = Vec::new();
    if value.is_empty() {
        if spec.required {
            problems.push(Problem {
                message: format!("`{name}` is set but empty"),
                expected: spec.format.map_or("a value", formats::describe).to_owned(),
                found: "an empty string".into(),
            });
        }
        return problems;
    }
    if spec.secret && !spec.allow_short && value.len() < SECRET_MIN_LEN {
        problems.push(Problem {
            message: format!(
                "`{name}` is a secret shorter than {SECRET_MIN_LEN} characters, too short to hide reliably from \
                 output (set `allow_short = true` on it in [env] to accept it; it is then hidden only where it \
                 stands as a whole word)"
            ),
            expected: format!("at least {SECRET_MIN_LEN} characters"),
            found: format!("a secret value of {} characters (not shown)", value.chars().count()),
        });
    }
    if let Some(format) = spec.format
        && let Err(why) = formats::check(format, value)
    {
        problems.push(Problem {
            message: format!("`{name}` has the wrong format: {why}"),
            expected: formats::describe(format).to_owned(),
            found: shown(value),
        });
    }
    if let Some(choices) = &spec.one_of
        && !choices.iter().any(|c| c == value)
    {
        problems.push(Problem {
            message: format!("`{name}` is not one of the allowed values"),
            expected: format!("one of {}", choices.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")),
            found: shown(value),
        });
    }
    if let Some(pattern) = &spec.regex
        && let Ok(regex) = regex_lite::Regex::new(&pattern.value)
        && !regex.is_match(value)
    {
        problems.push(Problem {
            message: format!("`{name}` does not match its pattern"),
            expected: format!("a value matching /{}/", pattern.value),
            found: shown(value),
        });
    }
    let length = value.chars().count();
    let described_length = |length: usize| {
        if spec.secret {
            format!("a secret value of {length} characters (not shown)")
        } else {
            format!("{value:?} ({length} characters)")
        }
    };
    if let Some(min) = spec.min_length
        && length < min as usize
    {
        problems.push(Problem {
            message: format!("`{name}` is too short"),
            expected: format!("at least {min} characters"),
            found: described_length(length),
        });
    }
    if let Some(max) = spec.max_length
        && length > max as usize
    {
        problems.push(Problem {
            message: format!("`{name}` is too long"),
            expected: format!("at most {max} characters"),
            found: described_length(length),
        });
    }
    problems
}

fn locate(
    config: &Config,
    spec: &VarSpec,
    origin: &Origin,
    env_file: Option<&EnvFile>,
    problem: Problem,
) -> Diagnostic {
    let diagnostic = match (origin, env_file) {
        (Origin::File(entry), Some(file)) => {
            Diagnostic::error(problem.message).at(&file.source, entry.value_span.clone()).hide_line()
        }
        (Origin::Process, _) => Diagnostic::error(format!("{} (set in the process environment)", problem.message))
            .at(&config.source, spec.name.span.clone()),
        (Origin::Secret(place), _) => Diagnostic::error(format!("{} (stored in {place})", problem.message))
            .at(&config.source, spec.name.span.clone()),
        _ => Diagnostic::error(format!("{} (its declared default)", problem.message))
            .at(&config.source, spec.name.span.clone()),
    };
    diagnostic.expected(problem.expected).found(problem.found)
}
