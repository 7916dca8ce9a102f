//! Logging through the host: lines are attributed to the plugin, its version and the hook.
//!
//! The host keeps at most [`MAX_LOG_LINES_PER_CALL`](crate::limits::MAX_LOG_LINES_PER_CALL)
//! lines and [`MAX_LOG_BYTES_PER_CALL`](crate::limits::MAX_LOG_BYTES_PER_CALL) bytes per call
//! and counts the rest as dropped, so log decisions, not loops. In native tests the lines go to
//! the [`TestHost`](crate::testing::TestHost).
//!
//! ```
//! coalition_sdk::log::info("birthday bonus applied");
//! coalition_sdk::log::warn(format!("unknown weekday {:?}, using monday", "mon-day"));
//! ```

/// Severity of a log line.
pub use crate::__bindings::coalition::plugin::host::LogLevel as Level;

/// Writes a line at the given level.
pub fn write(level: Level, message: impl AsRef<str>) {
    crate::host::log(level, message.as_ref());
}

/// Writes a debug line.
pub fn debug(message: impl AsRef<str>) {
    write(Level::Debug, message);
}

/// Writes an info line.
pub fn info(message: impl AsRef<str>) {
    write(Level::Info, message);
}

/// Writes a warning.
pub fn warn(message: impl AsRef<str>) {
    write(Level::Warn, message);
}

/// Writes an error line.
pub fn error(message: impl AsRef<str>) {
    write(Level::Error, message);
}
