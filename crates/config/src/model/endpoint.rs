//! `services.<service>.endpoints`: the API endpoints the edge counts apart (answers by status
//! class and exact counts under each latency threshold), for latency objectives per endpoint.
//!
//! A path pattern is literal segments, `{name}` for any one segment and a last `*` for whatever
//! follows; it must not match anything itself (the edge does).

use indexmap::IndexMap;

use crate::decode::{At, Cx, Decode, Spanned, Table, Value};
use crate::units::Duration;

use super::{Service, Slo, check_slug};

/// At most this many endpoints a service (the edge adds one, `other`, for the rest).
pub const MAX_ENDPOINTS: usize = 32;
/// At most this many distinct latency thresholds a service (its SLO's and its endpoints').
pub const MAX_LATENCY_THRESHOLDS: usize = 4;
/// The longest latency threshold the edge counts under.
pub const MAX_LATENCY_THRESHOLD: Duration = Duration::from_secs(600);
/// The methods an endpoint can be limited to.
pub const HTTP_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"];
/// The endpoint the edge counts unmatched requests under; no configured endpoint may take it.
pub const OTHER_ENDPOINT: &str = "other";

/// One endpoint of a service.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub name: Spanned<String>,
    /// `/users/{id}`, `/static/*`: see [`endpoint_path_problem`].
    pub path: String,
    /// Upper case; every method when empty.
    pub methods: Vec<String>,
    /// Latency targets of this endpoint alone, counted under besides the service's SLO targets.
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

/// What is wrong with an endpoint path pattern, if anything: it starts with `/`; each segment is
/// literal (without `{`, `}`, `*`, `?`, `#`, spaces or control bytes), a whole `{name}`, or `*`
/// as the last one.
pub fn endpoint_path_problem(path: &str) -> Option<String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some(format!("`{path}` must start with /"));
    };
    let segments: Vec<&str> = rest.split('/').collect();
    for (index, segment) in segments.iter().enumerate() {
        if *segment == "*" {
            if index + 1 != segments.len() {
                return Some(format!("`{path}`: `*` may only be the last segment"));
            }
        } else if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Some(format!("`{path}`: `{segment}` is not a parameter such as `{{id}}`"));
            }
        } else if segment.contains(['{', '}', '*']) {
            return Some(format!(
                "`{path}`: segment `{segment}` mixes text with `{{`, `}}` or `*` (a parameter or `*` is a whole segment)"
            ));
        } else if segment.contains(['?', '#']) || segment.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            return Some(format!("`{path}`: segment `{segment}` has characters a request path cannot have"));
        }
    }
    None
}

impl Decode for Endpoint {
    fn expected() -> String {
        "{ name = \"users\", path = \"/users/{id}\", methods = [\"GET\"] }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let name: Option<Spanned<String>> = t.required(cx, "name");
        let path: Option<Spanned<String>> = t.required(cx, "path");
        let methods: Vec<Spanned<String>> = t.or(cx, "methods", Vec::new());
        let (p95, p99) = t
            .get(cx, "latency")
            .and_then(|v| {
                let at = at.key("latency");
                let mut l = Table::open(cx, v, &at)?;
                let pair: (Option<Spanned<Duration>>, Option<Spanned<Duration>>) =
                    (l.optional(cx, "p95"), l.optional(cx, "p99"));
                l.finish(cx);
                Some(pair)
            })
            .unwrap_or((None, None));
        t.finish(cx);
        if let Some(name) = &name
            && check_slug(cx, name, "endpoint")
            && name.value == OTHER_ENDPOINT
        {
            cx.error(name.span.clone(), format!("the endpoint name `{OTHER_ENDPOINT}` is taken")).help =
                Some(format!("`{OTHER_ENDPOINT}` counts the requests that match no endpoint; choose another name"));
        }
        if let Some(path) = &path
            && let Some(problem) = endpoint_path_problem(&path.value)
        {
            cx.error(path.span.clone(), format!("invalid endpoint path in `{}`: {problem}", at.path)).expected =
                Some("literal segments, `{name}` for one segment, a last `*` for the rest: \"/users/{id}\"".into());
        }
        for method in &methods {
            if !HTTP_METHODS.contains(&method.value.as_str()) {
                let diagnostic = cx.error(method.span.clone(), format!("unknown HTTP method `{}`", method.value));
                diagnostic.expected = Some(format!("one of {}", HTTP_METHODS.join(", ")));
                if HTTP_METHODS.contains(&method.value.to_ascii_uppercase().as_str()) {
                    diagnostic.help =
                        Some(format!("methods are upper case: \"{}\"", method.value.to_ascii_uppercase()));
                }
            }
        }
        for target in [&p95, &p99].into_iter().flatten() {
            check_threshold(cx, target.span.clone(), target.value, &format!("`{}.latency`", at.path));
        }
        Some(Endpoint {
            name: name?,
            path: path?.value,
            methods: methods.into_iter().map(|m| m.value).collect(),
            p95: p95.map(|d| d.value),
            p99: p99.map(|d| d.value),
        })
    }
}

fn check_threshold(cx: &mut Cx, span: std::ops::Range<usize>, target: Duration, what: &str) {
    if target < Duration::from_millis(1) || target > MAX_LATENCY_THRESHOLD {
        cx.error(span, format!("{what}: the latency target {target} is outside 1ms..10m")).help =
            Some("the edge counts requests under each latency target from 1 ms to 10 minutes".into());
    }
}

/// Reads `endpoints = [...]`: at most [`MAX_ENDPOINTS`], names unique.
pub(super) fn decode_endpoints(cx: &mut Cx, value: &Value, at: &At) -> Vec<Endpoint> {
    let Some(endpoints) = Vec::<Endpoint>::decode(cx, value, at) else { return Vec::new() };
    if endpoints.len() > MAX_ENDPOINTS {
        cx.error(value.span(), format!("`{}` lists {} endpoints, at most {MAX_ENDPOINTS}", at.path, endpoints.len()))
            .help = Some("requests that match no endpoint are counted as `other`".into());
    }
    let mut seen: IndexMap<&str, &Spanned<String>> = IndexMap::new();
    for endpoint in &endpoints {
        if let Some(first) = seen.insert(&endpoint.name.value, &endpoint.name) {
            let line = cx.source.position(first.span.start).line;
            cx.error(
                endpoint.name.span.clone(),
                format!("endpoint `{}` is named twice in `{}`", endpoint.name.value, at.path),
            )
            .help = Some(format!("the first is on line {line}"));
        }
    }
    endpoints
}

/// The latency thresholds (ms, ascending, distinct) the edge counts a service's requests under:
/// its SLO's p95 and p99 targets and its endpoints' own.
pub fn latency_thresholds_ms(service: &Service, slo: Option<&Slo>) -> Vec<u64> {
    let slo_targets = slo.into_iter().flat_map(|s| [s.p95, s.p99]);
    let endpoint_targets = service.endpoints.iter().flat_map(|e| [e.p95, e.p99]);
    let mut thresholds: Vec<u64> = slo_targets
        .chain(endpoint_targets)
        .flatten()
        .map(|d| u64::try_from(d.as_std().as_millis()).unwrap_or(u64::MAX))
        .collect();
    thresholds.sort_unstable();
    thresholds.dedup();
    thresholds
}

/// A service's latency targets (its SLO's and its endpoints') are at most
/// [`MAX_LATENCY_THRESHOLDS`] distinct values, each within 1 ms..10 min.
pub(super) fn check_latency_thresholds(
    cx: &mut Cx,
    services: &IndexMap<String, Service>,
    slos: &IndexMap<String, Slo>,
) {
    for (name, slo) in slos {
        for target in [slo.p95, slo.p99].into_iter().flatten() {
            check_threshold(cx, slo.service.span.clone(), target, &format!("`slo.{name}.latency`"));
        }
    }
    for (name, service) in services {
        let thresholds = latency_thresholds_ms(service, slos.get(name));
        if thresholds.len() > MAX_LATENCY_THRESHOLDS {
            let listed = thresholds.iter().map(|ms| Duration::from_millis(*ms).to_string()).collect::<Vec<_>>();
            cx.error(
                service.name.span.clone(),
                format!(
                    "service `{name}` has {} distinct latency targets ({}), at most {MAX_LATENCY_THRESHOLDS}",
                    thresholds.len(),
                    listed.join(", ")
                ),
            )
            .help = Some("the edge counts requests under each target; share targets between endpoints".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Source, parse};

    fn parsed(services: &str) -> crate::Parsed {
        let text = format!("[project]\nname = \"shop\"\n[environments.production]\n{services}\n");
        parse(&Source::new("windlass.toml", text))
    }

    fn rendered(parsed: &crate::Parsed) -> String {
        parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
    }

    const HEAD: &str = "[services.api]\nupstreams = [\"127.0.0.1:9000\"]\n";

    #[test]
    fn endpoints_decode_with_their_thresholds() {
        let config = parsed(&format!(
            "{HEAD}endpoints = [\n  {{ name = \"user\", path = \"/users/{{id}}\", methods = [\"GET\", \"HEAD\"] }},\n  \
             {{ name = \"static\", path = \"/static/*\", latency = {{ p95 = \"50ms\" }} }},\n]\n\
             [slo.api]\nlatency = {{ p95 = \"200ms\", p99 = \"500ms\" }}\n"
        ));
        assert!(!config.has_errors(), "{}", rendered(&config));
        let api = &config.config.services["api"];
        assert_eq!(api.endpoints.len(), 2);
        assert_eq!(api.endpoints[0].name.value, "user");
        assert_eq!(api.endpoints[0].path, "/users/{id}");
        assert_eq!(api.endpoints[0].methods, ["GET", "HEAD"]);
        assert!(api.endpoints[1].methods.is_empty());
        assert_eq!(super::latency_thresholds_ms(api, config.config.slo.get("api")), [50, 200, 500]);
    }

    /// Each problem is reported where it was written: `windlass.toml:LINE`.
    #[test]
    fn bad_endpoints_are_reported_at_their_line() {
        let cases = [
            (r#"{ name = "a", path = "/a/{id" }"#, "invalid endpoint path in `services.api.endpoints[1]`"),
            (r#"{ name = "a", path = "users" }"#, "must start with /"),
            (r#"{ name = "a", path = "/a/*/b" }"#, "`*` may only be the last segment"),
            (r#"{ name = "a", path = "/a/x{id}" }"#, "mixes text"),
            (r#"{ name = "a", path = "/a", methods = ["get"] }"#, "unknown HTTP method `get`"),
            (r#"{ name = "a", path = "/a", methods = ["FETCH"] }"#, "unknown HTTP method `FETCH`"),
            (r#"{ name = "other", path = "/a" }"#, "the endpoint name `other` is taken"),
            (r#"{ name = "Bad Name", path = "/a" }"#, "invalid endpoint name `Bad Name`"),
            (r#"{ name = "first", path = "/b" }"#, "endpoint `first` is named twice"),
            (r#"{ name = "a", path = "/a", latency = { p95 = "0ms" } }"#, "outside 1ms..10m"),
            (r#"{ name = "a", path = "/a", lateny = {} }"#, "unknown key `lateny`"),
            (r#"{ path = "/a" }"#, "missing key `name`"),
        ];
        for (entry, message) in cases {
            let config =
                parsed(&format!("{HEAD}endpoints = [\n  {{ name = \"first\", path = \"/\" }},\n  {entry},\n]\n"));
            let text = rendered(&config);
            assert!(config.has_errors(), "{entry}: no error");
            assert!(text.contains(message), "{entry}: {message} not in\n{text}");
            assert!(text.contains("windlass.toml:8:"), "{entry}: not at line 8:\n{text}");
        }
    }

    #[test]
    fn too_many_endpoints_or_targets_are_refused() {
        let many: Vec<String> = (0..33).map(|i| format!("{{ name = \"e{i}\", path = \"/e{i}\" }}")).collect();
        let config = parsed(&format!("{HEAD}endpoints = [\n{}\n]\n", many.join(",\n")));
        let text = rendered(&config);
        assert!(text.contains("`services.api.endpoints` lists 33 endpoints, at most 32"), "{text}");
        assert!(text.contains("windlass.toml:6:"), "{text}");
        let exactly: Vec<String> = many[..32].to_vec();
        let config = parsed(&format!("{HEAD}endpoints = [\n{}\n]\n", exactly.join(",\n")));
        assert!(!config.has_errors(), "{}", rendered(&config));

        let config = parsed(&format!(
            "{HEAD}endpoints = [\n  {{ name = \"a\", path = \"/a\", latency = {{ p95 = \"10ms\", p99 = \"20ms\" }} }},\n  \
             {{ name = \"b\", path = \"/b\", latency = {{ p95 = \"30ms\" }} }},\n]\n\
             [slo.api]\nlatency = {{ p95 = \"200ms\", p99 = \"20ms\" }}\n"
        ));
        // 10, 20, 30 and 200 ms: four, the most a service can have.
        assert!(!config.has_errors(), "{}", rendered(&config));
        let config = parsed(&format!(
            "{HEAD}endpoints = [\n  {{ name = \"a\", path = \"/a\", latency = {{ p95 = \"10ms\", p99 = \"20ms\" }} }},\n  \
             {{ name = \"b\", path = \"/b\", latency = {{ p95 = \"30ms\" }} }},\n]\n\
             [slo.api]\nlatency = {{ p95 = \"200ms\", p99 = \"500ms\" }}\n"
        ));
        let text = rendered(&config);
        assert!(
            text.contains("service `api` has 5 distinct latency targets (10ms, 20ms, 30ms, 200ms, 500ms), at most 4"),
            "{text}"
        );
        assert!(text.contains("windlass.toml:4:"), "{text}");
        let config = parsed(&format!("{HEAD}[slo.api]\nlatency = {{ p95 = \"20m\" }}\n"));
        assert!(
            rendered(&config).contains("`slo.api.latency`: the latency target 20m is outside 1ms..10m"),
            "{}",
            rendered(&config)
        );
    }
}
