//! HTTP-level tests of the host: one binary, each test run against SQLite and PostgreSQL.

mod helpers;

mod health;
