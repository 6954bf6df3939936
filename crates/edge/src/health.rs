//! Active health checks, and failover built on them: the edge is the one health source for
//! failover (the monitor records and alerts on the events, it never checks a second time).
//!
//! Every service with a health spec is checked each interval; an instance becomes unhealthy after
//! `unhealthy_after` failed checks in a row and healthy again after `healthy_after` passes. A
//! service with a secondary pool moves there when every primary instance has failed
//! `after_failures` checks in a row, and back when one has passed `failback_after` (unless
//! failover is manual).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::shared::Shared;
use crate::spec::SECONDARY_POOL;
use crate::table::Instance;

/// How often the checker looks for services that are due.
const TICK: Duration = Duration::from_millis(50);

pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut next_due: HashMap<String, Instant> = HashMap::new();
    let mut running: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
    loop {
        let table = shared.table.load_full();
        let now = Instant::now();
        for (name, spec) in &table.spec.services {
            let Some(health) = &spec.health else { continue };
            if next_due.get(name).is_some_and(|due| *due > now)
                || running.get(name).is_some_and(|task| !task.is_finished())
            {
                continue;
            }
            next_due.insert(name.clone(), now + Duration::from_millis(health.interval_ms.max(10)));
            let shared = shared.clone();
            let name = name.clone();
            // The edge's, not the control plane's: one check, owned by the health loop's map.
            #[allow(clippy::disallowed_methods)]
            running.insert(name.clone(), tokio::spawn(async move { check_service(&shared, &name).await }));
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {
                for task in running.values() {
                    task.abort();
                }
                return;
            }
        }
    }
}

async fn check_service(shared: &Arc<Shared>, name: &str) {
    let table = shared.table.load_full();
    let (Some(service), Some(spec)) = (table.service(name), table.spec.services.get(name)) else { return };
    let Some(health) = &spec.health else { return };
    let timeout = Duration::from_millis(health.timeout_ms);
    let checks = service.pools.iter().flat_map(|pool| pool.instances.iter()).map(|instance| {
        let instance = instance.clone();
        let path = health.path.clone();
        async move {
            let passed = probe(&instance, &path, timeout).await;
            (instance, passed)
        }
    });
    let results = futures_util::future::join_all(checks).await;
    for (instance, passed) in results {
        record_check(&instance, passed, health.healthy_after, health.unhealthy_after);
    }
    decide_failover(shared, name);
}

fn record_check(instance: &Instance, passed: bool, healthy_after: u32, unhealthy_after: u32) {
    if passed {
        instance.check_failures.store(0, Ordering::Relaxed);
        let passes = instance.check_passes.fetch_add(1, Ordering::Relaxed) + 1;
        if passes >= healthy_after {
            instance.healthy.store(true, Ordering::Relaxed);
        }
    } else {
        instance.check_passes.store(0, Ordering::Relaxed);
        let failures = instance.check_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= unhealthy_after {
            instance.healthy.store(false, Ordering::Relaxed);
        }
    }
}

fn decide_failover(shared: &Shared, name: &str) {
    let table = shared.table.load_full();
    let (Some(service), Some(spec)) = (table.service(name), table.spec.services.get(name)) else { return };
    let Some(failover) = &spec.failover else { return };
    if !failover.automatic || service.secondary.is_none() {
        return;
    }
    let primary: Vec<&Arc<Instance>> = service.weighted().flat_map(|(_, p)| p.instances.iter()).collect();
    if primary.is_empty() {
        return;
    }
    let primary_down = primary.iter().all(|i| i.check_failures.load(Ordering::Relaxed) >= failover.after_failures);
    let primary_back = primary.iter().any(|i| i.check_passes.load(Ordering::Relaxed) >= failover.failback_after);
    // Failing over to a secondary that has no healthy instance would trade a failing primary for
    // certain failure (a managed secondary between deploys, or one that is down as well).
    let secondary_up = service
        .secondary
        .and_then(|index| service.pools.get(index))
        .is_some_and(|pool| pool.instances.iter().any(|i| i.healthy.load(Ordering::Relaxed)));
    if !service.failed_over && primary_down && !secondary_up {
        tracing::debug!(service = name, "the primary is down but the secondary has no healthy instance; no failover");
        return;
    }
    let (move_to_secondary, reason) = if !service.failed_over && primary_down {
        (true, format!("every primary instance failed {} health checks in a row", failover.after_failures))
    } else if service.failed_over && primary_back {
        (false, format!("a primary instance passed {} health checks in a row", failover.failback_after))
    } else {
        return;
    };
    let moved = shared.update(|edge| {
        if let Some(service) = edge.services.get_mut(name) {
            service.failed_over = move_to_secondary;
        }
        Ok(())
    });
    match moved {
        Ok(_) => shared.record_event(
            name,
            if move_to_secondary { "failover" } else { "failback" },
            format!("traffic moved to {}: {reason}", if move_to_secondary { SECONDARY_POOL } else { "primary" }),
        ),
        Err(err) => tracing::error!(service = name, "failover could not be applied: {err}"),
    }
}

/// One check: `GET path` answered 2xx within the timeout (through the one outgoing client,
/// `windlass-http`; the proxy's upstream hot path keeps its own pooled client).
pub async fn probe(instance: &Instance, path: &str, timeout: Duration) -> bool {
    let reply = windlass_http::send(windlass_http::Request {
        method: "GET",
        address: instance.address,
        host: "",
        path,
        headers: &[("user-agent", "windlass-edge-health")],
        body: None,
        timeout,
    })
    .await;
    matches!(reply, Ok(reply) if (200..300).contains(&reply.status))
}
