//! People, robots, roles and tokens against a real server: every route checks its declared
//! permission, each role does what it may and is refused what it may not (403 naming the
//! permission, audited), expired and revoked tokens are refused, and `bearer` reads in any case.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;
use windlass_testkit::http::{Reply, request};

use crate::platform::{Platform, config, demo};

/// The platform's config with a staging environment and people for every role.
const ACCESS: &str = r#"
[environments.staging]

[access.people.vera]
[access.people.dan]
[access.people.amy]
[access.people.otto]
[access.people.nobody]
[access.groups.ops]
members = ["otto"]
[access.robots.ci]

[[access.grants]]
people = ["vera"]
role = "viewer"
environments = ["production"]

[[access.grants]]
people = ["dan"]
role = "deployer"
environments = ["production"]

[[access.grants]]
people = ["amy"]
role = "approver"
environments = ["production"]

[[access.grants]]
groups = ["ops"]
role = "operator"
environments = ["production"]

[[access.grants]]
robots = ["ci"]
role = "deployer"
environments = ["staging", "production"]
"#;

fn start() -> Platform {
    Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ACCESS))
}

fn address(platform: &Platform) -> SocketAddr {
    platform.server_url.trim_start_matches("http://").parse().unwrap()
}

async fn call(platform: &Platform, token: &str, method: &str, path: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    request(method, address(platform), &format!("/api/v1{path}"), &[("authorization", bearer.as_str())], body)
        .await
        .unwrap()
}

fn json(reply: &Reply) -> Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|_| panic!("not JSON: {}", reply.body))
}

/// The router test against a real server: every route of the OpenAPI document, called by a
/// declared person with no grant, is refused 403 naming the permission its declaration gives
/// (a route added without a permission would answer otherwise and fail here).
#[tokio::test(flavor = "multi_thread")]
async fn every_api_route_checks_its_declared_permission() {
    let platform = start();
    let nobody = platform.token_for(&["--for", "nobody"]);
    let document = json(&request("GET", address(&platform), "/api/v1/openapi.json", &[], "").await.unwrap());
    let table = windlass_server::route_table();
    let mut walked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        if path == "/openapi.json" {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{env}", "production")
                .replace("{service}", "api")
                .replace("{id}", "production-20260101-000000");
            let reply = call(&platform, &nobody, &method.to_uppercase(), &concrete, "{}").await;
            assert_eq!(reply.status, 403, "{method} {path}: {}", reply.body);
            let declared = table
                .iter()
                .find(|rule| rule.path == path && rule.method.as_str().eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} has no declared permission"));
            let body = json(&reply);
            assert_eq!(body["permission"], declared.permission.as_str(), "{method} {path}: {body}");
            assert!(body["role"].is_string(), "{body}");
            assert!(reply.headers.get("x-request-id").is_some(), "{method} {path}: no request id");
            walked += 1;
        }
    }
    assert_eq!(walked, table.len(), "the document and the table list the same routes");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_role_may_do_what_it_holds_on_its_scope_and_nothing_else() {
    let platform = start();
    let token = |args: &[&str]| platform.token_for(args);
    let (vera, dan, amy, otto, ci) = (
        token(&["--for", "vera"]),
        token(&["--for", "dan"]),
        token(&["--for", "amy"]),
        token(&["--for", "otto"]),
        token(&["--robot", "ci"]),
    );
    let dry_run = r#"{"dry_run": true}"#;
    let maintenance = r#"{"enabled": false}"#;
    // (who, token, method, path, body, refused with this permission or allowed)
    type Case<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("vera", &vera, "GET", "/environments/production/deploys", "", None),
        ("vera", &vera, "GET", "/status", "", None),
        ("vera", &vera, "GET", "/environments/staging/deploys", "", Some("read")),
        ("vera", &vera, "POST", "/environments/production/deploys", dry_run, Some("deploy")),
        ("vera", &vera, "PUT", "/environments/production/maintenance", maintenance, Some("maintenance")),
        ("dan", &dan, "POST", "/environments/production/deploys", dry_run, None),
        ("dan", &dan, "POST", "/environments/staging/deploys", dry_run, Some("deploy")),
        ("dan", &dan, "POST", "/environments/production/approval", r#"{"approve": true}"#, Some("approve")),
        ("dan", &dan, "PUT", "/environments/production/maintenance", maintenance, Some("maintenance")),
        ("dan", &dan, "DELETE", "/environments/production/lock", r#"{"reason": "x"}"#, Some("break-lock")),
        ("amy", &amy, "POST", "/environments/production/deploys", dry_run, Some("deploy")),
        ("amy", &amy, "POST", "/environments/staging/approval", r#"{"approve": true}"#, Some("approve")),
        ("otto", &otto, "PUT", "/environments/production/maintenance", maintenance, None),
        ("otto", &otto, "POST", "/environments/production/deploys", dry_run, Some("deploy")),
        ("otto", &otto, "PUT", "/environments/production/services/api/scale", r#"{"instances": 1}"#, Some("scale")),
        ("otto", &otto, "POST", "/environments/production/approval", r#"{"approve": true}"#, Some("approve")),
        ("otto", &otto, "PUT", "/environments/staging/maintenance", maintenance, Some("maintenance")),
        // `/silences` names no environment in its path: the handler asks again with the body's.
        // A silence of no environment silences staging too, which otto may not.
        ("otto", &otto, "POST", "/silences", r#"{"for": "1h", "reason": "x", "environment": "production"}"#, None),
        (
            "otto",
            &otto,
            "POST",
            "/silences",
            r#"{"for": "1h", "reason": "x", "environment": "staging"}"#,
            Some("silence"),
        ),
        ("otto", &otto, "POST", "/silences", r#"{"for": "1h", "reason": "x"}"#, Some("silence")),
        ("ci", &ci, "POST", "/environments/staging/deploys", dry_run, None),
        ("ci", &ci, "POST", "/environments/production/approval", r#"{"approve": true}"#, Some("approve")),
        ("ci", &ci, "POST", "/silences", r#"{"matchers": {"service": "api"}, "for": "1h"}"#, Some("silence")),
    ];
    for (who, token, method, path, body, refused) in cases {
        let reply = call(&platform, token, method, path, body).await;
        match refused {
            Some(permission) => {
                assert_eq!(reply.status, 403, "{who} {method} {path}: {}", reply.body);
                let answer = json(&reply);
                assert_eq!(answer["permission"], permission, "{who} {method} {path}: {answer}");
                let message = answer["error"].as_str().unwrap();
                assert!(message.contains(who) && message.contains(permission), "{message}");
            }
            None => {
                assert!(reply.status < 400, "{who} {method} {path} should be allowed: {} {}", reply.status, reply.body)
            }
        }
    }
    // Listings of every environment show the caller's: a viewer of production sees production.
    let environments =
        |reply: Reply| -> Vec<String> { json(&reply)["environments"].as_object().unwrap().keys().cloned().collect() };
    assert_eq!(environments(call(&platform, &vera, "GET", "/status", "").await), ["production"]);
    assert_eq!(environments(call(&platform, &ci, "GET", "/status", "").await), ["production", "staging"]);
    assert_eq!(environments(call(&platform, &platform.token, "GET", "/status", "").await), ["production", "staging"]);
    let denied_in_staging = call(&platform, &dan, "POST", "/environments/staging/deploys", dry_run).await;
    assert_eq!(denied_in_staging.status, 403);
    assert!(staging_events(&platform, &platform.token).await > 0, "the admin sees staging's denials");
    assert_eq!(staging_events(&platform, &vera).await, 0, "a viewer of production does not see staging's events");

    let robot = call(&platform, &ci, "POST", "/environments/staging/approval", r#"{"approve": true}"#).await;
    assert!(json(&robot)["error"].as_str().unwrap().contains("robots never approve"), "{}", robot.body);
}

/// How many of the events `token` may list are staging's.
async fn staging_events(platform: &Platform, token: &str) -> usize {
    let events = json(&call(platform, token, "GET", "/events?limit=1000", "").await);
    events["events"].as_array().unwrap().iter().filter(|e| e["environment"] == "staging").count()
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_and_allowed_calls_leave_audit_records_in_one_format() {
    let platform = start();
    let vera = platform.token_for(&["--for", "vera"]);
    let otto = platform.token_for(&["--for", "otto", "--name", "otto-laptop"]);
    let denied = call(&platform, &vera, "POST", "/environments/production/deploys", "{}").await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let denied_id = denied.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(json(&denied)["request_id"], denied_id.as_str());
    let allowed = call(&platform, &otto, "PUT", "/environments/production/maintenance", r#"{"enabled": false}"#).await;
    assert!(allowed.status < 400, "{}", allowed.body);
    let allowed_id = allowed.headers.get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_ne!(denied_id, allowed_id);

    let events = platform.json(&["events"]);
    let events = events["events"].as_array().unwrap();
    let audit_of = |id: &str| {
        events
            .iter()
            .find(|e| e["audit"]["request_id"] == id)
            .unwrap_or_else(|| panic!("no audit record of request {id}: {events:#?}"))
            .clone()
    };
    let record = audit_of(&denied_id);
    assert_eq!(record["kind"], "access.denied", "{record:#}");
    let audit = &record["audit"];
    assert_eq!(audit["actor"], "vera");
    assert_eq!(audit["actor_kind"], "person");
    assert_eq!(audit["authenticated_by"], "token vera");
    assert_eq!(audit["action"], "deploy");
    assert_eq!(audit["environment"], "production");
    assert_eq!(audit["outcome"], "denied");

    let record = audit_of(&allowed_id);
    let audit = &record["audit"];
    assert_eq!(audit["actor"], "otto", "{record:#}");
    assert_eq!(audit["authenticated_by"], "token otto-laptop");
    assert_eq!(audit["action"], "maintenance");
    assert_eq!(audit["outcome"], "allowed");
    for record in events {
        assert!(!record.to_string().contains(&vera) && !record.to_string().contains(&otto), "a token in the log");
    }
    let text = platform.cli(&["events"]);
    assert!(text.stdout.contains("denied") && text.stdout.contains("allowed"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_and_revoked_tokens_are_refused_and_bearer_reads_in_any_case() {
    let platform = start();
    let vera = platform.token_for(&["--for", "vera", "--name", "vera-laptop"]);
    let lower_case = format!("bearer {vera}");
    let lower = request("GET", address(&platform), "/api/v1/status", &[("authorization", lower_case.as_str())], "")
        .await
        .unwrap();
    assert_eq!(lower.status, 200, "{}", lower.body);

    // A token made 91 days ago (by the clock the store is given: no sleeping) has expired.
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 91);
    let clock = windlass_store::ManualClock::new(past);
    let location = windlass_server::default_database(&platform.state_dir());
    let store = windlass_store::open(&location, Arc::new(clock)).await.unwrap();
    let request_old = windlass_server::tokens::TokenRequest {
        name: "vera-old".into(),
        owner: "vera".into(),
        robot: false,
        admin: false,
        lifetime: windlass_server::tokens::DEFAULT_LIFETIME,
    };
    let old = windlass_server::tokens::create(&*store, &request_old).await.unwrap();
    drop(store);
    let expired = call(&platform, &old, "GET", "/status", "").await;
    assert_eq!(expired.status, 401, "{}", expired.body);
    assert!(json(&expired)["error"].as_str().unwrap().contains("expired at"), "{}", expired.body);
    let listed = platform.token_command(&["list"]);
    assert!(listed.stdout.lines().any(|l| l.starts_with("vera-old") && l.contains("expired ")), "{}", listed.stdout);

    assert_eq!(platform.token_command(&["revoke", "--name", "vera-laptop"]).code, 0);
    let revoked = call(&platform, &vera, "GET", "/status", "").await;
    assert_eq!(revoked.status, 403, "{}", revoked.body);
    assert!(json(&revoked)["error"].as_str().unwrap().contains("revoked at"), "{}", revoked.body);
}
