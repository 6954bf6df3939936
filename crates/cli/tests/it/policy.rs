//! The pipeline's rules for people, through the real server and edge: a rollback to a build that
//! never passed approval in the environment asks for one, rollbacks respect deploy windows,
//! the operator's emergency path skips both (audited, announced), and `scale` checks its
//! environment like every other route.

use crate::platform::{Platform, body_json, config, demo};

/// `method path` on the platform's API with `token`.
async fn api(platform: &Platform, token: &str, method: &str, path: &str, body: &str) -> windlass_testkit::http::Reply {
    let server: std::net::SocketAddr = platform.server_url.trim_start_matches("http://").parse().unwrap();
    let authorization = format!("Bearer {token}");
    let headers = [("authorization", authorization.as_str()), ("content-type", "application/json")];
    windlass_testkit::http::request(method, server, &format!("/api/v1{path}"), &headers, body).await.unwrap()
}

async fn version(platform: &Platform) -> serde_json::Value {
    body_json(&platform.get("api.shop.localhost", "/version").await)["version"].clone()
}

/// The id in `rollback <id> started`.
fn rollback_id(run: &crate::harness::Run) -> String {
    run.stdout
        .lines()
        .find_map(|l| l.strip_prefix("rollback ").and_then(|r| r.strip_suffix(" started")))
        .unwrap_or_else(|| panic!("no rollback id in:\n{}{}", run.stdout, run.stderr))
        .to_owned()
}

fn with_approval(text: &str) -> String {
    text.replace("[environments.production]\n", "[environments.production]\napproval = \"required\"\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_to_a_build_that_never_passed_approval_asks_for_one_and_one_that_did_goes_at_once() {
    // v1 goes out while production needs no approval: it never passes approval there.
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    let bob = platform.add_user("bob");
    let unapproved = platform.deploy(&[]);
    // Then production needs approval, and bob approves v2.
    platform.rewrite_config(&with_approval(&config(&demo(), r#"VERSION = "v2""#, "1m", "")));
    let run = platform.cli(&["deploy", "production", "--detach"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let run = platform.cli_as(&bob, &["approve", "production"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let approved = crate::platform::deploy_id(&run);
    assert_eq!(version(&platform).await, "v2");

    // Back to v1: the same binary as v2, but a config that never passed approval here.
    let body = format!(r#"{{"to":"{unapproved}","reason":"v2 is slow"}}"#);
    let reply = api(&platform, &platform.token, "POST", "/environments/production/rollback", &body).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let pending = body_json(&reply);
    assert_eq!(pending["approval"]["status"], "pending", "{pending:#}");
    assert_eq!(pending["approval"]["rollback"]["to"], unapproved.as_str(), "{pending:#}");
    assert_eq!(pending["approval"]["requested_by"], "alice");
    let message = pending["message"].as_str().unwrap();
    assert!(message.contains(&format!("to roll back to {unapproved} is waiting")), "{message}");
    assert_eq!(version(&platform).await, "v2", "nothing rolled back before the approval");
    // The requester cannot approve their own rollback where someone else must.
    let run = platform.cli(&["approve", "production"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("needs approval by someone other than the requester (alice)"), "{}", run.stderr);
    let run = platform.cli(&["rollback", "production", &unapproved, "--approve"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("needs approval by someone other than the requester (alice)"), "{}", run.stderr);
    let run = platform.cli(&["rollback", "production", &unapproved]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("awaits approval"), "one request at a time: {}", run.stderr);

    let run = platform.cli_as(&bob, &["approve", "production", "--reason", "ok"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let first_rollback = crate::platform::deploy_id(&run);
    assert_eq!(version(&platform).await, "v1");
    let shown = platform.json(&["deploy", "show", &first_rollback]);
    assert_eq!(shown["deploy"]["status"], "succeeded", "{shown:#}");
    assert_eq!(shown["deploy"]["actor"], "alice", "the requester's rollback");
    assert_eq!(
        shown["deploy"]["reason"],
        format!("rollback to {unapproved}: v2 is slow (approved by bob: ok)").as_str(),
        "{shown:#}"
    );
    assert_eq!(shown["deploy"]["artifacts"]["approved_by"], "bob", "{shown:#}");

    // v2 was approved here: rolling back to it needs nobody.
    let run = platform.cli(&["rollback", "production", &approved]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("needs approval"), "{}", run.stderr);
    assert_eq!(version(&platform).await, "v2");
    // And v1 has passed approval now (the approved rollback ran its config and builds).
    let run = platform.cli(&["rollback", "production", &unapproved]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(version(&platform).await, "v1");
    let again = rollback_id(&run);
    let shown = platform.json(&["deploy", "show", &again]);
    assert!(shown["deploy"]["artifacts"]["approved_by"].is_null(), "not approved itself: {shown:#}");
}

/// A weekday name `days` days from today (UTC), for windows that are certainly closed today.
fn weekday_in(days: i64) -> &'static str {
    const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).weekday().to_monday_zero_offset();
    NAMES[(i64::from(today) + days).rem_euclid(7) as usize]
}

#[tokio::test(flavor = "multi_thread")]
async fn rollbacks_keep_to_deploy_windows_and_an_emergency_skips_them_and_approval_audited_and_announced() {
    use windlass_testkit::receiver::{Answer, serve};
    let hook = serve(vec![Answer::Status(200, &[])], None).await;
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    let first = platform.deploy(&[]);
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v2""#, "1m", ""));
    let second = platform.deploy(&[]);

    // Open only the day after tomorrow: closed all of today, whatever the hour.
    let window = format!("{} 00:00-23:59 UTC", weekday_in(2));
    let receiver = format!("\n[alerts.receivers.ops]\ntype = \"webhook\"\nurl = \"{}\"\n", hook.url("http", "/hook"));
    let closed = config(&demo(), r#"VERSION = "v2""#, "1m", &receiver)
        .replace("[environments.production]\n", &format!("[environments.production]\ndeploy_window = \"{window}\"\n"))
        .replace("[pipeline]\n", "[pipeline]\nnotify = [\"ops\"]\n");
    platform.rewrite_config(&closed);
    let run = platform.cli(&["rollback", "production", &first]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(&format!("accepts deploys only {window} and is closed now")), "{}", run.stderr);
    assert!(run.stderr.contains("--override-window --reason"), "{}", run.stderr);
    let run = platform.cli(&["rollback", "production", &first, "--override-window"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--override-window needs --reason"), "{}", run.stderr);
    assert_eq!(version(&platform).await, "v2", "nothing rolled back");

    let run = platform.cli(&["rollback", "production", &first, "--override-window", "--reason", "v2 corrupts carts"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let overridden = rollback_id(&run);
    assert_eq!(version(&platform).await, "v1");
    let shown = platform.json(&["deploy", "show", &overridden]);
    assert_eq!(
        shown["deploy"]["reason"],
        format!("rollback to {first} [deploy window overridden]: v2 corrupts carts").as_str()
    );
    let events = platform.json(&["events", "production", "--kind", "deploy.window"]);
    assert_eq!(events["events"][0]["subject"], overridden.as_str(), "{events:#}");

    // Production now needs approval too, and `second` never passed it: an emergency skips both,
    // but only with a reason.
    platform.rewrite_config(&with_approval(&closed));
    let body = format!(r#"{{"to":"{second}","emergency":true}}"#);
    let reply = api(&platform, &platform.token, "POST", "/environments/production/rollback", &body).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let error = body_json(&reply)["error"].as_str().unwrap().to_owned();
    assert!(error.starts_with("--emergency needs --reason"), "{error}");
    let body = format!(r#"{{"to":"{second}","emergency":true,"reason":"  "}}"#);
    let reply = api(&platform, &platform.token, "POST", "/environments/production/rollback", &body).await;
    assert_eq!(reply.status, 400, "a blank reason is none: {}", reply.body);
    let run = platform.cli(&["rollback", "production", &second, "--emergency"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("--emergency needs --reason"), "{}", run.stderr);
    // Without the emergency, the same rollback is a request for approval.
    let body = format!(r#"{{"to":"{second}","override_window":true,"reason":"try"}}"#);
    let reply = api(&platform, &platform.token, "POST", "/environments/production/rollback", &body).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    assert_eq!(body_json(&reply)["approval"]["status"], "pending", "{}", reply.body);
    let run = platform.cli(&["reject", "production"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(version(&platform).await, "v1", "nothing ran");

    let run = platform.cli(&["rollback", "production", &second, "--emergency", "--reason", "v1 leaks memory"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let emergency = rollback_id(&run);
    assert_eq!(version(&platform).await, "v2");
    let shown = platform.json(&["deploy", "show", &emergency]);
    assert_eq!(shown["deploy"]["reason"], format!("rollback to {second} [emergency]: v1 leaks memory").as_str());
    assert!(shown["deploy"]["artifacts"]["approved_by"].is_null(), "an emergency is no approval: {shown:#}");
    let events = platform.json(&["events", "production", "--kind", "rollback.emergency"]);
    let audited = &events["events"][0];
    assert_eq!((audited["actor"].as_str(), audited["subject"].as_str()), (Some("alice"), Some(emergency.as_str())));
    let message = audited["message"].as_str().unwrap();
    assert!(message.contains("emergency rollback") && message.ends_with("v1 leaks memory"), "{message}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let announced = loop {
        let bodies: Vec<serde_json::Value> =
            hook.requests().iter().map(|(_, body)| serde_json::from_slice(body).unwrap()).collect();
        if let Some(found) = bodies.into_iter().find(|m| m["event"] == "rollback.emergency") {
            break found;
        }
        assert!(std::time::Instant::now() < deadline, "the emergency was never announced: {:?}", hook.requests());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(announced["deploy_id"], emergency.as_str(), "{announced:#}");
    assert_eq!(announced["environment"], "production", "{announced:#}");
    let text = announced["text"].as_str().unwrap();
    assert!(text.contains(&format!("to {second} by alice")) && text.ends_with("v1 leaks memory"), "{text}");
}

/// A server manages the environments it was started with (`--env`): `scale` of another, on a
/// shared store, is refused before anything is touched, and an undeclared one is 404.
#[tokio::test(flavor = "multi_thread")]
async fn scale_answers_an_unknown_or_unmanaged_environment_like_every_other_route() {
    let database = windlass_testkit::postgres::TestDatabase::create().await;
    let text = config(&demo(), r#"VERSION = "v1""#, "1m", "")
        .replace("[environments.production]\n", "[environments.staging]\n\n[environments.production]\n");
    let production = Platform::start_shared(&text, "production", &database.url, "alice");
    let scale = |environment: &str| format!("/environments/{environment}/services/api/scale");
    let reply = api(&production, &production.token, "PUT", &scale("nowhere"), r#"{"instances":3}"#).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let error = body_json(&reply)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("`nowhere`"), "{error}");
    let reply = api(&production, &production.token, "PUT", &scale("staging"), r#"{"instances":3}"#).await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    let error = body_json(&reply)["error"].as_str().unwrap().to_owned();
    assert!(error.contains("this server manages production, not `staging`"), "{error}");
    let run = production.cli(&["scale", "staging", "api", "3"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("not `staging`"), "{}", run.stderr);
    assert_eq!(production.alive_instances(), 0, "nothing started");
    // Nothing but the record of the refused calls themselves.
    let events = production.json(&["events", "staging"]);
    let events = events["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["audit"]["outcome"] == "failed"), "only refusals recorded: {events:#?}");
}

/// Alice deploys and approves; Bob approves; CI (a robot) deploys. None is an operator.
const PEOPLE: &str = r#"
[access.people.alice]
[access.people.bob]
[access.robots.ci]

[[access.grants]]
people = ["alice"]
role = "deployer"
environments = ["production"]

[[access.grants]]
people = ["alice", "bob"]
role = "approver"
environments = ["production"]

[[access.grants]]
robots = ["ci"]
role = "deployer"
environments = ["production"]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn people_not_tokens_decide_robots_never_do_and_the_dangerous_switches_need_their_permission() {
    let platform = Platform::start(&with_approval(&config(&demo(), r#"VERSION = "v1""#, "1m", PEOPLE)));
    let laptop = platform.token_for(&["--for", "alice", "--name", "alice-laptop"]);
    let desktop = platform.token_for(&["--for", "alice", "--name", "alice-desktop"]);
    let bob = platform.token_for(&["--for", "bob"]);
    let ci = platform.token_for(&["--robot", "ci"]);

    let run = platform.cli_as(&laptop, &["deploy", "production", "--detach", "--reason", "v1"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("needs approval"), "{}", run.stderr);
    // Her second token is still Alice: she holds `approve`, but not on her own deploy.
    let run = platform.cli_as(&desktop, &["approve", "production"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("someone other than the requester (alice)"), "{}", run.stderr);
    // A robot never decides, nor approves its own.
    for args in [vec!["approve", "production"], vec!["reject", "production"]] {
        let run = platform.cli_as(&ci, &args);
        assert_ne!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains("robots never approve"), "{args:?}: {}", run.stderr);
    }
    let run = platform.cli_as(&ci, &["deploy", "production", "--approve"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("`ci` is a robot, and robots never approve"), "{}", run.stderr);
    let pending = platform.json(&["deploys", "production"]);
    assert!(pending["deploys"].as_array().unwrap().is_empty(), "nothing ran: {pending:#}");

    let run = platform.cli_as(&bob, &["approve", "production"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let approved = crate::platform::deploy_id(&run);
    let shown = platform.json(&["deploy", "show", &approved]);
    assert_eq!(shown["deploy"]["actor"], "alice", "the person, not the token: {shown:#}");
    assert_eq!(shown["deploy"]["reason"], "v1 (approved by bob)");

    // The dangerous switches need their own permission, which a deployer does not hold.
    for (args, permission) in [
        (vec!["rollback", "production", "--emergency", "--reason", "down"], "emergency"),
        (vec!["rollback", "production", "--override-window", "--reason", "late"], "override-window"),
        (vec!["rollback", "production", "--restore-database"], "restore-database"),
        (vec!["deploy", "production", "--override-window", "--reason", "late"], "override-window"),
    ] {
        let run = platform.cli_as(&laptop, &args);
        assert_ne!(run.code, 0, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(run.stderr.contains(&format!("`{permission}` permission")), "{args:?}: {}", run.stderr);
    }
    let body = r#"{"emergency":true,"reason":"down"}"#;
    let reply = api(&platform, &laptop, "POST", "/environments/production/rollback", body).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert_eq!(body_json(&reply)["permission"], "emergency", "{}", reply.body);
    let deploys = platform.json(&["deploys", "production"]);
    assert_eq!(deploys["deploys"].as_array().unwrap().len(), 1, "nothing more ran: {deploys:#}");
    let approval = platform.json(&["events", "production", "--kind", "deploy.approval_requested"]);
    assert_eq!(approval["events"].as_array().unwrap().len(), 1, "no new request: {approval:#}");
}

/// Under `approval = "anyone"` a requester may approve their own deploy with `--approve`, but
/// only if they hold `approve`: a deployer who is not an approver is refused, and nothing runs.
#[tokio::test(flavor = "multi_thread")]
async fn approving_your_own_deploy_with_approve_needs_the_approve_permission() {
    let people = r#"
[access.people.alice]
[access.people.dave]

[[access.grants]]
people = ["alice", "dave"]
role = "deployer"
environments = ["production"]

[[access.grants]]
people = ["alice"]
role = "approver"
environments = ["production"]
"#;
    let anyone = config(&demo(), r#"VERSION = "v1""#, "1m", people)
        .replace("[environments.production]\n", "[environments.production]\napproval = \"anyone\"\n");
    let platform = Platform::start(&anyone);
    let dave = platform.token_for(&["--for", "dave"]);
    let run = platform.cli_as(&dave, &["deploy", "production", "--approve", "--detach", "--reason", "v1"]);
    assert_ne!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("`approve` permission"), "{}", run.stderr);
    let deploys = platform.json(&["deploys", "production"]);
    assert!(deploys["deploys"].as_array().unwrap().is_empty(), "nothing ran: {deploys:#}");
    // Alice holds both: her own approval goes through and is recorded as hers.
    let alice = platform.token_for(&["--for", "alice"]);
    let run = platform.cli_as(&alice, &["deploy", "production", "--approve", "--detach", "--reason", "v1"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let deploys = platform.json(&["deploys", "production"]);
    assert_eq!(deploys["deploys"].as_array().unwrap().len(), 1, "{deploys:#}");
}
