//! `[secrets]`: which backend holds the secrets (sops files or OpenBao) and how to reach it.
//!
//! It holds no secret values and must not fetch any; `windlass-secrets` does.

use crate::decode::{At, Cx, Decode, Table, Value, one_of};
use crate::template::Template;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaoAuth {
    #[default]
    Token,
    AppRole,
}

#[derive(Debug, Clone)]
pub enum SecretsBackend {
    /// SOPS-format encrypted files, one per environment, in this directory.
    Files { dir: String },
    /// OpenBao / HashiCorp Vault KV v2.
    OpenBao { address: Template, mount: String, prefix: String, auth: BaoAuth },
}

impl Default for SecretsBackend {
    fn default() -> Self {
        SecretsBackend::Files { dir: "secrets".into() }
    }
}

impl Decode for SecretsBackend {
    fn expected() -> String {
        "{ backend = \"files\", dir = \"secrets\" } or { backend = \"openbao\", address = \"...\" }".into()
    }
    fn decode(cx: &mut Cx, value: &Value, at: &At) -> Option<Self> {
        let mut t = Table::open(cx, value, at)?;
        let backend = t
            .get(cx, "backend")
            .and_then(|v| one_of(cx, v, &at.key("backend"), &[("files", 0), ("openbao", 1), ("vault", 1)]))
            .unwrap_or(0);
        let dir: Option<String> = t.optional(cx, "dir");
        let address: Option<Template> = t.optional(cx, "address");
        let mount = t.or(cx, "mount", "secret".to_owned());
        let prefix = t.or(cx, "prefix", "windlass".to_owned());
        let auth = t
            .get(cx, "auth")
            .and_then(|v| one_of(cx, v, &at.key("auth"), &[("token", BaoAuth::Token), ("approle", BaoAuth::AppRole)]))
            .unwrap_or_default();
        let span = t.span();
        t.finish(cx);
        if backend == 0 {
            return Some(SecretsBackend::Files { dir: dir.unwrap_or_else(|| "secrets".into()) });
        }
        let Some(address) = address else {
            cx.error(span, format!("missing key `address` in {}", at.table_name())).expected =
                Some("the OpenBao/Vault address, such as \"http://127.0.0.1:8200\"".into());
            return None;
        };
        Some(SecretsBackend::OpenBao { address, mount, prefix, auth })
    }
}
