//! `[server]`: how `windlass server` serves its API: the TLS listener, and the key that signs
//! acknowledgement links; where it listens stays a command-line flag (`--listen`). This module
//! reads the keys; the listener and the key file's checks live in `windlass-server`, which this
//! crate must not know.

use crate::decode::{At, Cx, Decode, Spanned, Table, Value};

/// The `[server]` table.
#[derive(Debug, Clone, Default)]
pub struct Server {
    /// Serve the API over HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<ServerTls>,
    /// The file holding the key that signs acknowledgement links (hex, 0600), relative to the
    /// config file's directory; none: `ack-link.key` in the server's state directory. Servers
    /// that serve one team's links name the same key (a copy of one file).
    pub ack_key_file: Option<Spanned<String>>,
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
        let ack_key_file: Option<Spanned<String>> = t.optional(cx, "ack_key_file");
        if let Some(path) = &ack_key_file
            && path.value.trim().is_empty()
        {
            cx.error(path.span.clone(), "`server.ack_key_file` is empty: name a file, or leave the key out").expected =
                Some("a path such as \"/etc/windlass/ack-link.key\"".into());
        }
        t.finish(cx);
        Some(Server { tls, ack_key_file: ack_key_file.filter(|p| !p.value.trim().is_empty()) })
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

    #[test]
    fn ack_key_file_is_a_non_empty_path() {
        let base = "[project]\nname = \"shop\"\n[environments.production]\n";
        let parsed = parse_text(&format!("{base}[server]\nack_key_file = \"keys/ack.key\"\n"));
        assert!(!parsed.has_errors(), "{:?}", parsed.diagnostics);
        assert_eq!(parsed.config.server.ack_key_file.map(|p| p.value).as_deref(), Some("keys/ack.key"));
        assert!(parse_text(base).config.server.ack_key_file.is_none());
        let empty = parse_text(&format!("{base}[server]\nack_key_file = \" \"\n"));
        assert!(empty.has_errors());
        assert!(
            empty.diagnostics.iter().any(|d| d.render().contains("ack_key_file` is empty")),
            "{:?}",
            empty.diagnostics
        );
        let number = parse_text(&format!("{base}[server]\nack_key_file = 7\n"));
        assert!(number.has_errors());
    }
}
