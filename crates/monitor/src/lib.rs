//! The monitor inside `windlass server` (SPEC §3.5): probes, SLO accounting from the edge's
//! request counts, and (later) alerting, on-call and incidents. The edge stays the one health
//! source for failover; the monitor records and alerts on what the edge decided.

pub mod alert;
pub mod incident;
pub mod oncall;
pub mod probe;
pub mod slo;
