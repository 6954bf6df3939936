//! `[access]`: who may use the control plane's API, and for what. People and robots (CI) are
//! declared here, people gather in groups, and grants give people, groups and robots a role on
//! environments and service patterns. Nothing is granted by default.
//!
//! This module reads the keys and checks the references (an unknown person, group, robot, role or
//! environment in a grant is an error naming it; a robot is never given `approver` or `admin`).
//! What each role permits is decided by `windlass-server` (`access.rs`), which serves the API.

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, named_entries, one_of};
use crate::model::Config;

/// The whole `[access]` table.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub people: IndexMap<String, AccessPerson>,
    pub groups: IndexMap<String, AccessGroup>,
    pub robots: IndexMap<String, Robot>,
    pub grants: Vec<Grant>,
}

/// Someone who holds tokens.
#[derive(Debug, Clone)]
pub struct AccessPerson {
    pub name: Spanned<String>,
    pub email: Option<String>,
    /// How the person is shown (the web UI); the name otherwise.
    pub display: Option<String>,
}

/// People gathered under one name, so that grants name the group.
#[derive(Debug, Clone)]
pub struct AccessGroup {
    pub name: Spanned<String>,
    pub members: Vec<Spanned<String>>,
}

/// A named machine caller (CI). Robots never approve, so they are never `approver` or `admin`.
#[derive(Debug, Clone)]
pub struct Robot {
    pub name: Spanned<String>,
    pub description: Option<String>,
}

/// A role, as `[access]` names it. What each permits is listed in `docs/access.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessRole {
    Viewer,
    Deployer,
    Approver,
    Operator,
    Admin,
}

impl AccessRole {
    pub const ALL: [AccessRole; 5] =
        [AccessRole::Viewer, AccessRole::Deployer, AccessRole::Approver, AccessRole::Operator, AccessRole::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessRole::Viewer => "viewer",
            AccessRole::Deployer => "deployer",
            AccessRole::Approver => "approver",
            AccessRole::Operator => "operator",
            AccessRole::Admin => "admin",
        }
    }
}

impl Decode for AccessRole {
    fn expected() -> String {
        "one of \"viewer\", \"deployer\", \"approver\", \"operator\", \"admin\"".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let choices: Vec<(&'static str, AccessRole)> = AccessRole::ALL.iter().map(|r| (r.as_str(), *r)).collect();
        one_of(cx, value, at, &choices)
    }
}

/// `[[access.grants]]`: these people, groups and robots hold `role` on these environments and
/// services.
#[derive(Debug, Clone)]
pub struct Grant {
    pub people: Vec<Spanned<String>>,
    pub groups: Vec<Spanned<String>>,
    pub robots: Vec<Spanned<String>>,
    pub role: Spanned<AccessRole>,
    /// Environment names, or `"*"` for every environment.
    pub environments: Vec<Spanned<String>>,
    /// Service patterns: a name, or a glob with `*` (`"api*"`, `"*"`). Default: every service.
    pub services: Vec<String>,
}

impl Grant {
    /// The grant covers `environment`.
    pub fn covers_environment(&self, environment: &str) -> bool {
        self.environments.iter().any(|e| e.value == "*" || e.value == environment)
    }

    /// The grant covers every environment (`"*"`).
    pub fn covers_every_environment(&self) -> bool {
        self.environments.iter().any(|e| e.value == "*")
    }

    /// One of the grant's service patterns matches `service`.
    pub fn covers_service(&self, service: &str) -> bool {
        self.services.iter().any(|pattern| glob_matches(pattern, service))
    }

    /// The grant covers every service (a `"*"` pattern).
    pub fn covers_every_service(&self) -> bool {
        self.services.iter().any(|pattern| pattern == "*")
    }
}

/// `pattern` with `*` standing for any run of characters (none included) matches `text`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else { return pattern == text };
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: an exact name.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A person, group or robot name: what audit records and deploy records show.
pub fn is_access_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

fn check_name(cx: &mut Cx, name: &Spanned<String>, what: &str) {
    if !is_access_name(&name.value) {
        cx.error(name.span.clone(), format!("invalid {what} name `{}`", name.value)).expected =
            Some("1-64 letters, digits, `.`, `-`, `_` or `@`".into());
    }
}

impl Decode for Access {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let people = t
            .get(cx, "people")
            .map(|v| named_entries(cx, v, &at.key("people"), "<person>", AccessPerson::decode))
            .unwrap_or_default();
        let groups = t
            .get(cx, "groups")
            .map(|v| named_entries(cx, v, &at.key("groups"), "<group>", AccessGroup::decode))
            .unwrap_or_default();
        let robots = t
            .get(cx, "robots")
            .map(|v| named_entries(cx, v, &at.key("robots"), "<robot>", Robot::decode))
            .unwrap_or_default();
        let grants = t.or(cx, "grants", Vec::new());
        t.finish(cx);
        Some(Access { people, groups, robots, grants })
    }
}

impl AccessPerson {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        check_name(cx, &name, "person");
        let mut t = Table::open(cx, value, at)?;
        let email: Option<Spanned<String>> = t.optional(cx, "email");
        let display = t.optional(cx, "display");
        t.finish(cx);
        if let Some(email) = &email
            && !crate::formats::is_email(&email.value)
        {
            cx.error(email.span.clone(), format!("`{}` is not an email address", email.value));
        }
        Some(AccessPerson { name, email: email.map(|e| e.value), display })
    }
}

impl AccessGroup {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        check_name(cx, &name, "group");
        let mut t = Table::open(cx, value, at)?;
        let members = t.required(cx, "members");
        t.finish(cx);
        Some(AccessGroup { name, members: members? })
    }
}

impl Robot {
    fn decode(cx: &mut Cx, name: Spanned<String>, value: &Value, at: &At) -> Option<Self> {
        check_name(cx, &name, "robot");
        let mut t = Table::open(cx, value, at)?;
        let description = t.optional(cx, "description");
        t.finish(cx);
        Some(Robot { name, description })
    }
}

impl Decode for Grant {
    fn expected() -> String {
        "a table such as { people = [\"alice\"], role = \"deployer\", environments = [\"staging\"] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let people: Vec<Spanned<String>> = t.or(cx, "people", Vec::new());
        let groups: Vec<Spanned<String>> = t.or(cx, "groups", Vec::new());
        let robots: Vec<Spanned<String>> = t.or(cx, "robots", Vec::new());
        let role = t.required(cx, "role");
        let environments: Option<Vec<Spanned<String>>> = t.required(cx, "environments");
        let services: Vec<Spanned<String>> = t.or(cx, "services", vec![Spanned::new("*".to_owned(), 0..0)]);
        let span = t.span();
        t.finish(cx);
        if people.is_empty() && groups.is_empty() && robots.is_empty() {
            cx.error(span.clone(), "this grant gives its role to nobody").help =
                Some("name `people`, `groups` or `robots`".into());
        }
        let environments = environments?;
        if environments.is_empty() {
            cx.error(span.clone(), "this grant covers no environment").help =
                Some("name environments, or `\"*\"` for every one".into());
        }
        if services.is_empty() {
            cx.error(span, "this grant covers no service").help =
                Some("name services or patterns such as `\"api*\"`, or leave `services` out for every one".into());
        }
        for pattern in &services {
            let ok = !pattern.value.is_empty()
                && pattern.value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*');
            if !ok {
                cx.error(pattern.span.clone(), format!("invalid service pattern `{}`", pattern.value)).expected =
                    Some("a service name, or a pattern with `*` such as \"api*\"".into());
            }
        }
        Some(Grant {
            people,
            groups,
            robots,
            role: role?,
            environments,
            services: services.into_iter().map(|s| s.value).collect(),
        })
    }
}

/// The references of `[access]`: every name a group or grant gives is declared, no name is both a
/// person and a robot, and robots are never approvers or admins.
pub(crate) fn check(cx: &mut Cx, config: &Config) {
    let access = &config.access;
    let people: Vec<&str> = access.people.keys().map(String::as_str).collect();
    let groups: Vec<&str> = access.groups.keys().map(String::as_str).collect();
    let robots: Vec<&str> = access.robots.keys().map(String::as_str).collect();
    let mut environments: Vec<&str> = config.environments.keys().map(String::as_str).collect();
    for robot in access.robots.values() {
        if access.people.contains_key(&robot.name.value) {
            cx.error(robot.name.span.clone(), format!("robot `{}` has the name of a person", robot.name.value)).help =
                Some("tokens and audit records name people and robots alike: give the robot its own name".into());
        }
    }
    for group in access.groups.values() {
        for member in &group.members {
            if access.robots.contains_key(&member.value) {
                cx.error(member.span.clone(), format!("robot `{}` cannot be a group member", member.value)).help =
                    Some("groups gather people; grant the robot its role directly with `robots = [...]`".into());
            } else if !access.people.contains_key(&member.value) {
                crate::check::unknown(cx, member, "person", &people);
            }
        }
    }
    environments.push("*");
    for grant in &access.grants {
        for person in &grant.people {
            if !access.people.contains_key(&person.value) {
                crate::check::unknown(cx, person, "person", &people);
                if let Some(diagnostic) = cx.diagnostics.last_mut() {
                    diagnostic.help.get_or_insert_with(|| format!("declare them: [access.people.{}]", person.value));
                }
            }
        }
        for group in &grant.groups {
            if !access.groups.contains_key(&group.value) {
                crate::check::unknown(cx, group, "group", &groups);
            }
        }
        for robot in &grant.robots {
            if !access.robots.contains_key(&robot.value) {
                crate::check::unknown(cx, robot, "robot", &robots);
            }
        }
        for environment in &grant.environments {
            if !environments.contains(&environment.value.as_str()) {
                crate::check::unknown(cx, environment, "environment", &environments);
            }
        }
        if !grant.robots.is_empty() && matches!(grant.role.value, AccessRole::Approver | AccessRole::Admin) {
            cx.error(
                grant.role.span.clone(),
                format!("robots cannot be `{}`: robots never approve", grant.role.value.as_str()),
            )
            .help = Some("grant robots `viewer`, `deployer` or `operator`; approvals are people's".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::glob_matches;

    fn parse_text(text: &str) -> crate::Parsed {
        crate::parse(&crate::Source::new("windlass.toml", text))
    }

    const BASE: &str = "[project]\nname = \"shop\"\n[environments.staging]\n[environments.production]\n";

    #[test]
    fn globs() {
        assert!(glob_matches("*", "api"));
        assert!(glob_matches("api*", "api"));
        assert!(glob_matches("api*", "api-v2"));
        assert!(!glob_matches("api*", "web-api"));
        assert!(glob_matches("*-worker", "mail-worker"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxbyy"));
        assert!(glob_matches("web", "web"));
        assert!(!glob_matches("web", "webx"));
        assert!(!glob_matches("ab*ba", "aba"));
    }

    #[test]
    fn access_is_read() {
        let parsed = parse_text(&format!(
            "{BASE}[access.people.alice]\nemail = \"alice@example.com\"\ndisplay = \"Alice\"\n\
             [access.people.bob]\n[access.groups.sre]\nmembers = [\"alice\", \"bob\"]\n\
             [access.robots.ci]\ndescription = \"the pipeline\"\n\
             [[access.grants]]\ngroups = [\"sre\"]\nrole = \"operator\"\nenvironments = [\"*\"]\n\
             [[access.grants]]\nrobots = [\"ci\"]\nrole = \"deployer\"\nenvironments = [\"staging\"]\nservices = [\"api*\"]\n"
        ));
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
        let access = parsed.config.access;
        assert_eq!(access.people.len(), 2);
        assert_eq!(access.groups["sre"].members.len(), 2);
        assert_eq!(access.grants.len(), 2);
        assert!(access.grants[0].covers_environment("production") && access.grants[0].covers_every_service());
        assert!(access.grants[1].covers_service("api-v2") && !access.grants[1].covers_service("web"));
        assert!(!access.grants[1].covers_environment("production"));
    }

    #[test]
    fn bad_access_is_an_error_naming_what_is_wrong() {
        let cases = [
            (
                "[[access.grants]]\npeople = [\"mallory\"]\nrole = \"viewer\"\nenvironments = [\"staging\"]\n",
                "unknown person `mallory`",
            ),
            (
                "[access.people.a]\n[[access.grants]]\ngroups = [\"ops\"]\nrole = \"viewer\"\nenvironments = [\"staging\"]\n",
                "unknown group `ops`",
            ),
            (
                "[access.people.a]\n[[access.grants]]\npeople = [\"a\"]\nrole = \"god\"\nenvironments = [\"staging\"]\n",
                "`god` is not known",
            ),
            (
                "[access.people.a]\n[[access.grants]]\npeople = [\"a\"]\nrole = \"viewer\"\nenvironments = [\"prod\"]\n",
                "unknown environment `prod`",
            ),
            (
                "[access.robots.ci]\n[[access.grants]]\nrobots = [\"ci\"]\nrole = \"approver\"\nenvironments = [\"*\"]\n",
                "robots never approve",
            ),
            (
                "[access.robots.ci]\n[[access.grants]]\nrobots = [\"ci\"]\nrole = \"admin\"\nenvironments = [\"*\"]\n",
                "robots never approve",
            ),
            ("[access.groups.sre]\nmembers = [\"zed\"]\n", "unknown person `zed`"),
            ("[access.people.\"a b\"]\n", "invalid person name"),
            (
                "[access.people.a]\n[[access.grants]]\npeople = [\"a\"]\nrole = \"viewer\"\n",
                "missing key `environments`",
            ),
            (
                "[access.people.a]\n[[access.grants]]\npeople = [\"a\"]\nrole = \"viewer\"\nenvironments = [\"*\"]\nservices = [\"../x\"]\n",
                "invalid service pattern",
            ),
            ("[access.people.a]\nrole = \"admin\"\n", "unknown key `role`"),
            ("[access]\nadmins = [\"a\"]\n", "unknown key `admins`"),
        ];
        for (text, expected) in cases {
            let parsed = parse_text(&format!("{BASE}{text}"));
            assert!(parsed.has_errors(), "{text}");
            let messages: Vec<&str> = parsed.diagnostics.iter().map(|d| d.message.as_str()).collect();
            assert!(
                parsed.diagnostics.iter().any(|d| d.message.contains(expected)),
                "{text}: wanted {expected:?} in {messages:?}"
            );
        }
    }
}
