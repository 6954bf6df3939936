//! Approvals: in an environment with `approval = "required"` a deploy is first a request; it runs
//! when someone other than the requester approves it (`approval = "anyone"` lets the requester
//! approve too, with `windlass deploy <env> --approve`). The request records what would run (the
//! config and each build, by hash): if either changes before the approval, the approval is
//! refused, so nobody approves one thing and ships another.
//!
//! A rollback to a deploy whose config and builds never passed approval in the environment is a
//! request too ([`request_rollback`]; see [`crate::rollback::passed_approval`]).
//!
//! Decisions compare people, never tokens: the requester and the approver are the names of the
//! people (or robots) behind the tokens, so one person holding two tokens is still one person.
//! A robot never approves or rejects, even holding the permission.
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
use crate::promote::PromoteRequest;

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
    /// A promotion from this environment (its live builds), not a deploy of the config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_from: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// A rollback to an earlier deploy, not a deploy of the config's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackAsked>,
    #[serde(flatten)]
    pub decision: Decision,
}

/// What an approved rollback request runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollbackAsked {
    /// The deploy returned to (resolved when the request was made).
    pub to: String,
    pub restore_database: bool,
}

/// Who decides on a request: the person or robot behind the token, never the token itself.
#[derive(Debug, Clone, Copy)]
pub struct Decider<'a> {
    pub name: &'a str,
    pub robot: bool,
}

/// Why a robot's decision is refused.
fn robots_never_approve(name: &str, what: &str) -> DeployError {
    DeployError::Forbidden(format!(
        "`{name}` is a robot, and robots never {what} deploys: a person decides (robots may only ask)"
    ))
}

pub fn key(environment: &str) -> String {
    format!("approval/{environment}")
}

/// The environment's approval policy.
pub fn policy(deployer: &Deployer, environment: &str) -> Result<Approval, DeployError> {
    let config = deployer.shared_config()?;
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
    // Decisions take a moment: wait for one in progress rather than refuse at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let lease = loop {
        match deployer.store.acquire_lease(&name, &deployer.holder, "approval", Duration::from_secs(30)).await? {
            Acquire::Acquired(lease) => break lease,
            Acquire::Held(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Acquire::Held(info) => {
                return Err(DeployError::Conflict(format!(
                    "{}'s approval is being decided by {} right now; try again",
                    environment, info.holder
                )));
            }
        }
    };
    let result = work.await;
    let _ = deployer.store.release_lease(&lease).await;
    result
}

/// Records a request for approval after checking everything a deploy checks.
pub async fn request(deployer: &Deployer, start: &StartRequest) -> Result<ApprovalRequest, DeployError> {
    let checked = deployer.check(start).await?;
    let what = format!("deploy `{}`", start.environment);
    let asked = Asked { promote_from: None, services: Vec::new(), rollback: None };
    record(deployer, start, checked.fingerprint, asked, &checked.config, &checked.variables, &what).await
}

/// Records a request to promote into `promotion.to`: what is approved is the source's builds
/// as they run now.
pub async fn request_promotion(
    deployer: &Deployer,
    promotion: &PromoteRequest,
) -> Result<ApprovalRequest, DeployError> {
    let fingerprint = promotion_fingerprint(deployer, promotion).await?;
    let config = deployer.shared_config()?;
    let variables = deployer.variables(&config, &promotion.to).await?;
    let start = StartRequest {
        environment: promotion.to.clone(),
        actor: promotion.actor.clone(),
        options: promotion.options.clone(),
        expect: None,
        approved_by: None,
    };
    let what = format!("promote `{}` to `{}`", promotion.from, promotion.to);
    let from = Some(promotion.from.clone());
    let asked = Asked { promote_from: from, services: promotion.services.clone(), rollback: None };
    record(deployer, &start, fingerprint, asked, &config, &variables, &what).await
}

/// Records a request to roll back as `rollback` asks, to the target `checked` found (whose
/// config and builds never passed approval in the environment).
pub async fn request_rollback(
    deployer: &Deployer,
    rollback: &crate::rollback::RollbackRequest,
    checked: &crate::rollback::Checked,
) -> Result<ApprovalRequest, DeployError> {
    let config = deployer.shared_config()?;
    let variables = deployer.variables(&config, &rollback.environment).await?;
    let start = StartRequest {
        environment: rollback.environment.clone(),
        actor: rollback.actor.clone(),
        options: crate::plan::DeployOptions {
            reason: rollback.reason.clone(),
            override_window: rollback.override_window,
            ..Default::default()
        },
        expect: None,
        approved_by: None,
    };
    let what = format!("roll `{}` back to {}", rollback.environment, checked.target.id);
    let asked = Asked {
        promote_from: None,
        services: Vec::new(),
        rollback: Some(RollbackAsked {
            to: checked.target.id.to_string(),
            restore_database: rollback.restore_database,
        }),
    };
    record(deployer, &start, rollback_fingerprint(&checked.target)?, asked, &config, &variables, &what).await
}

/// What a rollback to `target` runs: its config snapshot and its builds.
fn rollback_fingerprint(target: &windlass_store::Deploy) -> Result<Fingerprint, DeployError> {
    use sha2::Digest as _;
    let recorded = crate::rollback::recorded(target)?;
    Ok(Fingerprint {
        config_sha256: hex::encode(sha2::Sha256::digest(target.config_snapshot.as_bytes())),
        artifacts: recorded.services.iter().map(|(s, r)| (s.clone(), r.artifact.sha256.clone())).collect(),
        migrations_sha256: None,
    })
}

/// What a request asks for beyond a deploy of the config: a promotion or a rollback.
struct Asked {
    promote_from: Option<String>,
    services: Vec<String>,
    rollback: Option<RollbackAsked>,
}

/// The config's hash and the source's live builds, which an approved promotion must still find.
async fn promotion_fingerprint(deployer: &Deployer, promotion: &PromoteRequest) -> Result<Fingerprint, DeployError> {
    use sha2::Digest as _;
    let promoted = crate::promote::source_services(deployer, promotion).await?;
    let source =
        windlass_config::Source::read(&deployer.config_path).map_err(|e| DeployError::Config(e.to_string()))?;
    Ok(Fingerprint {
        config_sha256: hex::encode(sha2::Sha256::digest(source.text().as_bytes())),
        artifacts: promoted.iter().map(|p| (p.service.clone(), p.artifact.sha256.clone())).collect(),
        migrations_sha256: None,
    })
}

async fn record(
    deployer: &Deployer,
    start: &StartRequest,
    fingerprint: Fingerprint,
    asked: Asked,
    config: &windlass_config::Config,
    variables: &crate::vars::Variables,
    what: &str,
) -> Result<ApprovalRequest, DeployError> {
    guard(deployer, &start.environment, async {
        if let Some(open) = latest(deployer, &start.environment).await?
            && open.decision == Decision::Pending
        {
            return Err(DeployError::Conflict(format!(
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
            requested_at: deployer.clock.now().to_string(),
            options: start.options.clone(),
            fingerprint,
            promote_from: asked.promote_from,
            services: asked.services,
            rollback: asked.rollback,
            decision: Decision::Pending,
        };
        save(deployer, &request).await?;
        audit(deployer, &start.actor, &request, "deploy.approval_requested", format!("{} asks to {what}", start.actor))
            .await;
        let message = crate::notifications::message(
            config,
            "deploy.approval_requested",
            &start.environment,
            None,
            &format!("{} asks to {what}", start.actor),
            format!(
                "{} asks to {what}{}. Approve with `windlass approve {}` or reject with `windlass reject {}`.",
                start.actor,
                start.options.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
                start.environment,
                start.environment
            ),
            vec![("request".to_owned(), request.id.clone()), ("requested by".to_owned(), start.actor.clone())],
        );
        crate::notifications::notify(deployer, config, variables, message);
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
    decider: Decider<'_>,
    reason: Option<String>,
) -> Result<(ApprovalRequest, Prepared), DeployError> {
    let approver = decider.name;
    if decider.robot {
        return Err(robots_never_approve(approver, "approve"));
    }
    let policy = policy(deployer, environment)?;
    // Looked at before the lease too: a decision on nothing is refused without writing (taking
    // the lease records its fencing counter). Looked at again under the lease, which serialises
    // decisions.
    open_request(deployer, environment).await?;
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
        let prepared = match (&request.promote_from, &request.rollback) {
            (_, Some(rollback)) => {
                let rollback = crate::rollback::RollbackRequest {
                    environment: environment.to_owned(),
                    actor: request.requested_by.clone(),
                    to: Some(rollback.to.clone()),
                    reason: options.reason,
                    restore_database: rollback.restore_database,
                    override_window: options.override_window,
                    mode: crate::rollback::Mode::Planned,
                    approved_by: Some(approver.to_owned()),
                };
                let checked = crate::rollback::check(deployer, &rollback).await?;
                if let Some(change) = request.fingerprint.differs_from(&rollback_fingerprint(&checked.target)?) {
                    return Err(DeployError::Conflict(format!(
                        "{change} since the rollback was requested: what would run is not what was approved; request it again"
                    )));
                }
                crate::rollback::start(deployer, &rollback).await?
            }
            (Some(from), None) => {
                let promotion = PromoteRequest {
                    from: from.clone(),
                    to: environment.to_owned(),
                    services: request.services.clone(),
                    actor: request.requested_by.clone(),
                    options,
                    approved_by: Some(approver.to_owned()),
                };
                let now = promotion_fingerprint(deployer, &promotion).await?;
                if let Some(change) = request.fingerprint.differs_from(&now) {
                    return Err(DeployError::Conflict(format!(
                        "{change} since the promotion was requested: what would run is not what was approved; request it again"
                    )));
                }
                crate::promote::start(deployer, &promotion).await?
            }
            (None, None) => {
                let start = StartRequest {
                    environment: environment.to_owned(),
                    actor: request.requested_by.clone(),
                    options,
                    expect: Some(request.fingerprint.clone()),
                    approved_by: Some(approver.to_owned()),
                };
                deployer.start(&start).await?
            }
        };
        request.decision = Decision::Approved { by: approver.to_owned(), deploy_id: prepared.id.to_string() };
        // The request must not stay open once its deploy exists (a second approval would start
        // a second deploy): a failed save is retried, then reported loudly.
        let mut saved = save(deployer, &request).await;
        for _ in 0..3 {
            if saved.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            saved = save(deployer, &request).await;
        }
        if let Err(err) = saved {
            tracing::error!(%err, request = request.id, deploy = %prepared.id, "the approval could not be recorded; reject the request by hand");
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
    decider: Decider<'_>,
    reason: Option<String>,
) -> Result<ApprovalRequest, DeployError> {
    let rejecter = decider.name;
    if decider.robot {
        return Err(robots_never_approve(rejecter, "reject"));
    }
    policy(deployer, environment)?;
    // As in `approve`: refused without taking the lease when nothing awaits a decision.
    open_request(deployer, environment).await?;
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
        _ => Err(DeployError::Conflict(format!("no deploy of `{environment}` awaits approval"))),
    }
}

/// What the environment's approval policy says of a deploy, promotion or rollback by `actor`,
/// who asked with `approve` (or not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// No approval needed: go ahead.
    Go,
    /// The requester may and does approve it (`approval = "anyone"` and `--approve`): go ahead,
    /// recorded as approved by them.
    SelfApproved,
    /// The requester approves their own deploy where someone else must, or is a robot: refused,
    /// with why.
    SelfApprovalRefused(String),
    /// Record a request and wait for an approval.
    Ask,
}

/// The approval policy applied to a request (pure: the caller records the request on [`Gate::Ask`]).
/// A robot may ask for approval, never give it, not even its own where anyone may.
pub fn gate(policy: Approval, approve: bool, environment: &str, actor: Decider<'_>) -> Gate {
    let name = actor.name;
    match (policy, approve) {
        (Approval::None, _) => Gate::Go,
        (Approval::Required | Approval::Anyone, true) if actor.robot => Gate::SelfApprovalRefused(format!(
            "`{name}` is a robot, and robots never approve deploys: leave out --approve; a person approves with `windlass approve {environment}`"
        )),
        (Approval::Anyone, true) => Gate::SelfApproved,
        (Approval::Required, true) => Gate::SelfApprovalRefused(format!(
            "`{environment}` needs approval by someone other than the requester ({name}); leave out --approve and ask a colleague to run `windlass approve {environment}`"
        )),
        (Approval::Required | Approval::Anyone, false) => Gate::Ask,
    }
}

/// What the requester is told of a request `pending` recorded under `policy`. `what` follows
/// "request <id>" (" to promote from staging").
pub fn pending_message(policy: Approval, environment: &str, pending: &ApprovalRequest, what: &str) -> String {
    format!(
        "`{environment}` needs approval: request {}{what} is waiting; {} approves it with `windlass approve {environment}`",
        pending.id,
        if policy == Approval::Required { "someone else" } else { "anyone" },
    )
}

impl From<&ApprovalRequest> for windlass_api::approval::Approval {
    fn from(request: &ApprovalRequest) -> Self {
        use windlass_api::approval as wire;
        wire::Approval {
            id: request.id.clone(),
            environment: request.environment.clone(),
            requested_by: request.requested_by.clone(),
            requested_at: request.requested_at.clone(),
            options: crate::view::options_shown(&request.options),
            fingerprint: wire::Fingerprint {
                config_sha256: request.fingerprint.config_sha256.clone(),
                artifacts: request.fingerprint.artifacts.clone(),
                migrations_sha256: request.fingerprint.migrations_sha256.clone(),
            },
            promote_from: request.promote_from.clone(),
            services: request.services.clone(),
            rollback: request
                .rollback
                .as_ref()
                .map(|r| wire::RollbackAsked { to: r.to.clone(), restore_database: r.restore_database }),
            decision: match &request.decision {
                Decision::Pending => wire::Decision::Pending,
                Decision::Approved { by, deploy_id } => {
                    wire::Decision::Approved { by: by.clone(), deploy_id: deploy_id.clone() }
                }
                Decision::Rejected { by, reason } => {
                    wire::Decision::Rejected { by: by.clone(), reason: reason.clone() }
                }
            },
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    const ANN: Decider<'static> = Decider { name: "ann", robot: false };
    const CI: Decider<'static> = Decider { name: "ci", robot: true };

    #[test]
    fn the_policy_decides_who_may_approve() {
        assert_eq!(gate(Approval::None, false, "prod", ANN), Gate::Go);
        assert_eq!(gate(Approval::None, true, "prod", ANN), Gate::Go);
        assert_eq!(gate(Approval::Anyone, true, "prod", ANN), Gate::SelfApproved);
        assert_eq!(gate(Approval::Anyone, false, "prod", ANN), Gate::Ask);
        assert_eq!(gate(Approval::Required, false, "prod", ANN), Gate::Ask);
        let Gate::SelfApprovalRefused(why) = gate(Approval::Required, true, "prod", ANN) else {
            panic!("self-approval where someone else must approve goes ahead")
        };
        assert!(why.contains("someone other than the requester (ann)"), "{why}");
    }

    #[test]
    fn a_robot_asks_for_approval_but_never_gives_it_not_even_where_anyone_may() {
        assert_eq!(gate(Approval::None, true, "prod", CI), Gate::Go, "no approval involved");
        assert_eq!(gate(Approval::Anyone, false, "prod", CI), Gate::Ask);
        assert_eq!(gate(Approval::Required, false, "prod", CI), Gate::Ask);
        for policy in [Approval::Anyone, Approval::Required] {
            let Gate::SelfApprovalRefused(why) = gate(policy, true, "prod", CI) else {
                panic!("a robot approved its own deploy under {policy:?}")
            };
            assert!(why.contains("`ci` is a robot, and robots never approve"), "{why}");
        }
    }
}
