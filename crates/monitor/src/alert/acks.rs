//! Acknowledgements, by hand or by signed link: an acknowledged alert stops repeating and
//! escalating. A link's token is an HMAC over the alert, its firing and an expiry, checked in
//! constant time.
//!
//! A link acknowledges only the firing it was made for, and only until it expires; this module
//! must not accept a token whose MAC it has not checked, and must not log the server's secret.

use jiff::Timestamp;

use super::{Ack, AckVia, Action, AlertError, AlertStatus, AlertView, Dispatch, Engine};
use crate::incident::TimelineEntry;

impl Engine {
    /// Acknowledges a firing alert: escalation stops, repeats stop, and everyone told of it is
    /// told of the acknowledgement. An unknown, resolved or already acknowledged alert is an
    /// error and nothing changes.
    pub fn acknowledge(
        &mut self,
        id: &str,
        by: &str,
        via: AckVia,
        note: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<Dispatch>, AlertError> {
        let _span = tracing::info_span!("alert", id).entered();
        let alert = self.alerts.get(id).ok_or_else(|| AlertError::UnknownAlert(id.to_owned()))?;
        if let (AlertStatus::Resolved, Some(at)) = (alert.status, alert.resolved_at) {
            return Err(AlertError::AlreadyResolved { id: id.to_owned(), at });
        }
        if let Some(ack) = &alert.ack {
            return Err(AlertError::AlreadyAcknowledged { id: id.to_owned(), by: ack.by.clone(), at: ack.at });
        }
        let ack = Ack { by: by.to_owned(), via: via.clone(), at: now, note: note.map(str::to_owned) };
        let alert = match self.alerts.get_mut(id) {
            Some(alert) => alert,
            None => return Err(AlertError::UnknownAlert(id.to_owned())),
        };
        alert.ack = Some(ack);
        self.dirty_alerts.insert(id.to_owned());
        tracing::info!(alert = %id, by, via = %via, "alert acknowledged");
        let view = AlertView::from(&*alert);
        let out: Vec<Dispatch> = alert
            .told
            .iter()
            .map(|to| Dispatch {
                to: to.clone(),
                action: Action::Acknowledge,
                group: id.to_owned(),
                environment: alert.environment.clone(),
                service: alert.service.clone(),
                level: None,
                alerts: vec![view.clone()],
            })
            .collect();
        let mut message = format!("{} acknowledged {} via {via}", by, alert.name);
        if let Some(note) = note {
            message.push_str(&format!(": {note}"));
        }
        if let Some(incident) = alert.incident.and_then(|i| self.incidents.get_mut(&i)) {
            incident.acknowledged_at.get_or_insert(now);
            incident.record(TimelineEntry::new(now, "alert.acknowledged", message).by(by).about(id));
            self.dirty_incidents.insert(incident.id);
        }
        Ok(out)
    }

    /// Acknowledges through a signed link (see [`ack_token`]).
    pub fn acknowledge_link(
        &mut self,
        secret: &[u8],
        token: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<Vec<Dispatch>, AlertError> {
        let claim = verify_ack_token(secret, token, now)?;
        let alert = self.alerts.get(&claim.alert).ok_or_else(|| AlertError::UnknownAlert(claim.alert.clone()))?;
        // The link carries the firing time in milliseconds; the alert keeps the clock's own.
        if alert.fired_at.as_millisecond() != claim.fired_at.as_millisecond() {
            return Err(AlertError::LinkForEarlierFiring(claim.alert));
        }
        self.acknowledge(&claim.alert, by, AckVia::Link, None, now)
    }
}

/// What a valid acknowledgement link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckClaim {
    pub alert: String,
    /// Which firing: a link of an earlier firing does not acknowledge a later one.
    pub fired_at: Timestamp,
    pub expires: Timestamp,
}

fn ack_message(alert: &str, fired_ms: i64, expires_s: i64) -> String {
    format!("windlass-ack.v1.{alert}.{fired_ms}.{expires_s}")
}

/// A token for a signed acknowledgement link: `<alert>.<fired ms>.<expires s>.<mac>`, where the
/// MAC is HMAC-SHA256 with the server's secret over `windlass-ack.v1.<alert>.<fired>.<expires>`,
/// in unpadded base64url. It acknowledges this firing of the alert only, until it expires.
pub fn ack_token(secret: &[u8], alert: &str, fired_at: Timestamp, expires: Timestamp) -> String {
    let (fired, expires) = (fired_at.as_millisecond(), expires.as_second());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, ack_message(alert, fired, expires).as_bytes());
    use base64::Engine as _;
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
    format!("{alert}.{fired}.{expires}.{mac}")
}

/// Checks a link's token: its MAC (in constant time) and its expiry.
pub fn verify_ack_token(secret: &[u8], token: &str, now: Timestamp) -> Result<AckClaim, AlertError> {
    let mut parts = token.split('.');
    let (Some(alert), Some(fired), Some(expires), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AlertError::BadLink("not four parts"));
    };
    let fired: i64 = fired.parse().map_err(|_| AlertError::BadLink("bad firing time"))?;
    let expires_s: i64 = expires.parse().map_err(|_| AlertError::BadLink("bad expiry"))?;
    use base64::Engine as _;
    let mac = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(mac)
        .map_err(|_| AlertError::BadLink("bad signature"))?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    ring::hmac::verify(&key, ack_message(alert, fired, expires_s).as_bytes(), &mac)
        .map_err(|_| AlertError::BadLink("wrong signature"))?;
    let expires = Timestamp::from_second(expires_s).map_err(|_| AlertError::BadLink("bad expiry"))?;
    if now >= expires {
        return Err(AlertError::LinkExpired);
    }
    let fired_at = Timestamp::from_millisecond(fired).map_err(|_| AlertError::BadLink("bad firing time"))?;
    Ok(AckClaim { alert: alert.to_owned(), fired_at, expires })
}
