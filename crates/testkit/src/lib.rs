//! Helpers for tests that use real parts: processes started from the real binaries, a PostgreSQL
//! database of their own, HTTP on loopback.
//!
//! Nothing here fakes a component; it only starts, reaches and cleans up real ones. Timeouts in
//! these helpers only turn a hang into a clear failure: no test asserts how long anything took.

// Test helpers: their tasks live as long as the test that starts them.
#![allow(clippy::disallowed_methods)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod http;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod smtp;
pub mod tools;
pub mod wait;

pub use tempfile::TempDir;
pub use wait::{Wait, eventually};

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> TempDir {
    tempfile::Builder::new().prefix("windlass-test-").tempdir().expect("create a temporary directory")
}

/// The path of a binary built from this workspace (`windlass`, `windlass-demo`), next to the
/// test executable's `deps/` directory.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.is_file(), "{} is not built; run `cargo build --workspace` first", path.display());
    path
}
