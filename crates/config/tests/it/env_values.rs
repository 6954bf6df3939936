//! Checking an environment's variables against `[env]`: presence, format, and secrecy.

use std::collections::BTreeMap;

use insta::assert_snapshot;
use windlass_config::Source;
use windlass_config::dotenv::EnvFile;
use windlass_config::env_check::{EnvInputs, check_env};

use crate::parse_text;

const SCHEMA: &str = r#"
[project]
name = "shop"

[environments.production]
[environments.staging]

[env]
DATABASE_URL = { format = "url", secret = true }
API_KEY = { secret = true, min_length = 20, regex = "^sk-" }
PORT = { format = "port" }
LOG_LEVEL = { default = "info", one_of = ["debug", "info", "warn"] }
ADMIN_EMAIL = { format = "email" }
TIMEOUT = { format = "duration", default = "30s" }
WORKERS = { format = "int", required = false }
DEBUG_TOKEN = { environments = ["staging"] }
"#;

fn check(env_file: &str, process: &[(&str, &str)]) -> Vec<windlass_config::Diagnostic> {
    let parsed = parse_text(SCHEMA);
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let (file, problems) = EnvFile::parse(Source::new(".env.production", env_file));
    assert!(problems.is_empty(), "{problems:?}");
    let process: BTreeMap<String, String> = process.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    check_env(&parsed.config, "production", &EnvInputs { process_env: &process, env_file: Some(&file), secrets: None })
}

#[test]
fn a_complete_environment_passes() {
    let problems = check(
        "DATABASE_URL=postgresql://shop@127.0.0.1/shop\nAPI_KEY=sk-0123456789abcdefghij\nPORT=8080\nADMIN_EMAIL=ops@shop.example\n",
        &[],
    );
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn every_problem_is_reported_at_once_and_secrets_never_show() {
    let secret_url = "not-a-url-but-very-secret-value";
    let problems = check(
        &format!(
            "DATABASE_URL={secret_url}\nAPI_KEY=sk-short\nPORT=http\nLOG_LEVEL=verbose\nUNDECLARED=1\nDEBUG_TOKEN=x\n"
        ),
        &[],
    );
    let text: String = problems.iter().map(|d| d.render() + "\n").collect();
    assert!(!text.contains(secret_url) && !text.contains("very-secret"), "a secret leaked:\n{text}");
    assert!(!text.contains("sk-short"), "a secret leaked:\n{text}");
    assert_snapshot!(text);
}

#[test]
fn the_process_environment_wins_over_the_file() {
    let problems = check(
        "DATABASE_URL=postgresql://shop@127.0.0.1/shop\nAPI_KEY=sk-0123456789abcdefghij\nPORT=8080\nADMIN_EMAIL=ops@shop.example\n",
        &[("PORT", "99999")],
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("set in the process environment"), "{}", problems[0].message);
    assert_eq!(problems[0].position().map(|p| p.line), Some(11), "pointed at the declaration of PORT");
}

#[test]
fn empty_values_count_as_missing_for_required_variables() {
    let problems =
        check("DATABASE_URL=\nAPI_KEY=sk-0123456789abcdefghij\nPORT=1\nADMIN_EMAIL=a@b.example\nWORKERS=\n", &[]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].message, "`DATABASE_URL` is set but empty");
}
