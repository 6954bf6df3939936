//! Release control around a deploy: deploy windows, approvals, promotion between environments
//! and undo steps, through the real server and edge.

use windlass_testkit::workspace_bin;

use crate::platform::{Platform, body_json, config};

fn demo() -> String {
    workspace_bin("windlass-demo").display().to_string()
}

/// A weekday name `days` days from today (UTC), for windows that are certainly closed today.
fn weekday_in(days: i64) -> &'static str {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).weekday().to_monday_zero_offset();
    NAMES[(i64::from(today) + days).rem_euclid(7) as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_outside_the_window_is_refused_with_the_next_opening_unless_overridden_with_a_reason() {
    // Open only the day after tomorrow: closed all of today, whatever the hour.
    let window = format!("{} 00:00-23:59 UTC", weekday_in(2));
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", "")
        .replace("[environments.production]\n", &format!("[environments.production]\ndeploy_window = \"{window}\"\n"));
    let platform = Platform::start(&text);

    let run = platform.cli(&["deploy", "production"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&format!("accepts deploys only {window} and is closed now")), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("it opens next at {} ", weekday_in(2))), "{}", run.stderr);
    assert!(run.stderr.contains("--override-window --reason"), "{}", run.stderr);
    assert!(platform.status()["services"].as_object().is_none_or(|s| s.is_empty()), "nothing started");

    let run = platform.cli(&["deploy", "production", "--override-window"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--override-window needs --reason"), "{}", run.stderr);

    let id = platform.deploy(&["--override-window", "--reason", "security fix CVE-2026-1234"]);
    let shown = platform.json(&["deploy", "show", &id]);
    assert_eq!(shown["deploy"]["reason"], "security fix CVE-2026-1234 [deploy window overridden]");
    assert_eq!(body_json(&platform.get("api.shop.localhost", "/version").await)["version"], "v1");
}
