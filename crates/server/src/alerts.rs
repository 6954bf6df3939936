//! Alerts, silences, acknowledgements and incidents over `/api/v1`, the signed acknowledgement
//! links (`/ack/<token>`, outside the token-authenticated API: the link is its own proof), and
//! the once-a-second tick of the alert engine.
//!
//! The engine decides what to send; `crate::courier` sends it.

#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use windlass_api::alerts as wire;
use windlass_api::alerts::{
    AckRequest, Acknowledged, AlertList, AlertQuery, AlreadyAcknowledged, HookIgnored, IncidentList, IncidentResolved,
    LinkAcknowledged, NoteRequest, Noted, Postmortem, Reliability, ReliabilityQuery, SilenceList, SilenceRequest,
};
use windlass_config::Config;
use windlass_monitor::alert::persist::{Alerting, PersistError, incident_from};
use windlass_monitor::alert::{
    Ack, AckVia, Alert, AlertError, AlertStatus, Ladder, Matchers, NewSilence, Silence, SilenceKind, severity,
};
use windlass_monitor::incident::{Incident, IncidentStatus, human, postmortem};
use windlass_monitor::oncall::Recipient;
use windlass_store::{Clock, Store, SystemClock};

use crate::access::{Permission, Scope};
use crate::api::{Actor, AppState, Path, Query, body, error, known_environment};

/// Opens the engine over the store (resuming its firing alerts).
pub(crate) async fn open(store: Arc<dyn Store>, config: &Config) -> Result<Arc<Alerting>, crate::ServerError> {
    let alerting = Alerting::open(store, Arc::new(SystemClock), &config.alerts, &config.oncall)
        .await
        .map_err(|err| crate::ServerError::Setup(format!("cannot resume alerting: {err}")))?;
    Ok(Arc::new(alerting))
}

/// Once a second: group waits, repeats and escalations that time has made due.
pub(crate) async fn run(courier: Arc<crate::courier::Courier>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        match courier.alerting.with(|engine, now| engine.tick(now)).await {
            Ok(dispatches) => courier.deliver(dispatches),
            Err(err) => tracing::warn!(%err, "alerting: cannot save the engine's state"),
        }
    }
}

/// Tells the engine the edge put a service (or every service) in maintenance or out of it.
pub(crate) async fn maintenance(state: &AppState, environment: &str, service: Option<&str>, on: bool, actor: &str) {
    let result = state.alerting.with(|engine, now| engine.maintenance(environment, service, on, actor, now)).await;
    if let Err(err) = result {
        tracing::warn!(%err, "alerting: cannot record the maintenance window");
    }
}

/// The routes under `/api/v1` (behind the token check), each with the permission it needs.
/// Alerts and incidents name no environment in their path: the permission held on any
/// environment lets the call through.
pub(crate) fn routes() -> crate::api::Routes {
    use crate::access::Permission::*;
    crate::api::Routes::new()
        .get("/alerts", list_alerts, Read)
        .post("/alerts/{id}/ack", ack, Acknowledge)
        .get("/silences", list_silences, Read)
        .post("/silences", add_silence, Silence)
        .delete("/silences/{id}", expire_silence, Silence)
        .get("/incidents", list_incidents, Read)
        .get("/reliability", reliability, Read)
        .get("/incidents/{id}", show_incident, Read)
        .post("/incidents/{id}/notes", add_note, Incident)
        .post("/incidents/{id}/resolve", resolve_incident, Incident)
        .get("/incidents/{id}/postmortem", show_postmortem, Read)
}

/// The signed-link routes and PagerDuty's webhook, outside the API's token check: each carries
/// its own proof (the link's HMAC, PagerDuty's signature).
pub(crate) fn public_routes() -> Router<AppState> {
    Router::new().route("/ack/{token}", get(ack_page).post(ack_link)).route("/hooks/pagerduty", post(pagerduty_hook))
}

/// Where received webhook events are recorded (`Store::record_webhook_event`).
const PAGERDUTY_SOURCE: &str = "pagerduty";

/// PagerDuty's v3 webhook: an incident acknowledged in PagerDuty acknowledges the alert whose
/// `dedup_key` opened it, so escalation stops here too.
///
/// In this order, each step refusing before the next is tried:
/// 1. the signature, against `alerts.pagerduty_webhook_secret` as the server resolved it ahead
///    of time ([`crate::courier::HookSecrets`]): a request is never what makes the server read
///    its secrets backend. No match: 401, nothing done.
/// 2. freshness: `event.occurred_at` within [`windlass_notify::PAGERDUTY_WEBHOOK_WINDOW`] of the
///    server's clock, either way. A captured body stays validly signed for ever; this bounds
///    how long it can be replayed.
/// 3. the event's id, recorded in the store (one transaction, so two deliveries racing act
///    once): an id already received is a replay, or PagerDuty delivering twice (it delivers at
///    least once).
///
/// A stale or already received event answers 2xx (202 and 200), does nothing, and is logged:
/// PagerDuty retries any other answer, and a retry of either can never succeed, so a 4xx would
/// only buy futile retries and count towards PagerDuty's disabling the subscription. Only
/// validly signed bodies get these answers, so they tell a forger nothing.
async fn pagerduty_hook(State(state): State<AppState>, headers: axum::http::HeaderMap, bytes: Bytes) -> Response {
    let Ok(config) = state.deployer.shared_config() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the config cannot be read");
    };
    if config.alerts.pagerduty_webhook_secret.is_none() {
        return error(StatusCode::NOT_FOUND, "no alerts.pagerduty_webhook_secret is configured");
    }
    let secrets = state.courier.hook_secrets.current();
    if secrets.is_empty() {
        tracing::warn!("a PagerDuty webhook was refused: alerts.pagerduty_webhook_secret is not resolved yet");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "alerts.pagerduty_webhook_secret is not resolved yet; see the server's log",
        );
    }
    let signature =
        headers.get(windlass_notify::PAGERDUTY_SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let mut verified = Err(windlass_notify::PagerDutyWebhookError::MissingSignature);
    for secret in &secrets {
        verified = windlass_notify::verify_pagerduty_webhook(secret.expose(), signature, &bytes);
        // Only a bad signature is worth trying the next secret for.
        if !matches!(verified, Err(windlass_notify::PagerDutyWebhookError::BadSignature)) {
            break;
        }
    }
    let event = match verified {
        Ok(event) => event,
        Err(err @ windlass_notify::PagerDutyWebhookError::Malformed(_)) => {
            tracing::warn!(problem = %err, "a signed PagerDuty webhook was refused");
            return error(StatusCode::BAD_REQUEST, err);
        }
        Err(err) => {
            tracing::warn!(problem = %err, "a PagerDuty webhook was refused");
            return error(StatusCode::UNAUTHORIZED, err);
        }
    };
    let now = state.deployer.clock.now();
    let window = windlass_notify::PAGERDUTY_WEBHOOK_WINDOW;
    match event.check_fresh(now, window) {
        Ok(()) => {}
        Err(err @ windlass_notify::PagerDutyWebhookError::Stale { .. }) => {
            tracing::warn!(event = %event.id, problem = %err, "a stale PagerDuty webhook event was ignored");
            return (StatusCode::ACCEPTED, Json(HookIgnored { ignored: err.to_string() })).into_response();
        }
        Err(err) => {
            tracing::warn!(event = %event.id, problem = %err, "a signed PagerDuty webhook was refused");
            return error(StatusCode::BAD_REQUEST, err);
        }
    }
    // An event dated up to one window ahead stays fresh until one window after its date: its
    // id is remembered for two windows after it arrived.
    let forget_before = now - window * 2;
    match state.store.record_webhook_event(PAGERDUTY_SOURCE, &event.id, now, forget_before).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(event = %event.id, "a PagerDuty webhook event already received was ignored (a replay or a redelivery)");
            let ignored = format!("event {} was already received", event.id);
            return (StatusCode::OK, Json(HookIgnored { ignored })).into_response();
        }
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
    let response = act_on_pagerduty_event(&state, event.clone()).await;
    if response.status().is_server_error() {
        // Not acted on: PagerDuty's retry of it must be.
        if let Err(err) = state.store.forget_webhook_event(PAGERDUTY_SOURCE, &event.id).await {
            tracing::warn!(%err, event = %event.id, "cannot forget a PagerDuty webhook event not acted on");
        }
    }
    response
}

/// What a genuine, fresh, new PagerDuty event does.
async fn act_on_pagerduty_event(state: &AppState, event: windlass_notify::PagerDutyWebhookEvent) -> Response {
    if event.action() != Some(windlass_notify::AlertAction::Acknowledge) {
        return (StatusCode::ACCEPTED, Json(HookIgnored { ignored: event.event_type })).into_response();
    }
    let Some(id) = event.incident_key.clone() else {
        return (StatusCode::ACCEPTED, Json(HookIgnored { ignored: "an incident without an incident_key".into() }))
            .into_response();
    };
    let by = event.agent.clone().unwrap_or_else(|| "PagerDuty".to_owned());
    let via = AckVia::External("pagerduty".into());
    let result = state.alerting.with(|engine, now| engine.acknowledge(&id, &by, via, None, now)).await;
    match result {
        Err(err) => persist_error(err),
        // PagerDuty echoes acknowledgements Windlass sent itself: already done is fine.
        Ok(Err(AlertError::AlreadyAcknowledged { .. })) => {
            (StatusCode::OK, Json(AlreadyAcknowledged { alert: id, already_acknowledged: true })).into_response()
        }
        Ok(Err(err)) => alert_error(err),
        Ok(Ok(dispatches)) => {
            state.courier.deliver(dispatches);
            let message = format!("alert {id} acknowledged in PagerDuty by {by}");
            audit(&*state.store, &by, None, "alert.ack", &id, message.clone()).await;
            Json(Acknowledged { alert: id, acknowledged_by: by, message }).into_response()
        }
    }
}

fn persist_error(err: PersistError) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, err)
}

fn alert_error(err: AlertError) -> Response {
    let status = match err {
        AlertError::UnknownAlert(_) | AlertError::UnknownSilence(_) | AlertError::UnknownIncident(_) => {
            StatusCode::NOT_FOUND
        }
        AlertError::AlreadyResolved { .. }
        | AlertError::AlreadyAcknowledged { .. }
        | AlertError::IncidentAlreadyResolved { .. }
        | AlertError::LinkForEarlierFiring(_) => StatusCode::CONFLICT,
        AlertError::BadLink(_) | AlertError::LinkExpired => StatusCode::FORBIDDEN,
        AlertError::SilenceMatchesEverything | AlertError::SilenceEndsBeforeStart => StatusCode::BAD_REQUEST,
    };
    error(status, err)
}

/// The API's one audit format ([`crate::api::audit_as`]).
async fn audit(store: &dyn Store, actor: &str, environment: Option<&str>, kind: &str, subject: &str, message: String) {
    crate::api::audit_as(store, actor, environment, kind, subject, message).await;
}

/// `actor` holds `permission` on what an alert, silence or incident concerns. These routes name
/// no environment in their path, so the token check only saw that the caller holds the
/// permission somewhere; this checks it where the call acts. A silence of no environment
/// silences every environment, so it needs the permission on each of them.
async fn require_on(
    state: &AppState,
    actor: &Actor,
    permission: Permission,
    environment: Option<&str>,
    service: Option<&str>,
) -> Result<(), Response> {
    if let Some(environment) = environment {
        let scope = Scope { environment: Some(environment), service };
        return crate::access::require(state, actor, permission, scope).await;
    }
    let config = state.deployer.shared_config().map_err(|err| error(StatusCode::SERVICE_UNAVAILABLE, err))?;
    for environment in config.environments.keys() {
        let scope = Scope { environment: Some(environment), service };
        crate::access::require(state, actor, permission, scope).await?;
    }
    Ok(())
}

/// 404 for an environment the config does not declare, as the routes with `{env}` answer (a
/// query for one would otherwise answer an empty list or zeros, as if it were quiet).
fn declared(state: &AppState, environment: Option<&str>) -> Result<(), Response> {
    let Some(environment) = environment else { return Ok(()) };
    let config = state.deployer.shared_config().map_err(|err| error(StatusCode::SERVICE_UNAVAILABLE, err))?;
    windlass_pipeline::plan::check_environment(&config, environment).map_err(|err| error(StatusCode::NOT_FOUND, err))
}

async fn list_alerts(State(state): State<AppState>, Query(query): Query<AlertQuery>) -> Response {
    if let Err(response) = declared(&state, query.environment.as_deref()) {
        return response;
    }
    let wanted = query.status.as_deref().unwrap_or("firing");
    if !matches!(wanted, "firing" | "resolved" | "all") {
        return error(StatusCode::BAD_REQUEST, "status is one of firing, resolved, all");
    }
    let alerts = state
        .alerting
        .with(|engine, _| {
            let mut alerts: Vec<&Alert> = engine
                .alerts()
                .filter(|a| query.environment.as_deref().is_none_or(|e| e == a.environment))
                .filter(|a| wanted == "all" || (wanted == "firing") == a.is_firing())
                .collect();
            alerts.sort_by_key(|a| std::cmp::Reverse(a.fired_at));
            alerts.into_iter().map(alert_item).collect::<Vec<_>>()
        })
        .await;
    match alerts {
        Ok(alerts) => Json(AlertList { alerts }).into_response(),
        Err(err) => persist_error(err),
    }
}

async fn ack(
    State(state): State<AppState>,
    Extension(caller): Extension<Actor>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let request: AckRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    // An unknown alert falls through to the engine, which answers 404 naming it.
    let concerns =
        state.alerting.with(|engine, _| engine.alert(&id).map(|a| (a.environment.clone(), a.service.clone())));
    match concerns.await {
        Err(err) => return persist_error(err),
        Ok(Some((environment, service))) => {
            if let Err(denied) =
                require_on(&state, &caller, Permission::Acknowledge, Some(&environment), Some(&service)).await
            {
                return denied;
            }
        }
        Ok(None) => {}
    }
    let actor = caller.name;
    let via = if request.via.as_deref() == Some("cli") { AckVia::Cli } else { AckVia::Api };
    let note = request.note.clone();
    let result = state
        .alerting
        .with(|engine, now| {
            engine.acknowledge(&id, &actor, via, note.as_deref(), now).map(|dispatches| {
                let alert = engine.alert(&id).map(|a| (a.environment.clone(), a.name.clone()));
                (dispatches, alert)
            })
        })
        .await;
    match result {
        Err(err) => persist_error(err),
        Ok(Err(err)) => alert_error(err),
        Ok(Ok((dispatches, alert))) => {
            state.courier.deliver(dispatches);
            let (environment, name) = alert.unwrap_or_default();
            let message = format!("acknowledged alert {name}{}", note.map(|n| format!(": {n}")).unwrap_or_default());
            audit(&*state.store, &actor, Some(&environment), "alert.ack", &id, message.clone()).await;
            Json(Acknowledged { alert: id, acknowledged_by: actor, message }).into_response()
        }
    }
}

/// A page with a button: following a link (or a chat client previewing it) acknowledges
/// nothing; the button's POST does.
async fn ack_page(Path(token): Path<String>) -> Response {
    let token = token.replace(['"', '<', '>', '&'], "");
    let page = format!(
        "<!doctype html><title>Acknowledge alert</title>\
         <form method=\"post\" action=\"/ack/{token}\"><button>Acknowledge this alert</button></form>"
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

async fn ack_link(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let by = "signed link";
    let key = state.courier.ack_key.bytes();
    let result = state.alerting.with(|engine, now| engine.acknowledge_link(key, &token, by, now)).await;
    match result {
        Err(err) => persist_error(err),
        Ok(Err(err)) => alert_error(err),
        Ok(Ok(dispatches)) => {
            let id = token.split('.').next().unwrap_or_default().to_owned();
            state.courier.deliver(dispatches);
            audit(&*state.store, by, None, "alert.ack", &id, format!("acknowledged alert {id} by a signed link")).await;
            Json(LinkAcknowledged { alert: id, acknowledged_by: by.to_owned() }).into_response()
        }
    }
}

/// A link for notifications to carry: acknowledges this firing of the alert until `expires`.
pub fn ack_link_for(
    key: &crate::ack_key::AckKey,
    alert: &str,
    fired_at: jiff::Timestamp,
    expires: jiff::Timestamp,
) -> String {
    format!("/ack/{}", windlass_monitor::alert::ack_token(key.bytes(), alert, fired_at, expires))
}

async fn list_silences(State(state): State<AppState>, Query(query): Query<AlertQuery>) -> Response {
    if let Err(response) = declared(&state, query.environment.as_deref()) {
        return response;
    }
    let result = state
        .alerting
        .with(|engine, now| {
            engine
                .silences()
                .filter(|s| {
                    query
                        .environment
                        .as_deref()
                        .is_none_or(|e| s.matchers.environment.as_deref().is_none_or(|m| m == e))
                })
                .map(|s| wire::ListedSilence { silence: silence_item(s), active: s.is_active(now) })
                .collect::<Vec<_>>()
        })
        .await;
    match result {
        Ok(silences) => Json(SilenceList { silences }).into_response(),
        Err(err) => persist_error(err),
    }
}

async fn add_silence(State(state): State<AppState>, Extension(caller): Extension<Actor>, bytes: Bytes) -> Response {
    let request: SilenceRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Some(environment) = &request.environment
        && let Err(response) = known_environment(&state, environment)
    {
        return response;
    }
    let (environment, service) = (request.environment.as_deref(), request.service.as_deref());
    if let Err(denied) = require_on(&state, &caller, Permission::Silence, environment, service).await {
        return denied;
    }
    let actor = caller.name;
    // The config's parser bounds it (100 years at most), so the end below is a time jiff holds.
    let duration = match windlass_config::units::Duration::parse(&request.duration) {
        Ok(duration) => duration.as_std(),
        Err(problem) => return error(StatusCode::BAD_REQUEST, format!("`for`: {problem}")),
    };
    let severity = match request.severity.as_deref().map(|s| severity::parse(s).ok_or(s)) {
        None => None,
        Some(Ok(severity)) => Some(severity),
        Some(Err(word)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown severity `{word}`: critical, warning, info, business"),
            );
        }
    };
    if request.reason.trim().is_empty() {
        return error(StatusCode::BAD_REQUEST, "a silence needs a reason");
    }
    let matchers = Matchers {
        name: request.name.clone(),
        service: request.service.clone(),
        environment: request.environment.clone(),
        severity,
    };
    let reason = request.reason.clone();
    let author = actor.clone();
    let result = state
        .alerting
        .with(|engine, now| {
            // Checked all the same: a sum past jiff's last time would panic the handler.
            let ends_at = now.checked_add(duration).ok()?;
            Some(engine.add_silence(NewSilence { matchers, starts_at: now, ends_at, author, reason }))
        })
        .await
        .map(|added| {
            added
                .ok_or_else(|| format!("`for`: {} from now is past the last time Windlass can count", request.duration))
        });
    match result {
        Err(err) => persist_error(err),
        Ok(Err(problem)) => error(StatusCode::BAD_REQUEST, problem),
        Ok(Ok(added)) => match added {
            Err(err) => alert_error(err),
            Ok(silence) => {
                let message = format!("silenced alerts for {}: {}", request.duration, request.reason);
                audit(&*state.store, &actor, request.environment.as_deref(), "silence.add", &silence.id, message).await;
                (StatusCode::CREATED, Json(silence_item(&silence))).into_response()
            }
        },
    }
}

async fn expire_silence(
    State(state): State<AppState>,
    Extension(caller): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    // An unknown silence falls through to the engine, which answers 404 naming it.
    let concerns = state.alerting.with(|engine, _| {
        engine.silences().find(|s| s.id == id).map(|s| (s.matchers.environment.clone(), s.matchers.service.clone()))
    });
    match concerns.await {
        Err(err) => return persist_error(err),
        Ok(Some((environment, service))) => {
            if let Err(denied) =
                require_on(&state, &caller, Permission::Silence, environment.as_deref(), service.as_deref()).await
            {
                return denied;
            }
        }
        Ok(None) => {}
    }
    let actor = caller.name;
    let result = state.alerting.with(|engine, now| engine.expire_silence(&id, now)).await;
    match result {
        Err(err) => persist_error(err),
        Ok(Err(err)) => alert_error(err),
        Ok(Ok(silence)) => {
            let environment = silence.matchers.environment.clone();
            audit(
                &*state.store,
                &actor,
                environment.as_deref(),
                "silence.expire",
                &id,
                format!("expired silence {id}"),
            )
            .await;
            Json(silence_item(&silence)).into_response()
        }
    }
}

async fn list_incidents(State(state): State<AppState>, Query(query): Query<AlertQuery>) -> Response {
    if let Err(response) = declared(&state, query.environment.as_deref()) {
        return response;
    }
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let records = match state.store.incident_records(query.environment.as_deref(), limit).await {
        Ok(records) => records,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let mut incidents = Vec::new();
    for record in &records {
        match incident_from(record) {
            Ok(mut incident) => {
                incident.timeline.clear();
                incidents.push(incident_item(&incident));
            }
            Err(err) => return persist_error(err),
        }
    }
    Json(IncidentList { incidents }).into_response()
}

async fn find_incident(state: &AppState, id: &str) -> Result<windlass_monitor::incident::Incident, Response> {
    let number: i64 =
        id.parse().map_err(|_| error(StatusCode::BAD_REQUEST, format!("`{id}` is not an incident number")))?;
    match state.store.incident_record(number).await {
        Ok(Some(record)) => incident_from(&record).map_err(persist_error),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("no incident {id}"))),
        Err(err) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, err)),
    }
}

async fn show_incident(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match find_incident(&state, &id).await {
        Ok(incident) => Json(incident_item(&incident)).into_response(),
        Err(response) => response,
    }
}

async fn show_postmortem(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match find_incident(&state, &id).await {
        Ok(incident) => {
            let markdown = postmortem(&incident, SystemClock.now());
            Json(Postmortem { incident: incident.id, markdown }).into_response()
        }
        Err(response) => response,
    }
}

/// `actor` holds the incident permission on the incident's environment and service. An unknown
/// incident answers 404 here, before anything else.
async fn require_on_incident(state: &AppState, actor: &Actor, id: &str) -> Result<(), Response> {
    let incident = find_incident(state, id).await?;
    require_on(state, actor, Permission::Incident, Some(&incident.environment), Some(&incident.service)).await
}

fn incident_number(id: &str) -> Result<u64, Response> {
    id.parse().map_err(|_| error(StatusCode::BAD_REQUEST, format!("`{id}` is not an incident number")))
}

async fn add_note(
    State(state): State<AppState>,
    Extension(caller): Extension<Actor>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let request: NoteRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Some(text) = request.text.or(request.note).filter(|t| !t.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "a note needs `text`");
    };
    let number = match incident_number(&id) {
        Ok(number) => number,
        Err(response) => return response,
    };
    if let Err(response) = require_on_incident(&state, &caller, &id).await {
        return response;
    }
    let actor = caller.name;
    match state.alerting.with(|engine, now| engine.note(number, &actor, &text, now)).await {
        Err(err) => persist_error(err),
        Ok(Err(AlertError::UnknownIncident(_))) => match find_incident(&state, &id).await {
            // Resolved incidents are not kept in memory: notes go to open incidents.
            Ok(incident) => error(
                StatusCode::CONFLICT,
                format!("incident {id} is {}: notes go to open incidents", incident.status.as_str()),
            ),
            Err(response) => response,
        },
        Ok(Err(err)) => alert_error(err),
        Ok(Ok(())) => Json(Noted { incident: number, note: text }).into_response(),
    }
}

async fn resolve_incident(
    State(state): State<AppState>,
    Extension(caller): Extension<Actor>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Response {
    let request: NoteRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let number = match incident_number(&id) {
        Ok(number) => number,
        Err(response) => return response,
    };
    if let Err(response) = require_on_incident(&state, &caller, &id).await {
        return response;
    }
    let actor = caller.name;
    let note = request.note.or(request.text);
    let result = state
        .alerting
        .with(|engine, now| {
            engine.resolve_incident(number, &actor, note.as_deref(), now).map(|i| i.environment.clone())
        })
        .await;
    match result {
        Err(err) => persist_error(err),
        Ok(Err(AlertError::UnknownIncident(_))) => match find_incident(&state, &id).await {
            // Resolved incidents are not kept in memory: say so from the store.
            Ok(incident) => {
                error(StatusCode::CONFLICT, format!("incident {id} is already {}", incident.status.as_str()))
            }
            Err(response) => response,
        },
        Ok(Err(err)) => alert_error(err),
        Ok(Ok(environment)) => {
            audit(
                &*state.store,
                &actor,
                Some(&environment),
                "incident.resolve",
                &id,
                format!("resolved incident {id}"),
            )
            .await;
            Json(IncidentResolved { incident: number, status: "resolved".into() }).into_response()
        }
    }
}

/// MTTR and MTBF of a service over the last `days`.
async fn reliability(
    State(state): State<AppState>,
    Extension(caller): Extension<Actor>,
    Query(query): Query<ReliabilityQuery>,
) -> Response {
    if let Err(response) = declared(&state, Some(&query.environment)) {
        return response;
    }
    let scope = Scope { environment: Some(&query.environment), service: Some(&query.service) };
    if let Err(denied) = crate::access::require(&state, &caller, Permission::Read, scope).await {
        return denied;
    }
    let days = query.days.unwrap_or(30).clamp(1, 3650);
    let records = match state.store.incident_records(Some(&query.environment), 10_000).await {
        Ok(records) => records,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let incidents: Vec<_> = match records.iter().map(incident_from).collect::<Result<_, _>>() {
        Ok(incidents) => incidents,
        Err(err) => return persist_error(err),
    };
    let to = SystemClock.now();
    let from = to - Duration::from_secs(u64::from(days) * 86_400);
    let stats = windlass_monitor::incident::reliability(&incidents, &query.environment, &query.service, from, to);
    Json(Reliability {
        environment: query.environment,
        service: query.service,
        from: from.to_string(),
        to: to.to_string(),
        incidents: stats.incidents as u64,
        mttr_seconds: stats.mttr.map(|d| d.as_secs()),
        mtbf_seconds: stats.mtbf.map(|d| d.as_secs()),
        downtime_seconds: stats.downtime.as_secs(),
        mttr: stats.mttr.map(human),
        mtbf: stats.mtbf.map(human),
    })
    .into_response()
}

// The API's alert, silence and incident items, converted field by field from the monitor's types
// (the API crate must not depend on the monitor; the conversion lives with the server).

fn severity_item(severity: windlass_config::AlertSeverity) -> wire::Severity {
    use windlass_config::AlertSeverity as S;
    match severity {
        S::Critical => wire::Severity::Critical,
        S::Warning => wire::Severity::Warning,
        S::Info => wire::Severity::Info,
        S::Business => wire::Severity::Business,
    }
}

fn time(at: jiff::Timestamp) -> String {
    at.to_string()
}

fn ack_item(ack: &Ack) -> wire::Ack {
    let via = match &ack.via {
        AckVia::Cli => wire::AckVia::Cli,
        AckVia::Api => wire::AckVia::Api,
        AckVia::Link => wire::AckVia::Link,
        AckVia::External(system) => wire::AckVia::External(system.clone()),
    };
    wire::Ack { by: ack.by.clone(), via, at: time(ack.at), note: ack.note.clone() }
}

fn recipient_item(recipient: &Recipient) -> wire::Recipient {
    match recipient {
        Recipient::Receiver { name, person } => {
            wire::Recipient::Receiver { name: name.clone(), person: person.clone() }
        }
        Recipient::Email { person, address } => {
            wire::Recipient::Email { person: person.clone(), address: address.clone() }
        }
    }
}

fn alert_item(alert: &Alert) -> wire::Alert {
    wire::Alert {
        id: alert.id.clone(),
        source: alert.source.clone(),
        name: alert.name.clone(),
        service: alert.service.clone(),
        environment: alert.environment.clone(),
        severity: severity_item(alert.severity),
        summary: alert.summary.clone(),
        status: match alert.status {
            AlertStatus::Firing => wire::AlertStatus::Firing,
            AlertStatus::Resolved => wire::AlertStatus::Resolved,
        },
        occurrence: alert.occurrence,
        fired_at: time(alert.fired_at),
        resolved_at: alert.resolved_at.map(time),
        routes: alert.routes.iter().map(|&r| r as u64).collect(),
        ladder: alert.ladder.as_ref().map(|ladder| match ladder {
            Ladder::Default => wire::Ladder::Default,
            Ladder::Policy(policy) => wire::Ladder::Policy(policy.clone()),
        }),
        notified_at: alert.notified_at.map(time),
        level: alert.level as u64,
        ack: alert.ack.as_ref().map(ack_item),
        told: alert.told.iter().map(recipient_item).collect(),
        incident: alert.incident,
        silenced_by: alert.silenced_by.clone(),
    }
}

fn silence_item(silence: &Silence) -> wire::Silence {
    let m = &silence.matchers;
    wire::Silence {
        id: silence.id.clone(),
        kind: match silence.kind {
            SilenceKind::Manual => wire::SilenceKind::Manual,
            SilenceKind::Maintenance => wire::SilenceKind::Maintenance,
        },
        matchers: wire::Matchers {
            name: m.name.clone(),
            service: m.service.clone(),
            environment: m.environment.clone(),
            severity: m.severity.map(severity_item),
        },
        starts_at: time(silence.starts_at),
        ends_at: silence.ends_at.map(time),
        author: silence.author.clone(),
        reason: silence.reason.clone(),
    }
}

fn incident_item(incident: &Incident) -> wire::Incident {
    wire::Incident {
        id: incident.id,
        environment: incident.environment.clone(),
        service: incident.service.clone(),
        title: incident.title.clone(),
        status: match incident.status {
            IncidentStatus::Open => wire::IncidentStatus::Open,
            IncidentStatus::Resolved => wire::IncidentStatus::Resolved,
        },
        opened_at: time(incident.opened_at),
        acknowledged_at: incident.acknowledged_at.map(time),
        resolved_at: incident.resolved_at.map(time),
        resolved_by: incident.resolved_by.clone(),
        alerts: incident.alerts.clone(),
        timeline: incident
            .timeline
            .iter()
            .map(|entry| wire::TimelineEntry {
                at: time(entry.at),
                kind: entry.kind.clone(),
                actor: entry.actor.clone(),
                message: entry.message.clone(),
                alert: entry.alert.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().expect("a timestamp")
    }

    /// The API's items must be the JSON the monitor's types made before they were typed: every
    /// field, filled, serializes to the same value.
    #[test]
    fn the_api_items_serialize_as_the_monitors_types() {
        let alert = Alert {
            id: "0123456789abcdef".into(),
            source: "probe".into(),
            name: "web-up".into(),
            service: "web".into(),
            environment: "production".into(),
            severity: windlass_config::AlertSeverity::Critical,
            summary: "502 from /healthz".into(),
            status: AlertStatus::Firing,
            occurrence: 3,
            fired_at: at("2026-12-03T14:00:00.123456789Z"),
            resolved_at: Some(at("2026-12-03T15:00:00Z")),
            routes: vec![0, 2],
            ladder: Some(Ladder::Policy("primary".into())),
            notified_at: Some(at("2026-12-03T14:00:01Z")),
            level: 1,
            ack: Some(Ack {
                by: "ana".into(),
                via: AckVia::External("pagerduty".into()),
                at: at("2026-12-03T14:05:00Z"),
                note: Some("looking".into()),
            }),
            told: BTreeSet::from([
                Recipient::Receiver { name: "slack".into(), person: Some("ana".into()) },
                Recipient::Email { person: "bo".into(), address: "bo@example.com".into() },
            ]),
            incident: Some(7),
            silenced_by: Some("s1".into()),
        };
        let same = |monitor: serde_json::Value, api: serde_json::Value| assert_eq!(monitor, api);
        same(serde_json::to_value(&alert).unwrap(), serde_json::to_value(alert_item(&alert)).unwrap());
        let plain = Alert { ladder: Some(Ladder::Default), ack: None, told: BTreeSet::new(), ..alert.clone() };
        same(serde_json::to_value(&plain).unwrap(), serde_json::to_value(alert_item(&plain)).unwrap());

        let silence = Silence {
            id: "maintenance/production/web".into(),
            kind: SilenceKind::Maintenance,
            matchers: Matchers {
                name: None,
                service: Some("web".into()),
                environment: Some("production".into()),
                severity: Some(windlass_config::AlertSeverity::Business),
            },
            starts_at: at("2026-12-03T14:00:00Z"),
            ends_at: None,
            author: "edge".into(),
            reason: "maintenance".into(),
        };
        same(serde_json::to_value(&silence).unwrap(), serde_json::to_value(silence_item(&silence)).unwrap());
        let mut listed = serde_json::to_value(&silence).unwrap();
        listed["active"] = serde_json::Value::Bool(true);
        let item = windlass_api::alerts::ListedSilence { silence: silence_item(&silence), active: true };
        same(listed, serde_json::to_value(item).unwrap());

        let mut incident = Incident::open(7, "production", "web", "web is down", at("2026-12-03T14:00:00Z"));
        incident.alerts.push(alert.id.clone());
        incident.acknowledged_at = Some(at("2026-12-03T14:05:00Z"));
        incident.record(
            windlass_monitor::incident::TimelineEntry::new(at("2026-12-03T14:05:00Z"), "note", "on it")
                .by("ana")
                .about(&alert.id),
        );
        same(serde_json::to_value(&incident).unwrap(), serde_json::to_value(incident_item(&incident)).unwrap());
    }
}
