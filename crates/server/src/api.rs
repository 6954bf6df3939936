//! `/api/v1`: JSON in, JSON out; errors are `{"error": "..."}` with a 4xx for what the caller
//! got wrong (400 malformed, 401/403 token, 404 unknown, 409 locked) and 5xx for our failures.

// Helpers return `Result<_, Response>` so a handler can answer an error with `?`-like early
// returns; a response is large, but it is built once per failed request.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use windlass_config::Approval;
use windlass_pipeline::approval;
use windlass_pipeline::deploy::{StartRequest, lock_name};
use windlass_pipeline::state::EnvState;
use windlass_pipeline::vars::Variables;
use windlass_pipeline::{DeployError, DeployOptions, Deployer, PlanError};
use windlass_store::{Deploy, DeployId, NewEvent, StepRecord, Store};

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

/// Who is calling: the name of the token presented.
#[derive(Clone)]
pub(crate) struct Actor(pub(crate) String);

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/status", get(status))
        .route("/environments/{env}/deploys", post(create_deploy).get(list_deploys))
        .route("/environments/{env}/rollback", post(rollback))
        .route("/environments/{env}/lock", get(show_lock).delete(break_lock))
        .route("/environments/{env}/maintenance", put(maintenance))
        .route("/environments/{env}/services/{service}/failover", put(failover))
        .route("/environments/{env}/services/{service}/scale", put(scale))
        .route("/environments/{env}/services/{service}/logs", get(logs))
        .route("/environments/{env}/canary", get(canary_status))
        .route("/environments/{env}/promote", post(promote))
        .route("/environments/{env}/approval", get(show_approval).post(decide_approval))
        .route("/environments/{env}/services/{service}/canary", post(canary_decide))
        .route("/slo/{env}", get(crate::slo::report))
        .route("/environments/{env}/probes", get(list_probes))
        .route("/events", get(list_events))
        .route("/deploys/{id}", get(show_deploy))
        .route("/deploys/{id}/events", get(deploy_events))
        .merge(crate::alerts::routes())
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .nest("/api/v1", api)
        .merge(crate::alerts::public_routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API path; the API lives under /api/v1") })
        .with_state(state)
}

pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
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
            request.extensions_mut().insert(Actor(name));
            next.run(request).await
        }
        Ok(None) => error(StatusCode::FORBIDDEN, "this token is unknown or revoked"),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// A JSON body, or 400 saying what is wrong with it. An empty body reads as `{}`.
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(text).map_err(|err| error(StatusCode::BAD_REQUEST, format!("invalid request body: {err}")))
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

/// An environment's variables, to redact what the API shows; none when its secrets cannot be
/// read.
async fn shown_variables(deployer: &Deployer, environment: &str) -> Option<Variables> {
    let config = deployer.shared_config().ok()?;
    let stored = deployer.stored_secrets(&config, environment).await.ok()?;
    Some(Variables::resolve(&config, environment, deployer.env_file.as_deref(), stored.as_ref()).0)
}

/// A deploy record's artifacts as the API shows them: `run` holds no secret (validate and the
/// deploy refuse one), and a command recorded before that rule passes the environment's
/// redactor, or is left out when the secrets cannot be read.
fn shown_artifacts(value: &mut Value, variables: Option<&Variables>) {
    match value {
        Value::Object(map) => {
            if variables.is_none() {
                map.remove("command");
                map.remove("args");
            }
            map.values_mut().for_each(|v| shown_artifacts(v, variables));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| shown_artifacts(v, variables)),
        Value::String(text) => {
            if let Some(variables) = variables {
                *text = variables.redact(text);
            }
        }
        _ => {}
    }
}

fn deploy_json(deploy: &Deploy, variables: Option<&Variables>) -> Value {
    let mut artifacts = serde_json::from_str::<Value>(&deploy.artifacts).unwrap_or(Value::Null);
    shown_artifacts(&mut artifacts, variables);
    json!({
        "id": deploy.id.as_str(),
        "environment": deploy.environment,
        "status": deploy.status.as_str(),
        "actor": deploy.actor,
        "reason": deploy.reason,
        "started_at": deploy.started_at.to_string(),
        "finished_at": deploy.finished_at.map(|t| t.to_string()),
        "current_step": deploy.current_step,
        "error": deploy.error,
        "artifacts": artifacts,
    })
}

fn step_json(step: &StepRecord) -> Value {
    json!({
        "seq": step.seq,
        "phase": step.phase,
        "name": step.name,
        "status": step.status.as_str(),
        "started_at": step.started_at.to_string(),
        "finished_at": step.finished_at.map(|t| t.to_string()),
        "output": step.output,
        "error": step.error,
    })
}

async fn create_deploy(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let options: DeployOptions = match body(&bytes) {
        Ok(options) => options,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let request = StartRequest { environment, actor, options, expect: None };
    if request.options.dry_run {
        return match state.deployer.plan(&request) {
            Ok(plan) => Json(json!({ "dry_run": true, "plan": plan })).into_response(),
            Err(err) => deploy_error(err),
        };
    }
    if let Err(response) = shared_edge_conflict(&state, &request.environment).await {
        return response;
    }
    let ask = {
        let (deployer, request) = (state.deployer.clone(), request.clone());
        move || async move { approval::request(&deployer, &request).await }
    };
    if let Some(response) =
        approval_gate(&state, &request.environment, &request.actor, request.options.approve, "", ask).await
    {
        return response;
    }
    let deployer = state.deployer.clone();
    launch(&state, async move { deployer.start(&request).await }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    restore_database: bool,
}

async fn rollback(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let request: RollbackRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    if let Err(response) = shared_edge_conflict(&state, &environment).await {
        return response;
    }
    let deployer = state.deployer.clone();
    let start = async move {
        windlass_pipeline::rollback::start(
            &deployer,
            &environment,
            &actor,
            request.to.as_deref(),
            request.reason,
            request.restore_database,
        )
        .await
    };
    launch(&state, start).await
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

async fn list_deploys(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    Query(limit): Query<Limit>,
) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match state.store.deploys(&environment, limit.limit.unwrap_or(20).min(500)).await {
        Ok(deploys) => {
            let variables = shown_variables(&state.deployer, &environment).await;
            let shown: Vec<Value> = deploys.iter().map(|d| deploy_json(d, variables.as_ref())).collect();
            Json(json!({ "deploys": shown })).into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

async fn find_deploy(store: &dyn Store, id: &str) -> Result<Deploy, Response> {
    let parsed = DeployId::parse(id).ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no deploy `{id}`")))?;
    match store.deploy(&parsed).await {
        Ok(Some(deploy)) => Ok(deploy),
        Ok(None) => Err(error(StatusCode::NOT_FOUND, format!("no deploy `{id}`"))),
        Err(err) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, err)),
    }
}

async fn show_deploy(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let deploy = match find_deploy(&*state.store, &id).await {
        Ok(deploy) => deploy,
        Err(response) => return response,
    };
    let variables = shown_variables(&state.deployer, &deploy.environment).await;
    match state.store.steps(&deploy.id).await {
        Ok(steps) => Json(json!({
            "deploy": deploy_json(&deploy, variables.as_ref()),
            "steps": steps.iter().map(step_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// What a watcher of a deploy has already been sent.
struct Watch {
    store: Arc<dyn Store>,
    id: DeployId,
    /// Per step: how much output was sent, and whether its end was.
    sent: BTreeMap<i64, (usize, bool)>,
    queue: std::collections::VecDeque<Event>,
    done: bool,
    /// The environment's variables, for the redaction of the `done` event's artifacts.
    variables: Option<Variables>,
}

impl Watch {
    async fn poll(&mut self) -> Result<(), String> {
        let deploy = self.store.deploy(&self.id).await.map_err(|e| e.to_string())?;
        let steps = self.store.steps(&self.id).await.map_err(|e| e.to_string())?;
        for step in &steps {
            let (sent, ended) = self.sent.entry(step.seq).or_insert_with(|| {
                self.queue.push_back(sse(
                    "step",
                    &json!({ "seq": step.seq, "phase": step.phase, "name": step.name, "status": "running" }),
                ));
                (0, false)
            });
            if step.output.len() > *sent {
                let text = &step.output[*sent..];
                self.queue.push_back(sse("output", &json!({ "seq": step.seq, "text": text })));
                *sent = step.output.len();
            }
            if !*ended && step.status != windlass_store::StepStatus::Running {
                *ended = true;
                self.queue.push_back(sse("step", &step_json(step)));
            }
        }
        if let Some(deploy) = deploy
            && deploy.status != windlass_store::DeployStatus::Running
        {
            self.queue.push_back(sse("done", &deploy_json(&deploy, self.variables.as_ref())));
            self.done = true;
        }
        Ok(())
    }
}

fn sse(kind: &str, data: &Value) -> Event {
    Event::default().event(kind).data(data.to_string())
}

/// Server-sent events of a deploy: `step` (started, ended), `output` (new text of a step) and
/// `done` (the deploy's end); a finished deploy replays everything and ends the stream.
async fn deploy_events(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let deploy = match find_deploy(&*state.store, &id).await {
        Ok(deploy) => deploy,
        Err(response) => return response,
    };
    let variables = shown_variables(&state.deployer, &deploy.environment).await;
    let watch = Watch {
        store: state.store.clone(),
        id: deploy.id,
        sent: BTreeMap::new(),
        queue: Default::default(),
        done: false,
        variables,
    };
    let stream = futures_util::stream::unfold((watch, true), |(mut watch, first)| async move {
        loop {
            if let Some(event) = watch.queue.pop_front() {
                return Some((Ok::<Event, Infallible>(event), (watch, false)));
            }
            if watch.done {
                return None;
            }
            if !first {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if let Err(problem) = watch.poll().await {
                watch.done = true;
                watch.queue.push_back(sse("error", &json!({ "error": problem })));
            }
            if watch.queue.is_empty() && !watch.done {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn status(State(state): State<AppState>) -> Response {
    let deployer = &state.deployer;
    let config = match deployer.shared_config() {
        Ok(config) => config,
        Err(err) => return deploy_error(err),
    };
    let edge = deployer.edge.state().await.ok();
    let mut environments = serde_json::Map::new();
    for environment in config.environments.keys() {
        let env_state = match EnvState::load(&*state.store, environment).await {
            Ok(env_state) => env_state,
            Err(err) => return deploy_error(err),
        };
        // `run` holds no secret (validate and the deploy refuse one), but a command recorded
        // before that rule is shown through the environment's redactor, or not at all when the
        // secrets cannot be read.
        let redactor = shown_variables(deployer, environment).await;
        let mut services = serde_json::Map::new();
        for (service, service_state) in &env_state.services {
            let mut colors = serde_json::Map::new();
            // A managed secondary is shown like a color: its pool at the edge is `secondary`.
            let secondary = service_state.secondary.iter().map(|s| ("secondary".to_owned(), s));
            let pools: Vec<(String, &windlass_pipeline::state::ColorState)> =
                service_state.colors.iter().map(|(c, s)| (c.clone(), s)).chain(secondary).collect();
            for (color, recorded) in pools {
                let mut instances = Vec::new();
                for instance in &recorded.instances {
                    let found = deployer.runtime.get(&instance.id).await.ok().flatten();
                    let healthy = edge.as_ref().and_then(|e| {
                        e.services
                            .get(service)?
                            .pools
                            .get(&color)?
                            .instances
                            .iter()
                            .find(|i| i.address == instance.address)
                            .map(|i| i.healthy)
                    });
                    instances.push(json!({
                        "id": instance.id,
                        "address": instance.address,
                        "state": found.as_ref().map(|f| f.state),
                        "restarts": found.as_ref().map(|f| f.restarts),
                        "healthy": healthy,
                    }));
                }
                colors.insert(
                    color.clone(),
                    json!({
                        "deploy": recorded.deploy_id,
                        "build": recorded.artifact.short_hash(),
                        "version": recorded.artifact.version,
                        "command": redactor.as_ref().map(|v| v.redact(&recorded.artifact.command)),
                        "retire_at": recorded.retire_at_ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()).map(|t| t.to_string()),
                        "instances": instances,
                    }),
                );
            }
            let edge_service = edge.as_ref().and_then(|e| e.services.get(service));
            services.insert(
                service.clone(),
                json!({
                    "live": service_state.live,
                    "maintenance": edge_service.map(|s| s.maintenance),
                    "failed_over": edge_service.map(|s| s.failed_over),
                    "colors": colors,
                    "secondary": secondary_drift(&config, environment, service, Some(service_state)),
                }),
            );
        }
        let lock = state.store.lease(&lock_name(environment)).await.ok().flatten();
        let last = state.store.deploys(environment, 1).await.ok().and_then(|d| d.into_iter().next());
        environments.insert(
            environment.clone(),
            json!({
                "services": services,
                "lock": lock.map(|l| json!({ "holder": l.holder.to_string(), "purpose": l.purpose, "since": l.acquired_at.to_string(), "stale": l.stale })),
                "last_deploy": last.as_ref().map(|d| deploy_json(d, redactor.as_ref())),
            }),
        );
    }
    Json(json!({ "edge_reachable": edge.is_some(), "environments": environments })).into_response()
}

async fn show_lock(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match state.store.lease(&lock_name(&environment)).await {
        Ok(Some(lease)) => Json(json!({
            "environment": environment,
            "lock": {
                "name": lease.name,
                "holder": lease.holder.to_string(),
                "purpose": lease.purpose,
                "since": lease.acquired_at.to_string(),
                "heartbeat": lease.heartbeat_at.to_string(),
                "stale": lease.stale,
                "token": lease.token,
            }
        }))
        .into_response(),
        Ok(None) => Json(json!({ "environment": environment, "lock": null })).into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Why {
    #[serde(default)]
    reason: Option<String>,
}

async fn break_lock(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let why: Why = match body(&bytes) {
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
        Ok(Some(broken)) => Json(json!({ "broken": { "holder": broken.holder.to_string(), "purpose": broken.purpose, "since": broken.acquired_at.to_string() } })).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("`{environment}` is not locked")),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceRequest {
    enabled: bool,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

async fn maintenance(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
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
    if let Err(err) = state.deployer.edge.maintenance(request.service.as_deref(), request.enabled).await {
        return edge_error(err);
    }
    crate::alerts::maintenance(&state, &environment, request.service.as_deref(), request.enabled, &actor).await;
    let what = request.service.clone().unwrap_or_else(|| "every service".into());
    let switched = if request.enabled { "on" } else { "off" };
    let message = format!("maintenance {switched} for {what}{}", reason_suffix(&request.reason));
    audit(&*state.store, &actor, &environment, "maintenance", &what, message.clone()).await;
    Json(json!({ "maintenance": request.enabled, "service": request.service, "message": message })).into_response()
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FailoverRequest {
    to: String,
    #[serde(default)]
    reason: Option<String>,
}

async fn failover(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
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
    if let Err(err) = state.deployer.edge.failover(&service, &request.to).await {
        return edge_error(err);
    }
    let mut message = format!("{service} traffic moved to {}{}", request.to, reason_suffix(&request.reason));
    if request.to == "secondary"
        && let Ok(config) = state.deployer.shared_config()
    {
        let env_state = EnvState::load(&*state.store, &environment).await.ok();
        let service_state = env_state.as_ref().and_then(|s| s.services.get(&service));
        if let Some(warning) = secondary_drift(&config, &environment, &service, service_state)
            .and_then(|d| d["warning"].as_str().map(str::to_owned))
        {
            message.push_str(&format!("\nwarning: {warning}"));
        }
    }
    audit(&*state.store, &actor, &environment, "failover", &service, message.clone()).await;
    Json(json!({ "service": service, "to": request.to, "message": message })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRequest {
    instances: usize,
    #[serde(default)]
    reason: Option<String>,
}

async fn scale(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path((environment, service)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    let request: ScaleRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    // The scale runs as a task of its own that releases the lock and records the event itself:
    // this request only waits for it, so a client that disconnects stops nothing half-way.
    let scaled = windlass_pipeline::deploy::scale(
        &state.deployer,
        &environment,
        &service,
        request.instances,
        &actor,
        request.reason.as_deref(),
    )
    .await;
    match scaled {
        Ok(scaled) => Json(json!({
            "service": service,
            "instances": request.instances,
            "output": scaled.lines,
            "message": scaled.message,
        }))
        .into_response(),
        Err(err) => deploy_error(err),
    }
}

#[derive(Deserialize)]
struct Tail {
    tail: Option<usize>,
}

async fn logs(
    State(state): State<AppState>,
    Path((environment, service)): Path<(String, String)>,
    Query(tail): Query<Tail>,
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
    let tail = tail.tail.unwrap_or(100).min(10_000);
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
            instances.push(json!({ "id": instance.id, "color": color, "live": service_state.live.as_ref() == Some(color), "lines": lines }));
        }
    }
    Json(json!({ "service": service, "instances": instances })).into_response()
}

/// The canaries of an environment: running, or how the last one of each service ended.
async fn canary_status(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let services: Vec<String> = match state.deployer.shared_config() {
        Ok(config) => config.services.keys().cloned().collect(),
        Err(err) => return deploy_error(err),
    };
    let mut canaries = Vec::new();
    for service in services {
        let key = windlass_pipeline::canary::progress_key(&environment, &service);
        let Ok(Some(text)) = state.store.setting(&key).await else { continue };
        if let Ok(progress) = serde_json::from_str::<windlass_pipeline::canary::Progress>(&text) {
            canaries.push(progress);
        }
    }
    Json(json!({ "environment": environment, "canaries": canaries })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryRequest {
    action: windlass_pipeline::canary::Command,
}

/// `promote` or `abort` for the running canary of a service; the deploy running it acts on it
/// within a fraction of a second.
async fn canary_decide(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path((environment, service)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
    use windlass_pipeline::canary::{Control, Progress, control_key, progress_key};
    let request: CanaryRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let progress = match state.store.setting(&progress_key(&environment, &service)).await {
        Ok(text) => text.and_then(|t| serde_json::from_str::<Progress>(&t).ok()),
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let Some(progress) = progress.filter(|p| p.outcome == "running") else {
        return error(StatusCode::CONFLICT, format!("{service} in {environment} has no running canary"));
    };
    let control =
        Control { command: request.action.clone(), actor: actor.clone(), deploy_id: progress.deploy_id.clone() };
    let text = serde_json::to_string(&control).unwrap_or_default();
    if let Err(err) = state.store.set_setting(&control_key(&environment, &service), &text).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, err);
    }
    let verb = match request.action {
        windlass_pipeline::canary::Command::Promote => "promote",
        windlass_pipeline::canary::Command::Abort => "abort",
    };
    let message =
        format!("{verb} requested for the canary {} of {service} (deploy {})", progress.canary, progress.deploy_id);
    audit(&*state.store, &actor, &environment, &format!("canary-{verb}"), &service, message.clone()).await;
    Json(json!({ "service": service, "deploy": progress.deploy_id, "message": message })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromoteBody {
    from: String,
    #[serde(default)]
    services: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    override_window: bool,
    #[serde(default)]
    approve: bool,
}

/// Deploys to `{env}` the builds that run in `from`; into an environment with approvals, it is
/// a request like any deploy.
async fn promote(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let body: PromoteBody = match body(&bytes) {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    if let Err(response) = shared_edge_conflict(&state, &environment).await {
        return response;
    }
    let request = windlass_pipeline::promote::PromoteRequest {
        from: body.from,
        to: environment,
        services: body.services,
        actor,
        options: windlass_pipeline::plan::DeployOptions {
            reason: body.reason,
            override_window: body.override_window,
            ..Default::default()
        },
    };
    let what = format!(" to promote from {}", request.from);
    let ask = {
        let (deployer, request) = (state.deployer.clone(), request.clone());
        move || async move { approval::request_promotion(&deployer, &request).await }
    };
    if let Some(response) = approval_gate(&state, &request.to, &request.actor, body.approve, &what, ask).await {
        return response;
    }
    let deployer = state.deployer.clone();
    launch(&state, async move { windlass_pipeline::promote::start(&deployer, &request).await }).await
}

/// Runs `work` as a task of the server's own and waits for it. Work that takes a lock or
/// records state runs this way: a client that disconnects drops the wait, never the work
/// half-way (with the lock held, or instances started and not recorded).
async fn owned<T: Send + 'static>(
    state: &AppState,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T, Response> {
    state
        .deployer
        .tasks
        .run(work)
        .await
        .map_err(|err| error(StatusCode::SERVICE_UNAVAILABLE, format!("the work stopped: {err}")))
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

/// Starts a deploy (or rollback, or promotion) with `start` (which takes the lock and records
/// the deploy) and runs it in the background, both in a task of their own: 202 with its id, or
/// the error that kept it from starting.
async fn launch(
    state: &AppState,
    start: impl std::future::Future<Output = Result<windlass_pipeline::deploy::Prepared, DeployError>> + Send + 'static,
) -> Response {
    let deployer = state.deployer.clone();
    let started = owned(state, async move { start.await.map(|prepared| run_in_background(&deployer, prepared)) }).await;
    match started {
        Ok(Ok(id)) => (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response(),
        Ok(Err(err)) => deploy_error(err),
        Err(response) => response,
    }
}

/// The environment's approval policy applied to a deploy or promotion by `actor`: none (go
/// ahead) when it needs no approval or the requester may and does approve it; otherwise the
/// answer to send: a refusal of self-approval, or the request `ask` records. `what` follows
/// "request <id>" in the message (" to promote from staging").
async fn approval_gate<F, Fut>(
    state: &AppState,
    environment: &str,
    actor: &str,
    approve: bool,
    what: &str,
    ask: F,
) -> Option<Response>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<approval::ApprovalRequest, DeployError>> + Send + 'static,
{
    let policy = match approval::policy(&state.deployer, environment) {
        Ok(policy) => policy,
        Err(err) => return Some(deploy_error(err)),
    };
    match (policy, approve) {
        (Approval::None, _) | (Approval::Anyone, true) => None,
        (Approval::Required, true) => Some(error(
            StatusCode::FORBIDDEN,
            format!(
                "`{environment}` needs approval by someone other than the requester ({actor}); leave out --approve and ask a colleague to run `windlass approve {environment}`"
            ),
        )),
        (Approval::Required | Approval::Anyone, false) => Some(match owned(state, ask()).await {
            Err(response) => response,
            Ok(Err(err)) => deploy_error(err),
            Ok(Ok(pending)) => {
                let message = format!(
                    "`{environment}` needs approval: request {}{what} is waiting; {} approves it with `windlass approve {environment}`",
                    pending.id,
                    if policy == Approval::Required { "someone else" } else { "anyone" },
                );
                (StatusCode::ACCEPTED, Json(json!({ "approval": pending, "message": message }))).into_response()
            }
        }),
    }
}

/// The environment's latest approval request, open or decided.
async fn show_approval(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match approval::latest(&state.deployer, &environment).await {
        Ok(Some(request)) => Json(json!({ "approval": request })).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no deploy of `{environment}` was ever sent for approval")),
        Err(err) => deploy_error(err),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Approve,
    Reject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    decision: Verdict,
    #[serde(default)]
    reason: Option<String>,
}

/// Approves (and starts) or rejects the open request.
async fn decide_approval(
    State(state): State<AppState>,
    Extension(Actor(actor)): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let body: DecisionBody = match body(&bytes) {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let deployer = state.deployer.clone();
    match body.decision {
        Verdict::Approve => {
            let approved = owned(&state, async move {
                let (request, prepared) = approval::approve(&deployer, &environment, &actor, body.reason).await?;
                Ok::<_, DeployError>((request, run_in_background(&deployer, prepared)))
            })
            .await;
            match approved {
                Ok(Ok((request, id))) => {
                    (StatusCode::ACCEPTED, Json(json!({ "id": id, "approval": request }))).into_response()
                }
                Ok(Err(err)) => deploy_error(err),
                Err(response) => response,
            }
        }
        Verdict::Reject => {
            let rejected =
                owned(&state, async move { approval::reject(&deployer, &environment, &actor, body.reason).await })
                    .await;
            match rejected {
                Ok(Ok(request)) => Json(json!({ "approval": request })).into_response(),
                Ok(Err(err)) => deploy_error(err),
                Err(response) => response,
            }
        }
    }
}

/// A service's secondary pool and whether failing over would serve the live build. A managed
/// secondary (`failover.instances`) is deployed with the primary, so it drifts only when its
/// update failed; a static one (addresses the config names) is never updated by Windlass, and
/// failing over serves whatever code it runs. Said loudly rather than discovered during an
/// outage.
fn secondary_drift(
    config: &windlass_config::Config,
    environment: &str,
    service: &str,
    service_state: Option<&windlass_pipeline::state::ServiceState>,
) -> Option<Value> {
    let failover = config.service_in(environment, service)?.failover?;
    let live = service_state.and_then(|s| s.live.as_ref().and_then(|color| s.colors.get(color)));
    let live_build = live.map(|c| c.artifact.short_hash().to_owned());
    if failover.managed.is_some() {
        let secondary = service_state.and_then(|s| s.secondary.as_ref());
        let in_step = matches!((secondary, live), (Some(s), Some(l)) if s.artifact.sha256 == l.artifact.sha256);
        let warning = match (secondary, live) {
            (None, Some(_)) => Some(
                "the secondary runs no instance: failing over would serve nothing until the next deploy starts it"
                    .to_owned(),
            ),
            (Some(s), Some(l)) if !in_step => Some(format!(
                "the secondary runs build {} but the primary runs build {}: failing over serves other code until the next deploy",
                s.artifact.short_hash(),
                l.artifact.short_hash()
            )),
            _ => None,
        };
        return Some(json!({
            "deployed_by_windlass": true,
            "build": secondary.map(|s| s.artifact.short_hash()),
            "deploy": secondary.map(|s| s.deploy_id.as_str()),
            "in_step": in_step,
            "warning": warning,
        }));
    }
    let live_build = live_build.as_deref();
    let addresses: Vec<&str> = failover.secondary.iter().map(|a| a.value.as_str()).collect();
    let warning = format!(
        "the secondary ({}) is not deployed by Windlass: deploys do not update it, and failing over serves the code it runs{}",
        addresses.join(", "),
        live_build.map(|b| format!(", not build {b}")).unwrap_or_default()
    );
    Some(json!({ "addresses": addresses, "deployed_by_windlass": false, "warning": warning }))
}

/// One edge serves every environment this server manages, and the edge knows services by name:
/// two environments running a service of the same name would share one edge service (routes,
/// pools, weights). Refused, before anything changes, until each environment has its own edge and
/// server (`--env`).
async fn shared_edge_conflict(state: &AppState, environment: &str) -> Result<(), Response> {
    if state.managed.len() < 2 {
        return Ok(());
    }
    let Ok(config) = state.deployer.shared_config() else { return Ok(()) };
    let ours: Vec<&String> = config.services.keys().filter(|s| config.service_in(environment, s).is_some()).collect();
    for other in state.managed.iter().filter(|e| e.as_str() != environment) {
        let Ok(theirs) = EnvState::load(&*state.store, other).await else { continue };
        let taken = theirs.services.iter().find(|(name, s)| s.live.is_some() && ours.contains(name));
        if let Some((service, _)) = taken {
            return Err(error(
                StatusCode::CONFLICT,
                format!(
                    "`{service}` of `{other}` runs behind this server's edge, which knows services by name: a deploy to `{environment}` would take it over. Give each environment its own edge and server (`windlass edge --env {environment}`, `windlass server --env {environment}`)"
                ),
            ));
        }
    }
    Ok(())
}

/// The latest state of an environment's probes.
async fn list_probes(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match state.probes.statuses(&environment) {
        Some(statuses) => {
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

#[derive(Deserialize)]
struct EventQuery {
    environment: Option<String>,
    /// Only kinds starting with this (`db.`, `deploy.approv`, `notify.failed`).
    kind: Option<String>,
    limit: Option<u32>,
}

/// The audit trail, newest first: deploys, approvals, overrides, failovers, failed
/// notifications, scheduled backups.
async fn list_events(State(state): State<AppState>, Query(query): Query<EventQuery>) -> Response {
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    // Filtering by kind happens after the read: read more so a rare kind still fills the page.
    let read = if query.kind.is_some() { 5000 } else { limit };
    let events = match state.store.events(query.environment.as_deref(), read).await {
        Ok(events) => events,
        Err(err) => return error(StatusCode::INTERNAL_SERVER_ERROR, err),
    };
    let events: Vec<Value> = events
        .iter()
        .filter(|e| query.kind.as_deref().is_none_or(|k| e.kind.starts_with(k)))
        .take(limit as usize)
        .map(|e| {
            json!({
                "id": e.id,
                "at": e.at.to_string(),
                "actor": e.actor,
                "environment": e.environment,
                "kind": e.kind,
                "subject": e.subject,
                "message": e.message,
                "data": serde_json::from_str::<Value>(&e.data).unwrap_or(Value::Null),
            })
        })
        .collect();
    Json(json!({ "events": events })).into_response()
}
