//! Approvals over the API: the gate a deploy, promotion or rollback passes (the policy itself is
//! `windlass_pipeline::approval::gate`), the latest request, and approving or rejecting it.
//! Decisions are made by the person behind the token (`Actor.name`), never by the token, and
//! never by a robot.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use windlass_api::approval::{ApprovalPending, ApprovalShown, Approved, DecisionRequest, Verdict};
use windlass_pipeline::DeployError;
use windlass_pipeline::approval::{self, Decider, Gate};

use super::{Actor, AppState, Path, body, deploy_error, error, known_environment, owned, run_in_background};

/// The environment's approval policy applied to a deploy, promotion or rollback by `actor`: go
/// ahead (`Ok`) when it needs no approval, or the requester may and does approve it (then
/// `Ok(Some(who))`, the approval to record); otherwise the answer to send: a refusal of
/// self-approval, or the request `ask` records. `what` follows "request <id>" in the message
/// (" to promote from staging").
pub(super) async fn gate<F, Fut>(
    state: &AppState,
    environment: &str,
    actor: &Actor,
    approve: bool,
    what: &str,
    ask: F,
) -> Result<Option<String>, Response>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<approval::ApprovalRequest, DeployError>> + Send + 'static,
{
    let policy = approval::policy(&state.deployer, environment).map_err(deploy_error)?;
    let decider = Decider { name: &actor.name, robot: actor.robot };
    match approval::gate(policy, approve, environment, decider) {
        Gate::Go => Ok(None),
        Gate::SelfApproved => {
            // `--approve` is an approval like `windlass approve`: it needs the permission, or a
            // deployer under `approval = "anyone"` would approve what an approver never saw.
            let scope = crate::access::Scope { environment: Some(environment), service: None };
            crate::access::require(state, actor, crate::access::Permission::Approve, scope).await?;
            Ok(Some(actor.name.clone()))
        }
        Gate::SelfApprovalRefused(why) => Err(error(StatusCode::FORBIDDEN, why)),
        Gate::Ask => Err(match owned(state, ask()).await {
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

/// Approves (and starts) or rejects the open request: as the person behind the token; a robot
/// is refused whatever permissions it holds.
pub(super) async fn decide(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
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
    if actor.robot {
        let verb = if body.decision == Verdict::Approve { "approve" } else { "reject" };
        return error(
            StatusCode::FORBIDDEN,
            format!(
                "`{}` is a robot, and robots never {verb} deploys: a person decides (robots may only ask)",
                actor.name
            ),
        );
    }
    let deployer = state.deployer.clone();
    let Actor { name, robot, .. } = actor;
    match body.decision {
        Verdict::Approve => {
            let approved = owned(&state, async move {
                let decider = Decider { name: &name, robot };
                let (request, prepared) = approval::approve(&deployer, &environment, decider, body.reason).await?;
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
            let rejected = owned(&state, async move {
                approval::reject(&deployer, &environment, Decider { name: &name, robot }, body.reason).await
            })
            .await;
            match rejected {
                Ok(Ok(request)) => Json(ApprovalShown { approval: (&request).into() }).into_response(),
                Ok(Err(err)) => deploy_error(err),
                Err(response) => response,
            }
        }
    }
}
