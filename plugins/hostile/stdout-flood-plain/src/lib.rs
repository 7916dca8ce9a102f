//! TEST FIXTURE — not a plugin: `stdout-flood` built for `wasm32-unknown-unknown` (its name is
//! this crate's); see that crate's source.

#[path = "../../stdout-flood/src/lib.rs"]
mod flood;

pub use flood::*;
