//! TEST FIXTURE — not a plugin. Every hook returns an enormous decision, so the runtime can
//! prove its output-size limits reject them (and that lowering them stays within memory):
//!
//! | hook | output |
//! |---|---|
//! | `list-perks` | [`PERK_COUNT`] perks (the contract allows 100) |
//! | `settle` | [`LINE_COUNT`] settlement lines (the contract allows 16) |
//! | `points-bonus` | one bonus whose reason is [`HUGE_STRING_BYTES`] long |
//! | `redeem-perk` | a refusal [`HUGE_STRING_BYTES`] long |
//! | `apply-coupon` | a rejection [`HUGE_STRING_BYTES`] long |
//!
//! Its manifest asks for 64 MiB so the output is built and returned rather than the call
//! running out of memory first.

use coalition_sdk::{
    export_plugin, Bonus, Cart, Coupon, CouponDecision, Grant, Hook, HookResult, Invocation,
    MemberContext, Order, Perk, Plugin, PluginInfo, RedeemDecision, RedeemRequest, SettleEvent,
    SettlementLine,
};

/// Perks returned by `list-perks`: 1000 × the contract's 100.
pub const PERK_COUNT: usize = 100_000;
/// Settlement lines returned by `settle`.
pub const LINE_COUNT: usize = 100_000;
/// Length of the huge strings: 10 MiB.
pub const HUGE_STRING_BYTES: usize = 10 << 20;

/// The fixture.
pub struct HugeOutput;

fn huge_string() -> String {
    "x".repeat(HUGE_STRING_BYTES)
}

impl Plugin for HugeOutput {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "huge-output".into(),
            version: "0.1.0".into(),
            hooks: Hook::ALL.to_vec(),
            brands: vec!["mall".into()],
        }
    }

    fn points_bonus(_: &Invocation, _: &MemberContext, _: &Order) -> HookResult<Vec<Bonus>> {
        // Built field by field: `Bonus::new` would clip the reason to the contract's limit.
        Ok(vec![Bonus {
            points: 1,
            code: "huge".into(),
            reason: huge_string(),
        }])
    }

    fn list_perks(_: &Invocation, _: &MemberContext) -> HookResult<Vec<Perk>> {
        // Short strings, so the count (not the memory cap) is what the host meets.
        Ok((0..PERK_COUNT)
            .map(|i| Perk {
                id: format!("p{i}"),
                title: "t".into(),
                description: String::new(),
                funding_brand: "mall".into(),
                honouring_brand: "mall".into(),
                cost_points: 0,
                value_cents: 0,
                grant: Grant::FreeItem("x".into()),
                valid_until_ms: None,
            })
            .collect())
    }

    fn redeem_perk(
        _: &Invocation,
        _: &MemberContext,
        _: &RedeemRequest,
    ) -> HookResult<RedeemDecision> {
        Ok(RedeemDecision::Refused(huge_string()))
    }

    fn apply_coupon(_: &Invocation, _: &Coupon, _: &Cart) -> HookResult<CouponDecision> {
        Ok(CouponDecision::Rejected(huge_string()))
    }

    fn settle(_: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        Ok((0..LINE_COUNT)
            .map(|_| SettlementLine {
                payer: event.funding_brand.clone(),
                payee: "platform".into(),
                amount_cents: 1,
                reason: "r".into(),
            })
            .collect())
    }
}

export_plugin!(HugeOutput);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<HugeOutput>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }

    #[test]
    fn outputs_are_as_huge_as_advertised() {
        let inv = testing::invocation().build();
        let member = testing::member("m").build();
        assert_eq!(
            HugeOutput::list_perks(&inv, &member).map(|p| p.len()),
            Ok(PERK_COUNT)
        );
        let refusal = HugeOutput::redeem_perk(&inv, &member, &testing::redeem_request("p0"));
        assert!(
            matches!(refusal, Ok(RedeemDecision::Refused(ref r)) if r.len() == HUGE_STRING_BYTES)
        );
        let event = testing::settle_event(coalition_sdk::SettleKind::PointsIssued, "mall")
            .value_cents(1)
            .build();
        assert!(
            testing::check_settlement(&event, &HugeOutput::settle(&inv, &event).expect("ok"))
                .is_err()
        );
    }
}
