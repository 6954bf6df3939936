//! Canaries over the API: where each service's canary stands, and the manual promote or abort
//! (left in the store for the deploy running the canary, which acts on it).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use windlass_api::canary::{
    CanaryAction, CanaryDecided, CanaryList, CanaryProgress, CanaryRequest, Figures, IntervalVerdict,
};
use windlass_pipeline::canary::{Command, Control, Progress, Verdict, control_key, progress_key};

use super::{Actor, AppState, Path, audit, body, deploy_error, error, known_environment};

/// A canary's progress as the API shows it.
fn shown(progress: Progress) -> CanaryProgress {
    CanaryProgress {
        deploy_id: progress.deploy_id,
        service: progress.service,
        canary: progress.canary,
        stable: progress.stable,
        step: progress.step as u64,
        steps: progress.steps as u64,
        weight: progress.weight,
        passed: progress.passed,
        failed: progress.failed,
        inconclusive: progress.inconclusive,
        last: progress.last.map(|f| Figures {
            requests: f.requests,
            errors: f.errors,
            error_rate: f.error_rate,
            p95_ms: f.p95_ms,
            p99_ms: f.p99_ms,
            stable_error_rate: f.stable_error_rate,
            stable_p95_ms: f.stable_p95_ms,
        }),
        last_verdict: progress.last_verdict.map(|v| match v {
            Verdict::Passed => IntervalVerdict::Passed,
            Verdict::Failed { reasons } => IntervalVerdict::Failed { reasons },
            Verdict::Inconclusive { reason } => IntervalVerdict::Inconclusive { reason },
        }),
        outcome: progress.outcome,
        reason: progress.reason,
        failed_at: progress.failed_at,
    }
}

/// The canaries of an environment: running, or how the last one of each service ended.
pub(super) async fn status(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    let services: Vec<String> = match state.deployer.shared_config() {
        Ok(config) => config.services.keys().cloned().collect(),
        Err(err) => return deploy_error(err),
    };
    let mut canaries = Vec::new();
    for service in services {
        let key = progress_key(&environment, &service);
        let Ok(Some(text)) = state.store.setting(&key).await else { continue };
        if let Ok(progress) = serde_json::from_str::<Progress>(&text) {
            canaries.push(shown(progress));
        }
    }
    Json(CanaryList { environment, canaries }).into_response()
}

/// `promote` or `abort` for the running canary of a service; the deploy running it acts on it
/// within a fraction of a second.
pub(super) async fn decide(
    State(state): State<AppState>,
    Extension(Actor { name: actor, .. }): Extension<Actor>,
    Path((environment, service)): Path<(String, String)>,
    bytes: Bytes,
) -> Response {
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
    let (command, verb) = match request.action {
        CanaryAction::Promote => (Command::Promote, "promote"),
        CanaryAction::Abort => (Command::Abort, "abort"),
    };
    let control = Control { command, actor: actor.clone(), deploy_id: progress.deploy_id.clone() };
    let text = serde_json::to_string(&control).unwrap_or_default();
    if let Err(err) = state.store.set_setting(&control_key(&environment, &service), &text).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, err);
    }
    let message =
        format!("{verb} requested for the canary {} of {service} (deploy {})", progress.canary, progress.deploy_id);
    audit(&*state.store, &actor, &environment, &format!("canary-{verb}"), &service, message.clone()).await;
    Json(CanaryDecided { service, deploy: progress.deploy_id, message }).into_response()
}
