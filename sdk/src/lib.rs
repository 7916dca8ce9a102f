//! # Coalition plugin SDK
//!
//! Write a Coalition partner plugin in plain Rust: implement the [`Plugin`] trait for the hooks
//! your brand needs, export it with [`export_plugin!`], test it natively with [`testing`], and
//! build it into a WebAssembly component with `cargo xtask build-plugins`.
//!
//! A plugin *proposes* and the host *commits*: every hook is a pure function from a typed input
//! to a typed decision. The host validates each decision against hard invariants (see the
//! partner guide, `sdk/README.md`) and applies it inside one database transaction.
//!
//! ```
//! use coalition_sdk::{export_plugin, Bonus, Hook, HookResult, Invocation, MemberContext, Order,
//!     Plugin, PluginInfo};
//!
//! /// Double points on the member's birthday month.
//! pub struct BirthdayBonus;
//!
//! impl Plugin for BirthdayBonus {
//!     fn info() -> PluginInfo {
//!         PluginInfo {
//!             name: "birthday-bonus".into(),
//!             version: "1.0.0".into(),
//!             hooks: vec![Hook::PointsBonus],
//!             brands: vec!["coffee".into()],
//!         }
//!     }
//!
//!     fn points_bonus(inv: &Invocation, member: &MemberContext, order: &Order)
//!         -> HookResult<Vec<Bonus>>
//!     {
//!         let birthday = member.birthday_month == Some(inv.local_date().month);
//!         if !birthday || order.base_points <= 0 {
//!             return Ok(Vec::new());
//!         }
//!         Ok(vec![Bonus::new(order.base_points, "birthday-x2", "Birthday month: double points")])
//!     }
//! }
//!
//! export_plugin!(BirthdayBonus);
//! ```
//!
//! # Layout
//! - [`Plugin`] and [`export_plugin!`] (module `plugin`): the trait a plugin implements and the
//!   macro that exports it as the `coalition:plugin/hooks` interface.
//! - Root re-exports ([`Order`], [`Perk`], [`SettlementLine`], ...): the WIT records, with
//!   helper methods (module `records`).
//! - [`limits`]: the sizes and ranges the WIT contract allows, as named constants.
//! - [`money`]: integer cents/points math — basis points, explicit rounding, exact splits.
//! - [`calendar`]: deterministic local dates from `now-ms` and `utc-offset-minutes`.
//! - [`log`] and [`config`]: the two host imports, wrapped.
//! - [`testing`] (native targets only): a thread-local test host, input builders and checks
//!   that mirror the host's invariants, so plugins are unit-tested without compiling to wasm.
#![deny(missing_docs)]
#![deny(unsafe_code)]

// Lets generated code and our macros name this crate as `::coalition_sdk` from inside it too.
extern crate self as coalition_sdk;

// wasm32-unknown-unknown only: the global allocator (initial memory first, then dlmalloc).
// On WASI targets wasi-libc's malloc owns the initial memory's free tail, so std's allocator
// (that malloc) is used unchanged.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod alloc;
pub mod calendar;
pub mod config;
mod host;
pub mod limits;
pub mod log;
pub mod money;
mod plugin;
mod records;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use plugin::{HookResult, Plugin};
pub use records::{lines_total_cents, PLATFORM};

pub use __bindings::coalition::plugin::types::{
    Bonus, BrandSpend, Cart, Coupon, CouponDecision, Grant, Hook, HookError, Invocation,
    LineDiscount, MemberContext, Order, OrderLine, Perk, PluginInfo, RedeemDecision, RedeemRequest,
    SettleEvent, SettleKind, SettlementLine,
};
/// Records `coalition:plugin@0.2.0` adds (feature `wit-0-2-0`).
#[cfg(feature = "wit-0-2-0")]
pub use __bindings::coalition::plugin::types::{BudgetKind, BudgetRemaining, Membership};

/// The WIT package this build of the SDK implements: `coalition:plugin@0.1.0` by default,
/// `coalition:plugin@0.2.0` with the feature `wit-0-2-0`. A plugin's `plugin.toml` must name
/// the same one in `wit`.
#[cfg(not(feature = "wit-0-2-0"))]
pub const WIT_PACKAGE: &str = "coalition:plugin@0.1.0";
/// The WIT package this build of the SDK implements: `coalition:plugin@0.1.0` by default,
/// `coalition:plugin@0.2.0` with the feature `wit-0-2-0`. A plugin's `plugin.toml` must name
/// the same one in `wit`.
#[cfg(feature = "wit-0-2-0")]
pub const WIT_PACKAGE: &str = "coalition:plugin@0.2.0";

/// Generated bindings for `coalition:plugin@0.1.0`. Not part of the public API: use the
/// re-exports at the crate root instead.
#[cfg(not(feature = "wit-0-2-0"))]
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit/coalition-plugin@0.1.0",
        world: "coalition:plugin/plugin",
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::coalition_sdk::__bindings",
        // Plugin crates depend on the SDK only, so the runtime is reached through it.
        runtime_path: "::coalition_sdk::__private::wit_bindgen::rt",
    });
}

/// Generated bindings for `coalition:plugin@0.2.0`. Not part of the public API: use the
/// re-exports at the crate root instead.
#[cfg(feature = "wit-0-2-0")]
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit/coalition-plugin@0.2.0",
        world: "coalition:plugin/plugin",
        additional_derives: [PartialEq, Eq],
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "::coalition_sdk::__bindings",
        // Plugin crates depend on the SDK only, so the runtime is reached through it.
        runtime_path: "::coalition_sdk::__private::wit_bindgen::rt",
    });
}

/// Items the [`export_plugin!`] macro expands to. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__bindings::exports::coalition::plugin::hooks::Guest;
    pub use std::vec::Vec;
    pub use wit_bindgen;
}

/// Compiles and runs the examples of the partner guide (`sdk/README.md`) as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct PartnerGuideExamples;
