//! The process: wiring the layers together, serving, the command line and the
//! demo coalition.
//!
//! - [`server`]: building the state, starting and gracefully stopping the HTTP server.
//! - [`cli`]: the `coalition` command line (serve, admin, members, plugins, settlement, jobs).
//! - [`demo`]: the demo coalition seeded by `coalition serve --demo`.

pub mod cli;
pub mod demo;
pub mod server;
