//! The server's API against its own contract: schemathesis (from PyPI) reads the OpenAPI
//! document a live `windlass server` serves at `/api/v1/openapi.json` and sends it generated
//! requests, on a one-service platform with one deploy behind it. Any answer the document does
//! not describe (status, content type, body schema) and any 5xx fails the test.
//!
//! `WINDLASS_TEST_SCHEMATHESIS` names the schemathesis binary (`.ci/run` installs it in
//! `.venv-tools`); without it the test fails, it never skips.

use std::process::Command;

use crate::platform::{Platform, config, demo};

/// Bounded so the run stays well under three minutes on a busy machine.
const MAX_EXAMPLES: &str = "15";

#[test]
fn the_api_answers_as_its_openapi_document_says() {
    let schemathesis = std::env::var("WINDLASS_TEST_SCHEMATHESIS").unwrap_or_else(|_| {
        panic!(
            "WINDLASS_TEST_SCHEMATHESIS is not set: set it to the path of a schemathesis 4.x binary \
             (locally: python3 -m venv .venv-tools && .venv-tools/bin/pip install schemathesis, then \
             WINDLASS_TEST_SCHEMATHESIS=$PWD/.venv-tools/bin/schemathesis)"
        )
    });
    let platform = Platform::start(&config(&demo(), r#"VERSION = "v1""#, "1m", ""));
    platform.deploy(&[]);
    let api = format!("{}/api/v1", platform.server_url);

    // The document needs no token: tools read it before they have one.
    let address: std::net::SocketAddr =
        platform.server_url.trim_start_matches("http://").parse().expect("the server's address");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let document = runtime.block_on(windlass_testkit::http::get(address, "/api/v1/openapi.json")).unwrap();
    assert_eq!(document.status, 200, "{}", document.body);
    let parsed: serde_json::Value = serde_json::from_str(&document.body).expect("the document is JSON");
    assert!(parsed["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", parsed["openapi"]);

    // Generated requests name the platform's environment and service (random names only
    // reach the 404s); a scale to hundreds of instances would test the machine, not the
    // contract, so scales go to an environment that does not exist.
    let settings = platform.dir.path().join("schemathesis.toml");
    std::fs::write(
        &settings,
        r#"[parameters]
"path.env" = "production"
"path.service" = "api"

[[operations]]
include-name = "PUT /environments/{env}/services/{service}/scale"
parameters = { "path.env" = "elsewhere" }
"#,
    )
    .unwrap();
    let reports = platform.dir.path().join("schemathesis");
    let output = Command::new(&schemathesis)
        .arg("--no-color")
        .arg("--config-file")
        .arg(&settings)
        .args(["run", &format!("{api}/openapi.json"), "--url", &api])
        .args(["--header", &format!("Authorization: Bearer {}", platform.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
        ])
        // The coverage phase (every boundary of every field) takes minutes on two busy cores:
        // generated cases and the stateful scenarios keep the run well inside its bound.
        .args(["--phases", "examples,fuzzing,stateful"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", "17", "--request-timeout", "20"])
        .arg("--report-dir")
        .arg(&reports)
        .current_dir(platform.dir.path())
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .output()
        .unwrap_or_else(|err| panic!("cannot run {schemathesis}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "schemathesis found answers outside the contract:\n{stdout}\n{stderr}");
}
