//! Who may do what: the answer to a call the caller's roles do not allow.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// 403: the caller lacks a permission. Also an [`crate::ErrorBody`] (its `error` says it all in
/// words); the other fields say it for programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Denied {
    pub error: String,
    /// The permission the call needs (`deploy`, `approve`, `silence`...).
    pub permission: String,
    /// The least role that grants it.
    pub role: String,
    /// Where it was asked for: the environment (none for a route of no environment).
    pub environment: Option<String>,
    pub service: Option<String>,
    /// The request's id (also in the `x-request-id` header), to find the audit record.
    pub request_id: String,
}
