//! One edge serves every environment a server manages, and the edge knows services by name: two
//! environments running a service of the same name would share one edge service (routes, pools,
//! weights). A deploy that would do that is refused before anything changes, until each
//! environment has its own edge and server (`--env`).
//!
//! Read-only: this only decides; the caller refuses.

use crate::deploy::Deployer;
use crate::state::EnvState;

/// The refusal of a deploy to `environment` when a service of the same name runs live in
/// another environment in `managed` (the environments behind the same edge); none when it may
/// go ahead (including when the config or another environment's state cannot be read: the
/// deploy then finds that itself).
pub async fn conflict(deployer: &Deployer, managed: &[String], environment: &str) -> Option<String> {
    if managed.len() < 2 {
        return None;
    }
    let config = deployer.shared_config().ok()?;
    let ours: Vec<&String> = config.services.keys().filter(|s| config.service_in(environment, s).is_some()).collect();
    for other in managed.iter().filter(|e| e.as_str() != environment) {
        let Ok(theirs) = EnvState::load(&*deployer.store, other).await else { continue };
        let taken = theirs.services.iter().find(|(name, s)| s.live.is_some() && ours.contains(name));
        if let Some((service, _)) = taken {
            return Some(format!(
                "`{service}` of `{other}` runs behind this server's edge, which knows services by name: a deploy to `{environment}` would take it over. Give each environment its own edge and server (`windlass edge --env {environment}`, `windlass server --env {environment}`)"
            ));
        }
    }
    None
}
