//! The monitor's probes inside the server: for each managed environment, the `[probes]` of the
//! config plus a health probe of every live instance (`windlass_monitor::probe::probes_for`),
//! rebuilt when a deploy changes the instances or the config changes. A probe turning down (or
//! back up) is recorded as a `probe.down` / `probe.up` event and handed to the alert engine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::watch;
use windlass_monitor::probe::{Health, ProbeSpec, ProbeStatus, Prober, Transition, probes_for};
use windlass_pipeline::Deployer;

use crate::courier::Courier;
use windlass_pipeline::state::EnvState;
use windlass_store::{NewEvent, Store};

/// How often the wanted probes are recomputed (a deploy's new instances are probed this soon).
const RECONCILE: std::time::Duration = std::time::Duration::from_secs(5);

/// The probers running now, by environment.
#[derive(Clone, Default)]
pub struct Probes {
    running: Arc<Mutex<BTreeMap<String, Running>>>,
}

struct Running {
    prober: Prober,
    /// What the probes were built from: the config (the same `Arc` while its text is unchanged)
    /// and the live instances. A change of either rebuilds them.
    config: Arc<windlass_config::Config>,
    instances: BTreeMap<String, Vec<SocketAddr>>,
    /// Dropping it stops the prober's loop.
    _stop: watch::Sender<bool>,
}

impl Probes {
    /// The latest state of an environment's probes (none: not probed by this server).
    pub fn statuses(&self, environment: &str) -> Option<Vec<ProbeStatus>> {
        self.prober(environment).map(|prober| prober.statuses())
    }

    fn prober(&self, environment: &str) -> Option<Prober> {
        let running = self.running.lock().ok()?;
        running.get(environment).map(|r| r.prober.clone())
    }
}

/// Each live instance's address, by service.
fn live_instances(state: &EnvState) -> BTreeMap<String, Vec<SocketAddr>> {
    state
        .services
        .iter()
        .filter_map(|(service, s)| {
            let (_, live) = s.live.as_ref().and_then(|color| s.colors.get_key_value(color))?;
            Some((service.clone(), live.instances.iter().map(|i| i.address).collect()))
        })
        .collect()
}

/// Keeps every managed environment's probes matching the config and the live instances.
pub(crate) async fn run(
    deployer: Arc<Deployer>,
    store: Arc<dyn Store>,
    environments: Vec<String>,
    probes: Probes,
    courier: Arc<Courier>,
) {
    loop {
        for environment in &environments {
            if let Err(problem) = reconcile(&deployer, &store, environment, &probes, &courier).await {
                tracing::warn!(environment, "probes: {problem}");
            }
            if let Err(err) = record_samples(&*store, environment, &probes, deployer.clock.now()).await {
                tracing::warn!(environment, %err, "probes: cannot record their results");
            }
        }
        tokio::time::sleep(RECONCILE).await;
    }
}

/// Adds the results each service's probes took since the last call to the current minute's
/// sample in the store: an idle service's SLO counts them (`windlass_monitor::slo`). Results
/// that cannot be written are kept for the next call.
async fn record_samples(
    store: &dyn Store,
    environment: &str,
    probes: &Probes,
    now: jiff::Timestamp,
) -> Result<(), windlass_store::StoreError> {
    let Some(prober) = probes.prober(environment) else { return Ok(()) };
    let results = prober.take_service_results();
    if results.is_empty() {
        return Ok(());
    }
    let minute = windlass_monitor::slo::floor_to(now, 60);
    // Every entry counts at least one check: the prober makes one when a check finishes.
    let samples: Vec<windlass_store::ProbeSampleRow> = results
        .iter()
        .map(|(service, r)| windlass_store::ProbeSampleRow {
            service: service.clone(),
            minute,
            successes: r.successes,
            failures: r.failures,
        })
        .collect();
    let written = store.add_probe_samples(environment, &samples).await;
    if written.is_err() {
        prober.put_back_service_results(results);
    }
    written
}

async fn reconcile(
    deployer: &Deployer,
    store: &Arc<dyn Store>,
    environment: &str,
    probes: &Probes,
    courier: &Arc<Courier>,
) -> Result<(), String> {
    // The probes follow from the config and the live instances: unchanged, nothing to do (and
    // no secrets backend asked for the variables every few seconds).
    let config = deployer.shared_config().map_err(|e| e.to_string())?;
    let state = EnvState::load(&*deployer.store, environment).await.map_err(|e| e.to_string())?;
    let instances = live_instances(&state);
    let unchanged = probes.running.lock().ok().is_some_and(|r| {
        r.get(environment).is_some_and(|r| Arc::ptr_eq(&r.config, &config) && r.instances == instances)
    });
    if unchanged {
        return Ok(());
    }
    let variables = deployer.variables(&config, environment).await.map_err(|e| e.to_string())?;
    let builtins = BTreeMap::from([("WINDLASS_ENV".to_owned(), environment.to_owned())]);
    let list = probes_for(&config, environment, &instances, &|setting| variables.render(setting, &builtins));
    for problem in &list.problems {
        tracing::warn!(environment, "probe not started: {}", variables.redact(problem));
    }
    let count = list.probes.len();
    // A rebuilt prober carries on from the old one's states (a deploy's new instances do not
    // reset the counts of every other probe), and what the old one knew decides what is news.
    let previous: Vec<ProbeStatus> =
        probes.running.lock().ok().and_then(|r| r.get(environment).map(|r| r.prober.statuses())).unwrap_or_default();
    let known: BTreeMap<String, Health> = previous.iter().map(|s| (s.name.clone(), s.health)).collect();
    let redactor = variables.redactor().clone();
    let (prober, stop) = start(list.probes, store.clone(), environment, known, courier.clone(), &previous, redactor)?;
    if let Ok(mut all) = probes.running.lock() {
        let replaced =
            all.insert(environment.to_owned(), Running { prober: prober.clone(), config, instances, _stop: stop });
        // The old prober's results not yet recorded are recorded with the new one's.
        if let Some(replaced) = replaced {
            prober.put_back_service_results(replaced.prober.take_service_results());
        }
    }
    tracing::info!(environment, probes = count, "probes (re)started");
    Ok(())
}

fn start(
    specs: Vec<ProbeSpec>,
    store: Arc<dyn Store>,
    environment: &str,
    known: BTreeMap<String, Health>,
    courier: Arc<Courier>,
    previous: &[ProbeStatus],
    redactor: windlass_secrets::Redactor,
) -> Result<(Prober, watch::Sender<bool>), String> {
    // Every reason (a command probe's last output line, an error quoting a URL) is redacted by
    // the prober before it is kept, logged, recorded as an event or handed to the alert engine.
    let (prober, mut transitions) =
        Prober::redacting(specs, courier.deployer.clock.clone(), redactor).map_err(|e| e.to_string())?;
    prober.carry_over(previous);
    let (stop, stopped) = watch::channel(false);
    let looping = prober.clone();
    // The probes run on a thread of their own with a single-threaded runtime: thousands of
    // checks a minute then wake no other thread (a multi-thread runtime hands each check
    // between workers, and the futex and timer wake-ups cost more than the checks).
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("windlass-probes".into())
        .spawn(move || runtime.block_on(looping.run(stopped)))
        .map_err(|e| format!("cannot start the probes' thread: {e}"))?;
    let environment = environment.to_owned();
    // Ends when the prober is replaced (its transitions' channel closes), or with the server.
    let tasks = courier.deployer.tasks.clone();
    tasks.spawn_loop("probe transitions", async move {
        while let Some(mut transition) = transitions.recv().await {
            if transition.from == Health::Unknown
                && let Some(before) = known.get(&transition.probe)
            {
                transition.from = *before;
            }
            transition.environment.get_or_insert_with(|| environment.clone());
            record(&*store, &environment, &transition).await;
            // The alert engine de-duplicates: a probe found down again after a rebuild does not
            // page twice.
            match courier.alerting.with(|engine, _| engine.observe(&transition)).await {
                Ok(dispatches) => courier.deliver(dispatches),
                Err(err) => tracing::warn!(%err, "alerting: cannot save the engine's state"),
            }
        }
    });
    Ok((prober, stop))
}

/// A probe that went down, or came back up after being down, as an audit event. A probe's first
/// verdict (unknown → up) is not news, nor is a verdict the probe had before a rebuild.
async fn record(store: &dyn Store, environment: &str, transition: &Transition) {
    let kind = match (transition.from, transition.to) {
        (Health::Down, Health::Down) => return,
        (_, Health::Down) => "probe.down",
        (Health::Down, Health::Up) => "probe.up",
        _ => return,
    };
    let message = match transition.to {
        Health::Down => {
            format!("{} is down after {} failed checks: {}", transition.probe, transition.after, transition.reason)
        }
        _ => format!("{} is up again after {} passed checks", transition.probe, transition.after),
    };
    let event = NewEvent {
        actor: "windlass".into(),
        environment: Some(transition.environment.clone().unwrap_or_else(|| environment.to_owned())),
        kind: kind.into(),
        subject: Some(transition.probe.clone()),
        message,
        data: json!({
            "probe": transition.probe,
            "service": transition.service,
            "severity": format!("{:?}", transition.severity).to_lowercase(),
            "reason": transition.reason,
            "at": transition.at.to_string(),
        })
        .to_string(),
    };
    if let Err(err) = store.record_event(&event).await {
        tracing::warn!(%err, "cannot record a probe's change");
    }
}

/// One probe's state as the API shows it, serialized straight from the state: a listing of
/// 10,000 probes builds no tree of values (which would raise the server's memory for good,
/// as freed heap is seldom given back to the system).
#[derive(serde::Serialize)]
pub struct StatusView<'a> {
    name: &'a str,
    kind: &'a str,
    health: &'a str,
    #[serde(serialize_with = "as_text")]
    since: Option<jiff::Timestamp>,
    service: Option<&'a str>,
    #[serde(serialize_with = "as_text")]
    last_checked: Option<jiff::Timestamp>,
    last_ok: Option<bool>,
    last_reason: &'a str,
    last_latency_ms: u64,
    cert_days_left: Option<i64>,
    consecutive_failures: u32,
    failure_threshold: u32,
    checks: u64,
}

impl<'a> From<&'a ProbeStatus> for StatusView<'a> {
    fn from(status: &'a ProbeStatus) -> Self {
        StatusView {
            name: &status.name,
            kind: status.kind,
            health: status.health.as_str(),
            since: status.since,
            service: status.service.as_deref(),
            last_checked: status.last_checked,
            last_ok: status.last_ok,
            last_reason: &status.last_reason,
            last_latency_ms: status.last_latency_ms,
            cert_days_left: status.cert_days_left,
            consecutive_failures: status.consecutive_failures,
            failure_threshold: status.failure_threshold,
            checks: status.checks,
        }
    }
}

fn as_text<S: serde::Serializer>(time: &Option<jiff::Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.collect_str(time),
        None => serializer.serialize_none(),
    }
}
