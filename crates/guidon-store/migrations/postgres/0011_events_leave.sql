-- Experiment events moved to their own store (crate guidon-events: its
-- own database file on SQLite, its own ev_* tables and pool on
-- PostgreSQL). The flag store keeps only the catalogue (exp_definitions).
DROP TABLE IF EXISTS exp_conversions;
DROP TABLE IF EXISTS exp_unit_metrics;
DROP TABLE IF EXISTS exp_exposures;
DROP TABLE IF EXISTS exp_events;
DROP TABLE IF EXISTS exp_keys;
