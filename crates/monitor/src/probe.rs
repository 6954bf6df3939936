//! Probes: HTTP(S), TCP, PostgreSQL, Redis, command and metrics scrapes, on a schedule.
