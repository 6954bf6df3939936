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

#[test]
fn a_short_secret_is_an_error_unless_allowed_and_is_never_shown() {
    let schema = r#"
[project]
name = "shop"

[environments.production]

[env]
PIN = { secret = true }
SHORT_OK = { secret = true, allow_short = true }
COLOR = { }
"#;
    let parsed = parse_text(schema);
    assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
    let run = |file: &str, process: &[(&str, &str)]| {
        let (file, _) = EnvFile::parse(Source::new(".env.production", file));
        let process: BTreeMap<String, String> =
            process.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let found = check_env(
            &parsed.config,
            "production",
            &EnvInputs { process_env: &process, env_file: Some(&file), secrets: None },
        );
        found.iter().map(|d| d.render() + "\n").collect::<String>()
    };
    // From the env file and from the process environment alike.
    let text = run("PIN=4242\nSHORT_OK=77\nCOLOR=red\n", &[]);
    assert!(text.contains("`PIN` is a secret shorter than 8 characters"), "{text}");
    assert!(text.contains("allow_short = true"), "{text}");
    assert!(!text.contains("4242") && !text.contains("SHORT_OK") && !text.contains("COLOR"), "{text}");
    let text = run("SHORT_OK=77\n", &[("PIN", "4242")]);
    assert!(
        text.contains("`PIN` is a secret shorter than 8 characters") && text.contains("process environment"),
        "{text}"
    );
    assert!(run("PIN=42424242\nSHORT_OK=7\nCOLOR=red\n", &[]).is_empty());
    // `allow_short` on a variable that is not secret is a mistake worth a word.
    let parsed = parse_text(&schema.replace("COLOR = { }", "COLOR = { allow_short = true }"));
    let rendered = crate::rendered(&parsed);
    assert!(rendered.contains("`allow_short` is for secret variables"), "{rendered}");
}
