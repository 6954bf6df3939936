//! The `windlass` binary as a user runs it: real process, real files, exit codes and output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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
mod platform;
mod private_files;
mod readme;
mod recovery;
mod redaction;
mod release;
mod secrets;
mod validate;
