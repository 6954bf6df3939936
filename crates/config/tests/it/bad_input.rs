//! Each kind of bad input: the problem is found, located, explained, and every other problem in
//! the same file is found too.

use insta::assert_snapshot;

use crate::{MINIMAL, parse_text, rendered};

fn problems(text: &str) -> String {
    let parsed = parse_text(text);
    assert!(parsed.has_errors(), "expected errors in:\n{text}");
    rendered(&parsed)
}

#[test]
fn malformed_toml() {
    assert_snapshot!(problems("[project\nname = \"shop\"\n\n[services.api]\nrun = \n"));
}

#[test]
fn unknown_keys_suggest_the_nearest_known_key() {
    assert_snapshot!(problems(&format!(
        "{MINIMAL}instnces = 2\nhelth = {{ path = \"/health\" }}\n\n[servics.web]\nrun = \"web\"\n"
    )));
}

#[test]
fn wrong_types_say_what_was_expected_and_found() {
    assert_snapshot!(problems(&format!(
        "{MINIMAL}instances = \"two\"\nhealth = {{ interval = 5, healthy_after = -1 }}\nstrategy = 3\nroute = {{ path = 7 }}\ndepends_on = \"db\"\n"
    )));
}

#[test]
fn a_service_declared_twice() {
    assert_snapshot!(problems(&format!("{MINIMAL}\n[services.api]\nrun = \"again\"\n")));
}

#[test]
fn dependency_cycles_and_missing_dependencies() {
    let text = r#"
[project]
name = "shop"
[environments.production]
[services.a]
run = "a"
depends_on = ["b"]
[services.b]
run = "b"
depends_on = ["c", "b"]
[services.c]
run = "c"
depends_on = ["a", "databse"]
"#;
    assert_snapshot!(problems(text));
}

#[test]
fn two_services_claiming_one_route() {
    let text = format!(
        "{MINIMAL}route = {{ host = \"shop.localhost\", path = \"/api\" }}\n[services.web]\nrun = \"web\"\nroute = [{{ host = \"shop.localhost\", path = \"/api/\" }}, {{ host = \"bad host!\", path = \"api\" }}]\n"
    );
    assert_snapshot!(problems(&text));
}

#[test]
fn unknown_phases() {
    let text = format!("{MINIMAL}phase = \"backnd\"\n\n[[phases.infrastucture.steps]]\nrun = \"terraform apply\"\n");
    assert_snapshot!(problems(&text));
}

#[test]
fn canary_steps_must_rise_and_stay_within_100() {
    let text = format!(
        "{MINIMAL}strategy = {{ canary = [{{ weight = 50 }}, {{ weight = 20 }}, {{ weight = 150 }}] }}\nanalysis = {{ max_error_rate = \"one percent\", max_p95 = \"200\" }}\n"
    );
    assert_snapshot!(problems(&text));
}

#[test]
fn references_to_undeclared_variables_and_secrets() {
    let text = format!(
        "{MINIMAL}env = {{ DB = \"${{DATABSE_URL}}\", KEY = {{ secret = \"STRIPE_KEY\" }}, PLAIN = {{ secret = \"LOG_LEVEL\" }} }}\n\n[env]\nDATABASE_URL = {{ format = \"url\" }}\nLOG_LEVEL = {{ default = \"info\" }}\n"
    );
    assert_snapshot!(problems(&text));
}

#[test]
fn values_with_units_and_shapes() {
    let text = r#"
[project]
name = "Shop_1"

[environments.production]
deploy_window = "Mon-Fry 08:00-18:00 Europe/Berlin"
approval = "requried"

[services.api]
run = "api"
keep_warm = "10 minutes"
failover = { secondary = ["10.0.0.5"] }

[slo.api]
availability = "99.9"
latency = { p95 = "200ms", p99 = "100ms" }

[slo.ghost]
availability = "99%"

[alerts]
routes = [{ severity = "critcal", to = ["pager"] }]
escalation = [{ after = "15m", notify = ["pager"] }, { after = "5m", notify = ["pager"] }]

[alerts.receivers.pager]
type = "pagerduty"

[edge]
listen = "localhost:80"
max_header_bytes = "64 parsecs"
"#;
    assert_snapshot!(problems(text));
}

#[test]
fn a_config_without_project_or_environments() {
    assert_snapshot!(problems("[services.api]\nrun = \"api\"\n"));
}

#[test]
fn deploy_notifications_go_to_any_declared_receiver() {
    let receivers = r#"
[alerts.receivers.pager]
type = "pagerduty"
routing_key = "R0ut1ngKeyF0rTests0123456789abcd"

[alerts.receivers.mail]
type = "email"
to = ["devops@maily.example"]
"#;
    let accepted = parse_text(&format!("{MINIMAL}\n[pipeline]\nnotify = [\"pager\", \"mail\"]\n{receivers}"));
    assert!(!accepted.has_errors(), "{}", rendered(&accepted));
    let unknown = problems(&format!("{MINIMAL}\n[pipeline]\nnotify = [\"pagr\"]\n{receivers}"));
    assert!(unknown.contains("unknown receiver `pagr`") && unknown.contains("did you mean `pager`?"), "{unknown}");
}

/// A secret in a service's `run` (also an environment's override of it) would be on argv: an
/// error at the reference. A step's unquoted reference is a warning; quoted, single-quoted,
/// assigned or in a migrate command's double quotes, none.
#[test]
fn secrets_in_run_and_unquoted_references_in_commands() {
    let text = r#"
[project]
name = "shop"

[environments.production.services.api]
run = "api-server --token ${TOKEN}"

[env]
TOKEN = { secret = true }
NAME = { default = "x" }

[services.api]
run = "api-server --name ${NAME}"

[database]
url = "sqlite://app.db"
migrate = { command = "tool --db \"${NAME}\"" }

[[phases.backend.steps]]
run = "echo '${NAME}' \"${NAME}\" N=${NAME} ${NAME}"
undo = "echo $(printf %s ${TOKEN})"
"#;
    let parsed = parse_text(text);
    let shown = rendered(&parsed);
    let errors: Vec<_> = parsed.diagnostics.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "{shown}");
    assert!(errors[0].message.contains("secret `TOKEN` is used in `run`"), "{shown}");
    assert_eq!(errors[0].location().unwrap(), "windlass.toml:6:27", "{shown}");
    let warnings: Vec<String> = parsed
        .diagnostics
        .iter()
        .filter(|d| !d.is_error() && d.message.contains("outside double quotes"))
        .map(|d| format!("{} {}", d.location().unwrap(), d.message))
        .collect();
    assert_eq!(
        warnings,
        [
            "windlass.toml:20:45 `${NAME}` is outside double quotes in `phases.backend.steps[0].run`: sh splits its value into words and expands `*` and `?` in it",
            "windlass.toml:21:26 `${TOKEN}` is outside double quotes in `phases.backend.steps[0].undo`: sh splits its value into words and expands `*` and `?` in it",
        ],
        "{shown}"
    );
}

#[test]
fn a_receivers_bad_url_is_named_never_quoted() {
    let secret = "T0SECRET/B0SECRET/xoxPathSecret";
    for (key, url) in [
        ("webhook_url", format!("htps://hooks.slack.com/services/{secret}")),
        ("webhook_url", "https://user:xoxPathSecret@hooks.slack.com/x".to_owned()),
        ("webhook_url", format!("https://hooks.slack.com/services/{secret}${{OOPS")),
        ("url", format!("https:///hooks/{secret}?token={secret}")),
    ] {
        let kind = if key == "url" { "webhook" } else { "slack" };
        let text = format!(
            "[project]\nname = \"shop\"\n\n[environments.production]\n\n[alerts.receivers.ops]\ntype = \"{kind}\"\n{key} = \"{url}\"\n"
        );
        let parsed = crate::parse_text(&text);
        let rendered = crate::rendered(&parsed);
        assert!(parsed.has_errors(), "{url}: {rendered}");
        assert!(rendered.contains(&format!("alerts.receivers.ops.{key}")), "{rendered}");
        assert!(!rendered.contains("SECRET") && !rendered.contains("xoxPathSecret"), "{rendered}");
    }
}

/// A step's command may reference the step's own `env` without declaring it in `[env]` (`sh`
/// reads it from the child's environment); another step's, or an undeclared name, is an error.
#[test]
fn a_step_references_its_own_env_undeclared_but_not_another_steps() {
    let text = r#"
[project]
name = "shop"

[environments.production]

[[phases.backend.steps]]
run = 'touch "${MARKER}"'
undo = 'rm -f "${MARKER}"'
env = { MARKER = "/tmp/marker" }

[[phases.backend.steps]]
run = 'cat "${MARKER}" "${NOWHERE}"'
"#;
    let parsed = parse_text(text);
    let shown = rendered(&parsed);
    let errors: Vec<String> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{} {}", d.location().unwrap(), d.message))
        .collect();
    assert_eq!(
        errors,
        [
            "windlass.toml:13:7 `${MARKER}` refers to a variable not declared in [env]",
            "windlass.toml:13:7 `${NOWHERE}` refers to a variable not declared in [env]",
        ],
        "{shown}"
    );
}

#[test]
fn upstream_connections_per_client_connection_are_range_checked() {
    for bad in ["0", "1025", "-3"] {
        let found = problems(&format!("{MINIMAL}\n[edge]\nmax_upstream_per_connection = {bad}\n"));
        assert!(found.contains("edge.max_upstream_per_connection"), "{found}");
        assert!(found.contains("from 1 to 1024"), "{found}");
    }
    let parsed = parse_text(&format!("{MINIMAL}\n[edge]\nmax_upstream_per_connection = 32\n"));
    assert!(!parsed.has_errors(), "{}", rendered(&parsed));
}

#[test]
fn durations_longer_than_100_years_are_refused_where_they_are_written() {
    // Each of these passed before and overflowed a time sum later (`keep_warm` at deploy time).
    let text = format!(
        "{MINIMAL}keep_warm = \"106751991167d\"\nhealth = {{ interval = \"36501d\" }}\n\n[alerts]\ngroup_wait = \"3000000d\"\n"
    );
    let found = problems(&text);
    for (line, value) in [(9, "106751991167d"), (10, "36501d"), (13, "3000000d")] {
        assert!(
            found.contains(&format!("windlass.toml:{line}:"))
                && found.contains(&format!("`{value}` is too long a duration: the longest Windlass takes is 36500d")),
            "line {line}, {value}:\n{found}"
        );
    }
    // The longest is fine.
    assert!(!parse_text(&format!("{MINIMAL}keep_warm = \"36500d\"\n")).has_errors());
}
