//! `[edge]`: the edge's listeners, TLS certificates and maintenance mode.
//!
//! It must not bind sockets or load certificates; the edge does.

use crate::decode::{At, Cx, Decode, Spanned, Table, Value, integer_in};
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
    /// Upstream connections one client connection may open to one instance (an HTTP/2 client's
    /// further concurrent requests wait for one to free up).
    pub max_upstream_per_connection: u32,
    /// Connection limits and timeouts of the data plane (issue #18, connection hardening).
    pub connections: Connections,
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
            max_upstream_per_connection: 8,
            connections: Connections::default(),
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
            // Bounded: the proxy adds them to a request's start (an instant cannot hold years).
            connect_timeout: duration_in(
                cx,
                &mut t,
                "connect_timeout",
                at,
                (Duration::from_millis(1), Duration::from_secs(3600)),
                d.connect_timeout,
            ),
            upstream_timeout: duration_in(
                cx,
                &mut t,
                "upstream_timeout",
                at,
                (Duration::from_millis(1), Duration::from_secs(86_400)),
                d.upstream_timeout,
            ),
            drain_timeout: duration_in(
                cx,
                &mut t,
                "drain_timeout",
                at,
                (Duration::from_millis(1), Duration::from_secs(86_400)),
                d.drain_timeout,
            ),
            sticky_cookie: t.or(cx, "sticky_cookie", d.sticky_cookie),
            sticky_header: t.optional(cx, "sticky_header"),
            access_log: t.or(cx, "access_log", d.access_log),
            max_upstream_per_connection: t
                .get(cx, "max_upstream_per_connection")
                .and_then(|v| integer_in(cx, v, &at.key("max_upstream_per_connection"), 1..=1024))
                .map_or(d.max_upstream_per_connection, |n| n as u32),
            connections: Connections::decode_in(cx, &mut t, at),
            admin_tls: t.optional(cx, "admin_tls"),
        };
        t.finish(cx);
        Some(edge)
    }
}

// ---- Connection limits and timeouts (issue #18, connection hardening) ----

/// The edge's limits on downstream connections: flat keys of `[edge]` plus `[edge.http2]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Connections {
    /// From a connection's first byte (or the first byte of a request on a kept-alive
    /// connection) to the end of the request head, protocol sniffing included.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may sit between requests.
    pub keepalive_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// Open downstream connections; `None`: 90% of the file descriptor limit.
    pub max_connections: Option<u32>,
    /// Open downstream connections per client address; `None`: no such cap.
    pub max_connections_per_ip: Option<u32>,
    pub http2: Http2,
}

/// `[edge.http2]`: the downstream HTTP/2 server's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Http2 {
    pub max_concurrent_streams: u32,
    /// Streams a client may reset before the edge accepted them (rapid reset).
    pub max_pending_accept_reset_streams: u32,
    /// Streams the edge may reset for a client's protocol errors ("MadeYouReset").
    pub max_local_error_reset_streams: u32,
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    pub max_frame_size: ByteSize,
}

/// Largest accepted connection cap (more than any file descriptor limit in practice).
pub const MAX_CONNECTIONS: u32 = 16_777_216;

impl Default for Connections {
    fn default() -> Self {
        Connections {
            header_read_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            tls_handshake_timeout: Duration::from_secs(10),
            max_connections: None,
            max_connections_per_ip: None,
            http2: Http2::default(),
        }
    }
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            max_concurrent_streams: 128,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_timeout: Duration::from_secs(20),
            max_frame_size: ByteSize(16 * 1024),
        }
    }
}

/// A duration key within `min..=max` (an error names the key and the range), or `default`.
fn duration_in(
    cx: &mut Cx,
    t: &mut Table,
    key: &'static str,
    at: &At,
    (min, max): (Duration, Duration),
    default: Duration,
) -> Duration {
    let Some(value) = t.get(cx, key) else { return default };
    let Some(duration) = Duration::decode(cx, value, &at.key(key)) else { return default };
    if duration < min || duration > max {
        let expected = format!("a duration from {} to {}", show(min), show(max));
        cx.invalid(value, &at.key(key), &expected, "out of range");
        return default;
    }
    duration
}

fn show(duration: Duration) -> String {
    let ms = duration.as_std().as_millis();
    if ms.is_multiple_of(1000) { format!("\"{}s\"", ms / 1000) } else { format!("\"{ms}ms\"") }
}

/// A whole-number key within `range`, or `default`.
fn number_in(
    cx: &mut Cx,
    t: &mut Table,
    key: &'static str,
    at: &At,
    range: std::ops::RangeInclusive<u32>,
    default: Option<u32>,
) -> Option<u32> {
    let Some(value) = t.get(cx, key) else { return default };
    let range = i64::from(*range.start())..=i64::from(*range.end());
    integer_in(cx, value, &at.key(key), range).and_then(|n| u32::try_from(n).ok()).or(default)
}

impl Connections {
    fn decode_in(cx: &mut Cx, t: &mut Table, at: &At) -> Connections {
        let d = Connections::default();
        let seconds = Duration::from_secs;
        let header_read_timeout = duration_in(
            cx,
            t,
            "header_read_timeout",
            at,
            (Duration::from_millis(100), seconds(3600)),
            d.header_read_timeout,
        );
        let keepalive_timeout = duration_in(
            cx,
            t,
            "keepalive_timeout",
            at,
            (Duration::from_millis(100), seconds(3600)),
            d.keepalive_timeout,
        );
        let tls_handshake_timeout = duration_in(
            cx,
            t,
            "tls_handshake_timeout",
            at,
            (Duration::from_millis(100), seconds(600)),
            d.tls_handshake_timeout,
        );
        let max_connections = number_in(cx, t, "max_connections", at, 1..=MAX_CONNECTIONS, None);
        let max_connections_per_ip = number_in(cx, t, "max_connections_per_ip", at, 1..=MAX_CONNECTIONS, None);
        let http2 = t.get(cx, "http2").and_then(|v| Http2::decode_table(cx, v, &at.key("http2"))).unwrap_or_default();
        Connections {
            header_read_timeout,
            keepalive_timeout,
            tls_handshake_timeout,
            max_connections,
            max_connections_per_ip,
            http2,
        }
    }
}

impl Http2 {
    fn decode_table(cx: &mut Cx, value: &Value, at: &At) -> Option<Http2> {
        let mut t = Table::open(cx, value, at)?;
        let d = Http2::default();
        let number = |cx: &mut Cx, t: &mut Table, key, range, default| {
            number_in(cx, t, key, at, range, Some(default)).unwrap_or(default)
        };
        let max_concurrent_streams = number(cx, &mut t, "max_concurrent_streams", 1..=10_000, d.max_concurrent_streams);
        let max_pending_accept_reset_streams =
            number(cx, &mut t, "max_pending_accept_reset_streams", 1..=100_000, d.max_pending_accept_reset_streams);
        let max_local_error_reset_streams =
            number(cx, &mut t, "max_local_error_reset_streams", 1..=100_000, d.max_local_error_reset_streams);
        // `"off"` switches pings off; otherwise a duration.
        let keepalive_interval = match t.get(cx, "keepalive_interval") {
            Some(v) if v.get_ref().as_str() == Some("off") => None,
            Some(_) => Some(duration_in(
                cx,
                &mut t,
                "keepalive_interval",
                at,
                (Duration::from_secs(1), Duration::from_secs(3600)),
                Duration::from_secs(30),
            )),
            None => d.keepalive_interval,
        };
        let keepalive_timeout = duration_in(
            cx,
            &mut t,
            "keepalive_timeout",
            at,
            (Duration::from_millis(100), Duration::from_secs(600)),
            d.keepalive_timeout,
        );
        let max_frame_size = match t.optional::<Spanned<ByteSize>>(cx, "max_frame_size") {
            // RFC 9113 §6.5.2: from 2^14 to 2^24-1.
            Some(size) if !(16_384..=16_777_215).contains(&size.value.0) => {
                cx.error(size.span.clone(), "`max_frame_size` must be from \"16KiB\" to 16777215 bytes (RFC 9113)");
                d.max_frame_size
            }
            Some(size) => size.value,
            None => d.max_frame_size,
        };
        t.finish(cx);
        Some(Http2 {
            max_concurrent_streams,
            max_pending_accept_reset_streams,
            max_local_error_reset_streams,
            keepalive_interval,
            keepalive_timeout,
            max_frame_size,
        })
    }
}

#[cfg(test)]
mod connection_limit_tests {
    use crate::{Source, parse};

    const BASE: &str = "[project]\nname = \"shop\"\n[environments.production]\n[edge]\n";

    fn edge(keys: &str) -> crate::Parsed {
        parse(&Source::new("windlass.toml", format!("{BASE}{keys}")))
    }

    fn rendered(parsed: &crate::Parsed) -> String {
        parsed.diagnostics.iter().map(|d| d.render()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn connection_limits_default_and_are_read() {
        let parsed = edge("");
        assert!(!parsed.has_errors(), "{}", rendered(&parsed));
        assert_eq!(parsed.config.edge.connections, super::Connections::default());
        let parsed = edge(
            "header_read_timeout = \"300ms\"\nmax_connections = 20\nmax_connections_per_ip = 2\n\
             [edge.http2]\nmax_concurrent_streams = 10\nkeepalive_interval = \"off\"\nmax_frame_size = \"32KiB\"\n",
        );
        assert!(!parsed.has_errors(), "{}", rendered(&parsed));
        let connections = &parsed.config.edge.connections;
        assert_eq!(connections.header_read_timeout.as_std(), std::time::Duration::from_millis(300));
        assert_eq!((connections.max_connections, connections.max_connections_per_ip), (Some(20), Some(2)));
        assert_eq!(connections.http2.max_concurrent_streams, 10);
        assert_eq!(connections.http2.keepalive_interval, None);
        assert_eq!(connections.http2.max_frame_size.0, 32 * 1024);
    }

    #[test]
    fn out_of_range_limits_name_the_key_and_line() {
        for (keys, expected) in [
            ("header_read_timeout = \"0s\"\n", "header_read_timeout"),
            ("keepalive_timeout = \"2h\"\n", "keepalive_timeout"),
            ("max_connections = 0\n", "max_connections"),
            // Added to every request's start by the proxy: years would overflow an instant.
            ("upstream_timeout = \"100000d\"\n", "upstream_timeout"),
            ("connect_timeout = \"0s\"\n", "connect_timeout"),
            ("drain_timeout = \"1000d\"\n", "drain_timeout"),
            ("[edge.http2]\nmax_concurrent_streams = 0\n", "max_concurrent_streams"),
            ("[edge.http2]\nmax_frame_size = \"1KiB\"\n", "max_frame_size"),
        ] {
            let parsed = edge(keys);
            assert!(parsed.has_errors(), "{keys} was accepted");
            let text = rendered(&parsed);
            assert!(text.contains(expected), "{keys}: {text}");
            assert!(text.contains("windlass.toml:5") || text.contains("windlass.toml:6"), "{keys}: {text}");
        }
    }
}
