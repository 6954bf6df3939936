//! `GET /slo/{env}`: every objective's figures now. The items mirror the monitor's SLO report
//! field for field (the server converts into them).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A length of time as the monitor's objectives carry it (Rust's `Duration` shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Span {
    pub secs: u64,
    pub nanos: u32,
}

/// The objectives of one service (from `[slo.<service>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Objective {
    pub service: String,
    /// The share of requests that must be answered without a server error (0.999).
    pub availability: Option<f64>,
    /// The highest acceptable share of errors; the budget when `availability` is not set.
    pub error_rate: Option<f64>,
    pub p95: Option<Span>,
    pub p99: Option<Span>,
    /// The period the error budget covers.
    pub window: Span,
}

/// Where a window's good/bad counts came from (`none`: too few samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Edge,
    Probes,
    None,
}

/// Good and bad events over one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WindowCounts {
    pub window_secs: u64,
    pub source: Source,
    pub total: u64,
    pub bad: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BudgetLeft {
    pub window_secs: u64,
    /// The whole budget of this window in minutes of full outage.
    pub budget_minutes: f64,
    /// The share of the budget not yet spent (negative when overspent); `None`: no data.
    pub share_left: Option<f64>,
    pub minutes_left: Option<f64>,
    pub counts: WindowCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BurnRate {
    pub window_secs: u64,
    pub rate: Option<f64>,
    pub counts: WindowCounts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LatencyFigure {
    /// `p95` or `p99`.
    pub quantile: String,
    pub target_ms: f64,
    /// Over the SLO window; `None`: no timed request.
    pub observed_ms: Option<f64>,
    pub met: Option<bool>,
    /// The share of requests slower than the target.
    pub slower_share: Option<f64>,
}

/// A burn-rate alert's severity: `critical` pages, `warning` opens a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BurnSeverity {
    Critical,
    Warning,
}

/// A burn-rate alert firing now: both windows above `factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BurnAlert {
    pub severity: BurnSeverity,
    pub factor: f64,
    pub long_secs: u64,
    pub short_secs: u64,
    pub long_rate: f64,
    pub short_rate: f64,
}

/// Everything `windlass slo` shows for a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ServiceReport {
    pub objective: Objective,
    /// Over the SLO window.
    pub sli: Option<f64>,
    pub window: WindowCounts,
    pub maintenance: u64,
    pub rate_limited: u64,
    pub budget: Vec<BudgetLeft>,
    pub burn_rates: Vec<BurnRate>,
    pub latency: Vec<LatencyFigure>,
    /// The burn-rate alerts firing now.
    pub alerts: Vec<BurnAlert>,
}

/// The SLO report of an environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SloReport {
    pub environment: String,
    pub at: String,
    pub services: Vec<ServiceReport>,
}
