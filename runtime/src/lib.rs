//! Coalition plugin runtime: runs partner brands' WebAssembly components deterministically,
//! bounded and audited, inside the host server. No database, no HTTP.
//!
//! ```no_run
//! use coalition_runtime::{CallContext, Manifest, Runtime, RuntimeConfig};
//! # fn demo(member: coalition_runtime::model::MemberContext,
//! #         order: coalition_runtime::model::Order,
//! #         invocation: coalition_runtime::model::Invocation) -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeConfig {
//!     artifact_dir: Some("data/artifacts".into()),
//!     ..RuntimeConfig::default()
//! })?;
//! let manifest = Manifest::from_file("coffee-bonus.toml")?;
//! let bytes = std::fs::read("coffee-bonus.wasm")?;
//! let plugin = runtime.load(&manifest, &bytes, None)?;
//! let decision = plugin.points_bonus(&CallContext::new(invocation), &member, &order)?;
//! // decision.value: validated bonuses; decision.receipt: what ran, for the ledger entry.
//! # Ok(()) }
//! ```
//!
//! Calls are synchronous and CPU-bound (tens of microseconds; bounded by the manifest's
//! deadline): from async code, run them in `tokio::task::spawn_blocking`. [`Runtime`] and
//! [`LoadedPlugin`] are cheap to clone and `Send + Sync`.
//!
//! # Layout
//! - [`manifest`]: `plugin.toml` parsing and validation against the platform maxima.
//! - [`model`]: version-independent domain types the host builds and receives.
//! - `bindings`: one `bindgen!` module per frozen WIT version (`v0_1_0`, `v0_2_0`) over shared
//!   code (`bindings/common.rs`), adapted to the model; `Projection` gives each version only what
//!   it knows.
//! - [`runtime`]: the [`Runtime`] (one engine, caches, breakers) and loading.
//! - `engine`: engine settings, pooling allocator, epoch ticker, linkers, instance slots.
//! - [`cache`]: precompiled artifacts on disk and linked components in memory.
//! - `sandbox`: per-call store state: `host` imports, resource limiter, deterministic WASI.
//! - [`plugin`]: [`LoadedPlugin`] and its hook calls (fresh instance per call).
//! - [`limits`]: platform maxima and per-call budgets, each with its reason.
//! - [`validate`]: hard invariants every decision must meet.
//! - [`breaker`]: circuit breaker per plugin version, with an injectable clock.
//! - [`policy`]: fail-open perk listing across plugins.
//! - [`receipt`]: receipts and replay reports.
//! - [`metrics`]: metric names and registration.
//! - [`error`]: errors attributed to plugin, version and hook.

mod bindings;
pub mod breaker;
pub mod cache;
mod deadline;
mod engine;
pub mod error;
pub mod limits;
pub mod manifest;
pub mod metrics;
pub mod model;
pub mod plugin;
pub mod policy;
pub mod receipt;
pub mod runtime;
mod sandbox;
pub mod validate;

pub use bindings::WitVersion;
pub use breaker::{BreakerConfig, BreakerState, Clock, ManualClock, SystemClock};
pub use cache::{ArtifactSource, Surface};
pub use deadline::thread_cpu_time;
pub use engine::{SlotGuard, EPOCH_TICK, MAX_WASM_STACK_BYTES};
pub use error::{ErrorKind, LoadError, Operation, PluginError, SetupError, TrapKind};
pub use manifest::{Manifest, ManifestError};
pub use plugin::{CallContext, Decision, HookArgs, LoadedPlugin};
pub use policy::{list_perks_all, PerkListing, PluginPerks};
pub use receipt::{Receipt, ReplayReport};
pub use runtime::{plugin_share, Runtime, RuntimeConfig};
