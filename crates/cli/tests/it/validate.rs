//! `windlass validate <env>`: what the seeds' `validate-env-vars.sh production` did, with every
//! problem at once, located, and secrets kept secret.

use insta::assert_snapshot;

use crate::harness::Windlass;

const EXAMPLE_ENV: &str = ".env.production.example";

fn json(run: &crate::harness::Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|err| panic!("not JSON ({err}): {}", run.stdout))
}

#[test]
fn the_example_platform_is_deployable_with_its_example_env_file() {
    let test = Windlass::with_maily();
    let run = test.run(&["validate", "production", "--env-file", EXAMPLE_ENV]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(run.stdout, "production: deployable (3 services, 14 variables checked)\n");
    assert_eq!(run.stderr, "");
}

/// The seeds' scenario: two variables missing and one malformed. Exactly those three are
/// reported, each where the user has to look.
#[test]
fn two_missing_and_one_malformed_variable_are_all_reported_with_locations() {
    let test = Windlass::with_maily();
    let env: String = test
        .read(EXAMPLE_ENV)
        .lines()
        .filter(|l| !l.starts_with("REDIS_URL=") && !l.starts_with("JWT_SECRET="))
        .map(|l| if l.starts_with("SMTP_FROM=") { "SMTP_FROM=hello-at-maily.example".to_owned() } else { l.to_owned() })
        .map(|l| l + "\n")
        .collect();
    test.write(".env.production", &env);

    let run = test.run(&["validate", "production", "--output", "json"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let report = json(&run);
    assert_eq!(report["deployable"], false);
    assert_eq!(report["errors"], 3);
    assert_eq!(report["warnings"], 0);
    let mut found: Vec<(String, String, u64)> = report["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["severity"] == "error")
        .map(|d| {
            (
                d["message"].as_str().unwrap().to_owned(),
                d["file"].as_str().unwrap().to_owned(),
                d["line"].as_u64().unwrap(),
            )
        })
        .collect();
    found.sort();
    let config = test.read("windlass.toml");
    let declared_at = |name: &str| config.lines().position(|l| l.starts_with(&format!("{name} ="))).unwrap() as u64 + 1;
    let smtp_line = env.lines().position(|l| l.starts_with("SMTP_FROM=")).unwrap() as u64 + 1;
    assert_eq!(
        found,
        vec![
            (
                "`JWT_SECRET` is required for environment `production` but is not set".into(),
                "windlass.toml".into(),
                declared_at("JWT_SECRET")
            ),
            (
                "`REDIS_URL` is required for environment `production` but is not set".into(),
                "windlass.toml".into(),
                declared_at("REDIS_URL")
            ),
            ("`SMTP_FROM` has the wrong format: not an email address".into(), ".env.production".into(), smtp_line),
        ]
    );

    let text = test.run(&["validate", "production"]);
    assert_eq!(text.code, 1);
    assert_eq!(
        text.stdout.matches("\nerror: ").count() + usize::from(text.stdout.starts_with("error: ")),
        3,
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains(&format!(" --> .env.production:{smtp_line}:11")), "{}", text.stdout);
    assert!(text.stdout.ends_with("production: not deployable: 3 errors\n"), "{}", text.stdout);
}

/// A distinctive secret value that is malformed, and one that is too short, must not appear in
/// any output: not in text, not in JSON, not in part.
#[test]
fn secret_values_are_never_printed() {
    let test = Windlass::with_maily();
    let database_url = "Xq7-s3cr3t-database-credential-Zr9";
    let openai_key = "sk-S3CR3Tshort";
    let env = test
        .read(EXAMPLE_ENV)
        .replace(
            "DATABASE_URL=postgresql://maily:example-password@127.0.0.1:5432/maily",
            &format!("DATABASE_URL={database_url}"),
        )
        .replace("OPENAI_API_KEY=sk-example-0000000000000000000000", &format!("OPENAI_API_KEY={openai_key}"));
    test.write(".env.production", &env);
    let pieces = ["Xq7", "s3cr3t", "database-credential", "Zr9", "S3CR3T"];
    for output in ["text", "json"] {
        let run = test.run(&["validate", "production", "--output", output]);
        assert_eq!(run.code, 1);
        for piece in pieces {
            assert!(!run.all_output().contains(piece), "`{piece}` leaked in {output} output:\n{}", run.all_output());
        }
        assert!(run.all_output().contains("DATABASE_URL"), "the problem is still named");
    }
    // From the process environment too.
    let run = Windlass::with_maily().env("DATABASE_URL", database_url).run(&[
        "validate",
        "production",
        "--env-file",
        EXAMPLE_ENV,
    ]);
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("set in the process environment"), "{}", run.stdout);
    for piece in pieces {
        assert!(!run.all_output().contains(piece), "`{piece}` leaked:\n{}", run.all_output());
    }
}

#[test]
fn undeclared_variables_are_warnings_with_a_suggestion() {
    let test = Windlass::with_maily();
    let env = test.read(EXAMPLE_ENV) + "REDIS_ULR=redis://typo\n";
    test.write(".env.production", &env);
    let run = test.run(&["validate", "production"]);
    assert_eq!(run.code, 0, "warnings do not block a deploy: {}", run.stdout);
    assert_snapshot!(run.stdout);
}

#[test]
fn an_invalid_config_is_reported_with_every_problem() {
    let test = Windlass::with_maily();
    let config = test.read("windlass.toml").replace("instances = 4", "instances = \"four\"").replace(
        "depends_on = [\"api\"]\nenv = { VERSION = \"web-2.0.1\"",
        "depends_on = [\"apu\"]\nenv = { VERSION = \"web-2.0.1\"",
    );
    test.write("windlass.toml", &config);
    let run = test.run(&["validate", "production", "--env-file", EXAMPLE_ENV]);
    assert_eq!(run.code, 1);
    assert_snapshot!(run.stdout);
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let test = Windlass::with_maily();
    let cases: [(&str, &[&str]); 4] = [
        ("undeclared environment", &["validate", "prodution"]),
        ("missing config", &["validate", "production", "--config", "nowhere/windlass.toml"]),
        ("config is a directory", &["validate", "production", "--config", "migrations"]),
        ("missing env file", &["validate", "production", "--env-file", ".env.nowhere"]),
    ];
    let mut transcript = String::new();
    for (case, args) in cases {
        let run = test.run(args);
        assert_eq!(run.code, 2, "{case}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{case}: nothing on stdout");
        transcript.push_str(&format!("# {case}: windlass {}\n{}\n", args.join(" "), run.stderr));
    }
    assert_snapshot!(transcript);
}

#[test]
fn a_config_that_is_not_text_is_refused() {
    let test = Windlass::new();
    std::fs::write(test.path().join("windlass.toml"), [0x5b, 0xff, 0xfe, 0x5d]).unwrap();
    let run = test.run(&["validate", "production"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr, "error: windlass.toml is not UTF-8 text (invalid byte at offset 1)\n");
}

#[test]
fn missing_arguments_are_usage_errors() {
    let run = Windlass::new().run(&["validate"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("the following required arguments were not provided"), "{}", run.stderr);
    assert!(run.stderr.contains("<ENVIRONMENT>"), "{}", run.stderr);
}

/// `windlass ... | head -1`: a reader that goes away ends the command quietly (SIGPIPE), never
/// with a panic message.
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    let test = Windlass::with_maily();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_windlass"))
        .args(["validate", "production", "--env-file", ".env.production.example", "--output", "json"])
        .current_dir(test.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt as _;
    assert!(output.status.success() || output.status.signal() == Some(libc::SIGPIPE), "{:?}", output.status);
}

/// A secret too short to hide reliably is an error, wherever its value comes from, unless the
/// variable opts in with `allow_short = true`; the value itself is never shown.
#[test]
fn a_short_secret_is_refused_unless_its_variable_allows_it() {
    let test = Windlass::with_maily();
    let config = test.read("windlass.toml");
    let config = config.replacen("[env]\n", "[env]\nPIN = { secret = true }\n", 1);
    test.write("windlass.toml", &config);
    test.write(".env.production", &format!("{}PIN=4242\n", test.read(EXAMPLE_ENV)));
    let run = test.run(&["validate", "production"]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(run.all_output().contains("`PIN` is a secret shorter than 8 characters"), "{}", run.all_output());
    assert!(run.all_output().contains("allow_short = true"), "{}", run.all_output());
    assert!(!run.all_output().contains("4242"), "{}", run.all_output());
    // From the process environment too.
    let from_process = Windlass::with_maily().env("PIN", "4242");
    from_process.write("windlass.toml", &config);
    let run = from_process.run(&["validate", "production", "--env-file", EXAMPLE_ENV]);
    assert_eq!(run.code, 1, "{}", run.all_output());
    assert!(run.all_output().contains("`PIN` is a secret shorter than 8 characters"), "{}", run.all_output());
    // Opting in for that variable makes it deployable.
    test.write(
        "windlass.toml",
        &config.replace("PIN = { secret = true }", "PIN = { secret = true, allow_short = true }"),
    );
    let run = test.run(&["validate", "production"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
}

/// `[server] ack_key_file` is checked as the server will read it: a file other users may read is
/// an error saying how to fix it, one that holds no key an error that does not quote it, a file
/// not there a warning (validate may run away from the server), a private key nothing.
#[test]
fn the_ack_key_file_is_checked_as_the_server_reads_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let test = Windlass::new();
    test.write(
        "windlass.toml",
        "[project]\nname = \"shop\"\n\n[environments.production]\n\n[server]\nack_key_file = \"keys/ack.key\"\n",
    );
    let messages = |run: &crate::harness::Run| -> Vec<(String, String)> {
        json(run)["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["severity"].as_str().unwrap().to_owned(), d["message"].as_str().unwrap().to_owned()))
            .collect()
    };
    let key_path = test.path().join("keys/ack.key");

    let run = test.run(&["validate", "production", "--output", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let found = messages(&run);
    assert!(found.iter().any(|(severity, m)| severity == "warning" && m.contains("does not exist here")), "{found:?}");

    std::fs::create_dir(test.path().join("keys")).unwrap();
    std::fs::write(&key_path, format!("{}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = test.run(&["validate", "production", "--output", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let found = messages(&run);
    assert!(
        found.iter().any(|(severity, m)| severity == "error"
            && m.contains("chmod 600 ")
            && m.contains("keys/ack.key`")
            && m.contains("644")),
        "{found:?}"
    );

    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&key_path, "my-ack-key-in-words\n").unwrap();
    let run = test.run(&["validate", "production", "--output", "json"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("my-ack-key-in-words"), "{}", run.stdout);
    assert!(messages(&run).iter().any(|(_, m)| m.contains("64 hex digits")), "{}", run.stdout);

    std::fs::write(&key_path, format!("{}\n", "ab".repeat(32))).unwrap();
    let run = test.run(&["validate", "production", "--output", "json"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(messages(&run).iter().all(|(severity, _)| severity == "note"), "{}", run.stdout);
}
