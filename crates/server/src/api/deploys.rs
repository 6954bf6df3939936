//! Deploys over the API: starting one (a dry run answers its plan), rolling back, promoting,
//! and reading deploy records, also as a stream of server-sent events.
//!
//! Starting work goes through [`launch`]: the start (lock, record) and the run are tasks of the
//! server's own, never of the request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use windlass_api::deploys::{
    DeployDetail, DeployList, DeployRequest, DryRun, PromoteRequest, RollbackRequest, StepOutput, StepStarted,
};
use windlass_api::{ErrorBody, LimitQuery, Started};
use windlass_pipeline::approval;
use windlass_pipeline::deploy::StartRequest;
use windlass_pipeline::deploy::progress::Progress;
use windlass_pipeline::rollback::Mode;
use windlass_pipeline::vars::Variables;
use windlass_pipeline::{DeployError, view};
use windlass_store::{Deploy, DeployId, Store};

use crate::access::{Permission, Scope};

use super::{
    Actor, AppState, Path, Query, body, deploy_error, error, known_environment, owned, run_in_background,
    shared_edge_conflict,
};

pub(super) async fn create(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let options: DeployRequest = match body(&bytes) {
        Ok(options) => options,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    if options.override_window
        && let Err(response) = require_switch(&state, &actor, Permission::OverrideWindow, &environment).await
    {
        return response;
    }
    let mut request = StartRequest {
        environment,
        actor: actor.name.clone(),
        options: view::options(options),
        expect: None,
        approved_by: None,
    };
    if request.options.dry_run {
        return match state.deployer.plan(&request) {
            Ok(plan) => Json(DryRun { dry_run: true, plan: view::plan(&plan) }).into_response(),
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
    match super::approval::gate(&state, &request.environment, &actor, request.options.approve, "", ask).await {
        Ok(approved_by) => request.approved_by = approved_by,
        Err(response) => return response,
    }
    let deployer = state.deployer.clone();
    launch(&state, async move { deployer.start(&request).await }).await
}

/// The permission a dangerous switch of a request needs (`--override-window`, `--emergency`,
/// `--restore-database`), on the environment: checked on top of the route's own.
async fn require_switch(
    state: &AppState,
    actor: &Actor,
    permission: Permission,
    environment: &str,
) -> Result<(), Response> {
    crate::access::require(state, actor, permission, Scope { environment: Some(environment), service: None }).await
}

/// Rolls back: at once, or as an approval request when the target never passed approval in an
/// environment with approvals; an emergency skips approval and windows.
pub(super) async fn rollback(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let body: RollbackRequest = match body(&bytes) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let switches = [
        (body.override_window, Permission::OverrideWindow),
        (body.emergency, Permission::Emergency),
        (body.restore_database, Permission::RestoreDatabase),
    ];
    for (_, permission) in switches.iter().filter(|(used, _)| *used) {
        if let Err(response) = require_switch(&state, &actor, *permission, &environment).await {
            return response;
        }
    }
    if let Err(response) = shared_edge_conflict(&state, &environment).await {
        return response;
    }
    let mut request = windlass_pipeline::rollback::RollbackRequest {
        environment,
        actor: actor.name.clone(),
        to: body.to,
        reason: body.reason,
        restore_database: body.restore_database,
        override_window: body.override_window,
        mode: if body.emergency { Mode::Emergency } else { Mode::Planned },
        approved_by: None,
    };
    let checked = match windlass_pipeline::rollback::check(&state.deployer, &request).await {
        Ok(checked) => checked,
        Err(err) => return deploy_error(err),
    };
    if checked.needs_approval {
        let what = format!(" to roll back to {}", checked.target.id);
        let ask = {
            let (deployer, request) = (state.deployer.clone(), request.clone());
            move || async move { approval::request_rollback(&deployer, &request, &checked).await }
        };
        match super::approval::gate(&state, &request.environment, &actor, body.approve, &what, ask).await {
            Ok(approved_by) => request.approved_by = approved_by,
            Err(response) => return response,
        }
    }
    let deployer = state.deployer.clone();
    launch(&state, async move { windlass_pipeline::rollback::start(&deployer, &request).await }).await
}

/// Deploys to `{env}` the builds that run in `from`; into an environment with approvals, it is
/// a request like any deploy.
pub(super) async fn promote(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let body: PromoteRequest = match body(&bytes) {
        Ok(body) => body,
        Err(response) => return response,
    };
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    if body.override_window
        && let Err(response) = require_switch(&state, &actor, Permission::OverrideWindow, &environment).await
    {
        return response;
    }
    if let Err(response) = shared_edge_conflict(&state, &environment).await {
        return response;
    }
    let mut request = windlass_pipeline::promote::PromoteRequest {
        from: body.from,
        to: environment,
        services: body.services,
        actor: actor.name.clone(),
        options: windlass_pipeline::plan::DeployOptions {
            reason: body.reason,
            override_window: body.override_window,
            ..Default::default()
        },
        approved_by: None,
    };
    let what = format!(" to promote from {}", request.from);
    let ask = {
        let (deployer, request) = (state.deployer.clone(), request.clone());
        move || async move { approval::request_promotion(&deployer, &request).await }
    };
    match super::approval::gate(&state, &request.to, &actor, body.approve, &what, ask).await {
        Ok(approved_by) => request.approved_by = approved_by,
        Err(response) => return response,
    }
    let deployer = state.deployer.clone();
    launch(&state, async move { windlass_pipeline::promote::start(&deployer, &request).await }).await
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
        Ok(Ok(id)) => (StatusCode::ACCEPTED, Json(Started { id })).into_response(),
        Ok(Err(err)) => deploy_error(err),
        Err(response) => response,
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    Path(environment): Path<String>,
    Query(limit): Query<LimitQuery>,
) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match state.store.deploys(&environment, limit.limit.unwrap_or(20).min(500)).await {
        Ok(deploys) => {
            let variables = view::shown_variables(&state.deployer, &environment).await;
            let deploys = deploys.iter().map(|d| view::deploy(d, variables.as_ref())).collect();
            Json(DeployList { deploys }).into_response()
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

pub(super) async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let deploy = match find_deploy(&*state.store, &id).await {
        Ok(deploy) => deploy,
        Err(response) => return response,
    };
    let variables = view::shown_variables(&state.deployer, &deploy.environment).await;
    match state.store.steps(&deploy.id).await {
        Ok(steps) => Json(DeployDetail {
            deploy: view::deploy(&deploy, variables.as_ref()),
            steps: steps.iter().map(view::step).collect(),
        })
        .into_response(),
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

/// Deploy event streams open at once on this server, and per token: each holds a connection
/// and reads the store when it falls behind, so a loop of `curl`s must not tie the server up.
/// A person follows a deploy or two; CI a few at once.
const MAX_STREAMS: usize = 64;
const MAX_STREAMS_PER_TOKEN: usize = 8;

/// How long a stream waits without being told anything before it reads the store anyway: a
/// deploy run by another server on a shared store tells this one nothing.
const QUIET_POLL: Duration = Duration::from_secs(2);

/// The streams open now: how many in all, and per token name.
static STREAMS: std::sync::LazyLock<std::sync::Mutex<(usize, BTreeMap<String, usize>)>> =
    std::sync::LazyLock::new(Default::default);

fn streams() -> std::sync::MutexGuard<'static, (usize, BTreeMap<String, usize>)> {
    STREAMS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One open stream's place under the caps, given back when the stream is dropped (its client
/// went away, or it ended).
struct StreamPlace {
    token: String,
}

impl StreamPlace {
    fn take(token: &str) -> Result<StreamPlace, Response> {
        let mut open = streams();
        let (all, per_token) = &mut *open;
        let mine = per_token.get(token).copied().unwrap_or(0);
        if mine >= MAX_STREAMS_PER_TOKEN {
            return Err(busy(
                StatusCode::TOO_MANY_REQUESTS,
                format!("token `{token}` already follows {mine} deploys (at most {MAX_STREAMS_PER_TOKEN}); close one"),
            ));
        }
        if *all >= MAX_STREAMS {
            return Err(busy(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the server already streams {all} deploys (at most {MAX_STREAMS}); try again shortly"),
            ));
        }
        *all += 1;
        *per_token.entry(token.to_owned()).or_default() += 1;
        Ok(StreamPlace { token: token.to_owned() })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = streams();
        let (all, per_token) = &mut *open;
        *all = all.saturating_sub(1);
        if let Some(mine) = per_token.get_mut(&self.token) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                per_token.remove(&self.token);
            }
        }
    }
}

fn busy(status: StatusCode, message: String) -> Response {
    let mut response = error(status, message);
    response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
    response
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
    /// What this server's deploy tells its followers; `None` once it closed.
    progress: Option<tokio::sync::broadcast::Receiver<Progress>>,
    _place: StreamPlace,
}

impl Watch {
    /// Reads the deploy and its steps from the store and queues what was not sent yet.
    async fn poll(&mut self) -> Result<(), String> {
        let deploy = self.store.deploy(&self.id).await.map_err(|e| e.to_string())?;
        let steps = self.store.steps(&self.id).await.map_err(|e| e.to_string())?;
        for step in &steps {
            let (sent, ended) = self.sent.entry(step.seq).or_insert_with(|| {
                let started = StepStarted {
                    seq: step.seq,
                    phase: step.phase.clone(),
                    name: step.name.clone(),
                    status: "running".into(),
                };
                self.queue.push_back(sse("step", &started));
                (0, false)
            });
            if step.output.len() > *sent {
                let text = step.output.get(*sent..).unwrap_or_default().to_owned();
                self.queue.push_back(sse("output", &StepOutput { seq: step.seq, text }));
                *sent = step.output.len();
            }
            if !*ended && step.status != windlass_store::StepStatus::Running {
                *ended = true;
                self.queue.push_back(sse("step", &view::step(step)));
            }
        }
        if let Some(deploy) = deploy
            && deploy.status != windlass_store::DeployStatus::Running
        {
            self.queue.push_back(sse("done", &view::deploy(&deploy, self.variables.as_ref())));
            self.done = true;
        }
        Ok(())
    }

    /// Output the deploy told of: queued without reading the store when it follows what was
    /// sent; `false` when the store must be read (a step not seen yet, a gap).
    fn told(&mut self, seq: i64, offset: usize, text: &str) -> bool {
        match self.sent.get_mut(&seq) {
            Some((sent, false)) if offset == *sent => {
                self.queue.push_back(sse("output", &StepOutput { seq, text: text.to_owned() }));
                *sent += text.len();
                true
            }
            // Already read from the store (it was written before this stream first read it).
            Some((sent, _)) if offset + text.len() <= *sent => true,
            _ => false,
        }
    }

    /// Waits until there is something to send (or the deploy may have changed), then queues it.
    async fn next(&mut self) -> Result<(), String> {
        let told = match self.progress.as_mut() {
            Some(progress) => tokio::time::timeout(QUIET_POLL, progress.recv()).await.ok(),
            None => {
                tokio::time::sleep(QUIET_POLL).await;
                None
            }
        };
        match told {
            Some(Ok(Progress::Output { seq, offset, text })) if self.told(seq, offset, &text) => Ok(()),
            Some(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                self.progress = None;
                self.poll().await
            }
            // A change, a gap, falling behind, or a quiet while: the store says what is new.
            _ => self.poll().await,
        }
    }
}

fn sse(kind: &str, data: &impl Serialize) -> Event {
    Event::default().event(kind).data(serde_json::to_string(data).unwrap_or_default())
}

/// Server-sent events of a deploy: `step` (started, ended), `output` (new text of a step) and
/// `done` (the deploy's end); a finished deploy replays everything and ends the stream. The
/// store is read once at the start; then the deploy's own progress ([`Progress`]) is sent as it
/// comes, and the store read again only on a step's start or end, a gap, or a quiet while. At
/// most [`MAX_STREAMS`] streams are open at once, [`MAX_STREAMS_PER_TOKEN`] per token: beyond,
/// 503 or 429 with `Retry-After`.
pub(super) async fn watch(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
) -> Response {
    let deploy = match find_deploy(&*state.store, &id).await {
        Ok(deploy) => deploy,
        Err(response) => return response,
    };
    let place = match StreamPlace::take(&actor.token) {
        Ok(place) => place,
        Err(response) => return response,
    };
    let variables = view::shown_variables(&state.deployer, &deploy.environment).await;
    // Before the first read of the store: what is written meanwhile is told, not missed.
    let progress = windlass_pipeline::deploy::progress::subscribe(&deploy.id);
    let watch = Watch {
        store: state.store.clone(),
        id: deploy.id,
        sent: BTreeMap::new(),
        queue: Default::default(),
        done: false,
        variables,
        progress: Some(progress),
        _place: place,
    };
    let stream = futures_util::stream::unfold((watch, true), |(mut watch, mut first)| async move {
        loop {
            if let Some(event) = watch.queue.pop_front() {
                return Some((Ok::<Event, Infallible>(event), (watch, first)));
            }
            if watch.done {
                return None;
            }
            let read = if std::mem::take(&mut first) { watch.poll().await } else { watch.next().await };
            if let Err(problem) = read {
                watch.done = true;
                watch.queue.push_back(sse("error", &ErrorBody { error: problem }));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_beyond_the_caps_are_refused_with_retry_after_and_a_closed_one_frees_its_place() {
        let mut alice: Vec<StreamPlace> =
            (0..MAX_STREAMS_PER_TOKEN).map(|_| StreamPlace::take("alice").expect("a place")).collect();
        let Err(refused) = StreamPlace::take("alice") else { panic!("one more than the cap was let in") };
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.headers().get(axum::http::header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"5"[..]));
        // Another token is not held up by Alice's streams; a closed one frees its place.
        let bob = StreamPlace::take("bob").expect("bob's place");
        drop(alice.pop());
        alice.push(StreamPlace::take("alice").expect("the freed place"));
        drop(bob);
        // The server's own cap, across tokens.
        let mut others: Vec<StreamPlace> = (0..MAX_STREAMS - MAX_STREAMS_PER_TOKEN)
            .map(|n| StreamPlace::take(&format!("ci-{}", n / MAX_STREAMS_PER_TOKEN)).expect("a place"))
            .collect();
        let Err(refused) = StreamPlace::take("carol") else { panic!("one more than the server's cap was let in") };
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        others.clear();
        alice.clear();
        assert_eq!(streams().0, 0, "every place was given back");
        assert!(streams().1.is_empty());
    }
}
