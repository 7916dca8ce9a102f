//! One binding module per released WIT package, each adapting its generated types to the
//! version-independent [`crate::model`] (the zed layout). Adding a version means: freeze its
//! folder under `wit/`, add `vX_Y_Z.rs` with `bindgen!`, its invocation, member and event
//! conversions and `hook_bindings!` (module `common`), add a [`WitVersion`] variant, a
//! [`PluginPre`] arm and what [`Projection`] hides from older versions.

mod common;
pub(crate) mod v0_1_0;
pub(crate) mod v0_2_0;

use serde::{Deserialize, Serialize};
use wasmtime::component::{InstancePre, Linker};
use wasmtime::Store;

use crate::model::{Invocation, MemberContext, PluginInfo};
use crate::plugin::HookArgs;
use crate::sandbox::CallState;

/// A supported `coalition:plugin` WIT package version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WitVersion {
    /// `coalition:plugin@0.1.0`.
    #[serde(rename = "coalition:plugin@0.1.0")]
    V0_1_0,
    /// `coalition:plugin@0.2.0`: 0.1.0 plus budgets, stored value, pending points, the
    /// membership card and the settle kinds `stored-value-redeemed` and `membership-fee`.
    #[serde(rename = "coalition:plugin@0.2.0")]
    V0_2_0,
}

impl WitVersion {
    /// Every supported version, oldest first.
    pub const ALL: [WitVersion; 2] = [WitVersion::V0_1_0, WitVersion::V0_2_0];

    /// The newest supported version.
    pub const NEWEST: WitVersion = WitVersion::V0_2_0;

    /// The package id as written in a manifest, for example `coalition:plugin@0.1.0`.
    pub fn package_id(self) -> &'static str {
        match self {
            WitVersion::V0_1_0 => "coalition:plugin@0.1.0",
            WitVersion::V0_2_0 => "coalition:plugin@0.2.0",
        }
    }

    /// Parses a manifest's `wit` value.
    pub fn from_package_id(id: &str) -> Option<WitVersion> {
        WitVersion::ALL.into_iter().find(|v| v.package_id() == id)
    }

    /// The interface a component of this version must export.
    pub fn hooks_export(self) -> &'static str {
        match self {
            WitVersion::V0_1_0 => "coalition:plugin/hooks@0.1.0",
            WitVersion::V0_2_0 => "coalition:plugin/hooks@0.2.0",
        }
    }

    /// Interfaces of this version a component may import.
    pub fn host_imports(self) -> &'static [&'static str] {
        match self {
            // `types` appears as an import because `hooks` uses its types; it has no functions.
            WitVersion::V0_1_0 => &[
                "coalition:plugin/host@0.1.0",
                "coalition:plugin/types@0.1.0",
            ],
            WitVersion::V0_2_0 => &[
                "coalition:plugin/host@0.2.0",
                "coalition:plugin/types@0.2.0",
            ],
        }
    }

    /// True when a component of this version can be handed a settle event of `kind`.
    pub fn knows_settle_kind(self, kind: crate::model::SettleKind) -> bool {
        match self {
            WitVersion::V0_1_0 => kind.in_v0_1_0(),
            WitVersion::V0_2_0 => true,
        }
    }
}

/// Most budgets handed to one call (the WIT's bound): a brand sets a few per kind.
pub const MAX_BUDGETS: usize = 32;

/// What a call's arguments become for a component of an older version: owned copies, made only
/// when the model carries something that version does not know (a 0.1.0 call with a member
/// who has no stored value, pending points or card, and no budgets, copies nothing). The
/// projected arguments are what the component receives and what its receipt records.
#[derive(Default)]
pub(crate) struct Projection {
    invocation: Option<Invocation>,
    member: Option<MemberContext>,
}

impl Projection {
    /// The copies a component of `version`, named `plugin` and involving `brands`, needs, or
    /// why the call cannot be made in that version.
    pub fn new(
        version: WitVersion,
        plugin: &str,
        brands: &[String],
        invocation: &Invocation,
        args: &HookArgs<'_>,
    ) -> Result<Projection, String> {
        match version {
            WitVersion::V0_2_0 => {
                // Only the budgets of the plugin's brands that name it or no plugin.
                let applies = |b: &crate::model::BudgetRemaining| {
                    brands.contains(&b.brand) && b.plugin.as_deref().is_none_or(|p| p == plugin)
                };
                let keep_all = invocation.budgets.len() <= MAX_BUDGETS
                    && invocation.budgets.iter().all(applies);
                let invocation = (!keep_all).then(|| Invocation {
                    budgets: invocation
                        .budgets
                        .iter()
                        .filter(|b| applies(b))
                        .take(MAX_BUDGETS)
                        .cloned()
                        .collect(),
                    ..invocation.clone()
                });
                Ok(Projection {
                    invocation,
                    member: None,
                })
            }
            WitVersion::V0_1_0 => {
                let invocation = (!invocation.budgets.is_empty()).then(|| Invocation {
                    budgets: Vec::new(),
                    ..invocation.clone()
                });
                let member = match *args {
                    HookArgs::PointsBonus { member, .. }
                    | HookArgs::ListPerks { member }
                    | HookArgs::RedeemPerk { member, .. } => {
                        (!member.is_v0_1_0()).then(|| member.to_v0_1_0())
                    }
                    HookArgs::Settle { event } if !version.knows_settle_kind(event.kind) => {
                        return Err(format!(
                            "settle kind {:?} is not in {}",
                            event.kind,
                            version.package_id()
                        ))
                    }
                    HookArgs::Settle { .. } | HookArgs::ApplyCoupon { .. } => None,
                };
                Ok(Projection { invocation, member })
            }
        }
    }

    /// The invocation and arguments as the version sees them.
    pub fn apply<'a>(
        &'a self,
        invocation: &'a Invocation,
        args: HookArgs<'a>,
    ) -> (&'a Invocation, HookArgs<'a>) {
        let invocation = self.invocation.as_ref().unwrap_or(invocation);
        let Some(member) = self.member.as_ref() else {
            return (invocation, args);
        };
        let args = match args {
            HookArgs::PointsBonus { order, .. } => HookArgs::PointsBonus { member, order },
            HookArgs::ListPerks { .. } => HookArgs::ListPerks { member },
            HookArgs::RedeemPerk { request, .. } => HookArgs::RedeemPerk { member, request },
            other => other,
        };
        (invocation, args)
    }
}

/// Adds the `host` interface of every supported version to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
    v0_1_0::add_to_linker(linker)?;
    v0_2_0::add_to_linker(linker)
}

/// A hook's own error, before attribution.
pub(crate) enum GuestError {
    NotImplemented,
    Failure(crate::model::HookFailure),
}

/// A pre-linked component of some supported version.
#[derive(Clone)]
pub(crate) enum PluginPre {
    V0_1_0(v0_1_0::Pre),
    V0_2_0(v0_2_0::Pre),
}

impl PluginPre {
    pub fn new(version: WitVersion, pre: InstancePre<CallState>) -> wasmtime::Result<PluginPre> {
        match version {
            WitVersion::V0_1_0 => Ok(PluginPre::V0_1_0(v0_1_0::Pre::new(pre)?)),
            WitVersion::V0_2_0 => Ok(PluginPre::V0_2_0(v0_2_0::Pre::new(pre)?)),
        }
    }

    /// Instantiates into `store` and calls `describe`.
    pub fn describe(&self, store: &mut Store<CallState>) -> wasmtime::Result<PluginInfo> {
        match self {
            PluginPre::V0_1_0(pre) => v0_1_0::describe(pre, store),
            PluginPre::V0_2_0(pre) => v0_2_0::describe(pre, store),
        }
    }

    /// Instantiates into `store` and calls one hook.
    pub fn call(
        &self,
        store: &mut Store<CallState>,
        invocation: &Invocation,
        args: &HookArgs<'_>,
    ) -> wasmtime::Result<Result<crate::model::HookOutput, GuestError>> {
        match self {
            PluginPre::V0_1_0(pre) => v0_1_0::call(pre, store, invocation, args),
            PluginPre::V0_2_0(pre) => v0_2_0::call(pre, store, invocation, args),
        }
    }
}
