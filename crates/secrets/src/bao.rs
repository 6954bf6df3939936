//! The OpenBao / HashiCorp Vault backend: KV version 2, one entry per environment at
//! `<mount>/data/<prefix>/<env>` whose data map is name → value.
//!
//! One entry per environment means a deploy reads one consistent version of all its secrets,
//! and every write is a check-and-set against the version that was read: two people changing
//! secrets at once get a conflict instead of one silently undoing the other.
//!
//! Auth: a token from `BAO_TOKEN` or `VAULT_TOKEN`, or AppRole with `BAO_ROLE_ID`/`BAO_SECRET_ID`
//! (or the `VAULT_` spellings). The address is `http://` or `https://`; over https the server's
//! certificate is checked against the system's CAs, or against the CA certificates (PEM) in the
//! file named by `BAO_CACERT` (or `VAULT_CACERT`), for an OpenBao whose certificate a private CA
//! signed. Requests go through the one outgoing client, `windlass-http`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use crate::{Backend, Result, SecretInfo, SecretSet, SecretValue, SecretsError};

const TIMEOUT: Duration = Duration::from_secs(10);

/// How to log in.
pub enum Credentials {
    Token(Zeroizing<String>),
    AppRole { role_id: String, secret_id: Zeroizing<String> },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token([REDACTED])"),
            Credentials::AppRole { role_id, .. } => write!(f, "AppRole({role_id})"),
        }
    }
}

fn env_any(names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

impl Credentials {
    /// Reads the credentials for `auth` from the environment.
    pub fn from_env(auth: windlass_config::BaoAuth) -> Result<Self> {
        match auth {
            windlass_config::BaoAuth::Token => env_any(&["BAO_TOKEN", "VAULT_TOKEN"])
                .map(|t| Credentials::Token(Zeroizing::new(t)))
                .ok_or_else(|| SecretsError::Config("OpenBao token auth: set BAO_TOKEN (or VAULT_TOKEN)".into())),
            windlass_config::BaoAuth::AppRole => {
                let role_id = env_any(&["BAO_ROLE_ID", "VAULT_ROLE_ID"]);
                let secret_id = env_any(&["BAO_SECRET_ID", "VAULT_SECRET_ID"]);
                match (role_id, secret_id) {
                    (Some(role_id), Some(secret_id)) => {
                        Ok(Credentials::AppRole { role_id, secret_id: Zeroizing::new(secret_id) })
                    }
                    _ => Err(SecretsError::Config(
                        "OpenBao AppRole auth: set BAO_ROLE_ID and BAO_SECRET_ID (or VAULT_ROLE_ID and VAULT_SECRET_ID)"
                            .into(),
                    )),
                }
            }
        }
    }
}

/// An environment's secrets in OpenBao KV v2.
pub struct BaoBackend {
    address: String,
    url: windlass_http::Url,
    ca_file: Option<PathBuf>,
    mount: String,
    path: String,
    credentials: Credentials,
    token: Mutex<Option<Zeroizing<String>>>,
    checked_mount: Mutex<bool>,
}

impl std::fmt::Debug for BaoBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BaoBackend({})", self.describe())
    }
}

/// One version of the environment entry.
pub struct Entry {
    pub values: SecretSet,
    /// 0 when the entry does not exist yet.
    pub version: u64,
    pub created_time: String,
}

impl BaoBackend {
    pub fn new(address: &str, mount: &str, prefix: &str, environment: &str, credentials: Credentials) -> Result<Self> {
        let address = address.trim_end_matches('/').to_owned();
        let url =
            windlass_http::Url::parse(&address).map_err(|e| SecretsError::Config(format!("OpenBao address: {e}")))?;
        let ca_file = env_any(&["BAO_CACERT", "VAULT_CACERT"]).map(PathBuf::from);
        let mount = mount.trim_matches('/').to_owned();
        let prefix = prefix.trim_matches('/');
        let path = if prefix.is_empty() { environment.to_owned() } else { format!("{prefix}/{environment}") };
        Ok(BaoBackend {
            address,
            url,
            ca_file,
            mount,
            path,
            credentials,
            token: Mutex::new(None),
            checked_mount: Mutex::new(false),
        })
    }

    fn data_path(&self) -> String {
        format!("{}/data/{}", self.mount, self.path)
    }

    /// Trusts the CA certificates (PEM) in `ca_file` instead of the system's for an `https://`
    /// address (what `BAO_CACERT` sets; `None` goes back to the system's).
    pub fn with_ca_file(mut self, ca_file: Option<PathBuf>) -> Self {
        self.ca_file = ca_file;
        self
    }

    async fn raw(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Result<(u16, Value)> {
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(token) = token {
            headers.push(("x-vault-token", token));
        }
        let url = windlass_http::Url { path: format!("/v1/{path}"), ..self.url.clone() };
        let reply = windlass_http::send_url(windlass_http::UrlRequest {
            method,
            url: &url,
            headers: &headers,
            body: body.map(|b| b.to_string().into_bytes()),
            timeout: TIMEOUT,
            ca_file: self.ca_file.as_deref(),
        })
        .await
        .map_err(|e| SecretsError::BaoUnreachable { address: self.address.clone(), why: e.to_string() })?;
        let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if reply.status == 503 {
            return Err(SecretsError::BaoSealed { address: self.address.clone() });
        }
        Ok((reply.status, value))
    }

    fn errors(value: &Value) -> String {
        value["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "))
            .unwrap_or_default()
    }

    async fn token(&self) -> Result<Zeroizing<String>> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            return Ok(token.clone());
        }
        let token = match &self.credentials {
            Credentials::Token(token) => token.clone(),
            Credentials::AppRole { role_id, secret_id } => {
                let body = json!({ "role_id": role_id, "secret_id": secret_id.as_str() });
                let (status, reply) = self.raw("POST", "auth/approle/login", None, Some(body)).await?;
                match reply["auth"]["client_token"].as_str() {
                    Some(token) if status == 200 => Zeroizing::new(token.to_owned()),
                    _ => {
                        return Err(SecretsError::Bao {
                            address: self.address.clone(),
                            what: format!(
                                "AppRole login failed (HTTP {status}: {}); check BAO_ROLE_ID and BAO_SECRET_ID",
                                Self::errors(&reply)
                            ),
                        });
                    }
                }
            }
        };
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let token = self.token().await?;
        let (status, value) = self.raw(method, path, Some(&token), body).await?;
        if status == 403 {
            return Err(SecretsError::BaoPermissionDenied { address: self.address.clone(), path: self.data_path() });
        }
        Ok((status, value))
    }

    /// Refuses a KV version 1 mount (once per backend).
    async fn check_mount(&self) -> Result<()> {
        let mut checked = self.checked_mount.lock().await;
        if *checked {
            return Ok(());
        }
        // Through `raw`: a token may read its paths without the right to look at the mount (403),
        // and then the read itself says what is wrong.
        let token = self.token().await?;
        let path = format!("sys/internal/ui/mounts/{}", self.mount);
        let (status, value) = self.raw("GET", &path, Some(&token), None).await?;
        if status == 200 {
            let data = &value["data"];
            let version = data["options"]["version"].as_str().unwrap_or("1");
            if data["type"].as_str().is_some_and(|t| t == "kv" || t == "generic") && version != "2" {
                return Err(SecretsError::BaoKvV1 { address: self.address.clone(), mount: self.mount.clone() });
            }
        } else if status == 400 || status == 404 {
            return Err(SecretsError::Bao {
                address: self.address.clone(),
                what: format!(
                    "no secrets engine mounted at `{}/`; enable one with `bao secrets enable -path={} kv-v2`",
                    self.mount, self.mount
                ),
            });
        }
        *checked = true;
        Ok(())
    }

    /// The current version of the environment entry (version 0 when there is none).
    pub async fn read(&self) -> Result<Entry> {
        self.read_version(None).await
    }

    /// One version of the entry (`None`: the current one), as a deploy that pins the version it
    /// used reads it again. A deleted or destroyed version reads as empty.
    pub async fn read_version(&self, version: Option<u64>) -> Result<Entry> {
        self.check_mount().await?;
        let path = match version {
            Some(v) => format!("{}?version={v}", self.data_path()),
            None => self.data_path(),
        };
        let (status, value) = self.call("GET", &path, None).await?;
        let metadata = &value["data"]["metadata"];
        let version = metadata["version"].as_u64().unwrap_or(0);
        let created_time = metadata["created_time"].as_str().unwrap_or_default().to_owned();
        let mut values = SecretSet::default();
        match status {
            200 => {
                if let Some(map) = value["data"]["data"].as_object() {
                    for (k, v) in map {
                        let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
                        values.values.insert(k.clone(), SecretValue::new(text));
                    }
                }
            }
            404 => {}
            other => {
                return Err(SecretsError::Bao {
                    address: self.address.clone(),
                    what: format!("reading {}: HTTP {other}: {}", self.data_path(), Self::errors(&value)),
                });
            }
        }
        Ok(Entry { values, version, created_time })
    }

    /// Writes a whole new version, only if the current version is still `cas` (0: must not exist).
    pub async fn write(&self, values: &SecretSet, cas: u64) -> Result<u64> {
        self.check_mount().await?;
        let data: serde_json::Map<String, Value> =
            values.values.iter().map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned()))).collect();
        let body = json!({ "options": { "cas": cas }, "data": data });
        let (status, value) = self.call("POST", &self.data_path(), Some(body)).await?;
        match status {
            200 | 204 => Ok(value["data"]["version"].as_u64().unwrap_or(cas + 1)),
            400 if Self::errors(&value).contains("check-and-set parameter did not match") => {
                Err(SecretsError::BaoConflict { address: self.address.clone(), path: self.data_path() })
            }
            other => Err(SecretsError::Bao {
                address: self.address.clone(),
                what: format!("writing {}: HTTP {other}: {}", self.data_path(), Self::errors(&value)),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Backend for BaoBackend {
    fn describe(&self) -> String {
        format!("OpenBao {} {}", self.address, self.data_path())
    }

    async fn list(&self) -> Result<Vec<SecretInfo>> {
        let entry = self.read().await?;
        Ok(entry
            .values
            .names()
            .map(|name| SecretInfo {
                name: name.to_owned(),
                changed: entry.created_time.clone(),
                version: Some(entry.version),
            })
            .collect())
    }

    async fn load_all(&self) -> Result<SecretSet> {
        Ok(self.read().await?.values)
    }

    async fn set_many(&self, values: Vec<(String, SecretValue)>) -> Result<()> {
        let mut entry = self.read().await?;
        let mut changed = false;
        for (name, value) in values {
            crate::validate_name(&name)?;
            if entry.values.get(&name) != Some(&value) {
                entry.values.values.insert(name, value);
                changed = true;
            }
        }
        if changed {
            self.write(&entry.values, entry.version).await?;
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<()> {
        let mut entry = self.read().await?;
        if entry.values.values.remove(name).is_none() {
            return Err(SecretsError::NotFound { place: self.describe(), name: name.to_owned() });
        }
        self.write(&entry.values, entry.version).await?;
        Ok(())
    }
}
