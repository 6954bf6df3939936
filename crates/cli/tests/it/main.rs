//! The `windlass` binary as a user runs it: real process, real files, exit codes and output.

// Tests: their tasks live as long as the test.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod access;
mod alerting;
mod canary;
mod contract;
mod db;
mod deploys;
mod docker;
mod harness;
mod init;
mod injection;
mod leaks;
mod output;
mod platform;
mod policy;
mod private_files;
mod readme;
mod recovery;
mod redaction;
mod release;
mod secrets;
mod shutdown;
mod tls;
mod validate;
