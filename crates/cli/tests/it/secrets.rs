//! `windlass secrets ...` end to end: the real binary, real age keys from `age-keygen`, the
//! real `sops` binary and a real OpenBao dev server.
//!
//! Environment (tests FAIL, never skip, when one is missing):
//! - `WINDLASS_TEST_SOPS`: path of the real sops 3.x binary (run with SOPS_DISABLE_VERSION_CHECK=1);
//! - `WINDLASS_TEST_BAO_ADDR` (such as `http://127.0.0.1:18200`) and `WINDLASS_TEST_BAO_TOKEN`
//!   (its root token) of an OpenBao dev server with KV v2 at `secret/`;
//! - `age-keygen` on PATH.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use windlass_testkit::tools;

use crate::harness::{Run, Windlass};

/// Distinctive values: `+`, `/` and `=` make their URL and base64 forms differ from the plain.
pub(crate) const PASS: &str = "Canary+Pw/7f3a9c1e=Zq";
const TOKEN: &str = "tok-canary-0123456789abcdefXYZ";

/// A real age key pair from `age-keygen`: (keys file, public key).
pub(crate) fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&path)
        .output()
        .expect("age-keygen must be on PATH (apt-get install age)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&path).unwrap();
    let public = text.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().to_owned();
    (path, public)
}

const CONFIG: &str = "[project]\nname = \"shop\"\n\n[environments.production]\n\n[environments.staging]\n";

/// Runs the binary in the test's directory with a clean environment, `envs` and `stdin`.
fn cli(test: &Windlass, envs: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_windlass"));
    command
        .args(args)
        .current_dir(test.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", test.path())
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let output = child.wait_with_output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(run: &Run) {
    assert_eq!(run.code, 0, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
}

/// A project with two recipients and the canary secrets set: (test, key a, key b).
fn project() -> (Windlass, PathBuf, PathBuf) {
    let test = Windlass::new();
    test.write("windlass.toml", CONFIG);
    let (key_a, pub_a) = keygen(test.path(), "a.txt");
    let (key_b, pub_b) = keygen(test.path(), "b.txt");
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    ok(&cli(&test, &a, &["secrets", "init", "production", "--recipient", &pub_a, "--recipient", &pub_b], None));
    ok(&cli(&test, &a, &["secrets", "set", "production", "DB_PASSWORD"], Some(&format!("{PASS}\n"))));
    ok(&cli(&test, &a, &["secrets", "set", "production", "API_TOKEN"], Some(TOKEN)));
    (test, key_a, key_b)
}

// --- base64 and URL forms, written here independently of the library's redactor ---

fn b64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every form of `value` that must never appear: plain, URL-encoded, and the base64 characters
/// that depend only on the value, at each of the three alignments, in both alphabets.
pub(crate) fn forbidden(value: &str) -> Vec<String> {
    let mut forms = vec![value.to_owned()];
    let url: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    forms.push(url.clone());
    forms.push(url.to_lowercase());
    for offset in 0..3 {
        let mut bytes = vec![b'x'; offset];
        bytes.extend_from_slice(value.as_bytes());
        let start = (offset * 8).div_ceil(6);
        let end = bytes.len() * 8 / 6;
        for alphabet in [STD, URL] {
            forms.push(b64(&bytes, alphabet)[start..end].to_owned());
        }
    }
    forms
}

fn assert_no_canary(what: &str, text: &str) {
    for secret in [PASS, TOKEN] {
        for form in forbidden(secret) {
            assert!(!text.contains(&form), "{what} leaks `{form}` (a form of a secret):\n{text}");
        }
    }
}

#[test]
fn canary_never_leaks_from_exec_or_error_paths() {
    let (test, key_a, _) = project();
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    // The forms the check looks for really are produced by the commands below.
    let printer = "env; \
        echo \"Authorization: Basic $(printf 'user:%s' \"$DB_PASSWORD\" | base64 -w0)\"; \
        echo \"b64 $(printf '%s' \"$DB_PASSWORD\" | base64 -w0) $(printf 'a%s' \"$API_TOKEN\" | base64 -w0)\"; \
        echo \"b64url $(printf 'ab%s' \"$DB_PASSWORD\" | base64 -w0 | tr '+/' '-_')\"; \
        echo \"url postgres://app:$(printf '%s' \"$DB_PASSWORD\" | sed 's/+/%2B/g; s#/#%2F#g; s/=/%3D/g')@db/app\"; \
        printf '%s' \"$DB_PASSWORD\" | head -c 7; sleep 0.3; printf '%s\\n' \"$DB_PASSWORD\" | tail -c +8; \
        echo \"to stderr $API_TOKEN\" >&2";
    // Without the redactor the printer does leak: plain, URL and base64 forms at all alignments.
    let raw =
        Command::new("sh").args(["-c", printer]).env("DB_PASSWORD", PASS).env("API_TOKEN", TOKEN).output().unwrap();
    let raw = format!("{}{}", String::from_utf8_lossy(&raw.stdout), String::from_utf8_lossy(&raw.stderr));
    let leaked = forbidden(PASS).into_iter().filter(|f| raw.contains(f)).count();
    assert!(leaked >= 5, "the printer should produce many forms of the secret, got {leaked}:\n{raw}");
    let run = cli(&test, &a, &["secrets", "exec", "production", "--", "sh", "-c", printer], None);
    ok(&run);
    assert!(run.stdout.contains("DB_PASSWORD=[REDACTED:DB_PASSWORD]"), "{}", run.stdout);
    assert!(run.stdout.contains("Authorization: Basic "), "{}", run.stdout);
    assert!(run.stderr.contains("to stderr [REDACTED:API_TOKEN]"), "{}", run.stderr);
    assert_no_canary("exec output", &run.all_output());

    // A failing command: its error output is redacted too, and the exit code says it failed.
    let failing = "echo \"cannot connect with password $DB_PASSWORD\" >&2; exit 3";
    let run = cli(&test, &a, &["secrets", "exec", "production", "--", "sh", "-c", failing], None);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect with password [REDACTED:DB_PASSWORD]"), "{}", run.stderr);
    assert_no_canary("failing exec", &run.all_output());

    // Error paths, each given a secret somewhere it could echo it.
    test.write("broken.env", &format!("GOOD_ONE=fine-value-123\n{PASS} = {TOKEN}\nX=\"{PASS}\n"));
    let (other, _) = keygen(test.path(), "c.txt");
    let outputs = [
        cli(&test, &a, &["secrets", "set", "production", "bad-name"], Some(PASS)),
        cli(&test, &a, &["secrets", "set", "production", ""], Some(PASS)),
        cli(&test, &a, &["secrets", "set", "nowhere", "X_PASSWORD"], Some(PASS)),
        cli(&test, &a, &["secrets", "get", "production", "MISSING"], None),
        cli(&test, &a, &["secrets", "import", "production", "broken.env"], None),
        cli(&test, &[("WINDLASS_AGE_KEY_FILE", other.to_str().unwrap())], &["secrets", "list", "production"], None),
        cli(&test, &[], &["secrets", "get", "production", "DB_PASSWORD"], None),
    ];
    for run in &outputs {
        assert_ne!(run.code, 0, "{}", run.all_output());
        assert!(!run.stderr.is_empty());
        assert_no_canary("an error path", &run.all_output());
    }
    let list = cli(&test, &a, &["secrets", "list", "production"], None);
    ok(&list);
    assert!(list.stdout.contains("API_TOKEN") && list.stdout.contains("DB_PASSWORD"), "{}", list.stdout);
    assert_no_canary("list", &list.all_output());
    // The file itself holds no form of the values.
    assert_no_canary("the encrypted file", &test.read("secrets/production.enc.env"));
    // And `get` does print the value: the one command that does.
    let get = cli(&test, &a, &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(get.stdout, format!("{PASS}\n"));
}

#[test]
fn round_trip_with_two_recipients_and_sops_reads_it() {
    let (test, key_a, key_b) = project();
    for key in [&key_a, &key_b] {
        let run = cli(
            &test,
            &[("SOPS_AGE_KEY_FILE", key.to_str().unwrap())],
            &["secrets", "get", "production", "API_TOKEN"],
            None,
        );
        ok(&run);
        assert_eq!(run.stdout, format!("{TOKEN}\n"));
        let out = Command::new(tools::sops())
            .args(["decrypt", "secrets/production.enc.env"])
            .current_dir(test.path())
            .env("SOPS_DISABLE_VERSION_CHECK", "1")
            .env("SOPS_AGE_KEY_FILE", key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("DB_PASSWORD={PASS}\nAPI_TOKEN={TOKEN}\n"));
    }
    // --identity wins over the environment variables.
    let run = cli(
        &test,
        &[("WINDLASS_AGE_KEY_FILE", "/nonexistent")],
        &["secrets", "get", "production", "DB_PASSWORD", "--identity", key_b.to_str().unwrap()],
        None,
    );
    ok(&run);
    // Changing one value keeps the other's ciphertext, so a diff shows what changed.
    let before = test.read("secrets/production.enc.env");
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    ok(&cli(&test, &a, &["secrets", "set", "production", "API_TOKEN"], Some("tok-another-value-987654")));
    let after = test.read("secrets/production.enc.env");
    let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).unwrap().to_owned();
    assert_eq!(line(&before, "DB_PASSWORD="), line(&after, "DB_PASSWORD="));
    assert_ne!(line(&before, "API_TOKEN="), line(&after, "API_TOKEN="));
    // Another environment in JSON, also read by sops.
    ok(&cli(&test, &a, &["secrets", "init", "staging", "--format", "json"], None));
    ok(&cli(&test, &a, &["secrets", "set", "staging", "API_TOKEN"], Some("staging-token-123456")));
    let out = Command::new(tools::sops())
        .args(["decrypt", "secrets/staging.enc.json"])
        .current_dir(test.path())
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", &key_a)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"API_TOKEN\": \"staging-token-123456\""));
    ok(&cli(&test, &a, &["secrets", "rm", "production", "API_TOKEN"], None));
    let run = cli(&test, &a, &["secrets", "get", "production", "API_TOKEN"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no secret named API_TOKEN"), "{}", run.stderr);
}

#[test]
fn a_file_sops_wrote_in_yaml_is_read_and_changed() {
    let test = Windlass::new();
    test.write("windlass.toml", CONFIG);
    let (key, public) = keygen(test.path(), "k.txt");
    std::fs::create_dir_all(test.path().join("secrets")).unwrap();
    test.write("plain.yaml", "DATABASE_URL: postgres://app:yaml-secret-42@db/app\nPORT: 5432\n");
    let out = Command::new(tools::sops())
        .args(["encrypt", "--age", &public, "--output", "secrets/staging.enc.yaml", "plain.yaml"])
        .current_dir(test.path())
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let k = [("SOPS_AGE_KEY_FILE", key.to_str().unwrap())];
    let run = cli(&test, &k, &["secrets", "get", "staging", "DATABASE_URL"], None);
    ok(&run);
    assert_eq!(run.stdout, "postgres://app:yaml-secret-42@db/app\n");
    ok(&cli(&test, &k, &["secrets", "set", "staging", "NEW_KEY"], Some("a-new-secret-value")));
    let out = Command::new(tools::sops())
        .args(["decrypt", "secrets/staging.enc.yaml"])
        .current_dir(test.path())
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", &key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(plain.contains("NEW_KEY: a-new-secret-value") && plain.contains("PORT: 5432"), "{plain}");
}

#[test]
fn rotate_after_removing_a_recipient_locks_them_out() {
    let (test, key_a, key_b) = project();
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    let b = [("WINDLASS_AGE_KEY_FILE", key_b.to_str().unwrap())];
    let pub_b = std::fs::read_to_string(&key_b).unwrap();
    let pub_b = pub_b.lines().find_map(|l| l.strip_prefix("# public key: ")).unwrap().to_owned();
    let run = cli(&test, &a, &["secrets", "recipients", "rm", "production", &pub_b], None);
    ok(&run);
    assert!(run.stderr.contains("rotate"), "{}", run.stderr);
    let before = test.read("secrets/production.enc.env");
    let run = cli(&test, &a, &["secrets", "rotate", "production"], None);
    ok(&run);
    let after = test.read("secrets/production.enc.env");
    let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).unwrap().to_owned();
    assert_ne!(line(&before, "DB_PASSWORD="), line(&after, "DB_PASSWORD="), "rotate re-encrypts every value");
    let run = cli(&test, &b, &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("secrets/production.enc.env") && run.stderr.contains("recipients add"),
        "{}",
        run.stderr
    );
    assert_no_canary("a locked-out read", &run.all_output());
    let run = cli(&test, &a, &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(run.stdout, format!("{PASS}\n"));
    // Adding b back works, and b reads again.
    ok(&cli(&test, &a, &["secrets", "recipients", "add", "production", &pub_b], None));
    ok(&cli(&test, &b, &["secrets", "get", "production", "DB_PASSWORD"], None));
}

#[test]
fn tampered_and_truncated_files_are_refused() {
    let (test, key_a, _) = project();
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    let good = test.read("secrets/production.enc.env");
    let line = good.lines().find(|l| l.starts_with("API_TOKEN=")).unwrap();
    let at = line.find("data:").unwrap() + 6;
    let mut bytes = line.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'Q' { b'R' } else { b'Q' };
    test.write("secrets/production.enc.env", &good.replace(line, &String::from_utf8(bytes).unwrap()));
    let run = cli(&test, &a, &["secrets", "exec", "production", "--", "true"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("production.enc.env") && run.stderr.contains("API_TOKEN"), "{}", run.stderr);
    assert!(run.stderr.contains("restore it from version control"), "{}", run.stderr);
    test.write("secrets/production.enc.env", &good[..good.len() / 2]);
    let run = cli(&test, &a, &["secrets", "list", "production"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("production.enc.env"), "{}", run.stderr);
    // A set on a damaged file writes nothing.
    let run = cli(&test, &a, &["secrets", "set", "production", "OTHER"], Some("another-long-value"));
    assert_eq!(run.code, 1);
    assert_eq!(test.read("secrets/production.enc.env"), &good[..good.len() / 2]);
}

#[test]
fn a_crash_before_the_rename_leaves_the_old_file_intact() {
    let (test, key_a, _) = project();
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    let before = test.read("secrets/production.enc.env");
    let run = cli(
        &test,
        &[a[0], ("WINDLASS_FAILPOINTS", "secrets.before_rename=abort")],
        &["secrets", "set", "production", "DB_PASSWORD"],
        Some("a-new-value-that-never-lands"),
    );
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("failpoint secrets.before_rename"), "{}", run.stderr);
    assert_eq!(test.read("secrets/production.enc.env"), before);
    let get = cli(&test, &a, &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(get.stdout, format!("{PASS}\n"));
    let temporaries = || {
        std::fs::read_dir(test.path().join("secrets"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".production.enc.env.tmp-"))
            .count()
    };
    assert_eq!(temporaries(), 1, "the crashed write left its temporary file");
    // The next write succeeds, and clears the crashed write's temporary file.
    ok(&cli(&test, &a, &["secrets", "set", "production", "DB_PASSWORD"], Some("a-new-value-that-lands")));
    assert_eq!(temporaries(), 0);
    let get = cli(&test, &a, &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(get.stdout, "a-new-value-that-lands\n");
}

#[test]
fn import_refuses_short_values_unless_allowed_and_edit_changes_values() {
    let (test, key_a, _) = project();
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    test.write("plain.env", "# from the old host\nSMTP_PASSWORD='smtp pass word 1'\nexport SHORT=abc\n");
    let before = test.read("secrets/production.enc.env");
    let run = cli(&test, &a, &["secrets", "import", "production", "plain.env"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("SHORT") && run.stderr.contains("--allow-short"), "{}", run.stderr);
    assert_eq!(test.read("secrets/production.enc.env"), before, "nothing is written when one value is refused");
    ok(&cli(&test, &a, &["secrets", "import", "production", "plain.env", "--allow-short"], None));
    let run = cli(&test, &a, &["secrets", "get", "production", "SMTP_PASSWORD"], None);
    assert_eq!(run.stdout, "smtp pass word 1\n");

    // `edit` with an "editor" that changes one value and deletes another.
    let editor = "sed -i -e s/smtp.pass.word.1/smtp-pass-word-2/ -e /^SHORT=/d";
    let run = cli(&test, &[a[0], ("EDITOR", editor)], &["secrets", "edit", "production"], None);
    ok(&run);
    let run = cli(&test, &a, &["secrets", "get", "production", "SMTP_PASSWORD"], None);
    assert_eq!(run.stdout, "smtp-pass-word-2\n");
    assert_eq!(cli(&test, &a, &["secrets", "get", "production", "SHORT"], None).code, 1);
    let run = cli(&test, &a, &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(run.stdout, format!("{PASS}\n"));
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&format!("windlass-edit-{}", std::process::id())))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn usage_errors_name_what_is_wrong() {
    let (test, key_a, _) = project();
    let a = [("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())];
    let run = cli(&test, &a, &["secrets", "list", "qa"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no environment `qa`") && run.stderr.contains("production"), "{}", run.stderr);
    let run = cli(&test, &a, &["secrets", "set", "production", "9LIVES"], Some("long-enough-value"));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("invalid secret name"), "{}", run.stderr);
    let run = cli(&test, &a, &["secrets", "list", "staging"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("secrets init"), "{}", run.stderr);
    let run = cli(&test, &a, &["secrets", "init", "production"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    let run = cli(&test, &[], &["secrets", "list", "production"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("WINDLASS_AGE_KEY_FILE"), "{}", run.stderr);
    let run = cli(&test, &[("SOPS_AGE_KEY_FILE", "/nonexistent/keys.txt")], &["secrets", "list", "production"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("/nonexistent/keys.txt (from SOPS_AGE_KEY_FILE)"), "{}", run.stderr);
    // A keys file other users can read (or write) is refused, as ssh refuses such a private key.
    use std::os::unix::fs::PermissionsExt as _;
    for loose in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&key_a, std::fs::Permissions::from_mode(loose)).unwrap();
        let run = cli(&test, &a, &["secrets", "get", "production", "DB_PASSWORD"], None);
        assert_eq!(run.code, 2, "mode {loose:o}: {}", run.stderr);
        assert!(
            run.stderr.contains(&format!("{} is accessible by other users (mode {loose:o})", key_a.display()))
                && run.stderr.contains(&format!("chmod 600 {}", key_a.display())),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
    std::fs::set_permissions(&key_a, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&cli(&test, &a, &["secrets", "get", "production", "DB_PASSWORD"], None));
}

#[test]
fn openbao_backend_from_the_cli() {
    let test = Windlass::new();
    let prefix = tools::unique("wcli-cli");
    test.write(
        "windlass.toml",
        &format!(
            "[project]\nname = \"shop\"\n\n[environments.production]\n\n[secrets]\nbackend = \"openbao\"\n\
             address = \"{}\"\nprefix = \"{prefix}\"\n",
            tools::bao_addr()
        ),
    );
    let token = tools::bao_token();
    let t = [("BAO_TOKEN", token.as_str())];
    ok(&cli(&test, &t, &["secrets", "set", "production", "DB_PASSWORD"], Some(PASS)));
    let run = cli(&test, &t, &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(run.stdout, format!("{PASS}\n"));
    let run = cli(&test, &t, &["secrets", "list", "production"], None);
    ok(&run);
    assert!(run.stdout.contains("DB_PASSWORD") && run.stdout.contains("version 1"), "{}", run.stdout);
    let run = cli(&test, &t, &["secrets", "exec", "production", "--", "sh", "-c", "echo pw=$DB_PASSWORD"], None);
    assert_eq!(run.stdout, "pw=[REDACTED:DB_PASSWORD]\n");
    let run = cli(&test, &[("BAO_TOKEN", "not-a-real-token")], &["secrets", "get", "production", "DB_PASSWORD"], None);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("permission denied") && run.stderr.contains(&prefix), "{}", run.stderr);
    let run = cli(&test, &[], &["secrets", "list", "production"], None);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("BAO_TOKEN"), "{}", run.stderr);
    assert_no_canary("OpenBao errors", &run.all_output());
}

/// `secrets edit` whatever ends it: the plaintext never stays in /dev/shm. The "editor" is a
/// script that records its pid and the file it was given, then blocks until signalled.
#[test]
fn an_edit_ended_by_a_signal_or_kill_9_leaves_no_plaintext_behind() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::ExitStatusExt as _;
    let (test, key_a, _) = project();
    let before = test.read("secrets/production.enc.env");
    let editor = test.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\necho \"$$ $1\" > \"$MARKER.tmp\"\nmv \"$MARKER.tmp\" \"$MARKER\"\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kill = |pid: u32, signal: i32| {
        // SAFETY: kill(2) with plain integers, on a process this test started.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid as i32, signal);
        }
    };
    for (signal, name) in
        [(libc::SIGINT, "INT"), (libc::SIGTERM, "TERM"), (libc::SIGHUP, "HUP"), (libc::SIGKILL, "KILL")]
    {
        let marker = test.path().join(format!("editing-{name}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_windlass"))
            .args(["secrets", "edit", "production"])
            .current_dir(test.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", test.path())
            .env("WINDLASS_AGE_KEY_FILE", &key_a)
            .env("EDITOR", &editor)
            .env("MARKER", &marker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !marker.exists() {
            assert!(std::time::Instant::now() < deadline, "the editor never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let recorded = std::fs::read_to_string(&marker).unwrap();
        let (editor_pid, plaintext) = recorded.trim().split_once(' ').unwrap();
        let editor_pid: u32 = editor_pid.parse().unwrap();
        let plaintext = Path::new(plaintext).to_owned();
        let session = plaintext.parent().unwrap().to_owned();
        assert!(
            session.starts_with("/dev/shm")
                && session
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("windlass-edit-{}-", child.id())),
            "{}",
            session.display()
        );
        assert!(std::fs::read_to_string(&plaintext).unwrap().contains(PASS), "the editor sees the values");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&session), mode(&plaintext)), (0o700, 0o600), "{name}");

        kill(child.id(), signal);
        let status = child.wait().unwrap();
        if signal == libc::SIGKILL {
            // The orphaned editor holds the stderr pipe open.
            kill(editor_pid, libc::SIGKILL);
        }
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        match signal {
            // SIGINT goes to the editor, which it ends: a failed edit, nothing changed.
            libc::SIGINT => {
                assert_eq!(status.code(), Some(1), "{stderr}");
                assert!(stderr.contains("failed") && stderr.contains("nothing was changed"), "{stderr}");
            }
            libc::SIGTERM | libc::SIGHUP => {
                assert_eq!(status.code(), Some(128 + signal), "{stderr}");
                assert!(stderr.contains(&format!("SIG{name} while editing")), "{stderr}");
            }
            _ => {
                // kill -9 cannot be caught: the plaintext is there until the next `secrets` command.
                assert_eq!(status.signal(), Some(libc::SIGKILL));
                assert!(plaintext.exists());
                let run = cli(
                    &test,
                    &[("WINDLASS_AGE_KEY_FILE", key_a.to_str().unwrap())],
                    &["secrets", "list", "production"],
                    None,
                );
                ok(&run);
                assert!(
                    run.stderr.contains(&format!("removed {}", session.display()))
                        && run.stderr.contains("interrupted"),
                    "{}",
                    run.stderr
                );
            }
        }
        assert!(!session.exists(), "{name}: {} is left behind", session.display());
        assert!(!stderr.contains(PASS));
    }
    assert_eq!(test.read("secrets/production.enc.env"), before, "nothing was saved");
}
