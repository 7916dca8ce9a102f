//! TEST FIXTURE — not a plugin. `describe` works (so the plugin loads), and every hook panics.
//! Guests build with `panic = "abort"`, so each panic is a wasm trap the runtime must report
//! as a failure of this plugin and hook, failing open for perk listing and closed for
//! redemption and settlement.

use coalition_sdk::{
    export_plugin, Bonus, Cart, Coupon, CouponDecision, Hook, HookResult, Invocation,
    MemberContext, Order, Perk, Plugin, PluginInfo, RedeemDecision, RedeemRequest, SettleEvent,
    SettlementLine,
};

/// The fixture.
pub struct Panics;

impl Plugin for Panics {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "panics".into(),
            version: "0.1.0".into(),
            hooks: Hook::ALL.to_vec(),
            brands: vec!["mall".into()],
        }
    }

    fn points_bonus(_: &Invocation, _: &MemberContext, order: &Order) -> HookResult<Vec<Bonus>> {
        panic!("points-bonus panicked on order {}", order.order_id)
    }

    fn list_perks(_: &Invocation, member: &MemberContext) -> HookResult<Vec<Perk>> {
        panic!("list-perks panicked for member {}", member.member_ref)
    }

    fn redeem_perk(
        _: &Invocation,
        _: &MemberContext,
        request: &RedeemRequest,
    ) -> HookResult<RedeemDecision> {
        panic!("redeem-perk panicked on perk {}", request.perk_id)
    }

    fn apply_coupon(_: &Invocation, coupon: &Coupon, _: &Cart) -> HookResult<CouponDecision> {
        panic!("apply-coupon panicked on coupon {}", coupon.code)
    }

    fn settle(_: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        panic!("settle panicked on event {}", event.event_id)
    }
}

export_plugin!(Panics);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<Panics>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }

    #[test]
    #[should_panic(expected = "settle panicked on event ev-1")]
    fn settle_panics() {
        let event = testing::settle_event(coalition_sdk::SettleKind::PointsIssued, "mall").build();
        let _ = Panics::settle(&testing::invocation().build(), &event);
    }
}
