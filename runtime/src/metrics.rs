//! Metrics through the `metrics` facade; the host installs the exporter (Prometheus).
//!
//! Per plugin, version and hook: calls, failures by kind, fuel and latency histograms, dropped
//! log lines; per plugin version: breaker state and trips; per runtime: artifact loads by source.
//!
//! Handles for the per-call series are registered when a plugin is loaded, so a call costs no
//! label allocation: install the recorder before loading plugins.

use metrics::{Counter, Histogram};

use crate::breaker::BreakerState;
use crate::model::Hook;

/// Calls started (counter; plugin, version, hook).
pub const CALLS_TOTAL: &str = "coalition_plugin_calls_total";
/// Failed calls (counter; plugin, version, hook, kind = `ErrorKind::code`).
pub const FAILURES_TOTAL: &str = "coalition_plugin_failures_total";
/// Fuel used by successful and failed calls (histogram; plugin, version, hook).
pub const FUEL_USED: &str = "coalition_plugin_fuel_used";
/// Call latency in seconds (histogram; plugin, version, hook).
pub const CALL_DURATION_SECONDS: &str = "coalition_plugin_call_duration_seconds";
/// Log lines dropped over the per-call budget (counter; plugin, version, hook).
pub const LOGS_DROPPED_TOTAL: &str = "coalition_plugin_logs_dropped_total";
/// Breaker state: 0 closed, 1 half-open, 2 open (gauge; plugin, version).
pub const BREAKER_STATE: &str = "coalition_plugin_breaker_state";
/// Breaker trips (counter; plugin, version, hook).
pub const BREAKER_TRIPS_TOTAL: &str = "coalition_plugin_breaker_trips_total";
/// Component loads by artifact source: memory, disk or compiled (counter; source).
pub const ARTIFACT_LOADS_TOTAL: &str = "coalition_plugin_artifact_loads_total";
/// Compile or artifact-load time in seconds (histogram; source).
pub const ARTIFACT_LOAD_SECONDS: &str = "coalition_plugin_artifact_load_seconds";

/// Registers descriptions of every series; call once after installing the recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(CALLS_TOTAL, "Plugin hook calls started.");
    describe_counter!(FAILURES_TOTAL, "Plugin hook calls that failed, by kind.");
    describe_histogram!(FUEL_USED, "Fuel (instructions) used per plugin call.");
    describe_histogram!(CALL_DURATION_SECONDS, Unit::Seconds, "Plugin call latency.");
    describe_counter!(
        LOGS_DROPPED_TOTAL,
        "Plugin log lines dropped over the per-call budget."
    );
    describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker: 0 closed, 1 half-open, 2 open."
    );
    describe_counter!(
        BREAKER_TRIPS_TOTAL,
        "Times a plugin version's breaker opened."
    );
    describe_counter!(ARTIFACT_LOADS_TOTAL, "Component loads by artifact source.");
    describe_histogram!(
        ARTIFACT_LOAD_SECONDS,
        Unit::Seconds,
        "Compile or artifact load time."
    );
}

/// Pre-registered per-hook series of one plugin version.
#[derive(Clone)]
pub(crate) struct HookMetrics {
    pub calls: Counter,
    /// Calls that ran guest code through this loaded version, kept beside the exported
    /// counter so the host (and tests) can read it without a metrics recorder.
    pub ran: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub fuel: Histogram,
    pub duration: Histogram,
    pub logs_dropped: Counter,
}

impl HookMetrics {
    pub fn register(plugin: &str, version: &str, hook: Hook) -> HookMetrics {
        let labels = [
            ("plugin", plugin.to_string()),
            ("version", version.to_string()),
            ("hook", hook.as_str().to_string()),
        ];
        HookMetrics {
            calls: metrics::counter!(CALLS_TOTAL, &labels),
            ran: std::sync::Arc::default(),
            fuel: metrics::histogram!(FUEL_USED, &labels),
            duration: metrics::histogram!(CALL_DURATION_SECONDS, &labels),
            logs_dropped: metrics::counter!(LOGS_DROPPED_TOTAL, &labels),
        }
    }
}

pub(crate) fn failure(plugin: &str, version: &str, hook: Hook, kind: &'static str) {
    metrics::counter!(
        FAILURES_TOTAL,
        "plugin" => plugin.to_string(),
        "version" => version.to_string(),
        "hook" => hook.as_str(),
        "kind" => kind
    )
    .increment(1);
}

pub(crate) fn breaker_state(plugin: &str, version: &str, state: BreakerState) {
    metrics::gauge!(BREAKER_STATE, "plugin" => plugin.to_string(), "version" => version.to_string())
        .set(state.gauge());
}

pub(crate) fn breaker_tripped(plugin: &str, version: &str, hook: Hook) {
    metrics::counter!(
        BREAKER_TRIPS_TOTAL,
        "plugin" => plugin.to_string(),
        "version" => version.to_string(),
        "hook" => hook.as_str()
    )
    .increment(1);
}

pub(crate) fn artifact_load(source: &'static str, seconds: f64) {
    metrics::counter!(ARTIFACT_LOADS_TOTAL, "source" => source).increment(1);
    metrics::histogram!(ARTIFACT_LOAD_SECONDS, "source" => source).record(seconds);
}
