//! Database operations (being built).
