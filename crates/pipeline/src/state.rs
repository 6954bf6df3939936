//! What runs where, per environment: for each service, its colors (sets of instances started by
//! one deploy from one artifact), which color is live, and when a warm color retires. Kept as one
//! JSON document per environment in the store, written whole after every change, so a crash
//! leaves either the state before a change or after it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use windlass_store::Store;

use crate::artifacts::Artifact;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvState {
    pub services: BTreeMap<String, ServiceState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    /// The color the edge sends this service's traffic to.
    pub live: Option<String>,
    pub colors: BTreeMap<String, ColorState>,
    /// The standby instances Windlass runs in the edge's secondary pool (`failover.instances`),
    /// brought to the live build by every deploy; absent for static or no secondaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<ColorState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColorState {
    /// The deploy that started these instances.
    pub deploy_id: String,
    /// The deploy whose config snapshot describes how they run (a rollback redeploy runs an old
    /// deploy's config).
    pub config_deploy: String,
    pub artifact: Artifact,
    pub instances: Vec<InstanceRef>,
    /// A color out of rotation kept warm for instant rollback; stopped after this (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire_at_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRef {
    pub id: String,
    pub address: SocketAddr,
}

pub fn other_color(color: &str) -> &'static str {
    if color == "blue" { "green" } else { "blue" }
}

fn key(environment: &str) -> String {
    format!("env-state/{environment}")
}

impl EnvState {
    pub async fn load(store: &dyn Store, environment: &str) -> Result<Self, crate::DeployError> {
        match store.setting(&key(environment)).await? {
            Some(text) => serde_json::from_str(&text).map_err(|err| {
                crate::DeployError::Corrupt(format!("the recorded state of `{environment}` is unreadable: {err}"))
            }),
            None => Ok(EnvState::default()),
        }
    }

    pub async fn save(&self, store: &dyn Store, environment: &str) -> Result<(), crate::DeployError> {
        let text = serde_json::to_string(self)
            .map_err(|err| crate::DeployError::Corrupt(format!("cannot encode the state: {err}")))?;
        store.set_setting(&key(environment), &text).await?;
        Ok(())
    }

    /// The live color's record of a service.
    pub fn live(&self, service: &str) -> Option<(&str, &ColorState)> {
        let state = self.services.get(service)?;
        let color = state.live.as_deref()?;
        Some((color, state.colors.get(color)?))
    }
}
