//! `windlass validate <env>`: the config, then every declared variable of the environment, all
//! problems at once. Replaces `validate-env-vars.sh production`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use windlass_config::dotenv::EnvFile;
use windlass_config::env_check::{EnvInputs, SecretInputs, check_env};
use windlass_config::{Diagnostic, Source, diagnostic};

use crate::{Outcome, OutputFormat, UsageError, config_path};

#[derive(clap::Args)]
pub struct Args {
    /// The environment to check, as declared under [environments].
    environment: String,
    /// The config file [default: ./windlass.toml]
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The env file to read [default: .env.<environment> beside the config, if present]
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// The age identity that decrypts the environment's secrets [default: WINDLASS_AGE_KEY_FILE,
    /// SOPS_AGE_KEY_FILE, ~/.config/sops/age/keys.txt]
    #[arg(long)]
    identity: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    output: OutputFormat,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let path = config_path(args.config);
    let source = Source::read(&path).map_err(|err| UsageError(err.to_string()))?;
    let parsed = windlass_config::parse(&source);
    let config = &parsed.config;
    // Config problems first (already in file order), then the environment's.
    let mut diagnostics = parsed.diagnostics.clone();

    if !config.environments.contains_key(&args.environment) && !config.environments.is_empty() {
        let declared: Vec<&str> = config.environments.keys().map(String::as_str).collect();
        let mut message = format!(
            "environment `{}` is not declared in {} (declared: {})",
            args.environment,
            path.display(),
            declared.join(", ")
        );
        if let Some(suggestion) = windlass_config::did_you_mean(&args.environment, declared.iter().copied()) {
            message.push_str(&format!("; did you mean `{suggestion}`?"));
        }
        return Err(UsageError(message).into());
    }

    diagnostics.extend(check_ack_key_file(config, &source, &path));

    let mut env_diagnostics = Vec::new();
    let env_file = read_env_file(config, &args.environment, args.env_file, &mut env_diagnostics)?;
    let process_env: BTreeMap<String, String> =
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect();
    let secrets = read_secrets(config, &args.environment, args.identity, &mut env_diagnostics)?;
    let inputs = EnvInputs { process_env: &process_env, env_file: env_file.as_ref(), secrets: secrets.as_ref() };
    env_diagnostics.extend(check_env(config, &args.environment, &inputs));
    diagnostic::sort(&mut env_diagnostics);
    diagnostics.extend(env_diagnostics);

    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.iter().filter(|d| d.severity == windlass_config::Severity::Warning).count();
    let checked_vars = config.env.values().filter(|s| s.applies_to(&args.environment)).count();
    match args.output {
        OutputFormat::Text => {
            for diagnostic in &diagnostics {
                println!("{}", diagnostic.render());
            }
            if errors == 0 {
                println!(
                    "{}: deployable ({} services, {checked_vars} variables checked{})",
                    args.environment,
                    config.services.len(),
                    plural_suffix(", ", warnings, "warning")
                );
            } else {
                println!(
                    "{}: not deployable: {}{}",
                    args.environment,
                    plural(errors, "error"),
                    plural_suffix(", ", warnings, "warning")
                );
            }
        }
        OutputFormat::Json => {
            let report = serde_json::json!({
                "environment": args.environment,
                "config": path.display().to_string(),
                "deployable": errors == 0,
                "errors": errors,
                "warnings": warnings,
                "diagnostics": diagnostics.iter().map(Diagnostic::to_json).collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    Ok(if errors == 0 { Outcome::Ok } else { Outcome::NotOk })
}

/// Reads the environment's secrets store. One that exists but cannot be read is a problem to
/// report (its variables then count as missing), never a reason to stop checking.
fn read_secrets(
    config: &windlass_config::Config,
    environment: &str,
    identity: Option<PathBuf>,
    diagnostics: &mut Vec<Diagnostic>,
) -> anyhow::Result<Option<SecretInputs>> {
    let options = windlass_secrets::OpenOptions { identity };
    let runtime = crate::client::runtime()?;
    match runtime.block_on(windlass_secrets::load_if_present(config, environment, &options)) {
        Ok(Some((place, set))) => Ok(Some(SecretInputs {
            place,
            values: set.values.iter().map(|(name, value)| (name.clone(), value.expose().to_owned())).collect(),
        })),
        Ok(None) => Ok(None),
        Err(err) => {
            diagnostics.push(Diagnostic::error(format!(
                "cannot read the secrets of `{environment}`: {err}; the variables they hold are not checked"
            )));
            Ok(None)
        }
    }
}

/// Reads the env file: the one named on the command line (which must exist), or the default one
/// beside the config (which may be absent: values can come from the process environment).
fn read_env_file(
    config: &windlass_config::Config,
    environment: &str,
    flag: Option<PathBuf>,
    diagnostics: &mut Vec<Diagnostic>,
) -> anyhow::Result<Option<EnvFile>> {
    let (path, explicit) = match flag {
        Some(path) => (path, true),
        None => (config.env_file_path(environment), false),
    };
    let source = match Source::read(&path) {
        Ok(source) => source,
        Err(_) if !explicit && !path.exists() => {
            diagnostics.push(Diagnostic::note(format!(
                "no env file {}; reading variables from the process environment only",
                path.display()
            )));
            return Ok(None);
        }
        Err(err) => return Err(UsageError(format!("env file: {err}")).into()),
    };
    let (file, problems) = EnvFile::parse(source);
    diagnostics.extend(problems);
    Ok(Some(file))
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

fn plural_suffix(separator: &str, n: usize, noun: &str) -> String {
    if n == 0 { String::new() } else { format!("{separator}{}", plural(n, noun)) }
}

/// `[server] ack_key_file`, as the server will read it: private, and holding a key. A file not
/// there is a warning only: validate may run on another machine than the server.
fn check_ack_key_file(
    config: &windlass_config::Config,
    source: &Source,
    config_file: &std::path::Path,
) -> Vec<Diagnostic> {
    let Some(file) = &config.server.ack_key_file else { return Vec::new() };
    let (path, _) = windlass_server::ack_key::location(config, config_file, std::path::Path::new("."));
    match windlass_server::ack_key::read(&path) {
        Ok(Some(_)) => Vec::new(),
        Ok(None) => vec![
            Diagnostic::warning(format!(
                "`server.ack_key_file`: {} does not exist here; the server refuses to start without it",
                path.display()
            ))
            .at(source, file.span.clone())
            .help("make it with `(umask 077; openssl rand -hex 32 > FILE)` and copy it to every server"),
        ],
        Err(err) => vec![Diagnostic::error(format!("`server.ack_key_file`: {err}")).at(source, file.span.clone())],
    }
}
