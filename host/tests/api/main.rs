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
mod health;
mod keys;
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
mod settlement;
mod settlement_parked;
mod stored_value;
mod tiers;
mod wit_versions;
