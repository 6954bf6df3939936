//! Values are data, never shell code: hostile values (`;`, `&`, `$(...)`, backticks, quotes,
//! newlines) from an env file, the SOPS secrets store and OpenBao reach a custom step, a
//! `[database] migrate` command and a command probe through the real binaries. Each command
//! writes what it got to a file: the exact bytes must be the value, and no marker file the
//! payload would create may exist.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use windlass_testkit::{tools, workspace_bin};

use crate::harness::Windlass;
use crate::platform::Platform;

/// A value that runs `touch <dir>/pwned-<tag>-…` in every way a shell could be tricked into
/// running it, if it were pasted into a command.
fn hostile(dir: &Path, tag: &str) -> String {
    let m = |how: &str| format!("{}/pwned-{tag}-{how}", dir.display());
    format!(
        "x; touch {semi} & touch {amp} $(touch {sub}) `touch {tick}` 'single \"double\" \\ end\ntouch {line}",
        semi = m("semi"),
        amp = m("amp"),
        sub = m("sub"),
        tick = m("tick"),
        line = m("newline"),
    )
}

/// `value` as a double-quoted `.env` value.
fn env_quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
}

/// The commands under test: each writes each variable's value to `<out>/<where>-<VAR>`, once
/// double-quoted and once single-quoted (the template's `'${X}'` still means the value).
fn writes(out: &Path, place: &str, vars: &[&str]) -> String {
    vars.iter()
        .map(|var| {
            format!(
                "printf '%s' \"${{{var}}}\" > {out}/{place}-{var}; printf '%s' '${{{var}}}' > {out}/{place}-{var}-single",
                out = out.display()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn config(out: &Path, vars: &[&str], env: &str, secrets: &str) -> String {
    let step = format!("{}; printf 'said:%s\\n' \"${{{}}}\"", writes(out, "step", vars), vars[0]);
    let migrate = format!(
        "{}; printf '%s' \"${{DATABASE_URL}}\" > {}/migrate-DATABASE_URL",
        writes(out, "migrate", vars),
        out.display()
    );
    let probe = writes(out, "probe", vars);
    format!(
        r#"[project]
name = "shop"

[environments.production]

[env]
DATABASE_URL = {{ required = true }}
{env}
[pipeline]
phases = ["database", "release"]

[database]
url = "${{DATABASE_URL}}"
migrate = {{ command = '''{migrate}''' }}
backup = {{ before_migrate = false }}

[[phases.release.steps]]
name = "print"
run = '''{step}'''

[probes.print]
type = "command"
command = '''{probe}'''
interval = "1s"

[edge]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
{secrets}"#
    )
}

fn cli(dir: &Path, envs: &[(&str, &str)], args: &[&str], stdin: &str) {
    let mut command = Command::new(workspace_bin("windlass"));
    command.args(args).current_dir(dir).envs(envs.iter().copied());
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Waits (polling) until the probe has written every file, for at most a minute.
fn wait_for(files: &[std::path::PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !files.iter().all(|f| f.exists()) {
        assert!(Instant::now() < deadline, "the command probe never wrote {files:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deploys (database phase, custom step), waits for the probe, and checks every file against
/// `values` and that no payload ran.
fn deploy_and_check(platform: &Platform, out: &Path, values: &[(&str, &str)]) {
    let run = platform.cli(&["deploy", "production"]);
    assert_nothing_ran(platform);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let id = crate::platform::deploy_id(&run);
    let files: Vec<_> = ["step", "migrate", "probe"]
        .iter()
        .flat_map(|place| values.iter().map(move |(var, _)| out.join(format!("{place}-{var}"))))
        .collect();
    wait_for(&files);
    for place in ["step", "migrate", "probe"] {
        for (var, value) in values {
            for suffix in ["", "-single"] {
                let file = out.join(format!("{place}-{var}{suffix}"));
                let got = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                assert_eq!(String::from_utf8_lossy(&got), *value, "{}", file.display());
            }
        }
    }
    // `?a&b` in the database URL stays one value (it used to send the migration to the background).
    let url = std::fs::read_to_string(out.join("migrate-DATABASE_URL")).unwrap();
    assert_eq!(url, format!("sqlite://{}/app.db?mode=rwc&cache=shared", platform.path().display()));
    // The step's output is recorded as printed: the first value, literally, or (a secret, which
    // the stream redactor finds whole even across its newline) its redaction.
    let shown = platform.json(&["deploy", "show", &id]);
    let step = shown["steps"].as_array().unwrap().iter().find(|s| s["name"] == "print").unwrap().clone();
    let (first_var, first) = values[0];
    assert_eq!(step["status"], "succeeded", "{step:#}");
    let output = step["output"].as_str().unwrap();
    let redacted = format!("said:[REDACTED:{first_var}]");
    assert!(output.contains(&format!("said:{first}")) || output.contains(&redacted), "{first_var}: {step:#}");
    assert_nothing_ran(platform);
}

/// No marker file of a payload exists.
fn assert_nothing_ran(platform: &Platform) {
    let pwned: Vec<String> = std::fs::read_dir(platform.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("pwned-"))
        .collect();
    assert!(pwned.is_empty(), "a value ran as shell code: {pwned:?}");
}

#[test]
fn values_from_the_env_file_and_the_secrets_store_are_never_shell_code() {
    let out_dir = windlass_testkit::tempdir();
    let out = out_dir.path();
    let vars = ["FROM_FILE", "FROM_STORE"];
    let text = config(out, &vars, "FROM_FILE = { required = true }\nFROM_STORE = { secret = true }\n", "");
    let mut platform = Platform::start(&text);
    let dir = platform.path().to_owned();
    let (from_file, from_store) = (hostile(&dir, "file"), hostile(&dir, "store"));
    std::fs::write(
        dir.join(".env.production"),
        format!("DATABASE_URL=\"sqlite://app.db?mode=rwc&cache=shared\"\nFROM_FILE={}\n", env_quoted(&from_file)),
    )
    .unwrap();
    let (key, public) = crate::secrets::keygen(&dir, "age-key.txt");
    let key_var = ("WINDLASS_AGE_KEY_FILE", key.to_str().unwrap());
    cli(&dir, &[key_var], &["secrets", "init", "production", "--recipient", &public], "");
    cli(&dir, &[key_var], &["secrets", "set", "production", "FROM_STORE"], &from_store);
    platform.kill_server();
    platform.start_server(&[key_var]);
    deploy_and_check(&platform, out, &[("FROM_FILE", &from_file), ("FROM_STORE", &from_store)]);
}

#[test]
fn values_from_openbao_are_never_shell_code() {
    let out_dir = windlass_testkit::tempdir();
    let out = out_dir.path();
    let prefix = tools::unique("winject");
    let secrets =
        format!("\n[secrets]\nbackend = \"openbao\"\naddress = \"{}\"\nprefix = \"{prefix}\"\n", tools::bao_addr());
    let text = config(out, &["FROM_BAO"], "FROM_BAO = { secret = true }\n", &secrets);
    let mut platform = Platform::start(&text);
    let dir = platform.path().to_owned();
    let from_bao = hostile(&dir, "bao");
    std::fs::write(dir.join(".env.production"), "DATABASE_URL=\"sqlite://app.db?mode=rwc&cache=shared\"\n").unwrap();
    let token = tools::bao_token();
    let token_var = ("BAO_TOKEN", token.as_str());
    cli(&dir, &[token_var], &["secrets", "set", "production", "FROM_BAO"], &from_bao);
    platform.kill_server();
    platform.start_server(&[token_var]);
    deploy_and_check(&platform, out, &[("FROM_BAO", &from_bao)]);
}

const VALIDATED: &str = r#"[project]
name = "shop"

[environments.production]

[env]
GREETING = { default = "hi" }
API_KEY = { secret = true, required = false }

[pipeline]
phases = ["backend", "release"]

[services.api]
run = "./api --greeting ${GREETING} --key ${API_KEY}"
upstreams = []

[[phases.release.steps]]
name = "greet"
run = "echo \"${GREETING}\" && X=${GREETING} true && echo ${GREETING}"
"#;

#[test]
fn validate_warns_on_unquoted_uses_and_refuses_a_secret_in_run() {
    let test = Windlass::new();
    test.write("windlass.toml", VALIDATED);
    let run = test.run(&["validate", "production", "--output", "json"]);
    let report: serde_json::Value =
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", run.stdout, run.stderr));
    let diagnostics = report["diagnostics"].as_array().unwrap();
    let line_of = |needle: &str| VALIDATED.lines().position(|l| l.contains(needle)).unwrap() as u64 + 1;
    let column_of = |needle: &str, at: &str| {
        let line = VALIDATED.lines().find(|l| l.contains(needle)).unwrap();
        line.rfind(at).unwrap() as u64 + 1
    };
    // The secret in `run`: an error, at the service's `run`, saying to use `env`.
    let refused: Vec<_> = diagnostics.iter().filter(|d| d["severity"] == "error").collect();
    assert_eq!(refused.len(), 1, "{diagnostics:#?}");
    let message = refused[0]["message"].as_str().unwrap();
    assert!(message.contains("secret `API_KEY` is used in `run`"), "{message}");
    assert!(message.contains("command line"), "{message}");
    assert!(refused[0]["help"].as_str().unwrap().contains("env = { API_KEY = { secret = \"API_KEY\" } }"));
    assert_eq!(refused[0]["line"], line_of("./api --greeting"));
    assert_eq!(refused[0]["column"], column_of("./api --greeting", "${API_KEY}"));
    assert_eq!(run.code, 1, "{}", run.stdout);
    // Unquoted uses: a warning each, at the reference itself (the service's argv is not a shell
    // and a quoted or assigned use is not split, so only the step's last one counts).
    let warned: Vec<_> = diagnostics
        .iter()
        .filter(|d| d["severity"] == "warning" && d["message"].as_str().unwrap().contains("outside double quotes"))
        .collect();
    assert_eq!(warned.len(), 1, "{diagnostics:#?}");
    assert!(
        warned[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("`${GREETING}` is outside double quotes in `phases.release.steps[0].run`")
    );
    assert_eq!(warned[0]["line"], line_of("name = \"greet\"") + 1);
    assert_eq!(warned[0]["column"], column_of("X=${GREETING}", "${GREETING}"));
    // In text, with its place.
    let text = test.run(&["validate", "production"]);
    let line = line_of("X=${GREETING}");
    assert!(text.stdout.contains(&format!("windlass.toml:{line}:")), "{}", text.stdout);
}

/// A service's `run` is its instances' argv, which every local user can read: a value from the
/// secrets store in it is refused by the deploy (also when `[env]` does not declare it secret),
/// and a command recorded before the value became a secret is shown redacted by the status.
#[test]
fn a_secret_never_reaches_a_run_command_or_the_status() {
    const TAG: &str = "tag-Canary-7f3a9c1e-public";
    let text = crate::platform::config(&format!("{} --tag ${{TAG}}", crate::platform::demo()), "", "1m", "")
        .replace("[pipeline]", "[env]\nTAG = { required = true }\n\n[pipeline]");
    let mut platform = Platform::start(&text);
    let dir = platform.path().to_owned();
    std::fs::write(dir.join(".env.production"), format!("TAG={TAG}\n")).unwrap();
    let (key, public) = crate::secrets::keygen(&dir, "age-key.txt");
    let key_var = ("WINDLASS_AGE_KEY_FILE", key.to_str().unwrap());
    cli(&dir, &[key_var], &["secrets", "init", "production", "--recipient", &public], "");
    platform.kill_server();
    platform.start_server(&[key_var]);
    let first = platform.deploy(&[]);
    let command = |platform: &Platform| platform.status()["services"]["api"]["colors"]["blue"]["command"].clone();
    assert!(command(&platform).as_str().unwrap().ends_with(&format!("--tag {TAG}")), "not a secret yet");

    // The value is now a secret too: the recorded command is shown redacted.
    cli(&dir, &[key_var], &["secrets", "set", "production", "TAG"], TAG);
    let shown = command(&platform);
    assert!(shown.as_str().unwrap().ends_with("--tag [REDACTED:TAG]"), "{shown}");
    for args in [
        vec!["status", "production", "--output", "json"],
        vec!["deploy", "show", &first, "--output", "json"],
        vec!["deploys", "production", "--output", "json"],
    ] {
        let shown = platform.cli(&args);
        assert_eq!(shown.code, 0, "{args:?}: {}", shown.all_output());
        assert!(!shown.all_output().contains(TAG), "{args:?}: {}", shown.stdout);
    }
    let shown = platform.json(&["deploy", "show", &first]);
    assert_eq!(shown["deploy"]["artifacts"]["services"]["api"]["artifact"]["args"][1], "[REDACTED:TAG]");

    // Taken from the secrets store alone, it may not go into `run`.
    std::fs::write(dir.join(".env.production"), "").unwrap();
    let run = platform.cli(&["deploy", "production"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.all_output().contains("secret `TAG` is used in `run`"), "{}{}", run.stdout, run.stderr);
    assert!(run.all_output().contains("`env`"), "{}", run.all_output());
    assert!(!run.all_output().contains(TAG), "{}", run.all_output());
}

/// `run` is split into words as written and each word is then filled in: a value with spaces
/// and quotes is one argument, never more words (nor a quoting error).
#[test]
fn a_value_in_run_is_one_argument() {
    const GREETING: &str = "a b' --admin \"c";
    let text = crate::platform::config(&format!("{} --greeting ${{GREETING}}", crate::platform::demo()), "", "1m", "")
        .replace("[pipeline]", "[env]\nGREETING = { required = true }\n\n[pipeline]");
    let platform = Platform::start(&text);
    std::fs::write(platform.path().join(".env.production"), format!("GREETING={}\n", env_quoted(GREETING))).unwrap();
    let id = platform.deploy(&[]);
    let shown = platform.json(&["deploy", "show", &id]);
    let args = &shown["deploy"]["artifacts"]["services"]["api"]["artifact"]["args"];
    assert_eq!(*args, serde_json::json!(["--greeting", GREETING]), "{shown:#}");
}
