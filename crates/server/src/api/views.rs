//! Read-only views over the API: the status of every environment (built by
//! `windlass_pipeline::view::status`), the monitor's probes and the audit trail.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use windlass_api::events::{Event, EventList, EventQuery};

use super::{Actor, AppState, Path, Query, deploy_error, error, known_environment};

/// The status of the environments the caller may read (a viewer of one environment sees that
/// one).
pub(super) async fn status(State(state): State<AppState>, Extension(actor): Extension<Actor>) -> Response {
    match windlass_pipeline::view::status(&state.deployer).await {
        Ok(mut status) => {
            let readable = crate::access::readable(&state, &actor, status.environments.keys().map(String::as_str));
            status.environments.retain(|environment, _| readable.contains(environment));
            Json(status).into_response()
        }
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
/// The audit trail, newest first: the events of environments the caller may read, and those of
/// no environment.
pub(super) async fn list_events(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Query(query): Query<EventQuery>,
) -> Response {
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    // Filtering by kind happens after the read: read more so a rare kind still fills the page.
    let read = if query.kind.is_some() { 5000 } else { limit };
    let events = match state.store.events(query.environment.as_deref(), read).await {
        Ok(events) => events,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let mut environments: Vec<&str> = events.iter().filter_map(|e| e.environment.as_deref()).collect();
    environments.sort_unstable();
    environments.dedup();
    let readable = crate::access::readable(&state, &actor, environments.into_iter());
    let events = events
        .iter()
        .filter(|e| e.environment.as_ref().is_none_or(|environment| readable.contains(environment)))
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
