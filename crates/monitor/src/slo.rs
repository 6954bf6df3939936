//! SLO accounting: per-minute rollups of the edge's counts, error budgets and burn rates.
