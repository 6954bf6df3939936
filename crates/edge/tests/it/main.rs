//! The edge with real demo-service processes behind it, on loopback.

// Tests: their tasks live as long as the test.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin_security;
mod bad_input;
mod counters;
mod endpoints;
mod failover;
mod framing;
mod harness;
mod limits;
mod process;
mod protocols;
mod routing;
mod traffic_control;
