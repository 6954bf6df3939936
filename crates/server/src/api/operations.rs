//! Operations on an environment's running services: its deploy lock (shown, broken),
//! maintenance, failover, scale and logs. Each change is audited.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use windlass_api::locks::{BreakLockRequest, BrokenLock, Lock, LockBroken, LockShown};
use windlass_api::operations::{
    FailoverDone, FailoverRequest, InstanceLogs, Logs, LogsQuery, MaintenanceDone, MaintenanceRequest, ScaleDone,
    ScaleRequest,
};
use windlass_pipeline::deploy::lock_name;
use windlass_pipeline::state::EnvState;

use super::{Actor, AppState, Path, Query, audit, body, deploy_error, error, known_environment};

pub(super) async fn show_lock(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match state.store.lease(&lock_name(&environment)).await {
        Ok(lease) => {
            let lock = lease.map(|lease| Lock {
                name: lease.name,
                holder: lease.holder.to_string(),
                purpose: lease.purpose,
                since: lease.acquired_at.to_string(),
                heartbeat: lease.heartbeat_at.to_string(),
                stale: lease.stale,
                token: lease.token,
            });
            Json(LockShown { environment, lock }).into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

pub(super) async fn break_lock(
    State(state): State<AppState>,
    Extension(Actor { name: actor, .. }): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let why: BreakLockRequest = match body(&bytes) {
        Ok(why) => why,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let Some(reason) = why.reason.filter(|r| !r.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "breaking a lock needs a reason (it is recorded)");
    };
    let name = lock_name(&environment);
    let lease = match state.store.lease(&name).await {
        Ok(Some(lease)) => lease,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("`{environment}` is not locked")),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    match state.store.break_lease(&name, lease.token, &actor, &reason).await {
        Ok(Some(broken)) => Json(LockBroken {
            broken: BrokenLock {
                holder: broken.holder.to_string(),
                purpose: broken.purpose,
                since: broken.acquired_at.to_string(),
            },
        })
        .into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("`{environment}` is not locked")),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

pub(super) async fn maintenance(
    State(state): State<AppState>,
    Extension(Actor { name: actor, .. }): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let request: MaintenanceRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    if let Some(service) = &request.service
        && let Err(response) = edge_service_name(&state, &environment, service)
    {
        return response;
    }
    if let Err(err) = state.deployer.edge.maintenance(request.service.as_deref(), request.enabled).await {
        return edge_error(err);
    }
    crate::alerts::maintenance(&state, &environment, request.service.as_deref(), request.enabled, &actor).await;
    let what = request.service.clone().unwrap_or_else(|| "every service".into());
    let switched = if request.enabled { "on" } else { "off" };
    let message = format!("maintenance {switched} for {what}{}", reason_suffix(&request.reason));
    audit(&*state.store, &actor, &environment, "maintenance", &what, message.clone()).await;
    Json(MaintenanceDone { maintenance: request.enabled, service: request.service, message }).into_response()
}

/// A service the config declares, checked before its name goes into a request to the edge's
/// admin API: a name from a path (`..`, `a/b`, 300 characters) is never made into a URL, and
/// an undeclared one is answered here rather than by the edge.
fn edge_service_name(state: &AppState, environment: &str, service: &str) -> Result<(), Response> {
    let config = state.deployer.shared_config().map_err(deploy_error)?;
    if config.services.contains_key(service) {
        return Ok(());
    }
    let declared: Vec<&str> = config.services.keys().map(String::as_str).collect();
    Err(error(
        StatusCode::NOT_FOUND,
        format!("no service `{}` in `{environment}` (services: {})", service.escape_debug(), declared.join(", ")),
    ))
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
}

fn edge_error(err: windlass_pipeline::edge::EdgeError) -> Response {
    match &err {
        windlass_pipeline::edge::EdgeError::Refused { status, .. } if *status == 404 => {
            error(StatusCode::NOT_FOUND, err)
        }
        windlass_pipeline::edge::EdgeError::Refused { status, .. } if *status == 400 => {
            error(StatusCode::BAD_REQUEST, err)
        }
        _ => error(StatusCode::BAD_GATEWAY, err),
    }
}

pub(super) async fn failover(
    State(state): State<AppState>,
    Extension(Actor { name: actor, .. }): Extension<Actor>,
    Path((environment, service)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let request: FailoverRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    if request.to != "secondary" && request.to != "primary" {
        return error(StatusCode::BAD_REQUEST, format!("`--to {}`: use `secondary` or `primary`", request.to));
    }
    if let Err(response) = edge_service_name(&state, &environment, &service) {
        return response;
    }
    if let Err(err) = state.deployer.edge.failover(&service, &request.to).await {
        return edge_error(err);
    }
    let mut message = format!("{service} traffic moved to {}{}", request.to, reason_suffix(&request.reason));
    if request.to == "secondary"
        && let Ok(config) = state.deployer.shared_config()
    {
        let env_state = EnvState::load(&*state.store, &environment).await.ok();
        let service_state = env_state.as_ref().and_then(|s| s.services.get(&service));
        let drift = windlass_pipeline::view::secondary_drift(&config, &environment, &service, service_state);
        if let Some(warning) = drift.as_ref().and_then(|d| d.warning()) {
            message.push_str(&format!("\nwarning: {warning}"));
        }
    }
    audit(&*state.store, &actor, &environment, "failover", &service, message.clone()).await;
    Json(FailoverDone { service, to: request.to, message }).into_response()
}

pub(super) async fn scale(
    State(state): State<AppState>,
    Extension(Actor { name: actor, .. }): Extension<Actor>,
    Path((environment, service)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let request: ScaleRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    // Like every route of an environment: an undeclared one is 404, another server's 409.
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let Ok(instances) = usize::try_from(request.instances) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{} instances is more than this machine can count", request.instances),
        );
    };
    // The scale runs as a task of its own that releases the lock and records the event itself:
    // this request only waits for it, so a client that disconnects stops nothing half-way.
    let scaled = windlass_pipeline::deploy::scale(
        &state.deployer,
        &environment,
        &service,
        instances,
        &actor,
        request.reason.as_deref(),
    )
    .await;
    match scaled {
        Ok(scaled) => {
            Json(ScaleDone { service, instances: request.instances, output: scaled.lines, message: scaled.message })
                .into_response()
        }
        Err(err) => deploy_error(err),
    }
}

pub(super) async fn logs(
    State(state): State<AppState>,
    Path((environment, service)): Path<(String, String)>,
    Query(tail): Query<LogsQuery>,
) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let env_state = match EnvState::load(&*state.store, &environment).await {
        Ok(env_state) => env_state,
        Err(err) => return deploy_error(err),
    };
    let Some(service_state) = env_state.services.get(&service) else {
        return error(StatusCode::NOT_FOUND, format!("`{service}` has never run in `{environment}`"));
    };
    let tail = tail.tail.unwrap_or(100).min(10_000) as usize;
    // A service may print a secret it was given; the environment's secret values are hidden.
    let redactor = match state.deployer.shared_config() {
        Ok(config) => match state.deployer.stored_secrets(&config, &environment).await {
            Ok(stored) => {
                let env_file = state.deployer.env_file.as_deref();
                windlass_pipeline::vars::Variables::resolve(&config, &environment, env_file, stored.as_ref()).0
            }
            // Without the secrets nothing can be hidden reliably: show no log lines at all.
            Err(err) => return deploy_error(err),
        },
        Err(err) => return deploy_error(err),
    };
    let mut instances = Vec::new();
    for (color, recorded) in &service_state.colors {
        for instance in &recorded.instances {
            let lines = state.deployer.runtime.logs(&instance.id, tail).await.unwrap_or_default();
            let lines: Vec<String> = lines.iter().map(|l| redactor.redact(l)).collect();
            instances.push(InstanceLogs {
                id: instance.id.clone(),
                color: color.clone(),
                live: service_state.live.as_ref() == Some(color),
                lines,
            });
        }
    }
    Json(Logs { service, instances }).into_response()
}
