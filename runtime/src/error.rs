//! Errors. Every error from a plugin names the plugin, its version and the operation (a hook,
//! `describe` or `load`), so a log line or an API response always says who failed.

use std::fmt;

use serde::Serialize;

use crate::model::{Hook, HookFailure};

/// What the runtime was doing with the plugin when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Operation {
    /// Checking, compiling and linking the component.
    Load,
    /// Calling `describe` at load.
    Describe,
    /// Calling a hook.
    Hook(Hook),
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Load => f.write_str("load"),
            Operation::Describe => f.write_str("describe"),
            Operation::Hook(hook) => write!(f, "hook {hook}"),
        }
    }
}

/// A failure attributed to one plugin version and one operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("plugin {plugin}@{version}, {operation}: {kind}")]
pub struct PluginError {
    /// Plugin name (from the manifest).
    pub plugin: String,
    /// Plugin version (from the manifest).
    pub version: String,
    /// What was running.
    pub operation: Operation,
    /// What went wrong.
    pub kind: ErrorKind,
    /// Fuel the call consumed before it failed: deterministic like a receipt's, except when
    /// the deadline stopped it (that depends on the machine's speed); none when no guest code
    /// ran (not implemented, input rejected, circuit open, overloaded, loading). Non-zero, so
    /// the option costs no space in an error every hook result carries.
    pub fuel_used: Option<std::num::NonZeroU64>,
}

impl PluginError {
    /// The hook that failed, when a hook was running.
    pub fn hook(&self) -> Option<Hook> {
        match self.operation {
            Operation::Hook(hook) => Some(hook),
            _ => None,
        }
    }
}

/// Why a trap happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrapKind {
    /// The guest recursed past the wasm stack limit.
    StackOverflow,
    /// `unreachable` executed: in Rust guests, a panic or an abort.
    Unreachable,
    /// A load or store outside linear memory.
    MemoryOutOfBounds,
    /// Integer division by zero, overflow or a bad float-to-int conversion.
    Arithmetic,
    /// Any other trap or a malformed value crossing the boundary, as wasmtime describes it.
    Other(String),
}

impl fmt::Display for TrapKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrapKind::StackOverflow => f.write_str("stack overflow"),
            TrapKind::Unreachable => f.write_str("unreachable executed (a panic or abort)"),
            TrapKind::MemoryOutOfBounds => f.write_str("out-of-bounds memory access"),
            TrapKind::Arithmetic => f.write_str("arithmetic trap"),
            TrapKind::Other(detail) => f.write_str(detail),
        }
    }
}

/// Why a component could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The component is larger than the platform accepts.
    #[error("component is {bytes} bytes, more than the {max} accepted")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The maximum.
        max: usize,
    },
    /// The bytes are not the ones the registry recorded.
    #[error("component sha256 is {actual}, expected {expected}")]
    HashMismatch {
        /// What the caller expected.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// Not a valid WebAssembly component (corrupt, truncated, a core module, ...).
    #[error("not a valid component: {0}")]
    Invalid(String),
    /// The component imports something the host does not offer.
    #[error("component imports {} which the host does not offer; the host offers {offered}", .imports.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", "))]
    ForbiddenImports {
        /// The offending import names.
        imports: Vec<String>,
        /// What the host offers instead.
        offered: String,
    },
    /// The component does not export the hooks interface its manifest names.
    #[error("component does not export `{expected}` (exports: {found})")]
    MissingExport {
        /// The interface expected from the manifest's `wit`.
        expected: String,
        /// What it exports.
        found: String,
    },
    /// Imports or exports have the right names but the wrong types.
    #[error("component does not link: {0}")]
    Link(String),
    /// Reading or writing the precompiled artifact failed.
    #[error("artifact cache: {0}")]
    Artifact(String),
    /// `describe` disagrees with the manifest.
    #[error("describe() disagrees with the manifest: {0}")]
    DescribeMismatch(String),
    /// `describe` names other brands than the signed manifest. The manifest's brands are the
    /// ones that signed the package, so they alone decide which brands' events reach the
    /// plugin; a component claiming more is refused rather than trusted or silently narrowed.
    #[error(
        "describe() names brands [{describe}] but the signed manifest names [{manifest}]; \
         a plugin's brands are its manifest's"
    )]
    DescribeBrandsMismatch {
        /// What `describe` returned, sorted.
        describe: String,
        /// What the manifest lists, sorted.
        manifest: String,
    },
}

impl LoadError {
    /// Stable machine-readable code, for API problem types and rejection records.
    pub fn code(&self) -> &'static str {
        match self {
            LoadError::TooLarge { .. } => "component_too_large",
            LoadError::HashMismatch { .. } => "component_hash_mismatch",
            LoadError::Invalid(_) => "component_invalid",
            LoadError::ForbiddenImports { .. } => "forbidden_imports",
            LoadError::MissingExport { .. } => "missing_export",
            LoadError::Link(_) => "component_link_failed",
            LoadError::Artifact(_) => "artifact_cache",
            LoadError::DescribeMismatch(_) => "describe_mismatch",
            LoadError::DescribeBrandsMismatch { .. } => "describe_brands_mismatch",
        }
    }
}

/// What went wrong in a plugin call or load.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    /// The fuel budget ran out (deterministic: the same input runs out at the same point).
    #[error("fuel exhausted (budget {fuel})")]
    FuelExhausted {
        /// The budget.
        fuel: u64,
    },
    /// The deadline (CPU time of the call) or the wall-clock backstop passed.
    #[error("deadline of {deadline_ms} ms exceeded")]
    Deadline {
        /// The deadline.
        deadline_ms: u32,
    },
    /// The guest tried to grow memory past its cap.
    #[error("memory limit of {memory_mib} MiB exceeded")]
    MemoryLimit {
        /// The cap.
        memory_mib: u32,
    },
    /// The guest trapped.
    #[error("trap: {0}")]
    Trap(TrapKind),
    /// The decision is bigger than the platform accepts (items, bytes or a string).
    #[error("output too large: {0}")]
    OutputTooLarge(String),
    /// The decision breaks a hard invariant; nothing of it was used.
    #[error("invariant violated: {0}")]
    InvariantViolation(String),
    /// The plugin returned its own error.
    #[error("plugin returned an error: {0}")]
    HookError(HookFailure),
    /// The plugin does not implement this hook (per `describe`, or it said so).
    #[error("hook not implemented")]
    NotImplemented,
    /// Repeated failures opened the circuit breaker; the call was refused without running.
    #[error("circuit open after repeated failures; next attempt in {retry_after_ms} ms")]
    CircuitOpen {
        /// When a probe call will be admitted.
        retry_after_ms: u64,
    },
    /// The host's input was refused before running (too large, bad config, wrong receipt).
    #[error("input rejected: {0}")]
    InputRejected(String),
    /// No instance slot became free in time.
    #[error("runtime overloaded: no instance slot free within {waited_ms} ms")]
    Overloaded {
        /// How long the call waited.
        waited_ms: u64,
    },
    /// The plugin's share of the instance slots (calls of all its versions together) stayed
    /// full for the whole slot wait: one plugin can never occupy every slot.
    #[error("plugin saturated: {limit} of its calls were running for all of {waited_ms} ms")]
    Saturated {
        /// The per-plugin bound (`max_concurrent_calls_per_plugin`).
        limit: u32,
        /// How long the call waited for a place.
        waited_ms: u64,
    },
    /// Loading failed.
    #[error("{0}")]
    Load(LoadError),
}

impl ErrorKind {
    /// Stable machine-readable code, for metrics labels and API problem types.
    pub fn code(&self) -> &'static str {
        match self {
            ErrorKind::FuelExhausted { .. } => "fuel_exhausted",
            ErrorKind::Deadline { .. } => "deadline",
            ErrorKind::MemoryLimit { .. } => "memory_limit",
            ErrorKind::Trap(TrapKind::StackOverflow) => "trap_stack_overflow",
            ErrorKind::Trap(TrapKind::Unreachable) => "trap_unreachable",
            ErrorKind::Trap(_) => "trap",
            ErrorKind::OutputTooLarge(_) => "output_too_large",
            ErrorKind::InvariantViolation(_) => "invariant_violation",
            ErrorKind::HookError(_) => "hook_error",
            ErrorKind::NotImplemented => "not_implemented",
            ErrorKind::CircuitOpen { .. } => "circuit_open",
            ErrorKind::InputRejected(_) => "input_rejected",
            ErrorKind::Overloaded { .. } => "overloaded",
            ErrorKind::Saturated { .. } => "saturated",
            ErrorKind::Load(_) => "load",
        }
    }

    /// True when the plugin itself is to blame: these count towards its circuit breaker.
    /// Host-side refusals (bad input, overload, an open circuit, a hook it never listed) do not,
    /// and neither does the plugin's own `invalid-input` answer: the input was wrong (an unknown
    /// perk id from a client, say), so counting it would let any caller open the breaker of a
    /// healthy plugin for everyone.
    pub fn is_plugin_fault(&self) -> bool {
        matches!(
            self,
            ErrorKind::FuelExhausted { .. }
                | ErrorKind::Deadline { .. }
                | ErrorKind::MemoryLimit { .. }
                | ErrorKind::Trap(_)
                | ErrorKind::OutputTooLarge(_)
                | ErrorKind::InvariantViolation(_)
                | ErrorKind::HookError(HookFailure::Failed(_))
        )
    }

    /// The plugin's reason when it answered `invalid-input`: the request it was given does not
    /// make sense to it, which the host reports as the caller's error rather than an outage.
    pub fn invalid_input(&self) -> Option<&str> {
        match self {
            ErrorKind::HookError(HookFailure::InvalidInput(reason)) => Some(reason),
            _ => None,
        }
    }
}

/// The runtime itself could not start (engine settings, cache directory).
#[derive(Debug, thiserror::Error)]
#[error("plugin runtime setup: {0}")]
pub struct SetupError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_plugin_version_and_hook() {
        let err = PluginError {
            plugin: "coffee-bonus".into(),
            version: "1.0.0".into(),
            operation: Operation::Hook(Hook::Settle),
            kind: ErrorKind::FuelExhausted { fuel: 10 },
            fuel_used: std::num::NonZeroU64::new(10),
        };
        assert_eq!(
            err.to_string(),
            "plugin coffee-bonus@1.0.0, hook settle: fuel exhausted (budget 10)"
        );
        assert_eq!(err.hook(), Some(Hook::Settle));
    }

    #[test]
    fn forbidden_imports_are_listed_by_name() {
        let err = LoadError::ForbiddenImports {
            imports: vec!["evil:net/socket@1.0.0".into()],
            offered: "coalition:plugin/host@0.1.0".into(),
        };
        let text = err.to_string();
        assert!(text.contains("`evil:net/socket@1.0.0`"), "{text}");
        assert!(
            text.contains("offers coalition:plugin/host@0.1.0"),
            "{text}"
        );
    }
}
