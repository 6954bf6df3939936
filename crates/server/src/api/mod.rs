//! `/api/v1`: the router, the token check and what every handler shares (the error answers,
//! the body reader, the environment check, the audit record). JSON in, JSON out, each answer a
//! [`windlass_api`] type; errors are `{"error": "..."}` ([`windlass_api::ErrorBody`]) with a 4xx
//! for what the caller got wrong (400 malformed, 401/403 token, 404 unknown, 409 locked) and 5xx
//! for our failures. The document of it all is served, without a token, at
//! `/api/v1/openapi.json`.
//!
//! Handlers stay thin: they read the request, call the pipeline or the monitor and answer. What
//! a view shows or a policy decides lives in the libraries (`windlass_pipeline::view`,
//! `approval`, `shared_edge`), where it is tested in process.

// Helpers return `Result<_, Response>` so a handler can answer an error with `?`-like early
// returns; a response is large, but it is built once per failed request.
#![allow(clippy::result_large_err)]

mod approval;
mod canary;
mod deploys;
mod operations;
mod views;

use std::sync::Arc;
use windlass_pipeline::supervisor::Stopped;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use windlass_api::{ErrorBody, Health};
use windlass_pipeline::{DeployError, Deployer, PlanError};
use windlass_store::{NewEvent, Store};

use crate::tokens;

#[derive(Clone)]
pub struct AppState {
    pub deployer: Arc<Deployer>,
    pub store: Arc<dyn Store>,
    /// The environments this server manages (others may be another server's, on a shared store).
    pub managed: Vec<String>,
    /// The monitor's probes, per managed environment.
    pub probes: crate::probes::Probes,
    /// Alerting: routing, silences, escalation, incidents.
    pub alerting: Arc<windlass_monitor::alert::persist::Alerting>,
    /// Sends what alerting decides.
    pub courier: Arc<crate::courier::Courier>,
}

pub(crate) use crate::access::Actor;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/status", get(views::status))
        .route("/environments/{env}/deploys", post(deploys::create).get(deploys::list))
        .route("/environments/{env}/rollback", post(deploys::rollback))
        .route("/environments/{env}/lock", get(operations::show_lock).delete(operations::break_lock))
        .route("/environments/{env}/maintenance", put(operations::maintenance))
        .route("/environments/{env}/services/{service}/failover", put(operations::failover))
        .route("/environments/{env}/services/{service}/scale", put(operations::scale))
        .route("/environments/{env}/services/{service}/logs", get(operations::logs))
        .route("/environments/{env}/canary", get(canary::status))
        .route("/environments/{env}/promote", post(deploys::promote))
        .route("/environments/{env}/approval", get(approval::show).post(approval::decide))
        .route("/environments/{env}/services/{service}/canary", post(canary::decide))
        .route("/slo/{env}", get(crate::slo::report))
        .route("/environments/{env}/probes", get(views::list_probes))
        .route("/events", get(views::list_events))
        .route("/deploys/{id}", get(deploys::show))
        .route("/deploys/{id}/events", get(deploys::watch))
        .merge(crate::alerts::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // Added after the token check's layer, so outside it: the document describes the API
        // and holds nothing of the state (tools fetch it before they have a token).
        .route("/openapi.json", get(openapi));
    Router::new()
        .route("/healthz", get(|| async { Json(Health { status: "ok".into() }) }))
        .nest("/api/v1", api)
        .merge(crate::alerts::public_routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API path; the API lives under /api/v1") })
        .with_state(state)
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3.1 document, made once.
async fn openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let document = DOCUMENT.get_or_init(windlass_api::openapi::document).clone();
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(ErrorBody::new(message))).into_response()
}

fn deploy_error(err: DeployError) -> Response {
    let status = match &err {
        DeployError::Locked { .. } => StatusCode::CONFLICT,
        DeployError::Forbidden(_) => StatusCode::FORBIDDEN,
        DeployError::Conflict(_) => StatusCode::CONFLICT,
        DeployError::UnknownDeploy(_) | DeployError::Plan(PlanError::UnknownEnvironment { .. }) => {
            StatusCode::NOT_FOUND
        }
        DeployError::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
        err if err.is_bad_request() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, err)
}

async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = presented else {
        return error(
            StatusCode::UNAUTHORIZED,
            "send a personal token: Authorization: Bearer <token> (create one with `windlass token create --name <you>`)",
        );
    };
    match tokens::actor(&*state.store, &token).await {
        Ok(Some(name)) => {
            request.extensions_mut().insert(Actor { name: name.clone(), token: name, robot: false });
            next.run(request).await
        }
        Ok(None) => error(StatusCode::FORBIDDEN, "this token is unknown or revoked"),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// axum's `Query`, answering a query it cannot read with the API's JSON error (axum's own
/// rejection is plain text, which no client of the API expects).
pub(crate) struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(query)) => Ok(Query(query)),
            Err(rejection) => Err(error(StatusCode::BAD_REQUEST, rejection.body_text())),
        }
    }
}

/// axum's `Path`, answering a path it cannot read (not UTF-8 once decoded) with the API's JSON
/// error.
pub(crate) struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(path)) => Ok(Path(path)),
            Err(rejection) => Err(error(rejection.status(), rejection.body_text())),
        }
    }
}

/// A JSON body, or 400 saying what is wrong with it. An empty body reads as `{}`.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    // Through serde_path_to_error, so the message names the field that is wrong.
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(text)).map_err(|err| {
        let field = err.path().to_string();
        let problem = err.into_inner();
        match field.as_str() {
            "." => error(StatusCode::BAD_REQUEST, format!("invalid request body: {problem}")),
            _ => error(StatusCode::BAD_REQUEST, format!("invalid request body: `{field}`: {problem}")),
        }
    })
}

/// The environment exists in the config and this server manages it.
fn known_environment(state: &AppState, environment: &str) -> Result<(), Response> {
    let config = state.deployer.shared_config().map_err(deploy_error)?;
    windlass_pipeline::plan::check_environment(&config, environment).map_err(|err| deploy_error(err.into()))?;
    if !state.managed.iter().any(|m| m == environment) {
        return Err(error(
            StatusCode::CONFLICT,
            format!(
                "this server manages {}, not `{environment}`: ask the server started with `--env {environment}`",
                state.managed.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A deploy to `environment` would take over a service another managed environment runs
/// behind the same edge: 409, before anything changes.
async fn shared_edge_conflict(state: &AppState, environment: &str) -> Result<(), Response> {
    match windlass_pipeline::shared_edge::conflict(&state.deployer, &state.managed, environment).await {
        Some(problem) => Err(error(StatusCode::CONFLICT, problem)),
        None => Ok(()),
    }
}

pub(crate) async fn audit(
    store: &dyn Store,
    actor: &str,
    environment: &str,
    kind: &str,
    subject: &str,
    message: String,
) {
    let event = NewEvent {
        actor: actor.into(),
        environment: Some(environment.into()),
        kind: kind.into(),
        subject: Some(subject.into()),
        message,
        data: "{}".into(),
    };
    if let Err(err) = store.record_event(&event).await {
        tracing::warn!(%err, "cannot record an audit event");
    }
}

/// Runs `work` as a task of the server's own and waits for it. Work that takes a lock or
/// records state runs this way: a client that disconnects drops the wait, never the work
/// half-way (with the lock held, or instances started and not recorded).
async fn owned<T: Send + 'static>(
    state: &AppState,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, Response> {
    state.deployer.tasks.run(work).await.map_err(|err| match err {
        Stopped::ShuttingDown => error(StatusCode::SERVICE_UNAVAILABLE, err),
        Stopped::Panicked(_) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    })
}

/// Starts a prepared deploy in the background; its id.
fn run_in_background(deployer: &Arc<Deployer>, prepared: windlass_pipeline::deploy::Prepared) -> String {
    let id = prepared.id.to_string();
    let deployer = deployer.clone();
    deployer.tasks.clone().spawn(async move {
        deployer.execute(prepared).await;
    });
    id
}
