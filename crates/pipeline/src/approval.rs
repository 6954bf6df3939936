//! Approvals: in an environment with `approval = "required"` a deploy is first a request; it runs
//! when someone other than the requester approves it (`approval = "anyone"` lets the requester
//! approve too, with `windlass deploy <env> --approve`). The request records what would run (the
//! config and each build, by hash): if either changes before the approval, the approval is
//! refused, so nobody approves one thing and ships another.
//!
//! One request per environment is open at a time; it lives in the store (setting
//! `approval/<env>`) with its outcome, so a waiting `windlass deploy` learns which deploy its
//! approved request became.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use windlass_config::Approval;
use windlass_store::Acquire;

use crate::DeployError;
use crate::deploy::{Deployer, Fingerprint, Prepared, StartRequest};
use crate::plan::DeployOptions;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Decision {
    Pending,
    Approved { by: String, deploy_id: String },
    Rejected { by: String, reason: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub id: String,
    pub environment: String,
    pub requested_by: String,
    pub requested_at: String,
    pub options: DeployOptions,
    pub fingerprint: Fingerprint,
    #[serde(flatten)]
    pub decision: Decision,
}

pub fn key(environment: &str) -> String {
    format!("approval/{environment}")
}

/// The environment's approval policy.
pub fn policy(deployer: &Deployer, environment: &str) -> Result<Approval, DeployError> {
    let config = deployer.load_config()?;
    crate::plan::check_environment(&config, environment)?;
    Ok(config.environments.get(environment).map(|e| e.approval).unwrap_or_default())
}

/// The environment's latest request, open or decided.
pub async fn latest(deployer: &Deployer, environment: &str) -> Result<Option<ApprovalRequest>, DeployError> {
    let text = deployer.store.setting(&key(environment)).await?;
    Ok(text.filter(|t| !t.is_empty()).and_then(|t| serde_json::from_str(&t).ok()))
}

/// Serialises decisions on an environment's request (two approvers at once start one deploy).
async fn guard<T>(
    deployer: &Deployer,
    environment: &str,
    work: impl std::future::Future<Output = Result<T, DeployError>>,
) -> Result<T, DeployError> {
    let name = format!("approval/{environment}");
    let lease = match deployer.store.acquire_lease(&name, &deployer.holder, "approval", Duration::from_secs(30)).await?
    {
        Acquire::Acquired(lease) => lease,
        Acquire::Held(info) => {
            return Err(DeployError::Rejected(format!(
                "{}'s approval is being decided by {} right now; try again",
                environment, info.holder
            )));
        }
    };
    let result = work.await;
    let _ = deployer.store.release_lease(&lease).await;
    result
}

/// Records a request for approval after checking everything a deploy checks.
pub async fn request(deployer: &Deployer, start: &StartRequest) -> Result<ApprovalRequest, DeployError> {
    let checked = deployer.check(start).await?;
    guard(deployer, &start.environment, async {
        if let Some(open) = latest(deployer, &start.environment).await?
            && open.decision == Decision::Pending
        {
            return Err(DeployError::Rejected(format!(
                "a deploy of `{}` requested by {} at {} awaits approval ({}): approve or reject it first",
                open.environment, open.requested_by, open.requested_at, open.id
            )));
        }
        let mut bytes = [0u8; 4];
        getrandom::fill(&mut bytes).map_err(|e| DeployError::Failed(format!("no randomness: {e}")))?;
        let request = ApprovalRequest {
            id: format!("approval-{}", hex::encode(bytes)),
            environment: start.environment.clone(),
            requested_by: start.actor.clone(),
            requested_at: jiff::Timestamp::now().to_string(),
            options: start.options.clone(),
            fingerprint: checked.fingerprint.clone(),
            decision: Decision::Pending,
        };
        save(deployer, &request).await?;
        audit(
            deployer,
            &start.actor,
            &request,
            "deploy.approval_requested",
            format!("{} requested a deploy", start.actor),
        )
        .await;
        let message = crate::notifications::message(
            &checked.config,
            "deploy.approval_requested",
            &start.environment,
            None,
            &format!("a deploy by {} awaits approval", start.actor),
            format!(
                "{} asks to deploy `{}`{}. Approve with `windlass approve {}` or reject with `windlass reject {}`.",
                start.actor,
                start.environment,
                start.options.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
                start.environment,
                start.environment
            ),
            vec![("request".to_owned(), request.id.clone()), ("requested by".to_owned(), start.actor.clone())],
        );
        crate::notifications::send(deployer.store.clone(), &checked.config, &checked.variables, message);
        Ok(request)
    })
    .await
}

async fn save(deployer: &Deployer, request: &ApprovalRequest) -> Result<(), DeployError> {
    let text = serde_json::to_string(request).map_err(|e| DeployError::Failed(e.to_string()))?;
    deployer.store.set_setting(&key(&request.environment), &text).await?;
    Ok(())
}

async fn audit(deployer: &Deployer, actor: &str, request: &ApprovalRequest, kind: &str, message: String) {
    let event = windlass_store::NewEvent {
        actor: actor.into(),
        environment: Some(request.environment.clone()),
        kind: kind.into(),
        subject: Some(request.id.clone()),
        message,
        data: serde_json::to_string(request).unwrap_or_default(),
    };
    if let Err(err) = deployer.store.record_event(&event).await {
        tracing::warn!(%err, "cannot record an approval event");
    }
}

/// Approves the open request: checks who approves, then starts the deploy it describes, as
/// the requester's deploy, refused if what would run changed since the request.
pub async fn approve(
    deployer: &Deployer,
    environment: &str,
    approver: &str,
    reason: Option<String>,
) -> Result<(ApprovalRequest, Prepared), DeployError> {
    let policy = policy(deployer, environment)?;
    guard(deployer, environment, async {
        let mut request = open_request(deployer, environment).await?;
        if policy == Approval::Required && approver == request.requested_by {
            return Err(DeployError::Forbidden(format!(
                "`{environment}` needs approval by someone other than the requester ({approver})"
            )));
        }
        let mut options = request.options.clone();
        let approved = match &reason {
            Some(reason) => format!("approved by {approver}: {reason}"),
            None => format!("approved by {approver}"),
        };
        options.reason = Some(match &options.reason {
            Some(why) => format!("{why} ({approved})"),
            None => approved.clone(),
        });
        let start = StartRequest {
            environment: environment.to_owned(),
            actor: request.requested_by.clone(),
            options,
            expect: Some(request.fingerprint.clone()),
        };
        let prepared = deployer.start(&start).await?;
        request.decision = Decision::Approved { by: approver.to_owned(), deploy_id: prepared.id.to_string() };
        if let Err(err) = save(deployer, &request).await {
            tracing::error!(%err, "cannot record an approval");
        }
        audit(deployer, approver, &request, "deploy.approved", format!("{approved}; deploy {}", prepared.id)).await;
        Ok((request, prepared))
    })
    .await
}

/// Rejects the open request; nothing runs.
pub async fn reject(
    deployer: &Deployer,
    environment: &str,
    rejecter: &str,
    reason: Option<String>,
) -> Result<ApprovalRequest, DeployError> {
    policy(deployer, environment)?;
    guard(deployer, environment, async {
        let mut request = open_request(deployer, environment).await?;
        request.decision = Decision::Rejected { by: rejecter.to_owned(), reason: reason.clone() };
        save(deployer, &request).await?;
        let message = match &reason {
            Some(reason) => format!("rejected by {rejecter}: {reason}"),
            None => format!("rejected by {rejecter}"),
        };
        audit(deployer, rejecter, &request, "deploy.rejected", message).await;
        Ok(request)
    })
    .await
}

async fn open_request(deployer: &Deployer, environment: &str) -> Result<ApprovalRequest, DeployError> {
    match latest(deployer, environment).await? {
        Some(request) if request.decision == Decision::Pending => Ok(request),
        _ => Err(DeployError::Rejected(format!("no deploy of `{environment}` awaits approval"))),
    }
}
