//! Integration tests against the real compiled components in `target/plugins/`
//! (built by `cargo xtask build-plugins`; a missing fixture fails the test, it never skips).

mod helpers;

mod examples;
mod hostile;
mod lifecycle;
mod telemetry;
mod versions;
