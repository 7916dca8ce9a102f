//! Read-only configuration the platform admin sets per plugin (declared under `[config]` in
//! `plugin.toml`). Values are constant for a call.
//!
//! Keep the defaults in code equal to the manifest's `default`s, so the plugin behaves the same
//! whether or not the host passes defaults through; [`testing::check_manifest`] helps test that.
//! A value that is set but malformed is an admin error: the typed getters return
//! [`HookError::Failed`] naming the key rather than silently falling back.
//!
//! ```
//! use coalition_sdk::config;
//! # fn main() -> Result<(), coalition_sdk::HookError> {
//! let threshold_cents = config::get_i64_or("restaurant_spend_threshold_cents", 20_000)?;
//! let weekday = config::get_or("double_weekday", "monday");
//! # assert_eq!((threshold_cents, weekday.as_str()), (20_000, "monday"));
//! # Ok(()) }
//! ```
//!
//! [`testing::check_manifest`]: crate::testing::check_manifest

use crate::limits::{clip_owned, MAX_REASON_BYTES};
use crate::HookError;

/// The raw value of `key`, or `None` when the admin did not set it.
pub fn get(key: &str) -> Option<String> {
    crate::host::config(key)
}

/// The value of `key`, or `default` when unset.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_owned())
}

/// The value of `key` as an integer (`_` separators allowed), `None` when unset.
///
/// # Errors
/// [`HookError::Failed`] when the value is set but is not an `i64`.
pub fn get_i64(key: &str) -> Result<Option<i64>, HookError> {
    let Some(raw) = get(key) else {
        return Ok(None);
    };
    let digits: String = raw.trim().chars().filter(|c| *c != '_').collect();
    digits
        .parse::<i64>()
        .map(Some)
        .map_err(|_| malformed(key, &raw, "an integer"))
}

/// The value of `key` as an integer, or `default` when unset.
///
/// # Errors
/// [`HookError::Failed`] when the value is set but is not an `i64`.
pub fn get_i64_or(key: &str, default: i64) -> Result<i64, HookError> {
    Ok(get_i64(key)?.unwrap_or(default))
}

/// The value of `key` as a boolean (`true`/`false`), or `default` when unset.
///
/// # Errors
/// [`HookError::Failed`] when the value is set but is neither `true` nor `false`.
pub fn get_bool_or(key: &str, default: bool) -> Result<bool, HookError> {
    match get(key) {
        None => Ok(default),
        Some(raw) => match raw.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(malformed(key, &raw, "true or false")),
        },
    }
}

/// The value of `key` as a comma-separated list of trimmed, non-empty items; empty when unset.
pub fn get_list(key: &str) -> Vec<String> {
    get(key)
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn malformed(key: &str, raw: &str, expected: &str) -> HookError {
    HookError::Failed(clip_owned(
        format!("config {key} = {raw:?} is not {expected}"),
        MAX_REASON_BYTES,
    ))
}
