//! The leak test: distinctive secrets (one line, a multi-line PEM key, a short value set with
//! `--allow-short`, and a database URL) travel through a whole deploy with a database phase, a
//! step that fails printing them, a command probe that fails printing them, notifications to
//! Slack and a webhook, a backup and a restore, and the API. Then every place a secret could
//! land is scanned for every form of each (plain, URL-encoded, base64 at every alignment): every
//! file under the state dir, the store, every API answer the CLI gets, the argv of every process
//! on the machine from the server's start to the end of the restore (read every 5 ms, and once
//! more while a step holds; shims, instances, `sh`, `pg_dump` must have been seen), and every
//! outgoing notification. And every file under the state dir is 0600, every directory 0700.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use windlass_testkit::postgres::TestDatabase;
use windlass_testkit::receiver::{Answer, serve, signed_with, slack_shape};
use windlass_testkit::workspace_bin;

use crate::platform::{Platform, config, demo, deploy_id};
use crate::secrets::{forbidden, keygen};

/// One line, with `+`, `/` and `=` so its URL and base64 forms differ from the plain.
const PASS: &str = "Leak+Pw/4f9e2b7d=Qk81";
/// A multi-line key, as a TLS or SSH private key would be stored.
const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvLeakPemLineOne0123456789ABCDEFghij\nLeakPemLineTwo/+abcdefghijklmnopqrstuvw==\n-----END PRIVATE KEY-----";
/// Shorter than the redactor's minimum, accepted only with `--allow-short`.
const PIN: &str = "Qx#7!k";
const SIGNING: &str = "whsec-leak-test-signing-key";

/// Every text that must never appear anywhere: each form of each secret, and each line of the
/// key on its own (a line-by-line redactor would let those through).
fn needles(database_url: &str) -> Vec<(String, &'static str)> {
    let mut all = Vec::new();
    for (value, name) in [(PASS, "DB_PASSWORD"), (PEM, "TLS_KEY"), (database_url, "DATABASE_URL")] {
        all.extend(forbidden(value).into_iter().map(|form| (form, name)));
    }
    for line in PEM.lines().filter(|l| !l.starts_with("-----")) {
        all.push((line.to_owned(), "TLS_KEY (one line)"));
    }
    // The short value is searched plain only: its derived forms are too short to mean anything.
    all.push((PIN.to_owned(), "PIN"));
    all
}

fn scan(needles: &[(String, &'static str)], what: &str, bytes: &[u8]) {
    for (needle, name) in needles {
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle.as_bytes()) {
            let from = at.saturating_sub(80);
            let to = (at + needle.len() + 80).min(bytes.len());
            panic!(
                "{what} holds `{needle}`, a form of the secret {name}, at byte {at}:\n{}",
                String::from_utf8_lossy(&bytes[from..to])
            );
        }
    }
}

/// Every file under `root` is 0600 (a frozen executable 0700) and every directory 0700, and none
/// holds a secret.
fn scan_tree(needles: &[(String, &'static str)], root: &Path) -> usize {
    let mut files = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is a directory with mode {mode:o}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
                // A frozen executable keeps its owner's execute bit; nothing is for anyone else.
                let executable = path.components().any(|c| c.as_os_str() == "artifacts") && mode == 0o700;
                assert!(mode == 0o600 || executable, "{} is a file with mode {mode:o}", path.display());
                // A file may vanish between listing and reading (a rotated log, a temp file).
                if let Ok(bytes) = std::fs::read(&path) {
                    scan(needles, &path.display().to_string(), &bytes);
                    files += 1;
                }
            }
        }
    }
    files
}

/// The argv of every process on the machine now (the secrets are this test's own, so any hit
/// is ours).
fn scan_argv(needles: &[(String, &'static str)]) -> usize {
    let mut seen = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if !entry.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            scan(needles, &format!("the argv of pid {} ({shown})", entry.file_name().to_string_lossy()), &cmdline);
            seen += 1;
        }
    }
    seen
}

/// Reads the argv of every process on the machine every few milliseconds until stopped, so the
/// short-lived ones (a migrate command's `sh`, `pg_dump`, a probe's `sh`, instances starting)
/// are seen too. Returns the hits and the programs seen.
struct ArgvWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(Vec<String>, std::collections::BTreeSet<String>)>,
}

impl ArgvWatch {
    fn start(needles: Vec<(String, &'static str)>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut seen, mut hits, mut programs) =
                (std::collections::HashSet::new(), Vec::new(), std::collections::BTreeSet::new());
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                for entry in std::fs::read_dir("/proc").unwrap().flatten() {
                    let pid = entry.file_name().to_string_lossy().into_owned();
                    if !pid.bytes().all(|b| b.is_ascii_digit()) {
                        continue;
                    }
                    let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
                    if cmdline.is_empty() || !seen.insert((pid.clone(), cmdline.clone())) {
                        continue;
                    }
                    let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
                    let program = String::from_utf8_lossy(program);
                    programs.insert(program.rsplit('/').next().unwrap_or_default().to_owned());
                    for (needle, name) in &needles {
                        if cmdline.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                            let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                            hits.push(format!("pid {pid} ({shown}) holds a form of {name}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (hits, programs)
        });
        ArgvWatch { stop, thread }
    }

    fn finish(self) -> (Vec<String>, std::collections::BTreeSet<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn wait_for(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the CLI offline (secrets, db) in the platform's directory with the age key.
fn offline(platform: &Platform, key: &Path, args: &[&str], stdin: &str) -> crate::harness::Run {
    let mut command = Command::new(workspace_bin("windlass"));
    command
        .args(args)
        .current_dir(platform.path())
        .env("WINDLASS_AGE_KEY_FILE", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    crate::harness::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_form_of_any_secret_reaches_a_file_an_answer_an_argv_or_a_notification() {
    let database = TestDatabase::create().await;
    // PostgreSQL trusts loopback here, so the password is carried but never checked: what
    // matters is that the URL holding it is a secret Windlass handles.
    let database_url = database.url.replacen("postgres@", &format!("postgres:{}@", urlencode(PASS)), 1);
    let needles = needles(&database_url);
    let slack = serve(vec![Answer::Check(std::sync::Arc::new(slack_shape))], None).await;
    let hook = serve(vec![Answer::Check(signed_with(SIGNING))], None).await;

    let gate = windlass_testkit::tempdir();
    std::fs::create_dir_all(gate.path().join("migrations")).unwrap();
    std::fs::write(
        gate.path().join("migrations/0001_notes.sql"),
        "CREATE TABLE notes (id integer PRIMARY KEY, body text);\n",
    )
    .unwrap();
    let started = gate.path().join("started");
    let release = gate.path().join("release");
    let extra = format!(
        r#"
[database]
url = {{ secret = "DATABASE_URL" }}
migrate = {{ dir = "{migrations}" }}

[[phases.backend.steps]]
name = "print every secret"
run = 'printf "pass=%s\n" "${{DB_PASSWORD}}"; printf "%s\n" "${{TLS_KEY}}"; printf "pin=%s\n" "${{PIN}}"; printf "url=%s\n" "${{DATABASE_URL}}"; printf "Authorization: Basic %s\n" "$(printf "u:%s" "${{DB_PASSWORD}}" | base64)"'

[[phases.traffic.steps]]
name = "hold while the test reads every argv"
run = ': > "${{STARTED}}"; while [ ! -e "${{RELEASE}}" ]; do sleep 0.05; done'
env = {{ STARTED = "{started}", RELEASE = "{release}" }}

[[phases.traffic.steps]]
name = "fail printing the key"
run = 'printf "cannot load key:\n%s\n" "${{TLS_KEY}}" >&2; echo "with ${{DB_PASSWORD}} and ${{PIN}}" >&2; exit 7'

[probes.leaky]
type = "command"
command = 'printf "%s\n" "${{TLS_KEY}}"; echo "down with ${{DB_PASSWORD}} ${{PIN}}"; exit 1'
interval = "1s"
failure_threshold = 1
service = "api"

[alerts]
group_wait = "0s"
routes = [{{ to = ["slack", "ops"] }}]

[alerts.receivers.slack]
type = "slack"
webhook_url = "{slack_url}"

[alerts.receivers.ops]
type = "webhook"
url = "{hook_url}"
signing_secret = "{SIGNING}"
"#,
        migrations = gate.path().join("migrations").display(),
        started = started.display(),
        release = release.display(),
        slack_url = slack.url("http", "/services/T0/B0/LEAKTEST"),
        hook_url = hook.url("http", "/windlass"),
    );
    let text = config(
        &demo(),
        r#"VERSION = "v1", DB_PASSWORD = { secret = "DB_PASSWORD" }, TLS_KEY = { secret = "TLS_KEY" }"#,
        "1m",
        &extra,
    )
    .replace("name = \"shop\"\n", "name = \"shop\"\nstate_dir = \"state\"\n")
    .replace(
        "[pipeline]\n",
        "[env]\nDB_PASSWORD = { secret = true }\nTLS_KEY = { secret = true }\nPIN = { secret = true, allow_short = true }\nDATABASE_URL = { secret = true, format = \"url\" }\n\n[pipeline]\nnotify = [\"slack\", \"ops\"]\n",
    )
    .replace("phases = [\"validate\", \"backend\"", "phases = [\"validate\", \"database\", \"backend\"");
    let mut platform = Platform::start(&text);

    let (key, public) = keygen(platform.path(), "age-key.txt");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (args, stdin) in [
        (vec!["secrets", "init", "production", "--recipient", &public], String::new()),
        (vec!["secrets", "set", "production", "DB_PASSWORD"], PASS.to_owned()),
        (vec!["secrets", "set", "production", "TLS_KEY"], PEM.to_owned()),
        (vec!["secrets", "set", "production", "PIN", "--allow-short"], PIN.to_owned()),
        (vec!["secrets", "set", "production", "DATABASE_URL"], database_url.clone()),
    ] {
        let run = offline(&platform, &key, &args, &stdin);
        assert_eq!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
    }
    platform.kill_server();
    let watch = ArgvWatch::start(needles.clone());
    platform.start_server(&[("WINDLASS_AGE_KEY_FILE", key.to_str().unwrap())]);

    // The deploy runs in the background while the test reads every process's argv at the
    // step that holds.
    let deploy = platform.command_as(&platform.token, &["deploy", "production", "--reason", "leak <!channel> test"]);
    let deploy = std::thread::spawn(move || {
        let mut deploy = deploy;
        deploy.output().unwrap()
    });
    wait_for(&started, "the holding step");
    let processes = scan_argv(&needles);
    std::fs::write(&release, "").unwrap();
    let output = deploy.join().unwrap();
    let run = crate::harness::Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert_eq!(run.code, 1, "the last step fails: {}{}", run.stdout, run.stderr);
    let id = deploy_id(&run);
    // The secrets were there to hide: the steps printed them, redacted, the key whole.
    assert!(run.stdout.contains("pass=[REDACTED:DB_PASSWORD]"), "{}", run.stdout);
    assert!(run.all_output().contains("[REDACTED:TLS_KEY]"), "{}", run.all_output());
    scan(&needles, "the deploy's output", run.all_output().as_bytes());

    // The probe has failed and notified by now (group_wait 0s); wait for its alert to be sent.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !slack.requests().iter().any(|(_, body)| String::from_utf8_lossy(body).contains("leaky")) {
        assert!(Instant::now() < deadline, "the probe's alert never reached Slack");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A backup and a restore, offline, as an operator would after the failed deploy.
    let backup = offline(&platform, &key, &["db", "backup", "production"], "");
    assert_eq!(backup.code, 0, "{}{}", backup.stdout, backup.stderr);
    let restore = offline(&platform, &key, &["db", "restore", "production", "latest", "--yes"], "");
    assert_eq!(restore.code, 0, "{}{}", restore.stdout, restore.stderr);
    scan(
        &needles,
        "the backup's and restore's output",
        format!("{}{}", backup.all_output(), restore.all_output()).as_bytes(),
    );
    // Every argv seen from the server's start to the end of the restore.
    let (hits, programs) = watch.finish();
    assert!(hits.is_empty(), "{hits:#?}");
    for program in ["windlass", "windlass-shim", "windlass-demo", "sh", "pg_dump"] {
        assert!(programs.contains(program), "no `{program}` was seen running: {programs:?}");
    }

    // Every answer of the API, as the CLI shows them and raw.
    for args in [
        vec!["status", "--output", "json"],
        vec!["deploys", "production", "--output", "json"],
        vec!["deploy", "show", id.as_str(), "--output", "json"],
        vec!["events", "production"],
        vec!["logs", "production", "api"],
        vec!["alerts", "production"],
        vec!["probes", "production", "--output", "json"],
        vec!["incident", "list"],
    ] {
        let shown = platform.cli(&args);
        scan(&needles, &format!("`windlass {}`", args.join(" ")), shown.all_output().as_bytes());
    }
    // Every notification that left.
    for (what, server) in [("Slack", &slack), ("the webhook", &hook)] {
        let requests = server.requests();
        assert!(!requests.is_empty(), "{what} heard nothing");
        for (_, body) in requests {
            scan(&needles, &format!("a notification to {what}"), &body);
            if what == "Slack" {
                assert!(!String::from_utf8_lossy(&body).contains("<!channel>"), "Slack text is not escaped");
            }
        }
    }
    // Every file Windlass keeps, and their modes.
    platform.kill_server();
    let files = scan_tree(&needles, &platform.state_dir());
    scan(&needles, "the edge's state", &std::fs::read(platform.path().join("edge.json")).unwrap());
    assert!(files > 5 && processes > 5, "scanned {files} files and {processes} processes");
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
