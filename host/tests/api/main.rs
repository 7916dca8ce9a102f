//! HTTP-level tests of the host: one binary, each test run against SQLite and PostgreSQL.

mod fixtures;
mod helpers;

mod health;
mod bad_input;
mod brands;
mod keys;
mod members;
mod ledger;
mod ledger_props;
mod purchases;
mod tiers;
mod plugins;
