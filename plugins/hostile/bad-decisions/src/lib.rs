//! TEST FIXTURE — not a plugin. Every hook returns a well-formed decision that breaks one of
//! the host's invariants; the input chooses which, so each violation is reachable on its own:
//!
//! | hook | chosen by | value → violation (default first) |
//! |---|---|---|
//! | `points-bonus` | `order.order-id` | *(any other)* / `negative-bonus` → −5 points; `zero-bonus` → 0; `absurd-bonus` → `i64::MAX`; `overflowing-bonuses` → two × `i64::MAX`; `long-code` → a 65-byte code |
//! | `list-perks` | first of `member.tags` | *(none)* / `negative-cost` → cost −1; `negative-value` → value −1; `too-many-perks` → 101 perks; `duplicate-ids` → two perks `p`; `empty-title` → title `""` |
//! | `redeem-perk` | `request.perk-id` | *(any other)* / `negative-discount-grant` → granted discount −100 cents; `empty-refusal` → refusal `""` |
//! | `apply-coupon` | `coupon.template-id` | *(any other)* / `above-line` → first line's total + 1; `negative-discount` → −100; `unknown-line` → line `no-such-line`; `duplicate-line` → first line twice |
//! | `settle` | `event.reference` | *(none)* / `over-2x` → 2 × value + 1; `pay-self` → funding brand pays itself; `stranger` → pays `bank`, not a party; `zero-amount` → 0; `negative-amount` → −100; `too-many-lines` → 17 lines; `overflow` → two × `i64::MAX` |

use coalition_sdk::{
    export_plugin, Bonus, Cart, Coupon, CouponDecision, Grant, Hook, HookResult, Invocation,
    LineDiscount, MemberContext, Order, Perk, Plugin, PluginInfo, RedeemDecision, RedeemRequest,
    SettleEvent, SettlementLine,
};

/// The fixture.
pub struct BadDecisions;

fn perk(id: &str) -> Perk {
    Perk {
        id: id.into(),
        title: "bad perk".into(),
        description: String::new(),
        funding_brand: "mall".into(),
        honouring_brand: "mall".into(),
        cost_points: 0,
        value_cents: 100,
        grant: Grant::FreeItem("x".into()),
        valid_until_ms: None,
    }
}

fn line(payer: &str, payee: &str, amount_cents: i64) -> SettlementLine {
    SettlementLine {
        payer: payer.into(),
        payee: payee.into(),
        amount_cents,
        reason: "bad".into(),
    }
}

impl Plugin for BadDecisions {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "bad-decisions".into(),
            version: "0.1.0".into(),
            hooks: Hook::ALL.to_vec(),
            brands: vec!["mall".into()],
        }
    }

    fn points_bonus(_: &Invocation, _: &MemberContext, order: &Order) -> HookResult<Vec<Bonus>> {
        let bonus = |points: i64| Bonus {
            points,
            code: "bad".into(),
            reason: "bad".into(),
        };
        Ok(match order.order_id.as_str() {
            "zero-bonus" => vec![bonus(0)],
            "absurd-bonus" => vec![bonus(i64::MAX)],
            "overflowing-bonuses" => vec![bonus(i64::MAX), bonus(i64::MAX)],
            "long-code" => vec![Bonus {
                points: 1,
                code: "c".repeat(65),
                reason: "bad".into(),
            }],
            _ => vec![bonus(-5)],
        })
    }

    fn list_perks(_: &Invocation, member: &MemberContext) -> HookResult<Vec<Perk>> {
        Ok(match member.tags.first().map(String::as_str) {
            Some("negative-value") => vec![Perk {
                value_cents: -1,
                ..perk("p")
            }],
            Some("too-many-perks") => (0..101).map(|i| perk(&format!("p{i}"))).collect(),
            Some("duplicate-ids") => vec![perk("p"), perk("p")],
            Some("empty-title") => vec![Perk {
                title: String::new(),
                ..perk("p")
            }],
            _ => vec![Perk {
                cost_points: -1,
                ..perk("p")
            }],
        })
    }

    fn redeem_perk(
        _: &Invocation,
        _: &MemberContext,
        request: &RedeemRequest,
    ) -> HookResult<RedeemDecision> {
        Ok(match request.perk_id.as_str() {
            "empty-refusal" => RedeemDecision::Refused(String::new()),
            _ => RedeemDecision::Granted(Perk {
                grant: Grant::DiscountCents(-100),
                ..perk("p")
            }),
        })
    }

    fn apply_coupon(_: &Invocation, coupon: &Coupon, cart: &Cart) -> HookResult<CouponDecision> {
        let Some(first) = cart.lines.first() else {
            return Ok(CouponDecision::Applied(vec![LineDiscount {
                line_id: "no-such-line".into(),
                discount_cents: 1,
            }]));
        };
        let on_first = |discount_cents: i64| LineDiscount {
            line_id: first.line_id.clone(),
            discount_cents,
        };
        let line_total = first
            .unit_price_cents
            .saturating_mul(i64::from(first.quantity));
        Ok(CouponDecision::Applied(match coupon.template_id.as_str() {
            "negative-discount" => vec![on_first(-100)],
            "unknown-line" => vec![LineDiscount {
                line_id: "no-such-line".into(),
                discount_cents: 1,
            }],
            "duplicate-line" => vec![on_first(1), on_first(1)],
            _ => vec![on_first(line_total.saturating_add(1))],
        }))
    }

    fn settle(_: &Invocation, event: &SettleEvent) -> HookResult<Vec<SettlementLine>> {
        let funder = event.funding_brand.as_str();
        Ok(match event.reference.as_deref() {
            Some("pay-self") => vec![line(funder, funder, 1)],
            Some("stranger") => vec![line(funder, "bank", 1)],
            Some("zero-amount") => vec![line(funder, "platform", 0)],
            Some("negative-amount") => vec![line(funder, "platform", -100)],
            Some("too-many-lines") => (0..17).map(|_| line(funder, "platform", 1)).collect(),
            Some("overflow") => vec![
                line(funder, "platform", i64::MAX),
                line(funder, "platform", i64::MAX),
            ],
            _ => vec![line(
                funder,
                "platform",
                event.value_cents.saturating_mul(2).saturating_add(1),
            )],
        })
    }
}

export_plugin!(BadDecisions);

#[cfg(test)]
mod tests {
    use super::*;
    use coalition_sdk::testing::{
        self, check_bonuses, check_coupon_decision, check_perks, check_redeem_decision,
        check_settlement,
    };
    use coalition_sdk::SettleKind;

    /// Generous bonus cap: only the absurd and overflowing cases may exceed it.
    const BONUS_CAP_POINTS: i64 = 1_000_000;

    #[test]
    fn manifest_matches_describe() {
        testing::check_manifest::<BadDecisions>(include_str!("../plugin.toml"))
            .expect("plugin.toml agrees with info()");
    }

    #[test]
    fn every_bonus_selector_breaks_an_invariant() {
        let inv = testing::invocation().build();
        let member = testing::member("m").build();
        for id in [
            "default",
            "zero-bonus",
            "absurd-bonus",
            "overflowing-bonuses",
            "long-code",
        ] {
            let order = testing::order("mall").id(id).line("x", "x", 1, 100).build();
            let bonuses = BadDecisions::points_bonus(&inv, &member, &order).expect("a decision");
            assert!(
                check_bonuses(&bonuses, BONUS_CAP_POINTS).is_err(),
                "{id} passed"
            );
        }
    }

    #[test]
    fn every_perk_selector_breaks_an_invariant() {
        let inv = testing::invocation().build();
        for tag in [
            "none",
            "negative-value",
            "too-many-perks",
            "duplicate-ids",
            "empty-title",
        ] {
            let member = testing::member("m").tag(tag).build();
            let perks = BadDecisions::list_perks(&inv, &member).expect("a decision");
            assert!(check_perks(&perks).is_err(), "{tag} passed");
        }
        let member = testing::member("m").build();
        for id in ["default", "empty-refusal"] {
            let decision = BadDecisions::redeem_perk(&inv, &member, &testing::redeem_request(id))
                .expect("a decision");
            assert!(check_redeem_decision(&decision).is_err(), "{id} passed");
        }
    }

    #[test]
    fn every_coupon_selector_breaks_an_invariant() {
        let inv = testing::invocation().build();
        let cart = testing::cart("mall").line("x", "x", 2, 500).build();
        for template in [
            "default",
            "negative-discount",
            "unknown-line",
            "duplicate-line",
        ] {
            let decision =
                BadDecisions::apply_coupon(&inv, &testing::coupon(template).build(), &cart)
                    .expect("a decision");
            assert!(
                check_coupon_decision(&cart, &decision).is_err(),
                "{template} passed"
            );
        }
    }

    #[test]
    fn every_settlement_selector_breaks_an_invariant() {
        let inv = testing::invocation().build();
        for reference in [
            "default",
            "pay-self",
            "stranger",
            "zero-amount",
            "negative-amount",
            "too-many-lines",
            "overflow",
        ] {
            let event = testing::settle_event(SettleKind::PerkRedeemed, "cinema")
                .parties("restaurant", "cinema")
                .reference(reference)
                .value_cents(1_000)
                .build();
            let lines = BadDecisions::settle(&inv, &event).expect("a decision");
            assert!(
                check_settlement(&event, &lines).is_err(),
                "{reference} passed"
            );
        }
    }
}
