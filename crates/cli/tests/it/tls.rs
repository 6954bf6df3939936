//! The CLI against `windlass server` over https: `[server] tls` with a certificate a private CA
//! (made by the real `openssl` in the test) signed, trusted with `--ca-file` or `WINDLASS_CA_FILE`.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use windlass_testkit::workspace_bin;

use crate::harness::Run;
use crate::platform::{EDGE_TOKEN, Platform, config, demo};

fn run(mut command: Command) -> Run {
    let output = command.output().unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_deploys_through_a_server_on_https_with_a_private_ca() {
    let certs = windlass_testkit::tempdir();
    let made = windlass_testkit::smtp::certificates(certs.path());
    std::fs::set_permissions(&made.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tls = format!("\n[server]\ntls = {{ cert = \"{}\", key = \"{}\" }}\n", made.cert.display(), made.key.display());
    let mut platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", &tls));
    assert!(platform.server_url.starts_with("https://127.0.0.1:"), "{}", platform.server_url);

    // The system's CAs do not know the private CA: the CLI refuses the server, saying why.
    let refused = platform.cli(&["status"]);
    assert_ne!(refused.code, 0, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("TLS") && refused.stderr.contains("certificate"), "{}", refused.stderr);

    // With the CA: a whole deploy, its events followed over TLS, then status and a rollback.
    let ca = made.ca.display().to_string();
    let mut deploy = platform.command_as(&platform.token, &["deploy", "production"]);
    deploy.env("WINDLASS_CA_FILE", &ca);
    let deploy = run(deploy);
    assert_eq!(deploy.code, 0, "{}{}", deploy.stdout, deploy.stderr);
    assert!(
        deploy.stdout.contains("[backend] roll out api") && deploy.stdout.contains("succeeded"),
        "{}",
        deploy.stdout
    );
    let status = run(platform.command_as(&platform.token, &["status", "--ca-file", &ca]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(status.stdout.contains("api: live blue"), "{}", status.stdout);
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(reply.status, 200);

    // A CA file for a plain http:// server is a usage error, not silently ignored.
    let mut plain = Command::new(workspace_bin("windlass"));
    plain.args(["status", "--ca-file", &ca, "--server", "http://127.0.0.1:1"]).env("WINDLASS_TOKEN", &platform.token);
    let plain = run(plain);
    assert_eq!(plain.code, 2, "{}", plain.stderr);
    assert!(plain.stderr.contains("is for an https:// server"), "{}", plain.stderr);

    // A key other users may read stops the server before it listens.
    platform.kill_server();
    std::fs::set_permissions(&made.key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut server = Command::new(workspace_bin("windlass"));
    server
        .args(["server", "--listen", "127.0.0.1:0"])
        .arg("--config")
        .arg(&platform.config)
        .arg("--state")
        .arg(platform.state_dir())
        .arg("--edge-admin")
        .arg(platform.edge_admin.to_string())
        .arg("--edge-listen")
        .arg(platform.edge_address.to_string())
        .env("WINDLASS_EDGE_TOKEN", EDGE_TOKEN);
    let refused = run(server);
    assert_ne!(refused.code, 0, "{}{}", refused.stdout, refused.stderr);
    assert!(refused.stderr.contains("chmod 600"), "{}", refused.stderr);
    assert!(!refused.stdout.contains("server listening"), "{}", refused.stdout);
}

/// The control plane drives an edge whose admin API is HTTPS (`[edge] admin_tls` with a private
/// CA, read from the config by both `windlass edge` and `windlass server`): two blue-green
/// deploys (pools, the pinned smoke check of the new color, the switch) go through it, and the
/// admin port answers no plain HTTP.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_drives_an_edge_whose_admin_api_is_https() {
    let certs = windlass_testkit::tempdir();
    let made = windlass_testkit::smtp::certificates(certs.path());
    let admin_tls = format!(
        "admin_tls = {{ cert = \"{}\", key = \"{}\", ca = \"{}\" }}\n",
        made.cert.display(),
        made.key.display(),
        made.ca.display()
    );
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", &admin_tls));
    platform.deploy(&[]);
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["version"], "v1");
    platform.rewrite_config(&config(&demo(), r#"VERSION = "v2""#, "1m", &admin_tls));
    platform.deploy(&[]);
    let reply = platform.get("api.shop.localhost", "/version").await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&reply.body).unwrap()["version"], "v2");

    let authorization = format!("Bearer {EDGE_TOKEN}");
    let plain = windlass_testkit::http::request(
        "GET",
        platform.edge_admin,
        "/edge/state",
        &[("authorization", &authorization)],
        "",
    )
    .await;
    assert!(plain.is_err() || plain.is_ok_and(|reply| reply.status != 200), "plain HTTP is not served");
}
