//! From `windlass.toml` to the edge's first state and settings, for `windlass edge --config`:
//! each service's routes, its static upstreams as pool `blue`, its failover secondaries as pool
//! `secondary`, its health checks and rate limits.

use std::net::IpAddr;

use windlass_config::{Config, FailoverMode, RateLimit};

use crate::shared::{Settings, default_page};
use crate::spec::{
    EdgeSpec, EndpointSpec, FailoverSpec, HealthSpec, PoolSpec, RateLimitSpec, RouteSpec, SECONDARY_POOL, ServiceSpec,
};

fn millis(duration: windlass_config::units::Duration) -> u64 {
    u64::try_from(duration.as_std().as_millis()).unwrap_or(u64::MAX)
}

fn per_second(rate: &windlass_config::units::Rate) -> f64 {
    f64::from(rate.count) / rate.per.as_std().as_secs_f64()
}

fn rate_limit(limit: &RateLimit) -> RateLimitSpec {
    RateLimitSpec {
        per_client_per_sec: limit.per_client.as_ref().map(per_second),
        per_route_per_sec: limit.per_route.as_ref().map(per_second),
        burst: limit.burst,
    }
}

/// The edge state a config describes for `environment`.
pub fn spec_from_config(config: &Config, environment: &str) -> EdgeSpec {
    let mut spec = EdgeSpec::default();
    for name in config.services.keys() {
        let Some(service) = config.service_in(environment, name) else { continue };
        let mut pools = std::collections::BTreeMap::new();
        if !service.upstreams.is_empty() {
            let instances = service.upstreams.iter().filter_map(|a| a.value.parse().ok()).collect();
            pools.insert("blue".to_owned(), PoolSpec { instances, weight: 100 });
        }
        if let Some(failover) = &service.failover {
            let instances = failover.secondary.iter().filter_map(|a| a.value.parse().ok()).collect();
            pools.insert(SECONDARY_POOL.to_owned(), PoolSpec { instances, weight: 0 });
        }
        spec.services.insert(
            name.clone(),
            ServiceSpec {
                routes: service
                    .routes
                    .iter()
                    .map(|r| RouteSpec { host: r.host.clone(), path: r.path.clone() })
                    .collect(),
                pools,
                maintenance: false,
                health: service.health.as_ref().map(|h| HealthSpec {
                    path: h.path.clone(),
                    interval_ms: millis(h.interval),
                    timeout_ms: millis(h.timeout),
                    healthy_after: h.healthy_after,
                    unhealthy_after: h.unhealthy_after,
                }),
                failover: service.failover.as_ref().map(|f| FailoverSpec {
                    after_failures: f.after_failures,
                    failback_after: f.failback_after,
                    automatic: f.mode == FailoverMode::Automatic,
                }),
                failed_over: false,
                rate_limit: service.rate_limit.as_ref().or(config.edge.rate_limit.as_ref()).map(rate_limit),
                endpoints: service
                    .endpoints
                    .iter()
                    .map(|e| EndpointSpec {
                        name: e.name.value.clone(),
                        path: e.path.clone(),
                        methods: e.methods.clone(),
                    })
                    .collect(),
                thresholds_ms: windlass_config::latency_thresholds_ms(&service, config.slo.get(name)),
            },
        );
    }
    spec
}

/// Why `[edge]` cannot be turned into the edge's settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the maintenance page {path}: {source}")]
    MaintenancePage { path: String, source: std::io::Error },
}

/// The edge's settings from `[edge]`; a maintenance page file is read here (an error names it).
pub fn settings_from_config(config: &Config, admin_token: String) -> Result<Settings, SettingsError> {
    let edge = &config.edge;
    let maintenance = &edge.maintenance;
    let page = match &maintenance.page {
        Some(file) => {
            let path = windlass_config::config_dir(config.source.path()).join(file);
            std::fs::read_to_string(&path)
                .map_err(|source| SettingsError::MaintenancePage { path: path.display().to_string(), source })?
        }
        None => default_page(&maintenance.message),
    };
    let allow_networks = maintenance
        .allow
        .cidrs
        .iter()
        .filter_map(|cidr| {
            let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
            let address: IpAddr = address.parse().ok()?;
            let max = if address.is_ipv4() { 32 } else { 128 };
            Some((address, if prefix.is_empty() { max } else { prefix.parse().ok()? }))
        })
        .collect();
    Ok(Settings {
        admin_token,
        sticky_cookie: edge.sticky_cookie.clone(),
        sticky_header: edge.sticky_header.as_ref().map(|h| h.to_ascii_lowercase()),
        connect_timeout: edge.connect_timeout.as_std(),
        upstream_timeout: edge.upstream_timeout.as_std(),
        max_header_bytes: usize::try_from(edge.max_header_bytes.0).unwrap_or(usize::MAX),
        max_headers: edge.max_headers as usize,
        maintenance_html: page,
        maintenance_message: maintenance.message.clone(),
        retry_after: maintenance.retry_after.as_std(),
        allow_header: maintenance.allow.header.as_ref().map(|h| h.to_ascii_lowercase()),
        allow_cookie: maintenance.allow.cookie.clone(),
        allow_networks,
        drain_timeout: edge.drain_timeout.as_std(),
        access_log: edge.access_log,
        max_upstream_per_connection: edge.max_upstream_per_connection as usize,
        limits: limits_from_config(&edge.connections),
        ..Settings::new(String::new())
    })
}

/// The connection limits of `[edge]` and `[edge.http2]` (ranges were checked when decoding).
fn limits_from_config(connections: &windlass_config::Connections) -> crate::limits::Limits {
    let h2 = &connections.http2;
    let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    crate::limits::Limits {
        header_read_timeout: connections.header_read_timeout.as_std(),
        keepalive_timeout: connections.keepalive_timeout.as_std(),
        tls_handshake_timeout: connections.tls_handshake_timeout.as_std(),
        max_connections: connections.max_connections.map(count),
        max_connections_per_ip: connections.max_connections_per_ip.map(count),
        http2: crate::limits::Http2Limits {
            max_concurrent_streams: h2.max_concurrent_streams,
            max_pending_accept_reset_streams: count(h2.max_pending_accept_reset_streams),
            max_local_error_reset_streams: count(h2.max_local_error_reset_streams),
            keepalive_interval: h2.keepalive_interval.map(|d| d.as_std()),
            keepalive_timeout: h2.keepalive_timeout.as_std(),
            max_frame_size: u32::try_from(h2.max_frame_size.0).unwrap_or(16_777_215),
        },
        admin: crate::limits::AdminLimits::default(),
    }
}
