//! The `windlass` binary as a user runs it: real process, real files, exit codes and output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod init;
mod readme;
mod validate;
