//! Email to a real SMTP server (Debian's aiosmtpd) with STARTTLS, AUTH, and scripted failures.

use windlass_notify::{AlertAction, Email, NotifyError, Receiver};
use windlass_testkit::smtp::{self, SmtpOptions, SmtpTls};

use super::{alert, message, patient};

const USER: &str = "windlass@maily.example";
const PASSWORD: &str = "s3cr3t-smtp-passw0rd";

fn recipients() -> Vec<String> {
    vec!["devops@maily.example".into(), "oncall@maily.example".into()]
}

fn authenticated() -> SmtpOptions {
    SmtpOptions { credentials: Some((USER.into(), PASSWORD.into())), ..SmtpOptions::starttls() }
}

/// `user:password@`, percent-encoded as a URL needs.
fn userinfo(user: &str, password: &str) -> String {
    format!("{}:{}", user.replace('@', "%40"), password)
}

#[tokio::test]
async fn mail_is_delivered_over_starttls_with_subject_and_recipients() {
    let server = smtp::start(authenticated());
    let url = server.url("smtp", Some(&userinfo(USER, PASSWORD)), "");
    let email = Email::new("email", &recipients(), Some("Windlass <alerts@maily.example>"), Some(&url))
        .unwrap()
        .with_ca_file(server.ca_file.clone());
    let delivered = email.deliver(&message(), &patient(1)).await.unwrap();
    assert_eq!((delivered.attempts, delivered.status), (1, 250));

    let received = server.received();
    assert_eq!(received.len(), 1);
    let mail = &received[0];
    assert!(mail.tls, "the message came over TLS");
    assert_eq!(mail.login.as_deref(), Some(USER));
    assert_eq!(mail.mail_from, "alerts@maily.example");
    assert_eq!(mail.rcpt_tos, recipients());
    assert_eq!(mail.header("subject").as_deref(), Some("shop production: deploy production-20261123-101500 failed"));
    assert!(mail.header("to").unwrap().contains("oncall@maily.example"));
    let body = mail.body();
    assert!(body.contains("every service it changed was rolled back"), "{body}");
    assert!(body.contains("actor: alice"), "{body}");
    assert!(body.contains("deploy.failed · production · 2026-11-23T10:15:00Z"), "{body}");

    // An alert is rendered as a message: its severity leads the subject.
    email.alert(&alert(AlertAction::Trigger, "slo/api"), &patient(1)).await.unwrap();
    let subject = server.received()[1].header("subject").unwrap();
    assert_eq!(subject, "[CRITICAL] api production: availability 97.1% < 99.9% over 1h");
}

#[tokio::test]
async fn a_server_with_an_untrusted_certificate_gets_nothing() {
    let server = smtp::start(authenticated());
    let url = server.url("smtp", Some(&userinfo(USER, PASSWORD)), "");
    // The system's CAs do not know the test CA.
    let email = Email::new("email", &recipients(), None, Some(&url)).unwrap();
    match email.deliver(&message(), &patient(3)).await {
        Err(NotifyError::GaveUp { attempts: 1, last, .. }) => {
            assert!(last.contains("TLS with 127.0.0.1"), "{last}");
            assert!(last.to_lowercase().contains("certificate"), "{last}");
            assert!(!last.contains(PASSWORD), "{last}");
        }
        other => panic!("expected a TLS failure, not retried: {other:?}"),
    }
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn a_server_without_starttls_is_refused_when_tls_is_required() {
    let server = smtp::start(SmtpOptions { tls: SmtpTls::None, ..SmtpOptions::starttls() });
    let email = Email::new("email", &recipients(), None, Some(&server.url("smtp", None, ""))).unwrap();
    match email.deliver(&message(), &patient(2)).await {
        Err(NotifyError::GaveUp { attempts: 1, last, .. }) => {
            assert!(last.contains("does not offer STARTTLS"), "{last}")
        }
        other => panic!("expected a refusal to send without TLS, not retried: {other:?}"),
    }
    assert!(server.received().is_empty());

    // The documented opt-out for a relay on this machine.
    let plain = Email::new("email", &recipients(), None, Some(&server.url("smtp", None, "?tls=none"))).unwrap();
    plain.deliver(&message(), &patient(1)).await.unwrap();
    assert_eq!(server.received().len(), 1);
    assert!(!server.received()[0].tls);
}

#[tokio::test]
async fn wrong_credentials_are_refused_without_showing_them() {
    let server = smtp::start(authenticated());
    let wrong = "wr0ng-passw0rd-value";
    let url = server.url("smtp", Some(&userinfo(USER, wrong)), "");
    let email = Email::new("email", &recipients(), None, Some(&url)).unwrap().with_ca_file(server.ca_file.clone());
    assert!(!format!("{email:?}").contains(wrong));
    let err = email.deliver(&message(), &patient(3)).await.unwrap_err();
    assert!(matches!(err, NotifyError::Refused { status: 535, .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(wrong), "{text}");
    assert!(!text.contains(USER), "{text}");
    assert!(server.received().is_empty());
}

#[tokio::test]
async fn transient_replies_are_retried_and_permanent_ones_are_not() {
    let server = smtp::start(SmtpOptions { transient_failures: 2, ..SmtpOptions::starttls() });
    let url = server.url("smtp", None, "");
    let email = Email::new("email", &recipients(), None, Some(&url)).unwrap().with_ca_file(server.ca_file.clone());
    let delivered = email.deliver(&message(), &patient(5)).await.unwrap();
    assert_eq!(delivered.attempts, 3, "two 451 replies, then accepted");
    assert_eq!(server.received().len(), 1);

    let rejecting = smtp::start(SmtpOptions { reject: vec!["gone@maily.example".into()], ..SmtpOptions::starttls() });
    let url = rejecting.url("smtp", None, "");
    let email = Email::new("email", &["gone@maily.example".into()], None, Some(&url))
        .unwrap()
        .with_ca_file(rejecting.ca_file.clone());
    match email.deliver(&message(), &patient(5)).await {
        Err(NotifyError::Refused { status: 550, body, .. }) => assert!(body.contains("mailbox unavailable"), "{body}"),
        other => panic!("expected a permanent refusal: {other:?}"),
    }
    assert!(rejecting.received().is_empty());
}

#[tokio::test]
async fn smtps_speaks_tls_from_the_first_byte() {
    let server = smtp::start(SmtpOptions { tls: SmtpTls::Implicit, ..authenticated() });
    let url = server.url("smtps", Some(&userinfo(USER, PASSWORD)), "");
    let email = Email::new("email", &recipients(), None, Some(&url)).unwrap().with_ca_file(server.ca_file.clone());
    email.deliver(&message(), &patient(1)).await.unwrap();
    let received = server.received();
    assert_eq!(received.len(), 1);
    assert!(received[0].tls);
    assert_eq!(received[0].login.as_deref(), Some(USER));
    assert_eq!(received[0].mail_from, "windlass@localhost");
}
