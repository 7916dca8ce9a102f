//! How people and machines reach the workflows: the HTTP API (its state, authentication,
//! idempotency keys and the mapping of domain errors to `application/problem+json`), and the web
//! console that people use on top of it.
//!
//! - [`config`]: the whole configuration from a TOML file plus `COALITION_*` overrides, which is
//!   how an operator speaks to the process; each layer owns its own section's type, and the
//!   workflows see only theirs ([`crate::workflows::Settings`]).
//! - [`api`]: the router, middleware and OpenAPI document; one file per resource under `api/`.

//! - [`console`]: server-rendered pages for admins, brands and members under `/console`; every
//!   page and action is an in-process call of the API with the signed-in key.

pub mod api;
pub mod config;
pub mod console;
