//! Where the two host imports go: the real host on wasm, the thread-local
//! [`TestHost`](crate::testing::TestHost) on native targets.
//!
//! wit-bindgen's native stubs for imports are `unreachable!()`, so native code must never reach
//! them; this module is the only place that calls an import.

use crate::log::Level;

#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: Level, message: &str) {
    crate::__bindings::coalition::plugin::host::log(level, message);
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn config(key: &str) -> Option<String> {
    crate::__bindings::coalition::plugin::host::config(key)
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn log(level: Level, message: &str) {
    crate::testing::host_log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn config(key: &str) -> Option<String> {
    crate::testing::host_config(key)
}
