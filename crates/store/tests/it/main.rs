//! The store's behaviour, as the control plane relies on it. Every story runs against SQLite and
//! against the real PostgreSQL that `.ci/run` starts (a database of its own per test); crash and
//! race tests use real child processes.

// Tests: their tasks live as long as the test.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod crash;
mod files;
mod stories;
