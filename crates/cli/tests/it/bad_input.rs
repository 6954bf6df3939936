//! One table of bad input across the API, the CLI and the config (issue #19). Every row is sent
//! to one real platform (edge, server, SQLite store, a deployed service) or, for config rows, to
//! `windlass validate` in a directory of its own, and must be refused with the expected status or
//! exit code, with a message that names what is wrong, and with nothing written: the store's
//! rows (every table, events and settings included) and the files under the platform's directory
//! (names, sizes, modes, hashes) are the same after the row as before it.
//!
//! Rows for behaviour other parts of #19 build carry `pending: Some(<part>)` and are skipped
//! (and counted, and named, in the test's output) until their part is listed in [`ENABLED`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use sqlx::Connection as _;
use windlass_testkit::workspace_bin;

use crate::harness::Windlass;
use crate::platform::{Platform, config, demo};

/// The parts of #19 whose rows run (`hold`, `webhook`, `roles`, `policy`). A part's rows were
/// written from the issue's text before its branch was merged: after merging it, add it here and
/// correct the rows that guessed an interface (each says what it guessed). `finding` rows are
/// bad input today's code gets wrong that no part of #19 owns (each says what happens): enable
/// them once decided and fixed.
const ENABLED: &[&str] = &["hold", "webhook", "roles", "policy", "finding"];

const PD_WEBHOOK_SECRET: &str = "pd-webhook-secret-for-the-bad-input-table";

/// The people and roles of the `roles` rows, in the `[access]` format of the roles branch's
/// first commit (people, robots, grants). Alice holds every role (the other rows need each).
/// Only spliced into the config once `roles` is enabled, since today's config refuses `[access]`.
const ACCESS_TOML: &str = r#"
[access.people.alice]
[access.people.vic]
[access.people.dora]
[access.people.otto]
[access.people.abe]

[access.robots.ci]
description = "the CI pipeline"

[[access.grants]]
people = ["alice"]
role = "admin"
environments = ["*"]

[[access.grants]]
people = ["alice", "dora"]
role = "deployer"
environments = ["*"]

[[access.grants]]
people = ["alice", "abe"]
role = "approver"
environments = ["*"]

[[access.grants]]
people = ["alice", "otto"]
role = "operator"
environments = ["*"]

[[access.grants]]
people = ["vic"]
role = "viewer"
environments = ["production"]

[[access.grants]]
robots = ["ci"]
role = "deployer"
environments = ["production"]
"#;

/// Which token a row presents.
#[derive(Clone, Debug)]
enum Auth {
    /// Alice's token: `Authorization: Bearer <it>`.
    Alice,
    /// No `Authorization` header, no WINDLASS_TOKEN.
    Missing,
    /// This `Authorization` header (or WINDLASS_TOKEN for the CLI), as is.
    Header(String),
    /// Alice's token with the scheme spelled `bearer`.
    LowerCaseBearer,
    /// A token that was created and then revoked.
    Revoked,
    /// A token past its expiry (`roles`).
    Expired,
    /// The token of a person (or robot) declared in [`ACCESS_TOML`] (`roles`).
    Person(&'static str),
}

#[derive(Debug)]
enum Kind {
    Api {
        method: &'static str,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
        auth: Auth,
    },
    /// `server`: `--server <the platform's>` is added (commands that talk to the server).
    Cli {
        args: Vec<String>,
        stdin: Option<String>,
        auth: Auth,
        server: bool,
    },
    /// `windlass validate production` on this `windlass.toml`, in a directory of its own.
    Config {
        toml: String,
    },
}

/// What the store may gain from a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writes {
    Nothing,
    /// Only audit events recording the denial (a 403 of a role check is audited).
    DenialAudited,
    /// A webhook whose signature verified may have its event id remembered (`webhook_events`,
    /// the `webhook` part's replay guard), and nothing else.
    WebhookEventRemembered,
}

#[derive(Debug)]
struct Case {
    name: String,
    kind: Kind,
    /// HTTP status for API rows, exit code for CLI and config rows.
    code: i32,
    /// Each must appear in the error message (API) or the output (CLI, config).
    contains: Vec<String>,
    /// API rows: the answer is JSON (`{"error": ...}` for a 4xx).
    json: bool,
    writes: Writes,
    pending: Option<&'static str>,
    /// The part of #19 that changes what this row sends: once it is enabled, a pending row of
    /// that part replaces this one.
    replaced_by: Option<&'static str>,
}

impl Case {
    fn new(name: impl Into<String>, kind: Kind) -> Self {
        Case {
            name: name.into(),
            kind,
            code: -1,
            contains: Vec::new(),
            json: true,
            writes: Writes::Nothing,
            pending: None,
            replaced_by: None,
        }
    }

    fn expect(mut self, code: i32, contains: &[&str]) -> Self {
        self.code = code;
        self.contains = contains.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    fn auth(mut self, auth: Auth) -> Self {
        match &mut self.kind {
            Kind::Api { auth: a, .. } | Kind::Cli { auth: a, .. } => *a = auth,
            Kind::Config { .. } => panic!("{}: a config row has no token", self.name),
        }
        self
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        if let Kind::Api { headers, .. } = &mut self.kind {
            headers.push((name.to_owned(), value.to_owned()));
        }
        self
    }

    fn stdin(mut self, text: &str) -> Self {
        if let Kind::Cli { stdin, .. } = &mut self.kind {
            *stdin = Some(text.to_owned());
        }
        self
    }

    /// The answer is not JSON (a known gap, said where the row is).
    fn plain(mut self) -> Self {
        self.json = false;
        self
    }

    fn audited(mut self) -> Self {
        self.writes = Writes::DenialAudited;
        self
    }

    fn remembered(mut self) -> Self {
        self.writes = Writes::WebhookEventRemembered;
        self
    }

    fn pending(mut self, part: &'static str) -> Self {
        self.pending = Some(part);
        self
    }

    fn replaced_by(mut self, part: &'static str) -> Self {
        self.replaced_by = Some(part);
        self
    }
}

fn api(name: impl Into<String>, method: &'static str, path: impl Into<String>, body: impl Into<String>) -> Case {
    let kind = Kind::Api { method, path: path.into(), headers: Vec::new(), body: body.into(), auth: Auth::Alice };
    Case::new(name, kind)
}

fn cli(name: &str, args: &[&str]) -> Case {
    let args = args.iter().map(|s| (*s).to_owned()).collect();
    Case::new(format!("cli {name}"), Kind::Cli { args, stdin: None, auth: Auth::Alice, server: true })
}

/// A command that does not talk to the server; `{config}` and `{state}` in `args` are the
/// platform's.
fn offline(name: &str, args: &[&str]) -> Case {
    let args = args.iter().map(|s| (*s).to_owned()).collect();
    Case::new(format!("cli {name}"), Kind::Cli { args, stdin: None, auth: Auth::Missing, server: false })
}

fn config_row(name: &str, toml: &str) -> Case {
    Case::new(name, Kind::Config { toml: toml.to_owned() })
}

/// A config that `validate` accepts, to which rows append one mistake (at line 9 and on).
const VALID: &str = r#"[project]
name = "shop"

[environments.production]

[services.api]
run = "demo"
instances = 2
"#;

/// The line of `text` in a config made of [`VALID`] and `appended`.
fn line_of(appended: &str, text: &str) -> String {
    let full = format!("{VALID}{appended}");
    let line = full.lines().position(|l| l.contains(text)).unwrap_or_else(|| panic!("`{text}` not in the row"));
    format!("windlass.toml:{}", line + 1)
}

fn config_mistake(name: &str, appended: &str, at: &str, contains: &[&str]) -> Case {
    let location = line_of(appended, at);
    let mut all = vec![location.as_str()];
    all.extend_from_slice(contains);
    config_row(name, &format!("{VALID}{appended}")).expect(1, &all)
}

/// Odd values for a path parameter: (label, as written in the path, as the server decodes it).
const ODD_NAMES: &[(&str, &str, &str)] = &[
    ("dot-dot", "..", ".."),
    ("encoded dot-dot", "%2e%2e", ".."),
    ("encoded traversal", "..%2F..%2Fstatus", "../../status"),
    ("space", "a%20b", "a b"),
    ("unicode", "%C3%A9t%C3%A9", "été"),
    ("300 chars", LONG_NAME, LONG_NAME),
    ("empty", "", ""),
];

const LONG_NAME: &str = "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn";

/// Every route with an `{env}` parameter, with a body it would accept.
const ENV_ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/environments/{}/deploys", ""),
    ("POST", "/api/v1/environments/{}/deploys", r#"{"dry_run":true}"#),
    ("POST", "/api/v1/environments/{}/rollback", "{}"),
    ("GET", "/api/v1/environments/{}/lock", ""),
    ("DELETE", "/api/v1/environments/{}/lock", r#"{"reason":"table"}"#),
    ("PUT", "/api/v1/environments/{}/maintenance", r#"{"enabled":true}"#),
    ("PUT", "/api/v1/environments/{}/services/api/failover", r#"{"to":"secondary"}"#),
    ("PUT", "/api/v1/environments/{}/services/api/scale", r#"{"instances":3}"#),
    ("GET", "/api/v1/environments/{}/services/api/logs", ""),
    ("GET", "/api/v1/environments/{}/canary", ""),
    ("POST", "/api/v1/environments/{}/promote", r#"{"from":"production"}"#),
    ("GET", "/api/v1/environments/{}/approval", ""),
    ("POST", "/api/v1/environments/{}/approval", r#"{"decision":"approve"}"#),
    ("POST", "/api/v1/environments/{}/services/api/canary", r#"{"action":"abort"}"#),
    ("GET", "/api/v1/slo/{}", ""),
    ("GET", "/api/v1/environments/{}/probes", ""),
];

/// Every route with a `{service}` parameter: (method, path, body, status, what the message says).
const SERVICE_ROUTES: &[(&str, &str, &str, i32, &str)] = &[
    ("PUT", "/api/v1/environments/production/services/{}/failover", r#"{"to":"secondary"}"#, 404, "no service"),
    ("PUT", "/api/v1/environments/production/services/{}/scale", r#"{"instances":3}"#, 400, "does not run in"),
    ("GET", "/api/v1/environments/production/services/{}/logs", "", 404, "has never run in"),
    (
        "POST",
        "/api/v1/environments/production/services/{}/canary",
        r#"{"action":"abort"}"#,
        409,
        "in production has no running canary",
    ),
];

/// Every route with an `{id}` parameter: (method, path, body, status, what the message says).
const ID_ROUTES: &[(&str, &str, &str, i32, &str)] = &[
    ("GET", "/api/v1/deploys/{}", "", 404, "no deploy"),
    ("GET", "/api/v1/deploys/{}/events", "", 404, "no deploy"),
    ("POST", "/api/v1/alerts/{}/ack", "{}", 404, "no alert"),
    ("DELETE", "/api/v1/silences/{}", "", 404, "no silence"),
    ("GET", "/api/v1/incidents/{}", "", 400, "is not an incident number"),
    ("POST", "/api/v1/incidents/{}/notes", r#"{"text":"n"}"#, 400, "is not an incident number"),
    ("POST", "/api/v1/incidents/{}/resolve", "{}", 400, "is not an incident number"),
    ("GET", "/api/v1/incidents/{}/postmortem", "", 400, "is not an incident number"),
    ("POST", "/ack/{}", "", 403, "the acknowledgement link is not valid"),
];

/// The path parameter rows: every odd name in every path parameter of every route.
fn path_rows() -> Vec<Case> {
    let mut rows = Vec::new();
    for &(label, raw, decoded) in ODD_NAMES {
        for &(method, path, body) in ENV_ROUTES {
            let message = format!("environment `{decoded}` is not declared");
            let row = api(format!("{method} {path}: env {label}"), method, path.replace("{}", raw), body);
            // `/slo/` with nothing after it is no route at all.
            let row = if decoded.is_empty() && path.ends_with("{}") {
                row.expect(404, &["no such API path"])
            } else {
                row.expect(404, &[&message])
            };
            rows.push(row);
        }
        for &(method, path, body, status, says) in SERVICE_ROUTES {
            // The canary's answer names the service without quotes: `<name> in production ...`.
            let named =
                if says.starts_with("in production") { format!("{decoded} {says}") } else { format!("`{decoded}`") };
            let row = api(format!("{method} {path}: service {label}"), method, path.replace("{}", raw), body);
            let row = row.expect(status, &[says, &named]);
            // Fixed finding: `..` got past the server's check of a service name and reached the
            // edge as `PUT /edge/services/../failover`; the name is now checked against the
            // config's services, and the edge client encodes every segment.
            rows.push(row);
        }
        for &(method, path, body, status, says) in ID_ROUTES {
            let row = api(format!("{method} {path}: id {label}"), method, path.replace("{}", raw), body);
            // `/deploys/` and `/ack/` with nothing after them are no route at all.
            let row = if decoded.is_empty() && !path.ends_with("{}/events") && !path.contains("{}/") {
                row.expect(404, &["no such API path"])
            } else if path.starts_with("/ack/") {
                row.expect(status, &[says])
            } else {
                row.expect(status, &[says, &format!("`{decoded}`")])
            };
            rows.push(row);
        }
    }
    // Not UTF-8 once decoded: refused before any handler runs.
    for &(method, path, body) in ENV_ROUTES {
        let row = api(format!("{method} {path}: env not UTF-8"), method, path.replace("{}", "%FF"), body);
        rows.push(row.expect(400, &["Invalid UTF-8", "env"]));
    }
    rows
}

/// The body rows: wrong JSON types, unknown fields, truncated JSON, huge and deep bodies,
/// negative and huge numbers.
fn body_rows() -> Vec<Case> {
    let scale = "/api/v1/environments/production/services/api/scale";
    let deploys = "/api/v1/environments/production/deploys";
    let huge_reason = json!({ "reason": "r".repeat(3 * 1024 * 1024) }).to_string();
    vec![
        api("scale: instances negative", "PUT", scale, r#"{"instances":-1}"#)
            .expect(400, &["invalid request body", "`-1`", "u64"]),
        api("scale: instances a float", "PUT", scale, r#"{"instances":1e30}"#)
            .expect(400, &["invalid request body", "floating point", "u64"]),
        api("scale: instances u64::MAX", "PUT", scale, r#"{"instances":18446744073709551615}"#)
            .expect(400, &["18446744073709551615 instances", "at most 1000"]),
        api("scale: instances past u64", "PUT", scale, r#"{"instances":18446744073709551616}"#)
            .expect(400, &["invalid request body"]),
        api("scale: instances 100000", "PUT", scale, r#"{"instances":100000}"#)
            .expect(400, &["100000 instances", "at most 1000"]),
        api("scale: instances a string", "PUT", scale, r#"{"instances":"2"}"#)
            .expect(400, &["invalid request body", "expected u64"]),
        api("scale: instances missing", "PUT", scale, "{}").expect(400, &["missing field `instances`"]),
        api("scale: unknown field", "PUT", scale, r#"{"instances":2,"replicas":2}"#)
            .expect(400, &["unknown field `replicas`"]),
        api("deploy: skip a string", "POST", deploys, r#"{"skip":"validate"}"#)
            .expect(400, &["invalid request body", "expected a sequence"]),
        api("deploy: unknown phase", "POST", deploys, r#"{"skip":["nope"]}"#).expect(400, &["no phase `nope`"]),
        api("deploy: version of an unknown service", "POST", deploys, r#"{"versions":{"nope":"v2"}}"#)
            .expect(400, &["no service `nope`"]),
        api("deploy: dry_run a string", "POST", deploys, r#"{"dry_run":"yes"}"#).expect(400, &["expected a boolean"]),
        api("deploy: unknown field", "POST", deploys, r#"{"dry_run":true,"force":true}"#)
            .expect(400, &["unknown field `force`"]),
        // Fixed finding: serde reads a struct from a JSON array, so `[]` was an empty
        // DeployRequest and started a deploy (202); every body must be an object.
        api("deploy: body an array", "POST", deploys, "[]")
            .expect(400, &["invalid request body", "expected a JSON object, got an array"]),
        api("deploy: body a string", "POST", deploys, r#""x""#).expect(400, &["expected a JSON object, got a string"]),
        api("deploy: body null", "POST", deploys, "null").expect(400, &["expected a JSON object, got null"]),
        api("silences: body an array", "POST", "/api/v1/silences", r#"[{"for":"2h","reason":"x"}]"#)
            .expect(400, &["expected a JSON object, got an array"]),
        api("approval: body a number", "POST", "/api/v1/environments/production/approval", "1")
            .expect(400, &["expected a JSON object, got a number"]),
        api("deploy: truncated JSON", "POST", deploys, r#"{"reason":"#).expect(400, &["invalid request body", "EOF"]),
        api("deploy: not JSON", "POST", deploys, "reason=x").expect(400, &["invalid request body", "expected value"]),
        api("deploy: not UTF-8", "POST", deploys, "{\"reason\":\"\u{fffd}\u{0}\"}")
            .expect(400, &["invalid request body"]),
        // Today axum's body limit answers 413 in text/plain; the `hold` row below asks for the
        // API's JSON error naming the limit.
        api("deploy: a 3 MiB body", "POST", deploys, huge_reason.clone()).expect(413, &[]).plain(),
        api("deploy: a 3 MiB body, as JSON", "POST", deploys, huge_reason)
            .expect(413, &["larger than the API takes"])
            .pending("hold"),
        api("silences: 100000 nested arrays", "POST", "/api/v1/silences", "[".repeat(100_000))
            .expect(400, &["invalid request body"]),
        api("silences: reason missing", "POST", "/api/v1/silences", r#"{"for":"2h"}"#)
            .expect(400, &["missing field `reason`"]),
        api("silences: for a number", "POST", "/api/v1/silences", r#"{"for":2,"reason":"x"}"#)
            .expect(400, &["invalid type: integer `2`"]),
        api("silences: for not a duration", "POST", "/api/v1/silences", r#"{"for":"soon","reason":"x"}"#)
            .expect(400, &["`for`", "`soon`"]),
        api("silences: for negative", "POST", "/api/v1/silences", r#"{"for":"-2h","reason":"x"}"#)
            .expect(400, &["`for`", "`-2h`"]),
        api("silences: unknown severity", "POST", "/api/v1/silences", r#"{"for":"2h","reason":"x","severity":"huge"}"#)
            .expect(400, &["unknown severity `huge`"]),
        api("silences: unknown field", "POST", "/api/v1/silences", r#"{"for":"2h","reason":"x","bogus":1}"#)
            .expect(400, &["unknown field `bogus`"]),
        // Fixed finding: a silence for an environment the config does not declare was recorded.
        api(
            "silences: undeclared environment",
            "POST",
            "/api/v1/silences",
            r#"{"for":"2h","reason":"x","environment":"nope"}"#,
        )
        .expect(404, &["environment `nope` is not declared"]),
        api("silences: list of an undeclared environment", "GET", "/api/v1/silences?environment=nope", "")
            .expect(404, &["environment `nope` is not declared"]),
        api("alerts: list of an undeclared environment", "GET", "/api/v1/alerts?environment=nope", "")
            .expect(404, &["environment `nope` is not declared"]),
        api("incidents: list of an undeclared environment", "GET", "/api/v1/incidents?environment=nope", "")
            .expect(404, &["environment `nope` is not declared"]),
        api(
            "maintenance: enabled a string",
            "PUT",
            "/api/v1/environments/production/maintenance",
            r#"{"enabled":"on"}"#,
        )
        .expect(400, &["expected a boolean"]),
        api(
            "maintenance: unknown service",
            "PUT",
            "/api/v1/environments/production/maintenance",
            r#"{"enabled":true,"service":"../x"}"#,
        )
        .expect(404, &["no service `../x`"]),
        api(
            "failover: to sideways",
            "PUT",
            "/api/v1/environments/production/services/api/failover",
            r#"{"to":"sideways"}"#,
        )
        .expect(400, &["`--to sideways`", "secondary", "primary"]),
        api("approval: decision maybe", "POST", "/api/v1/environments/production/approval", r#"{"decision":"maybe"}"#)
            .expect(400, &["unknown variant `maybe`"]),
        // Fixed finding: refused, but the approval lease was taken first, so `lease_tokens`
        // gained `approval/production` (its fencing counter): a refused request wrote.
        api(
            "approval: nothing awaits",
            "POST",
            "/api/v1/environments/production/approval",
            r#"{"decision":"approve"}"#,
        )
        .expect(409, &["awaits approval"]),
        api(
            "approval: nothing awaits rejection",
            "POST",
            "/api/v1/environments/production/approval",
            r#"{"decision":"reject"}"#,
        )
        .expect(409, &["awaits approval"]),
        api(
            "failover: undeclared service",
            "PUT",
            "/api/v1/environments/production/services/nope/failover",
            r#"{"to":"secondary"}"#,
        )
        .expect(404, &["no service `nope`"]),
        api(
            "canary: action explode",
            "POST",
            "/api/v1/environments/production/services/api/canary",
            r#"{"action":"explode"}"#,
        )
        .expect(400, &["unknown variant `explode`"]),
        api("rollback: to a traversal", "POST", "/api/v1/environments/production/rollback", r#"{"to":"../../x"}"#)
            .expect(404, &["no deploy `../../x`"]),
        api(
            "rollback: restore_database a string",
            "POST",
            "/api/v1/environments/production/rollback",
            r#"{"restore_database":"yes"}"#,
        )
        .expect(400, &["expected a boolean"]),
        api("promote: from missing", "POST", "/api/v1/environments/production/promote", "{}")
            .expect(400, &["missing field `from`"]),
        api("promote: from unknown", "POST", "/api/v1/environments/production/promote", r#"{"from":"staging"}"#)
            .expect(404, &["environment `staging` is not declared"]),
        api("lock: break without reason", "DELETE", "/api/v1/environments/production/lock", "{}")
            .expect(400, &["needs a reason"]),
        api("notes: no text", "POST", "/api/v1/incidents/1/notes", "{}").expect(400, &["needs `text`"]),
        api("resolve: text a number", "POST", "/api/v1/incidents/1/resolve", r#"{"text":5}"#)
            .expect(400, &["invalid type: integer `5`"]),
    ]
}

/// Query parameters, tokens, routes and the webhook.
fn request_rows() -> Vec<Case> {
    let status = "/api/v1/status";
    let hook = "/hooks/pagerduty";
    let unknown_ack = json!({ "event": {
        "id": "01BADINPUTTABLE0000000000",
        "event_type": "incident.acknowledged",
        "resource_type": "incident",
        // Now: fresh, so that a freshness window (the `webhook` part) lets it through to the
        // alert lookup.
        "occurred_at": jiff::Timestamp::now().to_string(),
        "agent": { "id": "PXPGF42", "summary": "Mallory", "type": "user_reference" },
        "data": { "id": "PGR0VU2", "type": "incident", "status": "acknowledged", "incident_key": "no-such-alert" }
    }})
    .to_string();
    let signature = signed(PD_WEBHOOK_SECRET, unknown_ack.as_bytes());
    vec![
        // Query parameters: a JSON 400 naming the parameter.
        api("alerts: limit not a number", "GET", "/api/v1/alerts?limit=abc", "")
            .expect(400, &["limit", "invalid digit"]),
        api("alerts: limit negative", "GET", "/api/v1/alerts?limit=-1", "").expect(400, &["limit"]),
        api("alerts: status weird", "GET", "/api/v1/alerts?status=weird", "").expect(400, &["status is one of"]),
        api("events: limit past u32", "GET", "/api/v1/events?limit=99999999999", "")
            .expect(400, &["limit", "too large"]),
        api("deploys: limit past u32", "GET", "/api/v1/environments/production/deploys?limit=4294967296", "")
            .expect(400, &["limit", "too large"]),
        api("logs: tail not a number", "GET", "/api/v1/environments/production/services/api/logs?tail=x", "")
            .expect(400, &["tail"]),
        api("reliability: service missing", "GET", "/api/v1/reliability?environment=production", "")
            .expect(400, &["missing field `service`"]),
        // Fixed finding: an undeclared environment answered 200 with zero incidents.
        api("reliability: undeclared environment", "GET", "/api/v1/reliability?environment=nope&service=api", "")
            .expect(404, &["environment `nope` is not declared"]),
        // Query parameters are denied when unknown, as body fields are: a misspelt one is named.
        api("alerts: unknown parameter", "GET", "/api/v1/alerts?enviroment=production", "")
            .expect(400, &["unknown field `enviroment`"]),
        api("silences: unknown parameter", "GET", "/api/v1/silences?state=active", "")
            .expect(400, &["unknown field `state`"]),
        api("incidents: unknown parameter", "GET", "/api/v1/incidents?limt=5", "")
            .expect(400, &["unknown field `limt`"]),
        api("events: unknown parameter", "GET", "/api/v1/events?kinds=deploy", "")
            .expect(400, &["unknown field `kinds`"]),
        api("deploys: unknown parameter", "GET", "/api/v1/environments/production/deploys?page=2", "")
            .expect(400, &["unknown field `page`"]),
        api("logs: unknown parameter", "GET", "/api/v1/environments/production/services/api/logs?lines=5", "")
            .expect(400, &["unknown field `lines`"]),
        api(
            "reliability: unknown parameter",
            "GET",
            "/api/v1/reliability?environment=production&service=api&day=3",
            "",
        )
        .expect(400, &["unknown field `day`"]),
        api(
            "reliability: days past u32",
            "GET",
            "/api/v1/reliability?environment=production&service=api&days=4294967296",
            "",
        )
        .expect(400, &["days", "too large"]),
        // Tokens.
        api("no token", "GET", status, "").auth(Auth::Missing).expect(401, &["Authorization: Bearer"]),
        api("empty bearer", "GET", status, "")
            .auth(Auth::Header("Bearer ".into()))
            .expect(401, &["Authorization: Bearer"]),
        api("basic auth", "GET", status, "").auth(Auth::Header("Basic YWxpY2U6eA==".into())).expect(401, &["Bearer"]),
        api("unknown token", "GET", status, "")
            .auth(Auth::Header("Bearer wl_nope".into()))
            .expect(403, &["this token is unknown"]),
        api("garbled token", "GET", status, "")
            .auth(Auth::Header("Bearer wl_'; DROP TABLE tokens; --".into()))
            .expect(403, &["this token is unknown"]),
        api("bearer without a space", "GET", status, "")
            .auth(Auth::Header("Bearerwl_x".into()))
            .expect(401, &["Bearer"]),
        api("revoked token", "GET", status, "").auth(Auth::Revoked).expect(403, &["revoked"]),
        // Routes.
        api("unknown API path", "GET", "/api/v1/nope", "").expect(404, &["no such API path"]),
        api("path outside the API", "GET", "/../../etc/passwd", "").expect(404, &["no such API path"]),
        // `hold`: a method a path does not take is the API's JSON 405 (today: an empty body).
        api("method not taken", "PATCH", status, "").expect(405, &["does not take PATCH"]).pending("hold"),
        // PagerDuty's webhook.
        api("webhook: unsigned", "POST", hook, &unknown_ack).auth(Auth::Missing).expect(401, &["signature"]),
        api("webhook: bad signature", "POST", hook, &unknown_ack)
            .auth(Auth::Missing)
            .header("x-pagerduty-signature", "v1=00")
            .expect(401, &["signature"]),
        api("webhook: signed, unknown alert", "POST", hook, &unknown_ack)
            .auth(Auth::Missing)
            .header("x-pagerduty-signature", &signature)
            .expect(404, &["no alert `no-such-alert`"])
            .remembered(),
    ]
}

/// The CLI: bad flags, unknown subcommands, bad values, offline commands.
fn cli_rows() -> Vec<Case> {
    vec![
        cli("unknown subcommand", &["frobnicate"]).expect(2, &["unrecognized subcommand 'frobnicate'"]),
        cli("unknown flag", &["status", "--bogus"]).expect(2, &["unexpected argument '--bogus'"]),
        cli("scale: negative", &["scale", "production", "api", "-1"]).expect(2, &["unexpected argument '-1'"]),
        cli("scale: not a number", &["scale", "production", "api", "abc"])
            .expect(2, &["invalid value 'abc' for '<INSTANCES>'"]),
        cli("scale: huge", &["scale", "production", "api", "1000000"])
            .expect(2, &["1000000 instances", "at most 1000"]),
        cli("scale: unknown service", &["scale", "production", "nope", "2"]).expect(2, &["`nope` does not run"]),
        cli("deploys: limit not a number", &["deploys", "production", "--limit", "abc"])
            .expect(2, &["invalid value 'abc' for '--limit <LIMIT>'"]),
        cli("events: limit past u32", &["events", "--limit", "99999999999"]).expect(2, &["99999999999 is not in"]),
        cli("output: yaml", &["status", "--output", "yaml"]).expect(2, &["invalid value 'yaml'"]),
        cli("deploy: unknown phase", &["deploy", "production", "--skip", "nope"]).expect(2, &["no phase `nope`"]),
        cli("deploy: unknown environment", &["deploy", "nope"]).expect(2, &["environment `nope` is not declared"]),
        cli("incident: not a number", &["incident", "show", "abc"]).expect(2, &["`abc` is not an incident number"]),
        cli("silence: for not a duration", &["silence", "add", "production", "--for", "soon", "--reason", "x"])
            .expect(2, &["`soon`"]),
        cli("ack: unknown alert", &["ack", "nope"]).expect(2, &["no alert `nope`"]),
        cli("garbled token", &["status"]).auth(Auth::Header("garbage".into())).expect(2, &["this token is unknown"]),
        cli("no token", &["status"]).auth(Auth::Missing).expect(2, &["no token", "WINDLASS_TOKEN"]),
        cli("revoked token", &["status"]).auth(Auth::Revoked).expect(2, &["revoked"]),
        offline("server: not http", &["status", "--server", "ftp://x"]).expect(2, &["`ftp://x` is not an http://"]),
        offline(
            "token: bad name",
            &["token", "create", "--name", "bad name", "--config", "{config}", "--state", "{state}"],
        )
        .expect(2, &["`bad name` is not a token name"]),
        offline(
            "token: traversal name",
            &["token", "create", "--name", "../x", "--config", "{config}", "--state", "{state}"],
        )
        .expect(2, &["`../x` is not a token name"]),
        offline(
            "token: name taken",
            &["token", "create", "--name", "alice", "--config", "{config}", "--state", "{state}"],
        )
        .expect(2, &["`alice` already exists"])
        .replaced_by("roles"),
        // roles: a token belongs to someone (`--for`), and its name is still unique.
        offline(
            "token: name taken, for a person",
            &["token", "create", "--for", "alice", "--name", "alice", "--config", "{config}", "--state", "{state}"],
        )
        .expect(2, &["`alice` already exists"])
        .pending("roles"),
        offline(
            "token: revoke unknown",
            &["token", "revoke", "--name", "nobody", "--config", "{config}", "--state", "{state}"],
        )
        .expect(2, &["nobody"]),
        offline("completions: unknown shell", &["completions", "tcsh"]).expect(2, &["invalid value 'tcsh'"]),
        offline("secrets: unknown subcommand", &["secrets", "frobnicate"])
            .expect(2, &["unrecognized subcommand"])
            .stdin("not read"),
    ]
}

/// Config files `windlass validate` must refuse, located.
fn config_rows() -> Vec<Case> {
    vec![
        config_mistake("config: wrong type", "instances_x = 1\n", "instances_x", &["unknown key `instances_x`"]),
        config_mistake(
            "config: string for a number",
            "\n[services.web]\nrun = \"demo\"\ninstances = \"two\"\n",
            "\"two\"",
            &["wrong type for `services.web.instances`"],
        ),
        config_mistake("config: unknown key", "bogus = 1\n", "bogus", &["unknown key `bogus` in [services.api]"]),
        config_mistake("config: unknown table", "[frobnicate]\nx = 1\n", "[frobnicate]", &["unknown key `frobnicate`"]),
        config_mistake("config: bad duration", "keep_warm = \"soon\"\n", "soon", &["services.api.keep_warm", "`soon`"]),
        config_mistake(
            "config: negative instances",
            "\n[services.web]\nrun = \"demo\"\ninstances = -2\n",
            "-2",
            &["services.web.instances", "out of range"],
        ),
        config_mistake(
            "config: dependency cycle",
            "depends_on = [\"web\"]\n\n[services.web]\nrun = \"demo\"\ndepends_on = [\"api\"]\n",
            "[\"web\"]",
            &["dependency cycle: api -> web -> api"],
        ),
        config_mistake(
            "config: traversal service name",
            "\n[services.\"../x\"]\nrun = \"y\"\n",
            "../x",
            &["invalid service name `../x`"],
        ),
        config_mistake(
            "config: negative canary weight",
            "strategy = { canary = [{ weight = -5 }] }\n",
            "weight = -5",
            &["services.api.strategy.canary[0].weight", "out of range"],
        ),
        config_mistake(
            "config: canary weight 500",
            "strategy = { canary = [{ weight = 500 }] }\n",
            "weight = 500",
            &["services.api.strategy.canary[0].weight", "out of range"],
        ),
        config_mistake(
            "config: falling canary weights",
            "strategy = { canary = [{ weight = 50 }, { weight = 20 }] }\n",
            "weight = 20",
            &["canary weights must rise: 20 comes after 50"],
        ),
        config_mistake(
            "config: negative rate",
            "rate_limit = { per_client = \"-3/s\" }\n",
            "-3/s",
            &["services.api.rate_limit.per_client", "`-3`"],
        ),
        config_mistake(
            "config: huge rate",
            "rate_limit = { per_client = \"100000000000000/s\" }\n",
            "100000000000000/s",
            &["services.api.rate_limit.per_client", "`100000000000000` is too large", "4294967295"],
        ),
        config_mistake(
            "config: huge instances",
            "\n[services.web]\nrun = \"demo\"\ninstances = 99999999999999999999\n",
            "99999999999999999999",
            &["services.web.instances"],
        ),
        config_mistake(
            "config: retries 11",
            "\n[[phases.backend.steps]]\nrun = \"x\"\nretries = 11\n",
            "retries = 11",
            &["phases.backend.steps[0].retries", "out of range"],
        ),
        config_mistake(
            "config: overflowing timeout",
            "health = { path = \"/h\", timeout = \"99999999999999999999s\" }\n",
            "99999999999999999999s",
            &["services.api.health.timeout", "too long a duration"],
        ),
        config_mistake(
            "config: traversal environment name",
            "\n[environments.\"../prod\"]\n",
            "../prod",
            &["invalid environment name `../prod`"],
        ),
        config_mistake(
            "config: negative max_connections",
            "\n[edge]\nmax_connections = -1\n",
            "max_connections",
            &["edge.max_connections", "out of range"],
        ),
        // Fixed finding: a health check every 0 ms passed `validate` with only a warning; the
        // edge's admin API refuses intervals under 10 ms, and `validate` now mirrors its ranges.
        config_mistake(
            "config: zero health interval",
            "health = { path = \"/h\", interval = \"0ms\" }\n",
            "0ms",
            &["services.api.health.interval", "is 0s, outside what the edge takes: 10ms to 1h"],
        ),
        config_mistake(
            "config: health interval over an hour",
            "health = { path = \"/h\", interval = \"2h\" }\n",
            "2h",
            &["services.api.health.interval", "outside what the edge takes"],
        ),
        config_mistake(
            "config: health timeout 5ms",
            "health = { path = \"/h\", timeout = \"5ms\" }\n",
            "5ms",
            &["services.api.health.timeout", "outside what the edge takes"],
        ),
        config_mistake(
            "config: rate limit burst 0",
            "rate_limit = { per_client = \"10/s\", burst = 0 }\n",
            "burst = 0",
            &["services.api.rate_limit.burst", "out of range"],
        ),
        config_row("config: truncated TOML", "[project\nname =").expect(1, &["windlass.toml:1", "invalid TOML"]),
        // `hold`: a duration that overflows when added to a time is refused by `validate`, not at
        // deploy time.
        config_mistake(
            "config: keep_warm overflows",
            "keep_warm = \"106751991167d\"\n",
            "106751991167d",
            &["services.api.keep_warm"],
        )
        .pending("hold"),
    ]
}

/// Rows for what the other parts of #19 build, from the issue's text.
fn pending_rows() -> Vec<Case> {
    let rollback = "/api/v1/environments/production/rollback";
    vec![
        // hold: an overflowing silence is a 400, not a panic.
        api("silences: for 3000000d", "POST", "/api/v1/silences", r#"{"for":"3000000d","reason":"x"}"#)
            .expect(400, &["`for`", "3000000d"])
            .pending("hold"),
        cli("silence: for 3000000d", &["silence", "add", "production", "--for", "3000000d", "--reason", "x"])
            .expect(2, &["3000000d"])
            .pending("hold"),
        // hold: the CLI percent-encodes path segments: `../../x` is an alert id, not a path.
        cli("ack: traversal id", &["ack", "../../x"]).expect(2, &["no alert `../../x`"]).pending("hold"),
        cli("deploy: traversal environment", &["deploy", "../../x"])
            .expect(2, &["environment `../../x` is not declared"])
            .pending("hold"),
        cli("incident: traversal id", &["incident", "show", "../../1"])
            .expect(2, &["`../../1` is not an incident number"])
            .pending("hold"),
        // roles: the scheme is case-insensitive (RFC 9110).
        api("lower-case bearer", "GET", "/api/v1/status", "")
            .auth(Auth::LowerCaseBearer)
            .expect(200, &[])
            .pending("roles"),
        // roles: GUESSED interface for making an expired token (see `expired_token`).
        api("expired token", "GET", "/api/v1/status", "")
            .auth(Auth::Expired)
            .expect(401, &["expired"])
            .pending("roles"),
        cli("expired token", &["status"]).auth(Auth::Expired).expect(2, &["expired"]).pending("roles"),
        // roles: each role trying what it may not: 403 naming the permission, the denial audited.
        api("viewer deploys", "POST", "/api/v1/environments/production/deploys", r#"{"dry_run":true}"#)
            .auth(Auth::Person("vic"))
            .expect(403, &["deploy"])
            .audited()
            .pending("roles"),
        api("viewer scales", "PUT", "/api/v1/environments/production/services/api/scale", r#"{"instances":3}"#)
            .auth(Auth::Person("vic"))
            .expect(403, &["scale"])
            .audited()
            .pending("roles"),
        api("viewer breaks the lock", "DELETE", "/api/v1/environments/production/lock", r#"{"reason":"x"}"#)
            .auth(Auth::Person("vic"))
            .expect(403, &["break-lock"])
            .audited()
            .pending("roles"),
        api("deployer silences", "POST", "/api/v1/silences", r#"{"environment":"production","for":"1h","reason":"x"}"#)
            .auth(Auth::Person("dora"))
            .expect(403, &["silence"])
            .audited()
            .pending("roles"),
        api("deployer sets maintenance", "PUT", "/api/v1/environments/production/maintenance", r#"{"enabled":true}"#)
            .auth(Auth::Person("dora"))
            .expect(403, &["maintenance"])
            .audited()
            .pending("roles"),
        api(
            "deployer fails over",
            "PUT",
            "/api/v1/environments/production/services/api/failover",
            r#"{"to":"secondary"}"#,
        )
        .auth(Auth::Person("dora"))
        .expect(403, &["failover"])
        .audited()
        .pending("roles"),
        api("deployer approves", "POST", "/api/v1/environments/production/approval", r#"{"decision":"approve"}"#)
            .auth(Auth::Person("dora"))
            .expect(403, &["approve"])
            .audited()
            .pending("roles"),
        api("approver deploys", "POST", "/api/v1/environments/production/deploys", r#"{"dry_run":true}"#)
            .auth(Auth::Person("abe"))
            .expect(403, &["deploy"])
            .audited()
            .pending("roles"),
        api("operator deploys", "POST", "/api/v1/environments/production/deploys", r#"{"dry_run":true}"#)
            .auth(Auth::Person("otto"))
            .expect(403, &["deploy"])
            .audited()
            .pending("roles"),
        api("operator restores the database", "POST", rollback, r#"{"reason":"x","restore_database":true}"#)
            .auth(Auth::Person("otto"))
            .expect(403, &["rollback"])
            .audited()
            .pending("roles"),
        api("robot approves", "POST", "/api/v1/environments/production/approval", r#"{"decision":"approve"}"#)
            .auth(Auth::Person("ci"))
            .expect(403, &["approve"])
            .audited()
            .pending("roles"),
        // policy: the emergency path needs a reason (field and wording as the policy branch has
        // them; today the body is refused for its unknown field `emergency`).
        api("rollback: emergency without reason", "POST", rollback, r#"{"emergency":true}"#)
            .expect(400, &["--emergency needs --reason"])
            .pending("policy"),
        cli("rollback: --emergency without --reason", &["rollback", "production", "--emergency"])
            .expect(2, &["--emergency needs --reason"])
            .pending("policy"),
        // webhook: a captured, correctly signed body is not acted on later (freshness window):
        // its `occurred_at` is years old. Answered 202 "ignored" (as the webhook branch does, so
        // that PagerDuty does not retry it), acknowledging nothing and writing nothing.
        api("webhook: stale signed event", "POST", "/hooks/pagerduty", stale_ack())
            .auth(Auth::Missing)
            .header("x-pagerduty-signature", &signed(PD_WEBHOOK_SECRET, stale_ack().as_bytes()))
            .expect(202, &["2020-01-01", "freshness window"])
            .pending("webhook"),
    ]
}

fn stale_ack() -> String {
    json!({ "event": {
        "id": "01STALEEVENT000000000000000",
        "event_type": "incident.acknowledged",
        "resource_type": "incident",
        "occurred_at": "2020-01-01T00:00:00.000Z",
        "agent": { "id": "PXPGF42", "summary": "Mallory", "type": "user_reference" },
        "data": { "id": "PGR0VU2", "type": "incident", "status": "acknowledged", "incident_key": "no-such-alert" }
    }})
    .to_string()
}

fn signed(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("v1={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

fn table() -> Vec<Case> {
    let mut rows = path_rows();
    rows.extend(body_rows());
    rows.extend(request_rows());
    rows.extend(cli_rows());
    rows.extend(config_rows());
    rows.extend(pending_rows());
    rows
}

/// What a row can change: the store's rows per table and the files under a directory.
#[derive(PartialEq, Eq)]
struct Snapshot {
    rows: BTreeMap<String, Vec<String>>,
    files: BTreeMap<String, String>,
}

/// Tables the server's own timers write while it idles (probe samples each minute, SLO rollups
/// and their cursor), whatever requests come: not a row's doing.
const TIMER_TABLES: &[&str] = &["probe_samples", "slo_rollups", "slo_cursors"];

/// SQLite's own record of AUTOINCREMENT counters: it moves with every insert into `events`,
/// which is itself compared.
const BOOKKEEPING_TABLES: &[&str] = &["sqlite_sequence"];

/// Settings the alerting loop moves as it reads new events (its cursors), whatever requests come;
/// an event a row recorded is caught in `events` itself.
const MOVING_SETTINGS: &[&str] = &["'alerts/edge-events-cursor'", "'alerts/events-cursor'"];

/// Columns that change without any request (a lease's heartbeat) or on every authenticated one
/// (a token's last use, once tokens record it): (table, column prefix).
const MOVING_COLUMNS: &[(&str, &str)] = &[("leases", "heartbeat_at"), ("tokens", "last_used")];

/// Every row of every table of the SQLite store at `path`, read-only, each row as its columns'
/// SQL literals, sorted.
async fn store_rows(path: &Path) -> BTreeMap<String, Vec<String>> {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("open the store read-only");
    let tables: Vec<String> = sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .fetch_all(&mut conn)
        .await
        .expect("list the store's tables");
    let mut all = BTreeMap::new();
    for table in
        tables.into_iter().filter(|t| !TIMER_TABLES.contains(&t.as_str()) && !BOOKKEEPING_TABLES.contains(&t.as_str()))
    {
        let columns: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT name FROM pragma_table_info('{table}')")))
                .fetch_all(&mut conn)
                .await
                .expect("list a table's columns");
        let kept: Vec<String> = columns
            .iter()
            .filter(|c| !MOVING_COLUMNS.iter().any(|(t, prefix)| *t == table && c.starts_with(prefix)))
            .map(|c| format!("quote(\"{c}\")"))
            .collect();
        if kept.is_empty() {
            continue;
        }
        let select = format!("SELECT {} FROM \"{table}\"", kept.join(" || ' | ' || "));
        let mut rows: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(select)).fetch_all(&mut conn).await.expect("read a table");
        if table == "settings" {
            rows.retain(|row| !MOVING_SETTINGS.iter().any(|key| row.starts_with(key)));
        }
        rows.sort();
        all.insert(table, rows);
    }
    conn.close().await.expect("close the store");
    all
}

/// SQLite's own files: their contents are the rows compared above, and they change when the
/// server's timers write (and `-shm` when anyone reads), so only their names and modes count.
fn is_store_file(relative: &str) -> bool {
    ["state/windlass.db", "state/windlass.db-wal", "state/windlass.db-shm", "state/windlass.db-journal"]
        .contains(&relative)
}

/// Every file and directory under `root`: its mode, and for files its size and SHA-256.
fn files(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut found = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path.strip_prefix(root).unwrap_or(&path).display().to_string();
            if is_transient(&relative) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            let mode = meta.permissions().mode() & 0o7777;
            let described = if meta.is_dir() {
                pending.push(path.clone());
                format!("dir {mode:o}")
            } else if meta.is_file() && !is_store_file(&relative) && !is_instance_output(&relative) {
                let bytes = std::fs::read(&path).unwrap_or_default();
                let hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
                format!("file {mode:o} {} bytes sha256 {hash}", meta.len())
            } else {
                format!("{:?} {mode:o}", meta.file_type())
            };
            found.insert(relative, described);
        }
    }
    found
}

/// What the deployed instances print (their logs) grows while they run, whatever requests come.
fn is_instance_output(relative: &str) -> bool {
    relative.starts_with("state/instances/") && (relative.ends_with(".log") || relative.contains("/log"))
}

/// A shim writes `status.json` through a temporary file that exists for an instant.
fn is_transient(relative: &str) -> bool {
    relative.starts_with("state/instances/") && relative.contains(".tmp-")
}

async fn snapshot(dir: &Path, store: Option<&Path>) -> Snapshot {
    let rows = match store {
        Some(store) => store_rows(store).await,
        None => BTreeMap::new(),
    };
    Snapshot { rows, files: files(dir) }
}

/// What differs between two snapshots, allowing what `writes` allows; empty when nothing does.
fn differences(before: &Snapshot, after: &Snapshot, writes: Writes) -> Vec<String> {
    let mut found = Vec::new();
    let tables: std::collections::BTreeSet<&String> = before.rows.keys().chain(after.rows.keys()).collect();
    for table in tables {
        let empty = Vec::new();
        let old = before.rows.get(table).unwrap_or(&empty);
        let new = after.rows.get(table).unwrap_or(&empty);
        let added: Vec<&String> = new.iter().filter(|r| !old.contains(r)).collect();
        let removed: Vec<&String> = old.iter().filter(|r| !new.contains(r)).collect();
        // The audit log may record the refusal itself (the roles part audits every failed or
        // denied call, as the issue's audit format asks): that is the one write a refused
        // request makes.
        let only_the_refusal_audited = table == "events"
            && removed.is_empty()
            && added.iter().all(|r| r.contains("'request.failed'") || r.to_lowercase().contains("denied"));
        let allowed = match writes {
            Writes::Nothing => only_the_refusal_audited,
            Writes::DenialAudited => {
                only_the_refusal_audited && added.iter().any(|r| r.to_lowercase().contains("denied"))
            }
            Writes::WebhookEventRemembered => table == "webhook_events" && removed.is_empty(),
        };
        if allowed || (added.is_empty() && removed.is_empty()) {
            continue;
        }
        for row in added.iter().take(3) {
            found.push(format!("table `{table}` gained {}", shorten(row)));
        }
        for row in removed.iter().take(3) {
            found.push(format!("table `{table}` lost {}", shorten(row)));
        }
    }
    let no_events = Vec::new();
    let events_before = before.rows.get("events").unwrap_or(&no_events);
    let audited_denial = after
        .rows
        .get("events")
        .is_some_and(|rows| rows.iter().any(|r| r.to_lowercase().contains("denied") && !events_before.contains(r)));
    if writes == Writes::DenialAudited && !audited_denial {
        found.push("the denial was not recorded in the audit log (`events` unchanged)".into());
    }
    for (name, old) in &before.files {
        match after.files.get(name) {
            None => found.push(format!("file `{name}` was removed")),
            Some(new) if new != old => found.push(format!("file `{name}` changed: {old} -> {new}")),
            Some(_) => {}
        }
    }
    for (name, new) in &after.files {
        if !before.files.contains_key(name) {
            found.push(format!("file `{name}` appeared: {new}"));
        }
    }
    found
}

fn shorten(text: &str) -> String {
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// The platform the API and CLI rows run against, and the tokens they present.
struct Fixtures {
    platform: Platform,
    revoked: String,
    /// Tokens made on first use: a person's (`roles`) or an expired one.
    made: BTreeMap<String, String>,
}

impl Fixtures {
    fn server_address(&self) -> SocketAddr {
        let url = &self.platform.server_url;
        url.trim_start_matches("http://").trim_end_matches('/').parse().expect("the server's address")
    }

    fn offline(&self, args: &[&str]) -> crate::harness::Run {
        let mut command = Command::new(workspace_bin("windlass"));
        command.args(args).arg("--config").arg(&self.platform.config).arg("--state").arg(self.platform.state_dir());
        let output = command.output().expect("run windlass");
        crate::harness::Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The token `auth` stands for (none: no header at all); made before the row's first
    /// snapshot, so making it is not the row's write.
    fn token(&mut self, auth: &Auth) -> Option<String> {
        match auth {
            Auth::Alice | Auth::LowerCaseBearer => Some(self.platform.token.clone()),
            Auth::Missing => None,
            Auth::Header(value) => Some(value.clone()),
            Auth::Revoked => Some(self.revoked.clone()),
            Auth::Expired => Some(self.made.get("expired").cloned().expect("made before the table when `roles` runs")),
            Auth::Person(name) => Some(self.made(name, |f| person_token(f, name))),
        }
    }

    fn made(&mut self, key: &str, make: impl FnOnce(&Fixtures) -> String) -> String {
        if let Some(token) = self.made.get(key) {
            return token.clone();
        }
        let token = make(self);
        self.made.insert(key.to_owned(), token.clone());
        token
    }
}

/// GUESSED (`roles`): a token for a declared person (`token create --for <name>`) or robot
/// (`--robot <name>`), as the roles branch's docs name them.
fn person_token(fixtures: &Fixtures, name: &str) -> String {
    let whose = if name == "ci" { "--robot" } else { "--for" };
    let run = fixtures.offline(&["token", "create", whose, name, "--name", &format!("{name}-table")]);
    assert_eq!(run.code, 0, "token create --for {name}: {}", run.stderr);
    run.stdout.trim().to_owned()
}

/// (`roles`) A token of Alice's whose expiry is already past: made as any other, then its
/// `expires_at` (the roles branch's store migration 7) set to the epoch's first millisecond in
/// the store, so nothing sleeps and no clock is read.
async fn expired_token(fixtures: &Fixtures) -> String {
    let run = fixtures.offline(&["token", "create", "--for", "alice", "--name", "alice-expired"]);
    assert_eq!(run.code, 0, "token create: {}", run.stderr);
    let path = fixtures.platform.state_dir().join("windlass.db");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("open the store");
    let done = sqlx::query("UPDATE tokens SET expires_at = 1 WHERE name = 'alice-expired'")
        .execute(&mut conn)
        .await
        .expect("tokens have an expiry");
    assert_eq!(done.rows_affected(), 1);
    conn.close().await.expect("close the store");
    run.stdout.trim().to_owned()
}

/// Sends a body larger than the API takes the way a careful client does: the answer is read
/// while the body is still being written, because the server answers 413 from the head and
/// closes without reading the rest (an HTTP client that waits for its write to finish may see
/// only the reset that close causes, not the answer before it).
async fn refused_early(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: String,
) -> std::io::Result<windlass_testkit::http::Reply> {
    use std::io::{Read as _, Write as _};
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(address)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        stream.write_all(head.as_bytes())?;
        let mut writer = stream.try_clone()?;
        // The body's write may fail half-way once the server has answered and closed.
        let written = std::thread::spawn(move || {
            let _ = writer.write_all(body.as_bytes());
        });
        let mut answer = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                // A reset after the answer: what came before it is the answer.
                Err(_) if !answer.is_empty() => break,
                Err(err) => return Err(err),
            }
        }
        let _ = written.join();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut headers = windlass_testkit::http::HeaderMap::new();
        for line in head.lines().skip(1) {
            if let Some((name, value)) = line.split_once(':')
                && let (Ok(name), Ok(value)) = (
                    windlass_testkit::http::header::HeaderName::from_bytes(name.trim().as_bytes()),
                    value.trim().parse(),
                )
            {
                headers.insert(name, value);
            }
        }
        Ok(windlass_testkit::http::Reply { status, headers, body: body.to_owned() })
    })
    .await
    .map_err(std::io::Error::other)?
}

/// What a row got: the status or exit code, the text to search, and the whole output.
struct Outcome {
    code: i32,
    message: String,
    problems: Vec<String>,
}

async fn run_api(fixtures: &mut Fixtures, case: &Case) -> Outcome {
    let Kind::Api { method, path, headers, body, auth } = &case.kind else { unreachable!() };
    let mut sent: Vec<(String, String)> = headers.clone();
    if let Some(token) = fixtures.token(auth) {
        let value = match auth {
            Auth::Header(raw) => raw.clone(),
            Auth::LowerCaseBearer => format!("bearer {token}"),
            _ => format!("Bearer {token}"),
        };
        sent.push(("authorization".into(), value));
    }
    if !body.is_empty() {
        sent.push(("content-type".into(), "application/json".into()));
    }
    let borrowed: Vec<(&str, &str)> = sent.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let sent_reply = if body.len() > 1024 * 1024 {
        refused_early(fixtures.server_address(), method, path, &sent, body.clone()).await
    } else {
        windlass_testkit::http::request(method, fixtures.server_address(), path, &borrowed, body).await
    };
    let reply = match sent_reply {
        Ok(reply) => reply,
        Err(err) => {
            return Outcome { code: -1, message: String::new(), problems: vec![format!("no answer: {err}")] };
        }
    };
    let mut problems = Vec::new();
    let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut message = reply.body.clone();
    if case.json {
        if !content_type.starts_with("application/json") {
            problems.push(format!("answered {content_type:?}, not JSON"));
        }
        match serde_json::from_str::<Value>(&reply.body) {
            Ok(value) if reply.status >= 400 => match value["error"].as_str() {
                Some(error) => message = error.to_owned(),
                None => problems.push(format!("no `error` in {}", shorten(&reply.body))),
            },
            Ok(_) => {}
            Err(err) => problems.push(format!("body not JSON ({err}): {}", shorten(&reply.body))),
        }
    }
    Outcome { code: i32::from(reply.status), message, problems }
}

fn run_cli(fixtures: &mut Fixtures, case: &Case) -> Outcome {
    let Kind::Cli { args, stdin, auth, server } = &case.kind else { unreachable!() };
    let config = fixtures.platform.config.display().to_string();
    let state = fixtures.platform.state_dir().display().to_string();
    let args: Vec<String> = args.iter().map(|a| a.replace("{config}", &config).replace("{state}", &state)).collect();
    let mut command = Command::new(workspace_bin("windlass"));
    command.args(&args).current_dir(fixtures.platform.path()).env_remove("WINDLASS_TOKEN");
    if *server {
        command.arg("--server").arg(&fixtures.platform.server_url);
    }
    if let Some(token) = fixtures.token(auth) {
        command.env("WINDLASS_TOKEN", token);
    }
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("start windlass");
    if let Some(mut input) = child.stdin.take() {
        // A command that does not read its stdin may exit first: a broken pipe is not the row's.
        let _ = input.write_all(stdin.as_deref().unwrap_or_default().as_bytes());
    }
    let output = child.wait_with_output().expect("wait for windlass");
    let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Outcome { code: output.status.code().unwrap_or(-1), message: all, problems: Vec::new() }
}

/// Runs one row and says everything that is wrong with what it got.
async fn check(fixtures: &mut Fixtures, case: &Case) -> Vec<String> {
    // Tokens a row presents are made before its first snapshot.
    if let Kind::Api { auth, .. } | Kind::Cli { auth, .. } = &case.kind {
        fixtures.token(auth);
    }
    let (outcome, before, after) = match &case.kind {
        Kind::Config { toml } => {
            let test = Windlass::new();
            test.write("windlass.toml", toml);
            let before = snapshot(test.path(), None).await;
            let run = test.run(&["validate", "production"]);
            let after = snapshot(test.path(), None).await;
            (Outcome { code: run.code, message: run.all_output(), problems: Vec::new() }, before, after)
        }
        Kind::Api { .. } | Kind::Cli { .. } => {
            let store = fixtures.platform.state_dir().join("windlass.db");
            let before = snapshot(fixtures.platform.path(), Some(&store)).await;
            let outcome = match case.kind {
                Kind::Api { .. } => run_api(fixtures, case).await,
                _ => run_cli(fixtures, case),
            };
            let after = snapshot(fixtures.platform.path(), Some(&store)).await;
            (outcome, before, after)
        }
    };
    let mut problems = outcome.problems;
    if outcome.code != case.code {
        problems.push(format!("got {} (expected {}): {}", outcome.code, case.code, shorten(&outcome.message)));
    }
    for needle in &case.contains {
        if !outcome.message.contains(needle.as_str()) {
            problems.push(format!("the message does not say {needle:?}: {}", shorten(&outcome.message)));
        }
    }
    if outcome.message.contains(&fixtures.platform.token) {
        problems.push("the answer shows Alice's token".into());
    }
    problems.extend(differences(&before, &after, case.writes));
    problems
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_naming_what_is_wrong_and_writes_nothing() {
    let mut extra = format!("\n[alerts]\npagerduty_webhook_secret = \"{PD_WEBHOOK_SECRET}\"\n");
    if ENABLED.contains(&"roles") {
        extra.push_str(ACCESS_TOML);
    }
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", &extra));
    // A live service: the rows about services, scale and logs meet a running `api`, and its
    // probes stay up (a probe going down would write alerts in the middle of the table).
    platform.deploy(&["--reason", "the table's platform"]);
    let revoked = platform.add_user("rita");
    let mut fixtures = Fixtures { platform, revoked, made: BTreeMap::new() };
    let run = fixtures.offline(&["token", "revoke", "--name", "rita"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // FINDING, worked around: the ack-link signing secret is made on first use, so the first
    // acknowledgement link anyone posts, valid or not and without a token, writes
    // `alerts.link_secret` into the store's settings (the `webhook` part moves that secret out
    // of the store). One link posted here makes it before the table's snapshots.
    let address = fixtures.server_address();
    // Its answer is the `POST /ack/{}` rows' to check.
    windlass_testkit::http::request("POST", address, "/ack/warm-up", &[], "").await.expect("the server answers");

    if ENABLED.contains(&"roles") {
        let expired = expired_token(&fixtures).await;
        fixtures.made.insert("expired".into(), expired);
    }

    let cases = table();
    let parts = ["hold", "webhook", "roles", "policy", "finding"];
    for case in &cases {
        assert!(
            case.pending.is_none_or(|p| parts.contains(&p)),
            "{}: no part of #19 is called {:?}",
            case.name,
            case.pending
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for case in &cases {
        assert!(names.insert(case.name.as_str()), "two rows are named {:?}", case.name);
    }
    let mut failures = Vec::new();
    let mut skipped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut replaced = Vec::new();
    let mut ran = 0;
    for case in &cases {
        if let Some(part) = case.pending.filter(|p| !ENABLED.contains(p)) {
            skipped.entry(part).or_default().push(&case.name);
            continue;
        }
        if let Some(part) = case.replaced_by.filter(|p| ENABLED.contains(p)) {
            replaced.push(format!("{} (by `{part}`)", case.name));
            continue;
        }
        ran += 1;
        for problem in check(&mut fixtures, case).await {
            failures.push(format!("[{}] {problem}", case.name));
        }
    }
    // The check itself can fail: a request that does write (a valid silence), run as a row that
    // expects a refusal, is caught by status and by the store's snapshot.
    let writes = api(
        "a valid silence",
        "POST",
        "/api/v1/silences",
        r#"{"environment":"production","for":"1m","reason":"the table's own check"}"#,
    )
    .expect(400, &["nothing"]);
    let caught = check(&mut fixtures, &writes).await;
    for expected in ["got 201 (expected 400)", "table `alert_silences` gained", "table `events` gained"] {
        assert!(caught.iter().any(|p| p.contains(expected)), "the check missed {expected:?}: {caught:#?}");
    }

    // Skipped rows are said, never silent: each waits for its part of #19 to be merged.
    let waiting: usize = skipped.values().map(Vec::len).sum();
    eprintln!("bad input: {ran} rows ran, {waiting} skipped until their part of #19 is merged");
    for (part, rows) in &skipped {
        eprintln!("  pending `{part}` ({}): {}", rows.len(), rows.join("; "));
    }
    if !replaced.is_empty() {
        eprintln!("  replaced by a pending row of an enabled part: {}", replaced.join("; "));
    }
    assert!(ran >= 60, "the table must hold at least 60 running rows, {ran} ran");
    assert!(failures.is_empty(), "{} problems in {} rows:\n{}", failures.len(), ran, failures.join("\n"));
}
