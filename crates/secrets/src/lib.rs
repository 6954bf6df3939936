//! Secrets (being built).
