//! Slack and signed webhooks, plain and over TLS.

use std::sync::Arc;

use serde_json::Value;
use windlass_notify::{NotifyError, Receiver, Slack, Webhook};
use windlass_testkit::receiver::{Answer, serve, signed_with, slack_shape};

const SECRET: &str = "whsec-test-0123456789abcdef";

#[tokio::test]
async fn slack_receives_a_payload_it_accepts() {
    let server = serve(vec![Answer::Check(Arc::new(slack_shape))], None).await;
    let slack = Slack::new("slack", &server.url("http", "/services/T000/B000/XXXX")).unwrap();
    let delivered = slack.deliver(&super::message(), &super::quick(1)).await.unwrap();
    assert_eq!((delivered.status, delivered.attempts), (200, 1));
    let requests = server.requests();
    let payload: Value = serde_json::from_slice(&requests[0].1).unwrap();
    assert!(payload["text"].as_str().unwrap().contains("deploy production-20261123-101500 failed"));
}

#[tokio::test]
async fn webhooks_are_signed_and_a_forged_secret_is_refused_by_the_receiver() {
    let server = serve(vec![Answer::Check(signed_with(SECRET))], None).await;
    let url = server.url("http", "/hooks/windlass");
    let signed = Webhook::new("ops", &url, Some(SECRET.into())).unwrap();
    assert_eq!(signed.deliver(&super::message(), &super::quick(1)).await.unwrap().status, 200);
    let body: Value = serde_json::from_slice(&server.requests()[0].1).unwrap();
    assert_eq!((body["event"].as_str(), body["environment"].as_str()), (Some("deploy.failed"), Some("production")));

    let forged = Webhook::new("ops", &url, Some("not-the-secret".into())).unwrap();
    match forged.deliver(&super::message(), &super::quick(3)).await {
        Err(NotifyError::Refused { status: 401, .. }) => {}
        other => panic!("expected a 401 refusal: {other:?}"),
    }
    assert_eq!(server.requests().len(), 2, "a 401 is not retried");
}

#[tokio::test]
async fn server_errors_and_429_are_retried_honouring_retry_after_and_signatures_stay_fresh() {
    let script = vec![
        Answer::Status(503, &[]),
        Answer::Status(429, &[("retry-after", "1")]),
        Answer::Check(signed_with(SECRET)),
    ];
    let server = serve(script, None).await;
    let hook = Webhook::new("ops", &server.url("http", "/hooks"), Some(SECRET.into())).unwrap();
    let delivered = hook.deliver(&super::message(), &super::quick(5)).await.unwrap();
    assert_eq!((delivered.attempts, delivered.status), (3, 200));
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    // The 429's Retry-After (1 s) was waited, not the 100 ms back-off: the timestamps differ.
    let stamp = |i: usize| requests[i].0["x-windlass-timestamp"].to_str().unwrap().parse::<i64>().unwrap();
    assert!(stamp(2) > stamp(1), "retry after {} then {}", stamp(1), stamp(2));
}

#[tokio::test]
async fn a_400_is_not_retried_and_a_hanging_receiver_is_given_up_on() {
    let server = serve(vec![Answer::Status(400, &[])], None).await;
    let hook = Webhook::new("ops", &server.url("http", "/"), None).unwrap();
    assert!(matches!(
        hook.deliver(&super::message(), &super::quick(4)).await,
        Err(NotifyError::Refused { status: 400, .. })
    ));
    assert_eq!(server.requests().len(), 1);

    let hanging = serve(vec![Answer::Hang], None).await;
    let hook = Webhook::new("ops", &hanging.url("http", "/"), None).unwrap();
    match hook.deliver(&super::message(), &super::quick(2)).await {
        Err(NotifyError::GaveUp { attempts: 2, last, .. }) => assert!(last.contains("no answer"), "{last}"),
        other => panic!("expected to give up: {other:?}"),
    }
    assert_eq!(hanging.requests().len(), 2);
}

/// A rustls server configuration with a certificate for 127.0.0.1 from a test CA (made by the
/// real `openssl`).
fn certificates(dir: &std::path::Path) -> Arc<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    let made = windlass_testkit::smtp::certificates(dir);
    let chain =
        rustls_pki_types::CertificateDer::pem_file_iter(&made.cert).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&made.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

#[tokio::test]
async fn https_receivers_are_verified_against_the_trusted_certificates() {
    let dir = windlass_testkit::tempdir();
    let config = certificates(dir.path());
    let server = serve(vec![Answer::Check(signed_with(SECRET))], Some(config)).await;
    let url = server.url("https", "/hooks");
    let trusted = Webhook::new("ops", &url, Some(SECRET.into())).unwrap().with_ca_file(dir.path().join("ca.pem"));
    assert_eq!(trusted.deliver(&super::message(), &super::quick(1)).await.unwrap().status, 200);

    // Against the system's CAs the test CA is unknown: refused at once, never retried.
    let untrusted = Webhook::new("ops", &url, Some(SECRET.into())).unwrap();
    match untrusted.deliver(&super::message(), &super::quick(3)).await {
        Err(NotifyError::GaveUp { attempts: 1, last, .. }) => assert!(last.contains("TLS"), "{last}"),
        other => panic!("expected a TLS failure: {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn an_alert_reaches_a_webhook_signed_with_its_action_and_key() {
    let server = serve(vec![Answer::Check(signed_with(SECRET))], None).await;
    let hook = Webhook::new("ops", &server.url("http", "/hooks"), Some(SECRET.into())).unwrap();
    let alert = super::alert(windlass_notify::AlertAction::Resolve, "slo/api/production/availability");
    let delivered = hook.alert(&alert, &super::quick(1)).await.unwrap();
    assert_eq!((delivered.status, delivered.dedup_key.as_deref()), (200, Some("slo/api/production/availability")));
    let body: Value = serde_json::from_slice(&server.requests()[0].1).unwrap();
    assert_eq!(body["event"], "alert.resolved");
    assert_eq!(
        (body["alert"]["action"].as_str(), body["alert"]["severity"].as_str()),
        (Some("resolve"), Some("critical"))
    );
    assert_eq!(body["alert"]["dedup_key"], "slo/api/production/availability");
}
