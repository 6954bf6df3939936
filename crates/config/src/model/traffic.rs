//! A service's place at the edge: its routes, health check, failover to a secondary and rate
//! limits.
//!
//! These are what the edge is told; this module must not talk to the edge.

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, integer_in, one_of};
use crate::units::{Duration, Rate};

use super::count;

/// Where a service is reachable through the edge.
#[derive(Debug, Clone)]
pub struct Route {
    /// Exact (`api.maily.localhost`) or wildcard (`*.maily.localhost`); any host when absent.
    pub host: Option<String>,
    pub path: String,
    pub span: std::ops::Range<usize>,
}

impl Decode for Route {
    fn expected() -> String {
        "{ host = \"api.example.localhost\", path = \"/\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let host: Option<Spanned<String>> = t.optional(cx, "host");
        let path: Option<Spanned<String>> = t.optional(cx, "path");
        t.finish(cx);
        if let Some(host) = &host {
            let bare = host.value.strip_prefix("*.").unwrap_or(&host.value);
            let valid = !bare.is_empty()
                && bare.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !valid {
                cx.error(host.span.clone(), format!("invalid host `{}` in `{}`", host.value, at.path)).expected =
                    Some("a host name such as \"api.example.com\" or \"*.example.com\"".into());
            }
        }
        if let Some(path) = &path
            && !path.value.starts_with('/')
        {
            cx.error(path.span.clone(), format!("route path `{}` must start with `/`", path.value));
        }
        Some(Route {
            host: host.map(|h| h.value.to_ascii_lowercase()),
            path: path.map_or_else(|| "/".to_owned(), |p| p.value),
            span: value.span(),
        })
    }
}

/// A route written as one table or an array of them (both documented as `route.host`, ...).
pub(super) fn decode_routes(cx: &mut Cx, value: &Value, at: &At) -> Option<Vec<Route>> {
    let Some(items) = value.get_ref().as_array() else {
        return Route::decode(cx, value, at).map(|r| vec![r]);
    };
    let decoded: Vec<Option<Route>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| Route::decode(cx, item, &At { path: format!("{}[{i}]", at.path), schema: at.schema.clone() }))
        .collect();
    decoded.into_iter().collect()
}

#[derive(Debug, Clone)]
pub struct Health {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
    /// How long a new instance may take to become healthy before its start counts as failed.
    pub start_timeout: Duration,
}

impl Decode for Health {
    fn expected() -> String {
        "{ path = \"/health\", interval = \"1s\", ... }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let path: Spanned<String> = t.or(cx, "path", Spanned::new("/health".to_owned(), 0..0));
        let health = Health {
            path: path.value.clone(),
            interval: t.or(cx, "interval", Duration::from_secs(1)),
            timeout: t.or(cx, "timeout", Duration::from_millis(500)),
            healthy_after: count(cx, &mut t, "healthy_after", 2),
            unhealthy_after: count(cx, &mut t, "unhealthy_after", 3),
            start_timeout: t.or(cx, "start_timeout", Duration::from_secs(60)),
        };
        t.finish(cx);
        if !path.value.starts_with('/') {
            cx.error(path.span.clone(), format!("health path `{}` must start with `/`", path.value));
        }
        use crate::check::edge_limits;
        if path.value.len() > edge_limits::MAX_PATH {
            let problem = format!("is {} bytes long, more than {}", path.value.len(), edge_limits::MAX_PATH);
            cx.error(path.span, format!("`{}.path` {problem}", at.path));
        }
        // The edge's admin API refuses a spec outside these: refused here, not at deploy time.
        for (field, given, (least, most)) in [
            ("interval", health.interval, edge_limits::HEALTH_INTERVAL),
            ("timeout", health.timeout, edge_limits::HEALTH_TIMEOUT),
        ] {
            if given < least || given > most {
                cx.error(
                    value.span(),
                    format!("`{}.{field}` is {given}, outside what the edge takes: {least} to {most}", at.path),
                );
            }
        }
        if health.timeout > health.interval {
            cx.warning(
                value.span(),
                format!("`{}`: timeout {} is longer than interval {}", at.path, health.timeout, health.interval),
            );
        }
        Some(health)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailoverMode {
    #[default]
    Automatic,
    Manual,
}

/// A secondary pool that takes the traffic when the primary fails: either instances that run
/// elsewhere (another host or region, `secondary`), or standby instances Windlass runs itself
/// (`instances`), which every deploy updates to the primary's build.
#[derive(Debug, Clone)]
pub struct Failover {
    /// `address:port` of each secondary instance that runs outside Windlass (empty when managed).
    pub secondary: Vec<Spanned<String>>,
    /// How many secondary instances Windlass runs and deploys itself.
    pub managed: Option<u32>,
    pub after_failures: u32,
    pub failback_after: u32,
    pub mode: FailoverMode,
}

impl Decode for Failover {
    fn expected() -> String {
        "{ secondary = [\"127.0.0.2:8000\"], after_failures = 3 } or { instances = 1 }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let managed = t.get(cx, "instances").and_then(|v| integer_in(cx, v, &at.key("instances"), 1..=1000));
        let secondary: Option<Vec<Spanned<String>>> =
            if managed.is_some() { t.optional(cx, "secondary") } else { t.required(cx, "secondary") };
        let after_failures = count(cx, &mut t, "after_failures", 3);
        let failback_after = count(cx, &mut t, "failback_after", 5);
        let mode = t
            .get(cx, "mode")
            .and_then(|v| {
                one_of(
                    cx,
                    v,
                    &at.key("mode"),
                    &[("automatic", FailoverMode::Automatic), ("manual", FailoverMode::Manual)],
                )
            })
            .unwrap_or_default();
        t.finish(cx);
        if managed.is_some() && secondary.is_some() {
            cx.error(value.span(), format!("`{}` has both `secondary` and `instances`", at.path)).help = Some(
                "`secondary` names instances that run elsewhere; `instances` makes Windlass run and deploy them: choose one"
                    .into(),
            );
            return None;
        }
        let secondary = match (managed, secondary) {
            (Some(_), _) => Vec::new(),
            (None, secondary) => secondary?,
        };
        for address in &secondary {
            if address.value.parse::<std::net::SocketAddr>().is_err() {
                cx.error(address.span.clone(), format!("invalid secondary address `{}`", address.value)).expected =
                    Some("an IP address and port such as \"127.0.0.2:8000\" or \"[::1]:8000\"".into());
            }
        }
        if secondary.is_empty() && managed.is_none() {
            cx.error(value.span(), format!("`{}.secondary` is empty", at.path));
        }
        Some(Failover { secondary, managed: managed.map(|n| n as u32), after_failures, failback_after, mode })
    }
}

/// Token-bucket rate limits answered with 429 and `Retry-After`.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    /// Per client IP address.
    pub per_client: Option<Rate>,
    /// For the whole route, all clients together.
    pub per_route: Option<Rate>,
    /// Requests allowed in a burst above the rate (default: one second's worth).
    pub burst: Option<u32>,
}

/// A burst within the edge's bounds (`check::edge_limits::BURST`): 0 would refuse every request.
fn burst(cx: &mut Cx, t: &mut Table) -> Option<u32> {
    let at = t.at().key("burst");
    let value = t.get(cx, "burst")?;
    integer_in(cx, value, &at, crate::check::edge_limits::BURST).and_then(|n| u32::try_from(n).ok())
}

impl Decode for RateLimit {
    fn expected() -> String {
        "{ per_client = \"100/s\", per_route = \"1000/s\", burst = 50 }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let limit = RateLimit {
            per_client: t.optional(cx, "per_client"),
            per_route: t.optional(cx, "per_route"),
            burst: burst(cx, &mut t),
        };
        t.finish(cx);
        Some(limit)
    }
}

#[cfg(test)]
mod failover_tests {
    use crate::{Source, parse};

    fn service(body: &str) -> crate::Parsed {
        let text = format!("[project]\nname = \"shop\"\n[environments.production]\n[services.api]\n{body}\n");
        parse(&Source::new("windlass.toml", text))
    }

    fn rendered(parsed: &crate::Parsed) -> String {
        parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
    }

    /// What the edge's admin API refuses, `validate` refuses: the bounds of `check::edge_limits`,
    /// each end taken and the value past it refused.
    #[test]
    fn health_and_burst_stay_within_what_the_edge_takes() {
        for taken in [
            "health = { interval = \"10ms\", timeout = \"10ms\" }",
            "health = { interval = \"1h\", timeout = \"10m\" }",
            "rate_limit = { per_client = \"1/h\", burst = 1 }",
            "rate_limit = { per_client = \"4294967295/s\", burst = 1000000 }",
        ] {
            let parsed = service(&format!("run = \"demo\"\n{taken}"));
            assert!(!parsed.has_errors(), "{taken}: {}", rendered(&parsed));
        }
        for (refused, says) in [
            ("health = { interval = \"9ms\" }", "`services.api.health.interval` is 9ms"),
            ("health = { interval = \"1h1ms\" }", "`services.api.health.interval`"),
            ("health = { timeout = \"0ms\" }", "`services.api.health.timeout` is 0s"),
            ("health = { timeout = \"10m1ms\" }", "`services.api.health.timeout`"),
            ("rate_limit = { per_client = \"1/s\", burst = 0 }", "services.api.rate_limit.burst"),
            ("rate_limit = { per_client = \"1/s\", burst = 1000001 }", "services.api.rate_limit.burst"),
        ] {
            let text = rendered(&service(refused));
            assert!(text.contains(says), "{refused}: {text}");
        }
        let long = format!("health = {{ path = \"/{}\" }}", "a".repeat(2048));
        assert!(rendered(&service(&long)).contains("more than 2048"));
    }

    #[test]
    fn a_secondary_is_either_static_addresses_or_managed_instances() {
        let managed = service("run = \"api\"\nfailover = { instances = 2, mode = \"manual\" }");
        assert!(!managed.has_errors(), "{}", rendered(&managed));
        let failover = managed.config.services["api"].failover.clone().unwrap();
        assert_eq!((failover.managed, failover.secondary.len()), (Some(2), 0));

        let both = service("run = \"api\"\nfailover = { instances = 1, secondary = [\"127.0.0.2:80\"] }");
        assert!(rendered(&both).contains("has both `secondary` and `instances`"), "{}", rendered(&both));
        let neither = service("run = \"api\"\nfailover = { mode = \"manual\" }");
        assert!(rendered(&neither).contains("missing key `secondary`"), "{}", rendered(&neither));
        let unmanaged = service("upstreams = [\"127.0.0.1:9000\"]\nfailover = { instances = 1 }");
        assert!(rendered(&unmanaged).contains("no `run` command to start them"), "{}", rendered(&unmanaged));
        let zero = service("run = \"api\"\nfailover = { instances = 0 }");
        assert!(zero.has_errors(), "0 standby instances is no secondary");
    }
}
