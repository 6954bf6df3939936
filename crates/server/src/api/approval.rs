//! Approvals over the API: the gate a deploy or promotion passes (the policy itself is
//! `windlass_pipeline::approval::gate`), the latest request, and approving or rejecting it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use windlass_api::approval::{ApprovalPending, ApprovalShown, Approved, DecisionRequest, Verdict};
use windlass_pipeline::DeployError;
use windlass_pipeline::approval::{self, Gate};

use super::{Actor, AppState, Path, body, deploy_error, error, known_environment, owned, run_in_background};

/// The environment's approval policy applied to a deploy or promotion by `actor`: none (go
/// ahead) when it needs no approval or the requester may and does approve it; otherwise the
/// answer to send: a refusal of self-approval, or the request `ask` records. `what` follows
/// "request <id>" in the message (" to promote from staging").
pub(super) async fn gate<F, Fut>(
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
    match approval::gate(policy, approve, environment, actor) {
        Gate::Go => None,
        Gate::SelfApprovalRefused(why) => Some(error(StatusCode::FORBIDDEN, why)),
        Gate::Ask => Some(match owned(state, ask()).await {
            Err(response) => response,
            Ok(Err(err)) => deploy_error(err),
            Ok(Ok(pending)) => {
                let message = approval::pending_message(policy, environment, &pending, what);
                (StatusCode::ACCEPTED, Json(ApprovalPending { approval: (&pending).into(), message })).into_response()
            }
        }),
    }
}

/// The environment's latest approval request, open or decided.
pub(super) async fn show(State(state): State<AppState>, Path(environment): Path<String>) -> Response {
    if let Err(response) = known_environment(&state, &environment) {
        return response;
    }
    match approval::latest(&state.deployer, &environment).await {
        Ok(Some(request)) => Json(ApprovalShown { approval: (&request).into() }).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no deploy of `{environment}` was ever sent for approval")),
        Err(err) => deploy_error(err),
    }
}

/// Approves (and starts) or rejects the open request.
pub(super) async fn decide(
    State(state): State<AppState>,
    Extension(Actor { name: actor, .. }): Extension<Actor>,
    Path(environment): Path<String>,
    bytes: Bytes,
) -> Response {
    let body: DecisionRequest = match body(&bytes) {
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
                    (StatusCode::ACCEPTED, Json(Approved { id, approval: (&request).into() })).into_response()
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
                Ok(Ok(request)) => Json(ApprovalShown { approval: (&request).into() }).into_response(),
                Ok(Err(err)) => deploy_error(err),
                Err(response) => response,
            }
        }
    }
}
