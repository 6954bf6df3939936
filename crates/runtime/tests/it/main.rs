//! The process runtime with real shims and real demo services on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod harness;
mod lifecycle;
mod logs;
mod supervision;
