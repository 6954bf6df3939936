//! Read-only views over the API: the status of every environment (built by
//! `windlass_pipeline::view::status`), the monitor's probes and the audit trail.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use windlass_api::events::{Event, EventList, EventQuery};

use super::{AppState, Path, Query, deploy_error, error, known_environment};

pub(super) async fn status(State(state): State<AppState>) -> Response {
    match windlass_pipeline::view::status(&state.deployer).await {
        Ok(status) => Json(status).into_response(),
        Err(err) => deploy_error(err),
    }
}

/// The latest state of an environment's probes.
pub(super) async fn list_probes(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match state.probes.statuses(&environment) {
        Some(statuses) => {
            // `windlass_api::probes::ProbeList` in shape, serialized from borrowed views: a
            // listing of thousands of probes copies none of their text.
            #[derive(Serialize)]
            struct Listing<'a> {
                environment: &'a str,
                probes: Vec<crate::probes::StatusView<'a>>,
            }
            let probes = statuses.iter().map(crate::probes::StatusView::from).collect();
            Json(Listing { environment: &environment, probes }).into_response()
        }
        None => error(
            StatusCode::CONFLICT,
            format!("`{environment}` is not probed by this server yet (probes start within seconds of the server)"),
        ),
    }
}

/// The audit trail, newest first: deploys, approvals, overrides, failovers, failed
/// notifications, scheduled backups.
pub(super) async fn list_events(State(state): State<AppState>, Query(query): Query<EventQuery>) -> Response {
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    // Filtering by kind happens after the read: read more so a rare kind still fills the page.
    let read = if query.kind.is_some() { 5000 } else { limit };
    let events = match state.store.events(query.environment.as_deref(), read).await {
        Ok(events) => events,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let events = events
        .iter()
        .filter(|e| query.kind.as_deref().is_none_or(|k| e.kind.starts_with(k)))
        .take(limit as usize)
        .map(|e| Event {
            id: e.id,
            at: e.at.to_string(),
            actor: e.actor.clone(),
            environment: e.environment.clone(),
            kind: e.kind.clone(),
            subject: e.subject.clone(),
            message: e.message.clone(),
            data: serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
            audit: serde_json::from_str::<Value>(&e.data)
                .ok()
                .and_then(|mut data| serde_json::from_value(data.get_mut("audit")?.take()).ok()),
        })
        .collect();
    Json(EventList { events }).into_response()
}
