//! The values a deploy works with: the environment's declared variables (process environment,
//! then env file, then the secrets store, then default), the built-ins a step or instance gets, and the redaction of
//! secret values from everything a deploy records.

use std::collections::BTreeMap;
use std::path::Path;

use windlass_config::dotenv::EnvFile;
use windlass_config::env_check::{EnvInputs, SecretInputs, check_env};
use windlass_config::template::{Setting, TemplateError};
use windlass_config::{Config, Diagnostic, Source};
use windlass_secrets::Redactor;

#[derive(Debug, Clone, Default)]
pub struct Variables {
    /// The declared variables of the environment, resolved.
    values: BTreeMap<String, String>,
    /// Everything in the environment's secrets store, declared in `[env]` or not: reachable by
    /// `{ secret = "NAME" }` and injected into custom steps.
    stored: BTreeMap<String, String>,
    /// Hides every secret value (plain, URL-encoded, base64) from what a deploy records.
    redactor: Redactor,
    /// The declared variables whose value is a secret: declared `secret = true`, or taken from
    /// the secrets store.
    secret_names: std::collections::BTreeSet<String>,
}

/// Why a setting cannot be rendered. Names a variable or secret, never a value.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("secret `{0}` has no value")]
    NoSecret(String),
}

/// The secrets of an environment as loaded from its store: where they are kept, and the values.
pub type StoredSecrets = (String, windlass_secrets::SecretSet);

impl Variables {
    /// Reads the variables of `environment` (process environment, then env file, then the
    /// secrets store, then the declared default) and checks them; errors are in the diagnostics.
    pub fn resolve(
        config: &Config,
        environment: &str,
        env_file: Option<&Path>,
        secrets: Option<&StoredSecrets>,
    ) -> (Self, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let path = env_file.map(Path::to_owned).unwrap_or_else(|| config.env_file_path(environment));
        let file = match Source::read(&path) {
            Ok(source) => {
                let (file, problems) = EnvFile::parse(source);
                diagnostics.extend(problems);
                Some(file)
            }
            Err(_) if env_file.is_none() && !path.exists() => None,
            Err(err) => {
                diagnostics.push(Diagnostic::error(format!("env file: {err}")));
                None
            }
        };
        let process_env: BTreeMap<String, String> =
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
        let stored = SecretInputs {
            place: secrets.map(|(place, _)| place.clone()).unwrap_or_default(),
            values: secrets
                .map(|(_, set)| set.values.iter().map(|(k, v)| (k.clone(), v.expose().to_owned())).collect())
                .unwrap_or_default(),
        };
        diagnostics.extend(check_env(
            config,
            environment,
            &EnvInputs { process_env: &process_env, env_file: file.as_ref(), secrets: Some(&stored) },
        ));
        let mut variables = Variables::default();
        let mut secret_pairs: Vec<(String, String)> =
            stored.values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for spec in config.env.values().filter(|s| s.applies_to(environment)) {
            let name = &spec.name.value;
            let from_outside = process_env
                .get(name)
                .cloned()
                .or_else(|| file.as_ref().and_then(|f| f.get(name)).map(|e| e.value.clone()));
            let from_store = from_outside.is_none() && stored.values.contains_key(name);
            let value = from_outside.or_else(|| stored.values.get(name).cloned()).or_else(|| spec.default.clone());
            if let Some(value) = value {
                if spec.secret {
                    secret_pairs.push((name.clone(), value.clone()));
                }
                if spec.secret || from_store {
                    variables.secret_names.insert(name.clone());
                }
                variables.values.insert(name.clone(), value);
            }
        }
        variables.redactor = Redactor::new(secret_pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        variables.stored = stored.values;
        (variables, diagnostics)
    }

    /// A declared variable's value, or a stored secret's.
    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).or_else(|| self.stored.get(name)).cloned()
    }

    /// Whether `name`'s value is a secret (declared so, or from the secrets store); a name
    /// only in the secrets store is one too.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret_names.contains(name) || (!self.values.contains_key(name) && self.stored.contains_key(name))
    }

    /// The text with every secret value (also URL-encoded or in base64) replaced by
    /// `[REDACTED:NAME]`.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The redactor, for streamed output.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Renders a setting: a template over these variables and then `builtins`, or a secret by
    /// name.
    pub fn render(&self, setting: &Setting, builtins: &BTreeMap<String, String>) -> Result<String, RenderError> {
        match setting {
            Setting::Text(template) => {
                Ok(template.render(|name| self.get(name).or_else(|| builtins.get(name).cloned()))?)
            }
            Setting::Secret(name) => self.get(name).ok_or_else(|| RenderError::NoSecret(name.clone())),
        }
    }

    /// Every variable and stored secret, for a step's environment.
    pub fn all(&self) -> BTreeMap<String, String> {
        let mut all = self.stored.clone();
        all.extend(self.values.clone());
        all
    }
}

/// The environment a child process starts from: only what a program needs to run, never the
/// server's own variables (which may hold its tokens).
pub fn base_env() -> BTreeMap<String, String> {
    ["PATH", "HOME", "LANG", "TZ", "TMPDIR", "USER"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), std::env::var(name).ok()?)))
        .collect()
}
