//! Receipts: proof of what ran, and enough to run it again.
//!
//! The input hash covers the canonical JSON of [`CallInput`] (invocation, effective config,
//! hook and arguments) exactly as stored in [`Receipt::input`]; the output hash covers the
//! canonical JSON of the validated decision. The same component and the same input give the
//! same output and the same fuel on any machine, so [`crate::LoadedPlugin::replay`] can settle
//! a dispute bit for bit.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{CallInput, Hook, HookOutput};

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What one successful call ran and produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub version: String,
    /// The hook called.
    pub hook: Hook,
    /// sha256 of the component bytes.
    pub component_sha256: String,
    /// sha256 of `input`.
    pub input_sha256: String,
    /// sha256 of the canonical JSON of the decision.
    pub output_sha256: String,
    /// Fuel (instructions) the call used; deterministic.
    pub fuel_used: u64,
    /// The largest linear memory the call held, bytes (the guest's memories together are
    /// capped by its `memory_mib`); deterministic. Not stored by the host: a cost report.
    #[serde(default)]
    pub peak_memory_bytes: u64,
    /// Wall-clock duration of the call, microseconds (instantiate, call, validate).
    pub duration_us: u64,
    /// Log lines the plugin wrote beyond its per-call budget.
    pub logs_dropped: u32,
    /// Canonical JSON of the [`CallInput`]: replaying needs nothing else.
    pub input: String,
}

impl Receipt {
    /// True when `input` still hashes to `input_sha256`.
    pub fn input_is_intact(&self) -> bool {
        sha256_hex(self.input.as_bytes()) == self.input_sha256
    }

    /// The recorded input, parsed.
    pub fn call_input(&self) -> Result<CallInput, serde_json::Error> {
        serde_json::from_str(&self.input)
    }
}

/// The outcome of replaying a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayReport {
    /// True when the replayed output hash equals the recorded one.
    pub matches: bool,
    /// Output hash in the receipt.
    pub recorded_output_sha256: String,
    /// Output hash of the replay.
    pub replayed_output_sha256: String,
    /// Fuel in the receipt.
    pub recorded_fuel_used: u64,
    /// Fuel of the replay (equal when the component is deterministic, as it must be).
    pub replayed_fuel_used: u64,
    /// The replayed decision.
    pub output: HookOutput,
}
