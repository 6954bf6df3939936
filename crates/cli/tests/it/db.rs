//! `windlass db ...` end to end (being built).
