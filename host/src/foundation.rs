//! The floor every other layer stands on: the database, the clock and its calendar, the error
//! every operation returns. Nothing here knows about HTTP, the domain or the configuration file.
//!
//! - [`store`]: the database connection (SQLite or PostgreSQL by URL), pools, migrations, ids
//!   and row locks.
//! - [`clock`]: the injected clock (tests move time instead of sleeping) and the calendar.
//! - [`ids`]: checking ids that arrive in paths.
//! - [`error`]: the domain error: a stable code, a kind and a detail, without an HTTP status.

pub mod clock;
pub mod error;
pub mod ids;
pub mod store;
