//! The OpenAPI 3.1 document of `/api/v1`, derived from this crate's types: each route is
//! declared once below (the functions are never called; they carry the path, parameters and
//! responses for utoipa). The server serves [`document`] at `GET /api/v1/openapi.json`; a
//! route added to the server and not here is a gap the contract test cannot see.
//!
//! Every route answers errors as [`ErrorBody`] (`4XX`, `5XX`); every route but the document
//! itself needs `Authorization: Bearer <token>`.

#![allow(dead_code)]

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::alerts::*;
use crate::approval::*;
use crate::canary::*;
use crate::deploys::*;
use crate::events::*;
use crate::locks::*;
use crate::operations::*;
use crate::probes::*;
use crate::slo::*;
use crate::status::*;
use crate::{ErrorBody, LimitQuery, Started};

/// The document, as JSON text.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|err| format!("{{\"error\": \"{err}\"}}"))
}

/// The document, as utoipa's model.
pub fn model() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A personal token: `windlass token create --for <you>`"))
                    .build(),
            ),
        );
    }
}

/// Every answer described: OpenAPI requires a description, and the routes above only name most
/// answers by their body.
struct Described;

impl Modify for Described {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                for (status, response) in operation.responses.responses.iter_mut() {
                    let utoipa::openapi::RefOr::T(response) = response else { continue };
                    if response.description.is_empty() {
                        response.description = match status.chars().next() {
                            Some('4') => "What the caller got wrong",
                            Some('5') => "The server's failure",
                            _ => "Done",
                        }
                        .to_owned();
                    }
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Windlass server API", description = "The control plane's `/api/v1`: deploys, operations, approvals, canaries, probes, alerts, incidents and SLOs."),
    servers((url = "/api/v1")),
    modifiers(&BearerToken, &Described),
    security(("token" = [])),
    paths(
        status, create_deploy, list_deploys, rollback, show_lock, break_lock, maintenance, failover, scale, logs,
        canary_status, canary_decide, promote, show_approval, decide_approval, slo, list_probes, list_events,
        show_deploy, deploy_events, list_alerts, ack, list_silences, add_silence, expire_silence,
        list_incidents, reliability, show_incident, add_note, resolve_incident, show_postmortem, openapi_json,
    ),
    components(schemas(ErrorBody, StepStarted, StepOutput)),
)]
struct ApiDoc;

#[utoipa::path(get, path = "/status", responses(
    (status = 200, body = Status), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn status() {}

#[utoipa::path(post, path = "/environments/{env}/deploys", params(("env" = String, Path)),
    request_body(content = DeployRequest, description = "May be empty"), responses(
    (status = 200, description = "A dry run's plan", body = DryRun),
    (status = 202, description = "Started, or sent for approval", body = Started),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn create_deploy() {}

#[utoipa::path(get, path = "/environments/{env}/deploys", params(("env" = String, Path), LimitQuery), responses(
    (status = 200, body = DeployList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn list_deploys() {}

#[utoipa::path(post, path = "/environments/{env}/rollback", params(("env" = String, Path)),
    request_body(content = RollbackRequest, description = "May be empty"), responses(
    (status = 202, description = "Started, or sent for approval", body = Started),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn rollback() {}

#[utoipa::path(get, path = "/environments/{env}/lock", params(("env" = String, Path)), responses(
    (status = 200, body = LockShown), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn show_lock() {}

#[utoipa::path(delete, path = "/environments/{env}/lock", params(("env" = String, Path)),
    request_body = BreakLockRequest, responses(
    (status = 200, body = LockBroken), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn break_lock() {}

#[utoipa::path(put, path = "/environments/{env}/maintenance", params(("env" = String, Path)),
    request_body = MaintenanceRequest, responses(
    (status = 200, body = MaintenanceDone), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn maintenance() {}

#[utoipa::path(put, path = "/environments/{env}/services/{service}/failover",
    params(("env" = String, Path), ("service" = String, Path)), request_body = FailoverRequest, responses(
    (status = 200, body = FailoverDone), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn failover() {}

#[utoipa::path(put, path = "/environments/{env}/services/{service}/scale",
    params(("env" = String, Path), ("service" = String, Path)), request_body = ScaleRequest, responses(
    (status = 200, body = ScaleDone), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn scale() {}

#[utoipa::path(get, path = "/environments/{env}/services/{service}/logs",
    params(("env" = String, Path), ("service" = String, Path), LogsQuery), responses(
    (status = 200, body = Logs), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn logs() {}

#[utoipa::path(get, path = "/environments/{env}/canary", params(("env" = String, Path)), responses(
    (status = 200, body = CanaryList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn canary_status() {}

#[utoipa::path(post, path = "/environments/{env}/services/{service}/canary",
    params(("env" = String, Path), ("service" = String, Path)), request_body = CanaryRequest, responses(
    (status = 200, body = CanaryDecided), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn canary_decide() {}

#[utoipa::path(post, path = "/environments/{env}/promote", params(("env" = String, Path)),
    request_body = PromoteRequest, responses(
    (status = 202, description = "Started, or sent for approval", body = Started),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn promote() {}

#[utoipa::path(get, path = "/environments/{env}/approval", params(("env" = String, Path)), responses(
    (status = 200, body = ApprovalShown), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn show_approval() {}

#[utoipa::path(post, path = "/environments/{env}/approval", params(("env" = String, Path)),
    request_body = DecisionRequest, responses(
    (status = 200, description = "Rejected", body = ApprovalShown),
    (status = 202, description = "Approved: the deploy started", body = Approved),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn decide_approval() {}

#[utoipa::path(get, path = "/slo/{env}", params(("env" = String, Path)), responses(
    (status = 200, body = SloReport), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn slo() {}

#[utoipa::path(get, path = "/environments/{env}/probes", params(("env" = String, Path)), responses(
    (status = 200, body = ProbeList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn list_probes() {}

#[utoipa::path(get, path = "/events", params(EventQuery), responses(
    (status = 200, body = EventList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn list_events() {}

#[utoipa::path(get, path = "/deploys/{id}", params(("id" = String, Path)), responses(
    (status = 200, body = DeployDetail), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn show_deploy() {}

#[utoipa::path(get, path = "/deploys/{id}/events", params(("id" = String, Path)), responses(
    (status = 200, content_type = "text/event-stream",
     description = "Server-sent events: `step` (StepStarted, then Step when it ends), `output` (StepOutput), `done` (Deploy), `error` (ErrorBody)"),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn deploy_events() {}

#[utoipa::path(get, path = "/alerts", params(AlertQuery), responses(
    (status = 200, body = AlertList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn list_alerts() {}

#[utoipa::path(post, path = "/alerts/{id}/ack", params(("id" = String, Path)),
    request_body(content = AckRequest, description = "May be empty"), responses(
    (status = 200, body = Acknowledged), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn ack() {}

#[utoipa::path(get, path = "/silences", params(AlertQuery), responses(
    (status = 200, body = SilenceList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn list_silences() {}

#[utoipa::path(post, path = "/silences", request_body = SilenceRequest, responses(
    (status = 201, description = "The silence", body = Silence),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn add_silence() {}

#[utoipa::path(delete, path = "/silences/{id}", params(("id" = String, Path)), responses(
    (status = 200, description = "The silence", body = Silence),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn expire_silence() {}

#[utoipa::path(get, path = "/incidents", params(AlertQuery), responses(
    (status = 200, body = IncidentList), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn list_incidents() {}

#[utoipa::path(get, path = "/reliability", params(ReliabilityQuery), responses(
    (status = 200, body = Reliability), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn reliability() {}

#[utoipa::path(get, path = "/incidents/{id}", params(("id" = String, Path)), responses(
    (status = 200, description = "The incident", body = Incident),
    (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn show_incident() {}

#[utoipa::path(post, path = "/incidents/{id}/notes", params(("id" = String, Path)), request_body = NoteRequest,
    responses((status = 200, body = Noted), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn add_note() {}

#[utoipa::path(post, path = "/incidents/{id}/resolve", params(("id" = String, Path)),
    request_body(content = NoteRequest, description = "May be empty"), responses(
    (status = 200, body = IncidentResolved), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn resolve_incident() {}

#[utoipa::path(get, path = "/incidents/{id}/postmortem", params(("id" = String, Path)), responses(
    (status = 200, body = Postmortem), (status = "4XX", body = ErrorBody), (status = "5XX", body = ErrorBody)))]
fn show_postmortem() {}

#[utoipa::path(get, path = "/openapi.json", security(()), responses(
    (status = 200, description = "This document", body = Object)))]
fn openapi_json() {}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_openapi_3_1_with_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).expect("JSON");
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
        let paths = doc["paths"].as_object().expect("paths");
        for path in ["/status", "/environments/{env}/deploys", "/deploys/{id}/events", "/incidents/{id}/postmortem"] {
            assert!(paths.contains_key(path), "{path} missing");
        }
        assert!(doc["components"]["schemas"]["Status"].is_object());
        // The monitor's bodies are described field by field, not as bare objects.
        for (schema, field) in
            [("Alert", "fired_at"), ("Silence", "matchers"), ("Incident", "timeline"), ("ServiceReport", "budget")]
        {
            let properties = &doc["components"]["schemas"][schema]["properties"];
            assert!(properties[field].is_object(), "{schema} does not describe {field}: {properties}");
        }
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("a path item") {
                for (status, response) in operation["responses"].as_object().expect("responses") {
                    let described = response["description"].as_str().is_some_and(|d| !d.is_empty());
                    assert!(described, "{method} {path} {status} has no description");
                }
            }
        }
    }
}
