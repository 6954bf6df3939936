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
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
use crate::access::{CallContext, Permission, Scope};

/// One API route as the permission check sees it: its method, its path (as declared, under
/// `/api/v1`) and the one permission it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    pub method: Method,
    pub path: &'static str,
    pub permission: Permission,
}

/// The API's routes and the permission each declares, built together: a route can only be added
/// with its permission, and the check ([`guard`]) looks the matched route up in the table (one
/// missing from it is refused, never let through).
pub(crate) struct Routes {
    router: Router<AppState>,
    table: Vec<RouteRule>,
}

macro_rules! route_methods {
    ($($name:ident => $method:ident),*) => {$(
        pub fn $name<H, T>(mut self, path: &'static str, handler: H, permission: Permission) -> Self
        where
            H: axum::handler::Handler<T, AppState>,
            T: 'static,
        {
            self.table.push(RouteRule { method: Method::$method, path, permission });
            self.router = self.router.route(path, axum::routing::$name(handler));
            self
        }
    )*};
}

impl Routes {
    pub fn new() -> Self {
        Routes { router: Router::new(), table: Vec::new() }
    }

    route_methods!(get => GET, post => POST, put => PUT, delete => DELETE);

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }
}

/// Every route of `/api/v1` behind the token check, with its permission.
pub(crate) fn api_routes() -> Routes {
    use Permission::*;
    Routes::new()
        .get("/status", views::status, Read)
        .post("/environments/{env}/deploys", deploys::create, Deploy)
        .get("/environments/{env}/deploys", deploys::list, Read)
        .post("/environments/{env}/rollback", deploys::rollback, Rollback)
        .get("/environments/{env}/lock", operations::show_lock, Read)
        .delete("/environments/{env}/lock", operations::break_lock, BreakLock)
        .put("/environments/{env}/maintenance", operations::maintenance, Maintenance)
        .put("/environments/{env}/services/{service}/failover", operations::failover, Failover)
        .put("/environments/{env}/services/{service}/scale", operations::scale, Scale)
        .get("/environments/{env}/services/{service}/logs", operations::logs, Read)
        .get("/environments/{env}/canary", canary::status, Read)
        .post("/environments/{env}/promote", deploys::promote, Deploy)
        .get("/environments/{env}/approval", approval::show, Read)
        .post("/environments/{env}/approval", approval::decide, Approve)
        .post("/environments/{env}/services/{service}/canary", canary::decide, Canary)
        .get("/slo/{env}", crate::slo::report, Read)
        .get("/environments/{env}/probes", views::list_probes, Read)
        .get("/events", views::list_events, Read)
        .get("/deploys/{id}", deploys::show, Read)
        .get("/deploys/{id}/events", deploys::watch, Read)
        .merge(crate::alerts::routes())
}

/// The permission table of the API (for `docs/access.md` and the router test).
pub fn route_table() -> Vec<RouteRule> {
    api_routes().table
}

/// `docs/access.md`'s table of routes and their permissions, made from [`route_table`].
pub fn routes_markdown() -> String {
    let mut table = String::from("| method | route (under `/api/v1`) | permission |\n|---|---|---|\n");
    for rule in route_table() {
        table.push_str(&format!("| {} | `{}` | `{}` |\n", rule.method, rule.path, rule.permission.as_str()));
    }
    table
}

pub fn router(state: AppState) -> Router {
    let routes = api_routes();
    let table = Arc::new(routes.table);
    let api = routes
        .router
        .route_layer(middleware::from_fn_with_state((state.clone(), table), guard))
        // Added after the token check's layer, so outside it: the document describes the API
        // and holds nothing of the state (tools fetch it before they have a token).
        .route("/openapi.json", get(openapi));
    Router::new()
        .route("/healthz", get(|| async { Json(Health { status: "ok".into() }) }))
        .nest("/api/v1", api)
        .merge(crate::alerts::public_routes().route_layer(middleware::from_fn(public_call)))
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

/// A new request id: 16 random hex digits (what `x-request-id` answers and audit records keep).
fn request_id() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness, a clock-derived id still tells requests apart in the log.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_be_bytes();
    }
    hex::encode(bytes)
}

fn source(request: &Request) -> Option<std::net::SocketAddr> {
    request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0)
}

/// The bearer token of an `Authorization` header: the scheme in any case (RFC 9110 makes it
/// case-insensitive), one or more spaces, the token.
fn bearer(request: &Request) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The environment and service a route's path names: its `env` and `service` parameters, and a
/// deploy id's environment.
fn scope_of(params: &axum::extract::RawPathParams) -> (Option<String>, Option<String>) {
    let (mut environment, mut service) = (None, None);
    for (key, value) in params {
        match key {
            "env" => environment = Some(value.to_owned()),
            "service" => service = Some(value.to_owned()),
            "id" if environment.is_none() => environment = deploy_environment(value),
            _ => {}
        }
    }
    (environment, service)
}

/// `production-20260101-120000` or `production-20260101-120000-2` → `production`.
fn deploy_environment(id: &str) -> Option<String> {
    let mut parts: Vec<&str> = id.split('-').collect();
    if parts.len() >= 4 && parts.last().is_some_and(|p| p.len() < 6 && p.bytes().all(|b| b.is_ascii_digit())) {
        parts.pop();
    }
    let time = parts.pop()?;
    let date = parts.pop()?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    (digits(time, 6) && digits(date, 8) && !parts.is_empty()).then(|| parts.join("-"))
}

/// The check in front of every `/api/v1` route: gives the request an id (answered in
/// `x-request-id`), authenticates its token, checks the route's declared permission on the
/// route's environment and service, and runs the handler with the call's context for audit
/// records. A call that needed more than reading and failed is audited as failed.
async fn guard(
    State((state, table)): State<(AppState, Arc<Vec<RouteRule>>)>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let matched = parts.extensions.get::<axum::extract::MatchedPath>().cloned();
    let params = axum::extract::RawPathParams::from_request_parts(&mut parts, &()).await.ok();
    let mut request = Request::from_parts(parts, body);
    let id = request_id();
    let source = source(&request);
    let answer = async {
        let presented = bearer(&request).map(str::to_owned);
        let actor = match authenticate(&state, presented.as_deref()).await {
            Ok(actor) => actor,
            Err(response) => return response,
        };
        let path = matched.as_ref().map(|m| m.as_str().strip_prefix("/api/v1").unwrap_or(m.as_str())).unwrap_or("");
        let method = request.method().clone();
        // axum answers HEAD with the GET handler, so HEAD needs what GET needs.
        let looked_up = if method == Method::HEAD { Method::GET } else { method.clone() };
        let Some(permission) = table.iter().find(|r| r.method == looked_up && r.path == path).map(|r| r.permission)
        else {
            let allowed: Vec<&str> = table.iter().filter(|r| r.path == path).map(|r| r.method.as_str()).collect();
            if !allowed.is_empty() {
                // The path exists, not with this method: the 405 axum would give, answered here so
                // that no handler runs without its permission checked.
                let mut answer = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!("{path} does not take {method}; it takes {}", allowed.join(", ")),
                );
                if let Ok(value) = header::HeaderValue::from_str(&allowed.join(",")) {
                    answer.headers_mut().insert(header::ALLOW, value);
                }
                return answer;
            }
            // Every route is declared with its permission; one that is not is refused, never
            // let through (the router test walks every route to keep this from happening).
            tracing::error!(path, %method, "an API route declares no permission");
            return error(StatusCode::FORBIDDEN, format!("route {method} {path} declares no permission"));
        };
        let (environment, service) = params.as_ref().map(scope_of).unwrap_or_default();
        if params.is_some() && path.starts_with("/deploys/{id}") && environment.is_none() {
            // The scope of a deploy is its environment, read from its id: an id that names none
            // is no deploy, and must not be checked as "any environment" (fail closed).
            let id = params.as_ref().and_then(|p| p.iter().find(|(key, _)| *key == "id").map(|(_, value)| value));
            return error(
                StatusCode::NOT_FOUND,
                format!("no deploy `{}`: a deploy id is `<environment>-<YYYYMMDD>-<HHMMSS>`", id.unwrap_or_default()),
            );
        }
        let scope = Scope { environment: environment.as_deref(), service: service.as_deref() };
        let call = CallContext { request_id: id.clone(), source, actor: Some(actor.clone()), via: None };
        let allowed =
            crate::access::CALL.scope(call.clone(), crate::access::require(&state, &actor, permission, scope)).await;
        if let Err(denied) = allowed {
            return denied;
        }
        request.extensions_mut().insert(actor.clone());
        let response = crate::access::CALL.scope(call.clone(), next.run(request)).await;
        if permission != Permission::Read
            && (response.status().is_client_error() || response.status().is_server_error())
        {
            let entry = AuditEntry {
                actor: Some(&actor),
                action: permission.as_str(),
                resource: path,
                environment: scope.environment,
                outcome: windlass_api::events::AuditOutcome::Failed,
                message: format!("{} {path} by {} answered {}", permission.as_str(), actor.name, response.status()),
                before: None,
                after: None,
            };
            crate::access::CALL.scope(call, audit_record(&*state.store, entry)).await;
        }
        response
    }
    .await;
    with_request_id(answer, &id)
}

fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = header::HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The signed-link and webhook routes: no token, but a request id and a context that says how
/// the caller authenticated, for their audit records.
async fn public_call(request: Request, next: Next) -> Response {
    let id = request_id();
    let via =
        if request.uri().path().starts_with("/hooks/pagerduty") { "pagerduty webhook" } else { "signed ack link" };
    let call = CallContext { request_id: id.clone(), source: source(&request), actor: None, via: Some(via) };
    let response = crate::access::CALL.scope(call, next.run(request)).await;
    with_request_id(response, &id)
}

/// The actor a request's token belongs to, or the answer: 401 without a token or with an expired
/// one (saying when it expired), 403 with an unknown or revoked one.
async fn authenticate(state: &AppState, presented: Option<&str>) -> Result<Actor, Response> {
    let Some(token) = presented else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "send a token: Authorization: Bearer <token> (create one with `windlass token create --for <you>`)",
        ));
    };
    match tokens::authenticate(&*state.store, token).await {
        Ok(Ok(token)) => Ok(Actor {
            name: token.owner,
            token: token.name,
            robot: token.kind == windlass_store::TokenOwnerKind::Robot,
            admin: token.admin,
        }),
        Ok(Err(refused @ tokens::Refused::Expired { .. })) => Err(error(StatusCode::UNAUTHORIZED, refused)),
        Ok(Err(refused)) => Err(error(StatusCode::FORBIDDEN, refused)),
        Err(err) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, err)),
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
///
/// Every request body of the API is an object: anything else is refused here, naming what came,
/// because serde reads a struct from a JSON array too (`[]` would be an empty request, and start
/// a deploy).
pub(crate) fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    if let Some(got) = json_kind_other_than_object(text) {
        return Err(error(StatusCode::BAD_REQUEST, format!("invalid request body: expected a JSON object, got {got}")));
    }
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

/// What a JSON text that is not an object is (`an array`, `a string`, ...); `None` for an
/// object and for what is no JSON at all (serde's error then says what is wrong with it).
fn json_kind_other_than_object(text: &[u8]) -> Option<&'static str> {
    use serde_json::Value;
    match serde_json::from_slice::<Value>(text).ok()? {
        Value::Object(_) => None,
        Value::Array(_) => Some("an array"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("a boolean"),
        Value::Null => Some("null"),
    }
}

/// The environment exists in the config and this server manages it.
pub(crate) fn known_environment(state: &AppState, environment: &str) -> Result<(), Response> {
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

/// One audit record, as [`audit_record`] writes it.
pub(crate) struct AuditEntry<'a> {
    /// The authenticated caller; `None` on routes outside the token check (links, webhooks).
    pub actor: Option<&'a Actor>,
    pub action: &'a str,
    pub resource: &'a str,
    pub environment: Option<&'a str>,
    pub outcome: windlass_api::events::AuditOutcome,
    pub message: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Keys whose values never reach an audit record.
const SECRET_KEYS: [&str; 6] = ["secret", "token", "password", "key", "authorization", "credential"];

/// `value` with every value under a secret-looking key replaced by `"[redacted]"`.
pub(crate) fn redact(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        (key, Value::String("[redacted]".into()))
                    } else {
                        (key, redact(value))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        other => other,
    }
}

/// Writes an audit record in the one format ([`windlass_api::events::Audit`], under `data.audit`),
/// with the request's id and source from the call's context. A failure to write is logged: the
/// action has happened (or been refused) either way.
pub(crate) async fn audit_record(store: &dyn Store, entry: AuditEntry<'_>) {
    let call = crate::access::current_call();
    let actor = entry.actor.cloned().or_else(|| call.as_ref().and_then(|c| c.actor.clone()));
    let (name, kind, authenticated_by) = match &actor {
        Some(actor) => (actor.name.clone(), actor.kind().to_owned(), actor.authenticated_by()),
        None => ("-".to_owned(), "unknown".to_owned(), "none".to_owned()),
    };
    write_audit(store, name, kind, authenticated_by, call, entry).await;
}

async fn write_audit(
    store: &dyn Store,
    actor: String,
    actor_kind: String,
    authenticated_by: String,
    call: Option<CallContext>,
    entry: AuditEntry<'_>,
) {
    let outcome = entry.outcome;
    let record = windlass_api::events::Audit {
        actor: actor.clone(),
        actor_kind,
        authenticated_by,
        source: call.as_ref().and_then(|c| c.source).map(|s| s.to_string()),
        request_id: call.map(|c| c.request_id),
        action: entry.action.to_owned(),
        resource: entry.resource.to_owned(),
        environment: entry.environment.map(str::to_owned),
        outcome,
        before: entry.before.map(redact),
        after: entry.after.map(redact),
    };
    let kind = match outcome {
        windlass_api::events::AuditOutcome::Allowed => entry.action.to_owned(),
        windlass_api::events::AuditOutcome::Denied => "access.denied".to_owned(),
        windlass_api::events::AuditOutcome::Failed => "request.failed".to_owned(),
    };
    let event = NewEvent {
        actor,
        environment: entry.environment.map(str::to_owned),
        kind,
        subject: Some(entry.resource.to_owned()),
        message: entry.message,
        data: serde_json::json!({ "audit": record }).to_string(),
    };
    if let Err(err) = store.record_event(&event).await {
        tracing::warn!(%err, "cannot record an audit event");
    }
}

/// Records an action a handler took (outcome allowed), by `actor` (the caller's name, or who a
/// link or webhook names).
pub(crate) async fn audit(
    store: &dyn Store,
    actor: &str,
    environment: &str,
    kind: &str,
    subject: &str,
    message: String,
) {
    audit_as(store, actor, Some(environment), kind, subject, message).await;
}

/// [`audit`] for an action of no environment, or one named by a link or webhook (`actor` is
/// who they name; the record says how the request authenticated).
pub(crate) async fn audit_as(
    store: &dyn Store,
    actor: &str,
    environment: Option<&str>,
    kind: &str,
    subject: &str,
    message: String,
) {
    let call = crate::access::current_call();
    let caller = call.as_ref().and_then(|c| c.actor.clone()).filter(|a| a.name == actor);
    let (actor_kind, authenticated_by) = match &caller {
        Some(caller) => (caller.kind().to_owned(), caller.authenticated_by()),
        // Outside the token check: a signed ack link or PagerDuty's signed webhook.
        None => match call.as_ref().and_then(|c| c.via) {
            Some(via @ "pagerduty webhook") => ("webhook".to_owned(), via.to_owned()),
            Some(via) => ("link".to_owned(), via.to_owned()),
            None => ("unknown".to_owned(), "none".to_owned()),
        },
    };
    let entry = AuditEntry {
        actor: caller.as_ref(),
        action: kind,
        resource: subject,
        environment,
        outcome: windlass_api::events::AuditOutcome::Allowed,
        message,
        before: None,
        after: None,
    };
    write_audit(store, actor.to_owned(), actor_kind, authenticated_by, call, entry).await;
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The router test, in process: the table the permission check reads holds every route of
    /// the OpenAPI document and no other, once each. (The platform test `every_api_route_checks_
    /// its_permission` then calls each of them on a real server.)
    #[test]
    fn every_route_declares_one_permission_and_the_table_is_the_api() {
        let table = route_table();
        let declared: BTreeSet<(String, String)> =
            table.iter().map(|r| (r.method.as_str().to_ascii_lowercase(), r.path.to_owned())).collect();
        assert_eq!(declared.len(), table.len(), "a route is declared twice");
        let document: serde_json::Value = serde_json::from_str(&windlass_api::openapi::document()).unwrap();
        let mut documented = BTreeSet::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if path != "/openapi.json" {
                    documented.insert((method.clone(), path.clone()));
                }
            }
        }
        let undeclared: Vec<_> = documented.difference(&declared).collect();
        let undocumented: Vec<_> = declared.difference(&documented).collect();
        assert!(undeclared.is_empty(), "API routes without a declared permission: {undeclared:?}");
        assert!(undocumented.is_empty(), "routes the OpenAPI document lacks: {undocumented:?}");
    }

    #[test]
    fn docs_access_md_shows_the_routes_table() {
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/access.md")).unwrap();
        assert!(
            docs.contains(&routes_markdown()),
            "docs/access.md's routes differ from the router's:\n{}",
            routes_markdown()
        );
    }

    #[test]
    fn a_deploy_id_names_its_environment() {
        assert_eq!(deploy_environment("production-20260101-120000").as_deref(), Some("production"));
        assert_eq!(deploy_environment("eu-west-20260101-120000-2").as_deref(), Some("eu-west"));
        assert_eq!(deploy_environment("20260101-120000"), None);
        assert_eq!(deploy_environment("x-2026-12"), None);
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        for header in ["Bearer wl_abc", "bearer wl_abc", "BEARER   wl_abc ", "bEaReR wl_abc"] {
            let request = Request::builder().header("authorization", header).body(axum::body::Body::empty()).unwrap();
            assert_eq!(bearer(&request), Some("wl_abc"), "{header}");
        }
        for header in ["Basic wl_abc", "Bearer", "Bearer ", "wl_abc"] {
            let request = Request::builder().header("authorization", header).body(axum::body::Body::empty()).unwrap();
            assert_eq!(bearer(&request), None, "{header}");
        }
    }

    #[test]
    fn audit_records_redact_secrets() {
        let redacted = redact(serde_json::json!({
            "service": "api",
            "env": { "DATABASE_PASSWORD": "hunter2", "PORT": "80" },
            "items": [{ "api_key": "k" }],
            "Authorization": "Bearer wl_x",
        }));
        let text = redacted.to_string();
        assert!(!text.contains("hunter2") && !text.contains("wl_x") && !text.contains("\"k\""), "{text}");
        assert_eq!(redacted["env"]["PORT"], "80");
        assert_eq!(redacted["service"], "api");
    }
}
