//! The [`Plugin`] trait and the [`export_plugin!`](crate::export_plugin) macro.

use crate::{
    Bonus, Cart, Coupon, CouponDecision, HookError, Invocation, MemberContext, Order, Perk,
    PluginInfo, RedeemDecision, RedeemRequest, SettleEvent, SettlementLine,
};

/// What every hook returns: a decision, or a [`HookError`] (which is never a refusal: refusals
/// are decisions such as [`RedeemDecision::Refused`]).
pub type HookResult<T> = Result<T, HookError>;

/// A Coalition plugin. Implement [`Plugin::info`] and the hooks your brand needs; the others
/// default to [`HookError::NotImplemented`], and the host never calls a hook that `info` does not
/// list. Export the type with [`export_plugin!`](crate::export_plugin).
///
/// Hooks are associated functions, not methods: the host creates a fresh instance for every
/// call, so there is no state to keep between calls. Each hook must be a pure function of its
/// arguments, [`config`](crate::config) and nothing else (see [`calendar`](crate::calendar) for
/// time and `Invocation::seed` for randomness).
pub trait Plugin {
    /// Name, version, implemented hooks and brands; must match the plugin's `plugin.toml`.
    fn info() -> PluginInfo;

    /// Bonus points for a purchase. An empty list means no bonus; every bonus must be > 0.
    fn points_bonus(
        _inv: &Invocation,
        _member: &MemberContext,
        _order: &Order,
    ) -> HookResult<Vec<Bonus>> {
        Err(HookError::NotImplemented)
    }

    /// Perks this member may see now, at most [`limits::MAX_PERKS`](crate::limits::MAX_PERKS).
    fn list_perks(_inv: &Invocation, _member: &MemberContext) -> HookResult<Vec<Perk>> {
        Err(HookError::NotImplemented)
    }

    /// Validates a redemption and says what to grant, or why not. Re-check eligibility here:
    /// the member's situation may have changed since the perk was listed.
    fn redeem_perk(
        _inv: &Invocation,
        _member: &MemberContext,
        _request: &RedeemRequest,
    ) -> HookResult<RedeemDecision> {
        Err(HookError::NotImplemented)
    }

    /// Applies a coupon to a cart: a discount per line, or why the coupon does not apply.
    fn apply_coupon(
        _inv: &Invocation,
        _coupon: &Coupon,
        _cart: &Cart,
    ) -> HookResult<CouponDecision> {
        Err(HookError::NotImplemented)
    }

    /// Settlement lines for a money-relevant event, at most
    /// [`limits::MAX_SETTLEMENT_LINES`](crate::limits::MAX_SETTLEMENT_LINES).
    fn settle(_inv: &Invocation, _event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        Err(HookError::NotImplemented)
    }
}

/// Exports a [`Plugin`] implementation as the component's `coalition:plugin/hooks` interface.
///
/// Use it exactly once per plugin crate, at the crate root or in any module. On wasm targets it
/// generates the component exports; on native targets it only checks that the type implements
/// [`Plugin`], so several plugin crates can be linked into one native test or benchmark binary
/// without clashing export symbols.
///
/// ```
/// use coalition_sdk::{export_plugin, Hook, Plugin, PluginInfo};
///
/// pub struct Hello;
///
/// impl Plugin for Hello {
///     fn info() -> PluginInfo {
///         PluginInfo {
///             name: "hello".into(),
///             version: "0.1.0".into(),
///             hooks: Vec::new(),
///             brands: vec!["coffee".into()],
///         }
///     }
/// }
///
/// export_plugin!(Hello);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct CoalitionPluginExport;

            impl $crate::__private::Guest for CoalitionPluginExport {
                fn describe() -> $crate::PluginInfo {
                    <$plugin as $crate::Plugin>::info()
                }
                fn points_bonus(
                    inv: $crate::Invocation,
                    member: $crate::MemberContext,
                    order: $crate::Order,
                ) -> $crate::HookResult<$crate::__private::Vec<$crate::Bonus>> {
                    <$plugin as $crate::Plugin>::points_bonus(&inv, &member, &order)
                }
                fn list_perks(
                    inv: $crate::Invocation,
                    member: $crate::MemberContext,
                ) -> $crate::HookResult<$crate::__private::Vec<$crate::Perk>> {
                    <$plugin as $crate::Plugin>::list_perks(&inv, &member)
                }
                fn redeem_perk(
                    inv: $crate::Invocation,
                    member: $crate::MemberContext,
                    request: $crate::RedeemRequest,
                ) -> $crate::HookResult<$crate::RedeemDecision> {
                    <$plugin as $crate::Plugin>::redeem_perk(&inv, &member, &request)
                }
                fn apply_coupon(
                    inv: $crate::Invocation,
                    coupon: $crate::Coupon,
                    cart: $crate::Cart,
                ) -> $crate::HookResult<$crate::CouponDecision> {
                    <$plugin as $crate::Plugin>::apply_coupon(&inv, &coupon, &cart)
                }
                fn settle(
                    inv: $crate::Invocation,
                    event: $crate::SettleEvent,
                ) -> $crate::HookResult<$crate::__private::Vec<$crate::SettlementLine>> {
                    <$plugin as $crate::Plugin>::settle(&inv, &event)
                }
            }

            $crate::__bindings::__export_plugin_world!(
                CoalitionPluginExport with_types_in $crate::__bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn exported_type_must_implement_plugin<P: $crate::Plugin>() {}
            exported_type_must_implement_plugin::<$plugin>();
        };
    };
}
