//! `GET /status`: every environment's services, pools, instances, lock and last deploy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::deploys::Deploy;
use crate::locks::LockSummary;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Status {
    /// Whether the edge's admin API answered (without it, health and maintenance are null).
    pub edge_reachable: bool,
    pub environments: BTreeMap<String, EnvironmentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentStatus {
    pub services: BTreeMap<String, ServiceStatus>,
    pub lock: Option<LockSummary>,
    pub last_deploy: Option<Deploy>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    /// The color that takes traffic.
    pub live: Option<String>,
    pub maintenance: Option<bool>,
    pub failed_over: Option<bool>,
    /// Each pool by color; a managed secondary shows as `secondary`.
    pub colors: BTreeMap<String, PoolStatus>,
    /// The failover secondary and whether failing over would serve the live build.
    pub secondary: Option<SecondaryDrift>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolStatus {
    pub deploy: String,
    /// The build's short hash.
    pub build: String,
    pub version: Option<String>,
    /// Redacted; null when the environment's secrets cannot be read.
    pub command: Option<String>,
    /// When a warm pool is retired.
    pub retire_at: Option<String>,
    pub instances: Vec<InstanceStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    pub id: String,
    pub address: String,
    /// `starting`, `running`, `backing_off`, `exited`, `crash_loop`, `stopped`, `lost`; null
    /// when the runtime does not know it.
    pub state: Option<String>,
    pub restarts: Option<u32>,
    /// As the edge's health checks see it; null when unknown.
    pub healthy: Option<bool>,
}

/// A service's failover secondary: deployed by Windlass with the primary (managed) or a static
/// set of addresses Windlass never updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SecondaryDrift {
    Managed(ManagedSecondary),
    Static(StaticSecondary),
}

impl SecondaryDrift {
    pub fn warning(&self) -> Option<&str> {
        match self {
            SecondaryDrift::Managed(managed) => managed.warning.as_deref(),
            SecondaryDrift::Static(fixed) => Some(&fixed.warning),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ManagedSecondary {
    /// Always true.
    pub deployed_by_windlass: bool,
    pub build: Option<String>,
    pub deploy: Option<String>,
    /// It runs the live build.
    pub in_step: bool,
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct StaticSecondary {
    pub addresses: Vec<String>,
    /// Always false.
    pub deployed_by_windlass: bool,
    pub warning: String,
}
