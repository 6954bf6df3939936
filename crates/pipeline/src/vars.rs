//! The values a deploy works with: the environment's declared variables (process environment,
//! then env file, then default), the built-ins a step or instance gets, and the redaction of
//! secret values from everything a deploy records.

use std::collections::BTreeMap;
use std::path::Path;

use windlass_config::dotenv::EnvFile;
use windlass_config::env_check::{EnvInputs, check_env};
use windlass_config::template::Setting;
use windlass_config::{Config, Diagnostic, Source};

#[derive(Debug, Clone, Default)]
pub struct Variables {
    values: BTreeMap<String, String>,
    /// Values never to show; longest first so a secret containing another is hidden whole.
    secrets: Vec<String>,
}

impl Variables {
    /// Reads the variables of `environment` and checks them; errors are in the diagnostics.
    pub fn resolve(config: &Config, environment: &str, env_file: Option<&Path>) -> (Self, Vec<Diagnostic>) {
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
        diagnostics.extend(check_env(
            config,
            environment,
            &EnvInputs { process_env: &process_env, env_file: file.as_ref() },
        ));
        let mut variables = Variables::default();
        for spec in config.env.values().filter(|s| s.applies_to(environment)) {
            let name = &spec.name.value;
            let value = process_env
                .get(name)
                .cloned()
                .or_else(|| file.as_ref().and_then(|f| f.get(name)).map(|e| e.value.clone()))
                .or_else(|| spec.default.clone());
            if let Some(value) = value {
                if spec.secret {
                    variables.add_secret(&value);
                }
                variables.values.insert(name.clone(), value);
            }
        }
        (variables, diagnostics)
    }

    fn add_secret(&mut self, value: &str) {
        // Very short values would redact ordinary words; such secrets fail validation anyway.
        if value.len() >= 4 && !self.secrets.iter().any(|s| s == value) {
            self.secrets.push(value.to_owned());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// The text with every secret value replaced by `[redacted]`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        out
    }

    /// Renders a setting: a template over these variables and then `builtins`, or a secret by
    /// name.
    pub fn render(&self, setting: &Setting, builtins: &BTreeMap<String, String>) -> Result<String, String> {
        match setting {
            Setting::Text(template) => template.render(|name| self.get(name).or_else(|| builtins.get(name).cloned())),
            Setting::Secret(name) => self.get(name).ok_or_else(|| format!("secret `{name}` has no value")),
        }
    }

    /// Every variable, for a step's environment.
    pub fn all(&self) -> &BTreeMap<String, String> {
        &self.values
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
