//! Projects and environments: `[project]`, `[environments.<env>]` and the declared variables
//! (`[env]`) an environment's `.env` file must satisfy.
//!
//! It must not read env files or know what a deploy does with them (that is `dotenv` and
//! `env_check`).

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, named_entries, one_of};
use crate::window::DeployWindow;

use super::{SecretsBackend, ServiceOverride, check_slug};

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
    pub(super) fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
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
    pub(super) fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
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
