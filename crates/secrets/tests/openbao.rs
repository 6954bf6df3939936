//! The OpenBao backend against a real OpenBao (or Vault) dev server.
//!
//! Needs `WINDLASS_TEST_BAO_ADDR` (such as `http://127.0.0.1:18200`) and
//! `WINDLASS_TEST_BAO_TOKEN` (a root token) of a server with KV v2 at `secret/`, as
//! `bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:18200` gives.
//! Each test works under its own unique prefix, so they run in parallel and repeatedly.
//! The sealed-server test starts (and seals) a dev server of its own, from the binary named by
//! `WINDLASS_TEST_BAO_BIN` (the `bao` or `vault` executable).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use windlass_secrets::bao::{BaoBackend, Credentials};
use windlass_secrets::{Backend, SecretSet, SecretValue, SecretsError};
use windlass_testkit::tools::{bao_addr, bao_bin, bao_token, unique};
use zeroize::Zeroizing;

/// A raw call with the root token, to set up what a test needs.
async fn admin(method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = bao_addr();
    let (authority, host, port, _) = windlass_http::split_url(&url).unwrap();
    let address = tokio::net::lookup_host((host.as_str(), port)).await.unwrap().next().unwrap();
    let token = bao_token();
    let reply = windlass_http::send(windlass_http::Request {
        method,
        address,
        host: &authority,
        path: &format!("/v1/{path}"),
        headers: &[("x-vault-token", token.as_str())],
        body: body.map(|b| b.to_string().into_bytes()),
        timeout: std::time::Duration::from_secs(10),
    })
    .await
    .unwrap();
    (reply.status, serde_json::from_slice(&reply.body).unwrap_or(Value::Null))
}

fn backend(prefix: &str, env: &str, credentials: Credentials) -> BaoBackend {
    BaoBackend::new(&bao_addr(), "secret", prefix, env, credentials).unwrap()
}

fn token(t: &str) -> Credentials {
    Credentials::Token(Zeroizing::new(t.to_owned()))
}

#[tokio::test]
async fn set_get_list_remove_and_versions() {
    let prefix = unique("wtest-crud");
    let b = backend(&prefix, "production", token(&bao_token()));
    assert!(b.load_all().await.unwrap().values.is_empty());
    b.set_many(vec![("DATABASE_URL".into(), SecretValue::new("postgres://u:pw-0123456789@db/app"))]).await.unwrap();
    b.set_many(vec![("API_KEY".into(), SecretValue::new("ak_0123456789abcdef"))]).await.unwrap();
    assert_eq!(b.get("DATABASE_URL").await.unwrap().expose(), "postgres://u:pw-0123456789@db/app");
    let list = b.list().await.unwrap();
    let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["API_KEY", "DATABASE_URL"]);
    assert_eq!(list[0].version, Some(2));
    // Versioned reads: version 1 had only the first secret.
    let first = b.read_version(Some(1)).await.unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.values.names().collect::<Vec<_>>(), ["DATABASE_URL"]);
    b.remove("API_KEY").await.unwrap();
    assert!(matches!(b.get("API_KEY").await.unwrap_err(), SecretsError::NotFound { .. }));
    assert!(matches!(b.remove("API_KEY").await.unwrap_err(), SecretsError::NotFound { .. }));
    // Another environment under the same prefix is separate.
    let staging = backend(&prefix, "staging", token(&bao_token()));
    assert!(staging.load_all().await.unwrap().values.is_empty());
}

#[tokio::test]
async fn a_stale_write_is_a_check_and_set_conflict() {
    let prefix = unique("wtest-cas");
    let a = backend(&prefix, "production", token(&bao_token()));
    let b = backend(&prefix, "production", token(&bao_token()));
    a.set_many(vec![("ONE".into(), SecretValue::new("first-value-123"))]).await.unwrap();
    let read_by_a = a.read().await.unwrap();
    let read_by_b = b.read().await.unwrap();
    let mut next = read_by_b.values.clone();
    next.values.insert("TWO".into(), SecretValue::new("second-value-456"));
    b.write(&next, read_by_b.version).await.unwrap();
    let mut stale: SecretSet = read_by_a.values.clone();
    stale.values.insert("THREE".into(), SecretValue::new("third-value-789"));
    let err = a.write(&stale, read_by_a.version).await.unwrap_err();
    assert!(matches!(err, SecretsError::BaoConflict { .. }), "{err}");
    assert!(err.to_string().contains("check-and-set conflict"), "{err}");
    // Nothing of the stale write landed.
    assert!(a.get("THREE").await.is_err());
    assert_eq!(a.get("TWO").await.unwrap().expose(), "second-value-456");
}

#[tokio::test]
async fn a_token_without_a_policy_is_permission_denied() {
    let (status, reply) =
        admin("POST", "auth/token/create", Some(json!({"policies": ["default"], "ttl": "5m", "no_parent": true})))
            .await;
    assert_eq!(status, 200, "{reply}");
    let weak = reply["auth"]["client_token"].as_str().unwrap().to_owned();
    let prefix = unique("wtest-denied");
    let err = backend(&prefix, "production", token(&weak)).load_all().await.unwrap_err();
    assert!(matches!(err, SecretsError::BaoPermissionDenied { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("permission denied") && message.contains(&prefix), "{message}");
}

#[tokio::test]
async fn unreachable_bad_addresses_and_kv_v1_are_clear_errors() {
    let err = BaoBackend::new("http://127.0.0.1:1", "secret", "p", "production", token("x"))
        .unwrap()
        .load_all()
        .await
        .unwrap_err();
    assert!(matches!(err, SecretsError::BaoUnreachable { .. }) && err.to_string().contains("127.0.0.1:1"), "{err}");
    let err = BaoBackend::new("ftp://bao.example.com", "secret", "p", "production", token("x")).unwrap_err();
    assert!(err.to_string().contains("OpenBao address"), "{err}");

    let mount = unique("wtest-kv1");
    let (status, reply) =
        admin("POST", &format!("sys/mounts/{mount}"), Some(json!({"type": "kv", "options": {"version": "1"}}))).await;
    assert!(status == 204 || status == 200, "{reply}");
    let b = BaoBackend::new(&bao_addr(), &mount, "p", "production", token(&bao_token())).unwrap();
    let err = b.load_all().await.unwrap_err();
    admin("DELETE", &format!("sys/mounts/{mount}"), None).await;
    assert!(matches!(err, SecretsError::BaoKvV1 { .. }), "{err}");
    assert!(err.to_string().contains("KV version 1"), "{err}");
}

#[tokio::test]
async fn approle_login() {
    let prefix = unique("wtest-approle");
    let (status, reply) = admin("POST", "sys/auth/approle", Some(json!({"type": "approle"}))).await;
    assert!(status == 204 || status == 200 || reply.to_string().contains("already in use"), "{reply}");
    let policy = format!(
        "path \"secret/data/{prefix}/*\" {{ capabilities = [\"create\", \"read\", \"update\"] }}\n\
                          "
    );
    let (status, reply) = admin("PUT", &format!("sys/policies/acl/{prefix}"), Some(json!({"policy": policy}))).await;
    assert!(status == 204 || status == 200, "{reply}");
    let (status, reply) =
        admin("POST", &format!("auth/approle/role/{prefix}"), Some(json!({"token_policies": [prefix.clone()]}))).await;
    assert!(status == 204 || status == 200, "{reply}");
    let (_, reply) = admin("GET", &format!("auth/approle/role/{prefix}/role-id"), None).await;
    let role_id = reply["data"]["role_id"].as_str().unwrap().to_owned();
    let (_, reply) = admin("POST", &format!("auth/approle/role/{prefix}/secret-id"), None).await;
    let secret_id = reply["data"]["secret_id"].as_str().unwrap().to_owned();

    let b = backend(
        &prefix,
        "production",
        Credentials::AppRole { role_id: role_id.clone(), secret_id: Zeroizing::new(secret_id) },
    );
    b.set_many(vec![("FROM_APPROLE".into(), SecretValue::new("approle-value-123"))]).await.unwrap();
    assert_eq!(b.get("FROM_APPROLE").await.unwrap().expose(), "approle-value-123");
    // Outside its policy the same login is denied.
    let other = backend(
        &unique("wtest-elsewhere"),
        "production",
        Credentials::AppRole { role_id, secret_id: Zeroizing::new("not-the-secret-id".into()) },
    );
    let err = other.load_all().await.unwrap_err();
    assert!(err.to_string().contains("AppRole login failed"), "{err}");
}

/// A dev server of this test's own, killed when dropped.
struct OwnServer(std::process::Child);

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_sealed_server_is_a_clear_error() {
    let bin = bao_bin();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let _server = OwnServer(
        std::process::Command::new(bin)
            .args(["server", "-dev", "-dev-root-token-id=sealtest", &format!("-dev-listen-address=127.0.0.1:{port}")])
            .env("HOME", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let b = BaoBackend::new(&address, "secret", "p", "production", token("sealtest")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match b.load_all().await {
            Ok(_) => break,
            Err(err) => assert!(std::time::Instant::now() < deadline, "the dev server did not start: {err}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let (_, host, port, _) = windlass_http::split_url(&address).unwrap();
    let reply = windlass_http::send(windlass_http::Request {
        method: "PUT",
        address: tokio::net::lookup_host((host.as_str(), port)).await.unwrap().next().unwrap(),
        host: &format!("127.0.0.1:{port}"),
        path: "/v1/sys/seal",
        headers: &[("x-vault-token", "sealtest")],
        body: None,
        timeout: std::time::Duration::from_secs(10),
    })
    .await
    .unwrap();
    assert_eq!(reply.status, 204, "{}", reply.text());
    let fresh = BaoBackend::new(&address, "secret", "p", "production", token("sealtest")).unwrap();
    let err = fresh.load_all().await.unwrap_err();
    assert!(matches!(err, SecretsError::BaoSealed { .. }), "{err}");
    assert!(err.to_string().contains("is sealed") && err.to_string().contains(&address), "{err}");
}

#[tokio::test]
async fn https_with_a_private_ca() {
    let bin = bao_bin();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let address = format!("https://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    // `-dev-tls` makes a CA of its own and a certificate for 127.0.0.1 signed by it.
    let _server = OwnServer(
        std::process::Command::new(bin)
            .args([
                "server",
                "-dev",
                "-dev-tls",
                "-dev-root-token-id=tlstest",
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                &format!("-dev-tls-cert-dir={}", certs.display()),
            ])
            .env("HOME", dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ca = certs.join("vault-ca.pem");
    let b = BaoBackend::new(&address, "secret", "p", "production", token("tlstest")).unwrap().with_ca_file(Some(ca));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match b.load_all().await {
            Ok(_) => break,
            Err(err) => assert!(std::time::Instant::now() < deadline, "the dev server did not start: {err}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    b.set_many(vec![("OVER_TLS".into(), SecretValue::new("tls-value-42"))]).await.unwrap();
    assert_eq!(b.get("OVER_TLS").await.unwrap().expose(), "tls-value-42");
    // Without the private CA the server's certificate does not verify against the system's CAs.
    let untrusting =
        BaoBackend::new(&address, "secret", "p", "production", token("tlstest")).unwrap().with_ca_file(None);
    let err = untrusting.load_all().await.unwrap_err();
    assert!(matches!(err, SecretsError::BaoUnreachable { .. }) && err.to_string().contains("TLS"), "{err}");
}
