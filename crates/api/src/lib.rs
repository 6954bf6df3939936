//! The contract of the server's `/api/v1`: every request body, query and response as a Rust
//! type, shared by the server (which builds its answers from them) and the CLI (which reads
//! them), so a renamed field fails to compile instead of printing nothing. The OpenAPI 3.1
//! document served at `/api/v1/openapi.json` is derived from these types ([`openapi`]).
//!
//! The JSON these types make is the wire format: field names and shapes must not change without
//! a new API version. This crate does no I/O and knows nothing of the server's libraries (it
//! must stay light: the CLI depends on it); times are RFC 3339 text as the server writes them.
//!
//! The alert, silence, incident and SLO report items mirror the monitor's serde shapes field for
//! field (the server converts into them; this crate must not depend on the monitor).

pub mod access;
pub mod alerts;
pub mod approval;
pub mod canary;
pub mod deploys;
pub mod events;
pub mod locks;
pub mod openapi;
pub mod operations;
pub mod probes;
pub mod slo;
pub mod status;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every error the API answers: a 4xx for what the caller got wrong (400 malformed, 401/403
/// token, 404 unknown, 409 conflict or locked, 422 config) and a 5xx for the server's failures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

impl ErrorBody {
    pub fn new(message: impl std::fmt::Display) -> Self {
        ErrorBody { error: message.to_string() }
    }
}

/// `GET /healthz` (outside `/api/v1`, no token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// A deploy (or rollback, promotion, approved request) was started: `202` with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Started {
    pub id: String,
}

/// `?limit=` of listings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
// As every body type denies unknown fields: a misspelt parameter (`?enviroment=`) is a 400
// naming it, not a listing that silently ignored it.
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    pub limit: Option<u32>,
}

#[cfg(test)]
mod tests {
    use crate::approval::{Approval, Decision, Fingerprint};
    use crate::deploys::DeployRequest;

    /// The approval's decision is flattened beside its fields, as the server has always sent it.
    #[test]
    fn an_approval_reads_back_what_it_wrote() {
        let approval = Approval {
            id: "a1".into(),
            environment: "production".into(),
            requested_by: "ann".into(),
            requested_at: "2026-01-01T00:00:00Z".into(),
            options: DeployRequest { reason: Some("fix".into()), ..Default::default() },
            fingerprint: Fingerprint {
                config_sha256: "c".into(),
                artifacts: [("api".to_owned(), "s".to_owned())].into(),
                migrations_sha256: None,
            },
            promote_from: None,
            services: Vec::new(),
            rollback: None,
            decision: Decision::Rejected { by: "bob".into(), reason: None },
        };
        let wire = serde_json::to_value(&approval).unwrap();
        assert_eq!(wire["status"], "rejected");
        assert_eq!(wire["by"], "bob");
        assert!(
            wire.get("promote_from").is_none() && wire.get("services").is_none() && wire.get("rollback").is_none(),
            "{wire}"
        );
        assert_eq!(serde_json::from_value::<Approval>(wire).unwrap(), approval);
    }

    #[test]
    fn a_deploy_request_refuses_unknown_fields() {
        assert!(serde_json::from_str::<DeployRequest>(r#"{"dry_run": true}"#).unwrap().dry_run);
        assert!(serde_json::from_str::<DeployRequest>(r#"{"dryrun": true}"#).is_err());
    }
}
