//! Platform maxima and per-call budgets.
//!
//! A manifest declares the budget a plugin needs; the platform caps every declared value with
//! the maxima below. Each constant carries the reason for its value.

use serde::{Deserialize, Serialize};

/// Ceiling on fuel per call: 3–7 ms of a tight guest loop here; a small JavaScript call needs
/// 2–3M.
pub const MAX_FUEL_PER_CALL: u64 = 50_000_000;
/// Ceiling on linear memory per call: JS/Python guests start at 9–12.4 MiB; bounds the pool.
pub const MAX_MEMORY_MIB: u32 = 64;
/// Ceiling on a call's deadline (CPU time of the guest's thread): a counter call must answer
/// well inside a POS timeout.
pub const MAX_DEADLINE_MS: u32 = 250;
/// Wall-clock backstop on any call, however starved the host: deadlines are charged in CPU time
/// so host load does not fail a plugin, but a counter never waits longer than this for one call
/// (twice the longest deadline, like the wait for an instance slot).
pub const MAX_WALL_MS_PER_CALL: u32 = 2 * MAX_DEADLINE_MS;

/// Fuel when a manifest declares none: ~100x what a small Rust evaluation uses (~10k).
pub const DEFAULT_FUEL_PER_CALL: u64 = 1_000_000;
/// Memory when a manifest declares none: a Rust guest needs ~1.1 MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 16;
/// Deadline when a manifest declares none: 1000x the median call, still invisible at a counter.
pub const DEFAULT_DEADLINE_MS: u32 = 20;
/// Smallest memory a manifest may ask for: a Rust component's data and stack need ~1.1 MiB.
pub const MIN_MEMORY_MIB: u32 = 2;

/// Largest serialized hook input: 500 order lines plus a full member context fit in ~150 KiB.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
/// Largest serialized hook output: 100 perks with maximal text fit in ~140 KiB.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Most perks one list-perks call may return (the WIT contract says so).
pub const MAX_PERKS: usize = 100;
/// Most settlement lines per event (the WIT contract says so).
pub const MAX_SETTLEMENT_LINES: usize = 16;
/// Most bonuses per order: a member sees them all on the receipt; 16 is already a lot.
pub const MAX_BONUSES: usize = 16;

/// Most log lines per call (the WIT contract says so); beyond, lines are dropped and counted.
pub const MAX_LOG_LINES_PER_CALL: u32 = 32;
/// Most log bytes per call (the WIT contract says so); beyond, lines are dropped and counted.
pub const MAX_LOG_BYTES_PER_CALL: usize = 8 * 1024;

/// Largest component accepted: Python components are ~18 MB, JavaScript ~12 MB.
pub const MAX_COMPONENT_BYTES: usize = 64 * 1024 * 1024;
/// Largest manifest accepted: a manifest is a page of TOML, not a data file.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Most config keys a manifest may declare: an admin form, not a database.
pub const MAX_CONFIG_KEYS: usize = 64;
/// Longest config value the admin may set, bytes: thresholds and names, not documents.
pub const MAX_CONFIG_VALUE_BYTES: usize = 4096;

/// Core instances per store: componentize-py links ~38 core modules; Rust needs ~4.
pub const MAX_CORE_INSTANCES_PER_CALL: u32 = 64;
/// Tables per store: one per core instance at most in practice.
pub const MAX_TABLES_PER_CALL: u32 = 64;
/// Linear memories per store: guests use one, adapters sometimes a second.
pub const MAX_MEMORIES_PER_CALL: u32 = 4;
/// Elements per table: a large C# or Python guest was seen with 10k+ function references.
pub const MAX_TABLE_ELEMENTS: usize = 20_000;

/// Bonus points on one order may not exceed this many times the base points.
pub const MAX_BONUS_MULTIPLE_OF_BASE: i64 = 10;
/// Bonus points on one order may never exceed this, whatever the base: ~$10k of points.
pub const MAX_BONUS_POINTS_PER_ORDER: i64 = 1_000_000;

/// One megabyte, for converting `memory_mib`.
pub const MIB: usize = 1024 * 1024;

/// The budget of one hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Instructions (wasmtime fuel units) the call may execute; deterministic.
    pub fuel: u64,
    /// Linear memory the call may use, MiB.
    pub memory_mib: u32,
    /// Deadline in milliseconds of the guest thread's CPU time (wall time is capped separately
    /// by [`MAX_WALL_MS_PER_CALL`]); a backstop behind fuel.
    pub deadline_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: DEFAULT_FUEL_PER_CALL,
            memory_mib: DEFAULT_MEMORY_MIB,
            deadline_ms: DEFAULT_DEADLINE_MS,
        }
    }
}

impl Limits {
    /// Linear memory the call may use, bytes.
    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib as usize).saturating_mul(MIB)
    }

    /// Checks every value against the platform maxima; the error says which one is off.
    pub fn check(&self) -> Result<(), String> {
        if self.fuel == 0 || self.fuel > MAX_FUEL_PER_CALL {
            return Err(format!(
                "fuel {} is outside 1..={MAX_FUEL_PER_CALL}",
                self.fuel
            ));
        }
        if self.memory_mib < MIN_MEMORY_MIB || self.memory_mib > MAX_MEMORY_MIB {
            return Err(format!(
                "memory_mib {} is outside {MIN_MEMORY_MIB}..={MAX_MEMORY_MIB}",
                self.memory_mib
            ));
        }
        if self.deadline_ms == 0 || self.deadline_ms > MAX_DEADLINE_MS {
            return Err(format!(
                "deadline_ms {} is outside 1..={MAX_DEADLINE_MS}",
                self.deadline_ms
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_within_maxima() {
        assert_eq!(Limits::default().check(), Ok(()));
    }

    #[test]
    fn each_limit_is_capped() {
        let over_fuel = Limits {
            fuel: MAX_FUEL_PER_CALL + 1,
            ..Limits::default()
        };
        assert!(over_fuel
            .check()
            .expect_err("over the limit")
            .contains("fuel"));
        let over_memory = Limits {
            memory_mib: MAX_MEMORY_MIB + 1,
            ..Limits::default()
        };
        assert!(over_memory
            .check()
            .expect_err("over the limit")
            .contains("memory_mib"));
        let zero_deadline = Limits {
            deadline_ms: 0,
            ..Limits::default()
        };
        assert!(zero_deadline
            .check()
            .expect_err("over the limit")
            .contains("deadline_ms"));
    }
}
