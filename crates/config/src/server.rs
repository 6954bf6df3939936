//! `[server]`: how `windlass server` serves its API. Only the TLS listener for now; where it
//! listens stays a command-line flag (`--listen`). This module reads the keys; the listener
//! itself (and the private-key check) lives in `windlass-server`, which this crate must not know.

use crate::decode::{At, Cx, Decode, Table, Value};

/// The `[server]` table.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// Serve the API over HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<ServerTls>,
}

/// `[server] tls = { cert = "...", key = "..." }`: paths relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate chain (PEM), leaf first.
    pub cert: String,
    /// The private key (PEM); a file other users may read is refused when the server starts.
    pub key: String,
}

impl Decode for Server {
    fn expected() -> String {
        "a table".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let tls = t.optional(cx, "tls");
        t.finish(cx);
        Some(Server { tls })
    }
}

impl Decode for ServerTls {
    fn expected() -> String {
        "{ cert = \"server.pem\", key = \"server.key\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let cert = t.required(cx, "cert");
        let key = t.required(cx, "key");
        t.finish(cx);
        Some(ServerTls { cert: cert?, key: key? })
    }
}

#[cfg(test)]
mod tests {
    fn parse_text(text: &str) -> crate::Parsed {
        crate::parse(&crate::Source::new("windlass.toml", text))
    }

    #[test]
    fn server_tls_is_read_and_incomplete_tls_is_an_error() {
        let base = "[project]\nname = \"shop\"\n";
        let parsed = parse_text(&format!("{base}[server]\ntls = {{ cert = \"c.pem\", key = \"k.pem\" }}\n"));
        let config = parsed.config;
        let tls = config.server.tls.expect("tls");
        assert_eq!((tls.cert.as_str(), tls.key.as_str()), ("c.pem", "k.pem"));
        let missing = parse_text(&format!("{base}[server]\ntls = {{ cert = \"c.pem\" }}\n"));
        assert!(missing.has_errors());
        let unknown = parse_text(&format!("{base}[server]\nlisten = \"127.0.0.1:1\"\n"));
        assert!(unknown.has_errors());
        assert!(parse_text(base).config.server.tls.is_none());
    }
}
