//! One output convention: `--output text|json` on every command that prints results (the `db`
//! commands' older `--json` still works), and `windlass completions bash|zsh|fish`.

use std::process::Command;

use crate::harness::Windlass;

/// Every command that prints results, as its path of subcommands.
const PRINTING: &[&[&str]] = &[
    &["deploy"],
    &["deploys"],
    &["rollback"],
    &["events"],
    &["status"],
    &["lock", "show"],
    &["lock", "break"],
    &["maintenance"],
    &["failover"],
    &["scale"],
    &["logs"],
    &["promote"],
    &["approve"],
    &["reject"],
    &["canary", "status"],
    &["secrets", "list"],
    &["db", "status"],
    &["db", "plan"],
    &["db", "backups"],
    &["slo"],
    &["probes"],
    &["ack"],
    &["alerts"],
    &["silence", "list"],
    &["incident", "list"],
    &["incident", "stats"],
    &["token", "list"],
];

#[test]
fn every_command_that_prints_results_offers_output_text_or_json() {
    let test = Windlass::new();
    for command in PRINTING {
        let mut args = command.to_vec();
        args.push("--help");
        let run = test.run(&args);
        assert_eq!(run.code, 0, "{command:?}: {}", run.stderr);
        let line = run.stdout.lines().find(|l| l.trim_start().starts_with("--output"));
        let line = line.unwrap_or_else(|| panic!("`windlass {}` has no --output:\n{}", command.join(" "), run.stdout));
        assert!(line.contains("text") && line.contains("json"), "{command:?}: {line}");
    }
}

#[test]
fn the_db_commands_keep_json_as_a_hidden_alias_of_output_json() {
    let test = Windlass::new();
    let help = test.run(&["db", "backups", "--help"]);
    assert_eq!(help.code, 0, "{}", help.stderr);
    assert!(!help.stdout.contains("--json"), "documented spelling is --output json:\n{}", help.stdout);
    // Both spellings parse: with no config, both fail the same way, after parsing (exit 2 with
    // the config's message, not clap's "unexpected argument").
    for flag in [&["--json"][..], &["--output", "json"][..]] {
        let mut args = vec!["db", "backups", "production"];
        args.extend_from_slice(flag);
        let run = test.run(&args);
        assert_eq!(run.code, 2, "{flag:?}: {}", run.stderr);
        assert!(!run.stderr.contains("unexpected argument"), "{flag:?}: {}", run.stderr);
        assert!(run.stderr.contains("windlass.toml"), "{flag:?}: {}", run.stderr);
    }
}

#[test]
fn token_list_prints_a_table_or_json_and_never_a_token() {
    let test = Windlass::new();
    assert_eq!(test.run(&["init", "--name", "shop"]).code, 0);
    let config = test.read("windlass.toml");
    test.write("windlass.toml", &format!("{config}\n[access.people.ana]\n[access.robots.release-bot]\n"));
    let mut secrets = Vec::new();
    for args in [&["--for", "ana", "--expires", "30d"][..], &["--robot", "release-bot"][..]] {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let created = test.run(&all);
        assert_eq!(created.code, 0, "{}", created.stderr);
        secrets.push(created.stdout.trim().to_owned());
    }
    assert_eq!(test.run(&["token", "revoke", "--name", "ana"]).code, 0);

    let json = test.run(&["token", "list", "--output", "json"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("token list --output json is JSON");
    let tokens = value["tokens"].as_array().expect("a `tokens` array");
    assert_eq!(tokens.len(), 2, "{value:#}");
    let ana = tokens.iter().find(|t| t["name"] == "ana").expect("ana is listed");
    assert!(ana["created_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{ana}");
    assert!(ana["revoked_at"].is_string(), "{ana}");
    assert_eq!(
        (ana["owner"].as_str(), ana["kind"].as_str(), ana["admin"].as_bool()),
        (Some("ana"), Some("person"), Some(false))
    );
    assert!(ana["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{ana}");
    assert!(ana["last_used_at"].is_null(), "{ana}");
    let bot = tokens.iter().find(|t| t["name"] == "release-bot").expect("the robot's token is listed");
    assert_eq!(bot["kind"], "robot", "{bot}");

    let text = test.run(&["token", "list"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", text.stdout);
    assert!(text.stdout.contains("robot release-bot") && text.stdout.contains("person ana"), "{}", text.stdout);
    assert!(text.stdout.contains("expires ") && text.stdout.contains("never used"), "{}", text.stdout);
    // One table: the `created` column starts at the same character on every line.
    let column = |line: &str| line[..line.find("created").unwrap()].chars().count();
    assert_eq!(column(lines[0]), column(lines[1]), "{}", text.stdout);
    for secret in &secrets {
        assert!(secret.starts_with("wl_") && secret.len() == 75, "{secret}");
        assert!(!json.all_output().contains(secret.as_str()), "a token was printed");
        assert!(!text.all_output().contains(secret.as_str()), "a token was printed");
    }
}

#[test]
fn a_token_for_an_undeclared_person_or_robot_is_refused_and_nothing_is_written() {
    let test = Windlass::new();
    assert_eq!(test.run(&["init", "--name", "shop"]).code, 0);
    let cases: [(&[&str], &str); 7] = [
        (&["--for", "mallory"], "add [access.people.mallory]"),
        (&["--robot", "ci"], "add [access.robots.ci]"),
        (&["--name", "x"], "--for <person>"),
        (&["--admin", "--robot", "ci"], "cannot be used with"),
        (&["--admin", "--for", "a b"], "not a token name"),
        (&["--admin", "--expires", "400d"], "at most 366d"),
        (&["--admin", "--expires", "soon"], "--expires"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let run = test.run(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all_output());
        assert!(run.stderr.contains(expected), "{args:?}: wanted {expected:?} in {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: no token printed");
    }
    let listed = test.run(&["token", "list", "--output", "json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains("\"tokens\": []"), "nothing was written: {}", listed.stdout);
    // A bootstrap admin needs no declaration.
    let admin = test.run(&["token", "create", "--admin"]);
    assert_eq!(admin.code, 0, "{}", admin.stderr);
    assert!(admin.stderr.contains("bootstrap admin `admin`"), "{}", admin.stderr);
}

#[test]
fn bash_sources_the_bash_completions_and_completes_windlass() {
    let test = Windlass::new();
    let run = test.run(&["completions", "bash"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let script = test.path().join("windlass.bash");
    std::fs::write(&script, &run.stdout).unwrap();
    let bash = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", "set -e; source \"$1\"; complete -p windlass", "bash"])
        .arg(&script)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&bash.stdout);
    let stderr = String::from_utf8_lossy(&bash.stderr);
    assert!(bash.status.success(), "sourcing failed: {stderr}");
    assert!(stderr.is_empty(), "sourcing printed errors: {stderr}");
    assert!(stdout.contains("windlass"), "no completion registered for windlass: {stdout}");

    // The completion function offers the commands (it runs as bash would on `windlass de<TAB>`).
    let complete = Command::new("bash")
        .args([
            "--norc",
            "--noprofile",
            "-c",
            "source \"$1\"; COMP_WORDS=(windlass de); COMP_CWORD=1; COMP_LINE='windlass de'; COMP_POINT=11; \
             _windlass windlass de windlass; printf '%s\\n' \"${COMPREPLY[@]}\"",
            "bash",
        ])
        .arg(&script)
        .output()
        .expect("bash runs");
    let offered = String::from_utf8_lossy(&complete.stdout);
    assert!(offered.lines().any(|l| l == "deploy"), "{offered}{}", String::from_utf8_lossy(&complete.stderr));
    assert!(offered.lines().any(|l| l == "deploys"), "{offered}");
}

#[test]
fn zsh_and_fish_completions_name_the_commands() {
    let test = Windlass::new();
    for (shell, marker) in [("zsh", "#compdef windlass"), ("fish", "complete -c windlass")] {
        let run = test.run(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}: {}", &run.stdout[..run.stdout.len().min(400)]);
        assert!(run.stdout.contains("completions") && run.stdout.contains("maintenance"), "{shell}");
    }
    let bad = test.run(&["completions", "powershell"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
}
