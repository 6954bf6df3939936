//! The admin API, on its own listener (loopback by default, optionally TLS): how the control
//! plane drives the edge. Every call needs `Authorization: Bearer <token>`: the admin token for
//! anything, the read-only token for `GET`/`HEAD` (the state is the whole topology, so reads are
//! not open either). A write is applied whole or not at all (see [`Shared::update`]). Every body is a type of [`api`]; this module
//! must not build JSON by hand, so that the edge and [`crate::client`] cannot drift apart.

pub mod api;
pub mod guard;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use crate::shared::{Access, Shared, UpdateError};
use crate::spec::{PoolSpec, ServiceSpec, SpecError};
use api::{FailoverRequest, PoolMembership, Switch};

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/edge/state", get(state))
        .route("/edge/events", get(events))
        .route("/edge/counters", get(counters))
        .route("/edge/maintenance", put(maintenance_all))
        .route("/edge/services/{service}", put(put_service).delete(delete_service))
        .route("/edge/services/{service}/weights", put(weights))
        .route("/edge/services/{service}/maintenance", put(maintenance))
        .route("/edge/services/{service}/failover", put(failover))
        .route("/edge/services/{service}/endpoints", put(endpoints))
        .route("/edge/services/{service}/pools/{pool}", put(put_pool).delete(delete_pool))
        .route("/edge/services/{service}/pools/{pool}/metrics", get(pool_metrics))
        .route("/metrics", get(prometheus))
        .layer(middleware::from_fn_with_state(shared.clone(), require_token))
        .with_state(shared)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(api::ErrorBody { error: message.to_string() })).into_response()
}

/// Every call: the admin token may do anything, the read token may read; no token is 401, any
/// other token (the pin or bypass secret included) 403, and a read token on a write 403.
async fn require_token(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let read = request.method() == Method::GET || request.method() == Method::HEAD;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes);
    let Some(token) = presented else {
        let wanted = if read { "the admin or read token" } else { "the admin token" };
        return error(StatusCode::UNAUTHORIZED, format!("send Authorization: Bearer <{wanted}>"));
    };
    match shared.admin_access(token) {
        Access::Admin => next.run(request).await,
        Access::Read if read => next.run(request).await,
        Access::Read => error(StatusCode::FORBIDDEN, "the read token cannot change the edge: use the admin token"),
        Access::Denied => error(StatusCode::FORBIDDEN, "invalid admin token"),
    }
}

/// A request body that could not be read, answered with 400.
struct BadBody(String);

impl IntoResponse for BadBody {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, format!("invalid request body: {}", self.0))
    }
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, BadBody> {
    serde_json::from_slice(body).map_err(|err| BadBody(err.to_string()))
}

/// Applies a change and answers with the service's new spec, or with why nothing changed.
fn apply(
    shared: &Shared,
    service: &str,
    change: impl FnOnce(&mut crate::spec::EdgeSpec) -> Result<(), SpecError>,
) -> Response {
    match shared.update(change) {
        Ok(spec) => {
            Json(api::ServiceChanged { service: service.to_owned(), spec: spec.services.get(service).cloned() })
                .into_response()
        }
        Err(UpdateError::Invalid(err @ (SpecError::UnknownService(_) | SpecError::UnknownPool { .. }))) => {
            error(StatusCode::NOT_FOUND, err)
        }
        Err(UpdateError::Invalid(err)) => error(StatusCode::BAD_REQUEST, err),
        Err(err @ UpdateError::Persist { .. }) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

fn service_mut<'s>(spec: &'s mut crate::spec::EdgeSpec, service: &str) -> Result<&'s mut ServiceSpec, SpecError> {
    spec.services.get_mut(service).ok_or_else(|| SpecError::UnknownService(service.to_owned()))
}

async fn state(State(shared): State<Arc<Shared>>) -> Json<api::EdgeState> {
    let table = shared.table.load_full();
    let now_ms = shared.now_ms();
    let services = table
        .services
        .iter()
        .map(|service| {
            let pools = service
                .pools
                .iter()
                .map(|pool| {
                    let instances = pool
                        .instances
                        .iter()
                        .map(|i| api::InstanceState {
                            address: i.address,
                            healthy: i.healthy.load(Ordering::Relaxed),
                            ejected: i.ejected_until_ms.load(Ordering::Relaxed) > now_ms,
                            in_flight: i.outstanding.load(Ordering::Relaxed) as u64,
                        })
                        .collect();
                    let in_flight = pool.in_flight() as u64;
                    let taking_traffic = service.takes_traffic(pool);
                    let state = api::PoolState {
                        weight: pool.weight,
                        taking_traffic,
                        in_flight,
                        drained: !taking_traffic && in_flight == 0,
                        instances,
                    };
                    (pool.name.clone(), state)
                })
                .collect();
            let state = api::ServiceState { maintenance: service.maintenance, failed_over: service.failed_over, pools };
            (service.name.clone(), state)
        })
        .collect();
    Json(api::EdgeState { maintenance_all: table.spec.maintenance_all, services, spec: (*table.spec).clone() })
}

async fn events(State(shared): State<Arc<Shared>>) -> Json<api::Events> {
    Json(api::Events { events: shared.events() })
}

/// The counters of every service of one table: pools as routed now, and the service's own
/// maintenance and rate-limited answers (which belong to no pool).
async fn counters(State(shared): State<Arc<Shared>>) -> Json<api::Counters> {
    let table = shared.table.load_full();
    let services = table
        .services
        .iter()
        .map(|service| {
            let own = service.edge_metrics.snapshot();
            let pools = service.pools.iter().map(|pool| (pool.name.clone(), pool.metrics.snapshot())).collect();
            let endpoints = service.endpoints.as_ref().map(|e| e.snapshot()).unwrap_or_default();
            let counters =
                api::ServiceCounters { maintenance: own.maintenance, rate_limited: own.rate_limited, pools, endpoints };
            (service.name.clone(), counters)
        })
        .collect();
    Json(api::Counters { services })
}

async fn put_service(State(shared): State<Arc<Shared>>, Path(service): Path<String>, body: Bytes) -> Response {
    let spec: ServiceSpec = match parse(&body) {
        Ok(spec) => spec,
        Err(bad) => return bad.into_response(),
    };
    apply(&shared, &service, |edge| {
        edge.services.insert(service.clone(), spec);
        Ok(())
    })
}

async fn delete_service(State(shared): State<Arc<Shared>>, Path(service): Path<String>) -> Response {
    apply(&shared, &service, |edge| {
        edge.services.remove(&service).map(drop).ok_or_else(|| SpecError::UnknownService(service.clone()))
    })
}

async fn weights(State(shared): State<Arc<Shared>>, Path(service): Path<String>, body: Bytes) -> Response {
    let weights: api::Weights = match parse(&body) {
        Ok(weights) => weights,
        Err(bad) => return bad.into_response(),
    };
    let response = apply(&shared, &service, |edge| edge.set_weights(&service, &weights));
    if response.status().is_success() {
        shared.record_event(&service, "weights", format!("weights set to {weights:?}"));
    }
    response
}

async fn maintenance(State(shared): State<Arc<Shared>>, Path(service): Path<String>, body: Bytes) -> Response {
    let switch: Switch = match parse(&body) {
        Ok(switch) => switch,
        Err(bad) => return bad.into_response(),
    };
    let response = apply(&shared, &service, |edge| {
        service_mut(edge, &service)?.maintenance = switch.enabled;
        Ok(())
    });
    if response.status().is_success() {
        shared.record_event(
            &service,
            "maintenance",
            format!("maintenance {}", if switch.enabled { "on" } else { "off" }),
        );
    }
    response
}

async fn maintenance_all(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let switch: Switch = match parse(&body) {
        Ok(switch) => switch,
        Err(bad) => return bad.into_response(),
    };
    match shared.update(|edge| {
        edge.maintenance_all = switch.enabled;
        Ok(())
    }) {
        Ok(_) => {
            shared.record_event(
                "*",
                "maintenance",
                format!("maintenance for all {}", if switch.enabled { "on" } else { "off" }),
            );
            Json(api::MaintenanceAll { maintenance_all: switch.enabled }).into_response()
        }
        Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, err),
    }
}

async fn failover(State(shared): State<Arc<Shared>>, Path(service): Path<String>, body: Bytes) -> Response {
    let request: FailoverRequest = match parse(&body) {
        Ok(request) => request,
        Err(bad) => return bad.into_response(),
    };
    let to_secondary = match request.to.as_str() {
        "secondary" => true,
        "primary" => false,
        other => return error(StatusCode::BAD_REQUEST, format!("`{other}` is neither `secondary` nor `primary`")),
    };
    let response = apply(&shared, &service, |edge| {
        service_mut(edge, &service)?.failed_over = to_secondary;
        Ok(())
    });
    if response.status().is_success() {
        shared.record_event(
            &service,
            if to_secondary { "failover" } else { "failback" },
            format!("traffic moved to {} by hand", request.to),
        );
    }
    response
}

/// Replaces what a service counts per endpoint; its counters keep counting for endpoints (and
/// thresholds) that stay the same.
async fn endpoints(State(shared): State<Arc<Shared>>, Path(service): Path<String>, body: Bytes) -> Response {
    let request: api::EndpointsRequest = match parse(&body) {
        Ok(request) => request,
        Err(bad) => return bad.into_response(),
    };
    apply(&shared, &service, |edge| {
        let spec = service_mut(edge, &service)?;
        spec.endpoints = request.endpoints;
        spec.thresholds_ms = request.thresholds_ms;
        Ok(())
    })
}

async fn put_pool(
    State(shared): State<Arc<Shared>>,
    Path((service, pool)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let membership: PoolMembership = match parse(&body) {
        Ok(membership) => membership,
        Err(bad) => return bad.into_response(),
    };
    apply(&shared, &service, |edge| {
        let spec = service_mut(edge, &service)?;
        let weight = spec.pools.get(&pool).map_or(0, |p| p.weight);
        spec.pools.insert(pool.clone(), PoolSpec { instances: membership.instances, weight });
        Ok(())
    })
}

async fn delete_pool(State(shared): State<Arc<Shared>>, Path((service, pool)): Path<(String, String)>) -> Response {
    apply(&shared, &service, |edge| {
        let spec = service_mut(edge, &service)?;
        spec.pools
            .remove(&pool)
            .map(drop)
            .ok_or(SpecError::UnknownPool { service: service.clone(), pool: pool.clone() })
    })
}

async fn pool_metrics(State(shared): State<Arc<Shared>>, Path((service, pool)): Path<(String, String)>) -> Response {
    let table = shared.table.load_full();
    let Some(found) = table.service(&service).and_then(|s| s.pool(&pool)) else {
        return error(StatusCode::NOT_FOUND, format!("service `{service}` has no pool `{pool}`"));
    };
    let snapshot = found.metrics.snapshot();
    Json(api::PoolMetrics {
        requests: snapshot.requests(),
        errors: snapshot.errors(),
        p50_micros: snapshot.quantile_micros(0.50),
        p95_micros: snapshot.quantile_micros(0.95),
        p99_micros: snapshot.quantile_micros(0.99),
        service,
        pool,
        snapshot,
    })
    .into_response()
}

async fn prometheus(State(shared): State<Arc<Shared>>) -> Response {
    let mut out = String::new();
    out.push_str("# HELP windlass_edge_requests_total Answers by service, pool and status class.\n");
    out.push_str("# TYPE windlass_edge_requests_total counter\n");
    out.push_str(
        "# TYPE windlass_edge_maintenance_answers_total counter\n# TYPE windlass_edge_rate_limited_total counter\n",
    );
    out.push_str("# TYPE windlass_edge_request_duration_seconds histogram\n");
    for ((service, pool), metrics) in shared.registry.all_metrics() {
        crate::metrics::render(&mut out, &service, &pool, &metrics.snapshot());
    }
    // Endpoints as the current table counts them (a removed endpoint's series end).
    out.push_str(
        "# HELP windlass_edge_endpoint_requests_total Answers by service, endpoint and status class.\n\
         # TYPE windlass_edge_endpoint_requests_total counter\n\
         # HELP windlass_edge_endpoint_latency_under_total Answers that took at most le_ms milliseconds.\n\
         # TYPE windlass_edge_endpoint_latency_under_total counter\n",
    );
    let table = shared.table.load_full();
    for service in &table.services {
        if let Some(endpoints) = &service.endpoints {
            crate::endpoints::render(&mut out, &service.name, &endpoints.snapshot());
        }
    }
    shared.connections.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
