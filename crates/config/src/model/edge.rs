//! `[edge]`: the edge's listeners, TLS certificates and maintenance mode.
//!
//! It must not bind sockets or load certificates; the edge does.

use crate::decode::{At, Cx, Decode, Spanned, Table, Value};
use crate::units::{ByteSize, Duration};

use super::RateLimit;

#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

impl Decode for Tls {
    fn expected() -> String {
        "{ listen = \"127.0.0.1:8443\", cert = \"cert.pem\", key = \"key.pem\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let listen = t.get(cx, "listen").and_then(|v| socket_addr(cx, v, &at.key("listen")));
        let cert = t.required(cx, "cert");
        let key = t.required(cx, "key");
        t.finish(cx);
        Some(Tls { listen: listen.unwrap_or_else(|| "127.0.0.1:8443".into()), cert: cert?, key: key? })
    }
}

/// TLS on the admin listener (#18): its certificate and key, and the CA the control plane
/// trusts to reach it (default: the system's CAs).
#[derive(Debug, Clone)]
pub struct AdminTls {
    pub cert: String,
    pub key: String,
    pub ca: Option<String>,
}

impl Decode for AdminTls {
    fn expected() -> String {
        "{ cert = \"admin.pem\", key = \"admin.key\", ca = \"ca.pem\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let cert = t.required(cx, "cert");
        let key = t.required(cx, "key");
        let ca = t.optional(cx, "ca");
        t.finish(cx);
        Some(AdminTls { cert: cert?, key: key?, ca })
    }
}

fn socket_addr(cx: &mut Cx, value: &Value, at: &At) -> Option<String> {
    let text = String::decode(cx, value, at)?;
    if text.parse::<std::net::SocketAddr>().is_err() {
        cx.invalid(value, at, "an IP address and port such as \"127.0.0.1:8080\"", "not an address and port");
        return None;
    }
    Some(text)
}

/// Who still reaches a service in maintenance mode.
#[derive(Debug, Clone, Default)]
pub struct MaintenanceAllow {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub cidrs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Maintenance {
    /// An HTML page file (relative to the config file) served with the 503.
    pub page: Option<String>,
    pub message: String,
    pub retry_after: Duration,
    pub allow: MaintenanceAllow,
}

impl Default for Maintenance {
    fn default() -> Self {
        Maintenance {
            page: None,
            message: "This service is down for maintenance. Please try again shortly.".into(),
            retry_after: Duration::from_secs(300),
            allow: MaintenanceAllow::default(),
        }
    }
}

impl Decode for Maintenance {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let defaults = Maintenance::default();
        let page = t.optional(cx, "page");
        let message = t.or(cx, "message", defaults.message);
        let retry_after = t.or(cx, "retry_after", defaults.retry_after);
        let allow = t
            .get(cx, "allow")
            .and_then(|v| {
                let at = at.key("allow");
                let mut a = Table::open(cx, v, &at)?;
                let header = a.optional(cx, "header");
                let cookie = a.optional(cx, "cookie");
                let cidrs: Vec<Spanned<String>> = a.or(cx, "cidrs", Vec::new());
                a.finish(cx);
                for cidr in &cidrs {
                    if !crate::formats::is_cidr(&cidr.value) {
                        cx.error(cidr.span.clone(), format!("`{}` is not an IP address or CIDR block", cidr.value))
                            .expected = Some("such as \"127.0.0.1/32\" or \"::1/128\"".into());
                    }
                }
                Some(MaintenanceAllow { header, cookie, cidrs: cidrs.into_iter().map(|c| c.value).collect() })
            })
            .unwrap_or_default();
        t.finish(cx);
        Some(Maintenance { page, message, retry_after, allow })
    }
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub listen: String,
    pub admin_listen: String,
    pub tls: Option<Tls>,
    pub maintenance: Maintenance,
    pub rate_limit: Option<RateLimit>,
    pub max_header_bytes: ByteSize,
    pub max_headers: u32,
    pub connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub drain_timeout: Duration,
    /// Cookie that keeps a client in its cohort across weight changes.
    pub sticky_cookie: String,
    /// Optional header that identifies a client's cohort instead of the cookie.
    pub sticky_header: Option<String>,
    pub access_log: bool,
    // Admin API (#18).
    /// TLS on the admin listener.
    pub admin_tls: Option<AdminTls>,
}

impl Default for Edge {
    fn default() -> Self {
        Edge {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            tls: None,
            maintenance: Maintenance::default(),
            rate_limit: None,
            max_header_bytes: ByteSize(64 * 1024),
            max_headers: 100,
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            sticky_cookie: "windlass_cohort".into(),
            sticky_header: None,
            access_log: false,
            admin_tls: None,
        }
    }
}

impl Decode for Edge {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let d = Edge::default();
        let edge = Edge {
            listen: t.get(cx, "listen").and_then(|v| socket_addr(cx, v, &at.key("listen"))).unwrap_or(d.listen),
            admin_listen: t
                .get(cx, "admin_listen")
                .and_then(|v| socket_addr(cx, v, &at.key("admin_listen")))
                .unwrap_or(d.admin_listen),
            tls: t.optional(cx, "tls"),
            maintenance: t.or(cx, "maintenance", d.maintenance),
            rate_limit: t.optional(cx, "rate_limit"),
            max_header_bytes: t.or(cx, "max_header_bytes", d.max_header_bytes),
            max_headers: t.or(cx, "max_headers", d.max_headers),
            connect_timeout: t.or(cx, "connect_timeout", d.connect_timeout),
            upstream_timeout: t.or(cx, "upstream_timeout", d.upstream_timeout),
            drain_timeout: t.or(cx, "drain_timeout", d.drain_timeout),
            sticky_cookie: t.or(cx, "sticky_cookie", d.sticky_cookie),
            sticky_header: t.optional(cx, "sticky_header"),
            access_log: t.or(cx, "access_log", d.access_log),
            admin_tls: t.optional(cx, "admin_tls"),
        };
        t.finish(cx);
        Some(edge)
    }
}
