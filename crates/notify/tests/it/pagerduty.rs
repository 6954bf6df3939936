//! PagerDuty: alert events and change events against a server that checks PagerDuty's documented
//! field rules and keeps incidents by `dedup_key`; the v3 webhook signature check.

use serde_json::json;
use windlass_notify::{
    AlertAction, NotifyError, PagerDuty, PagerDutyWebhookError, Receiver, Severity, pagerduty_dedup_key,
    verify_pagerduty_webhook,
};
use windlass_testkit::receiver::{Answer, PagerDutyEvents, serve};

use super::{alert, message, quick};

/// 32 characters, like an Events API v2 integration key.
const ROUTING_KEY: &str = "R0ut1ngKeyF0rTests0123456789abcd";

async fn pagerduty(script: Vec<Answer>) -> (PagerDuty, windlass_testkit::receiver::Server) {
    let server = serve(script, None).await;
    let receiver = PagerDuty::new("pagerduty", ROUTING_KEY).unwrap().with_base_url(&server.url("http", "")).unwrap();
    (receiver, server)
}

#[tokio::test]
async fn one_alert_is_triggered_acknowledged_and_resolved_as_one_incident() {
    let events = PagerDutyEvents::new();
    let (pd, _server) = pagerduty(vec![events.answer()]).await;
    let key = "slo/api/production/availability";
    for action in [AlertAction::Trigger, AlertAction::Trigger, AlertAction::Acknowledge, AlertAction::Resolve] {
        let delivered = pd.alert(&alert(action, key), &quick(1)).await.unwrap();
        assert_eq!((delivered.status, delivered.dedup_key.as_deref()), (202, Some(key)));
    }
    let incidents = events.incidents(key);
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].status, "resolved");
    assert_eq!(incidents[0].actions, ["trigger", "trigger", "acknowledge", "resolve"]);
    let opened = &incidents[0].opened_by;
    assert_eq!(opened["payload"]["severity"], "critical");
    assert_eq!(
        (opened["payload"]["component"].as_str(), opened["payload"]["group"].as_str()),
        (Some("api"), Some("production"))
    );
    assert_eq!(opened["payload"]["class"], "slo.burn_rate");
    assert_eq!(opened["payload"]["custom_details"]["burn_rate"], 14.6);
    assert_eq!(opened["links"][0]["href"], "https://grafana.example/d/api");
    assert!(events.dropped().is_empty());

    // After the resolve, the same key opens a new incident, as PagerDuty does.
    pd.alert(&alert(AlertAction::Trigger, key), &quick(1)).await.unwrap();
    let incidents = events.incidents(key);
    assert_eq!(incidents.iter().map(|i| i.status).collect::<Vec<_>>(), ["resolved", "triggered"]);
}

#[tokio::test]
async fn a_long_key_and_summary_are_made_to_fit_and_still_meet() {
    let events = PagerDutyEvents::new();
    let (pd, _server) = pagerduty(vec![events.answer()]).await;
    let key = format!("probe/http/production/{}", "checkout-é-".repeat(60));
    let mut trigger = alert(AlertAction::Trigger, &key);
    trigger.summary = format!("checkout 503 — {}", "ä".repeat(3000));
    let delivered = pd.alert(&trigger, &quick(1)).await.unwrap();
    let sent_key = delivered.dedup_key.unwrap();
    assert_eq!(sent_key, pagerduty_dedup_key(&key));
    assert!(sent_key.chars().count() <= 255);
    pd.alert(&alert(AlertAction::Acknowledge, &key), &quick(1)).await.unwrap();

    let incidents = events.incidents(&sent_key);
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].status, "acknowledged", "the ack found the incident by the same hashed key");
    let summary = incidents[0].opened_by["payload"]["summary"].as_str().unwrap().to_owned();
    assert_eq!(summary.chars().count(), 1024);
    assert!(summary.starts_with("checkout 503 — ää") && summary.ends_with('…'));
}

#[tokio::test]
async fn business_alerts_page_as_error() {
    let events = PagerDutyEvents::new();
    let (pd, _server) = pagerduty(vec![events.answer()]).await;
    let mut signups = alert(AlertAction::Trigger, "business/signups/production");
    signups.severity = Severity::Business;
    pd.alert(&signups, &quick(1)).await.unwrap();
    let opened = &events.incidents("business/signups/production")[0].opened_by;
    assert_eq!(opened["payload"]["severity"], "error");
    assert_eq!(opened["payload"]["custom_details"]["windlass_severity"], "business");
}

#[tokio::test]
async fn a_400_is_reported_with_pagerdutys_errors_and_not_retried() {
    let events = PagerDutyEvents::new();
    let (pd, server) = pagerduty(vec![events.answer()]).await;
    // An acknowledgement without a key: PagerDuty refuses it.
    match pd.alert(&alert(AlertAction::Acknowledge, ""), &quick(4)).await {
        Err(err @ NotifyError::Refused { status: 400, .. }) => {
            let text = err.to_string();
            assert!(text.contains("dedup_key"), "{text}");
            assert!(!text.contains(ROUTING_KEY), "{text}");
        }
        other => panic!("expected a 400 refusal: {other:?}"),
    }
    assert_eq!(server.requests().len(), 1, "a 400 is not retried");
}

#[tokio::test]
async fn server_errors_and_429_are_retried_until_the_event_is_taken() {
    let events = PagerDutyEvents::new();
    let script = vec![Answer::Status(500, &[]), Answer::Status(429, &[("retry-after", "0")]), events.answer()];
    let (pd, server) = pagerduty(script).await;
    let delivered = pd.alert(&alert(AlertAction::Trigger, "edge/failover"), &quick(5)).await.unwrap();
    assert_eq!((delivered.attempts, delivered.status), (3, 202));
    assert_eq!(server.requests().len(), 3);
    assert_eq!(events.incidents("edge/failover").len(), 1);
}

#[tokio::test]
async fn a_deploy_message_is_a_change_event() {
    let events = PagerDutyEvents::new();
    let (pd, _server) = pagerduty(vec![events.answer()]).await;
    let delivered = pd.deliver(&message(), &quick(1)).await.unwrap();
    assert_eq!(delivered.status, 202);
    let changes = events.change_events();
    assert_eq!(changes.len(), 1);
    let payload = &changes[0]["payload"];
    assert_eq!(payload["summary"], "shop production: deploy production-20261123-101500 failed");
    assert_eq!(payload["custom_details"]["deploy_id"], "production-20261123-101500");
    assert_eq!(payload["custom_details"]["actor"], "alice");
    assert_eq!(payload["timestamp"], "2026-11-23T10:15:00Z");
    assert!(events.all_incidents().is_empty(), "a deploy pages nobody");
}

const WEBHOOK_SECRET: &str = "pd-webhook-secret-2026";

/// What PagerDuty puts in `X-PagerDuty-Signature`, computed here without the crate.
fn pagerduty_signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    format!("v1={}", hex::encode(ring::hmac::sign(&key, body).as_ref()))
}

fn acknowledged(incident_key: &str) -> Vec<u8> {
    json!({
        "event": {
            "id": "01DEN1HNLBC1VITK192ETJ1MPJ",
            "event_type": "incident.acknowledged",
            "resource_type": "incident",
            "occurred_at": "2026-11-23T10:17:00.000Z",
            "agent": {
                "html_url": "https://maily.pagerduty.com/users/PXPGF42",
                "id": "PXPGF42",
                "self": "https://api.pagerduty.com/users/PXPGF42",
                "summary": "Alice Oncall",
                "type": "user_reference"
            },
            "client": null,
            "data": {
                "id": "PGR0VU2",
                "type": "incident",
                "self": "https://api.pagerduty.com/incidents/PGR0VU2",
                "html_url": "https://maily.pagerduty.com/incidents/PGR0VU2",
                "number": 2,
                "status": "acknowledged",
                "incident_key": incident_key,
                "created_at": "2026-11-23T10:15:01Z",
                "title": "api production: availability 97.1% < 99.9% over 1h",
                "service": { "id": "PF9KMXH", "type": "service_reference", "summary": "api" },
                "urgency": "high"
            }
        }
    })
    .to_string()
    .into_bytes()
}

#[tokio::test]
async fn an_acknowledgement_in_pagerduty_maps_back_to_the_alert() {
    let events = PagerDutyEvents::new();
    let (pd, _server) = pagerduty(vec![events.answer()]).await;
    let key = format!("slo/{}", "very-long-objective-name/".repeat(20));
    let delivered = pd.alert(&alert(AlertAction::Trigger, &key), &quick(1)).await.unwrap();
    let sent_key = delivered.dedup_key.unwrap();

    let body = acknowledged(&sent_key);
    let event = verify_pagerduty_webhook(WEBHOOK_SECRET, &pagerduty_signature(WEBHOOK_SECRET, &body), &body).unwrap();
    assert_eq!(event.event_type, "incident.acknowledged");
    assert_eq!(event.action(), Some(AlertAction::Acknowledge));
    assert_eq!(event.incident_id.as_deref(), Some("PGR0VU2"));
    assert_eq!(event.agent.as_deref(), Some("Alice Oncall"));
    assert_eq!(event.incident_key.as_deref(), Some(pagerduty_dedup_key(&key).as_str()));
}

#[test]
fn a_tampered_webhook_is_rejected_and_a_rotated_secret_is_accepted() {
    let body = acknowledged("slo/api/production/availability");
    let signed = pagerduty_signature(WEBHOOK_SECRET, &body);

    let mut tampered = body.clone();
    let at = tampered.iter().position(|&b| b == b'A').unwrap(); // "Alice" becomes "Blice"
    tampered[at] = b'B';
    assert_eq!(
        verify_pagerduty_webhook(WEBHOOK_SECRET, &signed, &tampered).unwrap_err(),
        PagerDutyWebhookError::BadSignature
    );
    assert_eq!(
        verify_pagerduty_webhook("another-secret", &signed, &body).unwrap_err(),
        PagerDutyWebhookError::BadSignature
    );
    assert_eq!(
        verify_pagerduty_webhook(WEBHOOK_SECRET, "", &body).unwrap_err(),
        PagerDutyWebhookError::MissingSignature
    );

    // During a rotation PagerDuty signs with the old and the new secret; we know only the new.
    let rotated =
        format!("{},{}", pagerduty_signature("old-secret", &body), pagerduty_signature(WEBHOOK_SECRET, &body));
    let event = verify_pagerduty_webhook(WEBHOOK_SECRET, &rotated, &body).unwrap();
    assert_eq!(event.incident_key.as_deref(), Some("slo/api/production/availability"));

    let garbage = b"{\"not\":\"an event\"}";
    match verify_pagerduty_webhook(WEBHOOK_SECRET, &pagerduty_signature(WEBHOOK_SECRET, garbage), garbage) {
        Err(PagerDutyWebhookError::Malformed(why)) => assert!(why.contains("event"), "{why}"),
        other => panic!("expected a malformed body: {other:?}"),
    }
}

/// The checker the tests above rely on refuses what PagerDuty documents as invalid.
#[tokio::test]
async fn the_events_checker_refuses_what_pagerduty_refuses() {
    let events = PagerDutyEvents::new();
    let server = serve(vec![events.answer()], None).await;
    let url = windlass_http::Url::parse(&server.url("http", "/v2/enqueue")).unwrap();
    let valid = json!({
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": "k",
        "payload": { "summary": "s", "source": "h", "severity": "critical", "timestamp": "2026-11-23T10:15:00Z" },
    });
    let cases = [
        ("/routing_key", json!("R0ut1ngKeyF0rTests0123456789abc"), "routing_key"),
        ("/event_action", json!("escalate"), "event_action"),
        ("/dedup_key", json!("k".repeat(256)), "dedup_key"),
        ("/payload/summary", json!("s".repeat(1025)), "payload.summary"),
        ("/payload/source", json!(""), "payload.source"),
        ("/payload/severity", json!("fatal"), "payload.severity"),
        ("/payload/timestamp", json!("yesterday"), "payload.timestamp"),
    ];
    let send = |body: serde_json::Value| {
        let url = url.clone();
        async move {
            windlass_http::send_url(windlass_http::UrlRequest {
                method: "POST",
                url: &url,
                headers: &[("content-type", "application/json")],
                body: Some(body.to_string().into_bytes()),
                timeout: std::time::Duration::from_secs(5),
                ca_file: None,
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(send(valid.clone()).await.status, 202);
    for (pointer, value, named) in cases {
        let mut body = valid.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        let reply = send(body).await;
        assert_eq!(reply.status, 400, "{pointer}");
        assert!(reply.text().contains(named), "{pointer}: {}", reply.text());
    }
    assert_eq!(events.all_incidents().len(), 1);
}
