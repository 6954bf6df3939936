use std::path::Path;

use windlass_config::{Strategy, load};

fn maily() -> windlass_config::Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/maily/windlass.toml");
    load(&path).unwrap_or_else(|err| match err {
        windlass_config::LoadError::Invalid { diagnostics, .. } => {
            panic!("{}", diagnostics.iter().map(|d| d.render()).collect::<String>())
        }
        other => panic!("{other}"),
    })
}

#[test]
fn the_maily_example_describes_the_platform_from_the_seeds() {
    let config = maily();
    assert_eq!(config.project.name, "maily");
    assert_eq!(config.services.keys().collect::<Vec<_>>(), ["api", "web", "ai-worker"]);
    assert_eq!(
        config.pipeline.phases.iter().map(|p| p.value.as_str()).collect::<Vec<_>>(),
        windlass_config::DEFAULT_PHASES
    );
    assert_eq!(config.services["api"].strategy, Strategy::BlueGreen);
    assert!(matches!(&config.services["web"].strategy, Strategy::Canary(steps) if steps.len() == 3));
    let failover = config.services["api"].failover.as_ref().unwrap();
    assert!(failover.secondary.iter().all(|a| a.value.starts_with("127.")), "secondaries stay on loopback");
    assert_eq!(failover.after_failures, 3);

    let slo = &config.slo["api"];
    assert_eq!(slo.availability.unwrap().ppm(), 999_000);
    assert_eq!(slo.p95.unwrap().as_std().as_millis(), 200);
    assert_eq!(slo.p99.unwrap().as_std().as_millis(), 500);
    assert_eq!(slo.error_rate.unwrap().to_string(), "0.1%");

    let escalation: Vec<u64> = config.alerts.escalation.iter().map(|l| l.after.value.as_std().as_secs() / 60).collect();
    assert_eq!(escalation, [5, 15, 30, 60]);
    assert_eq!(config.alerts.routes.len(), 3);
}

#[test]
fn environments_override_services() {
    let config = maily();
    assert_eq!(config.service_in("staging", "api").unwrap().instances, 2);
    assert_eq!(config.service_in("production", "api").unwrap().instances, 4);
    assert_eq!(config.service_in("production", "web").unwrap().instances, 2);
    assert!(config.service_in("production", "nope").is_none());
}

#[test]
fn deploy_windows_are_parsed_once_into_a_time_zone() {
    let config = maily();
    let window = config.environments["production"].deploy_window.as_ref().unwrap();
    assert!(window.is_open("2026-11-23T10:00:00Z".parse().unwrap()), "Monday 11:00 in Berlin");
    assert!(!window.is_open("2026-11-22T10:00:00Z".parse().unwrap()), "Sunday");
}
