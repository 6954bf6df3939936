//! `windlass secrets ...` end to end (being built).
