//! The entry points the deploy pipeline calls: `open` / `load_all` from a config, and the
//! redactor built from what they return.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use windlass_secrets::age::Identity;
use windlass_secrets::files::FileBackend;
use windlass_secrets::sops::Format;
use windlass_secrets::{Backend, OpenOptions, SecretValue, SecretsError};

#[tokio::test]
async fn load_all_from_a_config_and_redact() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("windlass.toml");
    std::fs::write(
        &config_path,
        "[project]\nname = \"shop\"\n\n[secrets]\ndir = \"vault-files\"\n\n[environments.production]\n\
         \n[environments.staging]\n",
    )
    .unwrap();
    let identity = Identity::generate().unwrap();
    let key_file = dir.path().join("key.txt");
    std::fs::write(&key_file, format!("# test key\n{}\n", identity.encode().as_str())).unwrap();
    // A keys file is private, as `age-keygen -o` makes it: Windlass refuses one others can read.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused = windlass_secrets::load_identities(Some(&key_file)).unwrap_err().to_string();
    assert_eq!(
        refused,
        format!(
            "the age identity file {0} is accessible by other users (mode 644): it holds your private key, so \
             Windlass refuses to use it; run `chmod 600 {0}`",
            key_file.display()
        )
    );
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let options = OpenOptions { identity: Some(key_file) };

    let backend = FileBackend::locate(&dir.path().join("vault-files"), "production", options.identity.clone());
    backend.init(Format::Yaml, &[identity.recipient()]).unwrap();
    let backend = FileBackend::locate(&dir.path().join("vault-files"), "production", options.identity.clone());
    assert!(backend.path().ends_with("vault-files/production.enc.yaml"));
    backend
        .set_many(vec![("DATABASE_URL".into(), SecretValue::new("postgres://app:pw-1234567@db/app"))])
        .await
        .unwrap();

    let config = windlass_config::load(&config_path).unwrap();
    let set = windlass_secrets::load_all(&config, "production", &options).await.unwrap();
    assert_eq!(set.names().collect::<Vec<_>>(), ["DATABASE_URL"]);
    let redactor = set.redactor();
    assert_eq!(
        redactor.redact("connecting to postgres://app:pw-1234567@db/app"),
        "connecting to [REDACTED:DATABASE_URL]"
    );
    assert!(!format!("{set:?}").contains("pw-1234567"));

    let err = windlass_secrets::load_all(&config, "qa", &options).await.unwrap_err();
    assert!(matches!(err, SecretsError::Config(_)) && err.to_string().contains("no environment `qa`"), "{err}");
    let err = windlass_secrets::load_all(&config, "staging", &options).await.unwrap_err();
    assert!(err.to_string().contains("staging.enc.env") && err.to_string().contains("secrets init"), "{err}");
}
