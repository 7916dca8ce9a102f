//! HTTP-level tests of the host: one binary, each test run against SQLite and PostgreSQL.

mod fixtures;
mod helpers;

mod authz_matrix;
mod bad_input;
mod brands;
mod budgets;
mod cli;
mod connections;
mod counter;
mod demo_kpis;
mod health;
mod journeys;
mod keys;
mod kpis;
mod ledger;
mod ledger_props;
mod lifecycle;
mod members;
mod membership;
mod openapi;
mod pending_points;
mod perks;
mod plugins;
mod programme;
mod purchases;
mod referrals;
mod settlement;
mod settlement_parked;
mod stages;
mod stored_value;
mod tiers;
mod webhooks;
mod wit_versions;
